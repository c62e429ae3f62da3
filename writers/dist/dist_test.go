package dist

import (
	"math"
	"testing"

	"github.com/staticref/staticref/writers"
)

func TestPSIIsTheTextbookSum(t *testing.T) {
	// Independent: PSI = sum (a-e) ln(a/e) with the example shares written out.
	expected := []float64{0.25, 0.25, 0.25, 0.25}
	actual := []int64{10, 20, 30, 40}
	want := (0.1-0.25)*math.Log(0.1/0.25) + (0.2-0.25)*math.Log(0.2/0.25) + (0.3-0.25)*math.Log(0.3/0.25) + (0.4-0.25)*math.Log(0.4/0.25)
	if got := PSI(expected, actual); math.Abs(got-want) > 1e-12 {
		t.Errorf("PSI = %v, want %v", got, want)
	}
	if got := PSI(expected, []int64{25, 25, 25, 25}); got != 0 {
		t.Errorf("PSI of the expected shares = %v, want 0", got)
	}
	empty := PSI(expected, []int64{0, 50, 25, 25})
	wantEmpty := (1e-4-0.25)*math.Log(1e-4/0.25) + (0.5-0.25)*math.Log(0.5/0.25)
	if math.Abs(empty-wantEmpty) > 1e-12 {
		t.Errorf("PSI with an empty bin = %v, want %v (floored at 1e-4)", empty, wantEmpty)
	}
	if !math.IsNaN(PSI(expected, []int64{0, 0, 0, 0})) {
		t.Error("PSI of no counts is a number, want NaN")
	}
}

func TestDecilesBinsAndShares(t *testing.T) {
	// A uniform distribution on [0, 100]: quantile p_k is k.
	q := make([]float64, writers.DistributionQuantiles)
	for i := range q {
		q[i] = float64(i * 5)
	}
	d := writers.Distribution{Quantiles: q}
	edges := Deciles(d)
	if len(edges) != 9 || edges[0] != 10 || edges[8] != 90 {
		t.Fatalf("Deciles = %v, want 10, 20, ..., 90", edges)
	}
	for v, want := range map[float64]int{-1: 0, 9.99: 0, 10: 1, 55: 5, 90: 9, 1e9: 9} {
		if got := Bin(edges, v); got != want {
			t.Errorf("Bin(%v) = %d, want %d", v, got, want)
		}
	}
	shares := SharesOver(d, edges)
	for i, s := range shares {
		if math.Abs(s-0.1) > 1e-12 {
			t.Errorf("share %d of a uniform over its own deciles = %v, want 0.1", i, s)
		}
	}
	// Shifted by 20: the first two live bins are empty, the last holds 0.3.
	shifted := make([]float64, len(q))
	for i := range q {
		shifted[i] = q[i] + 20
	}
	got := SharesOver(writers.Distribution{Quantiles: shifted}, edges)
	want := []float64{0, 0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Errorf("shifted share %d = %v, want %v", i, got[i], want[i])
		}
	}
	if psi := PSIOfShares(DecileShares(), got); psi < 0.25 {
		t.Errorf("PSI of a shift by a fifth of the range = %v, want a big one (> 0.25)", psi)
	}
}

// TestBinSharesOfTiedValuesAreWhatBinCounts: a live version whose values tie across
// deciles (70% zeros, 30% ones) does not put a tenth of its values in each decile bin.
// The expected shares the canary and shadow PSI use must be those Bin gives the version's
// own values (counted here directly), so that a candidate identical to live has a PSI
// near 0, not a large one.
func TestBinSharesOfTiedValuesAreWhatBinCounts(t *testing.T) {
	values := make([]float32, 10000)
	for i := range values {
		if i%10 >= 7 {
			values[i] = 1
		}
	}
	var s Sketch
	s.Add(values)
	d := s.Distribution("score")
	edges := Deciles(d)
	counts := make([]int64, len(edges)+1)
	for _, v := range values {
		counts[Bin(edges, float64(v))]++
	}
	shares := BinShares(d, edges)
	if psi := PSI(shares, counts); psi > 0.05 {
		t.Errorf("PSI of the version's own values against BinShares = %v, want below 0.05 (shares %v, counts %v)", psi, shares, counts)
	}
	// Continuous values: a tenth in each bin.
	for i := range values {
		values[i] = float32(i) / 10000
	}
	var c Sketch
	c.Add(values)
	for i, sh := range BinShares(c.Distribution("score"), Deciles(c.Distribution("score"))) {
		if math.Abs(sh-0.1) > 1e-9 {
			t.Errorf("continuous values: share of bin %d = %v, want 0.1", i, sh)
		}
	}
}
