package inference_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/inference/onnxgen"
)

// within runs f and fails the test unless it returns within d having allocated
// less than 64 MiB.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
			t.Errorf("allocated %d MiB, want under 64", got>>20)
		}
		return err
	case <-time.After(d):
		t.Fatalf("did not return within %s", d)
		return nil
	}
}

func TestAModelPathThatIsNoRegularFileIsRefusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "model.onnx")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.onnx")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: 3 GiB long, no disk used.
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	opts := inference.Options{Features: 4, BatchSize: 8, Device: inference.DeviceCPU}
	for _, tc := range []struct{ name, path, want string }{
		{"/dev/zero, which never ends", "/dev/zero", "a character device, not a regular file"},
		{"a FIFO, whose open waits for a writer", fifo, "a named pipe (FIFO), not a regular file"},
		{"a directory", dir, "a directory, not a regular file"},
		{"a file over 2 GiB", big, "3221225472 bytes, over 2147483648 (MaxModelBytes)"},
	} {
		for what, read := range map[string]func() error{
			"Load":    func() error { _, err := inference.Load(context.Background(), tc.path, opts); return err },
			"Inspect": func() error { _, err := inference.Inspect(context.Background(), tc.path); return err },
		} {
			t.Run(what+" of "+tc.name, func(t *testing.T) {
				err := within(t, 5*time.Second, read)
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "model "+tc.path) {
					t.Fatalf("got %v, want an error naming %s saying %q", err, tc.path, tc.want)
				}
				if !errors.Is(err, inference.ErrMisfit) {
					t.Errorf("got %v, want it to match ErrMisfit: no retry can mend it", err)
				}
			})
		}
	}
}

func TestAModelIsReadUnderTheRunsContext(t *testing.T) {
	path := writeModel(t, onnxgen.Logistic(4, 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := inference.Load(ctx, path, inference.Options{Features: 4, BatchSize: 8, Device: inference.DeviceCPU})
	if !errors.Is(err, context.Canceled) || errors.Is(err, inference.ErrMisfit) {
		t.Errorf("got %v, want context.Canceled, not a misfit", err)
	}
	// Through a symlink, a regular file is read as ever.
	link := filepath.Join(t.TempDir(), "link.onnx")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	info, err := inference.Inspect(context.Background(), link)
	if err != nil || len(info.SHA256) != 64 {
		t.Errorf("a symlink to a model: got %v, %v", info, err)
	}
}
