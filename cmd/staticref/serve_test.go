package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	staticrefv1 "github.com/staticref/staticref/lookup/grpcapi/staticref/v1"
	"github.com/staticref/staticref/writers/redistest"
)

// serveLog is a log sink safe for the server's writes and the test's reads.
type serveLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *serveLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *serveLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs serve --config cfg on a free loopback port until it is ready, and
// returns its base URL, its log, and a function that stops it and returns the exit code.
func startServe(t *testing.T, cfg string) (base string, log *serveLog, stop func() int) {
	t.Helper()
	base, log, stop = listenServe(t, cfg)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r, err := http.Get(base + "/readyz"); err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("not ready after 10s:\n%s", log.String())
		}
	}
	return base, log, stop
}

// listenServe is startServe without waiting for readiness: it returns once serve listens
// (for HTTP: its log line says addr=, the gRPC one grpc=).
func listenServe(t *testing.T, cfg string) (base string, log *serveLog, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = &serveLog{}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"serve", "--config", cfg, "--addr", "127.0.0.1:0"}, os.Stdout, log)
	}()
	stop = func() int {
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(15 * time.Second):
			t.Fatal("serve did not stop after cancel")
			return -1
		}
	}
	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(10 * time.Second); base == ""; time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(log.String()); m != nil {
			base = "http://" + m[1]
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no listening line in the log:\n%s", log.String())
		}
	}
	return base, log, stop
}

// getSource GETs a key and returns the status and the answer's source.
func getSource(t *testing.T, base, ns, key string) (int, any) {
	t.Helper()
	r, err := http.Get(base + "/v1/" + ns + "/" + key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var a map[string]any
	json.NewDecoder(r.Body).Decode(&a)
	return r.StatusCode, a["source"]
}

func TestServeAnswersAndStopsOnCancel(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte("namespaces:\n  churn:\n    store: "+store+"\n    fallback: {default: computed}\n"), 0o644)

	base, log, stop := startServe(t, cfg)
	for key, source := range map[string]string{"u000000007": "precomputed", "nobody": "fallback:default"} {
		if status, got := getSource(t, base, "churn", key); status != 200 || got != source {
			t.Errorf("GET %s: got %d from %v, want 200 from %s", key, status, got, source)
		}
	}
	if code := stop(); code != 0 {
		t.Errorf("exit: got %d, want 0\n%s", code, log.String())
	}
}

func TestServeTheRenderedConfigWithTheStorePasswordFromTheEnvironment(t *testing.T) {
	const password = "hunter2-s3cret"
	url := redistest.Standalone(t)
	dir, job, _ := workspace(t, 200, "schedule: \"@daily\"\n")
	if code, _, stderr := staticref(t, "run", "--job", job, "--store", url); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	if err := redisClient(t, url).ConfigSet(context.Background(), "requirepass", password).Err(); err != nil {
		t.Fatal(err)
	}
	// What the Deployment mounts: k8s render writes --store into serve.yaml as it is.
	withPassword := strings.Replace(url, "redis://", "redis://:$(REDIS_PASSWORD)@", 1)
	code, out, stderr := staticref(t, "k8s", "render", "--job", job, "--store", withPassword)
	if code != 0 {
		t.Fatalf("k8s render: exit %d: %s", code, stderr)
	}
	var serveYAML string
	for _, doc := range strings.Split(out, "\n---\n") {
		var cm corev1.ConfigMap
		if yaml.Unmarshal([]byte(doc), &cm) == nil && cm.Kind == "ConfigMap" && cm.Name == "churn-serve" {
			serveYAML = cm.Data["serve.yaml"]
		}
	}
	if !strings.Contains(serveYAML, "$(REDIS_PASSWORD)") {
		t.Fatalf("serve.yaml: got %q, want the store URL with $(REDIS_PASSWORD)", serveYAML)
	}
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte(serveYAML), 0o644)

	t.Run("without the variable, serve names it and exits 2", func(t *testing.T) {
		t.Setenv("REDIS_PASSWORD", "") // restored after the test
		os.Unsetenv("REDIS_PASSWORD")
		code, _, stderr := staticref(t, "serve", "--config", cfg)
		if code != 2 || !strings.Contains(stderr, "namespaces.churn.store: environment variable REDIS_PASSWORD is not set") {
			t.Errorf("got exit %d, %q; want 2 naming namespaces.churn.store and REDIS_PASSWORD", code, stderr)
		}
	})

	t.Run("with a wrong password, serve fails without showing it", func(t *testing.T) {
		for _, wrong := range []string{"not-the-password", "not/the@password"} {
			t.Setenv("REDIS_PASSWORD", wrong)
			code, _, stderr := staticref(t, "serve", "--config", cfg)
			if code != 1 || !strings.Contains(stderr, "refused the credentials") || strings.Contains(stderr, "not-the") || strings.Contains(stderr, "not/the") {
				t.Errorf("%s: got exit %d, %q; want exit 1, the credentials refused, and no password shown", wrong, code, stderr)
			}
		}
	})

	t.Run("with the Secret's password in the environment, serve answers", func(t *testing.T) {
		t.Setenv("REDIS_PASSWORD", password)
		base, log, stop := startServe(t, cfg)
		if status, got := getSource(t, base, "churn", "u000000007"); status != 200 || got != "precomputed" {
			t.Errorf("GET: got %d from %v, want 200 from precomputed", status, got)
		}
		if code := stop(); code != 0 {
			t.Errorf("exit: got %d, want 0\n%s", code, log.String())
		}
		if strings.Contains(log.String(), password) {
			t.Errorf("the log shows the password:\n%s", log.String())
		}
	})
}

// TestServeStartsWithOneStoreDown: a namespace whose store cannot be reached at start
// is reported not ready while the others are served; a malformed store URL is still a
// config error (TestServeBadConfigIsExit2).
func TestServeStartsWithOneStoreDown(t *testing.T) {
	dir, job, store := workspace(t, 200, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	down := redistest.StartStandalone(t)
	down.Kill()
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte("poll_interval: 50ms\nstore_timeout: 200ms\nnamespaces:\n  churn:\n    store: "+store+
		"\n  scores:\n    store: "+down.URL()+"\n"), 0o644)

	base, log, stop := listenServe(t, cfg)
	var ready struct {
		Namespaces map[string]struct {
			Ready  bool   `json:"ready"`
			Reason string `json:"reason"`
		} `json:"namespaces"`
	}
	status := 0
	for deadline := time.Now().Add(10 * time.Second); !ready.Namespaces["churn"].Ready; time.Sleep(10 * time.Millisecond) {
		r, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		status = r.StatusCode
		json.NewDecoder(r.Body).Decode(&ready)
		r.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("churn not ready after 10s:\n%s", log.String())
		}
	}
	if status != 503 || ready.Namespaces["scores"].Ready || ready.Namespaces["scores"].Reason == "" {
		t.Errorf("readyz: got %d %+v, want 503 with scores not ready, and why", status, ready)
	}
	if status, got := getSource(t, base, "churn", "u000000007"); status != 200 || got != "precomputed" {
		t.Errorf("GET churn: got %d from %v, want 200 from precomputed", status, got)
	}
	if status, _ := getSource(t, base, "scores", "u000000007"); status != 503 {
		t.Errorf("GET scores: got %d, want 503", status)
	}
	if !regexp.MustCompile(`level=WARN .*namespace=scores`).MatchString(log.String()) {
		t.Errorf("no WARN line for namespace scores:\n%s", log.String())
	}
	if code := stop(); code != 0 {
		t.Errorf("exit: got %d, want 0\n%s", code, log.String())
	}
}

func TestServeBadConfigIsExit2(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte("namespaces:\n  churn:\n    store: mysql://x\n    on_stale: maybe\n  Bad/NS:\n    store: pebble:x\nbogus: 1\n"), 0o644)
	code, _, stderr := staticref(t, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "bogus") {
		t.Errorf("unknown field: got exit %d, %s", code, stderr)
	}
	os.WriteFile(cfg, []byte("namespaces:\n  churn:\n    store: mysql://x\n    on_stale: maybe\n  Bad/NS:\n    store: pebble:x\n"), 0o644)
	code, _, stderr = staticref(t, "serve", "--config", cfg)
	for _, want := range []string{"namespaces.churn.store", "namespaces.churn.on_stale", "namespaces.Bad/NS"} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("got exit %d, stderr %q; want 2 naming %s", code, stderr, want)
		}
	}
	if code, _, _ := staticref(t, "serve"); code != 2 {
		t.Errorf("no --config: got exit %d, want 2", code)
	}
}

func TestServeAnswersOverGRPCWithGRPCAddr(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte("grpc_addr: 127.0.0.1:0\nnamespaces:\n  churn:\n    store: "+store+"\n    fallback: {default: computed}\n"), 0o644)
	base, log, stop := startServe(t, cfg)
	defer stop()
	m := regexp.MustCompile(`grpc=(127\.0\.0\.1:\d+)`).FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no gRPC listening line in the log:\n%s", log.String())
	}
	conn, err := grpc.NewClient(m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := staticrefv1.NewLookupClient(conn)
	for key, source := range map[string]string{"u000000007": "precomputed", "nobody": "fallback:default"} {
		a, err := client.Get(context.Background(), &staticrefv1.GetRequest{Namespace: "churn", Key: key})
		if _, want := getSource(t, base, "churn", key); err != nil || a.Source != source || want != source {
			t.Errorf("gRPC Get %s: got %v %v, want source %s as HTTP's %v", key, a, err, source, want)
		}
	}
	_, err = client.Get(context.Background(), &staticrefv1.GetRequest{Namespace: "other", Key: "k"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("an unknown namespace: got %v, want NotFound", err)
	}
}
