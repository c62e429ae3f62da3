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

func TestServeAnswersAndStopsOnCancel(t *testing.T) {
	dir, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte("namespaces:\n  churn:\n    store: "+store+"\n    fallback: {default: computed}\n"), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	var stderr serveLog
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"serve", "--config", cfg, "--addr", "127.0.0.1:0"}, os.Stdout, &stderr)
	}()
	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			base = "http://" + m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line in the log:\n%s", stderr.String())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r, err := http.Get(base + "/readyz"); err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready after 10s")
		}
	}
	for key, source := range map[string]string{"u000000007": "precomputed", "nobody": "fallback:default"} {
		r, err := http.Get(base + "/v1/churn/" + key)
		if err != nil {
			t.Fatal(err)
		}
		var a map[string]any
		json.NewDecoder(r.Body).Decode(&a)
		r.Body.Close()
		if r.StatusCode != 200 || a["source"] != source {
			t.Errorf("GET %s: got %d %v, want 200 from %s", key, r.StatusCode, a, source)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit: got %d, want 0\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after cancel")
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
