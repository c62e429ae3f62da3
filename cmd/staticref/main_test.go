package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/readers/objtest"
)

// staticref runs Main as the binary would and returns its exit code and output.
func staticref(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// workspace generates data and writes a job file into a temporary directory.
func workspace(t *testing.T, rows int, extra string) (dir, job, store string) {
	t.Helper()
	dir = t.TempDir()
	if code, _, stderr := staticref(t, "testdata", "generate", "--out", dir, "--rows", strconv.Itoa(rows), "--shards", "2", "--row-group-rows", "500"); code != 0 {
		t.Fatalf("testdata generate: exit %d: %s", code, stderr)
	}
	job = filepath.Join(dir, "job.yaml")
	yaml := `name: churn
source:
  uri: features/*.parquet
  key: user_id
  features: [f0, f1, f2, f3]
model:
  path: models/logistic.onnx
  device: cpu
sink:
  store: pebble:store
defaults:
  segment_by: country
release:
  keep: 1
` + extra
	if err := os.WriteFile(job, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, job, "pebble:" + filepath.Join(dir, "store")
}

func TestRunGetAndTheVersionLifecycleThroughTheCommandLine(t *testing.T) {
	_, job, store := workspace(t, 2000, "")

	// Run from another directory: paths in the job resolve against the job file.
	t.Chdir(t.TempDir())
	code, out, stderr := staticref(t, "run", "--job", job)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "rows read 2000, written 2000, skipped 0") {
		t.Errorf("run summary lacks the counts:\n%s", out)
	}

	t.Run("get prints one JSON answer a line and exits 1 when a key is missing", func(t *testing.T) {
		code, out, _ := staticref(t, "get", "--store", store, "--namespace", "churn", "u000000007", "nope", "--", "-42")
		if code != 1 {
			t.Errorf("exit: got %d, want 1", code)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 {
			t.Fatalf("got %d lines, want 3:\n%s", len(lines), out)
		}
		var a lookup.Answer
		if err := json.Unmarshal([]byte(lines[0]), &a); err != nil {
			t.Fatal(err)
		}
		if a.Key != "u000000007" || a.Source != "precomputed" || a.Version == "" || a.Error != nil {
			t.Errorf("found key: got %s", lines[0])
		}
		var v map[string]float64
		if err := json.Unmarshal(a.Value, &v); err != nil || len(v) != 2 {
			t.Errorf("value: got %s, want score and logit", a.Value)
		}
		for i, key := range []string{"nope", "-42"} {
			var miss lookup.Answer
			json.Unmarshal([]byte(lines[i+1]), &miss)
			if miss.Key != key || miss.Error == nil || miss.Error.Code != "not_found" {
				t.Errorf("missing key %s: got %s", key, lines[i+1])
			}
		}
	})

	code, _, stderr = staticref(t, "run", "--job", job)
	if code != 0 {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}

	list := func() []map[string]any {
		t.Helper()
		code, out, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "churn", "-o", "json")
		if code != 0 {
			t.Fatalf("versions list: exit %d: %s", code, stderr)
		}
		var vs []map[string]any
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			t.Fatalf("versions list -o json: %v\n%s", err, out)
		}
		return vs
	}
	vs := list()
	if len(vs) != 2 || vs[0]["state"] != "previous" || vs[1]["state"] != "live" || vs[1]["rows_written"] != 2000.0 {
		t.Fatalf("versions after two runs: got %v", vs)
	}
	first, second := vs[0]["version"].(string), vs[1]["version"].(string)

	t.Run("rollback makes the first version live again", func(t *testing.T) {
		if code, _, stderr := staticref(t, "versions", "rollback", "--store", store, "--namespace", "churn"); code != 0 {
			t.Fatalf("rollback: exit %d: %s", code, stderr)
		}
		vs := list()
		if vs[0]["state"] != "live" || vs[1]["state"] != "previous" {
			t.Errorf("after rollback: got %v", vs)
		}
		if code, _, stderr := staticref(t, "versions", "flip", "--store", store, "--namespace", "churn", second); code != 0 {
			t.Fatalf("flip: exit %d: %s", code, stderr)
		}
	})

	t.Run("show prints the manifest of the live version", func(t *testing.T) {
		code, out, _ := staticref(t, "versions", "show", "--store", store, "--namespace", "churn")
		var m map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m["version"] != second || m["state"] != "live" {
			t.Errorf("show: exit %d, got %s", code, out)
		}
	})

	t.Run("gc keeps --keep previous versions", func(t *testing.T) {
		if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
			t.Fatalf("third run: %s", stderr)
		}
		// release.keep is 1: the run's own gc already retired the first version.
		vs := list()
		if len(vs) != 3 || vs[0]["version"] != first || vs[0]["state"] != "retired" || vs[1]["state"] != "previous" || vs[2]["state"] != "live" {
			t.Fatalf("after third run: got %v", vs)
		}
		code, out, _ := staticref(t, "versions", "gc", "--store", store, "--namespace", "churn", "--keep", "0")
		if code != 0 || !strings.Contains(out, "removed "+second) {
			t.Errorf("gc --keep 0: exit %d, output %q, want %s removed", code, out, second)
		}
		if vs := list(); vs[2]["state"] != "live" {
			t.Errorf("gc touched the live version: %v", vs)
		}
	})
}

func TestExitCodes(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("name: x\nsource: {uri: a, key: k, features: [f]}\nmodel: {path: m.onnx, batchsize: 3}\n"), 0o644)
	os.WriteFile(bad+".onnx", []byte("not a model"), 0o644)
	storeWithoutVersions(t, store)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no arguments to get is bad usage", []string{"get", "--store", store, "--namespace", "churn"}, 2, "wrong number of arguments"},
		{"an unknown flag is bad usage", []string{"run", "--jb", job}, 2, "unknown flag: --jb"},
		{"a missing --job is bad usage", []string{"run"}, 2, "--job is required"},
		{"an unknown job field is bad config", []string{"run", "--job", bad}, 2, "model.batchsize: unknown field"},
		{"an invalid --set is bad config", []string{"run", "--job", job, "--set", "model.device=tpu"}, 2, `model.device: "tpu"`},
		{"an unknown store scheme is bad config", []string{"run", "--job", job, "--store", "mysql://x"}, 2, "sink.store"},
		{"a missing shard glob fails the run", []string{"run", "--job", job, "--set", "source.uri=" + filepath.Join(dir, "none/*.parquet")}, 1, "source.uri"},
		{"a namespace the store cannot hold is bad usage", []string{"get", "--store", store, "--namespace", "Bad/NS", "k"}, 2, "namespace"},
		{"a namespace the store cannot hold in a job is bad config", []string{"run", "--job", job, "--set", "sink.namespace=a/b"}, 2, `sink.namespace: "a/b"`},
		{"inspect of a file that is neither model nor Parquet is bad usage", []string{"inspect", job}, 2, "name an .onnx or .parquet file"},
		{"inspect of a corrupt model fails", []string{"inspect", bad + ".onnx"}, 1, "not an ONNX model"},
		{"a store that cannot be reached is a failure, not bad usage", []string{"get", "--store", "redis://127.0.0.1:1/0", "--namespace", "churn", "k"}, 1, "cannot reach redis at 127.0.0.1:1"},
		{"a store URL that cannot be right is bad usage", []string{"versions", "list", "--store", "bigtable://only-project", "--namespace", "churn"}, 2, "store"},
		{"a namespace with no live version fails", []string{"get", "--store", store, "--namespace", "empty", "k"}, 1, "no live version"},
		{"a shard index out of range is bad usage", []string{"run", "--job", job, "--shard-index", "5", "--shard-count", "2", "--version", "v1"}, 2, "--shard-index 5: use 0 to 1"},
		{"a sharded run without --version is bad usage", []string{"run", "--job", job, "--shard-index", "0", "--shard-count", "2"}, 2, "needs --version"},
		{"a misspelt subcommand is bad usage with a suggestion", []string{"k8s", "rendr"}, 2, "did you mean render?"},
		{"k8s render of a missing job file is bad usage", []string{"k8s", "render", "--job", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml"},
		{"a flip to a version that does not exist fails naming it", []string{"versions", "flip", "--store", store, "--namespace", "churn", "20200101T000000Z"}, 1, "version 20200101T000000Z of churn does not exist (see versions list)"},
		{"showing a version that does not exist fails naming it", []string{"versions", "show", "--store", store, "--namespace", "churn", "20200101T000000Z"}, 1, "version 20200101T000000Z of churn does not exist"},
		{"a missing job file is bad usage", []string{"run", "--job", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml"},
		{"an unknown command is bad usage", []string{"version"}, 2, `unknown command "version" for "staticref"; did you mean versions?`},
		{"an unknown subcommand is bad usage", []string{"versions", "lst", "--store", store, "--namespace", "churn"}, 2, `unknown command "lst" for "staticref versions"; did you mean list?`},
		{"an invalid version id is bad usage", []string{"versions", "flip", "--store", store, "--namespace", "churn", "foo/bar"}, 2, `version "foo/bar"`},
		{"an invalid --version is bad usage", []string{"run", "--job", job, "--version", "foo/bar"}, 2, `version "foo/bar"`},
		{"a feature column the data lacks is bad config", []string{"run", "--job", job, "--set", "source.features=[f0, f9]"}, 2, `"f9"`},
		{"a missing model file is bad config", []string{"run", "--job", job, "--set", "model.path=" + filepath.Join(dir, "absent.onnx")}, 2, "absent.onnx"},
		{"a model of another input width is bad config", []string{"run", "--job", job, "--set", "source.features=[f0, f1]"}, 2, "source.features"},
		{"a job file whose aliases stand for billions of nodes is bad config, at once", []string{"run", "--job", "../../jobs/testdata/alias-bomb.bad.yaml"}, 2, "alias-bomb.bad.yaml: line 9: the aliases (*name) and merge keys (<<) expand to more than"},
		{"a serve config whose aliases stand for billions of nodes is bad config, at once", []string{"serve", "--config", "../../lookup/testdata/alias-bomb.bad.yaml"}, 2, "lookup: invalid config: ../../lookup/testdata/alias-bomb.bad.yaml:7: the aliases (*name) and merge keys (<<) expand to more than"},
		{"a model path that is a device is bad config", []string{"run", "--job", job, "--set", "model.path=/dev/zero"}, 2, "model /dev/zero: a character device, not a regular file"},
		{"an explicit 0 where a default is meant is bad config", []string{"run", "--job", job, "--set", "model.workers=0"}, 2, "model.workers: 0: use 1 to 256, or leave it out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := staticref(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("got exit %d, stderr %q; want exit %d, stderr containing %q", code, stderr, tt.code, tt.stderr)
			}
		})
	}
}

// TestMissingRuntimeLibrary re-runs this test binary with STATICREF_ORT_LIB pointing
// nowhere: the runtime is loaded once per process.
func TestMissingRuntimeLibrary(t *testing.T) {
	if os.Getenv("STATICREF_TEST_MISSING_ORT") == "1" {
		_, job, _ := workspace(t, 100, "")
		code, _, stderr := staticref(t, "run", "--job", job)
		os.Stderr.WriteString(stderr)
		os.Exit(code)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingRuntimeLibrary$")
	cmd.Env = append(os.Environ(), "STATICREF_TEST_MISSING_ORT=1", "STATICREF_ORT_LIB=/nonexistent/libonnxruntime.so")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	exit, ok := err.(*exec.ExitError)
	if !ok || exit.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1", err)
	}
	want := `staticref: ONNX Runtime library not found at /nonexistent/libonnxruntime.so: run "make ort" or set STATICREF_ORT_LIB`
	if got := strings.TrimSpace(stderr.String()); !strings.Contains(got, want) {
		t.Errorf("stderr: got %q, want %q", got, want)
	}
}

// TestMain loads the runtime before any test changes directory: the library is found
// relative to the module root, and loaded once per process.
func TestMain(m *testing.M) {
	inference.Init()
	code := m.Run()
	objtest.Stop()
	os.Exit(code)
}

func TestInspectShowsModelTensorsAndParquetLayout(t *testing.T) {
	dir, _, _ := workspace(t, 1000, "")
	code, out, stderr := staticref(t, "inspect", filepath.Join(dir, "models", "zipmap.onnx"))
	if code != 0 {
		t.Fatalf("inspect model: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"input", "features", "output", "probabilities", "proba_map", "sequence"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect model output lacks %q:\n%s", want, out)
		}
	}
	code, out, stderr = staticref(t, "inspect", filepath.Join(dir, "features", "part-00000.parquet"), "-o", "json")
	if code != 0 {
		t.Fatalf("inspect parquet: exit %d: %s", code, stderr)
	}
	var d struct {
		Rows      int64
		Columns   []struct{ Name, Type string }
		RowGroups []struct{ Rows int64 } `json:"row_groups"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	var rgRows int64
	for _, rg := range d.RowGroups {
		rgRows += rg.Rows
	}
	if d.Rows != 500 || rgRows != 500 || len(d.RowGroups) != 1 {
		t.Errorf("got %d rows in %d row groups (sum %d), want 500 in 1", d.Rows, len(d.RowGroups), rgRows)
	}
	types := map[string]string{}
	for _, c := range d.Columns {
		types[c.Name] = c.Type
	}
	for col, typ := range map[string]string{"user_id": "string", "f0": "float64", "f2": "int32", "embedding": "list<float32>"} {
		if types[col] != typ {
			t.Errorf("column %s: got type %q, want %q", col, types[col], typ)
		}
	}
}
