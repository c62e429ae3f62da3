package pipeline

import (
	"fmt"
	"math"
	"slices"

	"github.com/staticref/staticref/writers"
)

// Cold-start defaults are computed in one pass, in memory bounded by configuration: a mean
// is a running sum; a median is estimated from a uniform reservoir sample of at most
// globalReservoir values per output element (segmentReservoir per segment), which is exact
// while a version (or segment) has fewer rows than that. At most MaxSegments distinct
// segment values are kept; more is an error, since segment_by then names no category.
const (
	globalReservoir  = 1 << 16
	segmentReservoir = 1 << 10
	// MaxSegments is the most distinct values defaults.segment_by may take.
	MaxSegments = 10000
)

// accumulator summarises one population (all rows, or one segment) for every output value.
type accumulator struct {
	n      int64
	sums   []float64
	sample [][]float64 // per value, when the method is median
	limit  int
}

func newAccumulator(width int, median bool, limit int) *accumulator {
	a := &accumulator{sums: make([]float64, width), limit: limit}
	if median {
		a.sample = make([][]float64, width)
	}
	return a
}

// add counts one row's values (flat over outputs); rnd is a deterministic random source.
func (a *accumulator) add(vals []float32, rnd *splitmix) {
	a.n++
	for i, v := range vals {
		a.sums[i] += float64(v)
	}
	if a.sample == nil {
		return
	}
	if len(a.sample[0]) < a.limit {
		for i, v := range vals {
			a.sample[i] = append(a.sample[i], float64(v))
		}
		return
	}
	// Algorithm R: keep the row with probability limit/n, replacing a random slot.
	if j := rnd.intn(a.n); j < int64(a.limit) {
		for i, v := range vals {
			a.sample[i][j] = float64(v)
		}
	}
}

func (a *accumulator) result(outputs []writers.Output) map[string][]float64 {
	if a.n == 0 {
		return nil
	}
	res := map[string][]float64{}
	i := 0
	for _, o := range outputs {
		v := make([]float64, o.Width)
		for k := range v {
			if a.sample != nil {
				v[k] = median(a.sample[i])
			} else {
				v[k] = a.sums[i] / float64(a.n)
			}
			i++
		}
		res[o.Name] = v
	}
	return res
}

func median(s []float64) float64 {
	s = slices.Clone(s)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// defaultsBuilder accumulates the global and per-segment defaults of a run.
type defaultsBuilder struct {
	method    string
	segmentBy string
	outputs   []writers.Output
	width     int
	global    *accumulator
	segments  map[string]*accumulator
	rnd       splitmix
	row       []float32
}

func newDefaultsBuilder(method, segmentBy string, outputs []writers.Output) *defaultsBuilder {
	if method == "none" {
		return nil
	}
	w := 0
	for _, o := range outputs {
		w += o.Width
	}
	return &defaultsBuilder{
		method: method, segmentBy: segmentBy, outputs: outputs, width: w,
		global:   newAccumulator(w, method == "median", globalReservoir),
		segments: map[string]*accumulator{},
		rnd:      splitmix(0x5eed),
		row:      make([]float32, w),
	}
}

// add counts row r of a batch's outputs; seg is its segment value (nil: none).
func (d *defaultsBuilder) add(outs [][]float32, r int, seg []byte, hasSeg bool) error {
	row := d.row[:0]
	for k, o := range d.outputs {
		row = append(row, outs[k][r*o.Width:(r+1)*o.Width]...)
	}
	for _, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil // null outputs are counted by the null gate, not averaged
		}
	}
	d.global.add(row, &d.rnd)
	if d.segmentBy == "" || !hasSeg {
		return nil
	}
	a, ok := d.segments[string(seg)]
	if !ok {
		if len(d.segments) >= MaxSegments {
			return fmt.Errorf("defaults.segment_by: column %q has more than %d distinct values; segment by a categorical column", d.segmentBy, MaxSegments)
		}
		a = newAccumulator(d.width, d.method == "median", segmentReservoir)
		d.segments[string(seg)] = a
	}
	a.add(row, &d.rnd)
	return nil
}

func (d *defaultsBuilder) result() *writers.Defaults {
	if d == nil {
		return nil
	}
	res := &writers.Defaults{Method: d.method, Global: d.global.result(d.outputs), SegmentBy: d.segmentBy}
	if len(d.segments) > 0 {
		res.Segments = map[string]map[string][]float64{}
		for s, a := range d.segments {
			res.Segments[s] = a.result(d.outputs)
		}
	}
	return res
}

// splitmix is a tiny deterministic PRNG (SplitMix64), so defaults are reproducible.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *splitmix) intn(n int64) int64 { return int64(s.next() % uint64(n)) }
