package dist

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/staticref/staticref/writers"
)

// exact is the independent computation: every value, sorted.
type exact []float64

func exactOf(vals []float32) exact {
	var e exact
	for _, v := range vals {
		if f := float64(v); !math.IsNaN(f) && !math.IsInf(f, 0) {
			e = append(e, f)
		}
	}
	slices.Sort(e)
	return e
}

// quantile is the nearest-rank quantile: the value of rank ceil(q*n), rank 1 for q = 0.
func (e exact) quantile(q float64) float64 {
	r := max(int(math.Ceil(q*float64(len(e)))), 1)
	return e[r-1]
}

func (e exact) meanStddev() (float64, float64) {
	var sum float64
	for _, v := range e {
		sum += v
	}
	mean := sum / float64(len(e))
	var ss float64
	for _, v := range e {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss / float64(len(e)))
}

// near counts the values within RelativeError of x (relative to the value), those a
// histogram may count on either side of an edge at x.
func (e exact) near(x float64) int64 {
	var n int64
	for _, v := range e {
		if math.Abs(v-x) <= RelativeError*math.Abs(v)*1.0000001 {
			n++
		}
	}
	return n
}

func samples() map[string][]float32 {
	r := rand.New(rand.NewPCG(1, 2))
	out := map[string][]float32{}
	add := func(name string, n int, f func() float64) {
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(f())
		}
		out[name] = vals
	}
	add("sigmoid scores", 20000, func() float64 { return 1 / (1 + math.Exp(-r.NormFloat64())) })
	add("logits of both signs around 0", 20000, func() float64 { return r.NormFloat64() * 2 })
	add("lognormal over twelve powers of ten", 20000, func() float64 { return math.Exp(r.NormFloat64() * 6) })
	add("a few distinct values, many ties", 5000, func() float64 { return float64(r.IntN(4)) - 1 })
	add("one value", 100, func() float64 { return 0.25 })
	add("large magnitudes near the float32 limit", 1000, func() float64 { return (r.Float64()*2 - 1) * math.MaxFloat32 })
	withNulls := make([]float32, 0, 3000)
	for i := range 3000 {
		switch i % 10 {
		case 3:
			withNulls = append(withNulls, float32(math.NaN()))
		case 7:
			withNulls = append(withNulls, float32(math.Inf(1-2*(i%2))))
		default:
			withNulls = append(withNulls, float32(r.Float64()))
		}
	}
	out["with NaN and infinities, which are left out"] = withNulls
	return out
}

func TestSketchQuantilesMomentsAndHistogramAgainstEveryValue(t *testing.T) {
	for name, vals := range samples() {
		t.Run(name, func(t *testing.T) {
			var s Sketch
			for b := range slices.Chunk(vals, 777) {
				s.Add(b)
			}
			e := exactOf(vals)
			d := s.Distribution("out")
			if d.Count != int64(len(e)) {
				t.Fatalf("count: got %d, want %d", d.Count, len(e))
			}
			mean, sd := e.meanStddev()
			if math.Abs(d.Mean-mean) > 1e-12*max(1, math.Abs(mean)) || math.Abs(d.Stddev-sd) > 1e-9*max(1, sd) {
				t.Errorf("mean, stddev: got %v, %v; want %v, %v", d.Mean, d.Stddev, mean, sd)
			}
			if len(d.Quantiles) != writers.DistributionQuantiles {
				t.Fatalf("got %d quantiles, want %d", len(d.Quantiles), writers.DistributionQuantiles)
			}
			for i, got := range d.Quantiles {
				want := e.quantile(float64(i) / 20)
				if math.Abs(got-want) > RelativeError*math.Abs(want) {
					t.Errorf("p%d: got %v, want %v within %.3g relative", i*5, got, want, RelativeError)
				}
			}
			if d.Quantiles[0] != e[0] || d.Quantiles[20] != e[len(e)-1] {
				t.Errorf("p0, p100: got %v, %v; want exactly %v, %v", d.Quantiles[0], d.Quantiles[20], e[0], e[len(e)-1])
			}
			h := d.Histogram
			if len(h.Edges) != writers.DistributionBins+1 || len(h.Counts) != writers.DistributionBins {
				t.Fatalf("histogram of %d edges, %d counts; want %d, %d", len(h.Edges), len(h.Counts), writers.DistributionBins+1, writers.DistributionBins)
			}
			if h.Edges[0] != e[0] || h.Edges[20] != e[len(e)-1] {
				t.Errorf("histogram spans [%v, %v], want [p0, p100] = [%v, %v]", h.Edges[0], h.Edges[20], e[0], e[len(e)-1])
			}
			var total int64
			for i, got := range h.Counts {
				total += got
				var want int64
				for _, v := range e {
					if (v >= h.Edges[i] && v < h.Edges[i+1]) || (i == len(h.Counts)-1 && v == h.Edges[i+1]) {
						want++
					}
				}
				slack := e.near(h.Edges[i]) + e.near(h.Edges[i+1])
				if h.Edges[i] == h.Edges[i+1] {
					slack = 0 // every value is this one; the last bin holds them
				}
				if d := got - want; d > slack || -d > slack {
					t.Errorf("bin %d [%v, %v): got %d, want %d ± %d (values that near its edges)", i, h.Edges[i], h.Edges[i+1], got, want, slack)
				}
			}
			if total != d.Count {
				t.Errorf("histogram counts add up to %d, want %d", total, d.Count)
			}
		})
	}
}

func TestSketchMergeIsTheSketchOfAllValues(t *testing.T) {
	vals := samples()["logits of both signs around 0"]
	var whole Sketch
	whole.Add(vals)
	var merged Sketch
	for part := range slices.Chunk(vals, 3001) {
		var s Sketch
		s.Add(part)
		// Through the stored state, as a resumed run reads it back.
		var back Sketch
		if err := back.LoadState(s.AppendState(nil)); err != nil {
			t.Fatal(err)
		}
		merged.Merge(&back)
	}
	a, b := whole.Distribution("x"), merged.Distribution("x")
	if !slices.Equal(a.Quantiles, b.Quantiles) || !slices.Equal(a.Histogram.Counts, b.Histogram.Counts) || !slices.Equal(a.Histogram.Edges, b.Histogram.Edges) || a.Count != b.Count {
		t.Errorf("merged parts: got %+v, want the whole's %+v", b, a)
	}
	if math.Abs(a.Mean-b.Mean) > 1e-12 || math.Abs(a.Stddev-b.Stddev) > 1e-12 {
		t.Errorf("merged mean, stddev: got %v, %v; want %v, %v", b.Mean, b.Stddev, a.Mean, a.Stddev)
	}
}

func TestSketchStateRoundTripsAndBadStatesAreRefused(t *testing.T) {
	var s Sketch
	s.Add([]float32{-2, -0.5, 0, 0, 1, 1, 1, 1e30})
	state := s.AppendState(nil)
	var back Sketch
	if err := back.LoadState(state); err != nil {
		t.Fatal(err)
	}
	if got, want := back.AppendState(nil), state; !slices.Equal(got, want) {
		t.Errorf("state after a round trip: got %v, want %v", got, want)
	}
	// Buckets of -2, -0.5, 0, 1 and 1e30: five runs of one, each a gap, a length and a count.
	if got := len(state); got != 6+3*5 {
		t.Errorf("state of 5 lone non-empty buckets: %d numbers, want 21: %v", got, state)
	}
	var run Sketch
	run.Add([]float32{1, 1.0078125, 1.015625, 1.015625}) // three neighbouring buckets
	if got := run.AppendState(nil)[6:]; !slices.Equal(got, []float64{float64(bucketOf(math.Float32bits(1))), 3, 1, 1, 2}) {
		t.Errorf("three neighbouring buckets: got runs %v, want one run of 3", got)
	}
	var empty Sketch
	if err := back.LoadState(empty.AppendState(nil)); err != nil || back.Count() != s.Count() {
		t.Errorf("loading an empty state: %v, count %d; want no change", err, back.Count())
	}
	if d := empty.Distribution("none"); d.Count != 0 || d.Quantiles != nil {
		t.Errorf("empty distribution: %+v, want count 0 and no quantiles", d)
	}
	bad := map[string][]float64{
		"too short":                {1, 0, 0},
		"another format":           append([]float64{2}, state[1:]...),
		"a run without its length": append(slices.Clone(state), 1),
		"a run longer than given":  append(slices.Clone(state), 1, 3, 1),
		"counts that disagree":     append(slices.Clone(state[:len(state)-1]), state[len(state)-1]+1),
		"a fractional count":       append(slices.Clone(state[:len(state)-1]), 0.5),
		"a zero count":             {1, 1, 0, 0, 0, 0, 5, 2, 0, 1},
		"buckets out of range":     {1, 2, 0, 0, 0, 0, 65535, 2, 1, 1},
		"a negative gap":           {1, 1, 0, 0, 0, 0, -1, 1, 1},
		"a NaN mean":               {1, 0, math.NaN(), 0, 0, 0},
	}
	for name, st := range bad {
		t.Run(name+" is refused", func(t *testing.T) {
			before := back.AppendState(nil)
			if err := back.LoadState(st); !errors.Is(err, ErrState) {
				t.Errorf("got %v, want ErrState", err)
			}
			if !slices.Equal(back.AppendState(nil), before) {
				t.Error("a refused state changed the sketch")
			}
		})
	}
}

func TestSketchAddAllocatesNothingOnceItsPagesExist(t *testing.T) {
	vals := samples()["sigmoid scores"]
	var s Sketch
	s.Add(vals)
	if n := testing.AllocsPerRun(20, func() { s.Add(vals) }); n != 0 {
		t.Errorf("Add allocated %v times a batch, want 0", n)
	}
}

func BenchmarkSketchAdd(b *testing.B) {
	vals := samples()["logits of both signs around 0"]
	var s Sketch
	b.SetBytes(int64(4 * len(vals)))
	for b.Loop() {
		s.Add(vals)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(vals)), "ns/value")
}
