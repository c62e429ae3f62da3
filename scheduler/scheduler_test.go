package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/pebble" // pebble: stores under test
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]bool
}

type fakeTimer struct {
	clk *fakeClock
	at  time.Time
	c   chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, timers: map[*fakeTimer]bool{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) TimerAt(at time.Time) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, at: at, c: make(chan time.Time, 1)}
	if !at.After(c.now) {
		t.c <- c.now
	} else {
		c.timers[t] = true
	}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	active := t.clk.timers[t]
	delete(t.clk.timers, t)
	return active
}

// set moves the clock to now and fires the timers that are due.
func (c *fakeClock) set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	for t := range c.timers {
		if !t.at.After(now) {
			t.c <- now
			delete(c.timers, t)
		}
	}
}

// idle reports whether the scheduler is waiting on a timer in the future: it has handled
// everything that was due.
func (c *fakeClock) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.timers {
		if t.at.After(c.now) {
			return true
		}
	}
	return false
}

// waitFor polls cond (the scheduler runs on other goroutines; nothing here waits on
// the clock).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	(<-ch).Write(&m)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func (s *Scheduler) runs(job, outcome string) float64 {
	return value(s.m.runs.WithLabelValues(job, outcome))
}

const jobTemplate = `name: %s
schedule: %q
source: {uri: features/*.parquet, key: id, features: [f0]}
model: {path: model.onnx}
`

func writeJob(t *testing.T, dir, name, schedule string) {
	t.Helper()
	data := fmt.Sprintf(jobTemplate, name, schedule)
	if err := os.WriteFile(filepath.Join(dir, name+".yaml"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// call is one invocation of the fake runner.
type call struct {
	job  *jobs.Job
	ctx  context.Context
	done chan error // what the run returns
}

// harness runs a Scheduler over a fake clock and a fake runner.
type harness struct {
	*Scheduler
	clk    *fakeClock
	calls  chan call
	reload chan os.Signal
	cancel context.CancelFunc
	ended  chan error
}

var t0 = time.Date(2026, 11, 27, 1, 59, 30, 0, time.UTC)

func start(t *testing.T, cfg Config, now time.Time) *harness {
	t.Helper()
	h := &harness{clk: newFakeClock(now), calls: make(chan call, 16), reload: make(chan os.Signal, 1), ended: make(chan error, 1)}
	cfg.Clock = h.clk
	cfg.Reload = h.reload
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Runner = func(ctx context.Context, job *jobs.Job) error {
		c := call{job: job, ctx: ctx, done: make(chan error, 1)}
		h.calls <- c
		select {
		case err := <-c.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Scheduler = s
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.ended <- s.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	waitFor(t, "the scheduler waits", h.clk.idle)
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.ended:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// advance moves the clock and waits until the scheduler has handled what came due.
func (h *harness) advance(t *testing.T, to time.Time) {
	t.Helper()
	h.clk.set(to)
	waitFor(t, "the scheduler handles "+to.String(), h.clk.idle)
}

func (h *harness) nextCall(t *testing.T) call {
	t.Helper()
	select {
	case c := <-h.calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the runner was not called")
		return call{}
	}
}

func (h *harness) noCall(t *testing.T) {
	t.Helper()
	select {
	case c := <-h.calls:
		t.Fatalf("runner called for %s, want no call", c.job.Name)
	default:
	}
}

func TestTheSchedulerRunsJobsOnTheirSchedule(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "0 2 * * *")
	writeJob(t, dir, "ltv", "*/30 * * * * *") // with seconds: every 30s
	h := start(t, Config{Dir: dir}, t0)

	h.advance(t, t0.Add(30*time.Second)) // 02:00:00: both are due
	got := map[string]call{}
	for range 2 {
		c := h.nextCall(t)
		got[c.job.Name] = c
	}
	if got["churn"].job == nil || got["ltv"].job == nil {
		t.Fatalf("got runs of %v, want churn and ltv", got)
	}
	got["churn"].done <- nil
	got["ltv"].done <- fmt.Errorf("boom")
	waitFor(t, "both runs are recorded", func() bool {
		return h.runs("churn", OutcomeSuccess) == 1 && h.runs("ltv", OutcomeFailure) == 1
	})
	if got, want := value(h.m.lastSuccess.WithLabelValues("churn")), float64(t0.Add(30*time.Second).Unix()); got != want {
		t.Errorf("last success of churn: got %v, want %v", got, want)
	}
	if got := value(h.m.duration.WithLabelValues("churn").(prometheus.Histogram)); got != 1 {
		t.Errorf("duration observations: got %v, want 1", got)
	}

	h.advance(t, t0.Add(60*time.Second)) // 02:00:30: only ltv
	if c := h.nextCall(t); c.job.Name != "ltv" {
		t.Errorf("at 02:00:30 got a run of %s, want ltv", c.job.Name)
	} else {
		c.done <- nil
	}
	h.noCall(t)
}

func TestAJobStillRunningIsSkippedNotRunTwice(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "* * * * *")
	h := start(t, Config{Dir: dir}, t0)

	h.advance(t, t0.Add(30*time.Second))
	first := h.nextCall(t)
	h.advance(t, t0.Add(90*time.Second)) // due again while the first runs
	h.noCall(t)
	if got := h.runs("churn", OutcomeSkippedOverlap); got != 1 {
		t.Errorf("skipped_overlap: got %v, want 1", got)
	}
	first.done <- nil
	waitFor(t, "the first run is recorded", func() bool { return h.runs("churn", OutcomeSuccess) == 1 })
	h.advance(t, t0.Add(150*time.Second))
	h.nextCall(t).done <- nil
}

func TestAHeldLeaseIsASkipNotAFailure(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "* * * * *")
	h := start(t, Config{Dir: dir}, t0)
	h.advance(t, t0.Add(30*time.Second))
	h.nextCall(t).done <- fmt.Errorf("lease: %w", writers.ErrLeaseHeld)
	waitFor(t, "the skip is recorded", func() bool { return h.runs("churn", OutcomeSkippedLease) == 1 })
	if got := h.runs("churn", OutcomeFailure); got != 0 {
		t.Errorf("failures: got %v, want 0", got)
	}
}

func TestCronTZSchedulesInTheJobsTimezone(t *testing.T) {
	if _, err := time.LoadLocation("America/New_York"); err != nil {
		t.Skip("no tz database:", err)
	}
	dir := t.TempDir()
	writeJob(t, dir, "churn", "CRON_TZ=America/New_York 0 2 * * *")
	h := start(t, Config{Dir: dir}, t0) // 01:59:30 UTC is 20:59:30 in New York
	h.advance(t, t0.Add(31*time.Second))
	h.noCall(t)
	h.advance(t, time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)) // 02:00 EST
	h.nextCall(t).done <- nil
}

func TestMissedRunsAreCaughtUpPerPolicy(t *testing.T) {
	lastDue := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC) // missed the 26th and 27th
	for _, tc := range []struct {
		name     string
		flag     CatchUp
		file     string
		wantRuns int
		jobField string // catch_up in the job file itself
	}{
		{"skip by default waits for the next time", "", "", 0, ""},
		{"once in the job file overrides schedule.yaml and the flag", CatchUpSkip, "jobs: {churn: {catch_up: skip}}\n", 1, "once"},
		{"skip in the job file overrides the flag", CatchUpOnce, "", 0, "skip"},
		{"once from the flag runs once at start-up", CatchUpOnce, "", 1, ""},
		{"once from schedule.yaml overrides the flag", CatchUpSkip, "jobs: {churn: {catch_up: once}}\n", 1, ""},
		{"skip from schedule.yaml overrides the flag", CatchUpOnce, "jobs:\n  churn:\n    catch_up: skip\n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, stateDir := t.TempDir(), t.TempDir()
			writeJob(t, dir, "churn", "0 2 * * *")
			if tc.jobField != "" {
				f := filepath.Join(dir, "churn.yaml")
				data, _ := os.ReadFile(f)
				os.WriteFile(f, append(data, []byte("catch_up: "+tc.jobField+"\n")...), 0o644)
			}
			if tc.file != "" {
				os.WriteFile(filepath.Join(dir, ConfigFile), []byte(tc.file), 0o644)
			}
			st, _ := json.Marshal(map[string]any{"jobs": map[string]any{"churn": map[string]any{"last_due": lastDue}}})
			os.WriteFile(filepath.Join(stateDir, StateFile), st, 0o644)

			h := start(t, Config{Dir: dir, StateDir: stateDir, CatchUp: tc.flag}, now)
			if tc.wantRuns == 1 {
				h.nextCall(t).done <- nil
				waitFor(t, "the catch-up run is recorded", func() bool { return h.runs("churn", OutcomeSuccess) == 1 })
			}
			h.noCall(t)
			if got, want := value(h.m.next.WithLabelValues("churn")), float64(time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC).Unix()); got != want {
				t.Errorf("next run: got %v, want %v", time.Unix(int64(got), 0).UTC(), time.Unix(int64(want), 0).UTC())
			}
			h.stop(t)

			// The state file now says what was handled, so a restart misses nothing.
			data, _ := os.ReadFile(filepath.Join(stateDir, StateFile))
			var saved state
			if err := json.Unmarshal(data, &saved); err != nil {
				t.Fatal(err)
			}
			wantDue := lastDue
			if tc.wantRuns == 1 {
				wantDue = time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
				if !saved.Jobs["churn"].LastSuccess.Equal(now) {
					t.Errorf("last success: got %v, want %v", saved.Jobs["churn"].LastSuccess, now)
				}
			}
			if got := saved.Jobs["churn"].LastDue; !got.Equal(wantDue) {
				t.Errorf("last due in the state file: got %v, want %v", got, wantDue)
			}
		})
	}

	t.Run("a job seen for the first time missed nothing", func(t *testing.T) {
		dir, stateDir := t.TempDir(), t.TempDir()
		writeJob(t, dir, "churn", "0 2 * * *")
		h := start(t, Config{Dir: dir, StateDir: stateDir, CatchUp: CatchUpOnce}, now)
		h.noCall(t)
		h.stop(t)
		h = start(t, Config{Dir: dir, StateDir: stateDir, CatchUp: CatchUpOnce}, now.Add(time.Hour))
		h.noCall(t)
		// Down over 02:00 on the 28th: caught up once after the restart.
		h.stop(t)
		h = start(t, Config{Dir: dir, StateDir: stateDir, CatchUp: CatchUpOnce}, now.Add(48*time.Hour))
		h.nextCall(t).done <- nil
	})
}

func TestReloadAddsChangesAndRemovesJobs(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "0 * * * *")
	writeJob(t, dir, "ltv", "0 * * * *")
	h := start(t, Config{Dir: dir}, t0)
	if got := strings.Join(h.Jobs(), ","); got != "churn,ltv" {
		t.Fatalf("jobs: got %s", got)
	}

	t.Run("an invalid file keeps the jobs already loaded", func(t *testing.T) {
		os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("name: bad\nschedule: nonsense\n"), 0o644)
		h.reload <- syscall.SIGHUP
		waitFor(t, "the reload fails", func() bool { return value(h.m.reloads.WithLabelValues("failure")) == 1 })
		os.Remove(filepath.Join(dir, "bad.yaml"))
	})

	os.Remove(filepath.Join(dir, "ltv.yaml"))
	writeJob(t, dir, "churn", "30 1 * * *") // changed: 01:30 daily, so not at 02:00
	writeJob(t, dir, "new", "0 2 * * *")
	h.reload <- syscall.SIGHUP
	waitFor(t, "the reload succeeds", func() bool { return value(h.m.reloads.WithLabelValues("success")) == 1 })
	waitFor(t, "the scheduler waits", h.clk.idle)
	if got := value(h.m.jobs); got != 2 {
		t.Errorf("jobs gauge: got %v, want 2", got)
	}

	h.advance(t, t0.Add(30*time.Second))
	c := h.nextCall(t)
	if c.job.Name != "new" {
		t.Errorf("at 02:00 got a run of %s, want only new", c.job.Name)
	}
	c.done <- nil
	h.noCall(t)
}

func TestShutdownCancelsRunsAndWaitsForThem(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "* * * * *")
	h := start(t, Config{Dir: dir}, t0)
	h.advance(t, t0.Add(30*time.Second))
	c := h.nextCall(t)
	h.stop(t) // returns only after the run reported
	if c.ctx.Err() == nil {
		t.Error("the run's context was not cancelled")
	}
	if got := h.runs("churn", OutcomeCancelled); got != 1 {
		t.Errorf("cancelled runs: got %v, want 1", got)
	}
}

func TestHandlerServesMetricsAndHealth(t *testing.T) {
	dir := t.TempDir()
	writeJob(t, dir, "churn", "* * * * *")
	h := start(t, Config{Dir: dir}, t0)
	h.advance(t, t0.Add(30*time.Second))
	h.nextCall(t).done <- nil
	waitFor(t, "the run is recorded", func() bool { return h.runs("churn", OutcomeSuccess) == 1 })
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`staticref_schedule_runs_total{job="churn",outcome="success"} 1`,
		`staticref_schedule_last_success_timestamp_seconds{job="churn"}`,
		`staticref_schedule_run_duration_seconds_bucket{job="churn"`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics: status %d, lacks %s", code, want)
		}
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while running: got %d, want 200", code)
	}
	h.stop(t)
	if code, _ := get("/healthz"); code != 503 {
		t.Errorf("/healthz after shutdown: got %d, want 503", code)
	}
}

func TestNewReportsEveryBadFileAtOnce(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("name: a\nschedule: nope\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte("name: b\nbogus: 1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte("jobs: {a: {catch_up: twice}}\n"), 0o644)
	_, err := New(Config{Dir: dir, Runner: func(context.Context, *jobs.Job) error { return nil }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		t.Fatal("New: got no error")
	}
	for _, want := range []string{"a.yaml", "b.yaml", "bogus", "twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
