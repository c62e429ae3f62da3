package inference_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/inference/onnxgen"
)

// writeModel writes m into a fresh temporary directory.
func writeModel(t testing.TB, m *onnxgen.Model) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), m.Name+".onnx")
	if err := m.Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t testing.TB, path string, opts inference.Options) *inference.Model {
	t.Helper()
	m, err := inference.Load(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newSession(t testing.TB, m *inference.Model) *inference.Session {
	t.Helper()
	s, err := m.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rows returns n rows shaped like the generator's data: integers up to 100
// in even columns and floats in [-1, 1] in odd ones, or only floats.
func rows(n, features int, floatsOnly bool, seed uint64) [][]float64 {
	r := rand.New(rand.NewPCG(seed, 0))
	out := make([][]float64, n)
	for i := range out {
		row := make([]float64, features)
		for j := range row {
			if !floatsOnly && j%2 == 0 {
				row[j] = float64(r.IntN(101))
			} else {
				row[j] = float64(float32(r.Float64()*2 - 1))
			}
		}
		out[i] = row
	}
	return out
}

// captureLogs sends slog's default logger to a buffer for the test.
func captureLogs(t *testing.T) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return &buf
}

// checkRun runs data through s in batches of batch rows and compares every
// output with the model's float64 reference.
func checkRun(t *testing.T, gen *onnxgen.Model, m *inference.Model, s *inference.Session, data [][]float64, batch int) {
	t.Helper()
	f := gen.Features
	for start := 0; start < len(data); start += batch {
		n := min(batch, len(data)-start)
		in := s.Input(n)
		if len(in) != n*f {
			t.Fatalf("got input buffer of %d values, want %d", len(in), n*f)
		}
		for i := 0; i < n; i++ {
			for j, v := range data[start+i] {
				in[i*f+j] = float32(v)
			}
		}
		outs, err := s.Run(n)
		if err != nil {
			t.Fatalf("Run(%d): %v", n, err)
		}
		if len(outs) != len(m.Outputs) {
			t.Fatalf("got %d outputs, want %d", len(outs), len(m.Outputs))
		}
		for i := 0; i < n; i++ {
			want := gen.Predict(data[start+i])
			for k, o := range m.Outputs {
				if len(outs[k]) != n*o.Width {
					t.Fatalf("output %s: got %d values, want %d", o.Name, len(outs[k]), n*o.Width)
				}
				for c := 0; c < o.Width; c++ {
					got, w := float64(outs[k][i*o.Width+c]), want[o.Name][c]
					if math.Abs(got-w) > 1e-5*math.Max(1, math.Abs(w)) {
						t.Fatalf("row %d output %s[%d]: got %v, want %v", start+i, o.Name, c, got, w)
					}
				}
			}
		}
	}
}

func TestSessionMatchesReference(t *testing.T) {
	gens := []struct {
		model      *onnxgen.Model
		floatsOnly bool
	}{
		{onnxgen.Logistic(4, 1), false},
		{onnxgen.Logistic(13, 2), false},
		{onnxgen.MLP(6, 16, 3), false},
		{onnxgen.Embedding(32, 4), true},
		{onnxgen.ZipMapClassifier(5, 5), false},
		{onnxgen.MLP(3, 4, 6).WithBatch(8), false},
	}
	for _, g := range gens {
		path := writeModel(t, g.model)
		data := rows(300, g.model.Features, g.floatsOnly, 42)
		for _, batch := range []int{1, 7, 512} {
			name := fmt.Sprintf("%s with %d features matches its reference in batches of %d", g.model.Name, g.model.Features, batch)
			t.Run(name, func(t *testing.T) {
				m := load(t, path, inference.Options{Features: g.model.Features, BatchSize: batch, Device: "cpu"})
				var got []string
				for _, o := range m.Outputs {
					got = append(got, o.Name)
				}
				if strings.Join(got, ",") != strings.Join(g.model.Outputs, ",") {
					t.Fatalf("got outputs %v, want %v", got, g.model.Outputs)
				}
				checkRun(t, g.model, m, newSession(t, m), data, batch)
			})
		}
	}
}

func TestRunWithNoRowsReturnsEmptyOutputs(t *testing.T) {
	gen := onnxgen.Logistic(3, 1)
	m := load(t, writeModel(t, gen), inference.Options{Features: 3, BatchSize: 4})
	outs, err := newSession(t, m).Run(0)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if len(o) != 0 {
			t.Errorf("output %d: got %d values, want 0", i, len(o))
		}
	}
}

func TestRunRefusesMoreRowsThanTheBatchSize(t *testing.T) {
	m := load(t, writeModel(t, onnxgen.Logistic(3, 1)), inference.Options{Features: 3, BatchSize: 4})
	if _, err := newSession(t, m).Run(5); err == nil {
		t.Errorf("got no error for 5 rows with batch size 4, want one")
	}
}

func TestSessionsRunConcurrently(t *testing.T) {
	gen := onnxgen.MLP(8, 16, 9)
	m := load(t, writeModel(t, gen), inference.Options{Features: 8, BatchSize: 64, IntraOpThreads: 1})
	var wg sync.WaitGroup
	for w := range 4 {
		s := newSession(t, m)
		data := rows(200, 8, false, uint64(w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			checkRun(t, gen, m, s, data, 64)
		}()
	}
	wg.Wait()
}

func TestInspect(t *testing.T) {
	gen := onnxgen.ZipMapClassifier(5, 1)
	path := writeModel(t, gen)
	info, err := inference.Inspect(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"the path is the one given", info.Path, path},
		{"the digest is the file's sha256", len(info.SHA256), 64},
		{"the input is a dynamic batch of float32 rows", fmt.Sprint(info.Inputs), "[features: tensor float32 [-1 5]]"},
		{"the ZipMap output is a sequence beside the tensor", fmt.Sprint(info.Outputs), "[proba_map: sequence probabilities: tensor float32 [-1 2]]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	logistic := writeModel(t, onnxgen.Logistic(5, 1))
	zipmap := writeModel(t, onnxgen.ZipMapClassifier(4, 1))
	wide := writeModel(t, onnxgen.Wide(4, 100_000, 1))

	random := filepath.Join(dir, "random.onnx")
	noise := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(random, noise, 0o644); err != nil {
		t.Fatal(err)
	}
	type row struct {
		UserID int64   `parquet:"user_id"`
		F0     float64 `parquet:"f0"`
	}
	pq := filepath.Join(dir, "features.parquet")
	if err := parquet.WriteFile(pq, []row{{1, 0.5}, {2, 1.5}}); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.onnx")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		opts inference.Options
		want string // the error, or its start when it ends in "..."
	}{
		{
			name: "a model fed fewer features than it takes",
			path: logistic,
			opts: inference.Options{Features: 4, BatchSize: 8},
			want: fmt.Sprintf("model %s: input \"features\" takes 5 values per row, job feeds 4 (source.features)", logistic),
		},
		{
			name: "a file of random bytes",
			path: random,
			opts: inference.Options{Features: 4, BatchSize: 8},
			want: fmt.Sprintf("model %s: not an ONNX model: ...", random),
		},
		{
			name: "a Parquet file",
			path: pq,
			opts: inference.Options{Features: 4, BatchSize: 8},
			want: fmt.Sprintf("model %s: not an ONNX model: ...", pq),
		},
		{
			name: "an empty file",
			path: empty,
			opts: inference.Options{Features: 4, BatchSize: 8},
			want: fmt.Sprintf("model %s: not an ONNX model: file is empty", empty),
		},
		{
			name: "a missing file",
			path: filepath.Join(dir, "missing.onnx"),
			opts: inference.Options{Features: 4, BatchSize: 8},
			want: fmt.Sprintf("model %s: stat %s: no such file or directory", filepath.Join(dir, "missing.onnx"), filepath.Join(dir, "missing.onnx")),
		},
		{
			name: "an output the model lacks",
			path: logistic,
			opts: inference.Options{Features: 5, BatchSize: 8, Outputs: []string{"score", "probability"}},
			want: fmt.Sprintf("model %s: output \"probability\" not found; the model's outputs are \"score\", \"logit\" (model.outputs)", logistic),
		},
		{
			name: "an output named twice",
			path: logistic,
			opts: inference.Options{Features: 5, BatchSize: 8, Outputs: []string{"score", "score"}},
			want: fmt.Sprintf("model %s: output \"score\" is selected twice (model.outputs)", logistic),
		},
		{
			name: "a named ZipMap output",
			path: zipmap,
			opts: inference.Options{Features: 4, BatchSize: 8, Outputs: []string{"proba_map"}},
			want: fmt.Sprintf("model %s: output \"proba_map\" is a sequence, not a tensor; staticref stores numeric tensors (model.outputs)", zipmap),
		},
		{
			name: "an input the model lacks",
			path: logistic,
			opts: inference.Options{Input: "x", Features: 5, BatchSize: 8},
			want: fmt.Sprintf("model %s: input \"x\" not found; the model's inputs are \"features\" (model.input)", logistic),
		},
		{
			name: "an unknown device",
			path: logistic,
			opts: inference.Options{Features: 5, BatchSize: 8, Device: "tpu"},
			want: fmt.Sprintf("model %s: device \"tpu\", want auto, cpu or cuda (model.device)", logistic),
		},
		{
			name: "an output 100,000 values wide",
			path: wide,
			opts: inference.Options{Features: 4, BatchSize: 4000},
			want: fmt.Sprintf("model %s: output \"wide\" gives 100000 values a row, over the 4096 staticref stores of one output (MaxOutputWidth): leave it out of model.outputs, or use a narrower model", wide),
		},
		{
			name: "a batch size of zero",
			path: logistic,
			opts: inference.Options{Features: 5},
			want: fmt.Sprintf("model %s: batch size 0, want at least 1 (model.batch_size)", logistic),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			m, err := inference.Load(context.Background(), tt.path, tt.opts)
			if err == nil {
				m.Close()
				t.Fatalf("got no error, want %q", tt.want)
			}
			got := err.Error()
			t.Logf("error: %s", got)
			if prefix, ok := strings.CutSuffix(tt.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("got %q, want it to start %q", got, prefix)
				}
			} else if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("got a multi-line error %q, want one line", got)
			}
		})
	}
}

// TestAWideOutputIsRefusedBeforeItsBuffersAreAllocated: with 4000 rows a batch, a
// 100,000-wide output took over 3 GB.
func TestAWideOutputIsRefusedBeforeItsBuffersAreAllocated(t *testing.T) {
	path := writeModel(t, onnxgen.Wide(4, 100_000, 1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := inference.Load(context.Background(), path, inference.Options{Features: 4, BatchSize: 4000, Device: inference.DeviceCPU})
	runtime.ReadMemStats(&after)
	var we *inference.WidthError
	if !errors.As(err, &we) || we.Output != "wide" || we.Width != 100_000 || !errors.Is(err, inference.ErrTooWide) || !errors.Is(err, inference.ErrMisfit) {
		t.Fatalf("got %v, want a WidthError for output wide, 100000 wide, matching ErrTooWide and ErrMisfit", err)
	}
	// The model file itself is 1.6 MB, read once.
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("allocated %d MiB, want under 16", got>>20)
	}
	// At the limit a model loads.
	m := load(t, writeModel(t, onnxgen.Wide(4, inference.MaxOutputWidth, 1)), inference.Options{Features: 4, BatchSize: 8, Device: inference.DeviceCPU})
	if got := m.Outputs[0].Width; got != inference.MaxOutputWidth {
		t.Errorf("width: got %d, want %d", got, inference.MaxOutputWidth)
	}
}

func TestLoadSkipsAnUnnamedZipMapOutput(t *testing.T) {
	logs := captureLogs(t)
	gen := onnxgen.ZipMapClassifier(4, 1)
	m := load(t, writeModel(t, gen), inference.Options{Features: 4, BatchSize: 8})
	if got, want := fmt.Sprint(m.Outputs), "[{probabilities 2}]"; got != want {
		t.Errorf("got outputs %s, want %s", got, want)
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "output=proba_map") {
		t.Errorf("got logs %q, want a warning about proba_map", got)
	}
}

func TestDevices(t *testing.T) {
	path := writeModel(t, onnxgen.Logistic(3, 1))
	t.Run("cpu runs on the cpu", func(t *testing.T) {
		m := load(t, path, inference.Options{Features: 3, BatchSize: 8, Device: "cpu"})
		if m.Device != "cpu" {
			t.Errorf("got device %q, want cpu", m.Device)
		}
	})
	t.Run("auto falls back to the cpu and says why", func(t *testing.T) {
		logs := captureLogs(t)
		for _, device := range []string{"auto", ""} {
			m := load(t, path, inference.Options{Features: 3, BatchSize: 8, Device: device})
			if m.Device != "cpu" {
				t.Errorf("device %q: got device %q, want cpu (this ONNX Runtime build has no CUDA)", device, m.Device)
			}
			checkRun(t, onnxgen.Logistic(3, 1), m, newSession(t, m), rows(10, 3, false, 1), 8)
		}
		t.Logf("logs: %s", logs)
		if got := logs.String(); !strings.Contains(got, "level=INFO") || !strings.Contains(got, "CUDA execution provider unavailable") {
			t.Errorf("got logs %q, want an info line about CUDA", got)
		}
	})
	t.Run("cuda fails loudly without CUDA", func(t *testing.T) {
		m, err := inference.Load(context.Background(), path, inference.Options{Features: 3, BatchSize: 8, Device: "cuda"})
		if err == nil {
			m.Close()
			t.Fatalf("got device %q and no error, want an error (this ONNX Runtime build has no CUDA)", m.Device)
		}
		t.Logf("error: %v", err)
		want := fmt.Sprintf("model %s: device cuda: CUDA execution provider unavailable", path)
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %q, want it to start %q", err, want)
		}
	})
}

// TestInitReportsMissingRuntime re-executes the test binary, because Init
// runs once per process and this process has already loaded the runtime.
func TestInitReportsMissingRuntime(t *testing.T) {
	const child = "STATICREF_TEST_INIT_CHILD"
	if os.Getenv(child) == "1" {
		err := inference.Init()
		fmt.Printf("errors.Is=%v\n", errors.Is(err, inference.ErrRuntimeMissing))
		fmt.Printf("message=%v\n", err)
		again := inference.Init()
		fmt.Printf("same=%v\n", again == err)
		return
	}
	missing := filepath.Join(t.TempDir(), "nope", "libonnxruntime.so")
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitReportsMissingRuntime$", "-test.v")
	cmd.Env = append(os.Environ(), child+"=1", inference.EnvLibrary+"="+missing)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{
		"errors.Is=true\n",
		fmt.Sprintf("message=ONNX Runtime library not found at %s: run \"make ort\" or set STATICREF_ORT_LIB\n", missing),
		"same=true\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("got child output %q, want it to contain %q", out, want)
		}
	}
}

func TestLibraryPath(t *testing.T) {
	t.Run("the environment variable wins", func(t *testing.T) {
		t.Setenv(inference.EnvLibrary, "/opt/ort/libonnxruntime.so")
		if got, want := inference.LibraryPath(), "/opt/ort/libonnxruntime.so"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("tests find the library at the repository root", func(t *testing.T) {
		t.Setenv(inference.EnvLibrary, "")
		got := inference.LibraryPath()
		if _, err := os.Stat(got); err != nil {
			t.Errorf("got %q, which does not exist: %v", got, err)
		}
	})
}

func BenchmarkSessionRun(b *testing.B) {
	for _, bench := range []struct {
		gen   *onnxgen.Model
		batch int
	}{
		{onnxgen.Logistic(16, 1), 8192},
		{onnxgen.MLP(16, 64, 1), 8192},
	} {
		b.Run(fmt.Sprintf("%s/batch=%d", bench.gen.Name, bench.batch), func(b *testing.B) {
			m := load(b, writeModel(b, bench.gen), inference.Options{Features: bench.gen.Features, BatchSize: bench.batch, Device: "cpu"})
			s := newSession(b, m)
			in := s.Input(bench.batch)
			for i := range in {
				in[i] = float32(i%100) / 10
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Run(bench.batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*bench.batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
