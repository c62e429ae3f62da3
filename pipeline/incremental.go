package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/staticref/staticref/writers"
)

// Incremental runs (sink.mode: incremental; DESIGN.md, "Incremental versions"). The
// version holds only this run's rows and names as its base the version live when the run
// started; lookups read a key from it, then down the base's chain (writers.ResolveChain).
// What differs from a full run:
//
//   - createVersion records mode, base and depth (chainOnto), and refuses a run with no
//     live version to build on, or whose base is already sink.max_chain deep (compact the
//     chain, or run a full version), or whose model outputs or encoding differ from the
//     base's (one answer must not change shape down the chain).
//   - The gates: min_rows_ratio compares nothing and says "skipped"; max_null_fraction and
//     unique_keys are over the increment's own rows; min_key_overlap is skipped (an
//     increment holds only some keys by design); max_mean_abs_diff compares the
//     increment's sampled keys with their values in the base's chain; max_psi compares the
//     increment's values with the base's recorded distribution. The gate base_live checks
//     that the base is still live: if another version was flipped live meanwhile (by hand,
//     a rollback), flipping this one would drop what that version holds, so it is left
//     complete and not live, for a flip by hand.
//   - The cold-start answers (Manifest.Defaults) are the base's, when it has some: an
//     increment's rows are a few keys, not the population the defaults describe.
//   - The flip is a compare-and-swap from the base, so a version flipped live since is
//     never overwritten.

// modeOf is a manifest's mode, full for one written before modes existed.
func modeOf(m *writers.Manifest) string {
	if m.Incremental() {
		return writers.VersionIncremental
	}
	return writers.VersionFull
}

// chainOnto decides a new version's place: full at depth 1, or incremental on the live
// version. It refuses an incremental run that cannot build on the live version.
func (r *run) chainOnto(ctx context.Context) (mode, base string, depth int, err error) {
	if !r.job.Sink.Incremental() {
		return writers.VersionFull, "", 1, nil
	}
	live, err := r.store.Live(ctx, r.ns)
	if err != nil {
		return "", "", 0, fmt.Errorf("read live pointer: %w", err)
	}
	if live == "" {
		return "", "", 0, fmt.Errorf("sink.mode is incremental, but namespace %s has no live version to build on: run a full version first (sink.mode: full)", r.ns)
	}
	bm, err := r.store.Manifest(ctx, r.ns, live)
	if err != nil {
		return "", "", 0, fmt.Errorf("read live manifest %s: %w", live, err)
	}
	if err := CheckChainDepth(r.ns, bm, r.job.Sink.MaxChain); err != nil {
		return "", "", 0, err
	}
	if bm.Encoding != r.job.Sink.Encoding || !slices.Equal(bm.Outputs, r.model.Outputs) {
		return "", "", 0, mismatch{fmt.Errorf("sink.mode is incremental, but live version %s of %s has encoding %s and outputs %v, this run %s and %v: an increment must answer in its base's shape; run a full version",
			live, r.ns, bm.Encoding, bm.Outputs, r.job.Sink.Encoding, r.model.Outputs)}
	}
	return writers.VersionIncremental, live, bm.ChainDepth() + 1, nil
}

// ErrChainTooDeep is wrapped by the error of an incremental run (or deletion) refused
// because its base's chain is already sink.max_chain deep.
var ErrChainTooDeep = errors.New("pipeline: chain of incremental versions at max_chain")

// CheckChainDepth refuses an increment on base when base's chain is already maxChain
// deep (0: writers.DefaultMaxChain).
func CheckChainDepth(ns string, base *writers.Manifest, maxChain int) error {
	if maxChain <= 0 {
		maxChain = writers.DefaultMaxChain
	}
	if d := base.ChainDepth(); d >= maxChain {
		return fmt.Errorf("%w: live version %s of %s is the head of a chain %d versions deep and sink.max_chain is %d: run `staticref versions compact --store URL --namespace %s` (or a full run) first, then the increment",
			ErrChainTooDeep, base.Version, ns, d, maxChain, ns)
	}
	return nil
}

// incrementalGates adjusts a full run's gate results for an increment on base (live is
// the live version now): min_rows_ratio and min_key_overlap skipped, and base_live added.
func incrementalGates(results []writers.GateResult, base, live string) []writers.GateResult {
	for i := range results {
		switch results[i].Name {
		case "min_rows_ratio":
			results[i] = writers.GateResult{Name: "min_rows_ratio", Passed: true, Limit: results[i].Limit,
				Detail: "skipped: incremental version (it holds only its own rows, on top of base " + base + ")"}
		case "min_key_overlap":
			results[i] = writers.GateResult{Name: "min_key_overlap", Passed: true, Limit: results[i].Limit,
				Detail: "skipped: incremental version (it holds only some keys by design)"}
		}
	}
	g := writers.GateResult{Name: "base_live", Limit: 1, Passed: live == base, Value: 1}
	if g.Passed {
		g.Detail = "base " + base + " is live"
	} else {
		g.Value = 0
		g.Detail = fmt.Sprintf("base %s is no longer live (%s is): flipping this increment would drop what %s holds; flip it by hand (versions flip) if that is meant, or run it again",
			base, orNoneStr(live), orNoneStr(live))
	}
	return append(results, g)
}

func orNoneStr(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
