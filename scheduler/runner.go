package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/writers"
)

// PipelineRunner runs jobs with pipeline.Run. Runs that write to the same store URL share
// one open store (an embedded Pebble store can be opened by one user at a time), which
// is closed when the last of them ends, so that between runs other tools can open it.
type PipelineRunner struct {
	Log *slog.Logger

	mu     sync.Mutex
	stores map[string]*sharedStore
}

type sharedStore struct {
	s    *writers.Store
	refs int
}

// Run runs job once into a new version.
func (p *PipelineRunner) Run(ctx context.Context, job *jobs.Job) error {
	log := p.logger().With("job", job.Name)
	s, err := p.acquire(ctx, job.Sink.Store)
	if err != nil {
		return err
	}
	defer p.release(job.Sink.Store)
	res, err := pipeline.Run(ctx, pipeline.Config{Job: job, Store: s, Log: log,
		Progress: endless{progress.NewLog(log, 5*time.Second)}})
	if res != nil && res.Manifest != nil {
		m := res.Manifest
		log.Info("version", "namespace", m.Namespace, "version", m.Version, "state", m.State,
			"rows_read", m.RowsRead, "rows_written", m.RowsWritten, "rows_skipped", m.RowsSkipped, "flipped", res.Flipped)
	}
	return err
}

// endless reports a run's progress but not its end: the runner's "version" line and
// the scheduler's "run finished" line say that, with the outcome.
type endless struct{ progress.Reporter }

func (endless) Finish(progress.Summary) {}

func (p *PipelineRunner) acquire(ctx context.Context, url string) (*writers.Store, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sh := p.stores[url]; sh != nil {
		sh.refs++
		return sh.s, nil
	}
	s, err := writers.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("sink.store: %w", err)
	}
	if p.stores == nil {
		p.stores = map[string]*sharedStore{}
	}
	p.stores[url] = &sharedStore{s: s, refs: 1}
	return s, nil
}

func (p *PipelineRunner) release(url string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sh := p.stores[url]
	if sh.refs--; sh.refs == 0 {
		delete(p.stores, url)
		if err := sh.s.Close(); err != nil {
			p.logger().Warn("close store", "store", url, "err", err)
		}
	}
}

func (p *PipelineRunner) logger() *slog.Logger {
	if p.Log == nil {
		return slog.Default()
	}
	return p.Log
}
