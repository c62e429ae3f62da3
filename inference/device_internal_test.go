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
