package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that a running command and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// scheduleUntil runs `staticref schedule --jobs dir` in this process until its log
// shows want (failing after 30 s, or if it exits first), then cancels it and checks
// that it exits 0. It returns the log.
func scheduleUntil(t *testing.T, dir, want string) string {
	t.Helper()
	return scheduleUntilLog(t, dir, want, func(log string) bool { return strings.Contains(log, want) })
}

// scheduleUntilLog is scheduleUntil until done(log) holds (want describes it).
func scheduleUntilLog(t *testing.T, dir, want string, done func(log string) bool) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Main(ctx, []string{"schedule", "--jobs", dir, "--addr", "127.0.0.1:0", "--state", t.TempDir()}, &out, &errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !done(errOut.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in 30s:\n%s", want, errOut.String())
		}
		select {
		case code := <-exit:
			t.Fatalf("schedule exited early with %d:\n%s", code, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("schedule: exit %d after cancel:\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("schedule did not stop after cancel")
	}
	return errOut.String()
}

func TestScheduleRunsAJobForRealAndStopsOnCancel(t *testing.T) {
	dir, _, store := workspace(t, 2000, "schedule: \"* * * * * *\"\n") // every second
	log := scheduleUntil(t, dir, "outcome=success")
	if !strings.Contains(log, "serving /metrics and /healthz") {
		t.Errorf("no line about the HTTP address:\n%s", log)
	}
	// One line ends each run, and no line names its job twice.
	for _, line := range strings.Split(log, "\n") {
		if strings.Count(line, " job=") > 1 {
			t.Errorf("a line names the job twice: %s", line)
		}
		if strings.Contains(line, `msg="run finished"`) && !strings.Contains(line, "outcome=") {
			t.Errorf("a second end-of-run line, without the outcome: %s", line)
		}
	}

	code, listing, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "churn", "-o", "json")
	if code != 0 {
		t.Fatalf("versions list: exit %d: %s", code, stderr)
	}
	var vs []map[string]any
	json.Unmarshal([]byte(listing), &vs)
	live := 0
	for _, v := range vs {
		if v["state"] == "live" && v["rows_written"] == 2000.0 {
			live++
		}
	}
	if live != 1 {
		t.Errorf("got %d live versions of 2000 rows, want 1: %s", live, listing)
	}
}

// bombDir is a jobs directory holding jobs/testdata/alias-bomb.bad.yaml.
func bombDir(t *testing.T) string {
	dir := t.TempDir()
	data, err := os.ReadFile("../../jobs/testdata/alias-bomb.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bomb.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestScheduleRejectsBadUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"without --jobs", []string{"schedule"}, "--jobs is required"},
		{"with an unknown catch-up policy", []string{"schedule", "--jobs", ".", "--catch-up", "twice"}, "skip or once"},
		{"with a missing directory", []string{"schedule", "--jobs", "/nonexistent/jobs"}, "jobs directory"},
		{"with a job file whose aliases stand for billions of nodes", []string{"schedule", "--jobs", bombDir(t)}, "expand to more than 1000000 nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := staticref(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("got exit %d %q, want 2 mentioning %q", code, stderr, tc.want)
			}
		})
	}
}

func TestRunPushesItsMetricsToAPushgateway(t *testing.T) {
	_, job, _ := workspace(t, 1000, "")
	var (
		mu     sync.Mutex
		pushes []string
	)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushes = append(pushes, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer gw.Close()

	t.Setenv("STATICREF_PUSHGATEWAY", gw.URL)
	if code, out, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushes) != 1 {
		t.Fatalf("got %d pushes, want 1", len(pushes))
	}
	p := pushes[0]
	if !strings.HasPrefix(p, "POST /metrics/job/staticref/staticref_job/churn ") {
		t.Errorf("push: got %.80q", p)
	}
	for _, name := range []string{"staticref_run_rows_written", "staticref_run_success", "staticref_run_last_success_timestamp_seconds"} {
		if !strings.Contains(p, name) {
			t.Errorf("push lacks %s", name)
		}
	}
}

// TestScheduleRunsANightlyFullJobAndAnHourlyIncrementOfOneNamespace: both jobs of the
// namespace run from one directory; the increment builds on what the full job published.
func TestScheduleRunsANightlyFullJobAndAnHourlyIncrementOfOneNamespace(t *testing.T) {
	dir, job, store := workspace(t, 2000, "schedule: \"* * * * * *\"\n")
	full, err := os.ReadFile(job)
	if err != nil {
		t.Fatal(err)
	}
	hourly := strings.Replace(string(full), "name: churn\n", "name: churn-hourly\n", 1)
	hourly = strings.Replace(hourly, "uri: features/*.parquet", "uri: features/part-00000.parquet", 1)
	hourly = strings.Replace(hourly, "  store: pebble:store\n", "  store: pebble:store\n  namespace: churn\n  mode: incremental\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "hourly.yaml"), []byte(hourly), 0o644); err != nil {
		t.Fatal(err)
	}
	succeeded := regexp.MustCompile(`msg="run finished".*job=churn-hourly.*outcome=success`)
	scheduleUntilLog(t, dir, "a successful run of churn-hourly", succeeded.MatchString)

	code, listing, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "churn", "-o", "json")
	if code != 0 {
		t.Fatalf("versions list: exit %d: %s", code, stderr)
	}
	var vs []versionRow
	json.Unmarshal([]byte(listing), &vs)
	var fulls, incrs int
	for _, v := range vs {
		switch {
		case v.Mode == "full" && v.Job == "churn" && v.RowsWritten == 2000:
			fulls++
		case v.Mode == "incremental" && v.Job == "churn-hourly" && v.RowsWritten == 1000 && v.Base != "":
			incrs++
		}
	}
	if fulls == 0 || incrs == 0 {
		t.Errorf("got %d full versions of churn and %d increments of churn-hourly, want some of each: %s", fulls, incrs, listing)
	}
}
