package lookup_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// discard is a ResponseWriter that keeps nothing: what the handler itself costs.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkHandlerHit is the handler's own cost of a cache hit, without the HTTP
// server's: its allocations are what the GC sees per request.
func BenchmarkHandlerHit(b *testing.B) {
	svc, _ := benchService(b, "v1")
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
