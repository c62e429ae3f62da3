package lookup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/lookup/loadtest"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/pebble"
	_ "github.com/staticref/staticref/writers/redis" // redis:// stores under test
	"github.com/staticref/staticref/writers/redistest"
)

var (
	dataDir string
	spec    = shardgen.Spec{Rows: 2000, Shards: 2, RowGroupRows: 500, Seed: 3}
	model   = onnxgen.Logistic(4, 7)
	quiet   = slog.New(slog.NewTextHandler(logOut(), nil))
)

// TestMain loads ONNX Runtime before anything changes directory, and generates the
// shards and model every test scores.
func TestMain(m *testing.M) {
	if err := inference.Init(); err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "staticref-lookup-")
	if err != nil {
		panic(err)
	}
	dataDir = dir
	if _, err := shardgen.Generate(filepath.Join(dir, "features"), spec); err != nil {
		panic(err)
	}
	if err := model.Write(filepath.Join(dir, "logistic.onnx")); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// publish runs the scoring job into store as a new, flipped version of namespace churn.
func publish(t testing.TB, s *writers.Store, noFlip bool) *writers.Manifest {
	t.Helper()
	return publishAs(t, s, "churn", noFlip)
}

// publishAs is publish into namespace ns.
func publishAs(t testing.TB, s *writers.Store, ns string, noFlip bool) *writers.Manifest {
	t.Helper()
	yaml := `name: ` + ns + `
source: {uri: ` + filepath.Join(dataDir, "features", "*.parquet") + `, key: user_id, features: [f0, f1, f2, f3]}
model: {path: ` + filepath.Join(dataDir, "logistic.onnx") + `, device: cpu, workers: 1}
sink: {store: pebble:unused}
defaults: {global: mean, segment_by: country}
release: {keep: 5, gates: {min_rows_ratio: 0}}
`
	j, err := jobs.Parse([]byte(yaml), filepath.Join(t.TempDir(), "job.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := pipeline.Run(context.Background(), pipeline.Config{Job: j, Store: s, Log: quiet, NoFlip: noFlip})
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

// service starts the service on a real loopback listener, waits until it is ready and
// returns its base URL.
func service(t testing.TB, cfgYAML string) (*lookup.Service, string) {
	t.Helper()
	svc, base := startService(t, cfgYAML, quiet)
	deadline := time.Now().Add(10 * time.Second)
	for !svc.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("service not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return svc, base
}

// startService starts the service on a real loopback listener, logging to log, and
// returns its base URL at once, ready or not.
func startService(t testing.TB, cfgYAML string, log *slog.Logger) (*lookup.Service, string) {
	t.Helper()
	return startServiceWith(t, cfgYAML, log, nil)
}

// startServiceWith is startService with a hook that sets the service up before it runs.
func startServiceWith(t testing.TB, cfgYAML string, log *slog.Logger, setup func(*lookup.Service)) (*lookup.Service, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "serve.yaml")
	os.WriteFile(filepath.Join(dir, "token"), []byte("s3cret-admin-token-0123456789\n"), 0o600)
	if err := os.WriteFile(path, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(svc)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		svc.Close()
	})
	return svc, "http://" + ln.Addr().String()
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func call(t testing.TB, method, url, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	json.Unmarshal(b, &r.body)
	return r
}

func pebbleStore(t testing.TB) (*writers.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, "pebble:" + dir
}

func TestColdStartPathsThroughHTTP(t *testing.T) {
	s, url := pebbleStore(t)
	m := publish(t, s, false)
	s.Close() // serve opens the directory itself
	_, base := service(t, `
admin_token_file: token
namespaces:
  churn:
    store: `+url+`
    fallback: {segment_param: country, default: computed}
    model: `+filepath.Join(dataDir, "logistic.onnx")+`
`)
	country := shardgen.RowAt(spec, 7).Country
	feats := `{"features": {"f0": 1.5, "f1": -0.25, "f2": 3, "f3": 10}}`
	want := model.Predict([]float64{1.5, -0.25, 3, 10})

	tests := []struct {
		name, method, path, body, source string
	}{
		{"a stored key is answered precomputed", "GET", "/v1/churn/u000000007", "", lookup.SourcePrecomputed},
		{"a stored key is precomputed even with a segment", "GET", "/v1/churn/u000000007?country=" + country, "", lookup.SourcePrecomputed},
		{"an unknown key with a known segment gets the segment default", "GET", "/v1/churn/nobody?country=" + country, "", lookup.SourceFallbackSegment},
		{"an unknown key with features is predicted online", "POST", "/v1/churn/nobody", feats, lookup.SourceOnline},
		{"an unknown segment with features is predicted online", "POST", "/v1/churn/nobody?country=XX", feats, lookup.SourceOnline},
		{"an unknown key without features gets the computed default", "GET", "/v1/churn/nobody?country=XX", "", lookup.SourceFallbackDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, tt.method, base+tt.path, tt.body)
			if r.status != 200 || r.body["source"] != tt.source || r.body["version"] != m.Version {
				t.Fatalf("got %d %s, want 200 with source %s and version %s", r.status, r.raw, tt.source, m.Version)
			}
			if r.body["stale"] != false || r.body["namespace"] != "churn" {
				t.Errorf("got %s, want stale false in namespace churn", r.raw)
			}
			// An online answer is computed now; the others are as old as the version.
			computed, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(r.body["computed_at"]))
			age, _ := r.body["age_seconds"].(float64)
			if online := tt.source == lookup.SourceOnline; online && (!computed.After(m.CompletedAt) || age != 0) || !online && !computed.Equal(m.CompletedAt) {
				t.Errorf("%s answer: computed_at %v, age_seconds %v; the version completed at %v", tt.source, r.body["computed_at"], age, m.CompletedAt)
			}
			if age*1000 != math.Round(age*1000) {
				t.Errorf("age_seconds %v: want milliseconds", age)
			}
			v := r.body["value"].(map[string]any)
			switch tt.source {
			case lookup.SourceOnline:
				if got := v["score"].(float64); abs(got-want["score"][0]) > 1e-5 {
					t.Errorf("online score: got %v, want %v", got, want["score"][0])
				}
			case lookup.SourceFallbackSegment:
				if got, w := v["score"].(float64), m.Defaults.Segments[country]["score"][0]; abs(got-w) > 1e-6 {
					t.Errorf("segment default: got %v, want %v", got, w)
				}
			case lookup.SourceFallbackDefault:
				if got, w := v["score"].(float64), m.Defaults.Global["score"][0]; abs(got-w) > 1e-6 {
					t.Errorf("global default: got %v, want %v", got, w)
				}
			}
		})
	}

	t.Run("batchGet answers every key from one version, misses in place", func(t *testing.T) {
		r := call(t, "POST", base+"/v1/churn:batchGet?country="+country, `{"keys":["u000000001","nobody","u000000002"]}`)
		answers, _ := r.body["answers"].([]any)
		if r.status != 200 || r.body["version"] != m.Version || len(answers) != 3 {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
		srcs := []string{}
		for _, a := range answers {
			srcs = append(srcs, a.(map[string]any)["source"].(string))
		}
		if strings.Join(srcs, ",") != "precomputed,fallback:segment,precomputed" {
			t.Errorf("sources: got %v", srcs)
		}
	})

	t.Run("batchGet predicts a missing key online from its features", func(t *testing.T) {
		body := `{"keys":["u000000001","nobody","stranger"],"features":{"nobody":{"f0":1.5,"f1":-0.25,"f2":3,"f3":10}}}`
		r := call(t, "POST", base+"/v1/churn:batchGet?country=XX", body) // no segment default for XX
		answers, _ := r.body["answers"].([]any)
		if r.status != 200 || r.body["version"] != m.Version || len(answers) != 3 {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
		var srcs []string
		for _, a := range answers {
			srcs = append(srcs, a.(map[string]any)["source"].(string))
		}
		if strings.Join(srcs, ",") != "precomputed,online,fallback:default" {
			t.Errorf("sources: got %v, want precomputed,online,fallback:default", srcs)
		}
		v := answers[1].(map[string]any)["value"].(map[string]any)
		if got := v["score"].(float64); abs(got-want["score"][0]) > 1e-5 {
			t.Errorf("online score in a batch: got %v, want %v", got, want["score"][0])
		}
	})

	t.Run("batchGet predicts many missing keys, each from its own features", func(t *testing.T) {
		var keys, feats []string
		for i := range 40 {
			k := fmt.Sprintf("new-%02d", i)
			keys = append(keys, strconv.Quote(k))
			feats = append(feats, fmt.Sprintf(`%q:{"f0":%d,"f1":%d,"f2":1,"f3":-2}`, k, i, -i))
		}
		body := `{"keys":[` + strings.Join(keys, ",") + `],"features":{` + strings.Join(feats, ",") + `}}`
		r := call(t, "POST", base+"/v1/churn:batchGet", body)
		answers, _ := r.body["answers"].([]any)
		if r.status != 200 || len(answers) != 40 {
			t.Fatalf("got %d %s", r.status, r.raw)
		}
		for i, a := range answers {
			a := a.(map[string]any)
			want := model.Predict([]float64{float64(i), float64(-i), 1, -2})["score"][0]
			got, _ := a["value"].(map[string]any)["score"].(float64)
			if a["key"] != fmt.Sprintf("new-%02d", i) || a["source"] != lookup.SourceOnline || abs(got-want) > 1e-5 {
				t.Errorf("answer %d: %v, want key new-%02d online with score %v", i, a, i, want)
			}
		}
	})

	t.Run("status shows anyone the live version and a summary of its manifest, without paths", func(t *testing.T) {
		r := call(t, "GET", base+"/v1/churn", "")
		man, _ := r.body["manifest"].(map[string]any)
		if r.status != 200 || r.body["version"] != m.Version || man["rows_written"] != 2000.0 || man["version"] != m.Version ||
			man["state"] != "complete" || man["encoding"] != "json" || man["outputs"] == nil || man["completed_at"] == nil {
			t.Errorf("got %d %s, want the summary's fields", r.status, r.raw)
		}
		for _, field := range []string{"model", "sources", "shards", "features", "job"} {
			if _, ok := man[field]; ok {
				t.Errorf("the summary has %q: %s", field, r.raw)
			}
		}
		if strings.Contains(r.raw, "/") && strings.Contains(r.raw, ".parquet") || strings.Contains(r.raw, ".onnx") {
			t.Errorf("the summary shows a path: %s", r.raw)
		}
	})

	t.Run("status shows the whole manifest to the admin token, and refuses a wrong one", func(t *testing.T) {
		r := call(t, "GET", base+"/v1/churn", "", "Authorization", "Bearer s3cret-admin-token-0123456789")
		man, _ := r.body["manifest"].(map[string]any)
		if r.status != 200 || man["model"] == nil || man["sources"] == nil || man["rows_written"] != 2000.0 {
			t.Errorf("got %d %s, want the whole manifest", r.status, r.raw)
		}
		if r := call(t, "GET", base+"/v1/churn", "", "Authorization", "Bearer nope"); r.status != 401 {
			t.Errorf("a wrong token: got %d %s, want 401", r.status, r.raw)
		}
	})

	t.Run("metrics count answers by source and report the live version", func(t *testing.T) {
		r := call(t, "GET", base+"/metrics", "")
		for _, want := range []string{
			`staticref_answers_total{namespace="churn",source="online"} 43`,
			`staticref_fallbacks_total{namespace="churn",source="fallback:segment"}`,
			`staticref_live_version{namespace="churn",version="` + m.Version + `"} 1`,
			`staticref_namespace_age_seconds{namespace="churn"}`,
			`staticref_cache_hits_total`, `staticref_cache_hit_ratio`,
			`staticref_request_duration_seconds_bucket{namespace="churn",source="precomputed"`,
		} {
			if !strings.Contains(r.raw, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("health and readiness", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if r := call(t, "GET", base+p, ""); r.status != 200 {
				t.Errorf("%s: got %d %s", p, r.status, r.raw)
			}
		}
	})
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestStaticDefaultAndNotFound(t *testing.T) {
	s, url := pebbleStore(t)
	publish(t, s, false)
	s.Close()
	// One store, two configs: a namespace name is the store's namespace, so run two services.
	_, static := service(t, "namespaces:\n  churn:\n    store: "+url+"\n    fallback: {default: {score: 0.5, logit: [0]}}\n")
	_, none := service(t, "namespaces:\n  churn:\n    store: "+url+"\n    fallback: {segment_param: country}\n")

	r := call(t, "GET", static+"/v1/churn/nobody", "")
	if v, _ := r.body["value"].(map[string]any); r.status != 200 || r.body["source"] != lookup.SourceFallbackDefault || v["score"] != 0.5 || v["logit"] != 0.0 {
		t.Errorf("static default: got %d %s", r.status, r.raw)
	}
	r = call(t, "GET", none+"/v1/churn/nobody?country=XX", "")
	if e, _ := r.body["error"].(map[string]any); r.status != 404 || e["code"] != "not_found" {
		t.Errorf("no fallback: got %d %s, want 404 not_found", r.status, r.raw)
	}
}

func TestStaleness(t *testing.T) {
	s, url := pebbleStore(t)
	publish(t, s, false)
	s.Close()
	cfg := func(onStale string) string {
		return "namespaces:\n  churn:\n    store: " + url + "\n    max_staleness: 1ns\n    on_stale: " + onStale + "\n    fallback: {default: computed}\n"
	}
	tests := []struct {
		onStale string
		status  int
		source  string
	}{
		{"serve", 200, lookup.SourcePrecomputed},
		{"fallback", 200, lookup.SourceFallbackDefault},
		{"error", 503, ""},
	}
	for _, tt := range tests {
		t.Run("on_stale "+tt.onStale, func(t *testing.T) {
			_, base := service(t, cfg(tt.onStale))
			r := call(t, "GET", base+"/v1/churn/u000000001", "")
			if r.status != tt.status {
				t.Fatalf("got %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.status == 200 && (r.body["stale"] != true || r.header.Get(lookup.StaleHeader) != "true" || r.body["source"] != tt.source) {
				t.Errorf("got %s (header %q), want stale answer from %s", r.raw, r.header.Get(lookup.StaleHeader), tt.source)
			}
			if tt.status == 503 && r.body["error"].(map[string]any)["code"] != "stale" {
				t.Errorf("got %s, want code stale", r.raw)
			}
			m := call(t, "GET", base+"/metrics", "")
			if !strings.Contains(m.raw, `staticref_namespace_stale{namespace="churn"} 1`) {
				t.Errorf("metrics lack the stale gauge")
			}
		})
	}
}

func TestBadInputIsA4xxWithAJSONError(t *testing.T) {
	s, url := pebbleStore(t)
	m := publish(t, s, false)
	s.Close()
	_, base := service(t, `
admin_token_file: token
max_batch: 3
max_body_bytes: 200
namespaces:
  churn:
    store: `+url+`
    model: `+filepath.Join(dataDir, "logistic.onnx")+`
`)
	_, noAdmin := service(t, "namespaces:\n  churn:\n    store: "+url+"\n")
	long := strings.Repeat("k", writers.MaxKeyLen+1)
	auth := []string{"Authorization", "Bearer s3cret-admin-token-0123456789"}
	tests := []struct {
		name, method, url, body string
		header                  []string
		status                  int
		code                    string
	}{
		{"an unknown namespace is 404", "GET", base + "/v1/other/k", "", nil, 404, "not_found"},
		{"an invalid namespace name is 404", "GET", base + "/v1/Bad%20NS/k", "", nil, 404, "not_found"},
		{"a key over the length limit is 400", "GET", base + "/v1/churn/" + long, "", nil, 400, "invalid_argument"},
		{"a key that is not UTF-8 is 400", "GET", base + "/v1/churn/%ff%fe", "", nil, 400, "invalid_argument"},
		{"a batch over max_batch is 400", "POST", base + "/v1/churn:batchGet", `{"keys":["a","b","c","d"]}`, nil, 400, "invalid_argument"},
		{"an empty batch is 400", "POST", base + "/v1/churn:batchGet", `{"keys":[]}`, nil, 400, "invalid_argument"},
		{"an invalid key in a batch is 400", "POST", base + "/v1/churn:batchGet", `{"keys":["a",""]}`, nil, 400, "invalid_argument"},
		{"a body that is not JSON is 400", "POST", base + "/v1/churn:batchGet", `keys=a`, nil, 400, "invalid_argument"},
		{"an unknown body field is 400", "POST", base + "/v1/churn:batchGet", `{"kees":["a"]}`, nil, 400, "invalid_argument"},
		{"batch features for a key not asked are 400", "POST", base + "/v1/churn:batchGet", `{"keys":["a"],"features":{"b":{"f0":1}}}`, nil, 400, "invalid_argument"},
		{"batch features that miss one the model needs are 400", "POST", base + "/v1/churn:batchGet", `{"keys":["nobody"],"features":{"nobody":{"f0":1}}}`, nil, 400, "invalid_argument"},
		{"batch features that are null are 400", "POST", base + "/v1/churn:batchGet", `{"keys":["nobody"],"features":{"nobody":null}}`, nil, 400, "invalid_argument"},
		{"a body over max_body_bytes is 413", "POST", base + "/v1/churn:batchGet", `{"keys":["` + strings.Repeat("a", 300) + `"]}`, nil, 413, "too_large"},
		{"features that miss one the model needs are 400", "POST", base + "/v1/churn/nobody", `{"features":{"f0":1}}`, nil, 400, "invalid_argument"},
		{"features that are not numbers are 400", "POST", base + "/v1/churn/nobody", `{"features":{"f0":"x"}}`, nil, 400, "invalid_argument"},
		{"an unknown action is 404", "POST", base + "/v1/churn:delete", `{}`, nil, 404, "not_found"},
		{"an unknown endpoint is 404", "GET", base + "/v2/churn/k", "", nil, 404, "not_found"},
		{"a lookup with a wrong method is 405", "DELETE", base + "/v1/churn/k", "", nil, 405, "method_not_allowed"},
		{"a status with a wrong method is 405", "PUT", base + "/v1/churn", `{}`, nil, 405, "method_not_allowed"},
		{"a health check with a wrong method is 405", "POST", base + "/healthz", "", nil, 405, "method_not_allowed"},
		{"admin without a token file is 403", "POST", noAdmin + "/v1/churn:rollback", "", auth, 403, "permission_denied"},
		{"admin without a token is 401", "POST", base + "/v1/churn:rollback", "", nil, 401, "unauthenticated"},
		{"admin with a wrong token is 401", "POST", base + "/v1/churn:flip", `{"version":"x"}`, []string{"Authorization", "Bearer nope"}, 401, "unauthenticated"},
		{"a flip to an invalid version id is 400", "POST", base + "/v1/churn:flip", `{"version":"../x"}`, auth, 400, "invalid_argument"},
		{"a flip to a missing version is 404", "POST", base + "/v1/churn:flip", `{"version":"20200101T000000Z"}`, auth, 404, "not_found"},
		{"a rollback with no previous version is 404", "POST", base + "/v1/churn:rollback", "", auth, 404, "not_found"},
		{"the bearer scheme in lower case is accepted", "POST", base + "/v1/churn:rollback", "", []string{"Authorization", "bearer s3cret-admin-token-0123456789"}, 404, "not_found"},
		{"the bearer scheme in upper case is accepted", "POST", base + "/v1/churn:rollback", "", []string{"Authorization", "BEARER  s3cret-admin-token-0123456789"}, 404, "not_found"},
		{"another scheme is 401", "POST", base + "/v1/churn:rollback", "", []string{"Authorization", "Basic s3cret-admin-token-0123456789"}, 401, "unauthenticated"},
		{"a batch key of invalid UTF-8 is 400", "POST", base + "/v1/churn:batchGet", "{\"keys\":[\"a\",\"b\xff\"]}", nil, 400, "invalid_argument"},
		{"a batch key of an unpaired surrogate is 400", "POST", base + "/v1/churn:batchGet", `{"keys":["a","\udc00b"]}`, nil, 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, tt.method, tt.url, tt.body, tt.header...)
			e, _ := r.body["error"].(map[string]any)
			if r.status != tt.status || e == nil || e["code"] != tt.code || e["message"] == "" {
				t.Errorf("got %d %s, want %d with code %s", r.status, r.raw, tt.status, tt.code)
			}
			if tt.status == 405 && r.header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header: %v", r.header)
			}
			if strings.Contains(r.raw, "s3cret") {
				t.Errorf("the answer echoes the admin token: %s", r.raw)
			}
		})
	}
	t.Run("a bad body is told in JSON's terms, not Go's", func(t *testing.T) {
		for body, want := range map[string]string{
			`{"keys":"a"}`:                  "keys: got a JSON string, want an array of strings",
			`{"keys":["a"],"features":[1]}`: "features: got a JSON array, want an object of objects by name",
			`{"keys":[1]}`:                  "keys: got a JSON number, want a string",
			`{"keys":["a"]`:                 "not valid JSON",
		} {
			r := call(t, "POST", base+"/v1/churn:batchGet", body)
			e, _ := r.body["error"].(map[string]any)
			msg, _ := e["message"].(string)
			if r.status != 400 || !strings.Contains(msg, want) || strings.Contains(msg, "Go ") || strings.Contains(msg, "map[") {
				t.Errorf("%s: got %d %q, want 400 saying %q", body, r.status, msg, want)
			}
		}
	})
	t.Run("a batch key that is not UTF-8 is told by its index, not echoed as U+FFFD", func(t *testing.T) {
		for body, want := range map[string]string{
			"{\"keys\":[\"a\",\"b\xff\"]}":      "keys[1]: not valid UTF-8",
			`{"keys":["\ud800","a"]}`:           "keys[0]: not valid UTF-8",
			`{"keys":["a","b","\ud800\u0041"]}`: "keys[2]: not valid UTF-8",
		} {
			r := call(t, "POST", base+"/v1/churn:batchGet", body)
			e, _ := r.body["error"].(map[string]any)
			msg, _ := e["message"].(string)
			if r.status != 400 || !strings.HasPrefix(msg, want) || strings.ContainsRune(r.raw, '\uFFFD') {
				t.Errorf("%q: got %d %s, want 400 saying %q", body, r.status, r.raw, want)
			}
		}
		for _, body := range []string{`{"keys":["\ufffd","\ud83d\ude00","é"]}`, "{\"keys\":[\"\uFFFD\"]}"} {
			if r := call(t, "POST", base+"/v1/churn:batchGet", body); r.status != 200 {
				t.Errorf("%q: valid keys (U+FFFD itself, a surrogate pair): got %d %s, want 200", body, r.status, r.raw)
			}
		}
	})
	t.Run("messages are not HTML-escaped", func(t *testing.T) {
		r := call(t, "POST", base+"/v1/churn:rollback", "")
		if strings.Contains(r.raw, `\u003c`) || strings.Contains(r.raw, `\u003e`) || !strings.Contains(r.raw, "<token") {
			t.Errorf("escaped for HTML: %s", r.raw)
		}
	})
	t.Run("the live version still answers", func(t *testing.T) {
		if r := call(t, "GET", base+"/v1/churn/u000000001", ""); r.status != 200 || r.body["version"] != m.Version {
			t.Errorf("got %d %s", r.status, r.raw)
		}
	})
}

// TestServingFromPebbleWhileARunFlips: the service answers from a Pebble directory while
// another store handle on the same directory (as `staticref run` would) publishes and
// flips a new version; the service follows within a second (one poll_interval, 500ms).
func TestServingFromPebbleWhileARunFlips(t *testing.T) {
	s, url := pebbleStore(t)
	v1 := publish(t, s, false)
	s.Close()
	_, base := service(t, "namespaces:\n  churn:\n    store: "+url+"\n")
	if r := call(t, "GET", base+"/v1/churn/u000000001", ""); r.body["version"] != v1.Version {
		t.Fatalf("before: got %s, want version %s", r.raw, v1.Version)
	}

	dir := strings.TrimPrefix(url, "pebble:")
	w, err := pebble.Open(dir) // the run's own handle, beside the service's
	if err != nil {
		t.Fatalf("a run cannot open the store while serve answers from it: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	wg.Add(1)
	go func() { // keep asking during the run: never an error
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Get(base + "/v1/churn/u000000002")
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
				bad = append(bad, string(b))
			}
			resp.Body.Close()
			time.Sleep(time.Millisecond)
		}
	}()
	v2 := publish(t, w, false)
	flipped := time.Now()
	defer w.Close()
	for {
		r := call(t, "GET", base+"/v1/churn/u000000001", "")
		if r.body["version"] == v2.Version {
			t.Logf("serving %s %s after the flip", v2.Version, time.Since(flipped).Round(time.Millisecond))
			break
		}
		if time.Since(flipped) > time.Second {
			t.Fatalf("still answering %v a second after the flip to %s", r.body["version"], v2.Version)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d failed answers during the run, e.g. %s", len(bad), bad[0])
	}
}

// redisVersions publishes two versions into a real Redis and returns the store.
func redisVersions(t *testing.T) (*writers.Store, string, string, string) {
	url := redistest.Standalone(t)
	s, err := writers.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v1 := publish(t, s, false)
	v2 := publish(t, s, false)
	return s, url, v1.Version, v2.Version
}

func TestAdminFlipAndRollbackOnRedis(t *testing.T) {
	_, url, v1, v2 := redisVersions(t)
	_, base := service(t, "admin_token_file: token\nnamespaces:\n  churn:\n    store: "+url+"\n")
	auth := []string{"Authorization", "Bearer s3cret-admin-token-0123456789"}
	version := func() any { return call(t, "GET", base+"/v1/churn/u000000001", "").body["version"] }
	if v := version(); v != v2 {
		t.Fatalf("live: got %v, want %s", v, v2)
	}
	r := call(t, "POST", base+"/v1/churn:rollback", "", auth...)
	if r.status != 200 || r.body["version"] != v1 || r.body["previous"] != v2 || version() != v1 {
		t.Fatalf("rollback: got %d %s, then answering %v; want %s", r.status, r.raw, version(), v1)
	}
	st := call(t, "GET", base+"/v1/churn", "")
	if st.body["version"] != v1 || !strings.Contains(st.raw, `"previous":["`+v2+`"]`) {
		t.Errorf("status after rollback: %s", st.raw)
	}
	r = call(t, "POST", base+"/v1/churn:flip", `{"version":"`+v2+`"}`, auth...)
	if r.status != 200 || version() != v2 {
		t.Fatalf("flip: got %d %s, then answering %v; want %s", r.status, r.raw, version(), v2)
	}
}

// TestFlipsUnderLoad is a short `make loadtest`: 20 flips in 3s against real Redis, with
// zero failed answers for existing keys and zero batches that mix versions.
func TestFlipsUnderLoad(t *testing.T) {
	s, url, v1, v2 := redisVersions(t)
	_, base := service(t, "namespaces:\n  churn:\n    store: "+url+"\ncache_entries: 500\n")
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = shardgen.RowAt(spec, int64(i)).Key
	}
	ctx := context.Background()
	rep, err := loadtest.Run(ctx, loadtest.Config{
		BaseURL: base, Namespace: "churn", Keys: keys, Clients: 8, BatchSize: 20, BatchEvery: 2,
		Duration: 3 * time.Second, Flips: 20,
		Flip: func(ctx context.Context, i int) error {
			_, err := writers.Flip(ctx, s, "churn", []string{v1, v2}[i%2])
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.Errors != 0 || rep.Mixed != 0 || rep.Flips < 20 || rep.Requests == 0 {
		t.Errorf("got %d errors (%v), %d mixed batches, %d flips; want 0, 0, 20", rep.Errors, rep.Samples, rep.Mixed, rep.Flips)
	}
	m := call(t, "GET", base+"/metrics", "").raw
	if !strings.Contains(m, `staticref_flips_seen_total{namespace="churn"}`) {
		t.Errorf("metrics lack flips seen")
	}
}

func logOut() io.Writer {
	if os.Getenv("LOOKUP_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

func TestAWorldReadableAdminTokenFileIsWarnedOf(t *testing.T) {
	s, url := pebbleStore(t)
	s.Close()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o640, false}, {0o600, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			token := filepath.Join(dir, "token")
			os.WriteFile(token, []byte("s3cret-admin-token-0123456789\n"), tc.mode)
			os.Chmod(token, tc.mode) // whatever the umask
			cfg, err := lookup.ParseConfig([]byte("admin_token_file: token\nnamespaces:\n  churn:\n    store: "+url+"\n"), filepath.Join(dir, "serve.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			svc, err := lookup.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			svc.Close()
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "file="+token) &&
				strings.Contains(logs.String(), "mode="+tc.mode.String())
			if warned != tc.warn {
				t.Errorf("mode %s: warned %v, want %v; logs: %s", tc.mode, warned, tc.warn, logs.String())
			}
			if strings.Contains(logs.String(), "s3cret") {
				t.Errorf("the logs show the token: %s", logs.String())
			}
		})
	}
}
