package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/pebble" // pebble: stores for the runs under test
)

const modelSeed = 7

// dataset is a generated set of shards and the models that score them.
type dataset struct {
	spec   shardgen.Spec
	dir    string
	files  []string
	models map[string]*onnxgen.Model
}

func (d *dataset) glob() string { return filepath.Join(d.dir, "features", "*.parquet") }
func (d *dataset) model(name string) string {
	return filepath.Join(d.dir, "models", name+".onnx")
}

var (
	bigOnce sync.Once
	big     *dataset
)

// bigDataset is shared by the tests that need >= 100k rows in several shards.
func bigDataset(t *testing.T) *dataset {
	bigOnce.Do(func() {
		dir, err := os.MkdirTemp("", "staticref-pipeline-")
		if err != nil {
			t.Fatal(err)
		}
		big = generate(t, dir, shardgen.Spec{Rows: 120_000, Shards: 4, RowGroupRows: 10_000, Seed: 1})
	})
	if big == nil {
		t.Fatal("generating the shared data set failed")
	}
	return big
}

func TestMain(m *testing.M) {
	code := m.Run()
	objtest.Stop()
	if big != nil {
		os.RemoveAll(big.dir)
	}
	os.Exit(code)
}

func generate(t *testing.T, dir string, spec shardgen.Spec) *dataset {
	t.Helper()
	files, err := shardgen.Generate(filepath.Join(dir, "features"), spec)
	if err != nil {
		t.Fatal(err)
	}
	d := &dataset{spec: spec, dir: dir, files: files, models: map[string]*onnxgen.Model{}}
	if err := os.MkdirAll(filepath.Join(dir, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*onnxgen.Model{
		onnxgen.Logistic(4, modelSeed),
		onnxgen.MLP(4, 16, modelSeed),
		onnxgen.Embedding(shardgen.EmbeddingDim, modelSeed),
	} {
		if err := m.Write(d.model(m.Name)); err != nil {
			t.Fatal(err)
		}
		d.models[m.Name] = m
	}
	return d
}

// newJob builds a job the way a job file would, through jobs.Parse, so defaults and
// validation are the real ones.
func newJob(t *testing.T, d *dataset, store string, sets ...string) *jobs.Job {
	t.Helper()
	yaml := `
name: scores
source:
  uri: ` + d.glob() + `
  key: user_id
  features: [f0, f1, f2, f3]
model:
  path: ` + d.model("logistic") + `
  batch_size: 4096
  workers: 2
  device: cpu
sink:
  store: ` + store + `
defaults:
  global: mean
  segment_by: country
release:
  keep: 1
`
	j, err := jobs.Parse([]byte(yaml), filepath.Join(t.TempDir(), "job.yaml"), sets)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func openStore(t *testing.T) (*writers.Store, string) {
	t.Helper()
	url := "pebble:" + filepath.Join(t.TempDir(), "store")
	s, err := writers.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func run(t *testing.T, s *writers.Store, j *jobs.Job) (*pipeline.Result, error) {
	t.Helper()
	return pipeline.Run(context.Background(), pipeline.Config{Job: j, Store: s, Log: quiet})
}

// checkEveryKey compares every stored value with the model's float64 reference computed
// from the generated row, and the number of stored keys with the rows read.
func checkEveryKey(t *testing.T, s *writers.Store, d *dataset, m *writers.Manifest, model string, features func(shardgen.Row) []float64) {
	t.Helper()
	ctx := context.Background()
	ref := d.models[model]
	if m.RowsRead != int64(d.spec.Rows) || m.RowsWritten != int64(d.spec.Rows) {
		t.Fatalf("rows read %d, written %d, want %d each", m.RowsRead, m.RowsWritten, d.spec.Rows)
	}
	n, err := s.CountKeys(ctx, m.Namespace, m.Version)
	if err != nil {
		t.Fatal(err)
	}
	if n != m.RowsRead {
		t.Fatalf("keys stored: got %d, want %d (rows read)", n, m.RowsRead)
	}
	// What the footers told the store before any row was read: every row, and a prefix
	// every key has ("u000" for 120,000 rows u000000000..u000119999).
	if m.ExpectedRows != int64(d.spec.Rows) {
		t.Errorf("expected_rows %d, want %d", m.ExpectedRows, d.spec.Rows)
	}
	first, last := shardgen.RowAt(d.spec, 0).Key, shardgen.RowAt(d.spec, int64(d.spec.Rows)-1).Key
	if m.KeyPrefix == "" || !strings.HasPrefix(first, m.KeyPrefix) || !strings.HasPrefix(last, m.KeyPrefix) {
		t.Errorf("key_prefix %q, want a non-empty prefix of %s and %s", m.KeyPrefix, first, last)
	}
	worst := 0.0
	for r := range int64(d.spec.Rows) {
		row := shardgen.RowAt(d.spec, r)
		raw, err := s.Get(ctx, m.Namespace, m.Version, []byte(row.Key))
		if err != nil {
			t.Fatalf("key %s: %v", row.Key, err)
		}
		v, err := writers.ValueJSON(m, raw)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(v, &got); err != nil {
			t.Fatal(err)
		}
		want := ref.Predict(features(row))
		if len(got) != len(m.Outputs) {
			t.Fatalf("key %s: got outputs %v, want %v", row.Key, got, m.Outputs)
		}
		for _, o := range m.Outputs {
			vals := toFloats(got[o.Name])
			if len(vals) != len(want[o.Name]) {
				t.Fatalf("key %s output %s: got %v, want %v", row.Key, o.Name, vals, want[o.Name])
			}
			for i := range vals {
				diff := math.Abs(vals[i] - want[o.Name][i])
				worst = max(worst, diff)
				if diff > 1e-5 {
					t.Fatalf("key %s output %s[%d]: got %v, want %v", row.Key, o.Name, i, vals[i], want[o.Name][i])
				}
			}
		}
	}
	t.Logf("%d keys checked, largest difference from the float64 reference %.2g", d.spec.Rows, worst)
}

func toFloats(v any) []float64 {
	switch v := v.(type) {
	case float64:
		return []float64{v}
	case []any:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i], _ = x.(float64)
		}
		return out
	}
	return nil
}

func scalarFeatures(r shardgen.Row) []float64 { return r.F[:] }
func embedding(r shardgen.Row) []float64      { return r.Embedding[:] }

func TestEveryKeyMatchesAnIndependentComputation(t *testing.T) {
	d := bigDataset(t)
	tests := []struct {
		name     string
		model    string
		sets     []string
		features func(shardgen.Row) []float64
	}{
		{"logistic regression over four numeric columns of four types, json values", "logistic", nil, scalarFeatures},
		{"an MLP with binary values", "mlp", []string{"sink.encoding=binary"}, scalarFeatures},
		{"a model reading a variable list<float32> column", "embedding", []string{"source.features=[embedding]"}, embedding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := openStore(t)
			j := newJob(t, d, url, append(tt.sets, "model.path="+d.model(tt.model))...)
			res, err := run(t, s, j)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Flipped {
				t.Fatal("first complete version was not flipped live")
			}
			live, _ := s.Live(context.Background(), "scores")
			if live != res.Manifest.Version {
				t.Fatalf("live: got %q, want %q", live, res.Manifest.Version)
			}
			checkEveryKey(t, s, d, res.Manifest, tt.model, tt.features)
		})
	}
}

func TestDefaultsAreTheMeanOfTheStoredPredictions(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 5000, Shards: 2, RowGroupRows: 1000, Seed: 3})
	s, url := openStore(t)
	res, err := run(t, s, newJob(t, d, url))
	if err != nil {
		t.Fatal(err)
	}
	ref := d.models["logistic"]
	sums := map[string]float64{}
	counts := map[string]int{}
	var total float64
	for r := range int64(d.spec.Rows) {
		row := shardgen.RowAt(d.spec, r)
		score := ref.Predict(row.F[:])["score"][0]
		total += score
		sums[row.Country] += score
		counts[row.Country]++
	}
	def := res.Manifest.Defaults
	if def == nil || def.Method != "mean" {
		t.Fatalf("defaults: got %+v, want a mean", def)
	}
	if got, want := def.Global["score"][0], total/float64(d.spec.Rows); math.Abs(got-want) > 1e-5 {
		t.Errorf("global mean score: got %v, want %v", got, want)
	}
	if len(def.Segments) != len(counts) {
		t.Errorf("segments: got %d, want %d", len(def.Segments), len(counts))
	}
	for c, n := range counts {
		if got, want := def.Segments[c]["score"][0], sums[c]/float64(n); math.Abs(got-want) > 1e-5 {
			t.Errorf("segment %s mean score: got %v, want %v", c, got, want)
		}
	}
}

func TestReleaseLifecycle(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 3000, Shards: 3, RowGroupRows: 1000, Seed: 5})
	ctx := context.Background()
	s, url := openStore(t)
	clock := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	runAt := func(j *jobs.Job) (*pipeline.Result, error) {
		clock = clock.Add(time.Hour)
		at := clock
		return pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Now: func() time.Time { return at }})
	}

	first, err := runAt(newJob(t, d, url))
	if err != nil {
		t.Fatal(err)
	}
	second, err := runAt(newJob(t, d, url))
	if err != nil {
		t.Fatal(err)
	}
	if first.Manifest.Version == second.Manifest.Version {
		t.Fatalf("two runs made one version %s", first.Manifest.Version)
	}
	if first.Manifest.Version != "20261127T030000Z" {
		t.Errorf("version id: got %s, want the UTC start time 20261127T030000Z", first.Manifest.Version)
	}
	if second.Previous != first.Manifest.Version {
		t.Errorf("second run replaced %q, want %q", second.Previous, first.Manifest.Version)
	}

	t.Run("rollback brings the first version back", func(t *testing.T) {
		from, to, err := writers.Rollback(ctx, s, "scores")
		if err != nil {
			t.Fatal(err)
		}
		if from != second.Manifest.Version || to != first.Manifest.Version {
			t.Fatalf("rollback: got %s -> %s, want %s -> %s", from, to, second.Manifest.Version, first.Manifest.Version)
		}
		// Nothing is older than the first version; the one rolled away from is newer.
		_, _, err = writers.Rollback(ctx, s, "scores")
		if !errors.Is(err, writers.ErrNotFound) || !strings.Contains(err.Error(), second.Manifest.Version+" is newer") {
			t.Errorf("a second rollback: got %v, want not found, pointing at the newer %s", err, second.Manifest.Version)
		}
		if _, err := writers.Flip(ctx, s, "scores", second.Manifest.Version); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a failing gate leaves the version complete but not live", func(t *testing.T) {
		// One shard of three: a third of the live rows, under min_rows_ratio 0.9.
		res, err := runAt(newJob(t, d, url, "source.uri="+d.files[0]))
		if !errors.Is(err, pipeline.ErrGateFailed) {
			t.Fatalf("got %v, want ErrGateFailed", err)
		}
		if !strings.Contains(err.Error(), "min_rows_ratio") {
			t.Errorf("error does not name the gate: %v", err)
		}
		live, _ := s.Live(ctx, "scores")
		if live != second.Manifest.Version {
			t.Errorf("live: got %s, want %s untouched", live, second.Manifest.Version)
		}
		m, err := s.Manifest(ctx, "scores", res.Manifest.Version)
		if err != nil {
			t.Fatal(err)
		}
		if got := writers.EffectiveState(m, live); got != writers.StateComplete {
			t.Errorf("state: got %s, want complete", got)
		}
	})

	t.Run("gc after a flip keeps release.keep previous versions", func(t *testing.T) {
		third, err := runAt(newJob(t, d, url))
		if err != nil {
			t.Fatal(err)
		}
		live, vs, err := writers.List(ctx, s, "scores")
		if err != nil {
			t.Fatal(err)
		}
		if live != third.Manifest.Version {
			t.Fatalf("live: got %s, want %s", live, third.Manifest.Version)
		}
		states := map[string]writers.State{}
		for _, v := range vs {
			states[v.Version] = v.Effective
		}
		want := map[string]writers.State{
			first.Manifest.Version:  writers.StateRetired,
			second.Manifest.Version: writers.StatePrevious,
			third.Manifest.Version:  writers.StateLive,
		}
		for v, st := range want {
			if states[v] != st {
				t.Errorf("version %s: got %s, want %s (all: %v)", v, states[v], st, states)
			}
		}
		if n, _ := s.CountKeys(ctx, "scores", first.Manifest.Version); n != 0 {
			t.Errorf("retired version still holds %d keys", n)
		}
	})
}

// TestBadInputFailsClearlyAndLeavesTheLiveVersionAlone runs a good version first, then
// each bad input: the run must fail with one message naming the file, column or field,
// and the live version must be the good one afterwards.
func TestBadInputFailsClearlyAndLeavesTheLiveVersionAlone(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 2000, Shards: 2, RowGroupRows: 500, Seed: 9})
	nulls := generate(t, t.TempDir(), shardgen.Spec{Rows: 2000, Shards: 2, RowGroupRows: 500, Seed: 9, NullEvery: 100})
	ctx := context.Background()

	bad := t.TempDir()
	truncated := filepath.Join(bad, "truncated.parquet")
	whole, _ := os.ReadFile(d.files[1])
	os.WriteFile(truncated, whole[:len(whole)/2], 0o644)
	notONNX := filepath.Join(bad, "model.onnx")
	os.WriteFile(notONNX, whole[:4096], 0o644) // Parquet bytes, not a model
	wide := filepath.Join(bad, "wide.onnx")
	if err := onnxgen.Logistic(5, modelSeed).Write(wide); err != nil {
		t.Fatal(err)
	}
	wideOut := filepath.Join(bad, "wide-out.onnx")
	if err := onnxgen.Wide(4, 100_000, modelSeed).Write(wideOut); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(bad, "fifo.onnx")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	longKey := filepath.Join(bad, "long-key.parquet")
	writeKeys(t, longKey, []string{"ok", strings.Repeat("k", writers.MaxKeyLen+1)})

	tests := []struct {
		name string
		data *dataset
		sets []string
		want []string // fragments of the one error message
		// mismatch: found before anything is written, and re-running cannot help
		// (ErrMismatch, exit 2); otherwise a failed run of a job that fits (exit 1).
		mismatch bool
	}{
		{"a truncated shard names the file", d, []string{"source.uri=" + truncated}, []string{"truncated.parquet"}, false},
		{"a missing feature column names the file and column", d, []string{"source.features=[f0, f1, f9]"}, []string{d.files[0], `"f9"`, "source.features"}, true},
		{"a non-numeric feature names the column", d, []string{"source.features=[f0, f1, f2, note]"}, []string{`"note"`, "string", "numeric"}, true},
		{"a null under nulls: fail names shard, row group and row", nulls, nil, []string{"features/part-0000", "row group ", " row 99:", "null feature", "source.nulls"}, false},
		{"a model of another input width names the model and the width", d, []string{"model.path=" + wide}, []string{"wide.onnx", "5", "4", "source.features"}, true},
		{"a file that is not ONNX names the model", d, []string{"model.path=" + notONNX}, []string{"model.onnx", "not an ONNX model"}, true},
		{"a model path that is a device names it", d, []string{"model.path=/dev/zero"}, []string{"/dev/zero", "a character device, not a regular file"}, true},
		{"a model path that is a FIFO names it, without waiting for a writer", d, []string{"model.path=" + fifo}, []string{"fifo.onnx", "a named pipe (FIFO)"}, true},
		{"a model whose output is 100,000 wide names the output and its width", d, []string{"model.path=" + wideOut, "model.batch_size=4000"}, []string{"wide-out.onnx", `output "wide" gives 100000 values a row`, "MaxOutputWidth"}, true},
		{"a missing model file names it", d, []string{"model.path=" + filepath.Join(bad, "absent.onnx")}, []string{"absent.onnx", "no such file"}, true},
		{"a key the store cannot hold names shard, row and key", d, []string{"source.uri=" + longKey, "source.features=[f0]", "model.path=" + onnxgen1(t, bad)}, []string{"long-key.parquet", "row group 0 row 1", "key of 1025 bytes"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := openStore(t)
			good, err := run(t, s, newJob(t, tt.data, url, "sink.namespace=bad"))
			if tt.data == nulls {
				// nulls has nulls: the good run skips them.
				good, err = run(t, s, newJob(t, tt.data, url, "sink.namespace=bad", "source.nulls=skip"))
			}
			if err != nil {
				t.Fatal(err)
			}
			before, _ := s.Manifests(ctx, "bad")
			_, err = run(t, s, newJob(t, tt.data, url, append([]string{"sink.namespace=bad"}, tt.sets...)...))
			if err == nil {
				t.Fatal("bad input ran without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is not one line: %q", err)
			}
			if errors.Is(err, pipeline.ErrMismatch) != tt.mismatch {
				t.Errorf("errors.Is(err, ErrMismatch) = %v, want %v: %v", !tt.mismatch, tt.mismatch, err)
			}
			if live, _ := s.Live(ctx, "bad"); live != good.Manifest.Version {
				t.Errorf("live: got %q, want %q untouched", live, good.Manifest.Version)
			}
			after, _ := s.Manifests(ctx, "bad")
			for _, m := range after[len(before):] {
				if m.State != writers.StateFailed || m.Error == "" {
					t.Errorf("version %s of the bad run: state %s, error %q; want failed with its reason", m.Version, m.State, m.Error)
				}
			}
		})
	}
}

// onnxgen1 writes a logistic model over one feature.
func onnxgen1(t *testing.T, dir string) string {
	path := filepath.Join(dir, "one.onnx")
	if err := onnxgen.Logistic(1, modelSeed).Write(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeKeys writes a Parquet file with the given keys and one feature column.
func writeKeys(t *testing.T, path string, keys []string) { writeKeysOf(t, path, keys) }

// writeKeysOf writes one row per key (of type K: a string or an integer column user_id)
// with f0 = its index and country DE.
func writeKeysOf[K any](t *testing.T, path string, keys []K) {
	t.Helper()
	type row struct {
		UserID  K       `parquet:"user_id"`
		F0      float64 `parquet:"f0"`
		Country string  `parquet:"country"`
	}
	rows := make([]row, len(keys))
	for i, k := range keys {
		rows[i] = row{UserID: k, F0: float64(i), Country: "DE"}
	}
	if err := parquet.WriteFile(path, rows); err != nil {
		t.Fatal(err)
	}
}

func TestNullsAreSkippedAndCountedOrFilled(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 3000, Shards: 2, RowGroupRows: 500, Seed: 11, NullEvery: 10})
	ctx := context.Background()

	t.Run("skip drops the rows with a null feature and counts them in the manifest", func(t *testing.T) {
		s, url := openStore(t)
		res, err := run(t, s, newJob(t, d, url, "source.nulls=skip"))
		if err != nil {
			t.Fatal(err)
		}
		m := res.Manifest
		if m.RowsRead != 3000 || m.RowsSkipped != 300 || m.RowsWritten != 2700 || m.SkipReasons["null_feature"] != 300 {
			t.Fatalf("got read %d skipped %d written %d reasons %v; want 3000, 300, 2700, null_feature 300",
				m.RowsRead, m.RowsSkipped, m.RowsWritten, m.SkipReasons)
		}
		for r := range int64(3000) {
			row := shardgen.RowAt(d.spec, r)
			_, err := s.Get(ctx, "scores", m.Version, []byte(row.Key))
			if row.F2Null != errors.Is(err, writers.ErrNotFound) {
				t.Fatalf("key %s (f2 null %v): get error %v", row.Key, row.F2Null, err)
			}
		}
	})

	t.Run("fill:V scores the rows with V in place of each null", func(t *testing.T) {
		s, url := openStore(t)
		res, err := run(t, s, newJob(t, d, url, "source.nulls=fill:3"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Manifest.RowsWritten != 3000 {
			t.Fatalf("rows written: got %d, want 3000", res.Manifest.RowsWritten)
		}
		ref := d.models["logistic"]
		for r := range int64(3000) {
			row := shardgen.RowAt(d.spec, r)
			if row.F2Null {
				row.F[2] = 3
			}
			raw, err := s.Get(ctx, "scores", res.Manifest.Version, []byte(row.Key))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]float64
			json.Unmarshal(raw, &got)
			if want := ref.Predict(row.F[:])["score"][0]; math.Abs(got["score"]-want) > 1e-5 {
				t.Fatalf("key %s: got %v, want %v", row.Key, got["score"], want)
			}
		}
	})
}

// flakyDriver fails WriteRows once after a number of successful calls, and counts rows.
// The failing call first waits (a few seconds at most) until a row group was committed,
// so that a run that fails has progress to resume however the stages were scheduled.
type flakyDriver struct {
	writers.Driver
	mu        sync.Mutex
	failAfter int
	calls     int
	rows      int
	commits   int
}

func (f *flakyDriver) CommitWork(ctx context.Context, ns, v string, c writers.Commit, data []byte) error {
	err := f.Driver.CommitWork(ctx, ns, v, c, data)
	f.mu.Lock()
	f.commits++
	f.mu.Unlock()
	return err
}

// flaky wraps s's driver in a flakyDriver, returning the driver (for its counts) and a
// store over it that shares s's database.
func flaky(s *writers.Store, failAfter int) (*flakyDriver, *writers.Store) {
	f := &flakyDriver{Driver: s.Driver(), failAfter: failAfter}
	return f, writers.NewStore(f, s.URL())
}

func (f *flakyDriver) WriteRows(ctx context.Context, ns, v string, rows writers.Rows) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls == f.failAfter+1
	if !fail {
		f.rows += rows.Len()
	}
	f.mu.Unlock()
	if fail {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			f.mu.Lock()
			n := f.commits
			f.mu.Unlock()
			if n > 0 {
				break
			}
		}
		return errors.New("connection reset by peer")
	}
	return f.Driver.WriteRows(ctx, ns, v, rows)
}

// lastSummary keeps the summary a run finishes with.
type lastSummary struct {
	progress.Reporter
	got progress.Summary
}

func (l *lastSummary) Finish(s progress.Summary) { l.got = s }

func TestAFailedRunResumesWithExactlyOneCopyOfEveryRow(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 12_000, Shards: 3, RowGroupRows: 1000, Seed: 13})
	ctx := context.Background()
	s, url := openStore(t)
	_, failing := flaky(s, 6)
	j := newJob(t, d, url, "model.batch_size=1000", "model.workers=1")

	summary := &lastSummary{Reporter: progress.Nop()}
	_, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: failing, Log: quiet, Readers: 1, Progress: summary})
	if err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("got %v, want the write error", err)
	}
	ms, _ := s.Manifests(ctx, "scores")
	if len(ms) != 1 || ms[0].State != writers.StateFailed {
		t.Fatalf("after the failure: got %d manifests, state %v; want 1 failed", len(ms), ms[0].State)
	}
	version := ms[0].Version
	committed, _ := s.Commits(ctx, "scores", version)
	if len(committed) == 0 || len(committed) >= 12 {
		t.Fatalf("committed shards after the failure: got %d, want some of 12", len(committed))
	}

	t.Run("the failed run's summary and manifest count the rows committed, not 0", func(t *testing.T) {
		var read, written int64
		for _, sh := range committed {
			read, written = read+sh.Rows, written+sh.Written
		}
		if s := summary.got; s.Err == nil || s.RowsRead != read || s.RowsWritten != written {
			t.Errorf("summary: got rows read %d, written %d, err %v; want %d and %d committed, and the error", s.RowsRead, s.RowsWritten, s.Err, read, written)
		}
		if ms[0].RowsRead != read || ms[0].RowsWritten != written {
			t.Errorf("failed manifest: got rows read %d, written %d; want %d and %d", ms[0].RowsRead, ms[0].RowsWritten, read, written)
		}
	})
	if live, _ := s.Live(ctx, "scores"); live != "" {
		t.Fatalf("a failed run made %s live", live)
	}

	t.Run("a new run with the same --version skips committed row groups", func(t *testing.T) {
		counter, cs := flaky(s, -2)
		res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: cs, Log: quiet, Version: version})
		if err != nil {
			t.Fatal(err)
		}
		if want := 12_000 - 1000*len(committed); counter.rows != want {
			t.Errorf("resume wrote %d rows, want %d (the uncommitted row groups only)", counter.rows, want)
		}
		if res.Manifest.Version != version || !res.Flipped {
			t.Errorf("resume: version %s flipped %v, want %s flipped", res.Manifest.Version, res.Flipped, version)
		}
		if len(res.Manifest.Commits) != 12 {
			t.Errorf("manifest shards: got %d, want 12", len(res.Manifest.Commits))
		}
		checkEveryKey(t, s, d, res.Manifest, "logistic", scalarFeatures)
	})

	t.Run("a complete version cannot be resumed", func(t *testing.T) {
		_, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: version})
		if err == nil || !strings.Contains(err.Error(), "only a writing or failed version can be resumed") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("a resume with another model is refused", func(t *testing.T) {
		_, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "model.path="+d.model("mlp")), Store: s, Log: quiet, Version: "other"})
		if err != nil {
			t.Fatal(err)
		}
		_, failing := flaky(s, 1)
		pipeline.Run(ctx, pipeline.Config{Job: j, Store: failing, Log: quiet, Version: "v2"})
		_, err = pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "model.path="+d.model("mlp")), Store: s, Log: quiet, Version: "v2"})
		if err == nil || !strings.Contains(err.Error(), "cannot resume version v2") || !strings.Contains(err.Error(), "model sha256") {
			t.Errorf("got %v, want a refusal naming the model", err)
		}
	})
}

func TestOneWriterPerNamespace(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 1000, Shards: 1, RowGroupRows: 500, Seed: 17})
	ctx := context.Background()
	s, url := openStore(t)
	j := newJob(t, d, url)
	other, err := s.AcquireLease(ctx, "scores", "nightly-pod-7", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a second writer fails fast naming the holder", func(t *testing.T) {
		start := time.Now()
		_, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet})
		if !errors.Is(err, writers.ErrLeaseHeld) || !strings.Contains(err.Error(), "nightly-pod-7") {
			t.Fatalf("got %v, want ErrLeaseHeld naming nightly-pod-7", err)
		}
		if time.Since(start) > 30*time.Second { // not the lease's minute: no waiting
			t.Errorf("failing took %s", time.Since(start))
		}
		if ms, _ := s.Manifests(ctx, "scores"); len(ms) != 0 {
			t.Errorf("a refused run created %d versions", len(ms))
		}
	})

	t.Run("with Wait it runs once the holder lets go", func(t *testing.T) {
		go func() {
			time.Sleep(300 * time.Millisecond)
			s.ReleaseLease(ctx, other)
		}()
		res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Wait: true, LeaseTTL: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Flipped {
			t.Error("not flipped")
		}
	})

	t.Run("the lease is released after a run", func(t *testing.T) {
		l, err := s.AcquireLease(ctx, "scores", "next", time.Minute)
		if err != nil {
			t.Fatalf("lease still held after the run: %v", err)
		}
		s.ReleaseLease(ctx, l)
	})
}

func TestShardedRunsWriteOneVersionAndTheLastFlipsIt(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		spec shardgen.Spec
	}{
		{"more files than shards split by file", shardgen.Spec{Rows: 6000, Shards: 6, RowGroupRows: 500, Seed: 21}},
		{"one large file splits by row group", shardgen.Spec{Rows: 6000, Shards: 1, RowGroupRows: 500, Seed: 21}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := generate(t, t.TempDir(), tt.spec)
			s, url := openStore(t)
			j := newJob(t, d, url)
			counter, cs := flaky(s, -2)
			var results []*pipeline.Result
			for i := range 4 {
				res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: cs, Log: quiet, Version: "v-sharded", ShardIndex: i, ShardCount: 4})
				if err != nil {
					t.Fatalf("shard %d: %v", i, err)
				}
				results = append(results, res)
				live, _ := s.Live(ctx, "scores")
				if i < 3 && (res.Waiting == 0 || live != "") {
					t.Fatalf("shard %d of 4: waiting %d, live %q; want the version to wait for other shards", i, res.Waiting, live)
				}
			}
			if !results[3].Flipped || results[3].Waiting != 0 {
				t.Fatalf("the last shard: flipped %v waiting %d, want it to flip", results[3].Flipped, results[3].Waiting)
			}
			if counter.rows != tt.spec.Rows {
				t.Errorf("rows written over all shards: got %d, want %d (each exactly once)", counter.rows, tt.spec.Rows)
			}
			checkEveryKey(t, s, d, results[3].Manifest, "logistic", scalarFeatures)

			again, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-sharded", ShardIndex: 1, ShardCount: 4})
			if err != nil || again.Flipped {
				t.Errorf("a retried shard after completion: got %v, flipped %v; want a no-op", err, again.Flipped)
			}
		})
	}
	t.Run("a retried shard of a version that failed its gate fails again", func(t *testing.T) {
		d := generate(t, t.TempDir(), shardgen.Spec{Rows: 4000, Shards: 4, RowGroupRows: 500, Seed: 23})
		s, url := openStore(t)
		if _, err := run(t, s, newJob(t, d, url)); err != nil {
			t.Fatal(err)
		}
		small := newJob(t, d, url, "source.uri="+d.files[0]) // a quarter of the live rows
		var last error
		for i := range 2 {
			res, err := pipeline.Run(ctx, pipeline.Config{Job: small, Store: s, Log: quiet, Version: "v-small", ShardIndex: i, ShardCount: 2})
			if i == 0 && (err != nil || res.Waiting == 0 || res.Manifest.RowsRead == 0) {
				t.Fatalf("first shard: err %v, waiting %d, rows read %d; want its own rows counted and the version waiting", err, res.Waiting, res.Manifest.RowsRead)
			}
			last = err
		}
		if !errors.Is(last, pipeline.ErrGateFailed) {
			t.Fatalf("last shard: got %v, want ErrGateFailed", last)
		}
		_, err := pipeline.Run(ctx, pipeline.Config{Job: small, Store: s, Log: quiet, Version: "v-small", ShardIndex: 0, ShardCount: 2})
		if !errors.Is(err, pipeline.ErrGateFailed) {
			t.Errorf("retried shard: got %v, want ErrGateFailed again", err)
		}
	})

	t.Run("a sharded run without --version is refused", func(t *testing.T) {
		d := generate(t, t.TempDir(), shardgen.Spec{Rows: 100, Shards: 1, Seed: 1})
		s, url := openStore(t)
		_, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url), Store: s, Log: quiet, ShardIndex: 0, ShardCount: 2})
		if err == nil || !strings.Contains(err.Error(), "--version") {
			t.Errorf("got %v", err)
		}
	})
}

// TestDuplicateKeysFailTheUniqueKeysGate: by default, input rows that share a key fail
// the unique_keys gate: the version is complete but not live, the run fails with
// ErrGateFailed naming how many rows repeat a key, the manifest counts them, and the live
// version stays. An int64 42 and a string "42" in two shards are one key. With
// release.gates.unique_keys false they are written (one of them wins) and still counted.
// A sharded (or resumed) run, which wrote only some row groups itself, counts the same.
func TestDuplicateKeysFailTheUniqueKeysGate(t *testing.T) {
	ctx := context.Background()
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 200, Shards: 1, Seed: 9})
	dir := t.TempDir()
	model := onnxgen1(t, dir)
	unique := filepath.Join(dir, "unique.parquet")
	writeKeys(t, unique, []string{"a", "b", "c", "d"})
	dups := filepath.Join(dir, "dups.parquet")
	writeKeys(t, dups, []string{"a", "b", "a", "c", "b", "d", "a"})
	mixed := filepath.Join(dir, "mixed")
	os.MkdirAll(mixed, 0o755)
	writeKeys(t, filepath.Join(mixed, "a.parquet"), []string{"41", "42", "x"})
	writeKeysOf(t, filepath.Join(mixed, "b.parquet"), []int64{42, 43})
	s, url := openStore(t)
	job := func(uri string, sets ...string) *jobs.Job {
		return newJob(t, d, url, append([]string{"source.uri=" + uri, "source.features=[f0]", "model.path=" + model}, sets...)...)
	}
	gate := func(m *writers.Manifest) writers.GateResult {
		for _, g := range m.Gates {
			if g.Name == "unique_keys" {
				return g
			}
		}
		t.Fatalf("no unique_keys gate in %+v", m.Gates)
		return writers.GateResult{}
	}

	good, err := run(t, s, job(unique))
	if err != nil {
		t.Fatalf("unique keys: %v", err)
	}
	if g := gate(good.Manifest); !g.Passed || g.Value != 0 || good.Manifest.DuplicateKeys != 0 {
		t.Errorf("unique keys: gate %+v, duplicate_keys %d; want passed with 0", g, good.Manifest.DuplicateKeys)
	}

	for _, tc := range []struct {
		name, uri           string
		rows, dups, repeats int64
	}{
		{"repeated string keys", dups, 7, 3, 2},
		{"an int64 42 and a string \"42\" in two shards", filepath.Join(mixed, "*.parquet"), 5, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := run(t, s, job(tc.uri))
			if !errors.Is(err, pipeline.ErrGateFailed) {
				t.Fatalf("got %v, want ErrGateFailed", err)
			}
			for _, w := range []string{"unique_keys", fmt.Sprintf("%d rows written, %d distinct keys", tc.rows, tc.rows-tc.dups), fmt.Sprintf("%d rows repeat a key", tc.dups)} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if m := res.Manifest; m.DuplicateKeys != tc.dups || m.RepeatedKeys != tc.repeats {
				t.Errorf("manifest: duplicate_keys %d, repeated_keys %d; want %d, %d", m.DuplicateKeys, m.RepeatedKeys, tc.dups, tc.repeats)
			}
			if live, _ := s.Live(ctx, "scores"); live != good.Manifest.Version {
				t.Errorf("live is %q after the failed gate, want %q untouched", live, good.Manifest.Version)
			}
			if m, _ := s.Manifest(ctx, "scores", res.Manifest.Version); m == nil || m.State != writers.StateComplete {
				t.Errorf("the gated version: %+v, want complete (and not live)", m)
			}
		})
	}

	t.Run("unique_keys false writes them, counted", func(t *testing.T) {
		res, err := run(t, s, job(dups, "release.gates.unique_keys=false"))
		if err != nil {
			t.Fatalf("duplicate keys with the gate off: %v", err)
		}
		if n, _ := s.CountKeys(ctx, "scores", res.Manifest.Version); res.Manifest.RowsWritten != 7 || n != 4 {
			t.Errorf("gate off: %d rows written, %d keys stored; want 7 and 4", res.Manifest.RowsWritten, n)
		}
		if g := gate(res.Manifest); !g.Passed || g.Value != 3 || res.Manifest.DuplicateKeys != 3 {
			t.Errorf("gate off: %+v, duplicate_keys %d; want passed, counting 3", g, res.Manifest.DuplicateKeys)
		}
	})

	t.Run("the shard that completes a version counts the rows another shard wrote", func(t *testing.T) {
		big := generate(t, t.TempDir(), shardgen.Spec{Rows: 6000, Shards: 2, RowGroupRows: 1000, Seed: 4})
		// Both shards' files twice over: every key is written twice.
		twice := filepath.Join(t.TempDir(), "twice")
		os.MkdirAll(twice, 0o755)
		files, _ := filepath.Glob(filepath.Join(big.dir, "features", "*.parquet"))
		for i, f := range files {
			data, _ := os.ReadFile(f)
			for _, copy := range []string{"a", "b"} {
				os.WriteFile(filepath.Join(twice, fmt.Sprintf("%s-%d.parquet", copy, i)), data, 0o644)
			}
		}
		j := newJob(t, big, url, "source.uri="+filepath.Join(twice, "*.parquet"), "model.batch_size=1000", "model.workers=1")
		// Shard 0 of 2 writes its half and waits; shard 1 completes the version having
		// written only the other half itself.
		first, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-dups", ShardIndex: 0, ShardCount: 2})
		if err != nil || first.Waiting == 0 {
			t.Fatalf("shard 0: %v, waiting %d; want it to wait for shard 1", err, first.Waiting)
		}
		res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-dups", ShardIndex: 1, ShardCount: 2})
		if !errors.Is(err, pipeline.ErrGateFailed) || res.Manifest.DuplicateKeys != 6000 || res.Manifest.RepeatedKeys != 6000 {
			t.Errorf("completed by shard 1: %v, duplicate_keys %d, repeated_keys %d; want ErrGateFailed, 6000, 6000", err, res.Manifest.DuplicateKeys, res.Manifest.RepeatedKeys)
		}
	})
}
