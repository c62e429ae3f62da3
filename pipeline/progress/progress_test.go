package progress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the program writes to tty, the test reads what
// a terminal would show from pty.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	pty = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN) // ptsname
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open tty: %v", err)
	}
	return pty, tty
}

// fakeNow is a clock the test moves.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func (f *fakeNow) add(d time.Duration) { f.t = f.t.Add(d) }

// drive runs a reporter through a run of 1,000 rows over 10 seconds.
func drive(r Reporter, clk *fakeNow) {
	r.Start(1000)
	for i := int64(1); i <= 10; i++ {
		clk.add(time.Second)
		r.Update(Snapshot{RowsRead: 100 * i, RowsWritten: 100*i - 10, Queues: map[string]int{"write": 1, "infer": int(i)}})
	}
	r.Finish(Summary{Job: "churn", Namespace: "churn", Version: "v1", RowsRead: 1000, RowsWritten: 990, RowsSkipped: 10, Duration: 10 * time.Second})
}

func TestOnATerminalAutoDrawsABarAndASummary(t *testing.T) {
	pty, term := openPTY(t)
	defer pty.Close()
	var (
		out  bytes.Buffer
		read sync.WaitGroup
	)
	read.Go(func() { io.Copy(&out, pty) }) // ends with EIO once tty is closed

	var logs bytes.Buffer
	r := Auto(term, slog.New(slog.NewTextHandler(&logs, nil)))
	bar, ok := r.(*tty)
	if !ok {
		t.Fatalf("Auto on a terminal: got %T, want the bar", r)
	}
	clk := &fakeNow{time.Unix(0, 0)}
	bar.now = clk.now
	r.Start(1000)
	clk.add(2 * time.Second)
	r.Update(Snapshot{RowsRead: 500, RowsWritten: 400, Queues: map[string]int{"write": 1, "infer": 3}})
	r.Update(Snapshot{RowsRead: 501}) // within 100ms: not drawn
	clk.add(2 * time.Second)
	r.Finish(Summary{RowsRead: 1000, RowsWritten: 990, RowsSkipped: 10, Duration: 4 * time.Second})
	term.Close()
	read.Wait()

	got := out.String()
	for _, want := range []string{
		"\r[############------------]  50.0%  500/1,000 rows  250 rows/s  ETA 2s  queues infer=3 write=1\x1b[K",
		"\r\x1b[Kdone: 1,000 rows read, 990 written, 10 skipped in 4s (250 rows/s)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got)
		}
	}
	if strings.Contains(got, "501") {
		t.Errorf("an update within 100ms was drawn:\n%q", got)
	}
	if logs.Len() != 0 {
		t.Errorf("logged on a terminal: %s", logs.String())
	}
}

func TestWhenPipedAutoLogsPlainLinesEveryFewSeconds(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	defer wr.Close()
	var logs bytes.Buffer
	r := Auto(wr, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	lg, ok := r.(*logger)
	if !ok {
		t.Fatalf("Auto on a pipe: got %T, want log lines", r)
	}
	clk := &fakeNow{time.Unix(0, 0)}
	lg.now = clk.now
	drive(r, clk) // updates every second, lines every 5s

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	want := []string{
		`level=INFO msg=progress rows_read=500 rows_written=490 rows_skipped=0 rows_per_s=100 rows_total=1000 percent=50.0 eta=5s queues="infer=5 write=1"`,
		`level=INFO msg=progress rows_read=1000 rows_written=990 rows_skipped=0 rows_per_s=100 rows_total=1000 percent=100.0 eta=0s queues="infer=10 write=1"`,
		`level=INFO msg="run finished" job=churn namespace=churn version=v1 rows_read=1000 rows_written=990 rows_skipped=10 took=10s`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), logs.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\ngot  %s\nwant %s", i, lines[i], want[i])
		}
	}
	wr.Close()
	if b, _ := io.ReadAll(rd); len(b) != 0 {
		t.Errorf("wrote to the pipe itself: %q", b)
	}
}

func TestAFailedRunSaysSoInTheSummary(t *testing.T) {
	var buf bytes.Buffer
	r := NewTTY(&buf)
	r.Start(0)
	r.Finish(Summary{RowsRead: 5, Duration: time.Second, Err: errors.New("gate min_rows_ratio failed")})
	if got, want := buf.String(), "failed: 5 rows read, 0 written, 0 skipped in 1s (5 rows/s): gate min_rows_ratio failed\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCountUsesThousandsSeparators(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := count(n); got != want {
			t.Errorf("count(%d): got %s, want %s", n, got, want)
		}
	}
}

// pushgateway records what was pushed.
type pushgateway struct {
	mu     sync.Mutex
	method []string
	path   []string
	body   []string
}

func (p *pushgateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.method = append(p.method, r.Method)
	p.path = append(p.path, r.URL.Path)
	p.body = append(p.body, string(b))
	p.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func TestPushSendsTheRunsMetricsToThePushgateway(t *testing.T) {
	gw := &pushgateway{}
	srv := httptest.NewServer(gw)
	defer srv.Close()

	ok := Summary{Job: "churn", RowsRead: 1000, RowsWritten: 990, RowsSkipped: 10, Duration: 3 * time.Second}
	if err := Push(context.Background(), srv.URL, ok); err != nil {
		t.Fatal(err)
	}
	failed := ok
	failed.Err, failed.Shard, failed.ShardCount = errors.New("boom"), 2, 4
	if err := Push(context.Background(), srv.URL, failed); err != nil {
		t.Fatal(err)
	}
	if len(gw.body) != 2 {
		t.Fatalf("got %d pushes, want 2", len(gw.body))
	}
	if gw.method[0] != http.MethodPost {
		t.Errorf("method: got %s, want POST (add, keeping the last success)", gw.method[0])
	}
	if want := "/metrics/job/staticref/staticref_job/churn"; gw.path[0] != want {
		t.Errorf("path: got %s, want %s", gw.path[0], want)
	}
	// The client orders grouping labels as it likes (a map): compare them as a set.
	if got, want := groupingLabels(gw.path[1]), "job=staticref shard=2 staticref_job=churn"; got != want {
		t.Errorf("sharded path %s: got labels %q, want %q", gw.path[1], got, want)
	}
	// The body is protobuf-delimited by default; metric names appear verbatim.
	for _, name := range []string{"staticref_run_rows_read", "staticref_run_rows_written", "staticref_run_rows_skipped",
		"staticref_run_duration_seconds", "staticref_run_success", "staticref_run_last_success_timestamp_seconds"} {
		if !strings.Contains(gw.body[0], name) {
			t.Errorf("push lacks %s", name)
		}
	}
	if strings.Contains(gw.body[1], "last_success") {
		t.Error("a failed run pushed a last success timestamp")
	}

	t.Run("an unreachable gateway is an error that names it", func(t *testing.T) {
		err := Push(context.Background(), "http://127.0.0.1:1", ok)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("got %v", err)
		}
	})
}

// groupingLabels turns /metrics/k1/v1/k2/v2… into "k1=v1 k2=v2", sorted.
func groupingLabels(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/metrics/"), "/")
	var pairs []string
	for i := 0; i+1 < len(parts); i += 2 {
		pairs = append(pairs, parts[i]+"="+parts[i+1])
	}
	slices.Sort(pairs)
	return strings.Join(pairs, " ")
}

func TestAFailedPushNeverShowsTheGatewayPassword(t *testing.T) {
	// A gateway that answers 500 (the push library quotes the URL in that error) and one
	// that is not there at all (net/http quotes it in its own).
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
	}))
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	for _, url := range []string{
		strings.Replace(gw.URL, "http://", "http://ops:s3cr3t-pw@", 1),
		"http://ops:s3cr3t-pw@" + gone,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := Push(ctx, url, Summary{Job: "churn"})
		cancel()
		if err == nil {
			t.Fatalf("Push(%s) succeeded, want an error", url)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("Push error shows the password: %v", err)
		}
		if !strings.Contains(err.Error(), "ops:xxxxx@") {
			t.Errorf("Push error = %v, want it to name the gateway with its password hidden", err)
		}
	}
}
