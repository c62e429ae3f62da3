package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/writers"
)

// committedRows counts the rows of committed shards (row groups), so that a run that
// fails reports what the version keeps of it, not 0. It is added to before the stages
// start and by the one goroutine that commits, and read after the stages have stopped.
type committedRows struct{ read, written, skipped int64 }

func (c *committedRows) add(s writers.Shard) {
	c.read += s.Rows
	c.written += s.Written
	for _, n := range s.Skipped {
		c.skipped += n
	}
}

// report puts the counts into a failed run's manifest (nil before one exists).
func (c *committedRows) report(m *writers.Manifest) {
	if m != nil {
		m.RowsRead, m.RowsWritten, m.RowsSkipped = c.read, c.written, c.skipped
	}
}

// shardID names one unit of work: a row group of a file. Every process of a sharded or
// resumed run derives the same id from the same file and row group.
func shardID(file string, rg int) string { return fmt.Sprintf("%s#%d", file, rg) }

// unit names a row group of a file.
type unit struct {
	file string
	rg   int
}

// writerStage is the single goroutine that accounts for chunks the store has taken: it
// keeps the run's counts and cold-start defaults, so none of them needs a lock.
//
// Progress is committed per shard (row group): when the last row of a row group has been
// written, its shard record (counts and sums) is committed to the store. A resumed run
// skips committed shards and totals the version from the records of all of them, so the
// version ends with exactly one copy of every row and exact counts.
type writerStage struct {
	r        *run
	defaults *defaults
	expected map[unit]int64          // rows of each row group this run writes
	open     map[unit]*writers.Shard // row groups in progress
	commits  chan writers.Shard      // row groups written, to the committer
	rows     int64                   // rows written by this run, for progress
	skipped  int64
	queues   func() map[string]int // stage queue depths, for progress
}

func newWriterStage(r *run, todo []task) *writerStage {
	w := &writerStage{
		r:        r,
		defaults: newDefaults(r.job.Defaults.Global, r.job.Defaults.SegmentBy, r.model.Outputs),
		expected: map[unit]int64{},
		open:     map[unit]*writers.Shard{},
		commits:  make(chan writers.Shard, 64),
	}
	for _, t := range todo {
		w.expected[unit{t.file, t.rg}] = t.rows
	}
	return w
}

func (w *writerStage) run(ctx context.Context, in <-chan *chunk, free chan<- *chunk) error {
	defer close(w.commits)
	for {
		c, ok, err := recv(ctx, in)
		if !ok || err != nil {
			return err
		}
		if err := w.write(ctx, c); err != nil {
			return err
		}
		if err := send(ctx, free, c); err != nil {
			return err
		}
	}
}

func (w *writerStage) write(ctx context.Context, c *chunk) error {
	r := w.r
	t := unit{c.file, c.rowGroup}
	sh := w.open[t]
	if sh == nil {
		sh = &writers.Shard{ID: shardID(c.file, c.rowGroup)}
		w.open[t] = sh
	}
	sh.Rows += int64(c.n)
	sh.Written += int64(c.rows.Len())
	sh.NullOutputs += int64(c.nullOuts)
	if c.nullKeys > 0 || c.nullFeats > 0 {
		if sh.Skipped == nil {
			sh.Skipped = map[string]int64{}
		}
		if c.nullKeys > 0 {
			sh.Skipped["null_key"] += int64(c.nullKeys)
		}
		if c.nullFeats > 0 {
			sh.Skipped["null_feature"] += int64(c.nullFeats)
		}
	}
	if w.defaults != nil {
		if sh.Sums == nil {
			sh.Sums = &writers.Sums{}
		}
		for j, i := range c.kept {
			seg, ok := c.segment(int(i))
			if err := w.defaults.add(sh.Sums, c.outs, j, seg, ok); err != nil {
				return err
			}
		}
	}
	w.rows += int64(c.rows.Len())
	switch want := w.expected[t]; {
	case sh.Rows > want:
		return fmt.Errorf("shard %s row group %d: read %d rows, its footer says %d", c.file, c.rowGroup, sh.Rows, want)
	case sh.Rows == want:
		sh.CommittedAt = r.now().UTC()
		if err := send(ctx, w.commits, *sh); err != nil {
			return err
		}
		delete(w.open, t)
	}
	w.skipped += int64(c.nullKeys + c.nullFeats)
	snap := progress.Snapshot{RowsRead: r.rowsRead.Load(), RowsWritten: w.rows, RowsSkipped: w.skipped}
	if w.queues != nil {
		snap.Queues = w.queues()
	}
	r.cfg.Progress.Update(snap)
	return nil
}

// commit records finished row groups. It runs beside the writer so that a store's
// durable commit (Pebble syncs its log) never stalls the writes of the next rows; a row
// group is queued only after all its rows were written, so a commit never claims rows
// the store has not taken.
//
// A row group queued before the run failed is still committed (the writer closes the
// queue when it stops), so a resume does not write it again.
func (w *writerStage) commit(ctx context.Context) error {
	for sh := range w.commits {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := w.r.store.CommitShard(cctx, w.r.ns, w.r.m.Version, sh)
		cancel()
		if err != nil {
			return fmt.Errorf("commit shard %s: %w", sh.ID, err) // cancels every stage
		}
		w.r.committed.add(sh)
	}
	return nil
}

// finish totals the version from the records of every shard, committed by this run or
// an earlier one, and checks that every row of every file is accounted for exactly once.
//
// In a sharded run, finish returns how many row groups other processes have yet to
// commit; 0 means this process committed the last one and completes the version. Two
// processes finishing at once may both see every shard committed: both then write the
// same complete manifest, and the compare-and-swap of the flip lets exactly one flip.
func (w *writerStage) finish(ctx context.Context, all []task) (waiting int, err error) {
	r, m := w.r, w.r.m
	for t := range w.open {
		return 0, fmt.Errorf("shard %s row group %d: not every row was written", t.file, t.rg)
	}
	shards, err := r.store.Shards(ctx, r.ns, m.Version)
	if err != nil {
		return 0, fmt.Errorf("read committed shards: %w", err)
	}
	byID := make(map[string]writers.Shard, len(shards))
	for _, s := range shards {
		byID[s.ID] = s
	}
	for _, t := range all {
		if _, ok := byID[shardID(t.file, t.rg)]; !ok {
			waiting++
		}
	}
	if waiting > 0 {
		if !r.sharded() {
			return 0, fmt.Errorf("%d row groups were never committed", waiting)
		}
		// Not the last shard: report this process's own counts (the manifest is not
		// stored; the shard that completes the version totals every shard's records).
		m.RowsRead, m.RowsWritten, m.RowsSkipped = r.rowsRead.Load(), w.rows, w.skipped
		return waiting, nil
	}
	m.RowsRead, m.RowsWritten, m.RowsSkipped, m.NullOutputs = 0, 0, 0, 0
	m.SkipReasons = nil
	m.Shards = nil
	total := &writers.Sums{}
	for _, t := range all {
		s := byID[shardID(t.file, t.rg)]
		if s.Rows != t.rows {
			return 0, fmt.Errorf("shard %s row group %d: committed %d rows, its footer says %d", t.file, t.rg, s.Rows, t.rows)
		}
		m.RowsRead += s.Rows
		m.RowsWritten += s.Written
		m.NullOutputs += s.NullOutputs
		for reason, n := range s.Skipped {
			if m.SkipReasons == nil {
				m.SkipReasons = map[string]int64{}
			}
			m.SkipReasons[reason] += n
			m.RowsSkipped += n
		}
		mergeSums(total, s.Sums)
		s.Sums = nil // the manifest keeps the counts, not every shard's sums
		m.Shards = append(m.Shards, s)
	}
	if m.Defaults, err = w.defaults.result(total); err != nil {
		return 0, err
	}
	if m.RowsWritten != m.RowsRead-m.RowsSkipped {
		return 0, fmt.Errorf("wrote %d rows, want %d read - %d skipped", m.RowsWritten, m.RowsRead, m.RowsSkipped)
	}
	return 0, nil
}
