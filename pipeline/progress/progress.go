// Package progress reports how far a batch run has got: a redrawn progress bar on a
// terminal, a structured log line every few seconds otherwise, and a summary at the end;
// and, with Push, the run's metrics to a Prometheus Pushgateway.
//
// pipeline.Run feeds a Reporter; this package never reads data or touches a store, and
// it must not import pipeline (pipeline imports it).
//
// Reporters are safe for concurrent use and cheap to call often: Update only records the
// snapshot and draws (or logs) when enough time has passed.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Snapshot is a run's counters at one moment.
type Snapshot struct {
	RowsRead    int64
	RowsWritten int64
	RowsSkipped int64
	// Queues is how many items wait before each stage ("infer", "write", ...).
	Queues map[string]int
}

// Summary is how a run ended.
type Summary struct {
	Job, Namespace, Version string
	RowsRead                int64
	RowsWritten             int64
	RowsSkipped             int64
	Duration                time.Duration
	Err                     error // nil on success
	// Shard and ShardCount identify one shard of a sharded run (ShardCount 0: unsharded).
	Shard, ShardCount int
}

// Reporter is told about a run as it goes.
type Reporter interface {
	// Start begins the run; totalRows is 0 when unknown.
	Start(totalRows int64)
	// Update records the counters so far.
	Update(Snapshot)
	// Finish prints the summary.
	Finish(Summary)
}

// Nop reports nothing.
func Nop() Reporter { return nop{} }

type nop struct{}

func (nop) Start(int64)     {}
func (nop) Update(Snapshot) {}
func (nop) Finish(Summary)  {}

// Auto is a bar on f when f is a terminal, and log lines every 5 seconds on log otherwise.
func Auto(f *os.File, log *slog.Logger) Reporter {
	if IsTerminal(f) {
		return NewTTY(f)
	}
	return NewLog(log, 5*time.Second)
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return f != nil && term.IsTerminal(int(f.Fd())) }

// tracker is what both reporters share: the counters, the start, and rates.
type tracker struct {
	mu    sync.Mutex
	now   func() time.Time
	start time.Time
	total int64
	last  Snapshot
	shown time.Time // when the last bar or line was drawn
}

func (t *tracker) begin(total int64) {
	t.start, t.total, t.shown = t.now(), total, time.Time{}
}

// rate is rows read per second since the start.
func (t *tracker) rate(now time.Time) float64 {
	el := now.Sub(t.start).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(t.last.RowsRead) / el
}

// eta is the time left at the current rate; false when unknown.
func (t *tracker) eta(now time.Time) (time.Duration, bool) {
	r := t.rate(now)
	if t.total <= 0 || r <= 0 {
		return 0, false
	}
	left := max(t.total-t.last.RowsRead, 0)
	return time.Duration(float64(left) / r * float64(time.Second)).Round(time.Second), true
}

// NewTTY draws a progress bar on w, redrawn in place at most ten times a second.
func NewTTY(w io.Writer) Reporter {
	return &tty{w: w, tracker: tracker{now: time.Now}, every: 100 * time.Millisecond}
}

type tty struct {
	tracker
	w     io.Writer
	every time.Duration
	drawn bool
}

func (r *tty) Start(total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin(total)
}

func (r *tty) Update(s Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = s
	now := r.now()
	if now.Sub(r.shown) < r.every {
		return
	}
	r.shown = now
	// \r back to the line's start, \x1b[K clears what a longer line left.
	fmt.Fprintf(r.w, "\r%s\x1b[K", r.line(now))
	r.drawn = true
}

func (r *tty) line(now time.Time) string {
	const width = 24
	var b strings.Builder
	if r.total > 0 {
		frac := min(float64(r.last.RowsRead)/float64(r.total), 1)
		n := int(frac * width)
		fmt.Fprintf(&b, "[%s%s] %5.1f%%  %s/%s rows", strings.Repeat("#", n), strings.Repeat("-", width-n), 100*frac,
			count(r.last.RowsRead), count(r.total))
	} else {
		fmt.Fprintf(&b, "%s rows", count(r.last.RowsRead))
	}
	fmt.Fprintf(&b, "  %s rows/s", count(int64(r.rate(now))))
	if eta, ok := r.eta(now); ok {
		fmt.Fprintf(&b, "  ETA %s", eta)
	}
	if q := queues(r.last.Queues); q != "" {
		fmt.Fprintf(&b, "  queues %s", q)
	}
	return b.String()
}

func (r *tty) Finish(s Summary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.drawn {
		fmt.Fprint(r.w, "\r\x1b[K")
	}
	fmt.Fprintln(r.w, summaryLine(s))
}

// NewLog logs a progress line on log at most once every `every` (every Update when 0).
func NewLog(log *slog.Logger, every time.Duration) Reporter {
	if log == nil {
		log = slog.Default()
	}
	return &logger{log: log, every: every, tracker: tracker{now: time.Now}}
}

type logger struct {
	tracker
	log   *slog.Logger
	every time.Duration
}

func (r *logger) Start(total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begin(total)
	r.shown = r.start // the first line comes `every` after the start
}

func (r *logger) Update(s Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = s
	now := r.now()
	if r.every > 0 && now.Sub(r.shown) < r.every {
		return
	}
	r.shown = now
	attrs := []any{"rows_read", s.RowsRead, "rows_written", s.RowsWritten, "rows_skipped", s.RowsSkipped,
		"rows_per_s", int64(r.rate(now))}
	if r.total > 0 {
		attrs = append(attrs, "rows_total", r.total, "percent", fmt.Sprintf("%.1f", 100*float64(s.RowsRead)/float64(r.total)))
	}
	if eta, ok := r.eta(now); ok {
		attrs = append(attrs, "eta", eta)
	}
	if q := queues(s.Queues); q != "" {
		attrs = append(attrs, "queues", q)
	}
	r.log.Info("progress", attrs...)
}

func (r *logger) Finish(s Summary) {
	attrs := []any{"job", s.Job, "namespace", s.Namespace, "version", s.Version, "rows_read", s.RowsRead,
		"rows_written", s.RowsWritten, "rows_skipped", s.RowsSkipped, "took", s.Duration.Round(time.Millisecond)}
	if s.Err != nil {
		r.log.Error("run failed", append(attrs, "err", s.Err)...)
		return
	}
	r.log.Info("run finished", attrs...)
}

func summaryLine(s Summary) string {
	rate := ""
	if sec := s.Duration.Seconds(); sec > 0 {
		rate = fmt.Sprintf(" (%s rows/s)", count(int64(float64(s.RowsRead)/sec)))
	}
	status := "done"
	if s.Err != nil {
		status = "failed"
	}
	line := fmt.Sprintf("%s: %s rows read, %s written, %s skipped in %s%s", status,
		count(s.RowsRead), count(s.RowsWritten), count(s.RowsSkipped), s.Duration.Round(time.Millisecond), rate)
	if s.Err != nil {
		line += ": " + s.Err.Error()
	}
	return line
}

// queues formats stage queue depths in a stable order: "infer=3 write=1".
func queues(q map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(q)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, q[k]))
	}
	return strings.Join(parts, " ")
}

// count formats n with thousands separators: 1,234,567.
func count(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
