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

// layoutDriver is a fake driver that chooses layouts and keeps manifests in a map.
type layoutDriver struct {
	writers.Driver
	stored map[string]*writers.Manifest
	chosen int
}

func (d *layoutDriver) ChooseLayout(ctx context.Context, m *writers.Manifest) (*writers.Layout, error) {
	d.chosen++
	return &writers.Layout{Kind: writers.LayoutHashBuckets, Buckets: m.ExpectedRows/100 + 1, Hash: writers.HashFNV1a64}, nil
}

func (d *layoutDriver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	c := *m
	d.stored[m.Version] = &c
	return nil
}

func (d *layoutDriver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	m, ok := d.stored[version]
	if !ok {
		return nil, writers.ErrNotFound
	}
	c := *m
	return &c, nil
}

// TestPutManifestChoosesALayoutOnce: a new version's first manifest gets the layout the
// driver chooses; a later manifest without one gets the stored one (never a new
// choice); a version stored without a layout (written before layouts) keeps none; a
// layout the caller sets is kept.
func TestPutManifestChoosesALayoutOnce(t *testing.T) {
	ctx := context.Background()
	d := &layoutDriver{stored: map[string]*writers.Manifest{}}
	u, _ := writers.ParseURL("redis://nowhere:1/0")
	s := writers.NewStore(d, u)

	m := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting, ExpectedRows: 1000}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.Layout == nil || m.Layout.Buckets != 11 || d.stored["v1"].Layout == nil || d.chosen != 1 {
		t.Fatalf("new version: layout %+v, stored %+v, %d choices; want the driver's, stored, one choice", m.Layout, d.stored["v1"].Layout, d.chosen)
	}
	again := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateComplete, ExpectedRows: 5}
	if err := s.PutManifest(ctx, again); err != nil {
		t.Fatal(err)
	}
	if again.Layout == nil || again.Layout.Buckets != 11 || d.chosen != 1 {
		t.Errorf("a second manifest without a layout got %+v after %d choices, want the stored one (11 buckets), no new choice", again.Layout, d.chosen)
	}

	d.stored["old"] = &writers.Manifest{Namespace: "ns", Version: "old", State: writers.StateComplete}
	old := &writers.Manifest{Namespace: "ns", Version: "old", State: writers.StateComplete, LiveAt: time.Now()}
	if err := s.PutManifest(ctx, old); err != nil {
		t.Fatal(err)
	}
	if old.Layout != nil || d.stored["old"].Layout != nil {
		t.Errorf("a version written before layouts got layout %+v, want none", old.Layout)
	}

	plain := &writers.Manifest{Namespace: "ns", Version: "v2", State: writers.StateWriting, Layout: &writers.Layout{Kind: writers.LayoutPlain}}
	if err := s.PutManifest(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if got := d.stored["v2"].Layout; got == nil || got.Kind != writers.LayoutPlain || d.chosen != 1 {
		t.Errorf("a layout the caller set: stored %+v, want plain, no choice", got)
	}
}
