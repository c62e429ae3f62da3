package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/redis"
	"github.com/staticref/staticref/writers/redistest"
	"github.com/staticref/staticref/writers/storetest"
)

// driver is the *redis.Driver beneath a store that redis.Open opened.
func driver(s *writers.Store) *redis.Driver { return s.Driver().(*redis.Driver) }

// openRedis opens the store at url and empties the whole server (every master of a
// cluster) first, so that each conformance subtest starts from nothing.
func openRedis(t *testing.T, url string) *writers.Store {
	t.Helper()
	ctx := context.Background()
	s, err := redis.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	switch c := driver(s).Client().(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return c.FlushAll(ctx).Err()
		})
	default:
		err = c.FlushAll(ctx).Err()
	}
	if err != nil {
		s.Close()
		t.Fatalf("FLUSHALL: %v", err)
	}
	return s
}

func TestRedisStandalone(t *testing.T) {
	url := redistest.Standalone(t)
	open := func(t *testing.T) *writers.Store { return openRedis(t, url) }
	t.Run("conformance", func(t *testing.T) { storetest.Run(t, open) })
	t.Run("writers.Open opens a redis URL with this driver", func(t *testing.T) {
		s, err := writers.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		d, ok := s.Driver().(*redis.Driver)
		if !ok {
			t.Fatalf("writers.Open(%q) has driver %T, want *redis.Driver", url, s.Driver())
		}
		if got, want := s.String(), "redis "+d.Addr(); got != want || !strings.HasPrefix(want, "redis 127.0.0.1:") {
			t.Errorf("String() = %q, want %q naming 127.0.0.1", got, want)
		}
	})
	t.Run("a flip publishes exactly one message", func(t *testing.T) { testRedisFlipPublishes(t, openRedis(t, url)) })
	t.Run("gc of a version with 50k keys leaves none", func(t *testing.T) { testRedisGC(t, openRedis(t, url)) })
	t.Run("a flip on one handle reaches WatchFlips on another", func(t *testing.T) { testWatchFlips(t, url) })
	t.Run("a release swap is announced on the flip channel", func(t *testing.T) { testReleaseAnnounced(t, url) })
	t.Run("release counters expire and a corrupt record is refused", func(t *testing.T) { testReleaseKeys(t, openRedis(t, url)) })
	t.Run("get many of 100 keys is one round trip", func(t *testing.T) { testStandaloneGetMany(t, openRedis(t, url)) })
	t.Run("a version in the old layout still reads, counts and goes at gc", func(t *testing.T) { testOldLayout(t, openRedis(t, url)) })
	t.Run("the layout is recorded once and outlives a manifest without it", func(t *testing.T) { testLayoutRecord(t, openRedis(t, url)) })
	t.Run("buckets stay listpacks at the server's limits", func(t *testing.T) { testBucketsStayListpacks(t, openRedis(t, url)) })
	t.Run("keys less their common prefix read back exactly", func(t *testing.T) { testStrippedFields(t, openRedis(t, url)) })
	t.Run("a user without CONFIG gets redis.conf's listpack limits", func(t *testing.T) { testConfigRefused(t, url) })
}

func TestRedisCluster(t *testing.T) {
	url := redistest.Cluster(t)
	open := func(t *testing.T) *writers.Store { return openRedis(t, url) }
	t.Run("conformance", func(t *testing.T) { storetest.Run(t, open) })
	t.Run("a flip publishes exactly one message", func(t *testing.T) { testRedisFlipPublishes(t, openRedis(t, url)) })
	t.Run("gc of a version with 50k keys leaves none", func(t *testing.T) { testRedisGC(t, openRedis(t, url)) })
	t.Run("a flip on one handle reaches WatchFlips on another", func(t *testing.T) { testWatchFlips(t, url) })
	t.Run("a release swap is announced on the flip channel", func(t *testing.T) { testReleaseAnnounced(t, url) })
	t.Run("release counters expire and a corrupt record is refused", func(t *testing.T) { testReleaseKeys(t, openRedis(t, url)) })
	t.Run("get many of 100 keys costs one round trip per master", func(t *testing.T) { testClusterGetMany(t, openRedis(t, url)) })
	t.Run("get chain of 3 levels costs one round trip per master", func(t *testing.T) { testClusterGetChain(t, openRedis(t, url)) })
	t.Run("a version in the old layout still reads, counts and goes at gc", func(t *testing.T) { testOldLayout(t, openRedis(t, url)) })
	t.Run("keys less their common prefix read back exactly", func(t *testing.T) { testStrippedFields(t, openRedis(t, url)) })
	t.Run("the rows of a version spread over every master", func(t *testing.T) {
		ctx := context.Background()
		s := openRedis(t, url)
		defer s.Close()
		writeVersion(t, s, "spread", "v1", 3000, writers.StateWriting)
		var (
			mu        sync.Mutex
			perMaster []int64
		)
		c := driver(s).Client().(*goredis.ClusterClient)
		err := c.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			n, err := c.DBSize(ctx).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			perMaster = append(perMaster, n)
			mu.Unlock()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		holding := 0
		for _, n := range perMaster {
			if n > 0 {
				holding++
			}
		}
		if len(perMaster) != 3 || holding != 3 {
			t.Errorf("keys per master = %v, want three masters that all hold some", perMaster)
		}
	})
}

// writeVersion creates ns/version, writes n rows "key-I" -> 40-byte values in batches of
// 8192, and leaves the manifest in state st.
func writeVersion(t *testing.T, s *writers.Store, ns, version string, n int, st writers.State) {
	t.Helper()
	ctx := context.Background()
	m := &writers.Manifest{Namespace: ns, Version: version, State: writers.StateWriting, StartedAt: time.Now().UTC()}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < n; lo += 8192 {
		rows := makeRows(lo, min(lo+8192, n))
		if err := s.WriteRows(ctx, ns, version, rows); err != nil {
			t.Fatalf("WriteRows(%d..): %v", lo, err)
		}
	}
	if st != writers.StateWriting {
		m.State = st
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}

func makeRows(lo, hi int) writers.Rows {
	rows := writers.Rows{Keys: make([][]byte, 0, hi-lo), Values: make([][]byte, 0, hi-lo)}
	for i := lo; i < hi; i++ {
		rows.Keys = append(rows.Keys, fmt.Appendf(nil, "key-%d", i))
		rows.Values = append(rows.Values, fmt.Appendf(nil, `{"score":0.%034d}`, i))
	}
	return rows
}

func testRedisFlipPublishes(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	writeVersion(t, s, "pub", "v1", 1, writers.StateComplete)
	writeVersion(t, s, "pub", "v2", 1, writers.StateComplete)
	if err := s.SwapLive(ctx, "pub", "", "v1"); err != nil {
		t.Fatal(err)
	}

	sub := driver(s).Client().Subscribe(ctx, redis.FlipChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	ch := sub.Channel()

	// A conflicting swap and a swap to an incomplete version publish nothing.
	if err := s.SwapLive(ctx, "pub", "v2", "v1"); !errors.Is(err, writers.ErrConflict) {
		t.Fatalf("SwapLive(v2 -> v1) error = %v, want ErrConflict", err)
	}
	if err := s.SwapLive(ctx, "pub", "v1", "v3"); err == nil {
		t.Fatal("SwapLive(v1 -> v3) succeeded, want an error")
	}
	if err := s.SwapLive(ctx, "pub", "v1", "v2"); err != nil {
		t.Fatal(err)
	}

	select {
	case msg := <-ch:
		var got map[string]string
		if err := json.Unmarshal([]byte(msg.Payload), &got); err != nil {
			t.Fatalf("flip message %q: %v", msg.Payload, err)
		}
		want := map[string]string{"namespace": "pub", "version": "v2", "previous": "v1"}
		if msg.Channel != "sr:flips" || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("flip message on %s = %s, want %v on sr:flips", msg.Channel, msg.Payload, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no flip message within 5s")
	}
	select {
	case msg := <-ch:
		t.Errorf("second message %q on %s, want exactly one", msg.Payload, msg.Channel)
	case <-time.After(200 * time.Millisecond):
	}
}

// testWatchFlips flips through writers.Flip on one store handle and watches with
// WatchFlips on another handle of the same server: every flip that swaps the pointer
// arrives, with its namespace, and nothing else does; cancelling the context or closing
// the store ends the watch.
func testWatchFlips(t *testing.T, url string) {
	ctx := context.Background()
	flipper := openRedis(t, url)
	defer flipper.Close()
	watcher, err := redis.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	for _, ns := range []string{"watch", "other"} {
		writeVersion(t, flipper, ns, "v1", 1, writers.StateComplete)
		writeVersion(t, flipper, ns, "v2", 1, writers.StateComplete)
	}

	got := make(chan string, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	returned := make(chan bool, 1)
	// Only this test's namespaces: on a cluster, a flip an earlier subtest published on
	// another node can still be crossing the cluster bus when this watch subscribes.
	go func() {
		returned <- watcher.WatchFlips(wctx, func(ns string) {
			if ns == "watch" || ns == "other" {
				got <- ns
			}
		})
	}()
	waitSubscribers(t, driver(flipper), 1)

	want := func(what, ns string) {
		t.Helper()
		select {
		case g := <-got:
			if g != ns {
				t.Errorf("%s: WatchFlips got namespace %q, want %q", what, g, ns)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: WatchFlips got nothing within 5s, want %q", what, ns)
		}
	}
	for _, f := range []struct{ ns, version string }{{"watch", "v1"}, {"other", "v1"}, {"watch", "v2"}} {
		if _, err := writers.Flip(ctx, flipper, f.ns, f.version); err != nil {
			t.Fatal(err)
		}
		want(fmt.Sprintf("flip %s to %s", f.ns, f.version), f.ns)
	}
	// A flip that loses its compare-and-swap, and one to the version already live, swap
	// nothing and announce nothing.
	if err := writers.FlipFrom(ctx, flipper, "watch", "v1", "v1"); !errors.Is(err, writers.ErrConflict) {
		t.Fatalf("FlipFrom(v1 -> v1) while v2 is live: %v, want ErrConflict", err)
	}
	if _, err := writers.Flip(ctx, flipper, "watch", "v2"); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		t.Errorf("WatchFlips got %q after flips that swapped nothing, want nothing", g)
	case <-time.After(200 * time.Millisecond):
	}

	cancel()
	select {
	case announces := <-returned:
		if !announces {
			t.Error("WatchFlips = false, want true: a Redis store announces flips")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchFlips still running 5s after its context was cancelled")
	}

	// Closing the store ends a watch whose context lives on.
	waitSubscribers(t, driver(flipper), 0)
	go func() { returned <- watcher.WatchFlips(ctx, func(string) {}) }()
	waitSubscribers(t, driver(flipper), 1)
	if err := watcher.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchFlips still running 5s after the store was closed")
	}
}

// waitSubscribers waits until the server (all masters of a cluster together) counts n
// subscribers of the flip channel.
func waitSubscribers(t *testing.T, d *redis.Driver, n int64) {
	t.Helper()
	ctx := context.Background()
	count := func(c *goredis.Client) (int64, error) {
		m, err := c.PubSubNumSub(ctx, redis.FlipChannel).Result()
		return m[redis.FlipChannel], err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var total atomic.Int64
		var err error
		switch c := d.Client().(type) {
		case *goredis.ClusterClient:
			err = c.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
				k, err := count(c)
				total.Add(k)
				return err
			})
		case *goredis.Client:
			var k int64
			k, err = count(c)
			total.Add(k)
		}
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		if total.Load() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers of %s after 5s, want %d", total.Load(), redis.FlipChannel, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testRedisGC(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	const n = 50_000
	writeVersion(t, s, "gc", "v1", n, writers.StateComplete)
	writeVersion(t, s, "gc", "v2", 10, writers.StateComplete)
	if _, err := writers.Flip(ctx, s, "gc", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.Flip(ctx, s, "gc", "v2"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CountKeys(ctx, "gc", "v1"); err != nil || got != n {
		t.Fatalf("CountKeys(v1) = %d, %v; want %d", got, err, n)
	}
	removed, err := writers.GC(ctx, s, "gc", 0, time.Hour, time.Now())
	if err != nil || len(removed) != 1 || removed[0] != "v1" {
		t.Fatalf("GC = %q, %v; want [v1]", removed, err)
	}
	if got, err := s.CountKeys(ctx, "gc", "v1"); err != nil || got != 0 {
		t.Errorf("CountKeys(v1) after gc = %d, %v; want 0", got, err)
	}
	if got, err := s.CountKeys(ctx, "gc", "v2"); err != nil || got != 10 {
		t.Errorf("CountKeys(v2) after gc = %d, %v; want 10 (the live version is untouched)", got, err)
	}
}

func TestRedisWriteRowsSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartStandalone(t)
	s, err := redis.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	driver(s).RetryFor = 20 * time.Second
	writeVersion(t, s, "rs", "v1", 100, writers.StateWriting)

	srv.Kill()
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(300 * time.Millisecond)
		srv.Restart()
	}()
	start := time.Now()
	err = s.WriteRows(ctx, "rs", "v1", makeRows(100, 20_000))
	<-restarted
	if err != nil {
		t.Fatalf("WriteRows across a restart: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("WriteRows returned after %s, before the server was back", time.Since(start))
	}
	if got, err := s.CountKeys(ctx, "rs", "v1"); err != nil || got != 20_000 {
		t.Errorf("CountKeys after restart = %d, %v; want 20000", got, err)
	}
}

func TestRedisWriteRowsFailsClearlyWhenTheServerIsGone(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartStandalone(t)
	s, err := redis.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	driver(s).RetryFor = 500 * time.Millisecond
	writeVersion(t, s, "gone", "v1", 10, writers.StateWriting)
	srv.Kill()

	start := time.Now()
	err = s.WriteRows(ctx, "gone", "v1", makeRows(10, 5000))
	if err == nil || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("WriteRows with the server gone: error = %v, want one naming %s", err, srv.Addr())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("WriteRows took %s to fail, want it bounded by the retry budget", d)
	}
	if testing.Verbose() {
		t.Logf("WriteRows failed after %s: %v", time.Since(start), err)
	}
}

func TestOpenRedisNamesTheAddress(t *testing.T) {
	ctx := context.Background()
	for _, url := range []string{
		"redis://127.0.0.1:1/0",
		"redis+cluster://127.0.0.1:1,127.0.0.1:2",
	} {
		start := time.Now()
		s, err := redis.Open(ctx, url)
		if err == nil {
			s.Close()
			t.Errorf("redis.Open(%q) succeeded, want an error", url)
			continue
		}
		if !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("redis.Open(%q) error = %q, want it to name the address", url, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("redis.Open(%q) took %s to fail", url, d)
		}
	}
}

// BenchmarkRedisWriteRows writes 8192-row batches of 40-byte values into a standalone
// redis-server with the default pipeline size and in-flight limit, in each layout.
func BenchmarkRedisWriteRows(b *testing.B) {
	url := redistest.Standalone(b)
	for _, l := range []string{writers.LayoutHashBuckets, writers.LayoutPlain} {
		b.Run("layout="+l, func(b *testing.B) { benchRedisWriteRowsLayout(b, url, 0, l) })
	}
}

// BenchmarkRedisPipelineSize is BenchmarkRedisWriteRows for several pipeline sizes; it
// chose DefaultPipelineSize.
func BenchmarkRedisPipelineSize(b *testing.B) {
	url := redistest.Standalone(b)
	for _, size := range []int{256, 1024, 2048, 4096} {
		b.Run(fmt.Sprintf("pipeline=%d", size), func(b *testing.B) { benchRedisWriteRows(b, url, size) })
	}
}

func benchRedisWriteRows(b *testing.B, url string, pipelineSize int) {
	benchRedisWriteRowsLayout(b, url, pipelineSize, writers.LayoutHashBuckets)
}

func benchRedisWriteRowsLayout(b *testing.B, url string, pipelineSize int, layout string) {
	ctx := context.Background()
	s, err := redis.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if pipelineSize > 0 {
		driver(s).PipelineSize = pipelineSize
	}
	if err := driver(s).Client().FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	m := &writers.Manifest{Namespace: "bench", Version: "v1", State: writers.StateWriting, ExpectedRows: 1_000_000}
	if layout == writers.LayoutPlain {
		m.Layout = &writers.Layout{Kind: writers.LayoutPlain}
	}
	if err := s.PutManifest(ctx, m); err != nil {
		b.Fatal(err)
	}
	const batch = 8192
	rows := writers.Rows{Keys: make([][]byte, batch), Values: make([][]byte, batch)}
	value := []byte(`{"score":0.12345678901234567890123456789}`)[:40]
	n := 0
	for b.Loop() {
		for i := range batch {
			rows.Keys[i] = fmt.Appendf(rows.Keys[i][:0], "user-%012d", n%1_000_000)
			rows.Values[i] = value
			n++
		}
		if err := s.WriteRows(ctx, "bench", "v1", rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}

func TestRedisURLCarriesWriteSettings(t *testing.T) {
	url := redistest.Standalone(t)
	s, err := redis.Open(context.Background(), url+"?pipeline=64&max_in_flight=2&retry_for=1500ms&dial_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := driver(s)
	if d.PipelineSize != 64 || d.MaxInFlight != 2 || d.RetryFor != 1500*time.Millisecond {
		t.Errorf("got pipeline %d, max_in_flight %d, retry_for %s; want 64, 2, 1.5s", d.PipelineSize, d.MaxInFlight, d.RetryFor)
	}
	if _, err := redis.Open(context.Background(), url+"?pipeline=0"); err == nil || !strings.Contains(err.Error(), "pipeline") {
		t.Errorf("pipeline=0: got %v, want an error naming pipeline", err)
	}
}

// TestRedisTLS runs the store contract over rediss:// against a server whose certificate
// a test CA signed, trusted through the URL's tls_ca; and shows what a wrong TLS set-up
// gets: an untrusted certificate, tls_ca on a plain or cluster URL, an unreadable CA file.
func TestRedisTLS(t *testing.T) {
	ctx := context.Background()
	url, ca := redistest.TLS(t)
	trusted := url + "?tls_ca=" + ca
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) *writers.Store { return openRedis(t, trusted) })
	})
	for _, tt := range []struct {
		name, url string
		want      []string
	}{
		{"a certificate no trusted CA signed", url, []string{"cannot reach redis", "certificate"}},
		{"tls_ca on a plain redis URL", "redis://127.0.0.1:1/0?tls_ca=" + ca, []string{"tls_ca", "rediss://"}},
		{"tls_ca on a cluster URL", "redis+cluster://127.0.0.1:1,127.0.0.1:2?tls_ca=" + ca, []string{"tls_ca", "redis+cluster"}},
		{"a tls_ca file that is missing", url + "?tls_ca=/nonexistent/ca.pem", []string{"tls_ca", "/nonexistent/ca.pem"}},
		{"a tls_ca file with no certificate", url + "?tls_ca=" + notPEM, []string{"tls_ca", "not.pem", "no PEM certificate"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := redis.Open(ctx, tt.url)
			if err == nil {
				s.Close()
				t.Fatalf("redis.Open(%s) succeeded, want an error", tt.url)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// TestRedisURLErrorsNameTheParameterAndHideThePassword: a bad URL parameter or escape is
// an error that says which, and never shows the password.
func TestRedisURLErrorsNameTheParameterAndHideThePassword(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want string
	}{
		{"redis://u:s3cret@127.0.0.1:1/0?pipeline=0", `pipeline="0"`},
		{"redis://u:s3cret@127.0.0.1:1/0?retry_for=soon", "retry_for"},
		{"rediss://u:s3cret@127.0.0.1:1/0?tls_ca=", "tls_ca: empty value"},
		{"rediss://u:s3%zzcret@127.0.0.1:1/0", "invalid URL escape"},
		// A password may hold what a URL cannot: it is never taken for the host.
		{"redis://:s3cret/x+Z@127.0.0.1:1/0", "percent-encode"},
		{"redis+cluster://:s3cret/x@127.0.0.1:1,127.0.0.1:2", "percent-encode"},
		{"redis://:s3cret@x@127.0.0.1:1,127.0.0.1:2/0", "several hosts"},
	} {
		_, err := redis.Open(context.Background(), tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("redis.Open(%s): %v, want an error with %q", tt.url, err, tt.want)
		}
		if err == nil {
			continue
		}
		if _, cerr := writers.Open(context.Background(), tt.url); cerr != nil && strings.Contains(cerr.Error(), "s3cret") {
			t.Errorf("writers.Open(%s): the error shows the password: %v", tt.url, cerr)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "s3%zzcret") {
			t.Errorf("redis.Open(%s): the error shows the password: %v", tt.url, err)
		}
	}
}

// TestRedisRefusedCredentials: a server that wants a password, given a wrong one or
// none, is reported as refusing the credentials, not as unreachable, and the error
// does not show the password tried.
func TestRedisRefusedCredentials(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartStandalone(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer c.Close()
	if err := c.ConfigSet(ctx, "requirepass", "s3cret-pw").Err(); err != nil {
		t.Fatal(err)
	}
	for name, url := range map[string]string{
		"a wrong password": "redis://:wrong-pw@" + srv.Addr() + "/0",
		"no password":      "redis://" + srv.Addr() + "/0",
	} {
		t.Run(name, func(t *testing.T) {
			s, err := redis.Open(ctx, url)
			if err == nil {
				s.Close()
				t.Fatal("opened without the right password")
			}
			if !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), srv.Addr()) {
				t.Errorf("got %q, want it to say %s refused the credentials", err, srv.Addr())
			}
			if strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("the error shows the password: %q", err)
			}
		})
	}
	s, err := redis.Open(ctx, "redis://:s3cret-pw@"+srv.Addr()+"/0")
	if err != nil {
		t.Fatalf("with the right password: %v", err)
	}
	s.Close()
}

// askKeys is n keys of a version writeVersion wrote with at least 300 rows, every third
// one missing: "key-0", "nokey-1", "key-2", …
func askKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		if i%3 == 1 {
			keys[i] = fmt.Appendf(nil, "nokey-%d", i)
		} else {
			keys[i] = fmt.Appendf(nil, "key-%d", i)
		}
	}
	return keys
}

// checkAsked checks GetMany's answer to askKeys against makeRows' values.
func checkAsked(t *testing.T, vals [][]byte) {
	t.Helper()
	for i, v := range vals {
		want := []byte(nil)
		if i%3 != 1 {
			want = fmt.Appendf(nil, `{"score":0.%034d}`, i)
		}
		if string(v) != string(want) || (v == nil) != (want == nil) {
			t.Errorf("GetMany[%d] = %q, want %q", i, v, want)
		}
	}
}

// commandCalls is the calls count of every command in INFO commandstats, by lower-case
// name (get, mget, …).
func commandCalls(t *testing.T, c *goredis.Client) map[string]int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	calls := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var n int64
		if _, err := fmt.Sscanf(stats, "calls=%d,", &n); err != nil {
			t.Fatalf("INFO commandstats line %q: %v", line, err)
		}
		calls[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return calls
}

// roundTrips counts what a client sends to one server: pipelines (one write of all
// their commands, one read of all replies) and single commands, with the reads of rows
// (GET, MGET, HGET, HMGET) among them.
type roundTrips struct {
	pipelines, singles, reads atomic.Int64
}

func isRowRead(cmd goredis.Cmder) bool {
	switch cmd.Name() {
	case "get", "mget", "hget", "hmget":
		return true
	}
	return false
}

func (r *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (r *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		r.singles.Add(1)
		if isRowRead(cmd) {
			r.reads.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		r.pipelines.Add(1)
		for _, cmd := range cmds {
			if isRowRead(cmd) {
				r.reads.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// distinctBuckets is how many buckets of a version with layout l the keys fall in.
func distinctBuckets(l *writers.Layout, keys [][]byte) int64 {
	seen := map[uint64]bool{}
	for _, k := range keys {
		h := fnv.New64a()
		h.Write(k)
		seen[h.Sum64()%uint64(l.Buckets)] = true
	}
	return int64(len(seen))
}

// bucketedVersion writes a version of 300 rows with writeVersion, checks that the store
// chose the hash-buckets layout for it, and reads one key, so that the driver knows the
// layout (a lookup service learns it once per version, at its first read).
func bucketedVersion(t *testing.T, s *writers.Store, ns, version string) *writers.Layout {
	t.Helper()
	ctx := context.Background()
	writeVersion(t, s, ns, version, 300, writers.StateComplete)
	m, err := s.Manifest(ctx, ns, version)
	if err != nil {
		t.Fatal(err)
	}
	if m.Layout == nil || m.Layout.Kind != writers.LayoutHashBuckets || m.Layout.Hash != writers.HashFNV1a64 || m.Layout.Buckets < 1 {
		t.Fatalf("new version's layout = %+v, want hash-buckets with fnv1a64", m.Layout)
	}
	if _, err := s.Get(ctx, ns, version, []byte("key-0")); err != nil {
		t.Fatal(err)
	}
	return m.Layout
}

// testStandaloneGetMany: once the driver knows a version's layout, a GetMany of 100
// keys is one pipeline (one write, one read) and nothing else, holding one HMGET per
// bucket the keys fall in and no other read (by each command the server executed, from
// INFO commandstats). A version in the plain layout is one MGET.
func testStandaloneGetMany(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	l := bucketedVersion(t, s, "gm", "v1")
	c := driver(s).Client().(*goredis.Client)
	trips := new(roundTrips)
	c.AddHook(trips)
	keys := askKeys(100)
	before := commandCalls(t, c)
	trips.singles.Store(0)
	vals, err := s.GetMany(ctx, "gm", "v1", keys)
	if err != nil {
		t.Fatal(err)
	}
	p, n := trips.pipelines.Load(), trips.singles.Load()
	after := commandCalls(t, c)
	checkAsked(t, vals)
	if p != 1 || n != 0 {
		t.Errorf("GetMany of 100 keys sent %d pipelines and %d single commands, want 1 and 0: one round trip", p, n)
	}
	want := distinctBuckets(l, keys)
	if got := after["hmget"] - before["hmget"]; got != want {
		t.Errorf("the server executed %d HMGETs, want %d: one per bucket of the 100 keys", got, want)
	}
	for _, cmd := range []string{"get", "mget", "hget", "hgetall"} {
		if got := after[cmd] - before[cmd]; got != 0 {
			t.Errorf("the server executed %d %s, want 0", got, strings.ToUpper(cmd))
		}
	}

	// The plain layout, asked for explicitly: one MGET.
	m := &writers.Manifest{Namespace: "gm", Version: "plain", State: writers.StateWriting, Layout: &writers.Layout{Kind: writers.LayoutPlain}}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRows(ctx, "gm", "plain", makeRows(0, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "gm", "plain", []byte("key-0")); err != nil {
		t.Fatal(err)
	}
	before = commandCalls(t, c)
	trips.pipelines.Store(0)
	trips.singles.Store(0)
	vals, err = s.GetMany(ctx, "gm", "plain", keys)
	if err != nil {
		t.Fatal(err)
	}
	p, n = trips.pipelines.Load(), trips.singles.Load()
	after = commandCalls(t, c)
	checkAsked(t, vals)
	if p != 1 || n != 0 {
		t.Errorf("plain layout: GetMany sent %d pipelines and %d single commands, want 1 and 0", p, n)
	}
	if got := after["mget"] - before["mget"]; got != 1 {
		t.Errorf("plain layout: %d MGETs, want 1", got)
	}
}

// testClusterGetMany: once the driver knows a version's layout, a GetMany of 100 keys
// spread over three masters sends each master at most one pipeline and no single
// command (counted by a hook on each master's client), and the masters together execute
// exactly one HMGET per bucket the keys fall in and no other read (counted by each
// server's INFO commandstats): nothing was resent, nothing asked one key at a time. One
// pipeline per master is one round trip per slot group: go-redis sends them at once.
func testClusterGetMany(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	l := bucketedVersion(t, s, "gm", "v1")
	var (
		mu      sync.Mutex
		masters []*goredis.Client
	)
	err := driver(s).Client().(*goredis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		masters = append(masters, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(masters) != 3 {
		t.Fatalf("%d masters, want 3", len(masters))
	}
	trips := make([]*roundTrips, len(masters))
	before := make([]map[string]int64, len(masters))
	for i, c := range masters {
		trips[i] = new(roundTrips)
		c.AddHook(trips[i])
		before[i] = commandCalls(t, c)
		trips[i].singles.Store(0)
	}

	keys := askKeys(100)
	vals, err := s.GetMany(ctx, "gm", "v1", keys)
	if err != nil {
		t.Fatal(err)
	}
	checkAsked(t, vals)
	singles := make([]int64, len(masters))
	for i := range masters {
		singles[i] = trips[i].singles.Load()
	}

	var hmgets, others, pipelines int64
	for i, c := range masters {
		addr, r := c.Options().Addr, trips[i]
		after := commandCalls(t, c)
		if p, n := r.pipelines.Load(), singles[i]; p > 1 || n > 0 {
			t.Errorf("master %s: GetMany sent %d pipelines and %d single commands, want at most one pipeline and none", addr, p, n)
		}
		if got, want := after["hmget"]-before[i]["hmget"], r.reads.Load(); got != want {
			t.Errorf("master %s executed %d HMGETs, the client sent it %d reads", addr, got, want)
		}
		hmgets += after["hmget"] - before[i]["hmget"]
		for _, cmd := range []string{"get", "mget", "hget"} {
			others += after[cmd] - before[i][cmd]
		}
		pipelines += r.pipelines.Load()
	}
	if want := distinctBuckets(l, keys); hmgets != want || others != 0 {
		t.Errorf("the masters executed %d HMGETs and %d other reads, want %d (one per bucket) and 0", hmgets, others, want)
	}
	if pipelines != 3 {
		t.Errorf("GetMany sent %d pipelines, want 3: one to each master", pipelines)
	}
}

// testOldLayout: a version written before layouts existed — a manifest without a
// layout and one Redis key per row, written here with raw commands exactly as the old
// driver did (HSET of the manifest, SETs of sr:NS:VERSION:KEY) — is read key by key and
// in batches through the current driver, counted exactly, flipped, and removed by gc
// beside a new bucketed version of the same namespace.
func testOldLayout(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	const n = 2000
	c := driver(s).Client()
	old := map[string]any{"namespace": "old", "version": "v1", "job": "old", "state": "complete", "encoding": "json",
		"started_at": time.Now().UTC(), "completed_at": time.Now().UTC(), "rows_read": n, "rows_written": n}
	data, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, "{sr:old}:manifests", "v1", data).Err(); err != nil {
		t.Fatal(err)
	}
	rows := makeRows(0, n)
	pipe := c.Pipeline()
	for i, k := range rows.Keys {
		pipe.Set(ctx, "sr:old:v1:"+string(k), rows.Values[i], 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	m, err := s.Manifest(ctx, "old", "v1")
	if err != nil || m.Layout != nil {
		t.Fatalf("old manifest: layout %+v, %v; want none", m.Layout, err)
	}
	for i, k := range rows.Keys {
		v, err := s.Get(ctx, "old", "v1", k)
		if err != nil || string(v) != string(rows.Values[i]) {
			t.Fatalf("Get(%s) = %q, %v; want %q", k, v, err, rows.Values[i])
		}
	}
	if _, err := s.Get(ctx, "old", "v1", []byte("nokey")); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Get(nokey) error = %v, want ErrNotFound", err)
	}
	vals, err := s.GetMany(ctx, "old", "v1", askKeys(300))
	if err != nil {
		t.Fatal(err)
	}
	checkAsked(t, vals)
	if got, err := s.CountKeys(ctx, "old", "v1"); err != nil || got != n {
		t.Fatalf("CountKeys(old v1) = %d, %v; want %d", got, err, n)
	}
	if _, err := writers.Flip(ctx, s, "old", "v1"); err != nil {
		t.Fatal(err)
	}
	// The flip rewrote the manifest (its history): it must still have no layout.
	if m, err := s.Manifest(ctx, "old", "v1"); err != nil || m.Layout != nil {
		t.Fatalf("old manifest after the flip: layout %+v, %v; want none", m.Layout, err)
	}
	if v, err := s.Get(ctx, "old", "v1", rows.Keys[7]); err != nil || string(v) != string(rows.Values[7]) {
		t.Fatalf("Get after the flip = %q, %v", v, err)
	}

	writeVersion(t, s, "old", "v2", 500, writers.StateComplete)
	if _, err := writers.Flip(ctx, s, "old", "v2"); err != nil {
		t.Fatal(err)
	}
	removed, err := writers.GC(ctx, s, "old", 0, time.Hour, time.Now())
	if err != nil || len(removed) != 1 || removed[0] != "v1" {
		t.Fatalf("GC = %q, %v; want [v1]", removed, err)
	}
	left := 0
	err = forEachMaster(ctx, c, func(ctx context.Context, c *goredis.Client) error {
		keys, err := c.Keys(ctx, "sr:old:v1:*").Result()
		left += len(keys)
		return err
	})
	if err != nil || left != 0 {
		t.Errorf("after gc, %d keys of the old version are left (%v), want 0", left, err)
	}
	if got, err := s.CountKeys(ctx, "old", "v2"); err != nil || got != 500 {
		t.Errorf("CountKeys(v2) = %d, %v; want 500", got, err)
	}
}

// forEachMaster calls fn on the server, or on every master of a cluster, one at a time.
func forEachMaster(ctx context.Context, c goredis.UniversalClient, fn func(ctx context.Context, c *goredis.Client) error) error {
	if cc, ok := c.(*goredis.ClusterClient); ok {
		var mu sync.Mutex
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(ctx, c)
		})
	}
	return fn(ctx, c.(*goredis.Client))
}

// testBucketsStayListpacks: with the server's limits lowered to what redis.conf ships
// (128 entries, 64 bytes), a version created with its row count gets buckets that all
// stay listpacks once every row is written (twice: a resumed run rewrites rows), and
// the manifest's note names the limits; CountKeys is exact and every key reads back.
func testBucketsStayListpacks(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	c := driver(s).Client().(*goredis.Client)
	for name, v := range map[string]string{"hash-max-listpack-entries": "128", "hash-max-listpack-value": "64"} {
		old, err := c.ConfigGet(ctx, name).Result()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ConfigSet(ctx, name, v).Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.ConfigSet(context.Background(), name, old[name]) })
	}
	const n = 30_000
	m := &writers.Manifest{Namespace: "lp", Version: "v1", State: writers.StateWriting, ExpectedRows: n,
		Encoding: writers.EncodingJSON, Outputs: []writers.Output{{Name: "score", Width: 1}}}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.Layout == nil || m.Layout.Kind != writers.LayoutHashBuckets {
		t.Fatalf("layout = %+v, want hash-buckets", m.Layout)
	}
	if !strings.Contains(m.Layout.Note, "hash-max-listpack-entries 128") {
		t.Errorf("layout note %q does not name the server's entry limit", m.Layout.Note)
	}
	if per := float64(n) / float64(m.Layout.Buckets); per < 50 || per > 128 {
		t.Errorf("%d buckets for %d rows: %.0f rows each, want between 50 and 128", m.Layout.Buckets, n, per)
	}
	rows := writers.Rows{}
	for i := range n {
		rows.Keys = append(rows.Keys, fmt.Appendf(nil, "u%09d", i))
		rows.Values = append(rows.Values, fmt.Appendf(nil, `{"score":0.%08d}`, i))
	}
	for range 2 {
		if err := s.WriteRows(ctx, "lp", "v1", rows); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.CountKeys(ctx, "lp", "v1"); err != nil || got != n {
		t.Fatalf("CountKeys = %d, %v; want %d", got, err, n)
	}
	vals, err := s.GetMany(ctx, "lp", "v1", rows.Keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if string(v) != string(rows.Values[i]) {
			t.Fatalf("GetMany[%d] = %q, want %q", i, v, rows.Values[i])
		}
	}
	keys, err := c.Keys(ctx, "sr:lp:v1#*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(keys)) != m.Layout.Buckets {
		t.Errorf("%d bucket keys, want %d", len(keys), m.Layout.Buckets)
	}
	pipe := c.Pipeline()
	enc := make([]*goredis.StringCmd, len(keys))
	for i, k := range keys {
		enc[i] = pipe.ObjectEncoding(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, e := range enc {
		if e.Val() != "listpack" {
			t.Errorf("bucket %s is a %s, want a listpack", keys[i], e.Val())
		}
	}
	// A model whose JSON values can outgrow the value limit still gets buckets, and the
	// layout's note says that those holding such values are hash tables.
	wide := &writers.Manifest{Namespace: "lp", Version: "wide", State: writers.StateWriting, ExpectedRows: 1000,
		Encoding: writers.EncodingJSON, Outputs: []writers.Output{{Name: "scores", Width: 16}}}
	if err := s.PutManifest(ctx, wide); err != nil {
		t.Fatal(err)
	}
	if wide.Layout == nil || wide.Layout.Kind != writers.LayoutHashBuckets || !strings.Contains(wide.Layout.Note, "exceed the value limit") {
		t.Errorf("layout for values of 16 floats in JSON = %+v, want hash-buckets with a note on the value limit", wide.Layout)
	}
	if err := s.DeleteVersion(ctx, "lp", "v1"); err != nil {
		t.Fatal(err)
	}
	if left, err := c.Keys(ctx, "sr:lp:v1#*").Result(); err != nil || len(left) != 0 {
		t.Errorf("after DeleteVersion, %d bucket keys are left (%v), want 0", len(left), err)
	}
}

// testReleaseAnnounced: a release swap on one handle publishes exactly one message on
// the flip channel, {"namespace":NS,"release":true}, which reaches WatchFlips on another
// handle with its namespace; a swap that loses its compare-and-swap publishes nothing.
func testReleaseAnnounced(t *testing.T, url string) {
	ctx := context.Background()
	s := openRedis(t, url)
	defer s.Close()
	watcher, err := redis.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()

	sub := driver(s).Client().Subscribe(ctx, redis.FlipChannel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	ch := sub.Channel()
	got := make(chan string, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watcher.WatchFlips(wctx, func(ns string) { got <- ns })
	waitSubscribers(t, driver(s), 2)

	rel := &writers.Release{ID: "r1", Namespace: "relpub", Mode: writers.ModeCanary, Live: "v1", Candidate: "v2",
		WeightPercent: 10, State: writers.ReleaseRunning}
	stale := *rel
	if err := s.SwapRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if err := s.SwapRelease(ctx, &stale); !errors.Is(err, writers.ErrConflict) {
		t.Fatalf("SwapRelease from revision 0 over revision 1: %v, want ErrConflict", err)
	}
	select {
	case msg := <-ch:
		if want := `{"namespace":"relpub","release":true}`; msg.Payload != want {
			t.Errorf("release message = %s, want %s", msg.Payload, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no release message within 5s")
	}
	select {
	case g := <-got:
		if g != "relpub" {
			t.Errorf("WatchFlips got namespace %q, want relpub", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchFlips got nothing within 5s of a release swap")
	}
	select {
	case msg := <-ch:
		t.Errorf("second message %q, want one: a lost compare-and-swap announces nothing", msg.Payload)
	case g := <-got:
		t.Errorf("WatchFlips got %q a second time, want once", g)
	case <-time.After(200 * time.Millisecond):
	}
}

// testReleaseKeys: counters live CountsTTL after their last add, under the documented
// key; a release key holding something that is not a record is an error, not a conflict,
// and is left alone.
func testReleaseKeys(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	c := driver(s).Client()
	if err := s.AddCounts(ctx, "cnt", "r1", 7, map[string]int64{"live.requests": 3}); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.TTL(ctx, "{sr:cnt}:rc:r1:7").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl > redis.CountsTTL || ttl < redis.CountsTTL-time.Minute {
		t.Errorf("TTL of the counters = %s, want about %s", ttl, redis.CountsTTL)
	}

	if err := c.Set(ctx, "{sr:bad}:release", "not a record", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err = s.SwapRelease(ctx, &writers.Release{ID: "r1", Namespace: "bad", Revision: 0})
	if err == nil || errors.Is(err, writers.ErrConflict) || !strings.Contains(err.Error(), "{sr:bad}:release") {
		t.Errorf("SwapRelease over a corrupt record: %v, want an error naming {sr:bad}:release", err)
	}
	if v, _ := c.Get(ctx, "{sr:bad}:release").Result(); v != "not a record" {
		t.Errorf("the corrupt record became %q, want it untouched", v)
	}
}

// testGetChainOneRoundTrip: GetChain down a chain of three versions sends one pipeline
// (standalone) and no single command, and answers each key from the newest level.
func testGetChainOneRoundTrip(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	writeVersion(t, s, "gc3", "v1", 300, writers.StateComplete)
	for i, v := range []string{"v2", "v3"} {
		m := &writers.Manifest{Namespace: "gc3", Version: v, State: writers.StateWriting, Mode: writers.VersionIncremental,
			Base: []string{"v1", "v2"}[i], Depth: i + 2}
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		rows := writers.Rows{Keys: [][]byte{fmt.Appendf(nil, "key-%d", i)}, Values: [][]byte{[]byte(v)}}
		if err := s.WriteRows(ctx, "gc3", v, rows); err != nil {
			t.Fatal(err)
		}
		m.State = writers.StateComplete
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	trips := new(roundTrips)
	driver(s).Client().(*goredis.Client).AddHook(trips)
	// Warm the connection first: a new one sends its own set-up pipeline.
	if _, _, err := s.GetChain(ctx, "gc3", []string{"v3", "v2", "v1"}, askKeys(3)); err != nil {
		t.Fatal(err)
	}
	trips.pipelines.Store(0)
	trips.singles.Store(0)
	vals, from, err := s.GetChain(ctx, "gc3", []string{"v3", "v2", "v1"}, askKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	if p, n := trips.pipelines.Load(), trips.singles.Load(); p != 1 || n != 0 {
		t.Errorf("GetChain of 3 levels sent %d pipelines and %d single commands, want 1 and 0", p, n)
	}
	if string(vals[0]) != "v2" || from[0] != 1 || string(vals[1]) != "" || from[1] != -1 || from[2] != 2 {
		t.Errorf("GetChain = %q from %v, want key-0 from v2 (level 1), nokey-1 none, key-2 from v1", vals[:3], from[:3])
	}
	vals[0] = nil // v2's key-0 differs from makeRows'
	for i := range vals {
		if i%3 != 1 && i != 0 {
			if want := fmt.Sprintf(`{"score":0.%034d}`, i); string(vals[i]) != want {
				t.Errorf("GetChain[%d] = %q, want %q", i, vals[i], want)
			}
		}
	}
}

func TestRedisGetChainIsOneRoundTrip(t *testing.T) {
	url := redistest.Standalone(t)
	testGetChainOneRoundTrip(t, openRedis(t, url))
}

// testClusterGetChain: a GetChain of 100 keys down 3 versions sends each master at most
// one pipeline and no single command.
func testClusterGetChain(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	writeVersion(t, s, "gcc", "v1", 300, writers.StateComplete)
	for i, v := range []string{"v2", "v3"} {
		m := &writers.Manifest{Namespace: "gcc", Version: v, State: writers.StateWriting, Mode: writers.VersionIncremental,
			Base: []string{"v1", "v2"}[i], Depth: i + 2}
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteRows(ctx, "gcc", v, makeRows(i*10, i*10+10)); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: the first read of a version in a process also reads its manifest (its
	// layout), once.
	if _, _, err := s.GetChain(ctx, "gcc", []string{"v3", "v2", "v1"}, askKeys(3)); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		trips []*roundTrips
	)
	err := driver(s).Client().(*goredis.ClusterClient).ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		r := new(roundTrips)
		c.AddHook(r)
		mu.Lock()
		defer mu.Unlock()
		trips = append(trips, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	vals, _, err := s.GetChain(ctx, "gcc", []string{"v3", "v2", "v1"}, askKeys(100))
	if err != nil {
		t.Fatal(err)
	}
	checkAsked(t, vals)
	var pipelines int64
	for _, r := range trips {
		if p, n := r.pipelines.Load(), r.singles.Load(); p > 1 || n > 0 {
			t.Errorf("a master got %d pipelines and %d single commands, want at most one pipeline and none", p, n)
		}
		pipelines += r.pipelines.Load()
	}
	if pipelines != 3 {
		t.Errorf("GetChain sent %d pipelines, want 3: one to each master", pipelines)
	}
}

// testStrippedFields: a version created with a key prefix (from the footers) stores its
// keys' fields without it, and still stores and reads exactly the keys that lack it
// (statistics can be wrong), the key equal to the prefix, and keys that begin with
// part of it; CountKeys counts each once.
func testStrippedFields(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	m := &writers.Manifest{Namespace: "sp", Version: "v1", State: writers.StateWriting, ExpectedRows: 500, KeyPrefix: "user_"}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.Layout == nil || m.Layout.Strip != "user_" {
		t.Fatalf("layout = %+v, want strip %q", m.Layout, "user_")
	}
	var rows writers.Rows
	add := func(k string) {
		rows.Keys = append(rows.Keys, []byte(k))
		rows.Values = append(rows.Values, fmt.Appendf(nil, "value of %s", k))
	}
	for i := range 400 {
		add(fmt.Sprintf("user_%d", i))
	}
	for _, k := range []string{"user_", "user", "use", "u", "x", "ÿuser_1", "1", "_1", "user__1"} {
		add(k)
	}
	if err := s.WriteRows(ctx, "sp", "v1", rows); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CountKeys(ctx, "sp", "v1"); err != nil || got != int64(len(rows.Keys)) {
		t.Fatalf("CountKeys = %d, %v; want %d", got, err, len(rows.Keys))
	}
	for i, k := range rows.Keys {
		v, err := s.Get(ctx, "sp", "v1", k)
		if err != nil || string(v) != string(rows.Values[i]) {
			t.Errorf("Get(%q) = %q, %v; want %q", k, v, err, rows.Values[i])
		}
	}
	asked := append(slices.Clone(rows.Keys), []byte("user_9999"), []byte("nobody"))
	vals, err := s.GetMany(ctx, "sp", "v1", asked)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		var want []byte
		if i < len(rows.Values) {
			want = rows.Values[i]
		}
		if string(v) != string(want) || (v == nil) != (want == nil) {
			t.Errorf("GetMany[%q] = %q, want %q", asked[i], v, want)
		}
	}
	// The fields really are shorter: no field begins with "user_".
	var fields int
	err = forEachMaster(ctx, driver(s).Client(), func(ctx context.Context, c *goredis.Client) error {
		keys, err := c.Keys(ctx, "sr:sp:v1#*").Result()
		if err != nil {
			return err
		}
		for _, k := range keys {
			fs, err := c.HKeys(ctx, k).Result()
			if err != nil {
				return err
			}
			for _, f := range fs {
				fields++
				if strings.HasPrefix(f, "user_") {
					t.Errorf("bucket %s has field %q, want the prefix stripped", k, f)
				}
			}
		}
		return nil
	})
	if err != nil || fields != len(rows.Keys) {
		t.Errorf("%d fields in the buckets (%v), want %d", fields, err, len(rows.Keys))
	}
}

// testConfigRefused: a user whose ACL forbids CONFIG (as managed services do) still
// gets bucketed versions, sized for redis.conf's limits, and the layout's note says
// they were assumed.
func testConfigRefused(t *testing.T, url string) {
	ctx := context.Background()
	admin := openRedis(t, url)
	defer admin.Close()
	c := driver(admin).Client()
	if err := c.Do(ctx, "ACL", "SETUSER", "noconfig", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", "noconfig") })
	s, err := redis.Open(ctx, strings.Replace(url, "redis://", "redis://noconfig:pw@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &writers.Manifest{Namespace: "nc", Version: "v1", State: writers.StateWriting, ExpectedRows: 1_000_000}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.Layout == nil || m.Layout.Kind != writers.LayoutHashBuckets || !strings.Contains(m.Layout.Note, "hash-max-listpack-entries 128") ||
		!strings.Contains(m.Layout.Note, "assumed") {
		t.Errorf("layout = %+v, want hash-buckets for 128 entries, assumed", m.Layout)
	}
	if per := 1e6 / float64(m.Layout.Buckets); per > 100 {
		t.Errorf("%d buckets: %.0f rows each, want well under 128", m.Layout.Buckets, per)
	}
}

// testLayoutRecord: the first layout recorded for a version is the one every later
// chooser adopts (the shards of one version creating it at once), and a manifest
// rewritten without its layout (by a binary that predates layouts, during an upgrade)
// leaves the version bucketed: every key reads, CountKeys counts them, gc removes them.
func testLayoutRecord(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	defer s.Close()
	writeVersion(t, s, "lr", "v1", 3000, writers.StateComplete)
	m, err := s.Manifest(ctx, "lr", "v1")
	if err != nil || m.Layout == nil || m.Layout.Kind != writers.LayoutHashBuckets {
		t.Fatalf("manifest %+v, %v: want a bucketed layout", m, err)
	}
	// A second chooser of the same version, with other expectations, adopts the record.
	other := &writers.Manifest{Namespace: "lr", Version: "v1", ExpectedRows: 50_000_000}
	l, err := driver(s).ChooseLayout(ctx, other)
	if err != nil || l.Buckets != m.Layout.Buckets {
		t.Fatalf("a second ChooseLayout gave %+v, %v; want the recorded %d buckets", l, err, m.Layout.Buckets)
	}
	// An old binary's rewrite: the manifest's JSON without "layout".
	c := driver(s).Client()
	raw, err := c.HGet(ctx, "{sr:lr}:manifests", "v1").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "layout")
	stripped, _ := json.Marshal(fields)
	if err := c.HSet(ctx, "{sr:lr}:manifests", "v1", stripped).Err(); err != nil {
		t.Fatal(err)
	}
	// A new process (no cached layout) still reads it as bucketed.
	fresh, err := redis.Open(ctx, s.URL().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	keys := makeRows(0, 3000).Keys
	vals, err := fresh.GetMany(ctx, "lr", "v1", keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if want := fmt.Sprintf(`{"score":0.%034d}`, i); string(v) != want {
			t.Fatalf("GetMany[%d] = %q after the manifest lost its layout, want %q", i, v, want)
		}
	}
	if n, err := fresh.CountKeys(ctx, "lr", "v1"); err != nil || n != 3000 {
		t.Fatalf("CountKeys = %d, %v; want 3000", n, err)
	}
	if err := fresh.DeleteVersion(ctx, "lr", "v1"); err != nil {
		t.Fatal(err)
	}
	left, err := c.Keys(ctx, "sr:lr:v1#*").Result()
	if err != nil || len(left) != 0 {
		t.Fatalf("after gc %d buckets are left (%v), want none", len(left), err)
	}
	if n, _ := c.HLen(ctx, "{sr:lr}:layouts").Result(); n != 0 {
		t.Errorf("after gc the layout's record is still there")
	}
}
