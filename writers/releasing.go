package writers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Release actions: start, pause, resume, abort and promote, over any Store that keeps
// release records, each one compare-and-swap of the record (retried when another replica
// or user changed it meanwhile). A flip or rollback made while a release runs ends it
// (flipFrom records how): a promote is the flip of the candidate.

// Arms of a release.
const (
	ArmLive      = "live"
	ArmCandidate = "candidate"
)

// Buckets is the number of buckets units are hashed into; a weight of w percent gives the
// candidate the buckets below w*100.
const Buckets = 10000

// Bucket is the bucket of a unit for a release's salt, as documented for apps and SQL to
// recompute (docs/releases.md): the first 4 bytes of SHA-256(salt + ":" + unit), read as a
// big-endian uint32, modulo Buckets.
func Bucket(salt, unit string) uint32 {
	h := sha256.Sum256([]byte(salt + ":" + unit))
	return binary.BigEndian.Uint32(h[:4]) % Buckets
}

// Routing reports whether r decides which version answers: a canary or A/B test that is
// running or paused. (A shadow answers from live; an ended release routes nothing.)
func (r *Release) Routing() bool {
	return r != nil && r.Mode != ModeShadow && (r.State == ReleaseRunning || r.State == ReleasePaused)
}

// Active reports whether r is running or paused.
func (r *Release) Active() bool {
	return r != nil && (r.State == ReleaseRunning || r.State == ReleasePaused)
}

// Arm is the arm that answers unit: the candidate when r routes and the unit's bucket is
// below the weight, else live. A unit keeps its arm for the whole release (the salt is
// fixed), and raising the weight only moves units from live to candidate.
func (r *Release) Arm(unit string) string {
	if r.Routing() && float64(Bucket(r.Salt, unit)) < r.WeightPercent*Buckets/100 {
		return ArmCandidate
	}
	return ArmLive
}

// Version is the version that answers for arm.
func (r *Release) Version(arm string) string {
	if arm == ArmCandidate {
		return r.Candidate
	}
	return r.Live
}

// Canary defaults (DESIGN.md).
var DefaultCanary = CanaryConfig{
	Interval:            Duration(10 * time.Minute),
	MinRequests:         1000,
	MaxNotFoundIncrease: 0.01,
	MaxErrorIncrease:    0.005,
	MaxPSI:              0.25,
	FailureLimit:        2,
}

// DefaultShadowSamplePercent is the share of requests a shadow also reads the candidate for.
const DefaultShadowSamplePercent = 10

// ReleaseSpec asks for a release.
type ReleaseSpec struct {
	Namespace, Candidate, Mode string
	// WeightPercent for ab, and for a canary without Steps (a fixed weight, still judged).
	WeightPercent float64
	Canary        CanaryConfig // zero fields take DefaultCanary's
	Shadow        ShadowConfig
	Salt          string // default: the release id
	By            string // who starts it, for the history
}

// ErrReleaseRunning: a release is running (or paused) and must end before another starts.
var ErrReleaseRunning = errors.New("writers: a release is running")

// StartRelease starts a release of spec.Candidate against the live version of the
// namespace. The candidate must be complete and not live; no other release may be running
// or paused.
func StartRelease(ctx context.Context, s *Store, spec ReleaseSpec, now time.Time) (*Release, error) {
	ns := spec.Namespace
	if err := validateNV(ns, spec.Candidate); err != nil {
		return nil, fmt.Errorf("start release: %w", err)
	}
	r := &Release{Namespace: ns, Mode: spec.Mode, Candidate: spec.Candidate, State: ReleaseRunning,
		StartedAt: now.UTC(), UpdatedAt: now.UTC()}
	switch spec.Mode {
	case ModeCanary:
		c := spec.Canary
		c.fillDefaults()
		if len(c.Steps) > 0 {
			if err := checkSteps(c.Steps); err != nil {
				return nil, fmt.Errorf("start release of %s: %w", ns, err)
			}
			r.WeightPercent = c.Steps[0]
		} else {
			if spec.WeightPercent <= 0 || spec.WeightPercent > 100 {
				return nil, fmt.Errorf("start release of %s: %w: a canary needs steps or a weight_percent above 0 and at most 100", ns, ErrInvalid)
			}
			r.WeightPercent = spec.WeightPercent
		}
		r.Canary = c
	case ModeAB:
		if spec.WeightPercent <= 0 || spec.WeightPercent >= 100 {
			return nil, fmt.Errorf("start release of %s: %w: an A/B test needs a weight_percent above 0 and below 100", ns, ErrInvalid)
		}
		r.WeightPercent = spec.WeightPercent
	case ModeShadow:
		r.Shadow = spec.Shadow
		if r.Shadow.SamplePercent == 0 {
			r.Shadow.SamplePercent = DefaultShadowSamplePercent
		}
		if r.Shadow.SamplePercent < 0 || r.Shadow.SamplePercent > 100 {
			return nil, fmt.Errorf("start release of %s: %w: sample_percent %v: use 0 to 100", ns, ErrInvalid, r.Shadow.SamplePercent)
		}
	default:
		return nil, fmt.Errorf("start release of %s: %w: mode %q: use canary, ab or shadow", ns, ErrInvalid, spec.Mode)
	}
	live, err := s.Live(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("start release of %s: %w", ns, err)
	}
	if live == "" {
		return nil, fmt.Errorf("start release of %s: %w: no live version to release against (flip one first)", ns, ErrNotFound)
	}
	if live == spec.Candidate {
		return nil, fmt.Errorf("start release of %s: %w: %s is already live", ns, ErrInvalid, live)
	}
	m, err := s.Manifest(ctx, ns, spec.Candidate)
	if err != nil {
		return nil, fmt.Errorf("start release of %s: candidate: %w", ns, err)
	}
	if m.State != StateComplete {
		return nil, fmt.Errorf("start release of %s: candidate %s is %s: %w", ns, spec.Candidate, m.State, ErrNotComplete)
	}
	cur, err := s.Release(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("start release of %s: %w", ns, err)
	}
	if cur.Active() {
		return nil, fmt.Errorf("start release of %s: %w: %s of %s is %s; promote or abort it first", ns, ErrReleaseRunning, cur.ID, cur.Candidate, cur.State)
	}
	r.Live = live
	// Unique per start, so that a release restarted within the second never adds to the
	// counters of the one before it.
	r.ID = now.UTC().Format(VersionIDLayout) + "-" + randomID()
	r.Salt = spec.Salt
	if r.Salt == "" {
		r.Salt = r.ID
	}
	if cur != nil {
		r.Revision = cur.Revision
	}
	r.History = []Judgement{{At: r.StartedAt, Outcome: "start", Weight: r.WeightPercent, By: spec.By,
		Reason: fmt.Sprintf("%s of %s against %s", r.Mode, r.Candidate, r.Live)}}
	if err := s.SwapRelease(ctx, r); err != nil {
		return nil, fmt.Errorf("start release of %s: %w", ns, err)
	}
	return r, nil
}

func (c *CanaryConfig) fillDefaults() {
	d := DefaultCanary
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.MinRequests <= 0 {
		c.MinRequests = d.MinRequests
	}
	if c.MaxNotFoundIncrease <= 0 {
		c.MaxNotFoundIncrease = d.MaxNotFoundIncrease
	}
	if c.MaxErrorIncrease <= 0 {
		c.MaxErrorIncrease = d.MaxErrorIncrease
	}
	if c.MaxPSI <= 0 {
		c.MaxPSI = d.MaxPSI
	}
	if c.FailureLimit <= 0 {
		c.FailureLimit = d.FailureLimit
	}
}

func checkSteps(steps []float64) error {
	for i, w := range steps {
		if w <= 0 || w > 100 || (i > 0 && w <= steps[i-1]) {
			return fmt.Errorf("%w: steps %v: use rising weights above 0, ending at 100, e.g. 1,10,50,100", ErrInvalid, steps)
		}
	}
	if steps[len(steps)-1] != 100 {
		return fmt.Errorf("%w: steps %v: the last step must be 100 (which flips the candidate live)", ErrInvalid, steps)
	}
	return nil
}

// randomID is 6 random hex digits.
func randomID() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return fmt.Sprintf("%x", b)
}

// UpdateRelease applies change to the namespace's release record and swaps it in,
// retrying with a fresh read when another writer changed it meanwhile. change may return
// an error to give up (returned as is). The record's UpdatedAt is set to now.
func UpdateRelease(ctx context.Context, s *Store, ns string, now time.Time, change func(r *Release) error) (*Release, error) {
	for attempt := 0; ; attempt++ {
		r, err := s.Release(ctx, ns)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("release of %s: %w: none was started", ns, ErrNotFound)
		}
		if err := change(r); err != nil {
			return r, err
		}
		r.UpdatedAt = now.UTC()
		err = s.SwapRelease(ctx, r)
		if err == nil || !errors.Is(err, ErrConflict) || attempt >= 20 {
			return r, err
		}
	}
}

// PauseRelease holds a running release where it is: its weight stays, and no judgement
// steps or aborts it until it is resumed.
func PauseRelease(ctx context.Context, s *Store, ns, by string, now time.Time) (*Release, error) {
	return transition(ctx, s, ns, by, now, "pause", []string{ReleaseRunning}, func(r *Release) { r.State = ReleasePaused })
}

// ResumeRelease resumes a paused release.
func ResumeRelease(ctx context.Context, s *Store, ns, by string, now time.Time) (*Release, error) {
	return transition(ctx, s, ns, by, now, "resume", []string{ReleasePaused}, func(r *Release) {
		r.State, r.Failures = ReleaseRunning, 0
	})
}

// AbortRelease ends a release with the candidate at weight 0: every unit answers from
// live again. The live pointer is not touched.
func AbortRelease(ctx context.Context, s *Store, ns, by, reason string, now time.Time) (*Release, error) {
	if reason == "" {
		reason = "aborted by " + by
	}
	return transition(ctx, s, ns, by, now, "abort", []string{ReleaseRunning, ReleasePaused}, func(r *Release) {
		r.State, r.WeightPercent, r.Reason = ReleaseAborted, 0, reason
	})
}

// transition changes an active release's state, recording it in the history.
func transition(ctx context.Context, s *Store, ns, by string, now time.Time, outcome string, from []string, apply func(*Release)) (*Release, error) {
	r, err := UpdateRelease(ctx, s, ns, now, func(r *Release) error {
		if !slices.Contains(from, r.State) {
			return fmt.Errorf("%s release %s of %s: %w: it is %s", outcome, r.ID, ns, ErrConflict, r.State)
		}
		apply(r)
		r.History = append(r.History, Judgement{At: now.UTC(), Outcome: outcome, Weight: r.WeightPercent, Reason: r.Reason, By: by})
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("%s release of %s: %w", outcome, ns, err)
	}
	return r, nil
}

// PromoteRelease flips the candidate of the running (or paused) release live, which
// ends the release as promoted (see endRelease).
func PromoteRelease(ctx context.Context, s *Store, ns, by string, now time.Time) (*Release, error) {
	r, err := s.Release(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("promote release of %s: %w", ns, err)
	}
	if !r.Active() {
		if r == nil {
			return nil, fmt.Errorf("promote release of %s: %w: none was started", ns, ErrNotFound)
		}
		return r, fmt.Errorf("promote release %s of %s: %w: it is %s", r.ID, ns, ErrConflict, r.State)
	}
	if err := flipFrom(ctx, s, ns, r.Live, r.Candidate, now, false); err != nil {
		return r, fmt.Errorf("promote release %s of %s: %w", r.ID, ns, err)
	}
	return s.Release(ctx, ns)
}

// endRelease ends the namespace's active release after a flip to live: promoted when the
// candidate went live, else aborted (a flip or rollback by hand overrides a release).
// Best effort, like the rest of a flip's bookkeeping: the pointer is the truth, and a
// release whose live version is no longer live routes nothing (readers check Live).
func endRelease(ctx context.Context, s *Store, ns, live string, now time.Time, rollback bool) {
	if _, ok := s.d.(Releaser); !ok {
		return
	}
	UpdateRelease(ctx, s, ns, now, func(r *Release) error {
		if !r.Active() {
			return errNothingToDo
		}
		j := Judgement{At: now.UTC(), Outcome: "end"}
		switch {
		case live == r.Candidate:
			r.State, r.WeightPercent = ReleasePromoted, 100
			j.Outcome, j.Weight, j.Reason = "promote", 100, "the candidate "+live+" is live"
		case rollback:
			r.State, r.WeightPercent = ReleaseAborted, 0
			r.Reason = "a rollback made " + live + " live"
		default:
			r.State, r.WeightPercent = ReleaseAborted, 0
			r.Reason = "a flip made " + live + " live"
		}
		if j.Reason == "" {
			j.Reason = r.Reason
		}
		r.History = append(r.History, j)
		return nil
	})
}

var errNothingToDo = errors.New("nothing to do")

// The judge's actions. The judge decides from a record it read a moment before; an admin
// may have paused (or ended) the release meanwhile, and a paused release must not be
// aborted or promoted by a judgement. These act only while the release id is running.

// AbortRunningRelease is AbortRelease for the judge: it aborts release id only while it
// is running, else returns an error wrapping ErrConflict and changes nothing.
func AbortRunningRelease(ctx context.Context, s *Store, ns, id, by, reason string, now time.Time) (*Release, error) {
	r, err := UpdateRelease(ctx, s, ns, now, func(r *Release) error {
		if r.ID != id || r.State != ReleaseRunning {
			return fmt.Errorf("abort release %s of %s: %w: it is %s %s", id, ns, ErrConflict, r.ID, r.State)
		}
		r.State, r.WeightPercent, r.Reason = ReleaseAborted, 0, reason
		r.History = append(r.History, Judgement{At: now.UTC(), Outcome: "abort", Weight: 0, Reason: reason, By: by})
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("abort release of %s: %w", ns, err)
	}
	return r, nil
}

// PromoteRunningRelease is PromoteRelease for the judge: it flips the candidate of release
// id only while that release is running. (A pause in the moment between its read and the
// flip is not seen: the flip then ends the release as promoted, as an admin's would.)
func PromoteRunningRelease(ctx context.Context, s *Store, ns, id, by string, now time.Time) (*Release, error) {
	r, err := s.Release(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("promote release of %s: %w", ns, err)
	}
	if r == nil || r.ID != id || r.State != ReleaseRunning {
		return r, fmt.Errorf("promote release %s of %s: %w: it is no longer running", id, ns, ErrConflict)
	}
	return PromoteRelease(ctx, s, ns, by, now)
}
