package writers

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Value encodings. A stored value holds every output of one row.
//
//   - json: the lookup API's "value" object itself, {"score":0.25,"scores":[0.1,0.9]}; an
//     output of width 1 is a number, wider ones are arrays; NaN and ±Inf are null.
//   - binary: the outputs' float32 values, little-endian, in manifest Outputs order
//     (4 bytes x the sum of the widths); decoding needs the manifest.
const (
	EncodingJSON   = "json"
	EncodingBinary = "binary"
)

// ValueEncoder appends encoded values to a buffer, reusing what it precomputed.
type ValueEncoder struct {
	binary  bool
	outputs []Output
	prefix  [][]byte // `{"name":` then `,"name":`
}

// NewValueEncoder returns an encoder for outputs in the given encoding.
func NewValueEncoder(encoding string, outputs []Output) (*ValueEncoder, error) {
	e := &ValueEncoder{outputs: outputs}
	switch encoding {
	case EncodingJSON, "":
	case EncodingBinary:
		e.binary = true
		return e, nil
	default:
		return nil, fmt.Errorf("value encoding %q: use json or binary", encoding)
	}
	for i, o := range outputs {
		name, _ := json.Marshal(o.Name)
		sep := ","
		if i == 0 {
			sep = "{"
		}
		e.prefix = append(e.prefix, []byte(sep+string(name)+":"))
	}
	return e, nil
}

// Append appends the encoding of one row to dst. outs[k] holds output k's values for all
// rows of a batch; row selects this row's Width values. It reports whether any value was
// NaN or infinite.
func (e *ValueEncoder) Append(dst []byte, outs [][]float32, row int) (_ []byte, null bool) {
	if e.binary {
		for k, o := range e.outputs {
			for _, v := range outs[k][row*o.Width : (row+1)*o.Width] {
				null = null || isNull(v)
				dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
			}
		}
		return dst, null
	}
	for k, o := range e.outputs {
		dst = append(dst, e.prefix[k]...)
		vals := outs[k][row*o.Width : (row+1)*o.Width]
		if o.Width == 1 {
			dst, null = appendJSONFloat(dst, vals[0], null)
			continue
		}
		dst = append(dst, '[')
		for i, v := range vals {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst, null = appendJSONFloat(dst, v, null)
		}
		dst = append(dst, ']')
	}
	if len(e.outputs) == 0 {
		dst = append(dst, '{')
	}
	return append(dst, '}'), null
}

func isNull(v float32) bool {
	f := float64(v)
	return math.IsNaN(f) || math.IsInf(f, 0)
}

func appendJSONFloat(dst []byte, v float32, null bool) ([]byte, bool) {
	if isNull(v) {
		return append(dst, "null"...), true
	}
	return strconv.AppendFloat(dst, float64(v), 'g', -1, 32), null
}

// MaxValueLen is the longest value the encoding can produce for outputs, in bytes: 4 per
// float for binary; for json, every float at its longest (a 9-digit mantissa and a
// two-digit negative exponent, -1.23456789e-38) and the names and punctuation around
// them. Stores whose layout depends on value sizes (Redis' hash buckets) choose by it.
func MaxValueLen(encoding string, outputs []Output) int {
	n := 0
	if encoding == EncodingBinary {
		for _, o := range outputs {
			n += 4 * o.Width
		}
		return n
	}
	const maxFloat = len("-1.23456789e-38")
	for _, o := range outputs {
		name, _ := json.Marshal(o.Name)
		n += 1 + len(name) + 1 // '{' or ',', the name, ':'
		n += o.Width*maxFloat + max(o.Width-1, 0)
		if o.Width != 1 {
			n += 2 // [ ]
		}
	}
	return max(n+1, 2) // '}' ({} for no outputs)
}

// ValueJSON turns a stored value into the lookup API's "value" object.
func ValueJSON(m *Manifest, raw []byte) (json.RawMessage, error) {
	if m.Encoding != EncodingBinary {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("value of version %s is not valid JSON", m.Version)
		}
		return raw, nil
	}
	width := 0
	for _, o := range m.Outputs {
		width += o.Width
	}
	if len(raw) != 4*width {
		return nil, fmt.Errorf("value of version %s has %d bytes, manifest outputs need %d", m.Version, len(raw), 4*width)
	}
	outs := make([][]float32, len(m.Outputs))
	off := 0
	for k, o := range m.Outputs {
		outs[k] = make([]float32, o.Width)
		for i := range outs[k] {
			outs[k][i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[off:]))
			off += 4
		}
	}
	e, err := NewValueEncoder(EncodingJSON, m.Outputs)
	if err != nil {
		return nil, err
	}
	b, _ := e.Append(nil, outs, 0)
	return b, nil
}

// DefaultJSON renders cold-start default values (per output, Width values) as the
// lookup API's "value" object.
func DefaultJSON(outputs []Output, vals map[string][]float64) (json.RawMessage, error) {
	outs := make([][]float32, len(outputs))
	for k, o := range outputs {
		v := vals[o.Name]
		if len(v) != o.Width {
			return nil, fmt.Errorf("default for output %q has %d values, want %d", o.Name, len(v), o.Width)
		}
		outs[k] = make([]float32, o.Width)
		for i := range v {
			outs[k][i] = float32(v[i])
		}
	}
	e, _ := NewValueEncoder(EncodingJSON, outputs)
	b, _ := e.Append(nil, outs, 0)
	return b, nil
}
