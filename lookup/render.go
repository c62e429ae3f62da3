package lookup

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Rendering answers. Every JSON answer of a key (GET /v1/NS/KEY, each entry of
// :batchGet) is written here, by appendAnswer, never by encoding/json: the bytes are what
// json.Encoder with SetEscapeHTML(false) wrote for an Answer before (field order, omitted
// fields, number and string forms, the compacted value), so clients see no change, but a
// cache hit costs a few appends instead of a reflection walk.
//
// An answer splits in two at the version:
//
//	head: {"namespace":NS,"key":KEY,"value":VALUE,"version":VERSION,"row_version":ROW
//	tail: ,"arm":ARM,"computed_at":T,"age_seconds":AGE,"stale":B,"source":S,"error":E}
//
// The head of a precomputed answer is the same for every request of (namespace,
// version, key): it is rendered once, when the value is read from the store, and the
// cache holds it (cache.go). The tail holds what changes per request (the arm of a
// release, the age, staleness) and is appended each time, with strconv into the
// caller's buffer. A new field goes into Answer and into appendHead (constant per
// version and key) or appendTail (per request); the gRPC answer (grpc.go) is built from
// the same Answer.

// appendAnswer appends a's JSON object (no newline).
func appendAnswer(b []byte, a *Answer) []byte {
	if a.head != nil {
		b = append(b, a.head...)
	} else {
		b = appendHead(b, a.Namespace, a.Key, a.Value, a.Version, a.RowVersion)
	}
	return appendTail(b, a)
}

// appendHead appends the head of an answer: from "{" to the version and row_version,
// inclusive. value must be compact JSON (compactValue).
func appendHead(b []byte, ns, key string, value json.RawMessage, version, rowVersion string) []byte {
	b = append(b, `{"namespace":`...)
	b = appendString(b, ns)
	b = append(b, `,"key":`...)
	b = appendString(b, key)
	if len(value) > 0 {
		b = append(b, `,"value":`...)
		b = append(b, value...)
	}
	if version != "" {
		b = append(b, `,"version":`...)
		b = appendString(b, version)
	}
	if rowVersion != "" {
		b = append(b, `,"row_version":`...)
		b = appendString(b, rowVersion)
	}
	return b
}

// appendTail appends the rest of a after its head, with the closing brace.
func appendTail(b []byte, a *Answer) []byte {
	if a.Arm != "" {
		b = append(b, `,"arm":`...)
		b = appendString(b, a.Arm)
	}
	if a.ComputedAt != nil {
		b = append(b, `,"computed_at":"`...)
		b = a.ComputedAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if a.AgeSeconds != nil {
		b = append(b, `,"age_seconds":`...)
		b = appendFloat(b, *a.AgeSeconds)
	}
	if a.Stale != nil {
		b = append(b, `,"stale":`...)
		b = strconv.AppendBool(b, *a.Stale)
	}
	if a.Source != "" {
		b = append(b, `,"source":`...)
		b = appendString(b, a.Source)
	}
	if a.Error != nil {
		b = append(b, `,"error":{"code":`...)
		b = appendString(b, a.Error.Code)
		b = append(b, `,"message":`...)
		b = appendString(b, a.Error.Message)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendBatch appends the JSON of a :batchGet answer, with its newline.
func appendBatch(b []byte, ns, version string, stale bool, answers []Answer) []byte {
	b = append(b, `{"namespace":`...)
	b = appendString(b, ns)
	b = append(b, `,"version":`...)
	b = appendString(b, version)
	b = append(b, `,"stale":`...)
	b = strconv.AppendBool(b, stale)
	b = append(b, `,"answers":[`...)
	for i := range answers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendAnswer(b, &answers[i])
	}
	return append(b, "]}\n"...)
}

// compactValue is v as encoding/json writes a json.RawMessage: compacted. Values the
// pipeline wrote are compact already, and come back as they are.
func compactValue(v json.RawMessage) json.RawMessage {
	if bytes.IndexAny(v, " \t\r\n") < 0 {
		return v
	}
	var c bytes.Buffer
	if json.Compact(&c, v) != nil {
		return v
	}
	return c.Bytes()
}

// appendFloat appends f as encoding/json writes a float64.
func appendFloat(b []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(b, '0') // never an age; encoding/json would fail the whole answer
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // 1e-07, not 1e-07: encoding/json trims the exponent's zero
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string as encoding/json writes it without HTML
// escaping: control characters escaped, invalid UTF-8 as U+FFFD, U+2028 and U+2029
// escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
