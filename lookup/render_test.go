package lookup

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// encoded is what the service wrote with encoding/json before render.go: the reference
// the renderer must match byte for byte.
func encoded(t testing.TB, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderedAnswersAreWhatEncodingJSONWrote(t *testing.T) {
	at := time.Date(2026, 11, 27, 2, 0, 0, 123456789, time.UTC)
	f := func(x float64) *float64 { return &x }
	b := func(x bool) *bool { return &x }
	answers := map[string]Answer{
		"a precomputed answer": {Namespace: "churn", Key: "u000000001", Value: json.RawMessage(`{"score":0.25,"logit":[-1.5,2]}`),
			Version: "20261127T020000Z", ComputedAt: &at, AgeSeconds: f(1.259), Stale: b(false), Source: SourcePrecomputed},
		"a routed answer": {Namespace: "churn", Key: "k", Value: json.RawMessage(`{"s":1}`), Version: "v2", Arm: "candidate",
			ComputedAt: &at, AgeSeconds: f(0), Stale: b(true), Source: SourceFallbackSegment},
		"an error in a batch": {Namespace: "churn", Key: "nobody", Version: "v1",
			Error: &Error{Code: CodeNotFound, Message: `key "nobody" is not in version v1 of churn <&>`}},
		"keys that need escaping": {Namespace: "n", Key: "a\"b\\c\n\t\x01\u2028\u2029é😀<>&", Value: json.RawMessage(`{"x":null}`),
			Version: "v", Source: SourceOnline},
		"a value with spaces is compacted": {Namespace: "n", Key: "k", Value: compactValue(json.RawMessage(" { \"x\" : [ 1 , 2 ] }\n")),
			Version: "v", AgeSeconds: f(1e-7)},
		"ages of every form": {Namespace: "n", Key: "k", AgeSeconds: f(123456789.125)},
		"a huge age":         {Namespace: "n", Key: "k", AgeSeconds: f(1e22)},
		"a negative age":     {Namespace: "n", Key: "k", AgeSeconds: f(-0.001)},
		"a local time":       {Namespace: "n", Key: "k", ComputedAt: func() *time.Time { x := at.In(time.FixedZone("x", 3600)); return &x }()},
	}
	for name, a := range answers {
		t.Run(name, func(t *testing.T) {
			got := string(append(appendAnswer(nil, &a), '\n'))
			if want := encoded(t, a); got != want {
				t.Errorf("got  %s want %s", got, want)
			}
			if a.Value != nil && a.Version != "" {
				ent, e := renderEntry(nil, a.Namespace, a.Key, a.Version, a.RowVersion, 0, a.Value)
				back, ok := decodeEntry(ent)
				if !ok || !bytes.Equal(back.value, a.Value) || !bytes.Equal(e.value, a.Value) {
					t.Fatalf("entry: got value %q (ok %v), want %q", back.value, ok, a.Value)
				}
				c := a
				c.head = back.head
				if got := string(append(appendAnswer(nil, &c), '\n')); got != encoded(t, a) {
					t.Errorf("from the cached head: got %s want %s", got, encoded(t, a))
				}
			}
		})
	}
	t.Run("a batch", func(t *testing.T) {
		var list []Answer
		for _, a := range answers {
			list = append(list, a)
		}
		want := encoded(t, BatchAnswer{Namespace: "churn", Version: "v1", Stale: true, Answers: list})
		if got := string(appendBatch(nil, "churn", "v1", true, list)); got != want {
			t.Errorf("got  %s want %s", got, want)
		}
	})
}

func FuzzRenderedStringsAreWhatEncodingJSONWrote(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b", "\x00\x1f\x7f", "\xff\xfe", "\u2028", "é😀", strings.Repeat("<", 3)} {
		f.Add(s, 1.5)
	}
	f.Fuzz(func(t *testing.T, s string, age float64) {
		if math.IsNaN(age) || math.IsInf(age, 0) {
			return
		}
		a := Answer{Namespace: s, Key: s, Version: s, AgeSeconds: &age, Source: s}
		if got, want := string(append(appendAnswer(nil, &a), '\n')), encoded(t, a); got != want {
			t.Errorf("got  %q want %q", got, want)
		}
	})
}

func TestACacheHitDoesNotAllocate(t *testing.T) {
	c := NewCache(1)
	ent, _ := renderEntry(nil, "churn", "u000000001", "20261127T020000Z", "20261127T020000Z", 0, []byte(`{"score":0.25}`))
	k := appendCacheKey(nil, "churn", "20261127T020000Z", "u000000001")
	c.put(k, ent)
	sc := &scratch{}
	at := time.Now()
	age, stale := 1.5, false
	allocs := testing.AllocsPerRun(100, func() {
		sc.key = appendCacheKey(sc.key[:0], "churn", "20261127T020000Z", "u000000001")
		var e cached
		var ok bool
		sc.ent, e, ok = c.get(sc.ent, sc.key)
		if !ok || !e.found {
			t.Fatal("miss")
		}
		a := Answer{Namespace: "churn", Key: "u000000001", Value: e.value, Version: "20261127T020000Z", head: e.head,
			ComputedAt: &at, AgeSeconds: &age, Stale: &stale, Source: SourcePrecomputed}
		sc.out = appendAnswer(sc.out[:0], &a)
	})
	if allocs > 0 {
		t.Errorf("a hit and its rendering: %v allocations, want 0", allocs)
	}
}
