package ui_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
	"github.com/staticref/staticref/writers/pebble"
)

const (
	hostile = `<script>alert(1)</script>`
	token   = "s3cret-admin-token-0123456789"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a real service on a pebble: store with two versions of "churn", the first
// live, and a canary of the second at 10%.
type fixture struct {
	base   string
	v1, v2 *writers.Manifest
}

func manifest(t *testing.T, s *writers.Store, at time.Time, shift float64) *writers.Manifest {
	t.Helper()
	ctx := context.Background()
	id, err := writers.NewVersionID(ctx, s, "churn", at)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(shift*1000)))
	var sk dist.Sketch
	vals := make([]float32, 5000)
	for i := range vals {
		vals[i] = float32(1 / (1 + math.Exp(-(rng.NormFloat64() + shift))))
	}
	sk.Add(vals)
	m := &writers.Manifest{Namespace: "churn", Version: id, Job: hostile, State: writers.StateWriting, Encoding: "json",
		Outputs: []writers.Output{{Name: "score", Width: 1}}, Key: "user_id",
		RowsRead: 5000, RowsWritten: 4990, RowsSkipped: 10, SkipReasons: map[string]int64{"null key": 10},
		StartedAt: at, CompletedAt: at.Add(95 * time.Second),
		Model: writers.ModelInfo{Path: "/secret/models/churn.onnx", SHA256: strings.Repeat("ab", 32)},
		Gates: []writers.GateResult{
			{Name: "min_rows", Passed: true, Value: 4990, Limit: 1000},
			{Name: "max_psi", Passed: true, Value: 0.02, Limit: 0.25, Detail: hostile},
		},
		Distributions: []writers.Distribution{sk.Distribution("score")},
		Defaults: &writers.Defaults{Method: "mean", Global: map[string][]float64{"score": {0.5}}, SegmentBy: "country",
			Segments: map[string]map[string][]float64{hostile: {"score": {0.42}}, "DE": {"score": {0.51}}}},
	}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRows(ctx, "churn", id, writers.Rows{Keys: [][]byte{[]byte("u1"), []byte("u2")},
		Values: [][]byte{[]byte(`{"score":0.5}`), []byte(`{"score":0.25}`)}}); err != nil {
		t.Fatal(err)
	}
	m.State = writers.StateComplete
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func newFixture(t *testing.T, extra string) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	s, err := pebble.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	f := &fixture{}
	f.v1 = manifest(t, s, now.Add(-3*time.Hour), 0)
	if _, err := writers.Flip(ctx, s, "churn", f.v1.Version); err != nil {
		t.Fatal(err)
	}
	f.v2 = manifest(t, s, now.Add(-time.Hour), 0.4)
	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "churn", Candidate: f.v2.Version, Mode: writers.ModeCanary,
		Canary: writers.CanaryConfig{Steps: []float64{10, 50, 100}, Interval: writers.Duration(10 * time.Minute)}, By: "test"},
		now.Add(-30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	s.Close() // serve opens the directory itself

	os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600)
	path := filepath.Join(dir, "serve.yaml")
	os.WriteFile(path, []byte(extra+"namespaces:\n  churn:\n    store: pebble:"+store+"\n    max_staleness: 36h\n"), 0o644)
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		svc.Close()
	})
	f.base = "http://" + ln.Addr().String()
	for deadline := time.Now().Add(10 * time.Second); !svc.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("service not ready after 10s")
		}
	}
	// A few answers, so that the arms have counts to flush.
	for range 5 {
		if r, err := http.Get(f.base + "/v1/churn/u1"); err == nil {
			r.Body.Close()
		}
	}
	return f
}

type resp struct {
	status int
	body   string
	header http.Header
}

func get(t *testing.T, c *http.Client, u string) resp {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	r, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(b), r.Header}
}

func TestPagesEscapeWhatCameFromData(t *testing.T) {
	f := newFixture(t, "admin_token_file: token\n")
	for _, path := range []string{"/ui/", "/ui/churn", "/ui/churn/" + f.v1.Version, "/ui/churn/" + f.v2.Version} {
		t.Run(path+" escapes every hostile string", func(t *testing.T) {
			r := get(t, nil, f.base+path)
			if r.status != 200 {
				t.Fatalf("got %d, want 200: %s", r.status, r.body)
			}
			if strings.Contains(r.body, "<script") {
				t.Fatalf("got a <script> element in the page, want the hostile string escaped")
			}
			if !strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Fatalf("Content-Security-Policy: got %q, want default-src 'none'", r.header.Get("Content-Security-Policy"))
			}
			if !strings.Contains(r.body, `<meta http-equiv="refresh" content="10">`) {
				t.Fatalf("got no auto-refresh meta tag")
			}
		})
	}
	r := get(t, nil, f.base+"/ui/churn/"+f.v1.Version)
	if n := strings.Count(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 3 {
		t.Fatalf("the hostile job, gate detail and segment: got %d escaped copies, want at least 3", n)
	}
	if strings.Contains(r.body, "/secret/models") {
		t.Fatalf("the model path shows without the admin token; want only the summary")
	}
}

func TestLoginShowsTheFullManifest(t *testing.T) {
	f := newFixture(t, "admin_token_file: token\n")
	page := f.base + "/ui/churn/" + f.v1.Version
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}

	r, err := c.PostForm(f.base+"/ui/_login", url.Values{"token": {"wrong-token-wrong-token"}, "next": {"/ui/churn"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong token: got %d, want 401", r.StatusCode)
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r, err = c.PostForm(f.base+"/ui/_login", url.Values{"token": {token}, "next": {"https://evil.example/"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign-in: got %d to %q, want 303 to /ui/ (never elsewhere)", r.StatusCode, r.Header.Get("Location"))
	}
	set := r.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie: got %q, want %s", set, want)
		}
	}
	if strings.Contains(set, token) {
		t.Errorf("Set-Cookie holds the admin token: want a session derived from it")
	}
	body := get(t, c, page).body
	if !strings.Contains(body, `class="manifest"`) || !strings.Contains(body, "/secret/models/churn.onnx") {
		t.Fatalf("signed in: got no full manifest")
	}
	if strings.Contains(body, "<script") {
		t.Fatalf("the full manifest: got a <script> element, want it escaped")
	}

	t.Run("a post from another site is refused", func(t *testing.T) {
		req, _ := http.NewRequest("POST", f.base+"/ui/_login", strings.NewReader("token="+token))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("got %d, want 403", r.StatusCode)
		}
	})
}

func TestWithoutAnAdminTokenThereIsNoLogin(t *testing.T) {
	f := newFixture(t, "")
	if r := get(t, nil, f.base+"/ui/_login"); r.status != http.StatusNotFound {
		t.Fatalf("GET /ui/_login: got %d, want 404", r.status)
	}
	if body := get(t, nil, f.base+"/ui/churn/"+f.v1.Version).body; strings.Contains(body, "_login") {
		t.Fatalf("the version page links to a login that does not exist")
	}
}

func TestUIFalseTurnsThePageOff(t *testing.T) {
	f := newFixture(t, "ui: false\n")
	if r := get(t, nil, f.base+"/ui/"); r.status != http.StatusNotFound {
		t.Fatalf("GET /ui/ with ui: false: got %d, want 404", r.status)
	}
}

func TestConfigUIField(t *testing.T) {
	ns := "namespaces:\n  churn:\n    store: pebble:/tmp/none\n"
	cfg, err := lookup.ParseConfig([]byte(ns), "serve.yaml")
	if err != nil || cfg.UI == nil || !*cfg.UI {
		t.Fatalf("ui absent: got %v (err %v), want on", cfg.UI, err)
	}
	if _, err := lookup.ParseConfig([]byte("ui: sometimes\n"+ns), "serve.yaml"); err == nil || !strings.Contains(err.Error(), "ui") {
		t.Fatalf("ui: sometimes: got %v, want an error naming ui", err)
	}
}
