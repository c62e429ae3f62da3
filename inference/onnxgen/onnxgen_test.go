package onnxgen

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func models(seed uint64) []*Model {
	return []*Model{
		Logistic(4, seed),
		MLP(6, 8, seed),
		Embedding(16, seed),
		ZipMapClassifier(5, seed),
	}
}

func TestModelsAreDeterministic(t *testing.T) {
	a, b, c := models(1), models(1), models(2)
	for i := range a {
		t.Run(a[i].Name+" is the same for the same seed and differs for another", func(t *testing.T) {
			if !bytes.Equal(a[i].Bytes, b[i].Bytes) {
				t.Errorf("got different bytes for seed 1 twice, want equal")
			}
			if bytes.Equal(a[i].Bytes, c[i].Bytes) {
				t.Errorf("got equal bytes for seeds 1 and 2, want different")
			}
		})
	}
}

// topFields decodes the top level of a ModelProto: varint fields by number
// and the count of length-delimited fields by number.
func topFields(t *testing.T, b []byte) (map[protowire.Number]uint64, map[protowire.Number]int) {
	t.Helper()
	varints := map[protowire.Number]uint64{}
	msgs := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				t.Fatalf("bad varint: %v", protowire.ParseError(m))
			}
			varints[num] = v
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
			}
			msgs[num]++
			b = b[m:]
		}
	}
	return varints, msgs
}

func TestModelsAreWellFormedModelProtos(t *testing.T) {
	for _, m := range models(7) {
		t.Run(m.Name+" has ir_version 8, a graph and its opsets", func(t *testing.T) {
			varints, msgs := topFields(t, m.Bytes)
			if got := varints[1]; got != irVersion {
				t.Errorf("got ir_version %d, want %d", got, irVersion)
			}
			if got := msgs[7]; got != 1 {
				t.Errorf("got %d graphs, want 1", got)
			}
			want := 1
			if m.Name == "zipmap" {
				want = 2
			}
			if got := msgs[8]; got != want {
				t.Errorf("got %d opset imports, want %d", got, want)
			}
		})
	}
}

func TestPredict(t *testing.T) {
	x := []float64{10, 0.5, 90, -0.25, 3}
	t.Run("logistic score is the sigmoid of its logit", func(t *testing.T) {
		out := Logistic(5, 3).Predict(x)
		if got, want := out["score"][0], 1/(1+math.Exp(-out["logit"][0])); math.Abs(got-want) > 1e-15 {
			t.Errorf("got score %v, want %v", got, want)
		}
	})
	t.Run("logistic score is not saturated for integer features up to 100", func(t *testing.T) {
		if got := Logistic(5, 3).Predict(x)["score"][0]; got < 0.01 || got > 0.99 {
			t.Errorf("got score %v, want within (0.01, 0.99)", got)
		}
	})
	t.Run("zipmap probabilities sum to one", func(t *testing.T) {
		p := ZipMapClassifier(5, 3).Predict(x)["probabilities"]
		if got := p[0] + p[1]; math.Abs(got-1) > 1e-12 {
			t.Errorf("got sum %v, want 1", got)
		}
	})
	t.Run("every output has the declared width", func(t *testing.T) {
		widths := map[string]int{"score": 1, "logit": 1, "scores": 2, "probabilities": 2}
		for _, m := range models(3) {
			row := make([]float64, m.Features)
			out := m.Predict(row)
			if len(out) != len(m.Outputs) {
				t.Errorf("%s: got %d outputs, want %d", m.Name, len(out), len(m.Outputs))
			}
			for _, name := range m.Outputs {
				if got, want := len(out[name]), widths[name]; got != want {
					t.Errorf("%s: got %s width %d, want %d", m.Name, name, got, want)
				}
			}
		}
	})
}

func TestWithBatchChangesOnlyTheBatchDimension(t *testing.T) {
	m := MLP(4, 8, 1)
	fixed := m.WithBatch(16)
	if bytes.Equal(m.Bytes, fixed.Bytes) {
		t.Fatalf("got equal bytes, want the fixed-batch model to differ")
	}
	if got, want := fixed.Predict([]float64{1, 2, 3, 4})["scores"], m.Predict([]float64{1, 2, 3, 4})["scores"]; got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestWrite(t *testing.T) {
	m := Embedding(8, 1)
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := m.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m.Bytes) {
		t.Errorf("got %d bytes on disk, want the model's %d", len(got), len(m.Bytes))
	}
}
