package lookup

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestTheFastRouteAgreesWithTheServeMux: whatever fastGet takes, the ServeMux would have
// routed to handleGet with the same namespace and key.
func TestTheFastRouteAgreesWithTheServeMux(t *testing.T) {
	mux := http.NewServeMux()
	var ns, key string
	var hit bool
	mux.HandleFunc("GET /v1/{namespace}/{key...}", func(_ http.ResponseWriter, r *http.Request) {
		ns, key, hit = r.PathValue("namespace"), r.PathValue("key"), true
	})
	mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) {})
	if _, _, ok := fastGet(httptest.NewRequest("GET", "/v1/churn/u000000001?country=DE", nil)); !ok {
		t.Fatal("the fast route does not take a plain GET /v1/churn/u000000001")
	}
	for _, target := range []string{
		"/v1/churn/u000000001", "/v1/churn/a/b/c", "/v1/churn/", "/v1/churn", "/v1/churn:release",
		"/v1/churn:batchGet/x", "/v1//k", "/v1/churn//k", "/v1/churn/./k", "/v1/churn/../k", "/v1/churn/k/",
		"/v1/churn/a%2Fb", "/v1/ch%75rn/k", "/v1/churn/%ff%fe", "/v1/churn/sp%20ace", "/v1/churn/caf%C3%A9",
		"/v2/churn/k", "/v1/churn/k?country=DE&unit=u1", "/v1/Bad%20NS/k", "/v1/churn/%2e%2e/k",
	} {
		for _, method := range []string{"GET", "HEAD", "POST"} {
			r := httptest.NewRequest(method, target, nil)
			fns, fkey, ok := fastGet(r)
			if !ok {
				continue
			}
			hit = false
			mux.ServeHTTP(httptest.NewRecorder(), r)
			if !hit || ns != fns || key != fkey {
				t.Errorf("%s %s: the fast route took (%q, %q); the mux routed to handleGet %v with (%q, %q)", method, target, fns, fkey, hit, ns, key)
			}
		}
	}
}
