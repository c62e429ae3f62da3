package writers

import (
	"encoding/json"
	"math"
	"testing"
)

func TestValueEncodings(t *testing.T) {
	outputs := []Output{{Name: "score", Width: 1}, {Name: "probs", Width: 2}}
	outs := [][]float32{{0.25, float32(math.NaN())}, {0.1, 0.9, 0.3, 0.7}}
	m := &Manifest{Version: "v1", Outputs: outputs}

	t.Run("json is the lookup API's value object, NaN as null", func(t *testing.T) {
		e, err := NewValueEncoder(EncodingJSON, outputs)
		if err != nil {
			t.Fatal(err)
		}
		got, null := e.Append(nil, outs, 0)
		if string(got) != `{"score":0.25,"probs":[0.1,0.9]}` || null {
			t.Errorf("row 0: got %s (null %v)", got, null)
		}
		got, null = e.Append(nil, outs, 1)
		if string(got) != `{"score":null,"probs":[0.3,0.7]}` || !null {
			t.Errorf("row 1: got %s (null %v), want a null score", got, null)
		}
	})

	t.Run("binary decodes to the same JSON through the manifest", func(t *testing.T) {
		e, _ := NewValueEncoder(EncodingBinary, outputs)
		raw, _ := e.Append(nil, outs, 0)
		if len(raw) != 12 {
			t.Fatalf("binary value: got %d bytes, want 12", len(raw))
		}
		m.Encoding = EncodingBinary
		v, err := ValueJSON(m, raw)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		json.Unmarshal(v, &got)
		if got["score"] != 0.25 {
			t.Errorf("decoded: got %s", v)
		}
		if _, err := ValueJSON(m, raw[:8]); err == nil {
			t.Error("a short binary value decoded without error")
		}
	})

	t.Run("encoding reuses the buffer: no allocation per row", func(t *testing.T) {
		for _, enc := range []string{EncodingJSON, EncodingBinary} {
			e, _ := NewValueEncoder(enc, outputs)
			buf := make([]byte, 0, 4096)
			allocs := testing.AllocsPerRun(100, func() {
				buf = buf[:0]
				for r := range 2 {
					buf, _ = e.Append(buf, outs, r)
				}
			})
			if allocs != 0 {
				t.Errorf("%s: got %v allocations per call, want 0", enc, allocs)
			}
		}
	})

	t.Run("an unknown encoding is an error", func(t *testing.T) {
		if _, err := NewValueEncoder("xml", outputs); err == nil {
			t.Error("got no error")
		}
	})
}
