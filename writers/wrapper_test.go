package writers_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// recordingDriver is a fake driver for the wrapper's unit tests: Get blocks until
// release is closed, and every call is counted.
type recordingDriver struct {
	writers.Driver // nil: any method the test does not expect panics
	calls          atomic.Int64
	inGet          chan struct{}
	release        chan struct{}
	closed         atomic.Bool
}

func (d *recordingDriver) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	d.calls.Add(1)
	if d.closed.Load() {
		panic("Get on a closed driver")
	}
	close(d.inGet)
	<-d.release
	if d.closed.Load() {
		panic("driver closed under a call in flight")
	}
	return []byte("v"), nil
}

func (d *recordingDriver) Close() error {
	d.closed.Store(true)
	return nil
}

func newRecording() (*recordingDriver, *writers.Store) {
	d := &recordingDriver{inGet: make(chan struct{}), release: make(chan struct{})}
	u, _ := writers.ParseURL("pebble:/nowhere")
	return d, writers.NewStore(d, u)
}

func TestCloseWaitsForTheCallInFlight(t *testing.T) {
	d, s := newRecording()
	got := make(chan error, 1)
	go func() {
		_, err := s.Get(context.Background(), "ns", "v1", []byte("k"))
		got <- err
	}()
	<-d.inGet
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a Get was still in the driver")
	case <-time.After(50 * time.Millisecond):
	}
	close(d.release)
	if err := <-got; err != nil {
		t.Errorf("the Get in flight: got %v, want success", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := s.Get(context.Background(), "ns", "v1", []byte("k")); !errors.Is(err, writers.ErrClosed) {
		t.Errorf("Get after Close: got %v, want ErrClosed", err)
	}
	if n := d.calls.Load(); n != 1 {
		t.Errorf("driver saw %d Get calls, want 1 (none after Close)", n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
}

func TestBadArgumentsNeverReachTheDriver(t *testing.T) {
	d, s := newRecording()
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"a namespace with a slash", func() error { _, err := s.Get(ctx, "a/b", "v1", []byte("k")); return err }, `namespace "a/b"`},
		{"a version with a space", func() error { _, err := s.Manifest(ctx, "ns", "v 1"); return err }, `version "v 1"`},
		{"an empty key", func() error { _, err := s.Get(ctx, "ns", "v1", nil); return err }, "empty key"},
		{"rows with fewer values than keys", func() error {
			return s.WriteRows(ctx, "ns", "v1", writers.Rows{Keys: [][]byte{[]byte("a")}})
		}, "1 keys but 0 values"},
		{"a lease without holder", func() error { _, err := s.AcquireLease(ctx, "ns", "", time.Second); return err }, "empty lease holder"},
		{"a commit without id", func() error { return s.CommitWork(ctx, "ns", "v1", writers.Commit{}) }, "empty key"},
		{"a nil manifest", func() error { return s.PutManifest(ctx, nil) }, "nil manifest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, writers.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
	if n := d.calls.Load(); n != 0 {
		t.Errorf("driver saw %d calls, want 0", n)
	}
}
