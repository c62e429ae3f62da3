package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/staticref/staticref/pipeline/dupkeys"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// Deletions and compaction: versions made inside the store, with no model run. Each holds
// the namespace's writer lease like a run, writes a new version beside the live one,
// records its gates, and flips from the version it read (a compare-and-swap), so the
// live version is never touched by a failure and never overwritten by a concurrent flip.

// MaintainConfig is a deletion or a compaction of one namespace.
type MaintainConfig struct {
	Store     *writers.Store
	Namespace string
	// NoFlip leaves the complete version for a manual flip.
	NoFlip bool
	// MaxChain is the deepest chain a deletion may make (0: writers.DefaultMaxChain).
	MaxChain int
	// Keep is how many previous versions gc keeps after the flip (negative: no gc).
	Keep int
	// MinRowsRatio is compaction's min_rows_ratio gate: rows written over the rows the
	// chain answers (0: 1, every one).
	MinRowsRatio float64
	Now          func() time.Time
	Log          *slog.Logger
	Wait         bool
	LeaseTTL     time.Duration
	Holder       string
}

// maintenance is a run without a job: it borrows run's lease and flip code.
func (c MaintainConfig) run() (*run, error) {
	if c.Store == nil {
		return nil, errors.New("pipeline: MaintainConfig needs a Store")
	}
	if err := writers.ValidateNamespace(c.Namespace); err != nil {
		return nil, err
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	cfg := Config{Store: c.Store, Now: c.Now, Log: c.Log, Wait: c.Wait, LeaseTTL: c.LeaseTTL, Holder: c.Holder}
	return &run{cfg: cfg, store: c.Store, ns: c.Namespace, log: c.Log, now: c.Now}, nil
}

// liveHead reads the live version of ns and its chain.
func (r *run) liveHead(ctx context.Context) ([]*writers.Manifest, error) {
	live, err := r.store.Live(ctx, r.ns)
	if err != nil {
		return nil, fmt.Errorf("read live pointer: %w", err)
	}
	if live == "" {
		return nil, fmt.Errorf("namespace %s has no live version", r.ns)
	}
	lm, err := r.store.Manifest(ctx, r.ns, live)
	if err != nil {
		return nil, fmt.Errorf("read live manifest %s: %w", live, err)
	}
	return writers.ResolveChain(ctx, r.store, r.ns, lm)
}

// newMaintained starts a version built from head: its model, outputs and defaults.
func (r *run) newMaintained(ctx context.Context, head *writers.Manifest, job string) (*writers.Manifest, error) {
	start := r.now().UTC()
	id, err := writers.NewVersionID(ctx, r.store, r.ns, start)
	if err != nil {
		return nil, fmt.Errorf("new version: %w", err)
	}
	m := &writers.Manifest{
		Namespace: r.ns, Version: id, Job: job, State: writers.StateWriting,
		Model: head.Model, Key: head.Key, Features: head.Features, Encoding: head.Encoding, Outputs: head.Outputs,
		Defaults: head.Defaults, StartedAt: start,
	}
	return m, nil
}

// finish completes m with its gates and flips it from live unless told not to, then
// collects garbage.
func (r *run) finish(ctx context.Context, c MaintainConfig, live string) (*Result, error) {
	res := &Result{Manifest: r.m}
	r.m.State = writers.StateComplete
	r.m.CompletedAt = r.now().UTC()
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return res, fmt.Errorf("complete version %s: %w", r.m.Version, err)
	}
	if err := gateError(r.m); err != nil {
		return res, err
	}
	if c.NoFlip {
		return res, nil
	}
	if err := writers.FlipFrom(ctx, r.store, r.ns, live, r.m.Version); err != nil {
		return res, fmt.Errorf("flip %s to %s: %w", r.ns, r.m.Version, err)
	}
	res.Flipped, res.Previous = true, live
	r.log.Info("flipped", "namespace", r.ns, "live", r.m.Version, "previous", live)
	if c.Keep >= 0 {
		var err error
		if res.Removed, err = writers.GC(ctx, r.store, r.ns, c.Keep, AbandonedAfter, r.now()); err != nil {
			r.log.Warn("gc after the flip failed", "namespace", r.ns, "err", err)
		}
	}
	return res, nil
}

// writeBatch is how many rows deletion and compaction write at once.
const writeBatch = 4096

// Delete writes an incremental version of tombstones for keys on top of the live version
// of c.Namespace and flips it (unless c.NoFlip): those keys then get the cold-start
// answers. The rows the keys had stay in the versions below until the chain is compacted
// (Compact) and those versions are collected.
func Delete(ctx context.Context, c MaintainConfig, keys [][]byte) (res *Result, err error) {
	r, err := c.run()
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys to delete")
	}
	for i, k := range keys {
		if err := writers.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
	}
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	chain, err := r.liveHead(ctx)
	if err != nil {
		return nil, err
	}
	head := chain[0]
	if err := CheckChainDepth(r.ns, head, c.MaxChain); err != nil {
		return nil, err
	}
	if r.m, err = r.newMaintained(ctx, head, "staticref delete"); err != nil {
		return nil, err
	}
	r.m.Mode, r.m.Base, r.m.Depth = writers.VersionIncremental, head.Version, head.ChainDepth()+1
	r.m.Distributions = head.Distributions
	r.m.ExpectedRows = int64(len(keys)) // sizes the store's layout (Redis buckets)
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return nil, fmt.Errorf("create version %s: %w", r.m.Version, err)
	}
	r.created = true
	defer func() {
		if err != nil && r.m.State == writers.StateWriting {
			r.fail(err)
		}
	}()
	seen := make(map[string]bool, len(keys))
	var rows writers.Rows
	for _, k := range keys {
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		rows.Keys, rows.Values = append(rows.Keys, k), append(rows.Values, writers.Tombstone)
		if rows.Len() == writeBatch {
			if err := r.store.WriteRows(ctx, r.ns, r.m.Version, rows); err != nil {
				return nil, err
			}
			rows = writers.Rows{}
		}
	}
	if rows.Len() > 0 {
		if err := r.store.WriteRows(ctx, r.ns, r.m.Version, rows); err != nil {
			return nil, err
		}
	}
	n := int64(len(seen))
	r.m.RowsRead, r.m.RowsWritten = int64(len(keys)), n
	r.m.DuplicateKeys = int64(len(keys)) - n
	skip := func(name string) writers.GateResult {
		return writers.GateResult{Name: name, Passed: true, Detail: "skipped: a version of deletions (tombstones have no values)"}
	}
	r.m.Gates = []writers.GateResult{
		{Name: "not_empty", Limit: 1, Value: float64(n), Passed: n > 0, Detail: fmt.Sprintf("%d keys deleted", n)},
		{Name: "min_rows_ratio", Passed: true, Detail: "skipped: incremental version (it holds only its own rows, on top of base " + head.Version + ")"},
		skip("max_null_fraction"),
		skip("drift"),
	}
	r.log.Info("deletions written", "namespace", r.ns, "version", r.m.Version, "keys", n, "base", head.Version)
	return r.finish(ctx, c, head.Version)
}

// ErrNothingToCompact: the live version is full already.
var ErrNothingToCompact = errors.New("pipeline: the live version is a full version: nothing to compact")

// Compact writes a full version from the live chain of c.Namespace, inside the store (no
// model run): every key the chain answers, with the value it answers, tombstoned keys
// left out; then it flips it through the gates (unless c.NoFlip).
//
// It reads the chain newest first: the increments' keys, which are few, are remembered as
// they are written, so that a lower level's row of the same key is skipped; the full
// version at the bottom, which holds nearly every key, is streamed without remembering
// any. Memory is therefore bounded by the increments, not by the namespace. The gates:
// not_empty; min_rows_ratio, the keys the new version holds (counted in the store) over
// the keys the chain answers (counted while merging): anything short of every one is a
// failed write; max_null_fraction over the values copied.
func Compact(ctx context.Context, c MaintainConfig) (res *Result, err error) {
	r, err := c.run()
	if err != nil {
		return nil, err
	}
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	chain, err := r.liveHead(ctx)
	if err != nil {
		return nil, err
	}
	head := chain[0]
	if len(chain) == 1 {
		return &Result{Manifest: head}, fmt.Errorf("%w (%s of %s)", ErrNothingToCompact, head.Version, r.ns)
	}
	if r.m, err = r.newMaintained(ctx, head, head.Job); err != nil {
		return nil, err
	}
	r.m.Mode, r.m.Depth = writers.VersionFull, 1
	// The store sizes the version's layout by it (Redis buckets): the chain holds at most
	// the sum of its levels' rows.
	for _, lm := range chain {
		r.m.ExpectedRows += lm.RowsWritten
	}
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return nil, fmt.Errorf("create version %s: %w", r.m.Version, err)
	}
	r.created = true
	defer func() {
		if err != nil && r.m.State == writers.StateWriting {
			r.fail(err)
		}
	}()
	sketches := make([]*dist.Sketch, len(r.m.Outputs))
	for i := range sketches {
		sketches[i] = new(dist.Sketch)
	}
	var answered, nulls int64
	seen := map[string]bool{} // keys of the levels above the current one
	// A scan may pass a key twice (a Pebble version a resumed run wrote into two parts, a
	// Redis SCAN during a resize): distinct keys are counted in bounded memory, as a
	// run's duplicate keys are, so the gate compares keys with keys.
	distinct := dupkeys.New(0, "")
	defer distinct.Close()
	var vals []float64
	var f32 []float32
	for level, lm := range chain {
		bottom := level == len(chain)-1
		var fresh []string // this level's keys, remembered once the level is done
		err := r.store.ScanRows(ctx, r.ns, lm.Version, func(rows writers.Rows) error {
			var out writers.Rows
			for i, k := range rows.Keys {
				if seen[string(k)] {
					continue
				}
				if !bottom {
					fresh = append(fresh, string(k))
				}
				v := rows.Values[i]
				if writers.IsTombstone(v) {
					continue
				}
				var err error
				if vals, err = decodeValue(lm, v, vals[:0]); err != nil {
					return fmt.Errorf("key %q of version %s: %w", k, lm.Version, err)
				}
				off, null := 0, false
				for o, out := range r.m.Outputs {
					f32 = f32[:0]
					for _, x := range vals[off : off+out.Width] {
						null = null || math.IsNaN(x)
						f32 = append(f32, float32(x))
					}
					sketches[o].Add(f32)
					off += out.Width
				}
				if null {
					nulls++
				}
				answered++
				if err := distinct.Add(k); err != nil {
					return err
				}
				out.Keys, out.Values = append(out.Keys, k), append(out.Values, v)
			}
			if out.Len() == 0 {
				return nil
			}
			return r.store.WriteRows(ctx, r.ns, r.m.Version, out)
		})
		if err != nil {
			return nil, fmt.Errorf("compact version %s of the chain: %w", lm.Version, err)
		}
		for _, k := range fresh {
			seen[k] = true
		}
	}
	written, err := r.store.CountKeys(ctx, r.ns, r.m.Version)
	if err != nil {
		return nil, err
	}
	repeats, _, err := distinct.Count()
	if err != nil {
		return nil, fmt.Errorf("count the chain's distinct keys: %w", err)
	}
	answered -= repeats
	r.m.RowsRead, r.m.RowsWritten, r.m.NullOutputs = answered, written, nulls
	r.m.Distributions = distributions(r.m.Outputs, sketches)
	ratio := c.MinRowsRatio
	if ratio <= 0 {
		ratio = 1
	}
	minRows := writers.GateResult{Name: "min_rows_ratio", Limit: ratio, Value: 1, Passed: true}
	if answered > 0 {
		minRows.Value = float64(written) / float64(answered)
		minRows.Passed = minRows.Value >= ratio
	}
	minRows.Detail = fmt.Sprintf("%d keys written, the chain %s answers %d (ratio %.4f, at least %.4f)",
		written, strings.Join(writers.ChainVersions(chain), " <- "), answered, minRows.Value, ratio)
	nullLimit := nullLimitOf(chain)
	nullFrac := 0.0
	if written > 0 {
		nullFrac = float64(nulls) / float64(written)
	}
	r.m.Gates = []writers.GateResult{
		{Name: "not_empty", Limit: 1, Value: float64(written), Passed: written > 0, Detail: fmt.Sprintf("%d rows written", written)},
		minRows,
		{Name: "max_null_fraction", Limit: nullLimit, Value: nullFrac, Passed: nullFrac <= nullLimit,
			Detail: fmt.Sprintf("%d of %d rows have a NaN or infinite output (fraction %.6f, at most %.6f, the limit the chain's runs had)",
				nulls, written, nullFrac, nullLimit)},
	}
	r.log.Info("chain compacted", "namespace", r.ns, "version", r.m.Version, "chain", writers.ChainVersions(chain), "rows", written)
	return r.finish(ctx, c, head.Version)
}

// nullLimitOf is the max_null_fraction limit the newest run of chain that checked it
// had: compaction holds the values to the job's own limit.
func nullLimitOf(chain []*writers.Manifest) float64 {
	for _, m := range chain {
		for _, g := range m.Gates {
			if g.Name == "max_null_fraction" && !strings.HasPrefix(g.Detail, "skipped") {
				return g.Limit
			}
		}
	}
	return 0
}
