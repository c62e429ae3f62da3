package objtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Action is what an Intercept proxy does with one request.
type Action int

const (
	// Pass forwards the request and its whole answer.
	Pass Action = iota
	// Stall holds the request unanswered until the client gives up (its context ends)
	// or the test ends: a server that hangs.
	Stall
	// Die forwards the request, sends the answer's headers and half its body, then cuts
	// the connection: a server that dies in the middle of a read.
	Die
	// Refuse cuts the connection without answering: a server that has died.
	Refuse
)

// Intercept puts an HTTP proxy between the clients of bucketURL (an S3 bucket URL from
// S3) and its server, asking decide what to do with each request, and returns the bucket
// URL through the proxy. The proxy keeps the Host header the client signed, so the
// server accepts what it forwards.
func Intercept(t testing.TB, bucketURL string, decide func(r *http.Request) Action) string {
	t.Helper()
	const key = "endpoint=http://"
	i := strings.Index(bucketURL, key)
	if i < 0 {
		t.Fatalf("objtest: Intercept: %s has no endpoint", bucketURL)
	}
	rest := bucketURL[i+len(key):]
	target := rest
	if j := strings.IndexByte(rest, '&'); j >= 0 {
		target = rest[:j]
	}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := decide(r)
		switch action {
		case Stall:
			select {
			case <-r.Context().Done():
			case <-done:
			}
			panic(http.ErrAbortHandler)
		case Refuse:
			panic(http.ErrAbortHandler)
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.URL.Scheme, out.URL.Host = "http", target
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		if action == Die {
			half := resp.ContentLength / 2
			io.CopyN(w, resp.Body, half)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.Copy(w, resp.Body)
	}))
	srv.Config.ErrorLog = nil
	t.Cleanup(func() { close(done); srv.CloseClientConnections(); srv.Close() })
	proxy := strings.TrimPrefix(srv.URL, "http://")
	return bucketURL[:i+len(key)] + proxy + rest[len(target):]
}
