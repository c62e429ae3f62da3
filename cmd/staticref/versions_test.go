package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// historyStore makes a Pebble store whose namespace churn had churn-29400120, then a
// hotfix with a default id (20261201T101500Z), then churn-29401560 flipped live, with
// ids that sort against that order, and a complete version never live made in between.
func historyStore(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	url := "pebble:" + filepath.Join(t.TempDir(), "store")
	s, err := writers.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := func(h int) time.Time { return time.Date(2026, 12, 1, h, 0, 0, 0, time.UTC) }
	for i, v := range []string{"churn-29400120", "20261201T101500Z", "churn-manual-fix", "churn-29401560"} {
		m := &writers.Manifest{Namespace: "churn", Version: v, Job: "churn", State: writers.StateWriting, Encoding: "binary", StartedAt: at(2 * i)}
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		m.State, m.CompletedAt = writers.StateComplete, at(2*i)
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		if v == "churn-manual-fix" {
			continue // its gate failed: never live
		}
		if _, err := writers.FlipAt(ctx, s, "churn", v, at(2*i+1)); err != nil {
			t.Fatal(err)
		}
	}
	return url
}

func TestVersionsListOrdersByFlipHistoryAndMarksTheRollbackTarget(t *testing.T) {
	store := historyStore(t)
	list := func() []versionRow {
		t.Helper()
		code, out, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "churn", "-o", "json")
		if code != 0 {
			t.Fatalf("versions list -o json: exit %d: %s", code, stderr)
		}
		var rows []versionRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("versions list -o json: %v\n%s", err, out)
		}
		return rows
	}
	// summary is "VERSION STATE [target|left]" per row.
	summary := func(rows []versionRow) []string {
		var got []string
		for _, r := range rows {
			line := r.Version + " " + string(r.State)
			if r.RollbackTarget {
				line += " target"
			}
			if r.LeftByRollback {
				line += " left"
			}
			got = append(got, line)
		}
		return got
	}

	t.Run("json lists the history and marks the version rollback returns to", func(t *testing.T) {
		want := []string{
			"churn-29400120 previous",
			"20261201T101500Z previous target",
			"churn-manual-fix complete",
			"churn-29401560 live",
		}
		if got := summary(list()); !reflect.DeepEqual(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("the table shows the flip times and the rollback target", func(t *testing.T) {
		code, out, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "churn")
		if code != 0 {
			t.Fatalf("versions list: exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 5 || !regexp.MustCompile(`^VERSION\s+STATE\s+ROWS\s+SKIPPED\s+COMPLETED\s+FLIPPED\s+BASE\s+DEPTH\s+NOTE$`).MatchString(lines[0]) {
			t.Fatalf("got\n%s\nwant a header with FLIPPED, BASE, DEPTH and NOTE, and 4 versions", out)
		}
		if !regexp.MustCompile(`^20261201T101500Z\s+previous\s.*\s2026-12-01T03:00:00Z\s+-\s+1\s+rollback target$`).MatchString(lines[2]) {
			t.Errorf("the hotfix's line: got %q, want it flipped at 03:00 and marked rollback target", lines[2])
		}
		if !regexp.MustCompile(`^churn-manual-fix\s+complete\s.*Z\s+-\s+-\s+1\s+-$`).MatchString(lines[3]) {
			t.Errorf("the version never live: got %q, want no flip time and no note", lines[3])
		}
	})

	t.Run("rollback returns to the hotfix, then to the run before it", func(t *testing.T) {
		for _, want := range []string{"churn: live 20261201T101500Z (was churn-29401560)", "churn: live churn-29400120 (was 20261201T101500Z)"} {
			code, out, stderr := staticref(t, "versions", "rollback", "--store", store, "--namespace", "churn")
			if code != 0 || strings.TrimSpace(out) != want {
				t.Fatalf("versions rollback: exit %d, %q, %s; want %q", code, out, stderr, want)
			}
		}
		want := []string{
			"churn-29400120 live",
			"20261201T101500Z previous left",
			"churn-manual-fix complete",
			"churn-29401560 previous left",
		}
		if got := summary(list()); !reflect.DeepEqual(got, want) {
			t.Errorf("after two rollbacks: got %q, want %q", got, want)
		}
		code, _, stderr := staticref(t, "versions", "rollback", "--store", store, "--namespace", "churn")
		if code != 1 || !strings.Contains(stderr, "20261201T101500Z is newer (a rollback left it): flip to it") {
			t.Errorf("a third rollback: exit %d, %s; want exit 1 pointing at 20261201T101500Z", code, stderr)
		}
	})

	t.Run("gc judges by the history, not the ids", func(t *testing.T) {
		if code, _, stderr := staticref(t, "versions", "flip", "--store", store, "--namespace", "churn", "churn-29401560"); code != 0 {
			t.Fatalf("versions flip: exit %d: %s", code, stderr)
		}
		// churn-29401560 is live again, after churn-29400120; the hotfix, which a rollback
		// left before that flip, and churn-manual-fix, superseded, go.
		code, out, stderr := staticref(t, "versions", "gc", "--store", store, "--namespace", "churn", "--keep", "1")
		if want := "removed 20261201T101500Z\nremoved churn-manual-fix\n"; code != 0 || out != want {
			t.Errorf("versions gc --keep 1: exit %d, %q, %s; want %q", code, out, stderr, want)
		}
	})
}

func TestVersionsHelpSaysHowTheyAreOrdered(t *testing.T) {
	for _, tc := range []struct {
		cmd, want string
	}{
		{"list", "in the order they were\nlast flipped live"},
		{"rollback", "never returns to the version it left"},
		{"gc", "never by id"},
	} {
		code, out, _ := staticref(t, "versions", tc.cmd, "--help")
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("versions %s --help: exit %d, want it to say %q:\n%s", tc.cmd, code, tc.want, out)
		}
	}
}
