package writers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// memDriver is a fake driver for the catalog's unit tests: manifests and a live pointer
// in memory, and a hook that makes PutManifest fail, as a store error or a crash after
// the swap would. Every other method panics (the embedded nil Driver).
type memDriver struct {
	writers.Driver
	mu        sync.Mutex
	manifests map[string][]byte // by version; one namespace
	live      string
	failPut   func(m *writers.Manifest) bool
}

func newMem() (*memDriver, *writers.Store) {
	d := &memDriver{manifests: map[string][]byte{}}
	u, _ := writers.ParseURL("pebble:/nowhere")
	return d, writers.NewStore(d, u)
}

func (d *memDriver) PutManifest(_ context.Context, m *writers.Manifest, data []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failPut != nil && d.failPut(m) {
		return errors.New("injected failure")
	}
	d.manifests[m.Version] = data
	return nil
}

func (d *memDriver) Manifest(_ context.Context, ns, version string) (*writers.Manifest, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	data, ok := d.manifests[version]
	if !ok {
		return nil, writers.ErrNotFound
	}
	m := new(writers.Manifest)
	return m, json.Unmarshal(data, m)
}

func (d *memDriver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	d.mu.Lock()
	var versions []string
	for v := range d.manifests {
		versions = append(versions, v)
	}
	d.mu.Unlock()
	var ms []*writers.Manifest
	for _, v := range versions {
		m, err := d.Manifest(ctx, ns, v)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func (d *memDriver) Live(context.Context, string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live, nil
}

func (d *memDriver) SwapLive(ctx context.Context, ns, old, next string) error {
	m, err := d.Manifest(ctx, ns, next)
	if err != nil {
		return err
	}
	if m.State != writers.StateComplete {
		return writers.ErrNotComplete
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live != old {
		return writers.ErrConflict
	}
	d.live = next
	return nil
}

func (d *memDriver) DeleteVersion(ctx context.Context, ns, version string) error {
	m, err := d.Manifest(ctx, ns, version)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live == version {
		return writers.ErrConflict
	}
	m.State = writers.StateRetired
	data, err := json.Marshal(m)
	d.manifests[version] = data
	return err
}

func (d *memDriver) Close() error { return nil }

// hour is the test clock: hour h of 2026-12-01.
func hour(h int) time.Time { return time.Date(2026, 12, 1, h, 0, 0, 0, time.UTC) }

func completeAt(t *testing.T, s *writers.Store, version string, h int) {
	t.Helper()
	m := &writers.Manifest{Namespace: "ns", Version: version, State: writers.StateComplete, StartedAt: hour(h), CompletedAt: hour(h)}
	if err := s.PutManifest(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func flipAt(t *testing.T, s *writers.Store, version string, h int) {
	t.Helper()
	if _, err := writers.FlipAt(context.Background(), s, "ns", version, hour(h)); err != nil {
		t.Fatalf("FlipAt(%s): got %v, want success: the flip stands whatever its records", version, err)
	}
}

func rollbackTo(t *testing.T, s *writers.Store, want string, h int) {
	t.Helper()
	if _, to, err := writers.RollbackAt(context.Background(), s, "ns", hour(h)); err != nil || to != want {
		t.Fatalf("RollbackAt: got %q, %v; want %s", to, err, want)
	}
}

// listed returns the versions in List order, the live one and the rollback target.
func listed(t *testing.T, s *writers.Store) (order []string, live, target string) {
	t.Helper()
	live, vs, err := writers.List(context.Background(), s, "ns")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		order = append(order, v.Version)
		if v.RollbackTarget {
			target = v.Version
		}
	}
	return order, live, target
}

func wantListed(t *testing.T, s *writers.Store, order []string, live, target string) {
	t.Helper()
	gotOrder, gotLive, gotTarget := listed(t, s)
	if !reflect.DeepEqual(gotOrder, order) || gotLive != live || gotTarget != target {
		t.Errorf("List: got %q, live %q, rollback target %q; want %q, live %q, target %q",
			gotOrder, gotLive, gotTarget, order, live, target)
	}
}

// The ids sort against their age: b < a < c.
const (
	vA = "churn-29400120"
	vB = "20261201T101500Z"
	vC = "churn-29401560"
)

func TestAFlipWhoseRecordsAllFailedIsSteppedBackOverInOrder(t *testing.T) {
	d, s := newMem()
	for _, v := range []string{vA, vB, vC} {
		completeAt(t, s, v, 0)
	}
	flipAt(t, s, vA, 1)
	d.failPut = func(*writers.Manifest) bool { return true }
	flipAt(t, s, vB, 2)
	d.failPut = nil
	// vB's place is unrecorded: it is taken to be after everything recorded (vC, never
	// live, comes first by when it was completed).
	wantListed(t, s, []string{vC, vA, vB}, vB, vA)

	// The next flip records vB as live from just before it, so vB stays a rollback target.
	flipAt(t, s, vC, 3)
	wantListed(t, s, []string{vA, vB, vC}, vC, vB)
	rollbackTo(t, s, vB, 4)
	rollbackTo(t, s, vA, 5)
	wantStates(t, s, map[string]writers.State{vA: "live", vB: "previous", vC: "previous"})
}

func TestACrashBetweenTheTwoRecordsLosesOnlyTheNewVersions(t *testing.T) {
	d, s := newMem()
	for _, v := range []string{vA, vB} {
		completeAt(t, s, v, 0)
	}
	flipAt(t, s, vA, 1)
	d.failPut = func(m *writers.Manifest) bool { return m.Version == vB }
	flipAt(t, s, vB, 2)
	d.failPut = nil
	wantListed(t, s, []string{vA, vB}, vB, vA)
	rollbackTo(t, s, vA, 3)
	wantStates(t, s, map[string]writers.State{vA: "live", vB: "previous"})
	var nr *writers.NoRollbackError
	if _, _, err := writers.RollbackAt(context.Background(), s, "ns", hour(4)); !errors.As(err, &nr) || nr.Newer != vB {
		t.Errorf("a second rollback: got %v, want a *NoRollbackError pointing at %s", err, vB)
	}
}

func TestVersionsWithoutRecordedTimesFallBackToTheIdOrder(t *testing.T) {
	_, s := newMem()
	for _, v := range []string{"v10", "v2", "v1"} {
		if err := s.PutManifest(context.Background(), &writers.Manifest{Namespace: "ns", Version: v, State: writers.StateWriting}); err != nil {
			t.Fatal(err)
		}
	}
	wantListed(t, s, []string{"v1", "v10", "v2"}, "", "")
}

func TestGCWithAnUnrecordedLiveFlipKeepsWhatCameAfterItsCompletion(t *testing.T) {
	d, s := newMem()
	completeAt(t, s, vA, 0)
	completeAt(t, s, vB, 1)
	completeAt(t, s, vC, 3) // never live, completed after vB was (unrecordedly) flipped
	flipAt(t, s, vA, 1)
	d.failPut = func(*writers.Manifest) bool { return true }
	flipAt(t, s, vB, 2)
	d.failPut = nil
	removed, err := writers.GC(context.Background(), s, "ns", 0, time.Hour, hour(24))
	if want := []string{vA}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Errorf("GC: got %q, %v; want %q", removed, err, want)
	}
}

func wantStates(t *testing.T, s *writers.Store, want map[string]writers.State) {
	t.Helper()
	_, vs, err := writers.List(context.Background(), s, "ns")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]writers.State{}
	for _, v := range vs {
		got[v.Version] = v.Effective
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("states: got %v, want %v", got, want)
	}
}
