package readers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/readers/shardgen"
)

func TestMain(m *testing.M) {
	code := m.Run()
	objtest.Stop()
	os.Exit(code)
}

// countingProxy serves the S3 server behind bucketURL through a reverse proxy that
// counts requests and response body bytes, and returns the bucket's URL through it.
func countingProxy(t *testing.T, bucketURL string) (string, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(u.Query().Get("endpoint"))
	if err != nil {
		t.Fatal(err)
	}
	var requests, bytes atomic.Int64
	p := httputil.NewSingleHostReverseProxy(target)
	p.ModifyResponse = func(r *http.Response) error {
		requests.Add(1)
		r.Body = countBody{r.Body, &bytes}
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	q := u.Query()
	q.Set("endpoint", srv.URL)
	u.RawQuery = q.Encode()
	return u.String(), &requests, &bytes
}

type countBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestAnObjectIsReadByRangesOfOnlyTheJobsColumns(t *testing.T) {
	bucket := objtest.S3(t)
	dir := t.TempDir()
	spec := shardgen.Spec{Rows: 40_000, Shards: 1, RowGroupRows: 5_000, Seed: 3}
	files, err := shardgen.Generate(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(files[0])
	objtest.PutFile(t, bucket, "features/dt=2026-11-30/part-00000.parquet", files[0])
	proxied, requests, fetched := countingProxy(t, bucket)

	paths, err := readers.GlobContext(context.Background(), strings.Replace(proxied, "?", "/features/dt=*/*.parquet?", 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 {
		t.Fatalf("got %v, want one object", paths)
	}
	listed := fetched.Load()
	f, err := readers.Open(paths[0], readers.Options{Key: "user_id", Features: []string{"f0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info := f.Info()
	if info.Bytes != st.Size() || len(info.RowGroups) != 8 {
		t.Fatalf("got %d bytes in %d row groups, want %d bytes in 8", info.Bytes, len(info.RowGroups), st.Size())
	}
	var rows int64
	for rg := range info.RowGroups {
		err := f.ReadRowGroup(context.Background(), rg, func(b *readers.Batch) error {
			rows += int64(b.Len)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if rows != int64(spec.Rows) {
		t.Fatalf("read %d rows, want %d", rows, spec.Rows)
	}
	got := fetched.Load() - listed
	t.Logf("%d requests, %d of %d bytes fetched", requests.Load(), got, st.Size())
	if got*3 > st.Size() {
		t.Fatalf("fetched %d bytes of a %d-byte file: want well under a third (the key and one feature column)", got, st.Size())
	}
}

func TestBadObjectsFailClearlyNamingTheObject(t *testing.T) {
	bucket := objtest.S3(t)
	obj := func(key string) string { return strings.Replace(bucket, "?", "/"+key+"?", 1) }
	dir := t.TempDir()
	files, err := shardgen.Generate(dir, shardgen.Spec{Rows: 1000, Shards: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(files[0])
	objtest.Put(t, bucket, "bad/truncated.parquet", good[:len(good)/2])
	objtest.Put(t, bucket, "bad/text.parquet", []byte("key,f0\na,1\n"))
	opts := readers.Options{Key: "user_id", Features: []string{"f0"}}

	t.Run("a pattern that matches nothing is an error naming the pattern", func(t *testing.T) {
		_, err := readers.Glob(obj("nothing/dt=*/*.parquet"))
		if !errors.Is(err, readers.ErrNoFiles) || !strings.Contains(err.Error(), "nothing/dt=*/*.parquet") {
			t.Fatalf("got %v, want ErrNoFiles naming the pattern", err)
		}
	})
	for _, key := range []string{"bad/truncated.parquet", "bad/text.parquet"} {
		t.Run("a truncated or non-Parquet object is corrupt: "+key, func(t *testing.T) {
			_, err := readers.Open(obj(key), opts)
			if !errors.Is(err, readers.ErrCorrupt) || !strings.Contains(err.Error(), key) {
				t.Fatalf("got %v, want ErrCorrupt naming %s", err, key)
			}
		})
	}
	t.Run("a bucket that does not exist is an error naming it", func(t *testing.T) {
		u := strings.Replace(bucket, "s3://", "s3://no-such-bucket-", 1)
		_, err := readers.Glob(strings.Replace(u, "?", "/x/*.parquet?", 1))
		if err == nil || !strings.Contains(err.Error(), "no-such-bucket-") {
			t.Fatalf("got %v, want an error naming the bucket", err)
		}
	})
	t.Run("wrong credentials fail without the secret in the message", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-abcdefgh")
		_, err := readers.Open(obj("bad/text.parquet"), opts)
		if err == nil || strings.Contains(err.Error(), "wrong-secret-abcdefgh") || strings.Contains(err.Error(), objtest.SecretKey) {
			t.Fatalf("got %v, want an error without the secret", err)
		}
		if !strings.Contains(err.Error(), "bad/text.parquet") {
			t.Fatalf("got %v, want the object named", err)
		}
	})
	t.Run("an unreachable endpoint fails within the caller's deadline", func(t *testing.T) {
		u := "s3://b/x/*.parquet?" + objtest.S3Query(objtest.Unreachable(t))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := readers.GlobContext(ctx, u)
		if err == nil {
			t.Fatal("got no error")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("returned after %s, want within the 2 s deadline", d)
		}
		t.Logf("%v", err)
	})
}

// rangeStart is where the Range header of a GET asks to start, -1 for none.
func rangeStart(r *http.Request) int64 {
	var start, end int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err != nil || r.Method != http.MethodGet {
		return -1
	}
	return start
}

// TestAFailingServerIsRetriedThenNamed: a server that dies while a column chunk is read,
// or hangs, costs a retry or the caller's cancellation, never a hang or a silent loss.
func TestAFailingServerIsRetriedThenNamed(t *testing.T) {
	bucket := objtest.S3(t)
	dir := t.TempDir()
	files, err := shardgen.Generate(dir, shardgen.Spec{Rows: 20_000, Shards: 1, RowGroupRows: 5_000, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(files[0])
	objtest.PutFile(t, bucket, "f/part-00000.parquet", files[0])
	opts := readers.Options{Key: "user_id", Features: []string{"f0", "f1"}}
	// A column chunk read starts in the first half of the file; the footer reads at its end.
	dataRead := func(r *http.Request) bool { s := rangeStart(r); return s >= 0 && s < st.Size()/2 }
	readAll := func(ctx context.Context, u string) (int64, error) {
		f, err := readers.OpenContext(ctx, u, opts)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		var rows int64
		for rg := range f.Info().RowGroups {
			if err := f.ReadRowGroup(ctx, rg, func(b *readers.Batch) error { rows += int64(b.Len); return nil }); err != nil {
				return rows, err
			}
		}
		return rows, nil
	}

	t.Run("a server that dies in the middle of one read is retried and every row arrives", func(t *testing.T) {
		var died atomic.Int64
		u := objtest.Intercept(t, bucket, func(r *http.Request) objtest.Action {
			if dataRead(r) && died.Add(1) == 1 {
				return objtest.Die
			}
			return objtest.Pass
		})
		rows, err := readAll(context.Background(), objtest.ObjectURL(u, "f/part-00000.parquet"))
		if err != nil || rows != 20_000 {
			t.Fatalf("got %d rows, %v; want all 20000 after a retry", rows, err)
		}
		if died.Load() < 2 {
			t.Fatalf("the read that died was not tried again")
		}
	})
	t.Run("a listing that fails is tried again and finds every object", func(t *testing.T) {
		var lists atomic.Int64
		u := objtest.Intercept(t, bucket, func(r *http.Request) objtest.Action {
			// The AWS SDK tries a request 3 times itself: fail all of them, so that
			// objstore's own retry has to list again.
			if r.URL.Query().Get("list-type") == "2" && lists.Add(1) <= 3 {
				return objtest.Refuse
			}
			return objtest.Pass
		})
		paths, err := readers.GlobContext(context.Background(), objtest.ObjectURL(u, "f/*.parquet"))
		if err != nil || len(paths) != 1 {
			t.Fatalf("got %v, %v; want the one object after a retry", paths, err)
		}
		if lists.Load() < 4 {
			t.Fatalf("listed %d times, want a retry after the SDK's own 3 tries", lists.Load())
		}
	})
	t.Run("a server that has died fails the read after its retries, naming the object", func(t *testing.T) {
		var tries atomic.Int64
		u := objtest.Intercept(t, bucket, func(r *http.Request) objtest.Action {
			if dataRead(r) {
				tries.Add(1)
				return objtest.Die
			}
			return objtest.Pass
		})
		start := time.Now()
		_, err := readAll(context.Background(), objtest.ObjectURL(u, "f/part-00000.parquet"))
		if err == nil || !strings.Contains(err.Error(), "f/part-00000.parquet") {
			t.Fatalf("got %v, want a failure naming the object", err)
		}
		if n := tries.Load(); n < objstore.Attempts {
			t.Errorf("tried %d times, want at least %d", n, objstore.Attempts)
		}
		t.Logf("%d tries in %s: %v", tries.Load(), time.Since(start).Round(time.Millisecond), err)
	})
	t.Run("cancelling the caller stops a read the server never answers", func(t *testing.T) {
		stalled := make(chan struct{}, 16)
		u := objtest.Intercept(t, bucket, func(r *http.Request) objtest.Action {
			if dataRead(r) {
				stalled <- struct{}{}
				return objtest.Stall
			}
			return objtest.Pass
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := readAll(ctx, objtest.ObjectURL(u, "f/part-00000.parquet")); done <- err }()
		select {
		case <-stalled:
		case err := <-done:
			t.Fatalf("the read ended before reaching the server: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no read reached the server")
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the read went on after its caller was cancelled")
		}
	})
}

// TestAnUnreachableEndpointFailsWithoutACallerDeadline: every store's client is bounded
// by objstore's own deadline, even GCS's, which retries a refused connection forever.
func TestAnUnreachableEndpointFailsWithoutACallerDeadline(t *testing.T) {
	old := objstore.CallTimeout
	objstore.CallTimeout = 300 * time.Millisecond
	t.Cleanup(func() { objstore.CallTimeout = old })
	addr := objtest.Unreachable(t)
	for _, tc := range []struct{ name, pattern, env string }{
		{"s3", "s3://b/x/*.parquet?" + objtest.S3Query(addr), ""},
		{"gcs", "gs://b/x/*.parquet", addr},
		{"azure", "azblob://b/x/*.parquet?protocol=http&domain=" + addr + "&localemu=true", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("STORAGE_EMULATOR_HOST", tc.env)
			} else {
				t.Setenv("AZURE_STORAGE_ACCOUNT", objtest.AzureAccount)
				t.Setenv("AZURE_STORAGE_KEY", objtest.AzureKey)
			}
			start := time.Now()
			_, err := readers.GlobContext(context.Background(), tc.pattern)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "b/x/") {
				t.Fatalf("got %v, want an error naming the pattern", err)
			}
			// Attempts tries of CallTimeout each, plus 0.7 s of backoff between them.
			if limit := time.Duration(objstore.Attempts)*objstore.CallTimeout + 3*time.Second; took > limit {
				t.Fatalf("returned after %s, want within %s", took, limit)
			}
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
		})
	}
}
