package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/export/exporttest"
	_ "github.com/staticref/staticref/writers/parquet" // parquet:, parquet+s3://
)

// checkExport reads back every file the manifest lists under the export location url,
// with parquet-go, and checks that it holds every input row exactly once, with the
// values of the model's float64 reference, and that the version's folder holds nothing
// else (no stray, partial or duplicate part). It returns the files read.
func checkExport(t *testing.T, url string, d *dataset, m *writers.Manifest, model string, features func(shardgen.Row) []float64) []exporttest.File {
	t.Helper()
	if m.Export == nil {
		t.Fatal("the manifest lists no export")
	}
	if strings.Contains(m.Export.URL, "?") || strings.Contains(m.Export.URL, objtest.SecretKey) {
		t.Errorf("export URL %q: want it without its query or any secret", m.Export.URL)
	}
	var names []string
	var files []exporttest.File
	seen := map[string]int{}
	var rows int64
	for i, f := range m.Export.Files {
		if want := m.Namespace + "/" + m.Version + fmt.Sprintf("/part-%05d.parquet", i); f.Path != want {
			t.Fatalf("file %d: got %s, want %s", i, f.Path, want)
		}
		got := exporttest.Read(t, url, f.Path)
		if got.Rows != f.Rows || int64(len(got.Keys)) != f.Rows {
			t.Fatalf("%s: holds %d rows (%d keys), the manifest says %d", f.Path, got.Rows, len(got.Keys), f.Rows)
		}
		if f.Bytes <= 0 {
			t.Errorf("%s: the manifest says %d bytes", f.Path, f.Bytes)
		}
		for _, k := range got.Keys {
			seen[k]++
		}
		rows += got.Rows
		names = append(names, f.Path)
		files = append(files, got)
	}
	if rows != int64(d.spec.Rows) || len(seen) != d.spec.Rows {
		t.Fatalf("export: %d rows, %d distinct keys; want %d of each (the input's rows)", rows, len(seen), d.spec.Rows)
	}
	ref := d.models[model]
	worst := 0.0
	byKey := map[string]map[string][]float32{}
	for _, f := range files {
		for k, v := range f.Values {
			byKey[k] = v
		}
	}
	for r := range int64(d.spec.Rows) {
		row := shardgen.RowAt(d.spec, r)
		if seen[row.Key] != 1 {
			t.Fatalf("key %s: exported %d times, want once", row.Key, seen[row.Key])
		}
		want := ref.Predict(features(row))
		got := byKey[row.Key]
		for _, o := range m.Outputs {
			if len(got[o.Name]) != len(want[o.Name]) {
				t.Fatalf("key %s output %s: got %v, want %v", row.Key, o.Name, got[o.Name], want[o.Name])
			}
			for i, v := range got[o.Name] {
				diff := math.Abs(float64(v) - want[o.Name][i])
				worst = max(worst, diff)
				if diff > 1e-5 {
					t.Fatalf("key %s output %s[%d]: got %v, want %v", row.Key, o.Name, i, v, want[o.Name][i])
				}
			}
		}
	}
	// The manifest, published beside the files once the version is complete.
	pub := m.Namespace + "/" + m.Version + "/manifest.json"
	var published writers.Manifest
	if err := json.Unmarshal(exporttest.ReadBytes(t, url, pub), &published); err != nil {
		t.Fatal(err)
	}
	if published.State != writers.StateComplete || published.Export == nil || !slices.Equal(published.Export.Files, m.Export.Files) {
		t.Errorf("%s: state %s, export %+v; want complete, listing the manifest's files", pub, published.State, published.Export)
	}
	listed := exporttest.List(t, url, m.Namespace, m.Version)
	want := append(slices.Clone(names), pub)
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("objects in the version's folder: got %v, want %v", listed, want)
	}
	t.Logf("%d rows in %d files read back, largest difference from the float64 reference %.2g", rows, len(files), worst)
	return files
}

func TestEveryRowIsExportedOnceToAnotherBucketOfEachObjectStore(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 20_000, Shards: 4, RowGroupRows: 2_500, Seed: 11})
	for _, tt := range []struct {
		name   string
		bucket func(testing.TB) string
	}{{"S3 (versitygw)", objtest.S3}, {"GCS (fake-gcs-server)", objtest.GCS}, {"Azure Blob (Azurite)", objtest.Azure}} {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := tt.bucket(t), tt.bucket(t)
			uploadPartitioned(t, src, d)
			exportURL := inBucket(dst, "exports/scores")
			s, url := openStore(t)
			j := newJob(t, d, url,
				"source.uri="+inBucket(src, "features/dt=2026-11-*/*.parquet"),
				"model.path="+inBucket(src, "models/logistic.onnx"),
				"sink.export="+exportURL)
			res, err := run(t, s, j)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Flipped {
				t.Fatal("the version was not flipped live")
			}
			m := res.Manifest
			checkEveryKey(t, s, d, m, "logistic", scalarFeatures)
			if len(m.Export.Files) != 8 {
				t.Errorf("files: got %d, want one per row group (8)", len(m.Export.Files))
			}
			if want := strings.SplitN(dst, "?", 2)[0] + "/exports/scores"; m.Export.URL != want {
				t.Errorf("export URL: got %q, want %q", m.Export.URL, want)
			}
			checkExport(t, exportURL, d, m, "logistic", scalarFeatures)
		})
	}
}

func TestALocalExportOfAWideOutputHasListColumnsAndRowGroupsCutByBytes(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 12_000, Shards: 2, RowGroupRows: 6_000, Seed: 5})
	s, url := openStore(t)
	dir := filepath.Join(t.TempDir(), "exports")
	j := newJob(t, d, url, "model.path="+d.model("mlp"), "sink.export="+dir, "sink.export_row_group_bytes=16384")
	res, err := run(t, s, j)
	if err != nil {
		t.Fatal(err)
	}
	checkEveryKey(t, s, d, res.Manifest, "mlp", scalarFeatures)
	files := checkExport(t, dir, d, res.Manifest, "mlp", scalarFeatures)
	for _, f := range files {
		if !slices.Equal(f.Columns, []string{"key", "scores"}) {
			t.Errorf("%s: columns %v, want key and the list column scores", f.Key, f.Columns)
		}
		// 6000 rows of a key (~10 bytes) and two floats: ~130 KiB a file, so a 16 KiB target
		// cuts several row groups.
		t.Logf("%s: %d rows in %d row groups", f.Key, f.Rows, f.RowGroups)
		if f.RowGroups < 4 {
			t.Errorf("%s: %d row groups, want several for a 16 KiB target", f.Key, f.RowGroups)
		}
	}
}

func TestAFailedExportFailsTheVersionAndLeavesTheLiveOneAlone(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 4000, Shards: 2, RowGroupRows: 1000, Seed: 3})
	bucket := objtest.S3(t)
	for _, tt := range []struct {
		name   string
		export func(t *testing.T) string
		want   []string
	}{
		{"a bucket that does not exist is named", func(t *testing.T) string {
			return strings.Replace(inBucket(bucket, "exports"), "s3://", "s3://absent-", 1)
		}, []string{"export s3://absent-", "does not exist"}},
		{"an object that cannot be written is named", func(t *testing.T) string {
			dir := filepath.Join(t.TempDir(), "exports")
			// A folder where part 2 must go: its writer cannot close.
			if err := os.MkdirAll(filepath.Join(dir, "scores", "v2", "part-00002.parquet", "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"scores/v2/part-00002.parquet"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s, url := openStore(t)
			good, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url), Store: s, Log: quiet, Version: "v1"})
			if err != nil {
				t.Fatal(err)
			}
			exportURL := tt.export(t)
			_, err = pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "sink.export="+exportURL), Store: s, Log: quiet, Version: "v2"})
			if err == nil {
				t.Fatal("a failing export ran without error")
			}
			t.Logf("%v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if errors.Is(err, pipeline.ErrGateFailed) {
				t.Errorf("a failed export reads as a failed gate: %v", err)
			}
			if live, _ := s.Live(ctx, "scores"); live != good.Manifest.Version {
				t.Errorf("live: got %q, want %q untouched", live, good.Manifest.Version)
			}
			if m, err := s.Manifest(ctx, "scores", "v2"); err != nil || m.State != writers.StateFailed {
				t.Errorf("v2: got %+v (%v), want failed", m, err)
			}
			if !strings.Contains(exportURL, "://") && slices.Contains(exporttest.List(t, exportURL, "scores", "v2"), "scores/v2/manifest.json") {
				t.Error("a failed version's export has a manifest.json")
			}
		})
	}
}

func TestAResumedRunExportsEveryRowExactlyOnce(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 12_000, Shards: 3, RowGroupRows: 1000, Seed: 13})
	ctx := context.Background()
	s, url := openStore(t)
	dst := objtest.S3(t)
	exportURL := inBucket(dst, "exports")
	_, failing := flaky(s, 6)
	j := newJob(t, d, url, "model.batch_size=1000", "model.workers=1", "sink.export="+exportURL)
	_, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: failing, Log: quiet, Readers: 1, Version: "v1"})
	if err == nil {
		t.Fatal("the flaky run did not fail")
	}
	committed, _ := s.Commits(ctx, "scores", "v1")
	if len(committed) == 0 || len(committed) >= 12 {
		t.Fatalf("committed after the failure: got %d, want some of 12", len(committed))
	}
	before := exporttest.List(t, exportURL, "scores", "v1")
	if slices.Contains(before, "scores/v1/manifest.json") {
		t.Error("the failed run published a manifest.json")
	}
	for _, c := range committed {
		if c.Export == nil || !slices.Contains(before, c.Export.Path) {
			t.Errorf("commit %s: export %+v, want its file among the objects %v", c.ID, c.Export, before)
		}
	}
	if len(before) < len(committed) || len(before) > len(committed)+2 {
		t.Errorf("after the failure: %d objects for %d commits, want one per commit (and at most the ones closing when it failed)", len(before), len(committed))
	}

	t.Run("a wrong export is refused on resume", func(t *testing.T) {
		_, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "model.batch_size=1000", "model.workers=1"), Store: s, Log: quiet, Version: "v1"})
		if err == nil || !strings.Contains(err.Error(), "now no export") {
			t.Errorf("got %v, want a refusal naming the export", err)
		}
	})
	res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	checkEveryKey(t, s, d, res.Manifest, "logistic", scalarFeatures)
	checkExport(t, exportURL, d, res.Manifest, "logistic", scalarFeatures)
	if len(res.Manifest.Export.Files) != 12 {
		t.Errorf("files: got %d, want 12", len(res.Manifest.Export.Files))
	}
}

func TestAnExportOnlyStoreGetsTheFilesAndAManifestButNoLiveVersion(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 6000, Shards: 2, RowGroupRows: 1500, Seed: 21})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		loc  func(t *testing.T) (storeURL, exportURL string)
	}{
		{"a local parquet: folder", func(t *testing.T) (string, string) {
			dir := filepath.Join(t.TempDir(), "exports")
			return "parquet:" + dir, dir
		}},
		{"a parquet+s3 prefix", func(t *testing.T) (string, string) {
			u := inBucket(objtest.S3(t), "warehouse/scores")
			return "parquet+" + u, u
		}},
		{"a parquet+gs prefix", func(t *testing.T) (string, string) {
			u := inBucket(objtest.GCS(t), "warehouse/scores")
			return "parquet+" + u, u
		}},
		{"a parquet+azblob prefix", func(t *testing.T) (string, string) {
			u := inBucket(objtest.Azure(t), "warehouse/scores")
			return "parquet+" + u, u
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			storeURL, exportURL := tt.loc(t)
			s, err := writers.Open(ctx, storeURL)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			first, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, storeURL), Store: s, Log: quiet, Version: "v1"})
			if err != nil {
				t.Fatal(err)
			}
			if first.Flipped {
				t.Error("an export-only run flipped a live pointer")
			}
			m := first.Manifest
			if m.State != writers.StateComplete || m.RowsWritten != int64(d.spec.Rows) {
				t.Fatalf("manifest: state %s, %d rows written; want complete with %d", m.State, m.RowsWritten, d.spec.Rows)
			}
			checkExport(t, exportURL, d, m, "logistic", scalarFeatures)
			if live, err := s.Live(ctx, "scores"); live != "" || err != nil {
				t.Errorf("live: got %q (%v), want none", live, err)
			}

			// The second run's min_rows_ratio compares with the newest complete export.
			second, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, storeURL), Store: s, Log: quiet, Version: "v2"})
			if err != nil {
				t.Fatal(err)
			}
			var detail string
			for _, g := range second.Manifest.Gates {
				if g.Name == "min_rows_ratio" {
					detail = g.Detail
				}
			}
			if !strings.Contains(detail, "newest complete export v1") {
				t.Errorf("min_rows_ratio: %q, want it compared with export v1", detail)
			}
			checkExport(t, exportURL, d, second.Manifest, "logistic", scalarFeatures)
			ms, err := s.Manifests(ctx, "scores")
			if err != nil || len(ms) != 2 {
				t.Fatalf("catalog: got %d manifests (%v), want 2", len(ms), err)
			}
		})
	}
}

// dyingProxy forwards HTTP requests to target (host:port) until it has forwarded n, then
// stops as a crashed server does: the request in hand is cut off and new connections are
// refused. It returns its own host:port.
func dyingProxy(t *testing.T, target string, n int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(&neturl.URL{Scheme: "http", Host: target})
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	var count atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1) > n {
			ln.Close()
			panic(http.ErrAbortHandler) // drops the connection mid-request
		}
		proxy.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestAStoreThatDiesMidExportFailsTheVersionNamingTheObject(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 8000, Shards: 2, RowGroupRows: 1000, Seed: 23})
	saved := objstore.CallTimeout
	objstore.CallTimeout = 2 * time.Second // the watchdog's limit for a store that stops answering
	t.Cleanup(func() { objstore.CallTimeout = saved })
	for _, tt := range []struct {
		name     string
		bucket   func(testing.TB) string
		hostKey  string // the query parameter naming the server
		requests int64  // the requests the server answers before it dies
	}{
		// S3: the bucket check, then one PutObject a part: the third part meets a dead server.
		{"S3 (versitygw)", objtest.S3, "endpoint", 3},
		// Azure: the container check, then a block and a commit a part.
		{"Azure Blob (Azurite)", objtest.Azure, "domain", 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			bucket := tt.bucket(t)
			s, url := openStore(t)
			good, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url), Store: s, Log: quiet, Version: "v1"})
			if err != nil {
				t.Fatal(err)
			}
			u, err := neturl.Parse(bucket)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			server := strings.TrimPrefix(q.Get(tt.hostKey), "http://")
			dead := strings.Replace(bucket, server, dyingProxy(t, server, tt.requests), 1)
			start := time.Now()
			_, err = pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "model.workers=1", "sink.export="+inBucket(dead, "exports")),
				Store: s, Log: quiet, Version: "v2", Readers: 1})
			t.Logf("%s: %v", time.Since(start).Round(time.Millisecond), err)
			if err == nil {
				t.Fatal("an export to a dead server succeeded")
			}
			if ctx.Err() != nil {
				t.Fatal("the run hung until the test's deadline")
			}
			if !strings.Contains(err.Error(), "/exports/scores/v2/part-0000") {
				t.Errorf("error does not name the part file: %v", err)
			}
			if live, _ := s.Live(ctx, "scores"); live != good.Manifest.Version {
				t.Errorf("live: got %q, want %q untouched", live, good.Manifest.Version)
			}
			if m, err := s.Manifest(ctx, "scores", "v2"); err != nil || m.State != writers.StateFailed {
				t.Errorf("v2: got %+v (%v), want failed", m, err)
			}
		})
	}
}

func TestShardsOfOneVersionExportEveryRowOnceAndTheLastListsAll(t *testing.T) {
	ctx := context.Background()
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 6000, Shards: 3, RowGroupRows: 1000, Seed: 29})
	s, url := openStore(t)
	dir := filepath.Join(t.TempDir(), "exports")
	j := newJob(t, d, url, "sink.export="+dir)
	var last *pipeline.Result
	for i := range 2 {
		res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-sharded", ShardIndex: i, ShardCount: 2})
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		if i == 0 && slices.Contains(exporttest.List(t, dir, "scores", "v-sharded"), "scores/v-sharded/manifest.json") {
			t.Error("the first shard published the manifest before the version was complete")
		}
		last = res
	}
	if !last.Flipped || len(last.Manifest.Export.Files) != 6 {
		t.Fatalf("the last shard: flipped %v, %d files; want it flipped, listing 6", last.Flipped, len(last.Manifest.Export.Files))
	}
	checkExport(t, dir, d, last.Manifest, "logistic", scalarFeatures)
}
