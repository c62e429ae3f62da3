package pipeline

import (
	"fmt"
	"math"
	"slices"

	"github.com/staticref/staticref/writers"
)

// Cold-start defaults are computed in one pass, in memory bounded by configuration.
//
// A mean comes from sums kept per row group and stored with its commit record, so
// a resumed or sharded run totals them exactly without reading rows again. A median is
// estimated from a uniform reservoir sample of at most globalReservoir rows
// (segmentReservoir per segment) of the rows this process scored: exact while a version
// or segment is smaller than that, and after a resume it covers the resumed part only.
// At most MaxSegments distinct segment values are kept; more is an error, since
// segment_by then names no category.
const (
	globalReservoir  = 1 << 16
	segmentReservoir = 1 << 10
	// MaxSegments is the most distinct values defaults.segment_by may take.
	MaxSegments = 10000
)

// addSums adds one row's values to s.
func addSums(s *writers.Sums, row []float32) {
	if s.Sum == nil {
		s.Sum = make([]float64, len(row))
	}
	s.N++
	for i, v := range row {
		s.Sum[i] += float64(v)
	}
}

// mergeSums adds b into a.
func mergeSums(a, b *writers.Sums) {
	if b == nil || b.N == 0 {
		return
	}
	if a.Sum == nil {
		a.Sum = make([]float64, len(b.Sum))
	}
	a.N += b.N
	for i, v := range b.Sum {
		a.Sum[i] += v
	}
	for seg, bs := range b.Segments {
		if a.Segments == nil {
			a.Segments = map[string]*writers.Sums{}
		}
		as, ok := a.Segments[seg]
		if !ok {
			as = &writers.Sums{}
			a.Segments[seg] = as
		}
		mergeSums(as, bs)
	}
}

// reservoir is a uniform sample of rows (Algorithm R).
type reservoir struct {
	n     int64
	limit int
	rows  [][]float32
}

func (r *reservoir) add(row []float32, rnd *splitmix) {
	r.n++
	if len(r.rows) < r.limit {
		r.rows = append(r.rows, slices.Clone(row))
		return
	}
	if j := rnd.intn(r.n); j < int64(r.limit) {
		copy(r.rows[j], row)
	}
}

func (r *reservoir) median(width int) []float64 {
	out := make([]float64, width)
	col := make([]float64, len(r.rows))
	for i := range out {
		for k, row := range r.rows {
			col[k] = float64(row[i])
		}
		slices.Sort(col)
		n := len(col)
		if n%2 == 1 {
			out[i] = col[n/2]
		} else {
			out[i] = (col[n/2-1] + col[n/2]) / 2
		}
	}
	return out
}

// defaults accumulates a run's cold-start defaults; nil when defaults.global is none.
type defaults struct {
	method    string
	segmentBy string
	outputs   []writers.Output
	width     int
	global    *reservoir
	segments  map[string]*reservoir
	rnd       splitmix
	row       []float32
}

func newDefaults(method, segmentBy string, outputs []writers.Output) *defaults {
	if method == "none" {
		return nil
	}
	w := 0
	for _, o := range outputs {
		w += o.Width
	}
	d := &defaults{method: method, segmentBy: segmentBy, outputs: outputs, width: w,
		rnd: splitmix(0x5eed), row: make([]float32, w)}
	if method == "median" {
		d.global = &reservoir{limit: globalReservoir}
		d.segments = map[string]*reservoir{}
	}
	return d
}

// add counts row r of a batch's outputs into the row group's sums and the samples; seg is
// its segment value when hasSeg. Rows with a NaN or infinite output are left out: the
// null gate counts them.
func (d *defaults) add(sums *writers.Sums, outs [][]float32, r int, seg []byte, hasSeg bool) error {
	row := d.row[:0]
	for k, o := range d.outputs {
		row = append(row, outs[k][r*o.Width:(r+1)*o.Width]...)
	}
	for _, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil
		}
	}
	addSums(sums, row)
	if d.global != nil {
		d.global.add(row, &d.rnd)
	}
	if d.segmentBy == "" || !hasSeg {
		return nil
	}
	if sums.Segments == nil {
		sums.Segments = map[string]*writers.Sums{}
	}
	ss, ok := sums.Segments[string(seg)]
	if !ok {
		if len(sums.Segments) >= MaxSegments {
			return d.tooMany()
		}
		ss = &writers.Sums{}
		sums.Segments[string(seg)] = ss
	}
	addSums(ss, row)
	if d.segments != nil {
		rs, ok := d.segments[string(seg)]
		if !ok {
			if len(d.segments) >= MaxSegments {
				return d.tooMany()
			}
			rs = &reservoir{limit: segmentReservoir}
			d.segments[string(seg)] = rs
		}
		rs.add(row, &d.rnd)
	}
	return nil
}

func (d *defaults) tooMany() error {
	return fmt.Errorf("defaults.segment_by: column %q has more than %d distinct values; segment by a categorical column", d.segmentBy, MaxSegments)
}

// result turns the totals of every row group (total) and this run's samples into defaults.
func (d *defaults) result(total *writers.Sums) (*writers.Defaults, error) {
	if d == nil {
		return nil, nil
	}
	if len(total.Segments) > MaxSegments {
		return nil, d.tooMany()
	}
	res := &writers.Defaults{Method: d.method, SegmentBy: d.segmentBy}
	split := func(vals []float64) map[string][]float64 {
		m := map[string][]float64{}
		i := 0
		for _, o := range d.outputs {
			m[o.Name] = vals[i : i+o.Width]
			i += o.Width
		}
		return m
	}
	mean := func(s *writers.Sums) []float64 {
		v := make([]float64, d.width)
		for i := range v {
			v[i] = s.Sum[i] / float64(s.N)
		}
		return v
	}
	switch {
	case d.method == "median" && d.global.n > 0:
		res.Global = split(d.global.median(d.width))
	case d.method == "mean" && total.N > 0:
		res.Global = split(mean(total))
	}
	if d.segmentBy == "" {
		return res, nil
	}
	res.Segments = map[string]map[string][]float64{}
	if d.method == "median" {
		for seg, r := range d.segments {
			res.Segments[seg] = split(r.median(d.width))
		}
		return res, nil
	}
	for seg, s := range total.Segments {
		if s.N > 0 {
			res.Segments[seg] = split(mean(s))
		}
	}
	return res, nil
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
