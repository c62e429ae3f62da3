package inference

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/staticref/staticref/inference/onnxgen"
)

// The CUDA pre-check in probeCUDA spares users ONNX Runtime's own stderr
// noise; this checks the runtime agrees when asked directly.
func TestCPUOnlyRuntimeRefusesTheCUDAProvider(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := onnxgen.Logistic(3, 1).Write(path); err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), path, Options{Features: 3, BatchSize: 4, Device: DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := os.Stat(filepath.Join(filepath.Dir(loaded), cudaProvider)); err == nil {
		t.Skipf("%s has a CUDA provider", loaded)
	}
	s, err := m.newORTSession(DeviceCUDA)
	if err == nil {
		s.Destroy()
		t.Fatalf("got a CUDA session from a CPU-only runtime, want an error")
	}
}

// Every session has thread-pool spinning off (it takes the cores the pipeline's other
// stages need) and the intra-op threads asked for.
func TestSessionOptionsTurnSpinningOff(t *testing.T) {
	if err := Init(); err != nil {
		t.Fatal(err)
	}
	so, err := sessionOptions(2, DeviceCPU)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	for _, key := range spinKeys {
		if v, err := so.GetSessionConfigEntry(key); err != nil || v != "0" {
			t.Errorf("%s = %q, %v; want \"0\"", key, v, err)
		}
	}
}

func TestOutputsTogetherWiderThanAStoredValueAreRefused(t *testing.T) {
	out := func(name string, width int64) TensorInfo {
		return TensorInfo{Name: name, Kind: "tensor", ElemType: "float32", Shape: []int64{-1, width}}
	}
	m := &Model{Info: ModelInfo{Outputs: []TensorInfo{out("a", 3000), out("b", 100), out("c", 2000)}}}
	err := m.selectOutputs(Options{})
	want := &WidthError{Output: "c", Width: 2000, Total: 5100}
	if we, ok := err.(*WidthError); !ok || *we != *want {
		t.Fatalf("got %v, want %v", err, want)
	}
	if got := err.Error(); got != `output "c" (2000 values a row) takes the outputs to 5100 values a row, over the 4096 one stored value holds (MaxValueWidth): select fewer outputs (model.outputs)` {
		t.Errorf("message: got %q", got)
	}
	m = &Model{Info: m.Info}
	if err := m.selectOutputs(Options{Outputs: []string{"a", "b"}}); err != nil {
		t.Errorf("a and b, 3100 wide: got %v, want them selected", err)
	}
}
