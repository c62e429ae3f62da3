package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// referenceValues is every value of each output over the data set, from the model's
// float64 reference computation.
func referenceValues(d *dataset, model string, features func(shardgen.Row) []float64) map[string][]float64 {
	out := map[string][]float64{}
	for r := range int64(d.spec.Rows) {
		for name, vs := range d.models[model].Predict(features(shardgen.RowAt(d.spec, r))) {
			out[name] = append(out[name], vs...)
		}
	}
	for _, vs := range out {
		slices.Sort(vs)
	}
	return out
}

// TestDistributionsMatchTheReferencePredictions checks each output's recorded
// distribution against one computed here from the reference predictions, sorted: the
// nearest-rank quantile of rank ceil(q*n) (rank 1 for p0), the mean and the population
// standard deviation, and the histogram's counts, each within the sketch's stated
// resolution (dist.RelativeError, plus the 1e-5 that ONNX Runtime's float32 may differ
// from the float64 reference by).
func TestDistributionsMatchTheReferencePredictions(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 12_000, Shards: 3, RowGroupRows: 1500, Seed: 31})
	const slack = 1e-5
	for _, tt := range []struct {
		name     string
		model    string
		sets     []string
		features func(shardgen.Row) []float64
	}{
		{"a logistic regression's score and logit (of both signs), json values", "logistic", nil, scalarFeatures},
		{"an MLP's two-wide output, all its values, binary values", "mlp", []string{"sink.encoding=binary"}, scalarFeatures},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, url := openStore(t)
			res, err := run(t, s, newJob(t, d, url, append(tt.sets, "model.path="+d.model(tt.model))...))
			if err != nil {
				t.Fatal(err)
			}
			want := referenceValues(d, tt.model, tt.features)
			m := res.Manifest
			if len(m.Distributions) != len(m.Outputs) {
				t.Fatalf("got %d distributions, want one for each of %v", len(m.Distributions), m.Outputs)
			}
			for _, got := range m.Distributions {
				vals := want[got.Output]
				n := len(vals)
				if got.Count != int64(n) {
					t.Errorf("%s: count %d, want %d", got.Output, got.Count, n)
				}
				var sum float64
				for _, v := range vals {
					sum += v
				}
				mean := sum / float64(n)
				var ss float64
				for _, v := range vals {
					ss += (v - mean) * (v - mean)
				}
				sd := math.Sqrt(ss / float64(n))
				if math.Abs(got.Mean-mean) > slack || math.Abs(got.Stddev-sd) > slack {
					t.Errorf("%s: mean %v, stddev %v; want %v, %v", got.Output, got.Mean, got.Stddev, mean, sd)
				}
				for i, q := range got.Quantiles {
					r := max(int(math.Ceil(float64(i)/20*float64(n))), 1)
					exact := vals[r-1]
					if math.Abs(q-exact) > dist.RelativeError*math.Abs(exact)+slack {
						t.Errorf("%s p%d: got %v, want %v within %.2g relative", got.Output, 5*i, q, exact, dist.RelativeError)
					}
				}
				h := got.Histogram
				if len(h.Counts) != writers.DistributionBins || h.Edges[0] != got.Quantiles[0] || h.Edges[20] != got.Quantiles[20] {
					t.Fatalf("%s: histogram %+v, want %d bins from p0 to p100", got.Output, h, writers.DistributionBins)
				}
				near := func(x float64) int64 { // values a bin may count on either side of an edge at x
					var c int64
					for _, v := range vals {
						if math.Abs(v-x) <= dist.RelativeError*math.Abs(v)+2*slack {
							c++
						}
					}
					return c
				}
				for i, c := range h.Counts {
					var exact int64
					for _, v := range vals {
						if v >= h.Edges[i] && (v < h.Edges[i+1] || i == len(h.Counts)-1) {
							exact++
						}
					}
					if i == 0 {
						exact += int64(slices.IndexFunc(vals, func(v float64) bool { return v >= h.Edges[0] })) // below p0 by float32 rounding
					}
					if tol := near(h.Edges[i]) + near(h.Edges[i+1]); c > exact+tol || c < exact-tol {
						t.Errorf("%s bin %d [%.6g, %.6g): got %d, want %d ± %d", got.Output, i, h.Edges[i], h.Edges[i+1], c, exact, tol)
					}
				}
			}
			commits, err := s.Commits(context.Background(), "scores", m.Version)
			if err != nil || len(commits) == 0 {
				t.Fatalf("commits: %v", err)
			}
			b, _ := json.Marshal(commits[0])
			t.Logf("a commit record of %d rows, with its sums and sketches: %d bytes of JSON", commits[0].Rows, len(b))
		})
	}
}

// TestAShardedOrResumedRunRecordsTheDistributionOfASingleRun: the totals come from the
// row groups' commit records, so however the row groups were written, the version's
// distribution is the same.
func TestAShardedOrResumedRunRecordsTheDistributionOfASingleRun(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 8000, Shards: 2, RowGroupRows: 1000, Seed: 33})
	ctx := context.Background()
	s, url := openStore(t)
	j := newJob(t, d, url, "release.flip=manual", "model.batch_size=500", "model.workers=1")
	single, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	want := single.Manifest.Distributions

	for i := range 3 {
		_, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-sharded", ShardIndex: i, ShardCount: 3})
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
	}
	sharded, err := s.Manifest(ctx, "scores", "v-sharded")
	if err != nil {
		t.Fatal(err)
	}

	_, failing := flaky(s, 10)
	if _, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: failing, Log: quiet, Version: "v-resumed", Readers: 1}); err == nil {
		t.Fatal("the flaky run did not fail")
	}
	if cs, _ := s.Commits(ctx, "scores", "v-resumed"); len(cs) == 0 || len(cs) == 8 {
		t.Fatalf("the failed run committed %d of 8 row groups, want some", len(cs))
	}
	resumed, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-resumed"})
	if err != nil {
		t.Fatal(err)
	}

	for name, got := range map[string][]writers.Distribution{"sharded": sharded.Distributions, "resumed": resumed.Manifest.Distributions} {
		if len(got) != len(want) {
			t.Fatalf("%s: %d distributions, want %d", name, len(got), len(want))
		}
		for k := range want {
			a, b := want[k], got[k]
			same := a.Output == b.Output && a.Count == b.Count && slices.Equal(a.Quantiles, b.Quantiles) &&
				slices.Equal(a.Histogram.Edges, b.Histogram.Edges) && slices.Equal(a.Histogram.Counts, b.Histogram.Counts)
			if !same || math.Abs(a.Mean-b.Mean) > 1e-12 || math.Abs(a.Stddev-b.Stddev) > 1e-12 {
				t.Errorf("%s run, output %s:\n got %+v\nwant %+v (the single run's)", name, a.Output, b, a)
			}
		}
	}
}

// writePermuted writes the rows of d with the keys of other rows: row r gets the key of
// row (r+shift) mod n, prefixed with prefix. With shift 0 and a prefix, no key is one of
// d's; with a shift and no prefix, every key is, and the values are those of d, each
// under another key.
func writePermuted(t *testing.T, d *dataset, dir string, shift int, prefix string) string {
	t.Helper()
	type row struct {
		UserID  string  `parquet:"user_id"`
		F0      float64 `parquet:"f0"`
		F1      float32 `parquet:"f1"`
		F2      int32   `parquet:"f2"`
		F3      int64   `parquet:"f3"`
		Country string  `parquet:"country"`
	}
	n := d.spec.Rows
	rows := make([]row, n)
	for r := range n {
		src := shardgen.RowAt(d.spec, int64(r))
		key := shardgen.RowAt(d.spec, int64((r+shift)%n)).Key
		rows[r] = row{prefix + key, src.F[0], float32(src.F[1]), int32(src.F[2]), int64(src.F[3]), src.Country}
	}
	path := filepath.Join(dir, "permuted.parquet")
	if err := parquet.WriteFile(path, rows, parquet.MaxRowsPerRowGroup(1000)); err != nil {
		t.Fatal(err)
	}
	return path
}

func gateNamed(t *testing.T, m *writers.Manifest, name string) writers.GateResult {
	t.Helper()
	for _, g := range m.Gates {
		if g.Name == name {
			return g
		}
	}
	t.Fatalf("no %s gate in %+v", name, m.Gates)
	return writers.GateResult{}
}

// TestDriftGatesRefuseShiftedOrReshuffledPredictions runs a live version, then
// candidates against it under the drift gates: an identical re-run passes every one; a
// model with other weights and bias shifts the outputs and max_psi refuses it; the same
// rows under one another's keys have the live distribution exactly (PSI 0) but other
// values per key, which max_mean_abs_diff refuses; and rows under new keys fail
// min_key_overlap. A refused version is complete and not live, and the error names the
// gate, the value and the threshold.
func TestDriftGatesRefuseShiftedOrReshuffledPredictions(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 6000, Shards: 2, RowGroupRows: 1000, Seed: 35})
	dir := t.TempDir()
	ctx := context.Background()
	s, url := openStore(t)
	if _, err := run(t, s, newJob(t, d, url)); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.onnx")
	if err := onnxgen.Logistic(4, modelSeed+1).Write(other); err != nil {
		t.Fatal(err)
	}
	permuted := writePermuted(t, d, t.TempDir(), 1, "")
	renamed := writePermuted(t, d, t.TempDir(), 0, "new-")
	gates := []string{"release.gates.max_psi=0.1", "release.gates.max_mean_abs_diff=0.001", "release.gates.min_key_overlap=0.95"}
	shards, _ := filepath.Glob(filepath.Join(d.dir, "features", "*.parquet"))

	t.Run("an identical re-run passes every drift gate", func(t *testing.T) {
		res, err := run(t, s, newJob(t, d, url, append(gates, "release.gates.sample_keys=500")...))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Flipped {
			t.Fatal("not flipped")
		}
		for _, c := range []struct {
			gate string
			want float64
		}{{"max_psi", 0}, {"max_mean_abs_diff", 0}, {"min_key_overlap", 1}} {
			g := gateNamed(t, res.Manifest, c.gate)
			if !g.Passed || math.Abs(g.Value-c.want) > 1e-9 {
				t.Errorf("%s: %+v, want passed with %v", c.gate, g, c.want)
			}
		}
		if g := gateNamed(t, res.Manifest, "min_key_overlap"); !strings.Contains(g.Detail, "500 of 500 sampled keys") {
			t.Errorf("min_key_overlap detail %q, want 500 keys sampled (sample_keys)", g.Detail)
		}
	})

	for _, tc := range []struct {
		name    string
		sets    []string
		fails   string  // the gate that refuses it
		atLeast float64 // its value is at least this
		passes  []string
	}{
		{"a model with other weights and bias fails max_psi", []string{"model.path=" + other}, "max_psi", 0.25, nil},
		{"the same values under other keys pass max_psi but fail max_mean_abs_diff", []string{"source.uri=" + permuted},
			"max_mean_abs_diff", 0.01, []string{"max_psi", "min_key_overlap"}},
		{"rows under new keys fail min_key_overlap", []string{"source.uri=" + renamed}, "min_key_overlap", 0, []string{"max_psi"}},
		// The live version (the identical re-run above) recorded its key sample: half of
		// those keys are missing here, which a sample of this version's own keys would
		// never see.
		{"half of the live version's keys missing fail min_key_overlap", []string{"source.uri=" + shards[0]},
			"min_key_overlap", 0.3, []string{"max_mean_abs_diff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live, _ := s.Live(ctx, "scores")
			res, err := run(t, s, newJob(t, d, url, append(gates, tc.sets...)...))
			if !errors.Is(err, pipeline.ErrGateFailed) {
				t.Fatalf("got %v, want ErrGateFailed", err)
			}
			t.Logf("refused: %v", err)
			g := gateNamed(t, res.Manifest, tc.fails)
			if g.Passed || g.Value < tc.atLeast {
				t.Errorf("%s: %+v, want failed with a value of at least %v", tc.fails, g, tc.atLeast)
			}
			format := map[string]string{"max_psi": "%.4f", "max_mean_abs_diff": "%.6g", "min_key_overlap": "%.4f"}[tc.fails]
			for _, w := range []string{tc.fails + ": ", fmt.Sprintf(format, g.Value), fmt.Sprintf(format, g.Limit)} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q (the gate, its value and threshold): %v", w, err)
				}
			}
			for _, p := range tc.passes {
				if g := gateNamed(t, res.Manifest, p); !g.Passed {
					t.Errorf("%s: %+v, want passed", p, g)
				}
			}
			if now, _ := s.Live(ctx, "scores"); now != live {
				t.Errorf("live: got %s, want %s untouched", now, live)
			}
			m, err := s.Manifest(ctx, "scores", res.Manifest.Version)
			if err != nil || m.State != writers.StateComplete || len(m.Gates) == 0 {
				t.Errorf("the refused version: %v, %+v; want it complete, with its gates", err, m)
			}
		})
	}
}

// TestCanaryOrShadowStartsAReleaseInsteadOfAFlip: with release.flip canary or shadow, a
// run whose gates pass starts a release of its version against the live one with the
// job's settings, and leaves the live pointer alone; a second release while one runs,
// or a store that keeps no releases, fails the run with the version complete and not
// live.
func TestCanaryOrShadowStartsAReleaseInsteadOfAFlip(t *testing.T) {
	d := generate(t, t.TempDir(), shardgen.Spec{Rows: 2000, Shards: 1, RowGroupRows: 1000, Seed: 37})
	ctx := context.Background()
	s, url := openStore(t)
	clock := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	runAt := func(st *writers.Store, j *jobs.Job) (*pipeline.Result, error) {
		clock = clock.Add(time.Hour)
		at := clock
		return pipeline.Run(ctx, pipeline.Config{Job: j, Store: st, Log: quiet, Now: func() time.Time { return at }})
	}
	t.Run("the first version has nothing to release against and is flipped", func(t *testing.T) {
		res, err := runAt(s, newJob(t, d, url, "release.flip=canary"))
		if err != nil || !res.Flipped || res.Release != nil {
			t.Fatalf("got %v, flipped %v, release %+v; want a flip", err, res.Flipped, res.Release)
		}
	})
	live, _ := s.Live(ctx, "scores")

	t.Run("a canary without steps takes 1, 10, 50, 100 and the job's settings", func(t *testing.T) {
		res, err := runAt(s, newJob(t, d, url, "release.flip=canary", "release.canary.interval=2m", "release.canary.min_requests=50", "release.canary.failure_limit=3"))
		if err != nil {
			t.Fatal(err)
		}
		rel := res.Release
		if rel == nil || res.Flipped {
			t.Fatalf("release %+v, flipped %v; want a release and no flip", rel, res.Flipped)
		}
		stored, err := s.Release(ctx, "scores")
		if err != nil || stored == nil || stored.ID != rel.ID {
			t.Fatalf("stored release %+v, %v; want %s", stored, err, rel.ID)
		}
		c := stored.Canary
		if stored.Mode != "canary" || stored.Candidate != res.Manifest.Version || stored.Live != live || stored.State != writers.ReleaseRunning ||
			!slices.Equal(c.Steps, []float64{1, 10, 50, 100}) || stored.WeightPercent != 1 || c.Interval != writers.Duration(2*time.Minute) ||
			c.MinRequests != 50 || c.FailureLimit != 3 || c.MaxPSI != writers.DefaultCanary.MaxPSI {
			t.Errorf("release: %+v", stored)
		}
		if now, _ := s.Live(ctx, "scores"); now != live {
			t.Errorf("live: got %s, want %s until the release is promoted", now, live)
		}
	})

	t.Run("another release while one runs fails the run, leaving the version complete", func(t *testing.T) {
		res, err := runAt(s, newJob(t, d, url, "release.flip=shadow"))
		if err == nil || !strings.Contains(err.Error(), "another release of scores is running") || !errors.Is(err, writers.ErrReleaseRunning) {
			t.Fatalf("got %v, want a clear refusal", err)
		}
		if m, _ := s.Manifest(ctx, "scores", res.Manifest.Version); m == nil || m.State != writers.StateComplete {
			t.Errorf("the version: %+v, want complete", m)
		}
		if now, _ := s.Live(ctx, "scores"); now != live {
			t.Errorf("live: got %s, want %s", now, live)
		}
	})

	t.Run("a shadow starts once the canary is aborted", func(t *testing.T) {
		if _, err := writers.AbortRelease(ctx, s, "scores", "test", "", clock); err != nil {
			t.Fatal(err)
		}
		res, err := runAt(s, newJob(t, d, url, "release.flip=shadow", "release.shadow.sample_percent=25"))
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Release; r == nil || r.Mode != "shadow" || r.Shadow.SamplePercent != 25 || r.Candidate != res.Manifest.Version {
			t.Errorf("release: %+v, want a shadow of %s sampling 25%%", r, res.Manifest.Version)
		}
	})

	t.Run("the shard that completes a sharded run starts the release, once", func(t *testing.T) {
		if _, err := writers.AbortRelease(ctx, s, "scores", "test", "", clock); err != nil {
			t.Fatal(err)
		}
		j := newJob(t, d, url, "release.flip=canary", "release.canary.steps=[50, 100]")
		shard := func(i int) (*pipeline.Result, error) {
			return pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-canary", ShardIndex: i, ShardCount: 2})
		}
		if res, err := shard(0); err != nil || res.Waiting == 0 || res.Release != nil {
			t.Fatalf("shard 0: %v, waiting %d, release %+v; want it to wait", err, res.Waiting, res.Release)
		}
		res, err := shard(1)
		if err != nil || res.Release == nil || res.Release.Candidate != "v-canary" || res.Release.WeightPercent != 50 {
			t.Fatalf("shard 1: %v, release %+v; want a canary of v-canary at 50%%", err, res.Release)
		}
		again, err := shard(0)
		if err != nil || again.Flipped || again.Release != nil {
			t.Errorf("a retried shard: %v, flipped %v, release %+v; want a no-op", err, again.Flipped, again.Release)
		}
		if r, _ := s.Release(ctx, "scores"); r.ID != res.Release.ID || r.State != writers.ReleaseRunning {
			t.Errorf("release: %+v, want %s still running", r, res.Release.ID)
		}
	})

	t.Run("a store that keeps no releases fails the run with what to do", func(t *testing.T) {
		_, plain := flaky(s, -2) // a driver that is only a writers.Driver: no Releaser
		other := newJob(t, d, url, "release.flip=canary", "sink.namespace=plain")
		if _, err := runAt(plain, newJob(t, d, url, "sink.namespace=plain")); err != nil {
			t.Fatal(err)
		}
		res, err := runAt(plain, other)
		if !errors.Is(err, writers.ErrNoReleases) || !strings.Contains(err.Error(), "keeps no release records") || !strings.Contains(err.Error(), "versions flip") {
			t.Fatalf("got %v, want a refusal that says what to do", err)
		}
		if m, _ := s.Manifest(ctx, "plain", res.Manifest.Version); m == nil || m.State != writers.StateComplete {
			t.Errorf("the version: %+v, want complete", m)
		}
	})
}
