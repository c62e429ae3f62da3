package pipeline

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/writers"
)

// task is one row group of one input file.
type task struct {
	file string
	rg   int
	rows int64
}

// tasks lists every non-empty row group of every file, in order.
func (r *run) tasks() []task {
	var all []task
	for _, f := range r.files {
		for _, rg := range f.RowGroups {
			if rg.Rows > 0 {
				all = append(all, task{f.Path, rg.Index, rg.Rows})
			}
		}
	}
	return all
}

func (r *run) execute(ctx context.Context) (waiting int, err error) {
	all := r.tasks()
	committed, err := r.store.Commits(ctx, r.ns, r.m.Version)
	if err != nil {
		return 0, fmt.Errorf("read committed shards: %w", err)
	}
	done := map[string]writers.Commit{}
	for _, c := range committed {
		done[c.ID] = c
	}
	var tasks []task
	for _, t := range r.mine(all) {
		if c, ok := done[commitID(t.file, t.rg)]; ok {
			r.committed.add(c)
		} else {
			tasks = append(tasks, t)
		}
	}
	if len(committed) > 0 {
		r.log.Info("resuming", "version", r.m.Version, "shards_committed", len(committed), "shards_left", len(tasks))
	}
	var rows int64
	for _, t := range tasks {
		rows += t.rows
	}
	r.cfg.Progress.Start(rows)
	a := newAccountant(r, tasks)
	defer a.keys.Close()
	if a.export, err = r.openExport(ctx, all); err != nil {
		return 0, err
	}
	defer a.export.close()
	a.all = len(tasks) == len(all)
	if err := r.stages(ctx, tasks, a); err != nil {
		return 0, err
	}
	return a.finish(ctx, all)
}

// mine is this process's share of the row groups: all of them for an ordinary run. A
// sharded run splits deterministically, so every process agrees without talking: by file
// when there are at least as many files as shards, else by row group.
func (r *run) mine(all []task) []task {
	if !r.sharded() {
		return all
	}
	n, i := r.cfg.ShardCount, r.cfg.ShardIndex
	fileIndex := map[string]int{}
	for k, f := range r.files {
		fileIndex[f.Path] = k
	}
	var out []task
	for k, t := range all {
		unit := k
		if len(r.files) >= n {
			unit = fileIndex[t.file]
		}
		if unit%n == i {
			out = append(out, t)
		}
	}
	return out
}

// stages runs readers, inference workers, store writes and the accountant over tasks
// until all are done or one fails.
func (r *run) stages(ctx context.Context, tasks []task, a *accountant) error {
	if len(tasks) == 0 {
		return nil
	}
	workers := r.job.Model.Workers
	nReaders := r.cfg.Readers
	if nReaders <= 0 {
		nReaders = 2
	}
	nReaders = max(1, min(nReaders, len(tasks)))

	g, ctx := errgroup.WithContext(ctx)
	taskc := make(chan task)
	writes := r.job.Sink.MaxInFlight
	free := make(chan *chunk, workers+nReaders+writes+2)
	packed := make(chan *chunk, workers)
	encoded := make(chan *chunk, workers)
	written := make(chan *chunk, writes)
	for range cap(free) {
		free <- newChunk(r.job.Model.BatchSize, r.model.Width)
	}

	g.Go(func() error {
		defer close(taskc)
		for _, t := range tasks {
			if err := send(ctx, taskc, t); err != nil {
				return err
			}
		}
		return nil
	})
	pool(g, nReaders, packed, func() error { return r.read(ctx, taskc, free, packed) })
	pool(g, workers, encoded, func() error { return r.infer(ctx, packed, encoded) })
	pool(g, writes, written, func() error { return r.write(ctx, encoded, written) })
	a.queues = func() map[string]int {
		return map[string]int{"infer": len(packed), "write": len(encoded), "account": len(written)}
	}
	g.Go(func() error { return a.run(ctx, written, free) })
	g.Go(func() error { return a.commit(ctx) })
	return g.Wait()
}

// read decodes row groups into chunks taken from free and sends them on.
func (r *run) read(ctx context.Context, tasks <-chan task, free chan *chunk, out chan<- *chunk) error {
	var f Input
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	open := ""
	fill, filling := r.job.Source.NullFill()
	for t := range tasks {
		if t.file != open {
			if f != nil {
				f.Close()
				f = nil
			}
			var err error
			if f, err = r.cfg.Deps.OpenInput(ctx, t.file, r.ropts); err != nil {
				return err
			}
			open = t.file
		}
		err := f.ReadRowGroup(ctx, t.rg, func(b *readers.Batch) error {
			c, _, err := recv(ctx, free)
			if err != nil {
				return err
			}
			if err := c.load(b, r.model.Width, len(r.ropts.Extra) > 0, fill, filling); err != nil {
				free <- c
				return err
			}
			r.rowsRead.Add(int64(b.Len))
			return send(ctx, out, c)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// infer runs one session over packed chunks, dropping or failing rows with nulls as the
// job says, and encodes keys and values.
func (r *run) infer(ctx context.Context, in <-chan *chunk, out chan<- *chunk) error {
	p, err := r.model.NewPredictor()
	if err != nil {
		return fmt.Errorf("start inference worker: %w", err)
	}
	defer p.Close()
	enc, err := writers.NewValueEncoder(r.job.Sink.Encoding, r.model.Outputs)
	if err != nil {
		return err
	}
	skip := r.job.Source.Nulls == "skip"
	for {
		c, ok, err := recv(ctx, in)
		if !ok || err != nil {
			return err
		}
		if err := c.infer(p, enc, skip); err != nil {
			return err
		}
		if err := send(ctx, out, c); err != nil {
			return err
		}
	}
}

// write sends encoded chunks to the store; sink.max_in_flight of these run at once.
func (r *run) write(ctx context.Context, in <-chan *chunk, out chan<- *chunk) error {
	for {
		c, ok, err := recv(ctx, in)
		if !ok || err != nil {
			return err
		}
		if c.rows.Len() > 0 {
			if err := r.writeFenced(ctx, c.rows); err != nil {
				return fmt.Errorf("write shard %s row group %d to %s/%s: %w", c.file, c.rowGroup, r.ns, r.m.Version, err)
			}
		}
		if err := send(ctx, out, c); err != nil {
			return err
		}
	}
}

// writeFenced writes rows under the lease's fence; a write cut off by the fence says the
// lease was lost, not that a deadline passed.
func (r *run) writeFenced(ctx context.Context, rows writers.Rows) error {
	fctx, cancel, err := r.fenced(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	err = r.store.WriteRows(fctx, r.ns, r.m.Version, rows)
	if err != nil && ctx.Err() == nil && fctx.Err() != nil {
		return fmt.Errorf("the write outlived the writer lease of %s: %w (%v)", r.ns, writers.ErrLeaseLost, err)
	}
	return err
}

// pool runs n goroutines of work in g and closes out once all n have returned. out is
// the stage's output: the goroutines send on it and never close it; pool closes it, once,
// so the next stage's recv sees the end of its input only when no goroutine of this stage
// can still send.
//
// Closing out says that the stage has stopped, not that it succeeded. g comes from
// errgroup.WithContext: when any of its goroutines fails, its context is cancelled and
// g.Wait keeps the first error. work must then return (the stages do: their every send
// and receive goes through send and recv on that context), and out is closed as usual
// after the last goroutine has returned. The goroutine that closes out belongs to g as
// well, so g.Wait returns only after out is closed, and nothing of the stage outlives the
// run.
func pool[T any](g *errgroup.Group, n int, out chan<- T, work func() error) {
	var done sync.WaitGroup
	done.Add(n)
	for range n {
		g.Go(func() error {
			defer done.Done()
			return work()
		})
	}
	g.Go(func() error { done.Wait(); close(out); return nil })
}

// send and recv are a stage's only ways to use a channel: both give up when the run is
// cancelled, so no stage can block forever on another that has failed.
func send[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recv reports ok false when ch is closed.
func recv[T any](ctx context.Context, ch <-chan T) (v T, ok bool, err error) {
	select {
	case v, ok = <-ch:
		return v, ok, nil
	case <-ctx.Done():
		return v, false, ctx.Err()
	}
}
