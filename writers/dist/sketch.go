package dist

import (
	"errors"
	"fmt"
	"math"

	"github.com/staticref/staticref/writers"
)

// A Sketch summarises float32 values in one pass, in memory bounded by the values' range,
// never by their number, and merges with other sketches exactly: a run keeps one per
// output per row group, stores its state with the row group's commit record, and totals
// the version from those (a resumed or sharded run the same way as a single one).
//
// # The buckets
//
// A value's bucket is the top 16 bits of its float32 bits: sign, the 8 exponent bits and
// the top MantissaBits (7) mantissa bits. Each power of two is thereby split into 128
// buckets of equal width, so a bucket [lo, hi) has hi-lo <= lo/128, and its midpoint is
// within RelativeError (2⁻⁸, 0.39%) of every value in it, relative to the value. (A
// float32 converts to float64 exactly, so this is the float64 log-linear bucketing of
// sign, exponent and top mantissa bits, restricted to the values a model gives.) The
// one exception is the bucket of zero, which also holds the float32 subnormals below
// 2⁻¹³³ in magnitude: it stands for 0, off by less than 2⁻¹³³.
//
// Counts are kept in pages of 128 buckets (one page per sign and exponent), allocated
// when a value first lands in them: a model's outputs span a few dozen exponents, so a
// sketch holds a few dozen KB whatever the number of values, and its stored state (see
// AppendState) has about one number per non-empty bucket: a few hundred numbers, 2 to 4
// KB of JSON, for a row group of 10,000 typical scores.
//
// # What it answers
//
// Count, mean and standard deviation are exact up to float64 rounding (the mean and the
// sum of squared deviations are merged batch by batch, Chan et al.'s parallel form of
// Welford's method), and so are the minimum and maximum. A quantile q is the nearest-rank
// quantile (the value of rank ceil(q*count) in ascending order, rank 1 for q = 0),
// estimated as the midpoint of the bucket that holds that rank, clamped to [min, max]:
// within RelativeError of the exact one, relative to it, and exact at q = 0 and 1. A
// histogram's bins count each bucket by its midpoint, so a bin's count is off only by
// values within RelativeError of one of its edges.
//
// NaN and infinite values are left out of everything (the null gate counts them).
type Sketch struct {
	n        int64
	mean, m2 float64 // m2: the sum of squared deviations from the mean
	min, max float64
	pages    [numPages]*page
}

const (
	// MantissaBits is how many top mantissa bits, beside sign and exponent, name a bucket.
	MantissaBits = 7
	// RelativeError bounds how far a quantile estimate is from the exact one, relative to
	// it: half a bucket's width over its lower edge, 2⁻⁽ᴹᵃⁿᵗⁱˢˢᵃᴮⁱᵗˢ⁺¹⁾.
	RelativeError = 1.0 / (1 << (MantissaBits + 1))

	bucketShift = 23 - MantissaBits      // float32 bits below a bucket's
	pageSlots   = 1 << MantissaBits      // buckets per page
	numBuckets  = 1 << 16                // sign, 8 exponent bits, MantissaBits
	numPages    = numBuckets / pageSlots // one per sign and exponent
	expMask     = 0x7f800000             // float32 exponent bits: all ones is NaN or ±Inf
	stateFormat = 1                      // the first number of a state
	stateHeader = 6                      // format, count, mean, m2, min, max
)

type page [pageSlots]int64

// bucketOf is v's bucket in ascending order of value: a negative value's bucket is its
// 16 top bits inverted (a larger magnitude sorts first), a positive's has the top bit
// set, so -0 and +0 are the neighbouring buckets 0x7fff and 0x8000.
func bucketOf(b uint32) uint16 {
	top := uint16(b >> bucketShift)
	if top&0x8000 != 0 {
		return ^top
	}
	return top | 0x8000
}

// midpoint is the value a bucket stands for.
func midpoint(o uint16) float64 {
	neg := o < 0x8000
	mag := o & 0x7fff
	if neg {
		mag = ^o & 0x7fff
	}
	if mag == 0 {
		return 0 // zero and the tiniest subnormals
	}
	lo := float64(math.Float32frombits(uint32(mag) << bucketShift))
	hi := float64(math.Float32frombits(uint32(mag+1) << bucketShift))
	if math.IsInf(hi, 0) { // the top bucket ends at the largest float32
		hi = math.MaxFloat32
	}
	m := lo + (hi-lo)/2
	if neg {
		return -m
	}
	return m
}

// Count is the number of values added (NaN and infinite ones left out).
func (s *Sketch) Count() int64 { return s.n }

// Add adds values (NaN and infinite ones are skipped). It allocates only when a value
// lands in a power of two the sketch has not seen, so at most numPages times in all.
func (s *Sketch) Add(values []float32) {
	var n int64
	var sum float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		b := math.Float32bits(v)
		if b&expMask == expMask {
			continue
		}
		o := bucketOf(b)
		p := s.pages[o/pageSlots]
		if p == nil {
			p = new(page)
			s.pages[o/pageSlots] = p
		}
		p[o%pageSlots]++
		f := float64(v)
		n++
		sum += f
		lo, hi = min(lo, f), max(hi, f)
	}
	if n == 0 {
		return
	}
	mean := sum / float64(n)
	var m2 float64
	for _, v := range values {
		if math.Float32bits(v)&expMask != expMask {
			d := float64(v) - mean
			m2 += d * d
		}
	}
	s.merge(n, mean, m2, lo, hi)
}

// merge folds a batch's count, mean, squared deviations and range into s.
func (s *Sketch) merge(n int64, mean, m2, lo, hi float64) {
	if n == 0 {
		return
	}
	if s.n == 0 {
		s.n, s.mean, s.m2, s.min, s.max = n, mean, m2, lo, hi
		return
	}
	total := s.n + n
	delta := mean - s.mean
	s.mean += delta * float64(n) / float64(total)
	s.m2 += m2 + delta*delta*float64(s.n)*float64(n)/float64(total)
	s.n = total
	s.min, s.max = min(s.min, lo), max(s.max, hi)
}

// Merge adds every value of o to s, as if they had been added to s.
func (s *Sketch) Merge(o *Sketch) {
	if o == nil || o.n == 0 {
		return
	}
	for i, op := range o.pages {
		if op == nil {
			continue
		}
		p := s.pages[i]
		if p == nil {
			p = new(page)
			s.pages[i] = p
		}
		for j, c := range op {
			p[j] += c
		}
	}
	s.merge(o.n, o.mean, o.m2, o.min, o.max)
}

// each calls fn for every non-empty bucket in ascending order of value.
func (s *Sketch) each(fn func(o uint16, count int64)) {
	for i, p := range s.pages {
		if p == nil {
			continue
		}
		for j, c := range p {
			if c != 0 {
				fn(uint16(i*pageSlots+j), c)
			}
		}
	}
}

// Quantiles estimates the nearest-rank quantiles qs (each in [0, 1], ascending; see
// Sketch): the midpoint of the bucket holding rank ceil(q*count) (at least 1), clamped to
// [min, max]. An empty sketch has none (nil).
func (s *Sketch) Quantiles(qs []float64) []float64 {
	if s.n == 0 {
		return nil
	}
	out := make([]float64, len(qs))
	ranks := make([]int64, len(qs))
	for i, q := range qs {
		ranks[i] = min(max(int64(math.Ceil(q*float64(s.n))), 1), s.n)
	}
	next := 0
	var seen int64
	s.each(func(o uint16, c int64) {
		seen += c
		for next < len(ranks) && ranks[next] <= seen {
			out[next] = min(max(midpoint(o), s.min), s.max)
			next++
		}
	})
	for i, r := range ranks { // the ends are known exactly
		switch r {
		case 1:
			out[i] = s.min
		case s.n:
			out[i] = s.max
		}
	}
	return out
}

// Distribution is s as a manifest records it for output: count, mean, population
// standard deviation, the quantiles p0, p5, ..., p100 and DistributionBins equal-width
// bins from p0 to p100, each bucket counted in the bin of its midpoint (clamped to
// [p0, p100]; a bin is [Edges[i], Edges[i+1]), the last one also holds p100). An empty
// sketch gives a count of 0 and nothing else.
func (s *Sketch) Distribution(output string) writers.Distribution {
	d := writers.Distribution{Output: output, Count: s.n}
	if s.n == 0 {
		return d
	}
	d.Mean = s.mean
	d.Stddev = math.Sqrt(s.m2 / float64(s.n))
	qs := make([]float64, writers.DistributionQuantiles)
	for i := range qs {
		qs[i] = float64(i) / float64(writers.DistributionQuantiles-1)
	}
	d.Quantiles = s.Quantiles(qs)
	lo, hi := s.min, s.max
	edges := make([]float64, writers.DistributionBins+1)
	for i := range edges {
		edges[i] = lo + (hi-lo)*float64(i)/writers.DistributionBins
	}
	edges[writers.DistributionBins] = hi
	counts := make([]int64, writers.DistributionBins)
	inner := edges[1:writers.DistributionBins]
	s.each(func(o uint16, c int64) {
		counts[Bin(inner, min(max(midpoint(o), lo), hi))] += c
	})
	d.Histogram = writers.Histogram{Edges: edges, Counts: counts}
	return d
}

// AppendState appends s's state to dst as plain numbers, for a record that holds
// numbers (a commit record's JSON): the format (1), count, mean, sum of squared
// deviations, min and max, then the non-empty buckets in ascending order as runs of
// neighbours, each run its distance from the end of the previous one (from bucket 0 for
// the first), its length and its counts. Every number is exact in float64 (and in JSON,
// which writes float64s exactly), so LoadState gives back the same sketch; a run of
// scores costs about one number a bucket.
func (s *Sketch) AppendState(dst []float64) []float64 {
	dst = append(dst, stateFormat, float64(s.n), s.mean, s.m2, s.min, s.max)
	end, length := 0, -1 // the bucket after the current run; where its length is
	s.each(func(o uint16, c int64) {
		if int(o) != end || length < 0 {
			dst = append(dst, float64(int(o)-end), 0)
			length = len(dst) - 1
		}
		dst[length]++
		dst = append(dst, float64(c))
		end = int(o) + 1
	})
	return dst
}

// ErrState is wrapped by LoadState's errors: the numbers are not a sketch's state.
var ErrState = errors.New("dist: not a sketch state")

// LoadState adds the sketch whose state AppendState wrote to s. It checks the state
// whole before changing s, so a bad one (ErrState) leaves s as it was.
func (s *Sketch) LoadState(state []float64) error {
	if len(state) < stateHeader || state[0] != stateFormat {
		return fmt.Errorf("%w: %d numbers, want format %d and %d more, then runs", ErrState, len(state), stateFormat, stateHeader-1)
	}
	n, mean, m2, lo, hi := state[1], state[2], state[3], state[4], state[5]
	for _, v := range state[1:stateHeader] {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: a count, mean or range of %v", ErrState, v)
		}
	}
	if !whole(n) || m2 < 0 || lo > hi {
		return fmt.Errorf("%w: count %v, squared deviations %v, range [%v, %v]", ErrState, n, m2, lo, hi)
	}
	var total int64
	end := 0
	runs := state[stateHeader:]
	for i := 0; i < len(runs); {
		if i+2 > len(runs) {
			return fmt.Errorf("%w: a run without its length", ErrState)
		}
		gap, length := runs[i], runs[i+1]
		if !whole(gap) || !whole(length) || length < 1 || float64(len(runs)-i-2) < length {
			return fmt.Errorf("%w: a run %v after the last, of %v buckets, with %d numbers left", ErrState, gap, length, len(runs)-i-2)
		}
		if end += int(gap) + int(length); end > numBuckets {
			return fmt.Errorf("%w: buckets up to %d of %d", ErrState, end, numBuckets)
		}
		for _, c := range runs[i+2 : i+2+int(length)] {
			if !whole(c) || c == 0 {
				return fmt.Errorf("%w: a bucket count of %v", ErrState, c)
			}
			if total > math.MaxInt64-int64(c) {
				return fmt.Errorf("%w: counts overflow", ErrState)
			}
			total += int64(c)
		}
		i += 2 + int(length)
	}
	if total != int64(n) {
		return fmt.Errorf("%w: buckets count %d values, the header %v", ErrState, total, n)
	}
	end = 0
	for i := 0; i < len(runs); {
		o, length := end+int(runs[i]), int(runs[i+1])
		for j, c := range runs[i+2 : i+2+length] {
			b := o + j
			p := s.pages[b/pageSlots]
			if p == nil {
				p = new(page)
				s.pages[b/pageSlots] = p
			}
			p[b%pageSlots] += int64(c)
		}
		end = o + length
		i += 2 + length
	}
	s.merge(int64(n), mean, m2, lo, hi)
	return nil
}

// whole reports whether v is a whole number from 0 to 2⁵³ (exact in float64).
func whole(v float64) bool { return v >= 0 && v <= 1<<53 && v == math.Trunc(v) }
