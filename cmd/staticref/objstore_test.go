package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/staticref/staticref/readers/objtest"
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
