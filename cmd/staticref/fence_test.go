package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/staticref/staticref/writers/redistest"
)

// TestAWriterPausedPastItsLeaseWritesNoMore: a run frozen mid-write (SIGSTOP, as a VM or
// container freeze does) outlives its lease; meanwhile another writer takes the namespace
// over and gc retires the frozen run's version. Woken up, the run must not write one more
// row into the retired version (rows that no gc would ever remove): it fails, naming the
// lost lease, and the version's key range stays empty.
func TestAWriterPausedPastItsLeaseWritesNoMore(t *testing.T) {
	d := faultRows(t)
	url := redistest.Standalone(t)
	job := d.writeJob(t, "churn")
	const ttl = 2 * time.Second
	cmd := exec.Command(binary(t), "run", "--job", job, "--store", url, "--version", "v-frozen",
		"--lease-ttl", ttl.String(), "--set", "model.batch_size=1024", "--set", "model.workers=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForShards(t, url, "churn", "v-frozen", 2)
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill() })

	ctx := context.Background()
	s := openFromEnv(t, nil, url)
	defer s.Close()
	// Past the lease: another writer can take the namespace, and does, while it retires the
	// frozen run's version (as gc does with an abandoned one).
	deadline := time.Now().Add(10 * ttl)
	for {
		l, err := s.AcquireLease(ctx, "churn", "the-next-run", time.Minute)
		if err == nil {
			if err := s.DeleteVersion(ctx, "churn", "v-frozen"); err != nil {
				t.Fatalf("retire the frozen run's version: %v", err)
			}
			s.ReleaseLease(ctx, l)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the frozen run's lease never lapsed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, err := s.CountKeys(ctx, "churn", "v-frozen"); err != nil || n != 0 {
		t.Fatalf("the retired version holds %d keys (%v) before the run wakes, want 0", n, err)
	}

	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("the woken run: got %v, want exit 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "lease") {
		t.Errorf("the woken run's error does not say it lost its lease:\n%s", stderr.String())
	}
	if n, err := s.CountKeys(ctx, "churn", "v-frozen"); err != nil || n != 0 {
		t.Errorf("the woken run wrote %d keys into its retired version (%v), want 0", n, err)
	}
}
