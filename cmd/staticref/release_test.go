package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// The versions of releaseStore's namespace churn.
const (
	relLive      = "20261201T020000Z" // live
	relCandidate = "20261202T020000Z" // complete, never live
	relWriting   = "20261203T020000Z" // still writing
)

// releaseStore makes a Pebble store whose namespace churn has a live version, a complete
// one to release and one still writing, through the store API (manifests only: a release
// reads no rows).
func releaseStore(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	url := "pebble:" + filepath.Join(t.TempDir(), "store")
	s, err := writers.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := func(d int) time.Time { return time.Date(2026, 12, d, 2, 0, 0, 0, time.UTC) }
	for i, v := range []string{relLive, relCandidate, relWriting} {
		m := &writers.Manifest{Namespace: "churn", Version: v, Job: "churn", State: writers.StateWriting, Encoding: "json", StartedAt: at(i + 1)}
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		if v == relWriting {
			continue
		}
		m.State, m.CompletedAt = writers.StateComplete, at(i+1).Add(time.Hour)
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writers.FlipAt(ctx, s, "churn", relLive, at(1).Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return url
}

// releaseJSON runs `staticref release ARGS -o json` against store and decodes the record
// it prints; nil for JSON null or a failed command.
func releaseJSON(t *testing.T, store string, args ...string) (rel *writers.Release, code int, stderr string) {
	t.Helper()
	full := append([]string{"release"}, args...)
	full = append(full, "--store", store, "--namespace", "churn", "-o", "json")
	code, out, stderr := staticref(t, full...)
	if code != 0 {
		if out != "" {
			t.Errorf("release %s: exit %d with stdout %q, want none", args[0], code, out)
		}
		return nil, code, stderr
	}
	if err := json.Unmarshal([]byte(out), &rel); err != nil {
		t.Fatalf("release %s -o json: %v\n%s", args[0], err, out)
	}
	return rel, code, stderr
}

// releaseText runs `staticref release ARGS` and returns its text, failing on a non-zero exit.
func releaseText(t *testing.T, store string, args ...string) string {
	t.Helper()
	full := append([]string{"release"}, args...)
	code, out, stderr := staticref(t, append(full, "--store", store, "--namespace", "churn")...)
	if code != 0 {
		t.Fatalf("release %s: exit %d: %s", args[0], code, stderr)
	}
	return out
}

// liveOf reads the live pointer of churn.
func liveOf(t *testing.T, url string) string {
	t.Helper()
	s, err := writers.OpenExisting(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	live, err := s.Live(context.Background(), "churn")
	if err != nil {
		t.Fatal(err)
	}
	return live
}

// matchLines fails for each pattern that no line of out matches.
func matchLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("no line matches %q in\n%s", p, out)
		}
	}
}

func TestReleaseCanaryThroughTheCommandLine(t *testing.T) {
	store := releaseStore(t)
	var id string

	t.Run("status without a release prints no release, and null as JSON", func(t *testing.T) {
		if out := releaseText(t, store, "status"); out != "no release\n" {
			t.Errorf("got %q, want %q", out, "no release\n")
		}
		code, out, stderr := staticref(t, "release", "status", "--store", store, "--namespace", "churn", "-o", "json")
		if code != 0 || strings.TrimSpace(out) != "null" {
			t.Errorf("got exit %d, %q, %s; want exit 0 and null", code, out, stderr)
		}
	})

	t.Run("start runs a canary at its first step against the live version", func(t *testing.T) {
		rel, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--steps", "1,10,50,100", "--interval", "10m", "--min-requests", "500")
		if code != 0 {
			t.Fatalf("release start: exit %d: %s", code, stderr)
		}
		id = rel.ID
		got := fmt.Sprint(rel.Mode, rel.Live, rel.Candidate, rel.WeightPercent, rel.State, rel.Canary.Steps, time.Duration(rel.Canary.Interval), rel.Canary.MinRequests)
		want := fmt.Sprint("canary", relLive, relCandidate, 1.0, "running", []float64{1, 10, 50, 100}, 10*time.Minute, int64(500))
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if d := writers.DefaultCanary; rel.Canary.FailureLimit != d.FailureLimit || rel.Canary.MaxPSI != d.MaxPSI {
			t.Errorf("knobs not given: got %+v, want DefaultCanary's", rel.Canary)
		}
		if rel.Salt != rel.ID || len(rel.History) != 1 || rel.History[0].Outcome != "start" || !strings.HasPrefix(rel.History[0].By, "cli") {
			t.Errorf("got salt %q, history %+v; want the id as salt and one start by the cli", rel.Salt, rel.History)
		}
	})

	t.Run("a second start is refused while one runs", func(t *testing.T) {
		_, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--mode", "ab", "--weight", "50")
		if code != 1 || !strings.Contains(stderr, "a release is running") || !strings.Contains(stderr, "promote or abort it first") {
			t.Errorf("got exit %d, %q; want exit 1 saying a release is running", code, stderr)
		}
	})

	t.Run("status prints the record as aligned lines", func(t *testing.T) {
		out := releaseText(t, store, "status")
		matchLines(t, out,
			`^release\s+`+id+`$`,
			`^mode\s+canary$`,
			`^live\s+`+relLive+`$`,
			`^candidate\s+`+relCandidate+`$`,
			`^weight\s+1%\s+\(step 1 of 1,10,50,100, judged every 10m\)$`,
			`^judgement\s+min_requests 500, max_not_found_increase 0.01, max_error_increase 0.005, max_psi 0.25$`,
			`^failures\s+0 in a row \(aborts at 2\)$`,
			`^state\s+running$`,
			`^reason\s+-$`,
			`^history$`,
			`^  \S+Z\s+start\s+1%\s+-\s+-\s+canary of `+relCandidate+` against `+relLive+`$`,
		)
	})

	t.Run("pause holds it and resume runs it again; each once", func(t *testing.T) {
		for _, step := range []struct{ action, state, refusal string }{
			{"pause", "paused", "is paused, not running"},
			{"resume", "running", "is running, not paused"},
		} {
			rel, code, stderr := releaseJSON(t, store, step.action)
			if code != 0 || rel.State != step.state || rel.WeightPercent != 1 || rel.History[len(rel.History)-1].Outcome != step.action {
				t.Fatalf("release %s: exit %d, %+v, %s; want it %s at 1%% with the %s in its history", step.action, code, rel, stderr, step.state, step.action)
			}
			_, code, stderr = releaseJSON(t, store, step.action)
			if code != 1 || !strings.Contains(stderr, id+" "+step.refusal) {
				t.Errorf("a second %s: exit %d, %q; want exit 1 saying %q", step.action, code, stderr, step.refusal)
			}
		}
	})

	t.Run("promote flips the candidate live and ends the release", func(t *testing.T) {
		rel, code, stderr := releaseJSON(t, store, "promote")
		if code != 0 || rel.State != "promoted" || rel.WeightPercent != 100 {
			t.Fatalf("release promote: exit %d, %+v, %s; want promoted at 100%%", code, rel, stderr)
		}
		if live := liveOf(t, store); live != relCandidate {
			t.Errorf("live: got %s, want the candidate %s", live, relCandidate)
		}
		matchLines(t, releaseText(t, store, "status"),
			`^state\s+promoted$`,
			`^live\s+`+relLive+`  \(`+relCandidate+` is live now\)$`,
			`^  \S+Z\s+promote\s+100%\s+-\s+-\s+the candidate `+relCandidate+` is live$`,
		)
		for _, action := range []string{"promote", "pause", "abort"} {
			_, code, stderr := releaseJSON(t, store, action)
			if want := "release " + id + " has ended (promoted)"; code != 1 || !strings.Contains(stderr, want) {
				t.Errorf("%s after promote: exit %d, %q; want exit 1 saying %q", action, code, stderr, want)
			}
		}
	})
}

func TestReleaseABAbortAndShadowThroughTheCommandLine(t *testing.T) {
	store := releaseStore(t)

	t.Run("an A/B test keeps its weight and salt", func(t *testing.T) {
		rel, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--mode", "ab", "--weight", "50", "--salt", "churn-ab-1")
		if code != 0 || rel.Mode != "ab" || rel.WeightPercent != 50 || rel.Salt != "churn-ab-1" || len(rel.Canary.Steps) != 0 {
			t.Fatalf("release start --mode ab: exit %d, %+v, %s", code, rel, stderr)
		}
		matchLines(t, releaseText(t, store, "status"), `^mode\s+ab$`, `^weight\s+50%$`, `^salt\s+churn-ab-1$`)
	})

	t.Run("abort ends it at weight 0 with the reason; live never moved", func(t *testing.T) {
		rel, code, stderr := releaseJSON(t, store, "abort", "--reason", "conversion down 3%")
		if code != 0 || rel.State != "aborted" || rel.WeightPercent != 0 || rel.Reason != "conversion down 3%" {
			t.Fatalf("release abort: exit %d, %+v, %s; want aborted at 0%% with the reason", code, rel, stderr)
		}
		if live := liveOf(t, store); live != relLive {
			t.Errorf("live: got %s, want %s untouched", live, relLive)
		}
		matchLines(t, releaseText(t, store, "status"),
			`^state\s+aborted$`, `^weight\s+0%$`, `^reason\s+conversion down 3%$`,
			`^  \S+Z\s+abort\s+0%\s+-\s+-\s+conversion down 3%$`)
		_, code, stderr = releaseJSON(t, store, "resume")
		if code != 1 || !strings.Contains(stderr, "has ended (aborted)") {
			t.Errorf("resume after abort: exit %d, %q; want exit 1 saying it has ended", code, stderr)
		}
	})

	t.Run("after an abort a shadow can start, with its sample", func(t *testing.T) {
		rel, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--mode", "shadow", "--sample-percent", "25")
		if code != 0 || rel.Mode != "shadow" || rel.Shadow.SamplePercent != 25 || rel.WeightPercent != 0 || rel.State != "running" {
			t.Fatalf("release start --mode shadow: exit %d, %+v, %s", code, rel, stderr)
		}
		matchLines(t, releaseText(t, store, "status"), `^sample\s+25% of requests also read the candidate$`)
	})

	t.Run("a canary at a fixed weight says so", func(t *testing.T) {
		releaseJSON(t, store, "abort")
		rel, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--weight", "5", "--failure-limit", "3")
		if code != 0 || rel.Mode != "canary" || rel.WeightPercent != 5 || rel.Canary.FailureLimit != 3 || len(rel.Canary.Steps) != 0 {
			t.Fatalf("release start --weight 5: exit %d, %+v, %s", code, rel, stderr)
		}
		matchLines(t, releaseText(t, store, "status"), `^weight\s+5%\s+\(fixed, judged every 10m\)$`, `^failures\s+0 in a row \(aborts at 3\)$`)
	})
}

func TestReleaseStatusShowsTheLastJudgements(t *testing.T) {
	store := releaseStore(t)
	if _, code, stderr := releaseJSON(t, store, "start", "--candidate", relCandidate, "--steps", "1,10,100"); code != 0 {
		t.Fatalf("release start: exit %d: %s", code, stderr)
	}
	// What a lookup replica's judge records (lookup's code, not this command's).
	ctx := context.Background()
	s, err := writers.OpenExisting(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	_, err = writers.UpdateRelease(ctx, s, "churn", at, func(r *writers.Release) error {
		for i, j := range []writers.Judgement{
			{Interval: 0, Outcome: "hold", Weight: 1, Metric: "requests", Value: 120, Limit: 1000, Reason: "live has 9900 requests and the candidate 120: need 1000 in each"},
			{Interval: 1, Outcome: "pass", Weight: 1, Reason: "psi 0.0123"},
			{Interval: 1, Outcome: "step", Weight: 10, Reason: "interval 1 passed: weight 1% -> 10%"},
			{Interval: 2, Outcome: "fail", Weight: 10, Metric: "not_found_rate", Value: 0.02, Limit: 0.01, Reason: "not-found rate up"},
			{Interval: 3, Outcome: "fail", Weight: 10, Metric: "psi", Value: 0.31, Limit: 0.25},
			{Outcome: "abort", Weight: 0, Reason: "2 failed intervals in a row"},
		} {
			j.At = at.Add(time.Duration(i) * 10 * time.Minute)
			r.History = append(r.History, j)
		}
		r.State, r.WeightPercent, r.Reason, r.Step = writers.ReleaseAborted, 0, "2 failed intervals in a row", 1
		return nil
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := releaseText(t, store, "status")
	matchLines(t, out,
		`^state\s+aborted$`,
		`^reason\s+2 failed intervals in a row$`,
		`^weight\s+0%\s+\(step 2 of 1,10,100, judged every 10m\)$`,
		`^history \(last 5 of 7; all with -o json\)$`,
		`^  2026-12-02T10:10:00Z\s+pass\s+1%\s+interval 1\s+-\s+psi 0.0123$`,
		`^  2026-12-02T10:20:00Z\s+step\s+10%\s+interval 1\s+-\s+interval 1 passed: weight 1% -> 10%$`,
		`^  2026-12-02T10:30:00Z\s+fail\s+10%\s+interval 2\s+not_found_rate=0.02 \(limit 0.01\)\s+not-found rate up$`,
		`^  2026-12-02T10:40:00Z\s+fail\s+10%\s+interval 3\s+psi=0.31 \(limit 0.25\)$`,
		`^  2026-12-02T10:50:00Z\s+abort\s+0%\s+-\s+-\s+2 failed intervals in a row$`,
	)
	if strings.Contains(out, "hold") || strings.Contains(out, " start ") {
		t.Errorf("the two oldest entries are shown, want only the last 5:\n%s", out)
	}
}

func TestReleaseRefusalsExitOne(t *testing.T) {
	store := releaseStore(t)
	empty := "pebble:" + filepath.Join(t.TempDir(), "empty")
	storeWithoutVersions(t, empty)

	t.Run("an action with no release says none was started", func(t *testing.T) {
		for _, action := range []string{"promote", "pause", "resume", "abort"} {
			_, code, stderr := releaseJSON(t, store, action)
			if want := action + " release of churn: no release was started"; code != 1 || !strings.Contains(stderr, want) {
				t.Errorf("%s: exit %d, %q; want exit 1 saying %q", action, code, stderr, want)
			}
		}
	})
	for _, tt := range []struct {
		name, store, candidate, want string
	}{
		{"a candidate that does not exist", store, "20261209T020000Z", "not found"},
		{"a candidate still writing", store, relWriting, "candidate " + relWriting + " is writing"},
		{"a candidate that is live already", store, relLive, relLive + " is already live"},
		{"a namespace with no live version", empty, relCandidate, "no live version to release against"},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			_, code, stderr := releaseJSON(t, tt.store, "start", "--candidate", tt.candidate, "--steps", "1,100")
			if code != 1 || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("got exit %d, %q; want exit 1 and one line saying %q", code, stderr, tt.want)
			}
		})
	}
	t.Run("a missing store is a failure and is not created", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nosuch")
		code, _, stderr := staticref(t, "release", "status", "--store", "pebble:"+dir, "--namespace", "churn")
		if code != 1 || !strings.Contains(stderr, "store directory "+dir+" does not exist") {
			t.Errorf("got exit %d, %q; want exit 1 saying the store does not exist", code, stderr)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s exists after status (stat: %v)", dir, err)
		}
	})
	t.Run("a store without release records says so", func(t *testing.T) {
		// Every driver linked in keeps releases; the message is that of one that does not.
		err := releaseRefused(fmt.Errorf("release churn: %w", writers.ErrNoReleases), "status", "churn", nil)
		if want := "status release of churn: this store does not keep release records"; !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want %q", err, want)
		}
		var ue usageError
		if errors.As(err, &ue) {
			t.Errorf("got a usage error, want a failure (exit 1)")
		}
	})
}

func TestReleaseBadUsageExitsTwoBeforeTheStoreIsOpened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	store := "pebble:" + dir
	start := func(a ...string) []string {
		return append([]string{"release", "start", "--store", store, "--namespace", "churn", "--candidate", relCandidate}, a...)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"a mode that does not exist", start("--mode", "bluegreen", "--weight", "5"), `--mode "bluegreen": use canary, ab or shadow`},
		{"a canary with neither steps nor a weight", start(), "a canary needs --steps (e.g. 1,10,50,100) or a fixed --weight"},
		{"a canary with both steps and a weight", start("--weight", "5", "--steps", "1,100"), "--weight and --steps"},
		{"a canary weight above 100", start("--weight", "150"), "--weight 150: a canary's weight is a percent above 0 and at most 100"},
		{"a canary weight of 0", start("--weight", "0"), "--weight 0: a canary's weight"},
		{"a weight that is not a number", start("--weight", "NaN"), "--weight NaN"},
		{"an A/B test without a weight", start("--mode", "ab"), "--mode ab needs --weight"},
		{"an A/B test at 100", start("--mode", "ab", "--weight", "100"), "--weight 100: an A/B test's weight is a percent above 0 and below 100"},
		{"an A/B test at a negative weight", start("--mode", "ab", "--weight", "-5"), "--weight -5: an A/B test's weight"},
		{"steps that do not end at 100", start("--steps", "1,10,50"), "--steps 1,10,50: the last step must be 100"},
		{"steps that fall", start("--steps", "10,5,100"), "--steps 10,5,100: the steps must rise"},
		{"steps that repeat", start("--steps", "10,10,100"), "the steps must rise"},
		{"a step that is not a number", start("--steps", "1,ten,100"), `--steps 1,ten,100: "ten" is not a percent`},
		{"a step above 100", start("--steps", "1,200"), `"200" is not a percent above 0 and at most 100`},
		{"empty steps", start("--steps", ""), `--steps : "" is not a percent`},
		{"steps on an A/B test", start("--mode", "ab", "--weight", "50", "--steps", "1,100"), "--steps applies to --mode canary, not ab"},
		{"an interval on a shadow", start("--mode", "shadow", "--interval", "5m"), "--interval applies to --mode canary, not shadow"},
		{"a canary knob on an A/B test", start("--mode", "ab", "--weight", "50", "--max-psi", "0.1"), "--max-psi applies to --mode canary, not ab"},
		{"a sample on a canary", start("--steps", "1,100", "--sample-percent", "5"), "--sample-percent applies to --mode shadow, not canary"},
		{"a weight on a shadow", start("--mode", "shadow", "--weight", "5"), "--weight applies to --mode canary or ab"},
		{"a shadow sample of 0", start("--mode", "shadow", "--sample-percent", "0"), "--sample-percent 0: use a percent above 0 and at most 100"},
		{"a shadow sample above 100", start("--mode", "shadow", "--sample-percent", "101"), "--sample-percent 101"},
		{"a zero interval", start("--steps", "1,100", "--interval", "0s"), "--interval 0s: use a duration above 0"},
		{"an interval that is not a duration", start("--steps", "1,100", "--interval", "soon"), `invalid argument "soon" for "--interval"`},
		{"min requests of 0", start("--steps", "1,100", "--min-requests", "0"), "--min-requests 0: use 1 or more"},
		{"a not-found increase above 1", start("--steps", "1,100", "--max-not-found-increase", "2"), "--max-not-found-increase 2: use a fraction above 0 and at most 1"},
		{"an error increase of 0", start("--steps", "1,100", "--max-error-increase", "0"), "--max-error-increase 0"},
		{"a PSI limit of 0", start("--steps", "1,100", "--max-psi", "0"), "--max-psi 0: use a PSI above 0"},
		{"a failure limit of 0", start("--steps", "1,100", "--failure-limit", "0"), "--failure-limit 0: use 1 or more"},
		{"no candidate", []string{"release", "start", "--store", store, "--namespace", "churn", "--steps", "1,100"}, "release start: --candidate is required"},
		{"a candidate id that cannot be a version", start("--candidate", "../etc", "--steps", "1,100"), `--candidate: writers: invalid name: version "../etc"`},
		{"no store", []string{"release", "status", "--namespace", "churn"}, "release status: --store is required"},
		{"no namespace", []string{"release", "pause", "--store", store}, "release pause: --namespace is required"},
		{"a namespace that cannot be one", []string{"release", "abort", "--store", store, "--namespace", "a/b"}, "namespace"},
		{"a store URL that cannot be right", []string{"release", "status", "--store", "pebbel:x", "--namespace", "churn"}, "store: "},
		{"an output format that does not exist", []string{"release", "status", "--store", store, "--namespace", "churn", "-o", "yaml"}, "-o yaml: use text or json"},
		{"a positional argument", []string{"release", "promote", "--store", store, "--namespace", "churn", relCandidate}, "release promote: wrong number of arguments"},
		{"a subcommand that does not exist", []string{"release", "stop"}, `unknown command "stop" for "staticref release"`},
		{"a flag of another subcommand", []string{"release", "pause", "--store", store, "--namespace", "churn", "--reason", "x"}, "unknown flag: --reason"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := staticref(t, tt.args...)
			if code != 2 || out != "" || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit 2, no output, one line containing %q", code, out, stderr, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("the store %s exists (stat: %v): it was opened before the flags were checked", dir, err)
			}
		})
	}
}

func TestReleaseHelpHasExamples(t *testing.T) {
	for _, args := range [][]string{{"release"}, {"release", "start"}, {"release", "promote"}, {"release", "abort"}} {
		code, out, _ := staticref(t, append(args, "--help")...)
		if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "staticref release ") {
			t.Errorf("%s --help: exit %d, want examples:\n%s", strings.Join(args, " "), code, out)
		}
	}
	code, out, _ := staticref(t, "release", "start", "--help")
	for _, want := range []string{"--steps string", "--interval duration", "(default 10m)", "--min-requests int", "(default 1000)", "--sample-percent float", "(default 10)", "--mode string", `(default "canary")`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("release start --help lacks %q:\n%s", want, out)
		}
	}
}

// TestReleaseDocsBucketVectors checks the test vectors in docs/releases.md against
// writers.Bucket, so that what apps and SQL are told to recompute never drifts from what
// the service does.
func TestReleaseDocsBucketVectors(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "releases.md"))
	if err != nil {
		t.Fatal(err)
	}
	header := "| salt | unit | SHA-256, first 4 bytes | uint32 | bucket | at 1% | at 10% | at 50% |"
	_, table, ok := strings.Cut(string(doc), header+"\n")
	if !ok {
		t.Fatalf("docs/releases.md has no table headed %q", header)
	}
	cell := func(s string) string {
		s = strings.TrimSpace(s)
		if s == "(empty)" {
			return ""
		}
		return strings.Trim(s, "`")
	}
	rows := 0
	for i, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if i == 0 {
			continue // |---|---|
		}
		c := strings.Split(strings.Trim(line, "|"), "|")
		if len(c) != 8 {
			t.Fatalf("row %q: %d cells, want 8", line, len(c))
		}
		salt, unit := cell(c[0]), cell(c[1])
		sum, _ := hex.DecodeString(cell(c[2]))
		n, err1 := strconv.ParseUint(cell(c[3]), 10, 32)
		bucket, err2 := strconv.ParseUint(cell(c[4]), 10, 32)
		if len(sum) != 4 || err1 != nil || err2 != nil {
			t.Fatalf("row %q: want 8 hex digits, a uint32 and a bucket", line)
		}
		if got := writers.Bucket(salt, unit); uint64(got) != bucket {
			t.Errorf("Bucket(%q, %q) = %d, the docs say %d", salt, unit, got, bucket)
		}
		if n != uint64(sum[0])<<24|uint64(sum[1])<<16|uint64(sum[2])<<8|uint64(sum[3]) || n%writers.Buckets != bucket {
			t.Errorf("row %q: %s is not %d big-endian, or %d mod %d is not %d", line, cell(c[2]), n, n, writers.Buckets, bucket)
		}
		for k, w := range []float64{1, 10, 50} {
			r := &writers.Release{Mode: writers.ModeAB, State: writers.ReleaseRunning, Salt: salt, WeightPercent: w}
			if got, want := r.Arm(unit), cell(c[5+k]); got != want {
				t.Errorf("the arm of %q with salt %q at %v%%: got %s, the docs say %s", unit, salt, w, got, want)
			}
		}
		rows++
	}
	if rows < 5 {
		t.Errorf("docs/releases.md has %d test vectors, want at least 5", rows)
	}
}

// TestReleaseDocsNameTheCommandsFlags: every --flag in a staticref release line of
// docs/releases.md is one the command has.
func TestReleaseDocsNameTheCommandsFlags(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "releases.md"))
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot(nil, nil)
	text := strings.ReplaceAll(string(doc), "\\\n", " ") // shell line continuations
	lines := regexp.MustCompile(`staticref release (start|status|promote|pause|resume|abort)\b(.*)`).FindAllStringSubmatch(text, -1)
	if len(lines) < 4 {
		t.Fatalf("docs/releases.md shows %d staticref release commands, want the worked examples", len(lines))
	}
	seen := map[string]bool{}
	for _, m := range lines {
		c, _, err := root.Find([]string{"release", m[1]})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range regexp.MustCompile(`(?:^|\s)--([a-z-]+)`).FindAllStringSubmatch(m[2], -1) {
			if c.Flags().Lookup(f[1]) == nil && c.InheritedFlags().Lookup(f[1]) == nil {
				t.Errorf("docs/releases.md: staticref release %s --%s: no such flag", m[1], f[1])
			}
			seen[m[1]+" --"+f[1]] = true
		}
	}
	if want := []string{"start --steps", "start --interval", "start --weight", "start --mode"}; !reflect.DeepEqual(filterSeen(seen, want), want) {
		t.Errorf("docs/releases.md shows %v, want examples using %v", seen, want)
	}
}

func filterSeen(seen map[string]bool, want []string) []string {
	var out []string
	for _, w := range want {
		if seen[w] {
			out = append(out, w)
		}
	}
	return out
}
