package lookup_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
)

// discard is a ResponseWriter that keeps nothing: what the handler itself costs.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkHandlerHit is the handler's own cost of a cache hit, without the HTTP
// server's: its allocations are what the GC sees per request.
func BenchmarkHandlerHit(b *testing.B) {
	ctx := context.Background()
	s, url := pebbleStore(b)
	m := &writers.Manifest{Namespace: "churn", Version: "v1", Job: "churn", State: writers.StateWriting, Encoding: "json",
		Outputs: []writers.Output{{Name: "score", Width: 1}}, StartedAt: time.Now()}
	if err := s.PutManifest(ctx, m); err != nil {
		b.Fatal(err)
	}
	var rows writers.Rows
	for i := range 100 {
		rows.Keys = append(rows.Keys, fmt.Appendf(nil, "k%06d", i))
		rows.Values = append(rows.Values, fmt.Appendf(nil, `{"score":%g}`, float64(i)/100))
	}
	if err := s.WriteRows(ctx, "churn", "v1", rows); err != nil {
		b.Fatal(err)
	}
	m.State, m.CompletedAt = writers.StateComplete, time.Now()
	if err := s.PutManifest(ctx, m); err != nil {
		b.Fatal(err)
	}
	if _, err := writers.Flip(ctx, s, "churn", "v1"); err != nil {
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
	defer svc.Close()
	svc.Refresh(ctx)
	h := svc.Handler()
	req := httptest.NewRequest("GET", "/v1/churn/k000042", nil)
	w := &discard{h: http.Header{}}
	h.ServeHTTP(w, req)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}
