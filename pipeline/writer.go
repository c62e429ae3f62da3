package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/staticref/staticref/writers"
)

// writerStage is the single goroutine that writes chunks to the store and keeps the run's
// counts and cold-start defaults, so none of them needs a lock.
type writerStage struct {
	r        *run
	written  int64
	read     int64
	nullKeys int64
	nullFeat int64
	nullOuts int64
	defaults *defaultsBuilder
	perFile  map[string]int64
	last     time.Time
}

func newWriterStage(r *run) *writerStage {
	return &writerStage{
		r:        r,
		defaults: newDefaultsBuilder(r.job.Defaults.Global, r.job.Defaults.SegmentBy, r.model.Outputs),
		perFile:  map[string]int64{},
		last:     r.now(),
	}
}

func (w *writerStage) run(ctx context.Context, in <-chan *chunk, free chan<- *chunk) error {
	for {
		var c *chunk
		select {
		case c = <-in:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c == nil {
			return nil
		}
		if c.rows.Len() > 0 {
			if err := w.r.store.WriteRows(ctx, w.r.ns, w.r.m.Version, c.rows); err != nil {
				return fmt.Errorf("write shard %s row group %d to %s/%s: %w", c.file, c.rowGroup, w.r.ns, w.r.m.Version, err)
			}
		}
		w.read += int64(c.n)
		w.written += int64(c.rows.Len())
		w.nullKeys += int64(c.nullKeys)
		w.nullFeat += int64(c.nullFeats)
		w.nullOuts += int64(c.nullOuts)
		w.perFile[c.file] += int64(c.n)
		if w.defaults != nil {
			for j, i := range c.kept {
				seg, ok := c.segment(int(i))
				if err := w.defaults.add(c.outs, j, seg, ok); err != nil {
					return err
				}
			}
		}
		if now := w.r.now(); now.Sub(w.last) >= 5*time.Second {
			w.last = now
			w.r.log.Info("progress", "version", w.r.m.Version, "rows_read", w.read, "rows_written", w.written)
		}
		select {
		case free <- c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish records the counts in the manifest and checks that every row is accounted for.
func (w *writerStage) finish(m *writers.Manifest) error {
	m.RowsRead, m.RowsWritten = w.read, w.written
	m.RowsSkipped = w.nullKeys + w.nullFeat
	m.NullOutputs = w.nullOuts
	m.SkipReasons = nil
	if w.nullKeys > 0 || w.nullFeat > 0 {
		m.SkipReasons = map[string]int64{}
		if w.nullKeys > 0 {
			m.SkipReasons["null_key"] = w.nullKeys
		}
		if w.nullFeat > 0 {
			m.SkipReasons["null_feature"] = w.nullFeat
		}
	}
	m.Defaults = w.defaults.result()
	var want int64
	for _, s := range m.Sources {
		want += s.Rows
		if got := w.perFile[s.Path]; got != s.Rows {
			return fmt.Errorf("shard %s: read %d rows, its footer says %d", s.Path, got, s.Rows)
		}
	}
	if m.RowsRead != want {
		return fmt.Errorf("read %d rows, the shards hold %d", m.RowsRead, want)
	}
	if m.RowsWritten != m.RowsRead-m.RowsSkipped {
		return fmt.Errorf("wrote %d rows, want %d read - %d skipped", m.RowsWritten, m.RowsRead, m.RowsSkipped)
	}
	return nil
}
