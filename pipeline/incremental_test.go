package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

// incrementData is a full data set of 4,000 rows and an increment of 1,000 rows over rows
// 3,500..4,499 with other values: 500 existing keys, 500 new ones.
func incrementData(t *testing.T) (full, incr *dataset) {
	t.Helper()
	full = generate(t, t.TempDir(), shardgen.Spec{Rows: 4000, Shards: 2, RowGroupRows: 1000, Seed: 41})
	incr = generate(t, t.TempDir(), shardgen.Spec{Rows: 1000, Shards: 2, RowGroupRows: 250, Seed: 42, FirstRow: 3500})
	return full, incr
}

// wantChainValues checks that the chain of the live version answers every key of both
// data sets with the newest row's prediction.
func wantChainValues(t *testing.T, s *writers.Store, full, incr *dataset) {
	t.Helper()
	ctx := context.Background()
	live, _ := s.Live(ctx, "scores")
	m, err := s.Manifest(ctx, "scores", live)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := writers.ResolveChain(ctx, s, "scores", m)
	if err != nil {
		t.Fatal(err)
	}
	ref := full.models["logistic"]
	var keys [][]byte
	var rows []shardgen.Row
	for r := int64(0); r < 4500; r++ {
		row := shardgen.RowAt(full.spec, r)
		if r >= 3500 {
			row = shardgen.RowAt(incr.spec, r)
		}
		keys, rows = append(keys, []byte(row.Key)), append(rows, row)
	}
	vals, from, err := s.GetChain(ctx, "scores", writers.ChainVersions(chain), keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range rows {
		if vals[i] == nil {
			t.Fatalf("key %s: not found down %v", row.Key, writers.ChainVersions(chain))
		}
		var got map[string]float64
		json.Unmarshal(vals[i], &got)
		if want := ref.Predict(row.F[:])["score"][0]; math.Abs(got["score"]-want) > 1e-5 {
			t.Fatalf("key %s (from %s): score %v, want %v", row.Key, chain[from[i]].Version, got["score"], want)
		}
		if wantLevel := map[bool]int{true: 0, false: len(chain) - 1}[i >= 3500]; from[i] != wantLevel {
			t.Fatalf("key %s: answered by level %d, want %d", row.Key, from[i], wantLevel)
		}
	}
}

func gate(m *writers.Manifest, name string) *writers.GateResult {
	for i := range m.Gates {
		if m.Gates[i].Name == name {
			return &m.Gates[i]
		}
	}
	return nil
}

func TestIncrementalRuns(t *testing.T) {
	full, incr := incrementData(t)
	ctx := context.Background()
	incremental := func(t *testing.T, url string, sets ...string) []string {
		return append([]string{"source.uri=" + incr.glob(), "sink.mode=incremental"}, sets...)
	}

	t.Run("an increment with nothing live to build on is refused", func(t *testing.T) {
		s, url := openStore(t)
		_, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, incremental(t, url)...), Store: s, Log: quiet})
		if err == nil || !strings.Contains(err.Error(), "no live version to build on") {
			t.Fatalf("got %v, want a refusal saying to run a full version first", err)
		}
		if ms, _ := s.Manifests(ctx, "scores"); len(ms) != 0 {
			t.Errorf("the refused run left %d manifests", len(ms))
		}
	})

	t.Run("an increment is gated against its base and flips from it", func(t *testing.T) {
		s, url := openStore(t)
		gates := []string{"release.gates.max_mean_abs_diff=5", "release.gates.min_key_overlap=0.99", "release.gates.max_psi=10"}
		base, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, gates...), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		res, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, incremental(t, url, gates...)...), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		m := res.Manifest
		if !res.Flipped || res.Previous != base.Manifest.Version || !m.Incremental() || m.Base != base.Manifest.Version || m.Depth != 2 || m.RowsWritten != 1000 {
			t.Fatalf("increment: flipped %v from %s, mode %s base %s depth %d rows %d", res.Flipped, res.Previous, m.Mode, m.Base, m.Depth, m.RowsWritten)
		}
		for name, want := range map[string]string{
			"min_rows_ratio":    "skipped: incremental version",
			"min_key_overlap":   "skipped: incremental version",
			"base_live":         "base " + base.Manifest.Version + " is live",
			"max_mean_abs_diff": "in live version " + base.Manifest.Version,
		} {
			if g := gate(m, name); g == nil || !g.Passed || !strings.Contains(g.Detail, want) {
				t.Errorf("gate %s: %+v, want passed saying %q", name, g, want)
			}
		}
		// The 250 or so sampled keys of the increment that the base holds moved: the mean
		// difference is over them, not zero.
		if g := gate(m, "max_mean_abs_diff"); g == nil || g.Value <= 0 {
			t.Errorf("max_mean_abs_diff: %+v, want a positive difference from the base", g)
		}
		if m.Defaults == nil || !equalDefaults(m.Defaults, base.Manifest.Defaults) {
			t.Errorf("the increment's defaults %+v, want its base's %+v", m.Defaults, base.Manifest.Defaults)
		}
		wantChainValues(t, s, full, incr)

		// A full run on top of the chain compares its rows with the chain's full version.
		again, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, append(gates, "release.gates.min_rows_ratio=0.99")...), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		// Its drift gates compare with the chain's population: the full version's sample
		// of keys, read down the chain, and its distribution.
		if g := gate(again.Manifest, "min_key_overlap"); g == nil || !g.Passed || g.Value != 1 || !strings.Contains(g.Detail, "keys sampled from live version") {
			t.Errorf("full run over a chain: min_key_overlap %+v, want 1 over the base's sample", g)
		}
		if g := gate(again.Manifest, "max_psi"); g == nil || !g.Passed || !strings.Contains(g.Detail, "against live version "+base.Manifest.Version) {
			t.Errorf("full run over a chain: max_psi %+v, want it against the chain's full version", g)
		}
		if g := gate(again.Manifest, "min_rows_ratio"); g == nil || !g.Passed || g.Value != 1 || !strings.Contains(g.Detail, "full version under the live chain") {
			t.Errorf("full run over a chain: min_rows_ratio %+v, want 1 against the chain's full version", g)
		}
	})

	t.Run("an increment whose base left live meanwhile completes but does not flip", func(t *testing.T) {
		s, url := openStore(t)
		first, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		other, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet, NoFlip: true})
		if err != nil {
			t.Fatal(err)
		}
		// The increment starts on first; the first commit of its rows flips other live.
		d := &flipOnCommit{Driver: s.Driver(), s: s, to: other.Manifest.Version}
		res, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, incremental(t, url)...), Store: writers.NewStore(d, s.URL()), Log: quiet})
		if !errors.Is(err, pipeline.ErrGateFailed) || !strings.Contains(err.Error(), "base_live") {
			t.Fatalf("got %v, want the base_live gate to fail", err)
		}
		if res.Manifest.Base != first.Manifest.Version || res.Manifest.State != writers.StateComplete {
			t.Errorf("increment: base %s state %s, want base %s, complete", res.Manifest.Base, res.Manifest.State, first.Manifest.Version)
		}
		if live, _ := s.Live(ctx, "scores"); live != other.Manifest.Version {
			t.Errorf("live %s, want %s untouched", live, other.Manifest.Version)
		}
	})

	t.Run("a failed increment resumes onto the same base", func(t *testing.T) {
		s, url := openStore(t)
		base, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		j := newJob(t, full, url, incremental(t, url, "model.batch_size=250", "model.workers=1")...)
		_, failing := flaky(s, 2)
		if _, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: failing, Log: quiet, Readers: 1, Version: "v-incr"}); err == nil {
			t.Fatal("the flaky run did not fail")
		}
		if _, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, "source.uri="+incr.glob(), "model.batch_size=250"), Store: s, Log: quiet, Version: "v-incr"}); err == nil || !strings.Contains(err.Error(), "sink.mode incremental, now full") {
			t.Errorf("a full resume of an increment: %v, want refused naming sink.mode", err)
		}
		res, err := pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-incr"})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Flipped || res.Manifest.Base != base.Manifest.Version || res.Manifest.RowsWritten != 1000 {
			t.Fatalf("resumed increment: flipped %v base %s rows %d", res.Flipped, res.Manifest.Base, res.Manifest.RowsWritten)
		}
		wantChainValues(t, s, full, incr)
	})

	t.Run("a sharded increment writes one version on the base and the last shard flips it", func(t *testing.T) {
		s, url := openStore(t)
		base, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		j := newJob(t, full, url, incremental(t, url)...)
		var last *pipeline.Result
		for i := range 2 {
			if last, err = pipeline.Run(ctx, pipeline.Config{Job: j, Store: s, Log: quiet, Version: "v-shards", ShardIndex: i, ShardCount: 2}); err != nil {
				t.Fatalf("shard %d: %v", i, err)
			}
		}
		if !last.Flipped || last.Manifest.Base != base.Manifest.Version || last.Manifest.RowsWritten != 1000 {
			t.Fatalf("sharded increment: flipped %v base %s rows %d", last.Flipped, last.Manifest.Base, last.Manifest.RowsWritten)
		}
		wantChainValues(t, s, full, incr)
	})

	t.Run("a canary of an increment releases it against its base", func(t *testing.T) {
		s, url := openStore(t)
		base, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		res, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, incremental(t, url, "release.flip=canary")...), Store: s, Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Release; r == nil || r.Candidate != res.Manifest.Version || r.Live != base.Manifest.Version {
			t.Fatalf("release %+v, want a canary of the increment against %s", r, base.Manifest.Version)
		}
	})
}

func equalDefaults(a, b *writers.Defaults) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// flipOnCommit flips the live pointer of the namespace to another version at the first
// commit of work it sees: someone else's flip while a run writes.
type flipOnCommit struct {
	writers.Driver
	s    *writers.Store
	to   string
	once sync.Once
}

func (f *flipOnCommit) CommitWork(ctx context.Context, ns, v string, c writers.Commit, data []byte) error {
	f.once.Do(func() {
		if _, err := writers.Flip(ctx, f.s, ns, f.to); err != nil {
			panic(err)
		}
	})
	return f.Driver.CommitWork(ctx, ns, v, c, data)
}

func TestDeleteAndCompact(t *testing.T) {
	full, incr := incrementData(t)
	ctx := context.Background()
	s, url := openStore(t)
	base, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url), Store: s, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipeline.Compact(ctx, pipeline.MaintainConfig{Store: s, Namespace: "scores", Log: quiet}); !errors.Is(err, pipeline.ErrNothingToCompact) {
		t.Errorf("compact of a full version: %v, want ErrNothingToCompact", err)
	}
	if _, err := pipeline.Run(ctx, pipeline.Config{Job: newJob(t, full, url, "source.uri="+incr.glob(), "sink.mode=incremental"), Store: s, Log: quiet}); err != nil {
		t.Fatal(err)
	}
	gone := []string{shardgen.RowAt(full.spec, 7).Key, shardgen.RowAt(full.spec, 3600).Key, shardgen.RowAt(full.spec, 4400).Key}
	keys := [][]byte{[]byte(gone[0]), []byte(gone[1]), []byte(gone[2]), []byte(gone[0])}
	del, err := pipeline.Delete(ctx, pipeline.MaintainConfig{Store: s, Namespace: "scores", Log: quiet, Keep: 2}, keys)
	if err != nil {
		t.Fatal(err)
	}
	if m := del.Manifest; !del.Flipped || m.Depth != 3 || m.RowsWritten != 3 || m.DuplicateKeys != 1 || gate(m, "max_null_fraction") == nil {
		t.Fatalf("delete: flipped %v, %+v", del.Flipped, m)
	}
	if _, err := pipeline.Delete(ctx, pipeline.MaintainConfig{Store: s, Namespace: "scores", Log: quiet, MaxChain: 3}, keys[:1]); !errors.Is(err, pipeline.ErrChainTooDeep) || !strings.Contains(err.Error(), "versions compact") {
		t.Errorf("a delete on a chain at max_chain: %v, want ErrChainTooDeep saying to compact", err)
	}
	chain := []string{del.Manifest.Version, del.Manifest.Base, base.Manifest.Version}
	vals, _, err := s.GetChain(ctx, "scores", chain, keys)
	if err != nil || vals[0] != nil || vals[1] != nil || vals[2] != nil {
		t.Fatalf("deleted keys: %q, %v; want none found", vals, err)
	}

	c, err := pipeline.Compact(ctx, pipeline.MaintainConfig{Store: s, Namespace: "scores", Log: quiet, Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	m := c.Manifest
	if !c.Flipped || m.Incremental() || m.RowsWritten != 4500-3 || len(m.Distributions) != 2 || m.Defaults == nil {
		t.Fatalf("compacted: flipped %v, mode %s, rows %d, %d distributions", c.Flipped, m.Mode, m.RowsWritten, len(m.Distributions))
	}
	if g := gate(m, "min_rows_ratio"); g == nil || !g.Passed || g.Value != 1 {
		t.Errorf("compaction's min_rows_ratio: %+v", g)
	}
	// Every key of the compacted version is what the chain answered; the deleted are gone.
	err = s.ScanRows(ctx, "scores", m.Version, func(rows writers.Rows) error {
		want, _, err := s.GetChain(ctx, "scores", chain, rows.Keys)
		if err != nil {
			return err
		}
		for i, k := range rows.Keys {
			if string(want[i]) != string(rows.Values[i]) {
				t.Fatalf("key %s: compacted %q, chain %q", k, rows.Values[i], want[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range gone {
		if _, err := s.Get(ctx, "scores", m.Version, []byte(k)); !errors.Is(err, writers.ErrNotFound) {
			t.Errorf("deleted key %s in the compacted version: %v", k, err)
		}
	}
	// gc keeping nothing removes the whole old chain now that nothing builds on it.
	removed, err := writers.GC(ctx, s, "scores", 0, 0, m.CompletedAt.Add(1))
	if err != nil || len(removed) != 3 {
		t.Errorf("gc after compaction: removed %v, %v; want the old chain %v", removed, err, chain)
	}
	for _, v := range chain {
		if vm, _ := s.Manifest(ctx, "scores", v); vm.State != writers.StateRetired {
			t.Errorf("version %s of the old chain is %s, want retired", v, vm.State)
		}
	}

}
