package lookup_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/axiomhq/hyperloglog"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/redistest"
)

// Releases on read through the real HTTP API of real services: versions written with
// known values per key, so that every answer can be checked exactly for its version.

const adminToken = "s3cret-admin-token-0123456789"

var auth = []string{"Authorization", "Bearer " + adminToken}

// putVersion writes a complete version of ns whose key keys[i] holds the value
// value(i) (keys for which value reports false are left out), with the distribution of
// its values and their mean as the computed default.
func putVersion(t testing.TB, s *writers.Store, ns, version string, keys []string, value func(i int) (float64, bool)) *writers.Manifest {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	m := &writers.Manifest{Namespace: ns, Version: version, Job: ns, State: writers.StateWriting, Encoding: "json",
		Outputs: []writers.Output{{Name: "score", Width: 1}}, StartedAt: now}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	var rows writers.Rows
	var vals []float64
	for i, k := range keys {
		v, ok := value(i)
		if !ok {
			continue
		}
		rows.Keys = append(rows.Keys, []byte(k))
		rows.Values = append(rows.Values, []byte(`{"score":`+strconv.FormatFloat(v, 'g', -1, 64)+`}`))
		vals = append(vals, v)
		if rows.Len() == 5000 {
			if err := s.WriteRows(ctx, ns, version, rows); err != nil {
				t.Fatal(err)
			}
			rows = writers.Rows{}
		}
	}
	if rows.Len() > 0 {
		if err := s.WriteRows(ctx, ns, version, rows); err != nil {
			t.Fatal(err)
		}
	}
	m.State, m.CompletedAt = writers.StateComplete, time.Now().UTC()
	m.RowsRead, m.RowsWritten = int64(len(vals)), int64(len(vals))
	m.Distributions = []writers.Distribution{distributionOf("score", vals)}
	m.Defaults = &writers.Defaults{Method: "mean", Global: map[string][]float64{"score": {m.Distributions[0].Mean}}}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// distributionOf is the distribution of vals: quantiles by nearest rank.
func distributionOf(name string, vals []float64) writers.Distribution {
	sorted := slices.Clone(vals)
	slices.Sort(sorted)
	d := writers.Distribution{Output: name, Count: int64(len(sorted))}
	for _, v := range sorted {
		d.Mean += v / float64(len(sorted))
	}
	for q := 0; q < writers.DistributionQuantiles; q++ {
		i := min(len(sorted)-1, q*len(sorted)/(writers.DistributionQuantiles-1))
		d.Quantiles = append(d.Quantiles, sorted[i])
	}
	return d
}

// keysOf names n keys.
func keysOf(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%06d", i)
	}
	return keys
}

// liveValue and candValue are the two versions' values of key i: different for every key.
func liveValue(i int) (float64, bool) { return (float64(i%1000) + 0.5) / 1000, true }
func candValue(i int) (float64, bool) {
	v, _ := liveValue(i)
	return v + 0.001 + float64(i%7)/1e4, true
}

// refBucket is the documented bucket, computed here without the service's code.
func refBucket(salt, unit string) uint32 {
	h := sha256.Sum256([]byte(salt + ":" + unit))
	return binary.BigEndian.Uint32(h[:4]) % 10000
}

// releaseService starts a service whose release loop flushes every flush and whose judge
// waits grace past an interval's end, and waits until it is ready.
func releaseService(t testing.TB, cfgYAML string, flush, grace time.Duration) (*lookup.Service, string) {
	t.Helper()
	svc, base := startServiceWith(t, cfgYAML, quiet, func(svc *lookup.Service) { lookup.SetReleaseTiming(svc, nil, flush, grace) })
	eventually(t, 10*time.Second, "service ready", svc.Ready)
	return svc, base
}

// batchAnswer is the decoded answer of :batchGet.
type batchAnswer struct {
	Version string `json:"version"`
	Answers []struct {
		Key     string             `json:"key"`
		Version string             `json:"version"`
		Arm     string             `json:"arm"`
		Source  string             `json:"source"`
		Value   map[string]float64 `json:"value"`
		Error   *lookup.Error      `json:"error"`
	} `json:"answers"`
}

func batchGet(t testing.TB, base string, keys []string, header ...string) batchAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"keys": keys})
	r := call(t, "POST", base+"/v1/churn:batchGet", string(body), header...)
	if r.status != 200 {
		t.Fatalf("batchGet: got %d %s", r.status, r.raw)
	}
	var b batchAnswer
	if err := json.Unmarshal([]byte(r.raw), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// releaseOf is GET /v1/churn:release decoded.
func releaseOf(t testing.TB, base string) *lookup.ReleaseStatus {
	t.Helper()
	r := call(t, "GET", base+"/v1/churn:release", "")
	if r.status != 200 {
		t.Fatalf("GET :release: got %d %s", r.status, r.raw)
	}
	var a lookup.ReleaseAnswer
	if err := json.Unmarshal([]byte(r.raw), &a); err != nil {
		t.Fatal(err)
	}
	return a.Release
}

func releaseAction(t testing.TB, base, body string) *lookup.ReleaseStatus {
	t.Helper()
	r := call(t, "POST", base+"/v1/churn:release", body, auth...)
	if r.status != 200 {
		t.Fatalf("POST :release %s: got %d %s", body, r.status, r.raw)
	}
	var a lookup.ReleaseAnswer
	if err := json.Unmarshal([]byte(r.raw), &a); err != nil {
		t.Fatal(err)
	}
	return a.Release
}

// storeConfig serves namespace churn from url with the admin token.
func storeConfig(url string) string {
	return "admin_token_file: token\nnamespaces:\n  churn:\n    store: " + url + "\n"
}

// TestACanaryRoutesByTheDocumentedHash: a canary at 10% over 20,000 distinct keys sends
// 10% ± 1% to the candidate, each key to the arm that the documented hash gives, every
// answer exact for its version; an abort returns every key to live.
func TestACanaryRoutesByTheDocumentedHash(t *testing.T) {
	t.Run("on redis", func(t *testing.T) {
		url := redistest.Standalone(t)
		s, err := writers.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		canaryRouting(t, s, url)
	})
	t.Run("on pebble", func(t *testing.T) {
		s, url := pebbleStore(t)
		canaryRouting(t, s, url)
	})
}

func canaryRouting(t *testing.T, s *writers.Store, url string) {
	const n = 20000
	keys := keysOf(n)
	v1 := putVersion(t, s, "churn", "v1", keys, liveValue)
	v2 := putVersion(t, s, "churn", "v2", keys, candValue)
	if _, err := writers.Flip(context.Background(), s, "churn", v1.Version); err != nil {
		t.Fatal(err)
	}
	_, base := releaseService(t, storeConfig(url), 100*time.Millisecond, 300*time.Millisecond)

	rel := releaseAction(t, base, `{"action":"start","mode":"canary","candidate":"v2","weight_percent":10}`)
	if rel.State != "running" || rel.WeightPercent != 10 || rel.Salt == "" || rel.Live != "v1" {
		t.Fatalf("start: got %+v", rel)
	}
	want := func(i int, key string) (arm string, version string, value float64) {
		if refBucket(rel.Salt, key) < 1000 {
			v, _ := candValue(i)
			return "candidate", v2.Version, v
		}
		v, _ := liveValue(i)
		return "live", v1.Version, v
	}

	cand := 0
	for from := 0; from < n; from += 1000 {
		b := batchGet(t, base, keys[from:from+1000])
		if b.Version != v1.Version {
			t.Fatalf("batch top-level version: got %s, want the live %s", b.Version, v1.Version)
		}
		for j, a := range b.Answers {
			i := from + j
			arm, version, value := want(i, keys[i])
			if a.Arm != arm || a.Version != version || a.Value["score"] != value || a.Source != lookup.SourcePrecomputed {
				t.Fatalf("key %s: got arm %q version %s score %v (%s), want arm %s version %s score %v",
					keys[i], a.Arm, a.Version, a.Value["score"], a.Source, arm, version, value)
			}
			if arm == "candidate" {
				cand++
			}
		}
	}
	share := float64(cand) / n
	t.Logf("candidate share over %d keys: %.4f (%d keys)", n, share, cand)
	if share < 0.09 || share > 0.11 {
		t.Errorf("candidate share %.4f: want 10%% ± 1%%", share)
	}

	t.Run("a single get names its version in the body and the header", func(t *testing.T) {
		for i := range 50 {
			r := call(t, "GET", base+"/v1/churn/"+keys[i], "")
			arm, version, value := want(i, keys[i])
			if r.status != 200 || r.body["arm"] != arm || r.body["version"] != version || r.header.Get("Staticref-Version") != version ||
				r.body["value"].(map[string]any)["score"] != value {
				t.Fatalf("key %s: got %d %s (header %q), want arm %s version %s", keys[i], r.status, r.raw, r.header.Get("Staticref-Version"), arm, version)
			}
		}
	})
	t.Run("the unit comes from ?unit=, else the Staticref-Unit header", func(t *testing.T) {
		var inCand, inLive string
		for u := 0; inCand == "" || inLive == ""; u++ {
			unit := "user-" + strconv.Itoa(u)
			if refBucket(rel.Salt, unit) < 1000 {
				inCand = unit
			} else {
				inLive = unit
			}
		}
		for _, tc := range []struct{ unit, arm string }{{inCand, "candidate"}, {inLive, "live"}} {
			for i := range 20 {
				r := call(t, "GET", base+"/v1/churn/"+keys[i]+"?unit="+tc.unit, "")
				h := call(t, "GET", base+"/v1/churn/"+keys[i], "", "Staticref-Unit", tc.unit)
				if r.body["arm"] != tc.arm || h.body["arm"] != tc.arm {
					t.Fatalf("unit %s, key %s: got arms %v (?unit=) and %v (header), want %s", tc.unit, keys[i], r.body["arm"], h.body["arm"], tc.arm)
				}
			}
			b := batchGet(t, base, keys[:100], "Staticref-Unit", tc.unit)
			for _, a := range b.Answers {
				if a.Arm != tc.arm {
					t.Fatalf("batch with unit %s: key %s got arm %s, want %s", tc.unit, a.Key, a.Arm, tc.arm)
				}
			}
		}
	})
	t.Run("the status adds up every answer per arm", func(t *testing.T) {
		var st *lookup.ReleaseStatus
		eventually(t, 5*time.Second, "the counts flushed", func() bool {
			st = releaseOf(t, base)
			return st.Arms.Live.Requests+st.Arms.Candidate.Requests == n+50+4*20+2*100
		})
		if st.Arms.Candidate.Requests < int64(cand) || st.Arms.Live.NotFound != 0 || st.Arms.Candidate.NotFound != 0 {
			t.Errorf("arms: got %+v", st.Arms)
		}
	})

	if got, ok := gauge(t, base, `staticref_release_answers_total{arm="candidate",namespace="churn"}`); !ok || got < float64(cand) {
		t.Errorf("staticref_release_answers_total of the candidate: got %v (found %v), want at least %d", got, ok, cand)
	}
	if got, _ := gauge(t, base, `staticref_release_weight_percent{namespace="churn"}`); got != 10 {
		t.Errorf("staticref_release_weight_percent: got %v, want 10", got)
	}

	abort := releaseAction(t, base, `{"action":"abort","reason":"test over"}`)
	if abort.State != "aborted" || abort.WeightPercent != 0 || abort.Reason != "test over" {
		t.Fatalf("abort: got %+v", abort)
	}
	for from := 0; from < n; from += 1000 {
		for j, a := range batchGet(t, base, keys[from:from+1000]).Answers {
			v, _ := liveValue(from + j)
			if a.Arm != "" || a.Version != v1.Version || a.Value["score"] != v {
				t.Fatalf("after the abort, key %s: got arm %q version %s score %v, want live %s", a.Key, a.Arm, a.Version, a.Value["score"], v1.Version)
			}
		}
	}
	if live, _ := s.Live(context.Background(), "churn"); live != v1.Version {
		t.Errorf("live pointer after the abort: got %s, want %s", live, v1.Version)
	}
}

// TestReleaseActionsAnswerClearErrors: the error table of POST /v1/{ns}:release.
func TestReleaseActionsAnswerClearErrors(t *testing.T) {
	s, url := pebbleStore(t)
	keys := keysOf(10)
	putVersion(t, s, "churn", "v1", keys, liveValue)
	putVersion(t, s, "churn", "v2", keys, candValue)
	if err := s.PutManifest(context.Background(), &writers.Manifest{Namespace: "churn", Version: "v-writing", State: writers.StateWriting}); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.Flip(context.Background(), s, "churn", "v1"); err != nil {
		t.Fatal(err)
	}
	_, base := releaseService(t, storeConfig(url), 100*time.Millisecond, 300*time.Millisecond)

	if r := releaseOf(t, base); r != nil {
		t.Fatalf("before any release: got %+v, want null", r)
	}
	steps := []struct {
		name, body string
		token      bool
		status     int
		code       string
	}{
		{"without the token it is 401", `{"action":"pause"}`, false, 401, lookup.CodeUnauthenticated},
		{"an unknown action is 400", `{"action":"explode"}`, true, 400, lookup.CodeInvalid},
		{"an unknown field is 400", `{"action":"start","colour":"red"}`, true, 400, lookup.CodeInvalid},
		{"pausing before any release is 404", `{"action":"pause"}`, true, 404, lookup.CodeNotFound},
		{"an unknown mode is 400", `{"action":"start","mode":"yolo","candidate":"v2"}`, true, 400, lookup.CodeInvalid},
		{"steps that do not end at 100 are 400", `{"action":"start","mode":"canary","candidate":"v2","steps":[10,50]}`, true, 400, lookup.CodeInvalid},
		{"a candidate that does not exist is 404", `{"action":"start","mode":"canary","candidate":"v9","weight_percent":5}`, true, 404, lookup.CodeNotFound},
		{"a candidate that is not complete is 409", `{"action":"start","mode":"canary","candidate":"v-writing","weight_percent":5}`, true, 409, lookup.CodeConflict},
		{"the live version as candidate is 400", `{"action":"start","mode":"canary","candidate":"v1","weight_percent":5}`, true, 400, lookup.CodeInvalid},
		{"a bad interval is 400", `{"action":"start","mode":"canary","candidate":"v2","steps":[50,100],"interval":"soon"}`, true, 400, lookup.CodeInvalid},
		{"a good start is 200", `{"action":"start","mode":"canary","candidate":"v2","steps":[50,100],"interval":"1h","min_requests":5}`, true, 200, ""},
		{"a second start is 409", `{"action":"start","mode":"ab","candidate":"v2","weight_percent":50}`, true, 409, lookup.CodeConflict},
		{"resuming a running release is 409", `{"action":"resume"}`, true, 409, lookup.CodeConflict},
		{"pause is 200", `{"action":"pause"}`, true, 200, ""},
		{"resume is 200", `{"action":"resume"}`, true, 200, ""},
		{"abort is 200", `{"action":"abort"}`, true, 200, ""},
		{"pausing an aborted release is 409", `{"action":"pause"}`, true, 409, lookup.CodeConflict},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var h []string
			if st.token {
				h = auth
			}
			r := call(t, "POST", base+"/v1/churn:release", st.body, h...)
			code := ""
			if e, ok := r.body["error"].(map[string]any); ok {
				code, _ = e["code"].(string)
			}
			if r.status != st.status || code != st.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, st.status, st.code)
			}
		})
	}
	rel := releaseOf(t, base)
	var outcomes []string
	for _, j := range rel.History {
		outcomes = append(outcomes, j.Outcome)
	}
	if got := strings.Join(outcomes, ","); got != "start,pause,resume,abort" || rel.Canary == nil || rel.Canary.MinRequests != 5 {
		t.Errorf("history %s, canary %+v; want start,pause,resume,abort with min_requests 5", got, rel.Canary)
	}
}

// TestShadowAnswersFromLiveAndMeasuresTheCandidate: a shadow answers every request from
// live and reports the mean |Δ| of the keys requested within 5% of the true one; a
// sample_percent of 25 compares about a quarter of them.
func TestShadowAnswersFromLiveAndMeasuresTheCandidate(t *testing.T) {
	const n = 3000
	s, url := pebbleStore(t)
	keys := keysOf(n)
	diff := func(i int) float64 { return 0.002 + float64((i*37)%100)/1000 } // 0.002 .. 0.101
	v1 := putVersion(t, s, "churn", "v1", keys, liveValue)
	putVersion(t, s, "churn", "v2", keys, func(i int) (float64, bool) {
		v, _ := liveValue(i)
		return v + diff(i), i%10 != 3 // a tenth of the keys are missing
	})
	// Another candidate for the second shadow: a release's id is its start second and its
	// candidate, and the counters are the id's.
	putVersion(t, s, "churn", "v3", keys, candValue)
	if _, err := writers.Flip(context.Background(), s, "churn", v1.Version); err != nil {
		t.Fatal(err)
	}
	_, base := releaseService(t, storeConfig(url), 100*time.Millisecond, 300*time.Millisecond)

	// Requests for a subset: the first two thirds of the keys, some twice.
	var asked []int
	for i := range 2 * n / 3 {
		asked = append(asked, i)
	}
	asked = append(asked, asked[:500]...)
	var trueSum float64
	var compared, missing int64
	for _, i := range asked {
		if i%10 == 3 {
			missing++
			continue
		}
		v, _ := liveValue(i)
		trueSum += math.Abs((v + diff(i)) - v)
		compared++
	}
	trueMean := trueSum / float64(compared)

	rel := releaseAction(t, base, `{"action":"start","mode":"shadow","candidate":"v2","sample_percent":100}`)
	if rel.Mode != "shadow" || rel.Shadow == nil {
		t.Fatalf("start: got %+v", rel)
	}
	ask := func(idx []int) {
		for from := 0; from < len(idx); from += 250 {
			batch := idx[from:min(from+250, len(idx))]
			ks := make([]string, len(batch))
			for j, i := range batch {
				ks[j] = keys[i]
			}
			for j, a := range batchGet(t, base, ks).Answers {
				v, _ := liveValue(batch[j])
				if a.Version != v1.Version || a.Arm != "" || a.Value["score"] != v {
					t.Fatalf("shadow answer of %s: got version %s arm %q score %v, want live %s score %v", a.Key, a.Version, a.Arm, a.Value["score"], v1.Version, v)
				}
			}
		}
	}
	ask(asked[:len(asked)-20])
	for _, i := range asked[len(asked)-20:] { // and a few single gets
		r := call(t, "GET", base+"/v1/churn/"+keys[i], "")
		if r.body["version"] != v1.Version || r.body["arm"] != nil {
			t.Fatalf("shadow single get: got %s, want version %s and no arm", r.raw, v1.Version)
		}
	}

	var st *lookup.ReleaseStatus
	took := eventually(t, 10*time.Second, "every sampled key compared", func() bool {
		st = releaseOf(t, base)
		sh := st.Shadow
		return sh != nil && sh.Sampled == int64(len(asked)) && sh.Compared+sh.Missing+sh.Dropped == sh.Sampled
	})
	sh := st.Shadow
	if sh.MeanAbsDiff == nil || sh.PSI == nil {
		t.Fatalf("shadow status: got %+v, want a mean |Δ| and a PSI", sh)
	}
	relErr := math.Abs(*sh.MeanAbsDiff-trueMean) / trueMean
	t.Logf("shadow at 100%%: %d sampled, %d compared, %d missing, %d dropped (settled in %s); mean |Δ| %.6f, true %.6f, error %.3f%%; psi %.4f",
		sh.Sampled, sh.Compared, sh.Missing, sh.Dropped, took.Round(time.Millisecond), *sh.MeanAbsDiff, trueMean, 100*relErr, *sh.PSI)
	if relErr > 0.05 {
		t.Errorf("mean |Δ| %.6f: want within 5%% of the true %.6f", *sh.MeanAbsDiff, trueMean)
	}
	if sh.Dropped == 0 && (sh.Compared != compared || sh.Missing != missing) {
		t.Errorf("compared %d, missing %d: want %d and %d", sh.Compared, sh.Missing, compared, missing)
	}

	t.Run("a sample_percent of 25 compares about a quarter of the requests", func(t *testing.T) {
		releaseAction(t, base, `{"action":"abort"}`)
		releaseAction(t, base, `{"action":"start","mode":"shadow","candidate":"v3","sample_percent":25}`)
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		ask(all)
		// The last keys are sampled after their answers were written: wait until the
		// counts have stayed the same, and add up, for five flush intervals.
		var sh *lookup.ShadowStatus
		var last lookup.ShadowStatus
		var since time.Time
		eventually(t, 10*time.Second, "the sampled keys compared", func() bool {
			sh = releaseOf(t, base).Shadow
			if sh == nil || sh.Sampled == 0 || sh.Compared+sh.Missing+sh.Dropped != sh.Sampled {
				return false
			}
			if sh.Sampled != last.Sampled || sh.Compared != last.Compared {
				last, since = *sh, time.Now()
			}
			return time.Since(since) > 500*time.Millisecond
		})
		share := float64(sh.Sampled) / n
		var sum float64
		for i := range n {
			l, _ := liveValue(i)
			c, _ := candValue(i)
			sum += math.Abs(c - l)
		}
		trueMean := sum / n
		if sh.MeanAbsDiff == nil {
			t.Fatalf("shadow status: got %+v, want a mean |Δ|", sh)
		}
		relErr := math.Abs(*sh.MeanAbsDiff-trueMean) / trueMean
		t.Logf("shadow at 25%%: %d of %d requests sampled (%.3f); mean |Δ| %.6f, true %.6f over all requested, error %.2f%%",
			sh.Sampled, n, share, *sh.MeanAbsDiff, trueMean, 100*relErr)
		if relErr > 0.05 {
			t.Errorf("mean |Δ| %.6f from a 25%% sample: want within 5%% of the true %.6f", *sh.MeanAbsDiff, trueMean)
		}
		if share < 0.22 || share > 0.28 {
			t.Errorf("sampled share %.3f: want about 0.25", share)
		}
	})
}

// TestABSplitsUnitsAndFlagsASampleRatioMismatch: an A/B test at 50/50 over 4,000 units
// splits within ± 3% with an SRM p-value above 0.001; extra units of one arm, added to
// the store by hand as another replica's sketch, are flagged (p < 0.001).
func TestABSplitsUnitsAndFlagsASampleRatioMismatch(t *testing.T) {
	const units = 4000
	s, url := pebbleStore(t)
	keys := keysOf(100)
	v1 := putVersion(t, s, "churn", "v1", keys, liveValue)
	v2 := putVersion(t, s, "churn", "v2", keys, candValue)
	if _, err := writers.Flip(context.Background(), s, "churn", v1.Version); err != nil {
		t.Fatal(err)
	}
	_, base := releaseService(t, storeConfig(url), 100*time.Millisecond, 300*time.Millisecond)
	rel := releaseAction(t, base, `{"action":"start","mode":"ab","candidate":"v2","weight_percent":50}`)

	var mu sync.Mutex
	arms := map[string]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for u := w; u < units; u += 4 {
				unit := "user-" + strconv.Itoa(u)
				i := u % len(keys)
				r := call(t, "GET", base+"/v1/churn/"+keys[i]+"?unit="+unit, "")
				wantArm, wantVersion := "live", v1.Version
				if refBucket(rel.Salt, unit) < 5000 {
					wantArm, wantVersion = "candidate", v2.Version
				}
				if r.body["arm"] != wantArm || r.body["version"] != wantVersion {
					t.Errorf("unit %s: got %s, want arm %s version %s", unit, r.raw, wantArm, wantVersion)
					return
				}
				mu.Lock()
				arms[wantArm]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	share := float64(arms["candidate"]) / units
	if share < 0.47 || share > 0.53 {
		t.Errorf("candidate share %.4f of %d units: want 50%% ± 3%%", share, units)
	}

	var st *lookup.ReleaseStatus
	eventually(t, 5*time.Second, "the sketches stored", func() bool {
		st = releaseOf(t, base)
		return st.Units != nil && st.Units.Live+st.Units.Candidate > units*0.97
	})
	if st.SRMPValue == nil {
		t.Fatalf("status: no srm_p_value in %+v", st)
	}
	t.Logf("A/B 50/50: %d of %d units to the candidate (%.4f); distinct units estimated live %d, candidate %d; SRM p-value %.4f",
		arms["candidate"], units, share, st.Units.Live, st.Units.Candidate, *st.SRMPValue)
	if *st.SRMPValue <= 0.001 {
		t.Errorf("SRM p-value %.5f for a fair split: want above 0.001", *st.SRMPValue)
	}

	// A replica that saw 600 more candidate units than the weights allow.
	extra := handSketch(t, 600, "skewed-")
	if err := s.PutSketch(context.Background(), "churn", rel.ID, "units.candidate", "by-hand", extra); err != nil {
		t.Fatal(err)
	}
	st = releaseOf(t, base)
	t.Logf("after 600 extra candidate units: distinct units live %d, candidate %d; SRM p-value %.3g",
		st.Units.Live, st.Units.Candidate, *st.SRMPValue)
	if *st.SRMPValue >= 0.001 {
		t.Errorf("SRM p-value %.5f for a skewed split: want below 0.001", *st.SRMPValue)
	}
	eventually(t, 5*time.Second, "the SRM gauge flags it", func() bool {
		v, ok := gauge(t, base, `staticref_release_srm_p_value{namespace="churn"}`)
		return ok && v < 0.001
	})
}

// handSketch is a distinct-unit sketch of n units, made as a replica makes one.
func handSketch(t testing.TB, n int, prefix string) []byte {
	t.Helper()
	sk := hyperloglog.New14()
	for i := range n {
		sk.Insert([]byte(prefix + strconv.Itoa(i)))
	}
	b, err := sk.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gauge reads one sample of the service's /metrics.
func gauge(t testing.TB, base, series string) (float64, bool) {
	t.Helper()
	r := call(t, "GET", base+"/metrics", "")
	for _, line := range strings.Split(r.raw, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// fakeClock is a clock that the test moves.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}
func (c *fakeClock) now() time.Time      { return *c.t.Load() }
func (c *fakeClock) set(t time.Time)     { c.t.Store(&t) }
func (c *fakeClock) add(d time.Duration) { c.set(c.now().Add(d)) }

// uniformHist adds n answers per decile bin of arm to counts.
func uniformHist(counts map[string]int64, arm string, n int64) map[string]int64 {
	for b := range 10 {
		counts[arm+".hist."+strconv.Itoa(b)] = n
	}
	return counts
}

// TestTheJudgeDecidesEachIntervalFromTheStoredCounts drives the judge with a clock of
// its own over counts added to the store by hand (as the replicas add theirs): no data
// holds, a pass steps, a pass at 100 (live's rates from the interval before, since live
// has no traffic at 100) promotes, and a candidate whose answers drift fails on PSI and
// is aborted after failure_limit intervals.
func TestTheJudgeDecidesEachIntervalFromTheStoredCounts(t *testing.T) {
	ctx := context.Background()
	s, url := pebbleStore(t)
	keys := keysOf(100)
	putVersion(t, s, "churn", "v1", keys, liveValue)
	putVersion(t, s, "churn", "v2", keys, candValue)
	if _, err := writers.Flip(ctx, s, "churn", "v1"); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte(adminToken), 0o600)
	path := filepath.Join(dir, "serve.yaml")
	os.WriteFile(path, []byte(storeConfig(url)), 0o644)
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	lookup.SetReleaseTiming(svc, clock.now, 20*time.Millisecond, 2*time.Second)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close() })
	eventually(t, 10*time.Second, "service ready", svc.Ready)
	base := "http://" + ln.Addr().String()

	rel := releaseAction(t, base, `{"action":"start","mode":"canary","candidate":"v2","steps":[50,100],"interval":"1m","min_requests":100}`)
	judged := func(outcome string, interval int64) writers.Judgement {
		t.Helper()
		var found writers.Judgement
		eventually(t, 5*time.Second, fmt.Sprintf("a %s of interval %d", outcome, interval), func() bool {
			for _, j := range releaseOf(t, base).History {
				if j.Outcome == outcome && j.Interval == interval {
					found = j
					return true
				}
			}
			return false
		})
		return found
	}
	add := func(interval int64, counts map[string]int64) {
		t.Helper()
		if err := s.AddCounts(ctx, "churn", rel.ID, interval, counts); err != nil {
			t.Fatal(err)
		}
	}

	// Interval 0: the candidate has too few requests.
	add(0, map[string]int64{"live.requests": 1000, "candidate.requests": 10})
	clock.add(time.Minute + 3*time.Second)
	if j := judged("hold", 0); j.Metric != "requests" || j.Value != 10 || j.Limit != 100 || j.Weight != 50 {
		t.Errorf("hold: got %+v, want requests 10 < 100 at weight 50", j)
	}
	// Interval 1: both arms alike: a pass, and the step to 100.
	add(1, uniformHist(map[string]int64{"live.requests": 1000, "live.not_found": 10, "candidate.requests": 1000, "candidate.not_found": 12}, "candidate", 100))
	clock.add(time.Minute)
	judged("pass", 1)
	if j := judged("step", 1); j.Weight != 100 {
		t.Errorf("step: got %+v, want weight 100", j)
	}
	// Interval 2, at 100: live has no traffic; its rates come from interval 1.
	add(2, uniformHist(map[string]int64{"candidate.requests": 1000, "candidate.not_found": 11}, "candidate", 100))
	clock.add(time.Minute)
	if j := judged("pass", 2); !strings.Contains(j.Reason, "from interval 1") {
		t.Errorf("pass at 100: got %+v, want live's rates from interval 1", j)
	}
	judged("promote", 0)
	eventually(t, 5*time.Second, "v2 live", func() bool { l, _ := s.Live(ctx, "churn"); return l == "v2" })

	// A fixed-weight canary whose answers all fall in live's lowest decile.
	clock.add(time.Hour)
	bad := releaseAction(t, base, `{"action":"start","mode":"canary","candidate":"v1","weight_percent":20,"interval":"1m","min_requests":100,"failure_limit":2}`)
	rel = bad
	for i := range int64(2) {
		add(i, map[string]int64{"live.requests": 1000, "candidate.requests": 1000, "candidate.hist.0": 1000})
		clock.add(time.Minute + 3*time.Second)
		if j := judged("fail", i); j.Metric != "psi" || j.Value < 5 || j.Limit != 0.25 || j.Weight != 20 {
			t.Errorf("fail %d: got %+v, want psi over 0.25 at weight 20", i, j)
		}
		clock.add(-3 * time.Second)
	}
	var st *lookup.ReleaseStatus
	eventually(t, 5*time.Second, "the drifting candidate aborted", func() bool {
		st = releaseOf(t, base)
		return st.State == "aborted"
	})
	if !strings.Contains(st.Reason, "psi") || !strings.Contains(st.Reason, "> 0.25") {
		t.Errorf("abort reason %q: want it to name psi, its value and 0.25", st.Reason)
	}
	if l, _ := s.Live(ctx, "churn"); l != "v2" {
		t.Errorf("live after the abort: got %s, want v2 untouched", l)
	}
	for series, want := range map[string]float64{
		`staticref_release_aborts_total{namespace="churn",reason="psi"}`:       1,
		`staticref_release_judgements_total{namespace="churn",outcome="fail"}`: 2,
		`staticref_release_judgements_total{namespace="churn",outcome="pass"}`: 2,
		`staticref_release_judgements_total{namespace="churn",outcome="hold"}`: 1,
	} {
		if got, ok := gauge(t, base, series); !ok || got != want {
			t.Errorf("%s: got %v (found %v), want %v", series, got, ok, want)
		}
	}
}
