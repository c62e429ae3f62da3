package lookup

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

func TestTheServiceBucketIsTheDocumentedOne(t *testing.T) {
	long := strings.Repeat("u", 400) // past the stack buffer
	for _, tc := range []struct{ salt, unit string }{
		{"20261127T020000Z-abcdef", "u000000042"}, {"salt", ""}, {"", "k"}, {"s", long}, {"sälz", "ユーザー"},
	} {
		h := sha256.Sum256([]byte(tc.salt + ":" + tc.unit))
		want := binary.BigEndian.Uint32(h[:4]) % 10000
		got, _ := bucketOf(tc.salt, tc.unit)
		if got != want || writers.Bucket(tc.salt, tc.unit) != want {
			t.Errorf("bucket(%q, %.20q): got %d (writers: %d), want %d", tc.salt, tc.unit, got, writers.Bucket(tc.salt, tc.unit), want)
		}
	}
}

func TestFirstValueReadsTheFirstOutputsFirstValue(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{`{"score":0.47,"logit":-0.11}`, 0.47, true},
		{`{"scores":[0.1,0.9]}`, 0.1, true},
		{` { "s" : [ -1.5e-3 ] }`, -1.5e-3, true},
		{`{"out:0\"x":2}`, 2, true},
		{`{"score":null}`, 0, false},
		{`{"scores":[null,1]}`, 0, false},
		{`{}`, 0, false},
		{`[1]`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		got, ok := firstValue([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("firstValue(%s): got %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestRoutingAndCountingDoNotAllocate: what a routed request adds to the hot path, the
// bucket, the arm and the counters, allocates nothing.
func TestRoutingAndCountingDoNotAllocate(t *testing.T) {
	rec := &writers.Release{ID: "r1", Mode: writers.ModeAB, State: writers.ReleaseRunning, WeightPercent: 50, Salt: "r1"}
	live := &Snapshot{Manifest: &writers.Manifest{Version: "v1"}}
	v := &releaseView{rec: rec, routing: true, ab: true, limit: 5000, cand: &Snapshot{Manifest: &writers.Manifest{Version: "v2"}},
		edges: []float64{.1, .2, .3, .4, .5, .6, .7, .8, .9}, c: newReleaseCounters(rec)}
	for i := range v.answers {
		v.answers[i] = prometheus.NewCounter(prometheus.CounterOpts{Name: fmt.Sprintf("x%d", i)})
	}
	value := json.RawMessage(`{"score":0.4711,"logit":-0.1}`)
	unit := "u000000042"
	allocs := testing.AllocsPerRun(1000, func() {
		_, arm, h := v.route(live, unit)
		v.c.units[arm].insert(h)
		v.count(arm, false, false, value)
	})
	if allocs != 0 {
		t.Errorf("routing and counting: %v allocations per request, want 0", allocs)
	}
}

// TestSRMPValueAgreesWithAnIndependentComputation: the chi-squared p-value (gonum) of a
// split against the weights equals, for one degree of freedom, the two-sided normal
// p-value of the binomial z-score, erfc(|z| / sqrt 2), computed here another way.
func TestSRMPValueAgreesWithAnIndependentComputation(t *testing.T) {
	for _, tc := range []struct{ live, cand, weight float64 }{
		{2000, 2000, 50}, {2031, 1969, 50}, {2100, 1900, 50}, {2000, 2600, 50},
		{9000, 1000, 10}, {9100, 900, 10}, {500, 520, 50}, {7000, 3400, 30},
	} {
		n := tc.live + tc.cand
		w := tc.weight / 100
		z := (tc.cand - n*w) / math.Sqrt(n*w*(1-w))
		want := math.Erfc(math.Abs(z) / math.Sqrt2)
		got := srmPValue(tc.live, tc.cand, tc.weight)
		if math.Abs(got-want) > 1e-9*want+1e-15 {
			t.Errorf("srm(%v live, %v candidate at %v%%): got %.10g, want %.10g", tc.live, tc.cand, tc.weight, got, want)
		}
	}
	if p := srmPValue(0, 0, 50); !math.IsNaN(p) {
		t.Errorf("no units: got %v, want NaN", p)
	}
}

func TestDecide(t *testing.T) {
	c := writers.DefaultCanary
	c.MinRequests = 100
	uniform := func(n int64) (h [histBins]int64) {
		for i := range h {
			h[i] = n
		}
		return h
	}
	tests := []struct {
		name       string
		live, cand armTotals
		hist       bool
		outcome    string
		metric     string
	}{
		{"no data holds", armTotals{}, armTotals{}, true, "hold", metricRequests},
		{"a thin candidate holds", armTotals{Requests: 5000}, armTotals{Requests: 99}, true, "hold", metricRequests},
		{"alike arms pass", armTotals{Requests: 1000, NotFound: 10}, armTotals{Requests: 1000, NotFound: 15, hist: uniform(100)}, true, "pass", ""},
		{"more not-found fails", armTotals{Requests: 1000, NotFound: 10}, armTotals{Requests: 1000, NotFound: 30}, true, "fail", metricNotFound},
		{"more errors fail", armTotals{Requests: 1000}, armTotals{Requests: 1000, Errors: 6}, true, "fail", metricErrors},
		{"drifted answers fail", armTotals{Requests: 1000}, armTotals{Requests: 1000, hist: [histBins]int64{1000}}, true, "fail", metricPSI},
		{"without deciles PSI is not judged", armTotals{Requests: 1000}, armTotals{Requests: 1000, hist: [histBins]int64{1000}}, false, "pass", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var expected []float64
			if tt.hist {
				expected = dist.DecileShares()
			}
			v := decide(c, tt.live, tt.cand, expected)
			if v.outcome != tt.outcome || v.metric != tt.metric {
				t.Errorf("got %s %s (%s), want %s %s", v.outcome, v.metric, v.reason, tt.outcome, tt.metric)
			}
		})
	}
}

func TestIntervalOf(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		at   time.Duration
		want int64
	}{{-time.Second, 0}, {0, 0}, {59 * time.Second, 0}, {time.Minute, 1}, {150 * time.Second, 2}} {
		if got := intervalOf(start, time.Minute, start.Add(tc.at)); got != tc.want {
			t.Errorf("interval at %s: got %d, want %d", tc.at, got, tc.want)
		}
	}
	if got := intervalOf(start, 0, start.Add(time.Hour)); got != 0 {
		t.Errorf("no interval: got %d, want 0", got)
	}
}

func TestQueryValue(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"unit=u1", "u1"}, {"country=DE&unit=a%2Fb", "a/b"}, {"units=x&unit=y", "y"}, {"country=DE", ""}, {"unit=a+b", "a b"},
	} {
		if got, _ := queryValue(tc.raw, "unit"); got != tc.want {
			t.Errorf("queryValue(%q): got %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// TestJudgingACandidateLikeATiedLivePasses: a live version whose output ties across its
// deciles (a discrete score: 70% zeros, 30% ones) does not hold a tenth of its values in
// each decile bin. A candidate answering exactly live's values must pass the PSI check,
// in the canary judgement and in the shadow's status alike.
func TestJudgingACandidateLikeATiedLivePasses(t *testing.T) {
	values := make([]float32, 10000)
	for i := range values {
		if i%10 >= 7 {
			values[i] = 1
		}
	}
	var sk dist.Sketch
	sk.Add(values)
	edges, shares := decileBins(sk.Distribution("score"))
	cand := armTotals{Requests: 2000}
	for i := range 2000 {
		cand.hist[dist.Bin(edges, float64(values[i]))]++
	}
	hist := cand.hist[:]
	c := writers.DefaultCanary
	c.MinRequests = 100
	if v := decide(c, armTotals{Requests: 2000}, cand, shares); v.outcome != "pass" {
		t.Errorf("canary: got %s %s (%s), want pass", v.outcome, v.metric, v.reason)
	}
	counts := map[string]int64{"shadow.compared": 2000}
	for b, n := range hist {
		counts[fmt.Sprintf("shadow.hist.%d", b)] = n
	}
	switch sh := shadowStatus(counts, shares); {
	case sh.PSI == nil:
		t.Error("shadow: got no PSI, want a number below 0.05")
	case *sh.PSI > 0.05:
		t.Errorf("shadow: got PSI %v, want below 0.05", *sh.PSI)
	}
}
