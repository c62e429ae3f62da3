package pipeline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/staticref/staticref/writers"
)

// AbandonedAfter is how old a version still in state writing must be before gc removes it.
const AbandonedAfter = 24 * time.Hour

// release writes the complete manifest, runs the gates, flips and collects garbage.
func (r *run) release(ctx context.Context) (*Result, error) {
	res := &Result{Manifest: r.m}
	live, err := r.store.Live(ctx, r.ns)
	if err != nil {
		return res, fmt.Errorf("read live pointer: %w", err)
	}
	var liveRows int64 = -1
	if live != "" {
		lm, err := r.store.Manifest(ctx, r.ns, live)
		if err != nil {
			return res, fmt.Errorf("read live manifest %s: %w", live, err)
		}
		liveRows = lm.RowsWritten
	}
	if r.m.Gates, err = r.gates(ctx, liveRows, live); err != nil {
		return res, err
	}
	r.m.State = writers.StateComplete
	r.m.CompletedAt = r.now().UTC()
	// On Pebble this compacts the version's rows: seconds per ten million rows.
	r.log.Info("completing version", "namespace", r.ns, "version", r.m.Version, "rows_written", r.m.RowsWritten)
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return res, fmt.Errorf("complete version %s: %w", r.m.Version, err)
	}
	r.log.Info("version complete", "namespace", r.ns, "version", r.m.Version,
		"rows_read", r.m.RowsRead, "rows_written", r.m.RowsWritten, "rows_skipped", r.m.RowsSkipped)
	var failed []string
	for _, g := range r.m.Gates {
		if !g.Passed {
			failed = append(failed, g.Name+": "+g.Detail)
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("%w: version %s is complete but not live: %s", ErrGateFailed, r.m.Version, strings.Join(failed, "; "))
	}
	if r.cfg.NoFlip || r.job.Release.Flip == "manual" {
		r.log.Info("version left for a manual flip", "version", r.m.Version)
		return res, nil
	}
	if err := writers.FlipFrom(ctx, r.store, r.ns, live, r.m.Version); err != nil {
		if now, lerr := r.store.Live(ctx, r.ns); r.sharded() && lerr == nil && now == r.m.Version {
			// Another shard finished at the same moment and won the flip.
			r.log.Info("another shard flipped the version", "version", r.m.Version)
			return res, nil
		}
		return res, fmt.Errorf("flip %s to %s: %w", r.ns, r.m.Version, err)
	}
	res.Flipped, res.Previous = true, live
	r.log.Info("flipped", "namespace", r.ns, "live", r.m.Version, "previous", live)
	res.Removed, err = writers.GC(ctx, r.store, r.ns, r.job.Release.KeepVersions(), AbandonedAfter, r.now())
	if err != nil {
		// The new version is live: the run succeeded. The next run's gc tries again.
		r.log.Warn("gc after the flip failed", "namespace", r.ns, "err", err)
	}
	return res, nil
}

// completed handles a sharded run whose version another shard already completed (a
// retried pod): it reports the version's gates again, and flips it if the shard that
// completed it died before its flip, so a retry never hides a failed gate or a version
// left unflipped.
func (r *run) completed(ctx context.Context) (*Result, error) {
	res := &Result{Manifest: r.m}
	if r.m.State != writers.StateComplete {
		return res, fmt.Errorf("version %s of %s is %s", r.m.Version, r.ns, r.m.State)
	}
	for _, g := range r.m.Gates {
		if !g.Passed {
			return res, fmt.Errorf("%w: version %s is complete but not live: %s: %s", ErrGateFailed, r.m.Version, g.Name, g.Detail)
		}
	}
	live, err := r.store.Live(ctx, r.ns)
	if err != nil {
		return res, fmt.Errorf("read live pointer: %w", err)
	}
	switch {
	case live == r.m.Version || !r.m.LiveAt.IsZero():
		r.log.Info("version already complete and released", "version", r.m.Version)
		return res, nil
	case r.cfg.NoFlip || r.job.Release.Flip == "manual":
		return res, nil
	case live != "":
		// A version flipped live after this one completed is newer, whatever the ids say:
		// flipping this one would be a rollback.
		lm, err := r.store.Manifest(ctx, r.ns, live)
		if err != nil {
			return res, fmt.Errorf("read the live manifest: %w", err)
		}
		if at := latestFlip(lm); at.After(r.m.CompletedAt) {
			r.log.Info("a newer version is live; not flipping", "version", r.m.Version, "live", live)
			return res, nil
		}
	}
	if err := writers.FlipFrom(ctx, r.store, r.ns, live, r.m.Version); err != nil {
		return res, fmt.Errorf("flip %s to %s: %w", r.ns, r.m.Version, err)
	}
	res.Flipped, res.Previous = true, live
	r.log.Info("flipped", "namespace", r.ns, "live", r.m.Version, "previous", live)
	return res, nil
}

// latestFlip is when m was last made live by a flip (LiveAt in a manifest written before
// flips were recorded).
func latestFlip(m *writers.Manifest) time.Time {
	if m.FlippedAt.After(m.LiveAt) {
		return m.FlippedAt
	}
	return m.LiveAt
}

func (r *run) gates(ctx context.Context, liveRows int64, live string) ([]writers.GateResult, error) {
	g := r.job.Release.Gates
	minRows := writers.GateResult{Name: "min_rows_ratio", Limit: g.MinRows(), Passed: true, Value: 1}
	if liveRows > 0 {
		minRows.Value = float64(r.m.RowsWritten) / float64(liveRows)
		minRows.Passed = minRows.Value >= minRows.Limit
		minRows.Detail = fmt.Sprintf("%d rows written, live version %s has %d (ratio %.4f, at least %.4f)",
			r.m.RowsWritten, live, liveRows, minRows.Value, minRows.Limit)
	} else {
		minRows.Detail = "no live version to compare with"
	}
	nulls := writers.GateResult{Name: "max_null_fraction", Limit: g.MaxNulls()}
	if r.m.RowsWritten > 0 {
		nulls.Value = float64(r.m.NullOutputs) / float64(r.m.RowsWritten)
	}
	nulls.Passed = nulls.Value <= nulls.Limit
	nulls.Detail = fmt.Sprintf("%d of %d rows have a NaN or infinite output (fraction %.6f, at most %.6f)",
		r.m.NullOutputs, r.m.RowsWritten, nulls.Value, nulls.Limit)
	empty := writers.GateResult{Name: "not_empty", Limit: 1, Value: float64(r.m.RowsWritten), Passed: r.m.RowsWritten > 0,
		Detail: fmt.Sprintf("%d rows written", r.m.RowsWritten)}
	results := []writers.GateResult{empty, minRows, nulls}
	dups := r.m.DuplicateKeys
	unique := writers.GateResult{Name: "unique_keys", Limit: 0, Value: float64(dups), Passed: dups == 0 || !g.Unique(),
		Detail: fmt.Sprintf("%d rows written, %d distinct keys: %d rows repeat a key of another row (%d keys occur more than once; one row of each wins, in no set order)",
			r.m.RowsWritten, r.m.RowsWritten-dups, dups, r.m.RepeatedKeys)}
	if dups > 0 && !g.Unique() {
		unique.Detail += "; release.gates.unique_keys is false, so they were written anyway"
	}
	results = append(results, unique)
	return results, nil
}
