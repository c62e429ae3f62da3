package pipeline

import (
	"context"
	"errors"
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
	var lm *writers.Manifest
	if live != "" {
		if lm, err = r.store.Manifest(ctx, r.ns, live); err != nil {
			return res, fmt.Errorf("read live manifest %s: %w", live, err)
		}
	}
	if r.exportOnly() {
		// No live version: the gates compare with the newest complete export.
		if live, lm, err = r.newestExport(ctx); err != nil {
			return res, err
		}
	}
	if r.m.Incremental() {
		bm, err := r.store.Manifest(ctx, r.ns, r.m.Base)
		if err != nil {
			return res, fmt.Errorf("read base manifest %s: %w", r.m.Base, err)
		}
		if r.baseChain, err = writers.ResolveChain(ctx, r.store, r.ns, bm); err != nil {
			return res, fmt.Errorf("incremental version %s: %w", r.m.Version, err)
		}
		if bm.Defaults != nil {
			r.m.Defaults = bm.Defaults // the population's cold-start answers, not the increment's
		}
	}
	if r.m.Gates, err = r.gates(ctx, live, lm); err != nil {
		return res, err
	}
	r.m.State = writers.StateComplete
	r.m.CompletedAt = r.now().UTC()
	if err := r.publishExport(ctx); err != nil {
		return res, err
	}
	// On Pebble this compacts the version's rows: seconds per ten million rows.
	r.log.Info("completing version", "namespace", r.ns, "version", r.m.Version, "rows_written", r.m.RowsWritten)
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return res, fmt.Errorf("complete version %s: %w", r.m.Version, err)
	}
	r.log.Info("version complete", "namespace", r.ns, "version", r.m.Version,
		"rows_read", r.m.RowsRead, "rows_written", r.m.RowsWritten, "rows_skipped", r.m.RowsSkipped)
	if err := gateError(r.m); err != nil {
		return res, err
	}
	if r.exportOnly() {
		r.log.Info("export complete: the version's manifest.json is published beside its files (an export-only store has no live version)",
			"version", r.m.Version, "export", r.m.Export.URL)
		return res, nil
	}
	if r.cfg.NoFlip || r.job.Release.Flip == "manual" {
		r.log.Info("version left for a manual flip", "version", r.m.Version)
		return res, nil
	}
	if r.releases() && live != "" {
		res.Release, err = r.startRelease(ctx)
		return res, err
	}
	if r.releases() {
		r.log.Info("no live version to release against: flipping the first one live", "flip", r.job.Release.Flip, "version", r.m.Version)
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
	case r.exportOnly():
		return res, nil // nothing to flip
	case live == r.m.Version || !r.m.LiveAt.IsZero():
		r.log.Info("version already complete and released", "version", r.m.Version)
		return res, nil
	case r.cfg.NoFlip || r.job.Release.Flip == "manual":
		return res, nil
	case r.m.Incremental() && live != r.m.Base:
		r.log.Info("the increment's base is no longer live; not flipping", "version", r.m.Version, "base", r.m.Base, "live", live)
		return res, nil
	case r.releases() && live != "":
		// The shard that completed the version may have died before starting its release.
		cur, err := r.store.Release(ctx, r.ns)
		if err != nil && !errors.Is(err, writers.ErrNoReleases) {
			return res, fmt.Errorf("read the release of %s: %w", r.ns, err)
		}
		if cur != nil && cur.Candidate == r.m.Version {
			r.log.Info("version already released", "version", r.m.Version, "release", cur.ID, "state", cur.State)
			return res, nil
		}
		if lm, err := r.store.Manifest(ctx, r.ns, live); err == nil && latestFlip(lm).After(r.m.CompletedAt) {
			r.log.Info("a newer version is live; not releasing", "version", r.m.Version, "live", live)
			return res, nil
		}
		res.Release, err = r.startRelease(ctx)
		return res, err
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

// gateError is the error of a complete version whose gates did not all pass (nil when
// they did): every failed gate with its detail.
func gateError(m *writers.Manifest) error {
	var failed []string
	for _, g := range m.Gates {
		if !g.Passed {
			failed = append(failed, g.Name+": "+g.Detail)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("%w: version %s is complete but not live: %s", ErrGateFailed, m.Version, strings.Join(failed, "; "))
}

// latestFlip is when m was last made live by a flip (LiveAt in a manifest written before
// flips were recorded).
func latestFlip(m *writers.Manifest) time.Time {
	if m.FlippedAt.After(m.LiveAt) {
		return m.FlippedAt
	}
	return m.LiveAt
}

// gates computes every gate's result; lm is the live version's manifest (nil when none).
func (r *run) gates(ctx context.Context, live string, lm *writers.Manifest) ([]writers.GateResult, error) {
	g := r.job.Release.Gates
	var liveRows int64 = -1
	liveName := live
	if lm != nil {
		liveRows = lm.RowsWritten
		if lm.Incremental() && !r.m.Incremental() {
			// A full run replaces the live chain: compare with the full version at its
			// bottom, which holds nearly every key (an increment holds a few).
			chain, err := writers.ResolveChain(ctx, r.store, r.ns, lm)
			if err != nil {
				return nil, fmt.Errorf("min_rows_ratio: live version: %w", err)
			}
			bottom := chain[len(chain)-1]
			liveRows, liveName = bottom.RowsWritten, fmt.Sprintf("%s (the full version under the live chain headed by %s)", bottom.Version, live)
		}
	}
	minRows := writers.GateResult{Name: "min_rows_ratio", Limit: g.MinRows(), Passed: true, Value: 1}
	if liveRows > 0 {
		minRows.Value = float64(r.m.RowsWritten) / float64(liveRows)
		minRows.Passed = minRows.Value >= minRows.Limit
		what := "live version"
		if r.exportOnly() {
			what = "newest complete export"
		}
		minRows.Detail = fmt.Sprintf("%d rows written, %s %s has %d (ratio %.4f, at least %.4f)",
			r.m.RowsWritten, what, liveName, liveRows, minRows.Value, minRows.Limit)
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
	drift, err := r.driftGates(ctx, live, lm)
	if err != nil {
		return nil, err
	}
	results = append(results, drift...)
	if r.m.Incremental() {
		results = incrementalGates(results, r.m.Base, live)
	}
	return results, nil
}

// releases reports whether release.flip asks for a release instead of a flip.
func (r *run) releases() bool {
	f := r.job.Release.Flip
	return f == writers.ModeCanary || f == writers.ModeShadow
}

// startRelease starts the release that release.flip canary or shadow asks for, of the
// complete version against the live one. A store that keeps no release records, or a
// release of another candidate already running, fail the run: the version stays
// complete and not live, for a flip or a release by hand. A release of this version
// already running (another shard of the run started it) is this run's.
func (r *run) startRelease(ctx context.Context) (*writers.Release, error) {
	rl := r.job.Release
	spec := writers.ReleaseSpec{Namespace: r.ns, Candidate: r.m.Version, Mode: rl.Flip,
		By: "staticref run of job " + r.job.Name}
	c := rl.Canary
	switch rl.Flip {
	case writers.ModeCanary:
		spec.Canary.Steps = c.CanarySteps()
		if c.Interval != nil {
			spec.Canary.Interval = writers.Duration(*c.Interval)
		}
		if c.MinRequests != nil {
			spec.Canary.MinRequests = *c.MinRequests
		}
		if c.MaxNotFoundIncrease != nil {
			spec.Canary.MaxNotFoundIncrease = *c.MaxNotFoundIncrease
		}
		if c.MaxErrorIncrease != nil {
			spec.Canary.MaxErrorIncrease = *c.MaxErrorIncrease
		}
		if c.MaxPSI != nil {
			spec.Canary.MaxPSI = *c.MaxPSI
		}
		if c.FailureLimit != nil {
			spec.Canary.FailureLimit = *c.FailureLimit
		}
	case writers.ModeShadow:
		if p := rl.Shadow.SamplePercent; p != nil {
			spec.Shadow.SamplePercent = *p
		}
	}
	rel, err := writers.StartRelease(ctx, r.store, spec, r.now())
	if err == nil {
		r.log.Info("release started", "namespace", r.ns, "release", rel.ID, "mode", rel.Mode,
			"candidate", rel.Candidate, "live", rel.Live, "weight_percent", rel.WeightPercent)
		return rel, nil
	}
	if errors.Is(err, writers.ErrNoReleases) {
		return nil, fmt.Errorf("release.flip is %s, but store %s keeps no release records: version %s is complete and not live; flip it with versions flip, or set release.flip to auto or manual (%w)",
			rl.Flip, r.store, r.m.Version, writers.ErrNoReleases)
	}
	// Another shard completing the version at the same moment may have started it (this
	// start then finds it running, or loses the compare-and-swap to it).
	if cur, cerr := r.store.Release(ctx, r.ns); cerr == nil && cur.Active() && cur.Candidate == r.m.Version {
		r.log.Info("another shard started the release", "version", r.m.Version, "release", cur.ID)
		return cur, nil
	}
	if errors.Is(err, writers.ErrReleaseRunning) {
		return nil, fmt.Errorf("release.flip is %s, but another release of %s is running: version %s is complete and not live; end that release (release promote or abort) and start one of %s: %w",
			rl.Flip, r.ns, r.m.Version, r.m.Version, err)
	}
	return nil, fmt.Errorf("start a %s release of version %s (complete, not live): %w", rl.Flip, r.m.Version, err)
}
