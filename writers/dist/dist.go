// Package dist compares the distributions of a version's outputs: the decile bins of a
// live version's distribution, which bin a value falls in, and the population stability
// index (PSI) of observed counts against those bins. The drift gates (pipeline), the
// shadow comparison and the canary judgement (lookup) all use it, so all compute PSI the
// same way: over the live version's deciles, empty bins floored at Floor. A Sketch
// (sketch.go) computes a version's distributions in the pass that writes it, mergeably,
// so that a resumed or sharded run totals them from its row groups' records.
package dist

import (
	"math"
	"sort"

	"github.com/staticref/staticref/writers"
)

// Floor is the share an empty bin counts as in PSI, so that one empty bin does not make
// the index infinite.
const Floor = 1e-4

// Deciles returns the nine inner decile edges of d (p10, p20, ..., p90), which split its
// values into ten bins of a tenth each: bin 0 is below p10, bin 9 at or above p90. It
// returns nil when d has no quantiles.
func Deciles(d writers.Distribution) []float64 {
	if len(d.Quantiles) != writers.DistributionQuantiles {
		return nil
	}
	edges := make([]float64, 0, 9)
	for q := 2; q <= 18; q += 2 { // quantiles are p0, p5, ..., p100
		edges = append(edges, d.Quantiles[q])
	}
	return edges
}

// Bin is the index of the bin of v among edges (sorted): the number of edges at or
// below v, so len(edges)+1 bins in all. NaN falls in no bin (-1).
func Bin(edges []float64, v float64) int {
	if math.IsNaN(v) {
		return -1
	}
	return sort.Search(len(edges), func(i int) bool { return edges[i] > v })
}

// PSI is the population stability index of actual counts against expected shares, bin
// by bin: sum over bins of (a - e) * ln(a / e), with a and e the shares of each bin and
// both floored at Floor. expected shares must add up to 1; an actual with no counts has
// no index (NaN).
func PSI(expected []float64, actual []int64) float64 {
	var total int64
	for _, n := range actual {
		total += n
	}
	if total == 0 || len(expected) != len(actual) {
		return math.NaN()
	}
	shares := make([]float64, len(actual))
	for i, n := range actual {
		shares[i] = float64(n) / float64(total)
	}
	return PSIOfShares(expected, shares)
}

// DecileShares is what PSI expects of a live version's own values over its deciles when
// none tie: a tenth in each of the ten bins (BinShares is the general case).
func DecileShares() []float64 {
	s := make([]float64, 10)
	for i := range s {
		s[i] = 0.1
	}
	return s
}

// BinShares estimates the shares of d's values in the bins that edges make as Bin assigns
// them (a value equal to an edge is in the bin above it), from d's quantiles: what PSI
// expects of the live version's own values over its deciles (BinShares(d, Deciles(d))). It
// is a tenth in each bin unless values tie across a decile, as a discrete output's do.
func BinShares(d writers.Distribution, edges []float64) []float64 {
	return sharesBy(d, edges, cdfBelow)
}

// sharesBy is the shares of d's values in the bins of edges, from a cumulative share cdf.
func sharesBy(d writers.Distribution, edges []float64, cdf func(q []float64, x float64) float64) []float64 {
	if len(d.Quantiles) != writers.DistributionQuantiles {
		return nil
	}
	shares := make([]float64, len(edges)+1)
	prev := 0.0
	for i, e := range edges {
		c := cdf(d.Quantiles, e)
		shares[i] = c - prev
		prev = c
	}
	shares[len(edges)] = 1 - prev
	return shares
}

// cdfBelow is the share of values strictly below x, interpolated between quantiles q (p0..p100
// in equal steps).
func cdfBelow(q []float64, x float64) float64 {
	n := len(q) - 1
	switch {
	case x <= q[0]:
		return 0
	case x > q[n]:
		return 1
	}
	// The first quantile at or above x; linear from the one before it.
	i := sort.Search(len(q), func(i int) bool { return q[i] >= x })
	lo, hi := q[i-1], q[i]
	frac := 1.0
	if hi > lo {
		frac = (x - lo) / (hi - lo)
	}
	return (float64(i-1) + frac) / float64(n)
}

// SharesOver estimates the shares of d's values in the bins that edges make, from d's
// quantiles (linear between neighbouring quantiles): for comparing a candidate version's
// recorded distribution with the live version's deciles without reading any row.
func SharesOver(d writers.Distribution, edges []float64) []float64 {
	return sharesBy(d, edges, cdf)
}

// cdf is the share of values at or below x, interpolated between quantiles q (p0..p100 in
// equal steps).
func cdf(q []float64, x float64) float64 {
	n := len(q) - 1
	switch {
	case x < q[0]:
		return 0
	case x >= q[n]:
		return 1
	}
	// The last quantile at or below x, then linear to the next.
	i := sort.Search(len(q), func(i int) bool { return q[i] > x }) - 1
	lo, hi := q[i], q[i+1]
	frac := 0.0
	if hi > lo {
		frac = (x - lo) / (hi - lo)
	} else {
		frac = 1 // a run of equal quantiles: all of them are at or below x
	}
	return (float64(i) + frac) / float64(n)
}

// PSIOfShares is PSI for estimated shares (as SharesOver gives) against expected ones.
func PSIOfShares(expected, actual []float64) float64 {
	if len(expected) != len(actual) {
		return math.NaN()
	}
	var psi float64
	for i, e := range expected {
		a := max(actual[i], Floor)
		e = max(e, Floor)
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}
