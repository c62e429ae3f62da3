package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/export/exporttest"
)

func TestObjectStoreSourcesThroughTheCLI(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	bucket := objtest.S3(t)
	for _, p := range []string{"part-00000.parquet", "part-00001.parquet"} {
		objtest.PutFile(t, bucket, "features/dt=2026-11-30/"+p, filepath.Join(dir, "features", p))
	}
	obj := objtest.ObjectURL(bucket, "features/dt=2026-11-30/part-00000.parquet")

	t.Run("inspect reads an object's footer", func(t *testing.T) {
		code, out, stderr := staticref(t, "inspect", obj)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(out, "part-00000.parquet") || !strings.Contains(out, "ROW GROUP") {
			t.Fatalf("output lacks the file and its row groups:\n%s", out)
		}
	})
	t.Run("inspect of a missing object exits non-zero naming it", func(t *testing.T) {
		code, _, stderr := staticref(t, "inspect", objtest.ObjectURL(bucket, "features/absent.parquet"))
		if code == 0 || !strings.Contains(stderr, "features/absent.parquet") {
			t.Fatalf("exit %d, stderr %q: want non-zero naming the object", code, stderr)
		}
	})
	t.Run("a run whose pattern matches nothing exits non-zero naming the pattern", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", store,
			"--set", "source.uri="+objtest.ObjectURL(bucket, "features/dt=2026-12-*/*.parquet"))
		if code == 0 || !strings.Contains(stderr, "features/dt=2026-12-*/*.parquet") {
			t.Fatalf("exit %d, stderr %q: want non-zero naming the pattern", code, stderr)
		}
	})
	t.Run("a run over the objects succeeds", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", store,
			"--set", "source.uri="+objtest.ObjectURL(bucket, "features/dt=*/*.parquet"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
}

func TestParquetExportsThroughTheCLI(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	bucket := objtest.S3(t)
	export := objtest.ObjectURL(bucket, "exports")

	t.Run("run --help tells of sink.export and parquet: stores", func(t *testing.T) {
		_, out, _ := staticref(t, "run", "--help")
		if !strings.Contains(out, "sink.export") || !strings.Contains(out, "parquet+gs://") {
			t.Errorf("run --help lacks sink.export or parquet stores:\n%s", out)
		}
	})
	t.Run("a run with sink.export lists its files in versions show", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", store, "--version", "v1", "--set", "sink.export="+export)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		code, out, stderr := staticref(t, "versions", "show", "--store", store, "--namespace", "churn", "v1")
		if code != 0 {
			t.Fatalf("versions show: exit %d: %s", code, stderr)
		}
		var m writers.Manifest
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		if m.Export == nil || strings.Contains(m.Export.URL, "?") || !strings.HasSuffix(m.Export.URL, "/exports") || len(m.Export.Files) != 2 {
			t.Fatalf("export in versions show: got %+v, want the URL without its query and 2 files", m.Export)
		}
		var rows int64
		for _, f := range m.Export.Files {
			rows += exporttest.Read(t, export, f.Path).Rows
		}
		if rows != 1000 {
			t.Errorf("rows exported: got %d, want 1000", rows)
		}
	})
	t.Run("an export to a bucket that does not exist exits 1 naming it, live untouched", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", store, "--version", "v2",
			"--set", "sink.export="+strings.Replace(export, "s3://", "s3://absent-", 1))
		if code != 1 || !strings.Contains(stderr, "s3://absent-") {
			t.Fatalf("exit %d, stderr %q: want 1 naming the bucket", code, stderr)
		}
		_, out, _ := staticref(t, "versions", "list", "--store", store, "--namespace", "churn")
		if !strings.Contains(out, "v1") || !regexpLive(out, "v1") {
			t.Errorf("versions list: want v1 still live:\n%s", out)
		}
	})
	t.Run("a bad sink.export is bad usage naming the field", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", store, "--set", "sink.export=ftp://x/y")
		if code != 2 || !strings.Contains(stderr, "sink.export") {
			t.Fatalf("exit %d, stderr %q: want 2 naming sink.export", code, stderr)
		}
	})
	parquetStore := "parquet:" + filepath.Join(dir, "warehouse")
	t.Run("an export-only run writes the files and no lookup store", func(t *testing.T) {
		code, _, stderr := staticref(t, "run", "--job", job, "--store", parquetStore, "--version", "v1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		names := exporttest.List(t, filepath.Join(dir, "warehouse"), "churn", "v1")
		if len(names) != 3 || !slices.Contains(names, "churn/v1/manifest.json") {
			t.Errorf("files: got %v, want two parts and manifest.json", names)
		}
		code, out, stderr := staticref(t, "versions", "list", "--store", parquetStore, "--namespace", "churn")
		if code != 0 || !strings.Contains(out, "v1") {
			t.Errorf("versions list: exit %d, %s %s", code, out, stderr)
		}
	})
	t.Run("get on an export-only store is refused clearly", func(t *testing.T) {
		code, _, stderr := staticref(t, "get", "--store", parquetStore, "--namespace", "churn", "u1")
		if code != 2 || !strings.Contains(stderr, "export-only store") {
			t.Fatalf("exit %d, stderr %q: want 2 saying the store is export-only", code, stderr)
		}
	})
	t.Run("serve of an export-only store is refused clearly", func(t *testing.T) {
		cfg := filepath.Join(dir, "serve.yaml")
		if err := os.WriteFile(cfg, []byte("namespaces:\n  churn:\n    store: "+parquetStore+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := staticref(t, "serve", "--config", cfg, "--addr", "127.0.0.1:0")
		if code != 2 || !strings.Contains(stderr, "namespaces.churn.store") || !strings.Contains(stderr, "export-only store") {
			t.Fatalf("exit %d, stderr %q: want 2 naming the namespace's store as export-only", code, stderr)
		}
	})
}

// regexpLive reports whether versions list's text shows version v as live.
func regexpLive(out, v string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == v && f[1] == "live" {
			return true
		}
	}
	return false
}
