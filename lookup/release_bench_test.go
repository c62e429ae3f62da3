package lookup_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
)

// benchRows is how many keys each version of benchService holds: k000000 to k000999.
const benchRows = 1000

// benchService is a lookup service over a Pebble store holding the given complete
// versions of namespace churn, benchRows keys each, the first one live.
func benchService(b *testing.B, versions ...string) (*lookup.Service, *writers.Store) {
	b.Helper()
	ctx := context.Background()
	s, url := pebbleStore(b)
	for _, v := range versions {
		m := &writers.Manifest{Namespace: "churn", Version: v, Job: "churn", State: writers.StateWriting, Encoding: "json",
			Outputs: []writers.Output{{Name: "score", Width: 1}}, StartedAt: time.Now()}
		if err := s.PutManifest(ctx, m); err != nil {
			b.Fatal(err)
		}
		var rows writers.Rows
		for i := range benchRows {
			rows.Keys = append(rows.Keys, fmt.Appendf(nil, "k%06d", i))
			rows.Values = append(rows.Values, fmt.Appendf(nil, `{"score":%g}`, float64(i)/benchRows))
		}
		if err := s.WriteRows(ctx, "churn", v, rows); err != nil {
			b.Fatal(err)
		}
		m.State, m.CompletedAt = writers.StateComplete, time.Now()
		if err := s.PutManifest(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := writers.Flip(ctx, s, "churn", versions[0]); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "serve.yaml")
	os.WriteFile(path, []byte("namespaces:\n  churn:\n    store: "+url+"\n"), 0o644)
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := lookup.New(ctx, cfg, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	svc.Refresh(ctx)
	return svc, s
}

// BenchmarkCacheHit is the hot path: a single get of a cached key, through the handler,
// with no release, and while a canary at 10% routes (the unit hashed, the arm counted).
func BenchmarkCacheHit(b *testing.B) {
	ctx := context.Background()
	svc, s := benchService(b, "v1", "v2")
	h := svc.Handler()
	get := func(key string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/v1/churn/"+key, nil))
		if w.Code != 200 {
			b.Fatalf("GET %s: %d %s", key, w.Code, w.Body)
		}
	}
	run := func(b *testing.B) {
		svc.Refresh(ctx)
		for i := range benchRows {
			get(fmt.Sprintf("k%06d", i)) // warm the cache
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			get("k000042")
		}
	}
	b.Run("no release", run)
	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "churn", Candidate: "v2", Mode: writers.ModeCanary, WeightPercent: 10}, time.Now()); err != nil {
		b.Fatal(err)
	}
	b.Run("canary at 10%", run)
}
