// Package pipeline runs a staticref batch job: Parquet files -> Arrow batches -> ONNX
// Runtime workers -> a new version in a store, then manifest, gates, flip and retention.
//
// The stages are a fixed pool joined by bounded channels:
//
//	readers (R goroutines, one row group at a time)
//	   -> packed chunks -> inference workers (W goroutines, one session each)
//	   -> encoded chunks -> store writes (sink.max_in_flight goroutines)
//	   -> written chunks -> accounting (one goroutine: counts, defaults, commit records)
//	   -> free chunks back to the readers.
//
// A chunk owns every buffer one batch needs (keys, packed features, outputs, encoded
// values) and is reused for the whole run, so memory is set by batch_size, the worker
// count and the pool size, never by the number of rows. The first error cancels every
// stage and is returned with the file, row group and row it concerns; the version is then
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
	"sync/atomic"
	"time"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/writers"
)

// ErrGateFailed is wrapped by the error of a run whose version is complete but failed a
// release gate: it is not live, and the run exits non-zero.
var ErrGateFailed = errors.New("pipeline: release gate failed")

// Config is one run.
type Config struct {
	Job     *jobs.Job
	Store   *writers.Store
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
	// Version, and the one that commits the last row group completes and flips the
	// version.
	// ShardCount 0 or 1 is an ordinary run.
	ShardIndex, ShardCount int
}

// Result is what a run did.
type Result struct {
	Manifest *writers.Manifest
	Flipped  bool
	Previous string   // the version live before the flip
	Removed  []string // versions gc removed after the flip
	// Waiting is how many row groups of a sharded run other processes have yet to commit
	// (0 when this run completed the version).
	Waiting int
	// Release is the release this run started instead of a flip (release.flip canary or
	// shadow), nil when it started none.
	Release *writers.Release
}

// Run executes cfg.Job. On success the new version is complete and, unless release.flip is
// manual or NoFlip is set, live; with release.flip canary or shadow, a release of it
// against the live version has started instead (Result.Release), which flips it when it
// is promoted. A failed gate returns an error wrapping ErrGateFailed with
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
	store   *writers.Store
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
	sample    *keySample    // keys of the version for the drift gates (nil: none is set)
	// baseChain is an incremental version's base chain, base first (release resolves it).
	baseChain []*writers.Manifest
	// fence is when the writer lease was last known to hold (a time.Time; see lease).
	fence atomic.Value
}

func newRun(cfg Config) (*run, error) {
	if cfg.Job == nil || cfg.Store == nil {
		return nil, errors.New("pipeline: Config needs a Job and a Store")
	}
	if cfg.Deps.OpenInput == nil {
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

// check checks everything that can be checked before any data is read: every input
// file's schema and the model against the features.
func (r *run) check(ctx context.Context) error {
	paths, err := readers.GlobContext(ctx, r.job.Source.URI)
	if err != nil {
		return fmt.Errorf("source.uri: %w", err)
	}
	width := -1
	for _, p := range paths {
		f, err := r.cfg.Deps.OpenInput(ctx, p, r.ropts)
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
// anything is written: a key or feature column missing or of the wrong type, input
// files of different widths, a model file that is missing or not ONNX, or a model input or
// output that does not match the job (inference.ErrMisfit). An unreadable file, a
// missing runtime or an unavailable CUDA device are not mismatches: a retry may work. Running the same job again cannot succeed, so the CLI
// reports it as bad configuration (exit 2), not as a failed run.
var ErrMismatch = errors.New("pipeline: the job does not fit its data or model")

// mismatch wraps a check's error so that it also matches ErrMismatch; its message is
// the check's own.
type mismatch struct{ error }

func (m mismatch) Is(target error) bool { return target == ErrMismatch }
func (m mismatch) Unwrap() error        { return m.error }
