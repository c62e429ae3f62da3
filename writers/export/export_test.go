package export_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/export"
	"github.com/staticref/staticref/writers/export/exporttest"
)

func TestAFileHoldsEveryRowWithScalarAndListColumnsInSeveralRowGroups(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	tg, err := export.Open(ctx, filepath.Join(dir, "exports"), export.Options{RowGroupBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	outs := []writers.Output{{Name: "score", Width: 1}, {Name: "probs", Width: 3}}
	f, err := tg.Create(ctx, "churn", "v1", 7, outs)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	rnd := rand.New(rand.NewPCG(1, 2))
	want := map[string][]float32{}
	for i := range n {
		score := []float32{rnd.Float32()}
		probs := []float32{rnd.Float32(), rnd.Float32(), rnd.Float32()}
		key := fmt.Sprintf("user-%d", i)
		want[key] = append(slices.Clone(score), probs...)
		if err := f.Add([]byte(key), [][]float32{score, probs}, 0); err != nil {
			t.Fatal(err)
		}
	}
	info, err := f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != "churn/v1/part-00007.parquet" || info.Rows != n || info.Bytes <= 0 {
		t.Fatalf("file: got %+v, want churn/v1/part-00007.parquet with %d rows", info, n)
	}
	got := exporttest.Read(t, filepath.Join(dir, "exports"), info.Path)
	if got.Rows != n || len(got.Keys) != n {
		t.Fatalf("rows: got %d (%d keys), want %d", got.Rows, len(got.Keys), n)
	}
	if got.RowGroups < 2 {
		t.Errorf("row groups: got %d, want several for a 16 KiB target", got.RowGroups)
	}
	if !slices.Equal(got.Columns, []string{"key", "probs", "score"}) {
		t.Errorf("columns: got %v, want key, probs, score", got.Columns)
	}
	for k, w := range want {
		v := got.Values[k]
		if !slices.Equal(v["score"], w[:1]) || !slices.Equal(v["probs"], w[1:]) {
			t.Fatalf("key %s: got %v, want score %v probs %v", k, v, w[:1], w[1:])
		}
	}
	if names := exporttest.List(t, filepath.Join(dir, "exports"), "churn", "v1"); !slices.Equal(names, []string{"churn/v1/part-00007.parquet"}) {
		t.Errorf("objects: got %v, want only the part file (no sidecars, no temporary files)", names)
	}
}

func TestAnAbortedFileLeavesNoObject(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	tg, err := export.Open(ctx, dir, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	f, err := tg.Create(ctx, "ns", "v1", 0, []writers.Output{{Name: "score", Width: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Add([]byte("k"), [][]float32{{1}}, 0); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if names := exporttest.List(t, dir, "ns", "v1"); len(names) != 0 {
		t.Fatalf("objects after abort: got %v, want none", names)
	}
}

func TestAnOutputNamedKeyIsRefused(t *testing.T) {
	if _, err := export.Schema([]writers.Output{{Name: "key", Width: 1}}); err == nil {
		t.Fatal("an output named key was accepted")
	}
}

func TestNamesDropQueriesAndUserinfo(t *testing.T) {
	for in, want := range map[string]string{
		"s3://b/exports?endpoint=http://127.0.0.1:9000&region=x": "s3://b/exports",
		"gs://b/p/":         "gs://b/p",
		"/tmp/exports":      "/tmp/exports",
		"file:///tmp/x?a=b": "file:///tmp/x",
	} {
		if got := export.Name(in); got != want {
			t.Errorf("Name(%q): got %q, want %q", in, got, want)
		}
	}
}
