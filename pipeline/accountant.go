package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/staticref/staticref/pipeline/dupkeys"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// committedRows counts the rows of committed row groups, so that a run that fails
// reports what the version keeps of it, not 0. It is added to before the stages start and
// by the one goroutine that commits, and read after the stages have stopped.
type committedRows struct{ read, written, skipped int64 }

func (c *committedRows) add(commit writers.Commit) {
	c.read += commit.Rows
	c.written += commit.Written
	for _, n := range commit.Skipped {
		c.skipped += n
	}
}

// report puts the counts into a failed run's manifest (nil before one exists).
func (c *committedRows) report(m *writers.Manifest) {
	if m != nil {
		m.RowsRead, m.RowsWritten, m.RowsSkipped = c.read, c.written, c.skipped
	}
}

// commitID names one unit of work: a row group of a file. Every process of a sharded or
// resumed run derives the same id from the same file and row group.
func commitID(file string, rg int) string { return fmt.Sprintf("%s#%d", file, rg) }

// unit names a row group of a file.
type unit struct {
	file string
	rg   int
}

// accountant is the single goroutine that accounts for chunks the store has taken: it
// keeps the run's counts and cold-start defaults, so none of them needs a lock.
//
// Progress is committed per row group: when the last row of a row group has been written,
// its commit record (counts, sums and the sketches of its output values, see
// distributions.go) is committed to the store. A resumed run skips
// committed row groups and totals the version from the records of all of them, so the
// version ends with exactly one copy of every row and exact counts.
type accountant struct {
	r        *run
	defaults *defaults
	expected map[unit]int64           // rows of each row group this run writes
	open     map[unit]*writers.Commit // row groups in progress
	sketches map[unit][]*dist.Sketch  // of the output values of each row group in progress
	commits  chan writers.Commit      // row groups written, to the committer
	rows     int64                    // rows written by this run, for progress
	keys     *dupkeys.Counter         // the key of every row written by this run
	sample   *keySample               // keys for the drift gates (nil: none is set)
	all      bool                     // this run writes every row group of the version
	skipped  int64
	queues   func() map[string]int // stage queue depths, for progress
	export   *exporter             // nil: no export
}

func newAccountant(r *run, todo []task) *accountant {
	a := &accountant{
		r:        r,
		defaults: newDefaults(r.job.Defaults.Global, r.job.Defaults.SegmentBy, r.model.Outputs),
		expected: map[unit]int64{},
		open:     map[unit]*writers.Commit{},
		sketches: map[unit][]*dist.Sketch{},
		commits:  make(chan writers.Commit, 64),
		keys:     dupkeys.New(0, ""),
	}
	for _, t := range todo {
		a.expected[unit{t.file, t.rg}] = t.rows
	}
	if g := r.job.Release.Gates; g.SamplesKeys() {
		a.sample = newKeySample(g.Samples())
	}
	return a
}

func (a *accountant) run(ctx context.Context, in <-chan *chunk, free chan<- *chunk) error {
	defer close(a.commits)
	for {
		c, ok, err := recv(ctx, in)
		if !ok || err != nil {
			return err
		}
		if err := a.account(ctx, c); err != nil {
			return err
		}
		if err := send(ctx, free, c); err != nil {
			return err
		}
	}
}

func (a *accountant) account(ctx context.Context, c *chunk) error {
	r := a.r
	t := unit{c.file, c.rowGroup}
	commit := a.open[t]
	if commit == nil {
		commit = &writers.Commit{ID: commitID(c.file, c.rowGroup)}
		a.open[t] = commit
		a.sketches[t] = newSketches(r.model.Outputs)
	}
	addSketches(a.sketches[t], r.model.Outputs, c)
	commit.Rows += int64(c.n)
	commit.Written += int64(c.rows.Len())
	commit.NullOutputs += int64(c.nullOuts)
	if c.nullKeys > 0 || c.nullFeats > 0 {
		if commit.Skipped == nil {
			commit.Skipped = map[string]int64{}
		}
		if c.nullKeys > 0 {
			commit.Skipped["null_key"] += int64(c.nullKeys)
		}
		if c.nullFeats > 0 {
			commit.Skipped["null_feature"] += int64(c.nullFeats)
		}
	}
	if a.defaults != nil {
		if commit.Sums == nil {
			commit.Sums = &writers.Sums{}
		}
		for j, i := range c.kept {
			seg, ok := c.segment(int(i))
			if err := a.defaults.add(commit.Sums, c.outs, j, seg, ok); err != nil {
				return err
			}
		}
	}
	if err := a.export.add(ctx, r, c); err != nil {
		return err
	}
	a.rows += int64(c.rows.Len())
	for _, k := range c.rows.Keys {
		if err := a.keys.Add(k); err != nil {
			return err
		}
	}
	if a.sample != nil {
		for _, k := range c.rows.Keys {
			a.sample.add(k)
		}
	}
	switch want := a.expected[t]; {
	case commit.Rows > want:
		return fmt.Errorf("shard %s row group %d: read %d rows, its footer says %d", c.file, c.rowGroup, commit.Rows, want)
	case commit.Rows == want:
		if err := a.export.done(t, commit); err != nil {
			return err
		}
		commit.CommittedAt = r.now().UTC()
		stashSketches(commit, r.model.Outputs, a.sketches[t])
		if err := send(ctx, a.commits, *commit); err != nil {
			return err
		}
		delete(a.open, t)
		delete(a.sketches, t)
	}
	a.skipped += int64(c.nullKeys + c.nullFeats)
	snap := progress.Snapshot{RowsRead: r.rowsRead.Load(), RowsWritten: a.rows, RowsSkipped: a.skipped}
	if a.queues != nil {
		snap.Queues = a.queues()
	}
	r.cfg.Progress.Update(snap)
	return nil
}

// commit records finished row groups. It runs beside the accountant so that a store's
// durable commit (Pebble syncs its log) never stalls the accounting of the next rows; a
// row group is queued only after all its rows were written, so a commit never claims rows
// the store has not taken.
//
// A row group queued before the run failed is still committed (the accountant closes the
// queue when it stops), so a resume does not write it again.
func (a *accountant) commit(ctx context.Context) error {
	for commit := range a.commits {
		// Fenced like the rows (see lease): a writer past its lease records nothing.
		fctx, unfence, err := a.r.fenced(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("commit shard %s: %w", commit.ID, err)
		}
		cctx, cancel := context.WithTimeout(fctx, 30*time.Second)
		err = a.r.store.CommitWork(cctx, a.r.ns, a.r.m.Version, commit)
		cancel()
		unfence()
		if err != nil {
			return fmt.Errorf("commit shard %s: %w", commit.ID, err) // cancels every stage
		}
		a.r.committed.add(commit)
	}
	return nil
}

// finish totals the version from the commit records of every row group, committed by this
// run or an earlier one, and checks that every row of every file is accounted for exactly
// once.
//
// In a sharded run, finish returns how many row groups other processes have yet to
// commit; 0 means this process committed the last one and completes the version. Two
// processes finishing at once may both see every row group committed: both then write the
// same complete manifest, and the compare-and-swap of the flip lets exactly one flip.
func (a *accountant) finish(ctx context.Context, all []task) (waiting int, err error) {
	r, m := a.r, a.r.m
	for t := range a.open {
		return 0, fmt.Errorf("shard %s row group %d: not every row was written", t.file, t.rg)
	}
	commits, err := r.store.Commits(ctx, r.ns, m.Version)
	if err != nil {
		return 0, fmt.Errorf("read committed shards: %w", err)
	}
	byID := make(map[string]writers.Commit, len(commits))
	for _, commit := range commits {
		byID[commit.ID] = commit
	}
	for _, t := range all {
		if _, ok := byID[commitID(t.file, t.rg)]; !ok {
			waiting++
		}
	}
	if waiting > 0 {
		if !r.sharded() {
			return 0, fmt.Errorf("%d row groups were never committed", waiting)
		}
		// Not the last shard: report this process's own counts (the manifest is not
		// stored; the shard that completes the version totals every shard's records).
		m.RowsRead, m.RowsWritten, m.RowsSkipped = r.rowsRead.Load(), a.rows, a.skipped
		return waiting, nil
	}
	m.RowsRead, m.RowsWritten, m.RowsSkipped, m.NullOutputs = 0, 0, 0, 0
	m.SkipReasons = nil
	m.Commits = nil
	total := &writers.Sums{}
	sketches, sketched := newSketches(r.model.Outputs), true
	for _, t := range all {
		commit := byID[commitID(t.file, t.rg)]
		if commit.Rows != t.rows {
			return 0, fmt.Errorf("shard %s row group %d: committed %d rows, its footer says %d", t.file, t.rg, commit.Rows, t.rows)
		}
		ok, err := takeSketches(&commit, r.model.Outputs, sketches)
		if err != nil {
			return 0, err
		}
		sketched = sketched && ok
		m.RowsRead += commit.Rows
		m.RowsWritten += commit.Written
		m.NullOutputs += commit.NullOutputs
		for reason, n := range commit.Skipped {
			if m.SkipReasons == nil {
				m.SkipReasons = map[string]int64{}
			}
			m.SkipReasons[reason] += n
			m.RowsSkipped += n
		}
		mergeSums(total, commit.Sums)
		commit.Sums = nil // the manifest keeps the counts, not every row group's sums
		m.Commits = append(m.Commits, commit)
	}
	if err := exportFiles(m, m.Commits); err != nil {
		return 0, err
	}
	if m.Defaults, err = a.defaults.result(total); err != nil {
		return 0, err
	}
	m.Distributions = nil
	if sketched {
		m.Distributions = distributions(r.model.Outputs, sketches)
	} else {
		r.log.Warn("some row groups were committed without distributions (by an older staticref); the version records none",
			"version", m.Version)
	}
	if m.RowsWritten != m.RowsRead-m.RowsSkipped {
		return 0, fmt.Errorf("wrote %d rows, want %d read - %d skipped", m.RowsWritten, m.RowsRead, m.RowsSkipped)
	}
	// Duplicate keys: this run saw every row written if it wrote every row group; a resumed
	// or sharded run did not, and reads the keys of every row group again.
	// The drift gates' key sample, likewise: a reread samples every row of the version.
	keys := a.keys
	if !a.all {
		if keys, err = r.rereadKeys(ctx, all, a.sample); err != nil {
			return 0, fmt.Errorf("count duplicate keys: %w", err)
		}
		defer keys.Close()
	}
	r.sample = a.sample
	if a.sample != nil {
		m.SampleKeys = m.SampleKeys[:0]
		for _, k := range a.sample.keys() {
			m.SampleKeys = append(m.SampleKeys, string(k))
		}
	}
	if m.DuplicateKeys, m.RepeatedKeys, err = keys.Count(); err != nil {
		return 0, fmt.Errorf("count duplicate keys: %w", err)
	}
	return 0, nil
}
