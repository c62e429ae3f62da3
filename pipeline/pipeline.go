// Package pipeline runs a staticref batch job: Parquet shards -> Arrow batches -> ONNX
// Runtime workers -> a new version in a store, then manifest, gates, flip and retention.
//
// The stages are a fixed pool joined by bounded channels:
//
//	readers (R goroutines, one row group at a time)
//	   -> packed chunks -> inference workers (W goroutines, one session each)
//	   -> encoded chunks -> store writes (sink.max_in_flight goroutines)
//	   -> written chunks -> accounting (one goroutine: counts, defaults, shard commits)
//	   -> free chunks back to the readers.
//
// A chunk owns every buffer one batch needs (keys, packed features, outputs, encoded
// values) and is reused for the whole run, so memory is set by batch_size, the worker
// count and the pool size, never by the number of rows. The first error cancels every
// stage and is returned with the shard, row group and row it concerns; the version is then
// marked failed and the live pointer is never touched.
//
// The pipeline never imports lookup, scheduler or cmd; it needs from readers, inference
// and writers only what deps.go names.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/writers"
)

// ErrGateFailed is wrapped by the error of a run whose version is complete but failed a
// release gate: it is not live, and the run exits non-zero.
var ErrGateFailed = errors.New("pipeline: release gate failed")

// AbandonedAfter is how old a version still in state writing must be before gc removes it.
const AbandonedAfter = 24 * time.Hour

// Config is one run.
type Config struct {
	Job     *jobs.Job
	Store   writers.Store
	Deps    Deps
	Version string // "" picks a new time-based id
	NoFlip  bool   // leave the complete version for a manual flip
	Now     func() time.Time
	Log     *slog.Logger
	// Readers is how many row groups are decoded at once (default: 2, at most the number
	// of row groups).
	Readers int
	// Wait makes a run wait for another writer of the namespace to finish instead of
	// failing at once.
	Wait bool
	// LeaseTTL is how long the namespace's writer lease lasts unless renewed (default
	// DefaultLeaseTTL); it is renewed every third of that.
	LeaseTTL time.Duration
	// Holder names this writer in the lease (default host:pid).
	Holder string
	// Progress is told about the run as it goes (default: a log line every 5 seconds).
	Progress progress.Reporter
	// ShardIndex and ShardCount split the work of one version over ShardCount processes
	// (a Kubernetes Indexed Job): each writes its share of the row groups into the same
	// Version, and the one that commits the last shard completes and flips the version.
	// ShardCount 0 or 1 is an ordinary run.
	ShardIndex, ShardCount int
}

// DefaultLeaseTTL is the writer lease's lifetime: a writer that dies holds its namespace
// for at most this long.
const DefaultLeaseTTL = 30 * time.Second

// Result is what a run did.
type Result struct {
	Manifest *writers.Manifest
	Flipped  bool
	Previous string   // the version live before the flip
	Removed  []string // versions gc removed after the flip
	// Waiting is how many shards of a sharded run other processes have yet to commit
	// (0 when this run completed the version).
	Waiting int
}

// Run executes cfg.Job. On success the new version is complete and, unless release.flip is
// manual or NoFlip is set, live. A failed gate returns an error wrapping ErrGateFailed with
// the complete (not live) version in the result.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	r, err := newRun(cfg)
	if err != nil {
		return nil, err
	}
	defer r.close()
	start := r.now()
	defer func() {
		sum := progress.FromManifest(r.job.Name, r.m, r.now().Sub(start), err)
		sum.Shard, sum.ShardCount = r.cfg.ShardIndex, r.cfg.ShardCount
		r.cfg.Progress.Finish(sum)
	}()
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	ctx, release, err := r.lease(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := r.createVersion(ctx); err != nil {
		return nil, err
	}
	if r.m.State != writers.StateWriting {
		// A shard retried after another completed the version.
		return r.completed(ctx)
	}
	waiting, err := r.execute(ctx)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause // the lease was lost: say so, not "context canceled"
		}
		r.committed.report(r.m) // the summary and the failed manifest count what is kept
		if !errors.Is(err, writers.ErrLeaseLost) {
			// A writer that lost its lease must not touch the version: another run may
			// have resumed it.
			r.fail(err)
		}
		return &Result{Manifest: r.m}, err
	}
	if waiting > 0 {
		r.log.Info("shard committed; the version waits for other shards", "version", r.m.Version,
			"shard", r.cfg.ShardIndex, "shards", r.cfg.ShardCount, "row_groups_left", waiting)
		return &Result{Manifest: r.m, Waiting: waiting}, nil
	}
	return r.release(ctx)
}

func (r *run) sharded() bool { return r.cfg.ShardCount > 1 }

type run struct {
	cfg     Config
	job     *jobs.Job
	store   writers.Store
	ns      string
	log     *slog.Logger
	now     func() time.Time
	ropts   readers.Options
	files   []readers.FileInfo
	model   *Model
	m       *writers.Manifest
	created bool // this run created the manifest

	rowsRead  atomic.Int64
	committed committedRows // of this run's row groups, committed by it or before it
}

func newRun(cfg Config) (*run, error) {
	if cfg.Job == nil || cfg.Store == nil {
		return nil, errors.New("pipeline: Config needs a Job and a Store")
	}
	if cfg.Deps.OpenShard == nil {
		cfg.Deps = Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Progress == nil {
		cfg.Progress = progress.NewLog(cfg.Log, 5*time.Second)
	}
	j := cfg.Job
	r := &run{cfg: cfg, job: j, store: cfg.Store, ns: j.Sink.Namespace, log: cfg.Log, now: cfg.Now}
	r.ropts = readers.Options{Key: j.Source.Key, Features: j.Source.Features, BatchSize: j.Model.BatchSize}
	if j.Defaults.SegmentBy != "" {
		r.ropts.Extra = []string{j.Defaults.SegmentBy}
	}
	if err := writers.ValidateNamespace(r.ns); err != nil {
		return nil, fmt.Errorf("sink.namespace: %w", err)
	}
	if err := CheckShards(cfg.ShardIndex, cfg.ShardCount, cfg.Version); err != nil {
		return nil, err
	}
	return r, nil
}

// CheckShards checks a sharded run's settings (ShardIndex, ShardCount, Version), for a
// caller that wants to refuse them before anything else happens.
func CheckShards(index, count int, version string) error {
	if count <= 1 {
		return nil
	}
	switch {
	case index < 0 || index >= count:
		return fmt.Errorf("--shard-index %d: use 0 to %d for --shard-count %d", index, count-1, count)
	case version == "":
		return errors.New("a sharded run needs --version, the same for every shard, so all write one version")
	}
	return nil
}

func (r *run) close() {
	if r.model != nil && r.model.Close != nil {
		r.model.Close()
	}
}

// check checks everything that can be checked before any data is read: every shard's
// schema and the model against the features.
func (r *run) check(ctx context.Context) error {
	paths, err := readers.Glob(r.job.Source.URI)
	if err != nil {
		return fmt.Errorf("source.uri: %w", err)
	}
	width := -1
	for _, p := range paths {
		f, err := r.cfg.Deps.OpenShard(p, r.ropts)
		if errors.Is(err, readers.ErrSchema) {
			return mismatch{err}
		}
		if err != nil {
			return err
		}
		info, w := f.Info(), f.Width()
		f.Close()
		if width >= 0 && w != width {
			return mismatch{fmt.Errorf("shard %s: %d feature values per row, shard %s has %d (source.features)", p, w, paths[0], width)}
		}
		width = w
		r.files = append(r.files, info)
	}
	r.model, err = r.cfg.Deps.LoadModel(ctx, r.job.Model.Path, inference.Options{
		Input:          r.job.Model.Input,
		Outputs:        r.job.Model.Outputs,
		Features:       width, // 0 for a variable list column: the model's width decides
		BatchSize:      r.job.Model.BatchSize,
		IntraOpThreads: r.job.Model.IntraOpThreads,
		Device:         r.job.Model.Device,
	})
	if errors.Is(err, inference.ErrMisfit) {
		return mismatch{err}
	}
	if err != nil {
		return err
	}
	if _, err := writers.NewValueEncoder(r.job.Sink.Encoding, r.model.Outputs); err != nil {
		return mismatch{fmt.Errorf("sink.encoding: %w", err)}
	}
	return nil
}

// ErrMismatch marks a job that does not fit its data or its model, found before
// anything is written: a key or feature column missing or of the wrong type, shards of
// different widths, a model file that is missing or not ONNX, or a model input or
// output that does not match the job (inference.ErrMisfit). An unreadable file, a
// missing runtime or an unavailable CUDA device are not mismatches: a retry may work. Running the same job again cannot succeed, so the CLI
// reports it as bad configuration (exit 2), not as a failed run.
var ErrMismatch = errors.New("pipeline: the job does not fit its data or model")

// mismatch wraps a check's error so that it also matches ErrMismatch; its message is
// the check's own.
type mismatch struct{ error }

func (m mismatch) Is(target error) bool { return target == ErrMismatch }
func (m mismatch) Unwrap() error        { return m.error }

// lease takes the namespace's writer lease (waiting for it with cfg.Wait) and keeps it
// renewed. The returned context is cancelled, with writers.ErrLeaseLost as its cause,
// if a renewal fails: a writer that cannot prove it still holds the namespace stops
// writing. release gives the lease up.
func (r *run) lease(ctx context.Context) (context.Context, func(), error) {
	ttl := r.cfg.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	holder := r.cfg.Holder
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	// A sharded run's processes write one version together: each shard index has its
	// own lease, so two pods of one index never write at once.
	name := r.ns
	if r.sharded() {
		name = fmt.Sprintf("%s.shard-%d", r.ns, r.cfg.ShardIndex)
		if err := writers.ValidateNamespace(name); err != nil {
			return nil, nil, fmt.Errorf("sharded run of %s: namespace too long for a shard lease: %w", r.ns, err)
		}
	}
	var l writers.Lease
	for {
		var err error
		l, err = r.store.AcquireLease(ctx, name, holder, ttl)
		if err == nil {
			break
		}
		var held *writers.LeaseHeldError
		if !r.cfg.Wait || !errors.As(err, &held) {
			return nil, nil, fmt.Errorf("take the writer lease of %s: %w", r.ns, err)
		}
		r.log.Info("waiting for the writer lease", "namespace", r.ns, "holder", held.Holder, "expires", held.Expires)
		select {
		case <-time.After(min(ttl/3, time.Second)):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				next, err := r.store.RenewLease(ctx, l, ttl)
				switch {
				case err == nil:
					l = next
				case ctx.Err() != nil:
					return
				case errors.Is(err, writers.ErrLeaseLost) || !r.now().Before(l.Expires):
					cancel(fmt.Errorf("renew the writer lease of %s: %w", r.ns, err))
					return
				default:
					// A transient store error: the lease still holds until l.Expires, and
					// the next tick tries again.
					r.log.Warn("could not renew the writer lease; retrying", "namespace", r.ns, "err", err)
				}
			}
		}
	}()
	release := func() {
		cancel(nil)
		<-stopped
		rctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		if err := r.store.ReleaseLease(rctx, l); err != nil {
			r.log.Warn("could not release the writer lease", "namespace", r.ns, "err", err)
		}
	}
	return ctx, release, nil
}

func (r *run) createVersion(ctx context.Context) error {
	start := r.now().UTC()
	id := r.cfg.Version
	if id == "" {
		var err error
		if id, err = writers.NewVersionID(ctx, r.store, r.ns, start); err != nil {
			return fmt.Errorf("new version: %w", err)
		}
	} else {
		if err := writers.ValidateVersion(id); err != nil {
			return fmt.Errorf("--version: %w", err)
		}
		old, err := r.store.Manifest(ctx, r.ns, id)
		switch {
		case err == nil:
			return r.resume(ctx, old)
		case !errors.Is(err, writers.ErrNotFound):
			return fmt.Errorf("read manifest %s: %w", id, err)
		}
	}
	r.m = &writers.Manifest{
		Namespace: r.ns,
		Version:   id,
		Job:       r.job.Name,
		State:     writers.StateWriting,
		Model:     r.model.Info,
		Key:       r.job.Source.Key,
		Features:  r.job.Source.Features,
		Encoding:  r.job.Sink.Encoding,
		Outputs:   r.model.Outputs,
		StartedAt: start,
	}
	for _, f := range r.files {
		r.m.Sources = append(r.m.Sources, writers.Source{Path: f.Path, Bytes: f.Bytes, Rows: f.Rows})
	}
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return fmt.Errorf("create version %s: %w", id, err)
	}
	r.created = true
	r.log.Info("version started", "namespace", r.ns, "version", id, "shards", len(r.files), "device", r.model.Device)
	return nil
}

// resume continues a version that a failed or killed run left writing (or failed): the
// shards it committed are kept and skipped. It must be the same job over the same files
// with the same model, or the version would mix two computations.
func (r *run) resume(ctx context.Context, old *writers.Manifest) error {
	id := old.Version
	if r.sharded() && old.State != writers.StateWriting && old.State != writers.StateFailed {
		r.m = old // complete already: Run has nothing to do
		return nil
	}
	if old.State != writers.StateWriting && old.State != writers.StateFailed {
		return fmt.Errorf("version %s of %s is %s: only a writing or failed version can be resumed; choose another --version", id, r.ns, old.State)
	}
	var problems []string
	if old.Model.SHA256 != r.model.Info.SHA256 {
		problems = append(problems, fmt.Sprintf("model sha256 %s, now %s", old.Model.SHA256, r.model.Info.SHA256))
	}
	if old.Encoding != r.job.Sink.Encoding {
		problems = append(problems, fmt.Sprintf("encoding %s, now %s", old.Encoding, r.job.Sink.Encoding))
	}
	if old.Key != r.job.Source.Key || !slices.Equal(old.Features, r.job.Source.Features) {
		problems = append(problems, fmt.Sprintf("key %s and features %v, now %s and %v", old.Key, old.Features, r.job.Source.Key, r.job.Source.Features))
	}
	if !slices.Equal(old.Outputs, r.model.Outputs) {
		problems = append(problems, fmt.Sprintf("outputs %v, now %v", old.Outputs, r.model.Outputs))
	}
	var now []writers.Source
	for _, f := range r.files {
		now = append(now, writers.Source{Path: f.Path, Bytes: f.Bytes, Rows: f.Rows})
	}
	if !slices.Equal(old.Sources, now) {
		problems = append(problems, fmt.Sprintf("%d source files, now %d (or their sizes differ)", len(old.Sources), len(now)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("cannot resume version %s of %s: it was written with %s", id, r.ns, strings.Join(problems, "; "))
	}
	r.m = old
	if old.State != writers.StateWriting {
		// Only a failed version is rewritten: another shard may be completing a writing one.
		old.State, old.Error, old.CompletedAt = writers.StateWriting, "", time.Time{}
		if err := r.store.PutManifest(ctx, r.m); err != nil {
			return fmt.Errorf("resume version %s: %w", id, err)
		}
	}
	r.created = true
	r.log.Info("version resumed", "namespace", r.ns, "version", id)
	return nil
}

// fail records why the version failed. It uses a fresh context: the run's own is often
// the one that was cancelled.
func (r *run) fail(cause error) {
	if !r.created || r.sharded() {
		// A shard's failure is retried by its own index (Kubernetes' backoffLimitPerIndex);
		// marking the version failed would stop the other shards' writes.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.m.State = writers.StateFailed
	r.m.Error = cause.Error()
	r.m.CompletedAt = r.now().UTC()
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		r.log.Error("could not mark version failed", "version", r.m.Version, "err", err)
	}
}

// task is one row group of one shard.
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
	committed, err := r.store.Shards(ctx, r.ns, r.m.Version)
	if err != nil {
		return 0, fmt.Errorf("read committed shards: %w", err)
	}
	done := map[string]writers.Shard{}
	for _, s := range committed {
		done[s.ID] = s
	}
	var tasks []task
	for _, t := range r.mine(all) {
		if s, ok := done[shardID(t.file, t.rg)]; ok {
			r.committed.add(s)
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
	w := newWriterStage(r, tasks)
	if err := r.stages(ctx, tasks, w); err != nil {
		return 0, err
	}
	return w.finish(ctx, all)
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

// stages runs readers, inference workers and the writer over tasks until all are done
// or one fails.
func (r *run) stages(ctx context.Context, tasks []task, w *writerStage) error {
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
	// Each stage's output closes when all its goroutines have returned; they return on
	// cancellation, so these waits never outlive the run.
	var readersDone, workersDone sync.WaitGroup
	for range nReaders {
		readersDone.Add(1)
		g.Go(func() error {
			defer readersDone.Done()
			return r.read(ctx, taskc, free, packed)
		})
	}
	g.Go(func() error { readersDone.Wait(); close(packed); return nil })
	for range workers {
		workersDone.Add(1)
		g.Go(func() error {
			defer workersDone.Done()
			return r.infer(ctx, packed, encoded)
		})
	}
	g.Go(func() error { workersDone.Wait(); close(encoded); return nil })
	var writersDone sync.WaitGroup
	for range writes {
		writersDone.Add(1)
		g.Go(func() error {
			defer writersDone.Done()
			return r.write(ctx, encoded, written)
		})
	}
	g.Go(func() error { writersDone.Wait(); close(written); return nil })
	w.queues = func() map[string]int {
		return map[string]int{"infer": len(packed), "write": len(encoded), "account": len(written)}
	}
	g.Go(func() error { return w.run(ctx, written, free) })
	g.Go(func() error { return w.commit(ctx) })
	return g.Wait()
}

// read decodes row groups into chunks taken from free and sends them on.
func (r *run) read(ctx context.Context, tasks <-chan task, free chan *chunk, out chan<- *chunk) error {
	var f Shard
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
			if f, err = r.cfg.Deps.OpenShard(t.file, r.ropts); err != nil {
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
			if err := r.store.WriteRows(ctx, r.ns, r.m.Version, c.rows); err != nil {
				return fmt.Errorf("write shard %s row group %d to %s/%s: %w", c.file, c.rowGroup, r.ns, r.m.Version, err)
			}
		}
		if err := send(ctx, out, c); err != nil {
			return err
		}
	}
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
	case live != "" && !writers.VersionLess(live, r.m.Version):
		// A newer version went live meanwhile: flipping this one would be a rollback.
		r.log.Info("a newer version is live; not flipping", "version", r.m.Version, "live", live)
		return res, nil
	}
	if err := writers.FlipFrom(ctx, r.store, r.ns, live, r.m.Version); err != nil {
		return res, fmt.Errorf("flip %s to %s: %w", r.ns, r.m.Version, err)
	}
	res.Flipped, res.Previous = true, live
	r.log.Info("flipped", "namespace", r.ns, "live", r.m.Version, "previous", live)
	return res, nil
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
	if g.Unique() {
		// CountKeys may count a key twice (a Redis SCAN during a rehash), never miss one,
		// so a shortfall is certain to be duplicates.
		n, err := r.store.CountKeys(ctx, r.ns, r.m.Version)
		if err != nil {
			return nil, fmt.Errorf("unique_keys gate: count the keys of version %s: %w", r.m.Version, err)
		}
		dups := max(0, r.m.RowsWritten-n)
		results = append(results, writers.GateResult{Name: "unique_keys", Limit: 0, Value: float64(dups), Passed: dups == 0,
			Detail: fmt.Sprintf("%d rows written, %d distinct keys in the store: %d rows repeat a key of another row (one of them wins, in no set order)",
				r.m.RowsWritten, min(n, r.m.RowsWritten), dups)})
	}
	return results, nil
}
