package writers_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// TestBucketIsTheDocumentedHash: the bucket is recomputed here from its definition in
// docs/releases.md, for the test vectors that page lists.
func TestBucketIsTheDocumentedHash(t *testing.T) {
	independent := func(salt, unit string) uint32 {
		sum := sha256.Sum256([]byte(salt + ":" + unit))
		return binary.BigEndian.Uint32(sum[0:4]) % 10000
	}
	for _, v := range []struct{ salt, unit string }{
		{"20261201T020000Z-abc123", "u000000042"},
		{"spring-promo", "user-7"},
		{"", ""},
		{"salt", "ünïcode"},
	} {
		if got, want := writers.Bucket(v.salt, v.unit), independent(v.salt, v.unit); got != want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", v.salt, v.unit, got, want)
		}
	}
	// The vectors printed in docs/releases.md.
	for _, v := range []struct {
		salt, unit string
		want       uint32
	}{
		{"demo-release", "u000000001", independent("demo-release", "u000000001")},
	} {
		if got := writers.Bucket(v.salt, v.unit); got != v.want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", v.salt, v.unit, got, v.want)
		}
	}
}

func TestArmsAreStickyAndNested(t *testing.T) {
	r := &writers.Release{Mode: writers.ModeCanary, State: writers.ReleaseRunning, Salt: "s", WeightPercent: 10}
	candidates := map[string]bool{}
	for i := range 20000 {
		u := fmt.Sprint("unit-", i)
		if r.Arm(u) == writers.ArmCandidate {
			candidates[u] = true
		}
	}
	if n := len(candidates); n < 1800 || n > 2200 {
		t.Errorf("10%% of 20000 units: got %d on the candidate, want 2000 ± 200", n)
	}
	r.WeightPercent = 50
	for u := range candidates {
		if r.Arm(u) != writers.ArmCandidate {
			t.Fatalf("unit %s left the candidate when the weight rose to 50%%", u)
		}
	}
	r.State = writers.ReleaseAborted
	for u := range candidates {
		if r.Arm(u) != writers.ArmLive {
			t.Fatalf("unit %s on the candidate after the abort", u)
		}
	}
	shadow := &writers.Release{Mode: writers.ModeShadow, State: writers.ReleaseRunning, Salt: "s", WeightPercent: 100}
	if shadow.Arm("x") != writers.ArmLive {
		t.Error("a shadow routed a unit to the candidate")
	}
}

// releaseStore is a store with v1 live and v2 complete, over a fake driver that keeps
// release records in memory.
func TestReleaseLifecycle(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	publishMem(t, s, "ns", "v1", true)
	publishMem(t, s, "ns", "v2", false)

	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v1", Mode: writers.ModeCanary, WeightPercent: 5}, now); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("a release of the live version: %v, want ErrInvalid", err)
	}
	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v2", Mode: writers.ModeCanary, Canary: writers.CanaryConfig{Steps: []float64{10, 50}}}, now); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("steps not ending at 100: %v, want ErrInvalid", err)
	}
	r, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v2", Mode: writers.ModeCanary, Canary: writers.CanaryConfig{Steps: []float64{10, 50, 100}}, By: "test"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.WeightPercent != 10 || r.Live != "v1" || r.Salt != r.ID || r.Canary.MinRequests != 1000 || r.State != writers.ReleaseRunning {
		t.Errorf("started: %+v", r)
	}
	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v2", Mode: writers.ModeAB, WeightPercent: 50}, now); !errors.Is(err, writers.ErrReleaseRunning) {
		t.Errorf("a second release while one runs: %v, want ErrReleaseRunning", err)
	}
	if r, err = writers.PauseRelease(ctx, s, "ns", "test", now); err != nil || r.State != writers.ReleasePaused {
		t.Fatalf("pause: %+v, %v", r, err)
	}
	if _, err = writers.PauseRelease(ctx, s, "ns", "test", now); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("pausing a paused release: %v, want ErrConflict", err)
	}
	if r, err = writers.ResumeRelease(ctx, s, "ns", "test", now); err != nil || r.State != writers.ReleaseRunning {
		t.Fatalf("resume: %+v, %v", r, err)
	}
	if r, err = writers.PromoteRelease(ctx, s, "ns", "test", now); err != nil || r.State != writers.ReleasePromoted || r.WeightPercent != 100 {
		t.Fatalf("promote: %+v, %v", r, err)
	}
	if live, _ := s.Live(ctx, "ns"); live != "v2" {
		t.Errorf("live after promote = %s, want v2", live)
	}
	var outcomes []string
	for _, j := range r.History {
		outcomes = append(outcomes, j.Outcome)
	}
	if fmt.Sprint(outcomes) != "[start pause resume promote]" {
		t.Errorf("history = %v, want start pause resume promote", outcomes)
	}

	// A new release, then a rollback by hand ends it as aborted.
	publishMem(t, s, "ns", "v3", false)
	if _, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v3", Mode: writers.ModeAB, WeightPercent: 50}, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := writers.Rollback(ctx, s, "ns"); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Release(ctx, "ns"); r.State != writers.ReleaseAborted || r.WeightPercent != 0 || r.Reason == "" {
		t.Errorf("after a rollback during an A/B test: %+v, want aborted at weight 0 with a reason", r)
	}
	if _, err := writers.AbortRelease(ctx, s, "ns", "test", "", now); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("aborting an ended release: %v, want ErrConflict", err)
	}
}

// relDriver is an in-memory driver of the catalog and release records, for the release
// actions' unit tests (rows are not needed).
type relDriver struct {
	writers.Driver
	manifests map[string]*writers.Manifest
	live      map[string]string
	rel       map[string][]byte
	rev       map[string]int64
}

func memStore(t *testing.T) *writers.Store {
	d := &relDriver{manifests: map[string]*writers.Manifest{}, live: map[string]string{}, rel: map[string][]byte{}, rev: map[string]int64{}}
	u, _ := writers.ParseURL("pebble:/mem")
	return writers.NewStore(d, u)
}

func (d *relDriver) PutManifest(_ context.Context, m *writers.Manifest, _ []byte) error {
	c := *m
	d.manifests[m.Namespace+"/"+m.Version] = &c
	return nil
}

func (d *relDriver) Manifest(_ context.Context, ns, v string) (*writers.Manifest, error) {
	m, ok := d.manifests[ns+"/"+v]
	if !ok {
		return nil, writers.ErrNotFound
	}
	c := *m
	return &c, nil
}

func (d *relDriver) Manifests(_ context.Context, ns string) ([]*writers.Manifest, error) {
	var out []*writers.Manifest
	for _, m := range d.manifests {
		if m.Namespace == ns {
			c := *m
			out = append(out, &c)
		}
	}
	return out, nil
}

func (d *relDriver) Live(_ context.Context, ns string) (string, error) { return d.live[ns], nil }

func (d *relDriver) SwapLive(_ context.Context, ns, old, next string) error {
	if d.live[ns] != old {
		return writers.ErrConflict
	}
	if m := d.manifests[ns+"/"+next]; m == nil || m.State != writers.StateComplete {
		return writers.ErrNotComplete
	}
	d.live[ns] = next
	return nil
}

func (d *relDriver) Release(_ context.Context, ns string) ([]byte, error) { return d.rel[ns], nil }

func (d *relDriver) SwapRelease(_ context.Context, ns string, old int64, data []byte) error {
	if d.rev[ns] != old {
		return writers.ErrConflict
	}
	d.rel[ns], d.rev[ns] = data, old+1
	return nil
}

func (d *relDriver) AddCounts(context.Context, string, string, int64, map[string]int64) error {
	return nil
}
func (d *relDriver) Counts(context.Context, string, string, int64) (map[string]int64, error) {
	return nil, nil
}
func (d *relDriver) PutSketch(context.Context, string, string, string, string, []byte) error {
	return nil
}
func (d *relDriver) Sketches(context.Context, string, string, string) ([][]byte, error) {
	return nil, nil
}

func publishMem(t *testing.T, s *writers.Store, ns, v string, flip bool) {
	t.Helper()
	ctx := context.Background()
	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: ns, Version: v, State: writers.StateComplete, CompletedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if flip {
		if _, err := writers.Flip(ctx, s, ns, v); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTheJudgeNeverOverridesAPause: a judgement read the record while it ran; an admin
// paused the release before the judge acted. The judge's abort and promote refuse, and
// the release stays paused with the live pointer where it was.
func TestTheJudgeNeverOverridesAPause(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	publishMem(t, s, "ns", "v1", true)
	publishMem(t, s, "ns", "v2", false)
	r, err := writers.StartRelease(ctx, s, writers.ReleaseSpec{Namespace: "ns", Candidate: "v2", Mode: writers.ModeCanary, WeightPercent: 10}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writers.PauseRelease(ctx, s, "ns", "admin", now); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.AbortRunningRelease(ctx, s, "ns", r.ID, "judge", "psi too high", now); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("the judge's abort of a paused release: %v, want ErrConflict", err)
	}
	if _, err := writers.PromoteRunningRelease(ctx, s, "ns", r.ID, "judge", now); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("the judge's promote of a paused release: %v, want ErrConflict", err)
	}
	if cur, _ := s.Release(ctx, "ns"); cur.State != writers.ReleasePaused || cur.WeightPercent != 10 {
		t.Errorf("after the judge's attempts: %+v, want paused at 10%%", cur)
	}
	if live, _ := s.Live(ctx, "ns"); live != "v1" {
		t.Errorf("live = %s, want v1 untouched", live)
	}
	if _, err := writers.ResumeRelease(ctx, s, "ns", "admin", now); err != nil {
		t.Fatal(err)
	}
	if cur, err := writers.AbortRunningRelease(ctx, s, "ns", r.ID, "judge", "psi too high", now); err != nil || cur.State != writers.ReleaseAborted {
		t.Errorf("the judge's abort of the running release: %+v, %v; want aborted", cur, err)
	}
}
