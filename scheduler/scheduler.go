// Package scheduler is the `staticref schedule` daemon: it runs every job file in a
// directory on the job's cron schedule, and exposes what it did as Prometheus metrics.
//
// The loop is written around cron.Schedule.Next rather than robfig/cron's own runner, so
// that time is injected (a Clock) and tests never sleep. One goroutine, Run, owns all
// state: the job table, which jobs are running, and the state file; each run is a
// goroutine of its own that reports back to the loop on a channel and is cancelled, and
// waited for, when Run's context ends.
//
// # Overlap
//
// Inside one daemon a job never runs twice at once: a job that comes due while its
// previous run is still going is skipped, with a log line and a counter
// (outcome="skipped_overlap"). Across daemons (two replicas, or a cron and a human) the
// store's writer lease, taken by pipeline.Run, guarantees the same; a run that finds the
// lease held ends as outcome="skipped_lease", not as a failure.
//
// # Missed runs
//
// The daemon remembers, per job, the last scheduled time it handled (a small JSON file in
// the state directory). At start-up, and when a job appears on reload, a job whose next
// time after that is already past missed at least one run while the daemon was down:
// catch_up "once" runs it at once (a single run, however many were missed), "skip" waits
// for the next scheduled time. A job seen for the first time has missed nothing.
//
// # Reload
//
// Reload re-reads the directory all-or-nothing, like Prometheus' config reload: if any
// file is invalid, the daemon logs every problem and keeps the jobs it had. Otherwise new
// jobs are added, removed ones dropped (a run in progress finishes), and changed ones
// replaced; a changed schedule is planned afresh from now.
//
// This package never opens a store or a model itself except through the Runner it is
// given (PipelineRunner in production); it never touches a job's versions.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/writers"
)

// Runner runs one job to completion. It must return when ctx is cancelled.
type Runner func(ctx context.Context, job *jobs.Job) error

// Config configures a Scheduler.
type Config struct {
	// Dir holds the job files (*.yaml, *.yml) and optionally ConfigFile.
	Dir string
	// Sets are --set overrides applied to every job file (sink.store=URL for --store).
	Sets []string
	// Runner runs a job; required.
	Runner Runner
	// StateDir keeps StateFile; "" keeps state in memory, so nothing is caught up after
	// a restart.
	StateDir string
	// CatchUp is the policy for jobs that ConfigFile does not name (default skip).
	CatchUp CatchUp
	// Reload, when it delivers, makes the daemon re-read Dir (wire SIGHUP to it).
	Reload <-chan os.Signal
	// Clock defaults to the wall clock.
	Clock Clock
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Registry receives the daemon's metrics (default: a new registry, served by Handler).
	Registry *prometheus.Registry
}

// Outcomes of a scheduled run, the "outcome" label of staticref_schedule_runs_total.
const (
	OutcomeSuccess        = "success"
	OutcomeFailure        = "failure"
	OutcomeCancelled      = "cancelled"       // the daemon shut down during the run
	OutcomeSkippedOverlap = "skipped_overlap" // the previous run of the job was still going
	OutcomeSkippedLease   = "skipped_lease"   // another writer held the namespace
)

// Scheduler is the daemon. Create it with New and start it with Run.
type Scheduler struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	reg     *prometheus.Registry
	m       *metrics
	state   *state
	entries map[string]*entry             // by job name; owned by Run
	running map[string]context.CancelFunc // by job name; owned by Run
	done    chan result
	alive   atomic.Bool
}

type entry struct {
	job     *jobs.Job
	sched   cron.Schedule
	catchUp CatchUp
	next    time.Time
}

type result struct {
	job        *jobs.Job
	due        time.Time
	start, end time.Time
	err        error
	cancelled  bool // the daemon was shutting down
}

// New loads every job in cfg.Dir and the state file. An invalid job file is an error
// wrapping jobs.ErrInvalid.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Runner == nil {
		return nil, errors.New("scheduler: no runner")
	}
	if cfg.CatchUp == "" {
		cfg.CatchUp = CatchUpSkip
	}
	if _, err := ParseCatchUp(string(cfg.CatchUp)); err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg:     cfg,
		log:     cfg.Log,
		clock:   cfg.Clock,
		reg:     cfg.Registry,
		running: map[string]context.CancelFunc{},
		done:    make(chan result),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.clock == nil {
		s.clock = SystemClock{}
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(s.reg)
	if err != nil {
		return nil, err
	}
	s.m = m
	if s.state, err = loadState(cfg.StateDir); err != nil {
		return nil, err
	}
	if s.entries, err = s.load(); err != nil {
		return nil, err
	}
	for name, js := range s.state.Jobs {
		if !js.LastSuccess.IsZero() {
			s.m.lastSuccess.WithLabelValues(name).Set(float64(js.LastSuccess.Unix()))
		}
	}
	return s, nil
}

// Jobs returns the names of the scheduled jobs, sorted. Safe before Run only.
func (s *Scheduler) Jobs() []string {
	names := make([]string, 0, len(s.entries))
	for n := range s.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Run schedules jobs until ctx ends, then cancels the runs in progress and waits for
// them (a cancelled pipeline run leaves a resumable version).
func (s *Scheduler) Run(ctx context.Context) error {
	s.alive.Store(true)
	defer s.alive.Store(false)
	now := s.clock.Now()
	for _, name := range s.Jobs() {
		s.plan(s.entries[name], now)
	}
	s.m.jobs.Set(float64(len(s.entries)))
	s.log.Info("scheduler started", "dir", s.cfg.Dir, "jobs", len(s.entries))
	defer s.shutdown()
	for {
		s.fireDue(ctx)
		timer := s.clock.TimerAt(s.nextDue())
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C():
		case r := <-s.done:
			s.finished(r)
		case <-s.cfg.Reload:
			s.reload()
		}
		timer.Stop()
	}
}

// nextDue is the earliest next run of any job; with none, a day from now.
func (s *Scheduler) nextDue() time.Time {
	next := s.clock.Now().Add(24 * time.Hour)
	for _, e := range s.entries {
		if !e.next.IsZero() && e.next.Before(next) {
			next = e.next
		}
	}
	return next
}

// plan sets a job's first next time, catching up a missed run if its policy says so.
func (s *Scheduler) plan(e *entry, now time.Time) {
	name := e.job.Name
	e.next = e.sched.Next(now)
	js, known := s.state.Jobs[name]
	if !known || js.LastDue.IsZero() {
		// First sight: nothing was missed before now.
		s.state.Jobs[name] = jobState{LastDue: now}
		s.saveState()
	} else if missed := e.sched.Next(js.LastDue); !missed.IsZero() && !missed.After(now) {
		if e.catchUp == CatchUpOnce {
			s.log.Info("missed a run while down; catching up once", "job", name, "missed", missed, "last", js.LastDue)
			e.next = missed
		} else {
			s.log.Info("missed a run while down; skipping to the next", "job", name, "missed", missed, "next", e.next)
		}
	}
	s.m.next.WithLabelValues(name).Set(float64(e.next.Unix()))
}

// fireDue starts every job whose time has come.
func (s *Scheduler) fireDue(ctx context.Context) {
	now := s.clock.Now()
	for _, name := range s.Jobs() {
		e := s.entries[name]
		if e.next.IsZero() || e.next.After(now) {
			continue
		}
		due := e.next
		e.next = e.sched.Next(now)
		s.m.next.WithLabelValues(name).Set(float64(e.next.Unix()))
		js := s.state.Jobs[name]
		js.LastDue = due
		s.state.Jobs[name] = js
		s.saveState()
		s.fire(ctx, e.job, due)
	}
}

func (s *Scheduler) fire(ctx context.Context, job *jobs.Job, due time.Time) {
	if _, busy := s.running[job.Name]; busy {
		s.log.Warn("run skipped: the previous run is still going", "job", job.Name, "due", due)
		s.m.runs.WithLabelValues(job.Name, OutcomeSkippedOverlap).Inc()
		return
	}
	runCtx, cancel := context.WithCancel(ctx)
	s.running[job.Name] = cancel
	s.m.running.WithLabelValues(job.Name).Set(1)
	s.log.Info("run started", "job", job.Name, "due", due)
	start := s.clock.Now()
	go func() {
		r := result{job: job, due: due, start: start}
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.err = fmt.Errorf("panic: %v", p)
				}
			}()
			r.err = s.cfg.Runner(runCtx, job)
		}()
		r.cancelled = ctx.Err() != nil
		r.end = s.clock.Now()
		s.done <- r // Run, or shutdown, always receives
	}()
}

// finished records a run's outcome.
func (s *Scheduler) finished(r result) {
	name := r.job.Name
	if cancel := s.running[name]; cancel != nil {
		cancel()
	}
	delete(s.running, name)
	s.m.running.WithLabelValues(name).Set(0)
	took := r.end.Sub(r.start)
	outcome := OutcomeSuccess
	switch {
	case r.err == nil:
	case errors.Is(r.err, writers.ErrLeaseHeld):
		outcome = OutcomeSkippedLease
	case r.cancelled:
		outcome = OutcomeCancelled
	default:
		outcome = OutcomeFailure
	}
	s.m.runs.WithLabelValues(name, outcome).Inc()
	if outcome != OutcomeSkippedLease {
		s.m.duration.WithLabelValues(name).Observe(took.Seconds())
	}
	attrs := []any{"job", name, "outcome", outcome, "due", r.due, "took", took.Round(time.Millisecond)}
	switch outcome {
	case OutcomeSuccess:
		s.log.Info("run finished", attrs...)
		js := s.state.Jobs[name]
		js.LastSuccess = r.end
		s.state.Jobs[name] = js
		s.saveState()
		s.m.lastSuccess.WithLabelValues(name).Set(float64(r.end.Unix()))
	case OutcomeSkippedLease:
		s.log.Info("run skipped: another writer holds the namespace", append(attrs, "err", r.err)...)
	case OutcomeCancelled:
		s.log.Warn("run cancelled by shutdown; its version can be resumed with run --version", append(attrs, "err", r.err)...)
	default:
		s.log.Error("run failed", append(attrs, "err", r.err)...)
	}
}

// shutdown cancels the runs in progress and waits for each to report.
func (s *Scheduler) shutdown() {
	if len(s.running) > 0 {
		s.log.Info("shutting down: cancelling runs in progress", "runs", len(s.running))
	}
	for _, cancel := range s.running {
		cancel()
	}
	for len(s.running) > 0 {
		s.finished(<-s.done)
	}
	s.log.Info("scheduler stopped")
}

func (s *Scheduler) saveState() {
	if err := s.state.save(); err != nil {
		s.log.Error("cannot save scheduler state; missed runs may not be caught up after a restart", "err", err)
	}
}

// reload re-reads the directory, all or nothing.
func (s *Scheduler) reload() {
	fresh, err := s.load()
	if err != nil {
		s.m.reloads.WithLabelValues("failure").Inc()
		s.log.Error("reload failed; keeping the jobs already loaded", "err", err)
		return
	}
	now := s.clock.Now()
	var added, removed, changed []string
	for name, e := range fresh {
		old, ok := s.entries[name]
		switch {
		case !ok:
			added = append(added, name)
			s.plan(e, now)
		case reflect.DeepEqual(old.job, e.job) && old.catchUp == e.catchUp:
			fresh[name] = old // unchanged: keep its next time
		default:
			changed = append(changed, name)
			e.next = old.next
			if old.job.Schedule != e.job.Schedule {
				e.next = e.sched.Next(now)
			}
			s.m.next.WithLabelValues(name).Set(float64(e.next.Unix()))
		}
	}
	for name := range s.entries {
		if _, ok := fresh[name]; !ok {
			removed = append(removed, name)
			s.m.next.DeleteLabelValues(name)
		}
	}
	s.entries = fresh
	s.m.jobs.Set(float64(len(fresh)))
	s.m.reloads.WithLabelValues("success").Inc()
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	s.log.Info("reloaded jobs", "dir", s.cfg.Dir, "jobs", len(fresh), "added", added, "removed", removed, "changed", changed)
}

// load reads every job file in the directory and the scheduler settings. Jobs without a
// schedule are left out with a log line; every problem is reported at once.
func (s *Scheduler) load() (map[string]*entry, error) {
	catchUp, err := loadFileConfig(s.cfg.Dir)
	var problems []error
	if err != nil {
		problems = append(problems, err)
	}
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(s.cfg.Dir, pat))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	if _, err := os.Stat(s.cfg.Dir); err != nil {
		return nil, fmt.Errorf("jobs directory: %w", err)
	}
	sort.Strings(files)
	entries := map[string]*entry{}
	from := map[string]string{}
	for _, f := range files {
		if filepath.Base(f) == ConfigFile {
			continue
		}
		job, err := jobs.Load(f, s.cfg.Sets)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if job.Schedule == "" {
			s.log.Info("job has no schedule; not scheduled", "job", job.Name, "file", f)
			continue
		}
		if prev, dup := from[job.Name]; dup {
			problems = append(problems, fmt.Errorf("%w: %s: job name %q is also used by %s", jobs.ErrInvalid, f, job.Name, prev))
			continue
		}
		sched, err := jobs.ParseSchedule(job.Schedule)
		if err != nil { // Load validated it; kept for safety
			problems = append(problems, fmt.Errorf("%w: %s: schedule: %v", jobs.ErrInvalid, f, err))
			continue
		}
		from[job.Name] = f
		c := s.cfg.CatchUp
		if job.CatchUp != "" {
			c = CatchUp(job.CatchUp)
		} else if v, ok := catchUp[job.Name]; ok {
			c = v
		}
		entries[job.Name] = &entry{job: job, sched: sched, catchUp: c}
	}
	for name := range catchUp {
		if _, ok := from[name]; !ok {
			s.log.Warn("schedule.yaml names a job that is not scheduled", "job", name)
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return entries, nil
}
