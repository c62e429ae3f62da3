package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRunShowsABarOnATerminalAndLogLinesWhenPiped runs the real binary under script(1),
// which gives it a pseudo-terminal, and then with its output piped.
func TestRunShowsABarOnATerminalAndLogLinesWhenPiped(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) from util-linux is not installed")
	}
	_, job, _ := workspace(t, 50_000, "")
	bin := binary(t)
	run := bin + " run --job " + job + " --set model.batch_size=512"

	t.Run("a terminal gets a bar with rows, rate and queues", func(t *testing.T) {
		out, err := exec.Command(script, "-qfec", run, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		s := string(out)
		for _, want := range []string{"\r[", "rows/s", "/50,000 rows", "queues", "\x1b[K"} {
			if !strings.Contains(s, want) {
				t.Errorf("terminal output lacks %q:\n%q", want, s)
			}
		}
	})

	t.Run("a pipe gets structured log lines and no bar", func(t *testing.T) {
		cmd := exec.Command(bin, "run", "--job", job)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		s := string(out)
		if strings.Contains(s, "\r") || strings.Contains(s, "\x1b[") {
			t.Errorf("piped output carries terminal control characters:\n%q", s)
		}
		if !strings.Contains(s, `msg="run finished"`) || !strings.Contains(s, "rows_read=50000") {
			t.Errorf("piped output lacks the summary log line:\n%s", s)
		}
	})
}
