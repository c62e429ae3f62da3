package lookup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/redistest"
)

// readyAnswer is the body of /readyz.
type readyAnswer struct {
	status     int
	raw        string
	Ready      bool `json:"ready"`
	Namespaces map[string]struct {
		Ready     bool   `json:"ready"`
		Reason    string `json:"reason"`
		Live      string `json:"live"`
		LastCheck string `json:"last_check"`
	} `json:"namespaces"`
}

func readyz(t testing.TB, base string) readyAnswer {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := readyAnswer{status: resp.StatusCode, raw: string(b)}
	json.Unmarshal(b, &r)
	return r
}

// eventually polls cond until it holds and returns how long that took, failing the test
// after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: still not so after %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// logBuffer is a log sink safe for the service's writes and the test's reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openStore(t testing.TB, url string) *writers.Store {
	t.Helper()
	s, err := writers.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func redisClient(t testing.TB, url string) *goredis.Client {
	t.Helper()
	opt, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// redisPid is the process id of the redis-server at url, from INFO server.
func redisPid(t testing.TB, url string) int {
	t.Helper()
	info, err := redisClient(t, url).Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`process_id:(\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no process_id in INFO server:\n%s", info)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// fastChecks is the service config of the fault tests: checks every 50ms, store calls
// bounded at 200ms.
func fastChecks(namespaces ...string) string {
	cfg := "poll_interval: 50ms\nstore_timeout: 200ms\nnamespaces:\n"
	for i := 0; i+1 < len(namespaces); i += 2 {
		cfg += "  " + namespaces[i] + ":\n    store: " + namespaces[i+1] + "\n"
	}
	return cfg
}

func TestReadyzIsReadyOnlyWhileEveryNamespaceCanAnswer(t *testing.T) {
	t.Run("a namespace with no live version is not ready", func(t *testing.T) {
		url := redistest.Standalone(t)
		publish(t, openStore(t, url), true) // complete, never made live
		_, base := startService(t, fastChecks("churn", url), quiet)
		eventually(t, 10*time.Second, "the service has read the (absent) live pointer", func() bool {
			e, _ := call(t, "GET", base+"/v1/churn/u000000001", "").body["error"].(map[string]any)
			msg, _ := e["message"].(string)
			return strings.Contains(msg, "has no live version")
		})
		r := readyz(t, base)
		if ns := r.Namespaces["churn"]; r.status != 503 || r.Ready || ns.Ready || ns.Reason == "" || ns.LastCheck == "" {
			t.Errorf("got %d %s, want 503 with churn not ready, a reason and its last check", r.status, r.raw)
		}
	})

	t.Run("a store that goes down, comes back, then restarts empty", func(t *testing.T) {
		srv := redistest.StartStandalone(t) // append-only: a restart keeps the data
		m := publish(t, openStore(t, srv.URL()), false)
		_, base := service(t, fastChecks("churn", srv.URL()))
		r := readyz(t, base)
		if ns := r.Namespaces["churn"]; r.status != 200 || !r.Ready || !ns.Ready || ns.Live != m.Version || ns.LastCheck == "" {
			t.Fatalf("up: got %d %s, want 200 with churn ready on %s and its last check", r.status, r.raw, m.Version)
		}

		srv.Kill()
		took := eventually(t, 10*time.Second, "/readyz is 503 with the store down", func() bool {
			r = readyz(t, base)
			return r.status == 503 && !r.Namespaces["churn"].Ready
		})
		t.Logf("not ready %s after the store went down: %s", took.Round(time.Millisecond), r.raw)
		if strings.Contains(r.raw, "127.0.0.1") || strings.Contains(r.raw, "refused") {
			t.Errorf("readiness echoes the internal cause: %s", r.raw)
		}

		srv.Restart()
		eventually(t, 10*time.Second, "/readyz is 200 with the store back", func() bool { return readyz(t, base).status == 200 })

		if err := redisClient(t, srv.URL()).FlushAll(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		srv.Restart() // comes back empty: FLUSHALL reached the append-only file
		eventually(t, 10*time.Second, "/readyz is 503 with the store empty", func() bool {
			r = readyz(t, base)
			return r.status == 503 && !r.Namespaces["churn"].Ready
		})
		if reason := r.Namespaces["churn"].Reason; !strings.Contains(reason, "no live version") {
			t.Errorf("reason: got %q, want it to say there is no live version", reason)
		}
		if g := call(t, "GET", base+"/v1/churn/u000000003", ""); g.status != 503 {
			t.Errorf("GET after the empty restart: got %d %s, want 503", g.status, g.raw)
		}
	})
}

func TestAStoreDownAtStartTakesOnlyItsOwnNamespace(t *testing.T) {
	healthy := redistest.Standalone(t)
	churn := publish(t, openStore(t, healthy), false)
	dead := redistest.StartStandalone(t)
	ds, err := writers.Open(context.Background(), dead.URL())
	if err != nil {
		t.Fatal(err)
	}
	scores := publishAs(t, ds, "scores", false)
	ds.Close()
	dead.Kill()

	var logs logBuffer
	_, base := startService(t, fastChecks("churn", healthy, "scores", dead.URL()), slog.New(slog.NewTextHandler(&logs, nil)))

	var r readyAnswer
	eventually(t, 10*time.Second, "churn is ready", func() bool {
		r = readyz(t, base)
		return r.Namespaces["churn"].Ready
	})
	if ns := r.Namespaces["scores"]; r.status != 503 || r.Ready || ns.Ready || ns.Reason == "" {
		t.Errorf("readyz: got %d %s, want 503 with scores not ready, and why", r.status, r.raw)
	}
	if strings.Contains(r.raw, dead.Addr()) {
		t.Errorf("readiness shows the store's address: %s", r.raw)
	}
	if g := call(t, "GET", base+"/v1/churn/u000000001", ""); g.status != 200 || g.body["version"] != churn.Version {
		t.Errorf("GET churn: got %d %s, want 200 from %s", g.status, g.raw, churn.Version)
	}
	g := call(t, "GET", base+"/v1/scores/u000000001", "")
	if e, _ := g.body["error"].(map[string]any); g.status != 503 || e["code"] != "unavailable" || strings.Contains(g.raw, dead.Addr()) {
		t.Errorf("GET scores: got %d %s, want 503 unavailable without the store's address", g.status, g.raw)
	}
	if l := logs.String(); !regexp.MustCompile(`level=WARN .*namespace=scores`).MatchString(l) {
		t.Errorf("no WARN line for namespace scores in the log:\n%s", l)
	}
	met := call(t, "GET", base+"/metrics", "").raw
	for _, want := range []string{`staticref_namespace_ready{namespace="churn"} 1`, `staticref_namespace_ready{namespace="scores"} 0`} {
		if !strings.Contains(met, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	dead.Restart()
	took := eventually(t, 15*time.Second, "/readyz is 200 once the store is back", func() bool { return readyz(t, base).status == 200 })
	t.Logf("ready %s after the store came back", took.Round(time.Millisecond))
	if g := call(t, "GET", base+"/v1/scores/u000000001", ""); g.status != 200 || g.body["version"] != scores.Version {
		t.Errorf("GET scores after the store came back: got %d %s, want 200 from %s", g.status, g.raw, scores.Version)
	}
}

func TestShutdownStopsRetryingAStoreThatIsDown(t *testing.T) {
	dead := redistest.StartStandalone(t)
	dead.Kill()
	dir := t.TempDir()
	path := filepath.Join(dir, "serve.yaml")
	os.WriteFile(path, []byte(fastChecks("churn", dead.URL())), 0o644)
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("New with the store down: %v, want a service that retries", err)
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	eventually(t, 10*time.Second, "the service answers", func() bool {
		return readyz(t, "http://"+ln.Addr().String()).status == 503
	})
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		t.Logf("Run returned %s after cancel", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("Run still retrying the store 5s after cancel")
	}
}

// TestStoreTimeoutBoundsEveryCallToAHungRedis: a redis-server that stops answering
// (SIGSTOP: connections are accepted by the kernel, nothing is ever read) must cost a
// request store_timeout, not go-redis's own 5s read timeout.
func TestStoreTimeoutBoundsEveryCallToAHungRedis(t *testing.T) {
	url := redistest.Standalone(t)
	m := publish(t, openStore(t, url), false)
	pid := redisPid(t, url)
	_, base := service(t, fastChecks("churn", url))
	if g := call(t, "GET", base+"/v1/churn/u000000001", ""); g.status != 200 {
		t.Fatalf("before: got %d %s", g.status, g.raw)
	}

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume) // before the service and the server are stopped
	took := eventually(t, 5*time.Second, "/readyz is 503 with the store hung", func() bool { return readyz(t, base).status == 503 })
	t.Logf("not ready %s after the store hung", took.Round(time.Millisecond))

	const bound = time.Second // store_timeout 200ms, and slack for a loaded machine
	tests := []struct {
		name, method, path, body string
		status                   int
	}{
		{"an uncached key is 503", "GET", "/v1/churn/u000000002", "", 503},
		{"another uncached key is 503", "GET", "/v1/churn/u000000003", "", 503},
		{"a batch of uncached keys is 503", "POST", "/v1/churn:batchGet", `{"keys":["u000000004","u000000005"]}`, 503},
		{"the namespace status is 503", "GET", "/v1/churn", "", 503},
		{"a cached key is still answered", "GET", "/v1/churn/u000000001", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := call(t, tt.method, base+tt.path, tt.body)
			took := time.Since(start)
			t.Logf("%d in %s", r.status, took.Round(time.Millisecond))
			if r.status != tt.status || took > bound {
				t.Errorf("got %d %s in %s, want %d within %s", r.status, r.raw, took, tt.status, bound)
			}
		})
	}
	start := time.Now()
	if r := readyz(t, base); r.status != 503 || time.Since(start) > bound {
		t.Errorf("readyz: got %d in %s, want 503 at once", r.status, time.Since(start))
	}

	resume()
	eventually(t, 10*time.Second, "/readyz is 200 with the store answering again", func() bool { return readyz(t, base).status == 200 })
	if g := call(t, "GET", base+"/v1/churn/u000000006", ""); g.status != 200 || g.body["version"] != m.Version {
		t.Errorf("after SIGCONT: got %d %s, want 200 from %s", g.status, g.raw, m.Version)
	}
}
