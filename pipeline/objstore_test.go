package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

// inBucket is URL u's bucket with key appended to its path, the query kept.
func inBucket(bucket, key string) string { return objtest.ObjectURL(bucket, key) }

// uploadPartitioned puts d's shards into two Hive partitions of bucket, half in each,
// and its models under models/, with a marker file the glob must not match.
func uploadPartitioned(t *testing.T, bucket string, d *dataset) {
	t.Helper()
	for i, f := range d.files {
		dt := "dt=2026-11-29"
		if i >= len(d.files)/2 {
			dt = "dt=2026-11-30"
		}
		objtest.PutFile(t, bucket, "features/"+dt+"/"+filepath.Base(f), f)
	}
	objtest.Put(t, bucket, "features/dt=2026-11-30/_SUCCESS", nil)
	for name := range d.models {
		objtest.PutFile(t, bucket, "models/"+name+".onnx", d.model(name))
	}
}

func TestAJobReadsHivePartitionsAndItsModelFromEachObjectStore(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 20_000, Shards: 4, RowGroupRows: 2_500, Seed: 11})
	for _, tt := range []struct {
		name   string
		bucket func(testing.TB) string
	}{{"S3 (versitygw)", objtest.S3}, {"GCS (fake-gcs-server)", objtest.GCS}, {"Azure Blob (Azurite)", objtest.Azure}} {
		t.Run(tt.name, func(t *testing.T) {
			bucket := tt.bucket(t)
			uploadPartitioned(t, bucket, d)
			s, url := openStore(t)
			j := newJob(t, d, url,
				"source.uri="+inBucket(bucket, "features/dt=2026-11-*/*.parquet"),
				"model.path="+inBucket(bucket, "models/logistic.onnx"))
			res, err := run(t, s, j)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Flipped {
				t.Fatal("the version was not flipped live")
			}
			m := res.Manifest
			if len(m.Sources) != 4 || !strings.Contains(m.Sources[0].Path, "dt=2026-11-29/part-00000.parquet") ||
				!strings.Contains(m.Sources[3].Path, "dt=2026-11-30/part-00003.parquet") {
				t.Fatalf("files: got %+v, want the four shards of both partitions, sorted", m.Sources)
			}
			if m.Model.SHA256 == "" || !strings.HasSuffix(strings.SplitN(m.Model.Path, "?", 2)[0], "models/logistic.onnx") {
				t.Fatalf("model: got %+v, want the object URL and its sha256", m.Model)
			}
			checkEveryKey(t, s, d, m, "logistic", scalarFeatures)
		})
	}
}

func TestBadObjectInputFailsClearlyAndLeavesTheLiveVersionAlone(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 2000, Shards: 2, RowGroupRows: 500, Seed: 9})
	bucket := objtest.S3(t)
	uploadPartitioned(t, bucket, d)
	whole := mustRead(t, d.files[1])
	objtest.Put(t, bucket, "bad/dt=2026-11-30/truncated.parquet", whole[:len(whole)/2])
	objtest.Put(t, bucket, "bad/dt=2026-11-30/notes.parquet", []byte("user_id,f0\nu1,0.5\n"))
	objtest.Put(t, bucket, "models/notes.onnx", []byte("not a model"))
	goodURI := inBucket(bucket, "features/dt=*/*.parquet")
	goodModel := inBucket(bucket, "models/logistic.onnx")
	noBucket := strings.Replace(goodURI, "s3://", "s3://absent-", 1)
	unreachable := "s3://b/features/*.parquet?" + objtest.S3Query(objtest.Unreachable(t))

	tests := []struct {
		name    string
		sets    []string
		env     map[string]string
		want    []string
		noWords []string
		is      error
	}{
		{"a pattern that matches nothing names the pattern", []string{"source.uri=" + inBucket(bucket, "features/dt=2026-12-*/*.parquet")},
			nil, []string{"features/dt=2026-12-*/*.parquet", "no files match"}, nil, readers.ErrNoFiles},
		{"a bucket that does not exist names it", []string{"source.uri=" + noBucket}, nil, []string{"absent-"}, nil, nil},
		{"wrong credentials fail without the secret in the message", []string{"source.uri=" + goodURI},
			map[string]string{"AWS_SECRET_ACCESS_KEY": "not-the-secret-1234"}, []string{"features/"}, []string{"not-the-secret-1234", objtest.SecretKey}, nil},
		{"a truncated object names it", []string{"source.uri=" + inBucket(bucket, "bad/dt=*/truncated.parquet")},
			nil, []string{"bad/dt=2026-11-30/truncated.parquet"}, nil, readers.ErrCorrupt},
		{"an object that is not Parquet names it", []string{"source.uri=" + inBucket(bucket, "bad/dt=*/notes.parquet")},
			nil, []string{"bad/dt=2026-11-30/notes.parquet", "not a Parquet file"}, nil, readers.ErrCorrupt},
		{"a model object that does not exist names it", []string{"source.uri=" + goodURI, "model.path=" + inBucket(bucket, "models/absent.onnx")},
			nil, []string{"models/absent.onnx"}, nil, nil},
		{"a model object that is not ONNX names the object, not its downloaded copy", []string{"source.uri=" + goodURI, "model.path=" + inBucket(bucket, "models/notes.onnx")},
			nil, []string{"models/notes.onnx"}, []string{"staticref-model-", os.TempDir() + "/"}, nil},
		{"an unreachable endpoint fails within the run's deadline", []string{"source.uri=" + unreachable}, nil, []string{"s3://b/features/"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := openStore(t)
			good, err := run(t, s, newJob(t, d, url, "sink.namespace=bad", "source.uri="+goodURI, "model.path="+goodModel))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			_, err = pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, append([]string{"sink.namespace=bad"}, tt.sets...)...), Store: s, Log: quiet})
			took := time.Since(start)
			if err == nil {
				t.Fatal("bad input ran without error")
			}
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
			if took > 6*time.Second {
				t.Errorf("returned after %s, want within the 3 s deadline", took)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, w := range tt.noWords {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error shows %q: %v", w, err)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) is false: %v", tt.is, err)
			}
			if live, _ := s.Live(context.Background(), "bad"); live != good.Manifest.Version {
				t.Errorf("live: got %q, want %q untouched", live, good.Manifest.Version)
			}
			ms, _ := s.Manifests(context.Background(), "bad")
			for _, m := range ms {
				if m.Version != good.Manifest.Version && m.State == writers.StateComplete {
					t.Errorf("version %s of the bad run is complete", m.Version)
				}
			}
		})
	}
}

// TestCancellingARunStopsAnObjectReadInFlight: a run whose store hangs in the middle of a
// column chunk stops when its context is cancelled (SIGTERM to `staticref run`), naming
// the cancellation, and the live version stays.
func TestCancellingARunStopsAnObjectReadInFlight(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 20_000, Shards: 2, RowGroupRows: 5_000, Seed: 11})
	bucket := objtest.S3(t)
	uploadPartitioned(t, bucket, d)
	s, url := openStore(t)
	good, err := run(t, s, newJob(t, d, url, "sink.namespace=cancel", "source.uri="+inBucket(bucket, "features/dt=*/*.parquet"),
		"model.path="+inBucket(bucket, "models/logistic.onnx")))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(-1)
	if st, err := os.Stat(d.files[0]); err == nil {
		size = st.Size()
	}
	stalled := make(chan struct{}, 64)
	hanging := objtest.Intercept(t, bucket, func(r *http.Request) objtest.Action {
		// Column chunks lie in the first half of a shard; the footer checks read its end.
		var start, end int64
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err == nil && start < size/2 {
			stalled <- struct{}{}
			return objtest.Stall
		}
		return objtest.Pass
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, d, url, "sink.namespace=cancel",
			"source.uri="+inBucket(hanging, "features/dt=*/*.parquet"), "model.path="+inBucket(bucket, "models/logistic.onnx")), Store: s, Log: quiet})
		done <- err
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("the run ended before its reads hung: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no read reached the hanging server")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run went on after it was cancelled: the hung read was not stopped")
	}
	if live, _ := s.Live(context.Background(), "cancel"); live != good.Manifest.Version {
		t.Errorf("live: got %q, want %q untouched", live, good.Manifest.Version)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
