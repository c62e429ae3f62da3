package writers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Releases on read (DESIGN.md, "Release strategies on read"). A namespace has, beside its
// live pointer, at most one release record: the live version, a complete candidate, a mode
// and a weight. The record is changed only by compare-and-swap on its Revision, and every
// lookup replica reads it with the live pointer, so all follow a change within a poll.
// Replicas add their per-arm counts of each judgement interval to counters in the same
// store (atomic increments), and one replica at a time judges the interval; sketches of
// distinct units (A/B) are kept per replica and merged by the reader. The store keeps
// these records and never interprets them beyond Revision.

// Release modes and states.
const (
	ModeCanary = "canary"
	ModeAB     = "ab"
	ModeShadow = "shadow"

	ReleaseRunning  = "running"
	ReleasePaused   = "paused"
	ReleasePromoted = "promoted"
	ReleaseAborted  = "aborted"
)

// ErrNoReleases: the store's driver keeps no release records.
var ErrNoReleases = errors.New("writers: this store does not keep release records")

// Release is a namespace's release record.
type Release struct {
	ID            string    `json:"id"`
	Namespace     string    `json:"namespace"`
	Mode          string    `json:"mode"`
	Live          string    `json:"live"`
	Candidate     string    `json:"candidate"`
	WeightPercent float64   `json:"weight_percent"`
	State         string    `json:"state"`
	Reason        string    `json:"reason,omitempty"`
	Salt          string    `json:"salt"`
	StartedAt     time.Time `json:"started_at"`
	UpdatedAt     time.Time `json:"updated_at"`

	// Canary: the weight steps (percent; the last is 100), the one in force, and the
	// judgement settings. Interval 0 with no Steps: a fixed weight, still judged.
	Canary CanaryConfig `json:"canary,omitzero"`
	Step   int          `json:"step"`
	// Shadow: the share of requests that also read the candidate.
	Shadow ShadowConfig `json:"shadow,omitzero"`

	// Judged is how many judgement intervals have been judged (the next to judge is
	// number Judged, counting from 0); Failures the failed ones in a row.
	Judged   int64 `json:"judged"`
	Failures int   `json:"failures"`
	// The judge's lease: the replica that judges, until when. A replica takes it by a
	// compare-and-swap of the record when it is free or expired.
	Judge      string    `json:"judge,omitempty"`
	JudgeUntil time.Time `json:"judge_until,omitzero"`

	// History is every decision, oldest first (the record keeps the newest
	// MaxReleaseHistory).
	History []Judgement `json:"history,omitempty"`

	// Revision is the compare-and-swap token: 0 for no record; each swap writes old+1.
	Revision int64 `json:"revision"`
}

// MaxReleaseHistory bounds Release.History.
const MaxReleaseHistory = 200

// CanaryConfig are a canary's steps and judgement thresholds (DESIGN.md).
type CanaryConfig struct {
	Steps               []float64 `json:"steps,omitempty"`
	Interval            Duration  `json:"interval,omitzero"`
	MinRequests         int64     `json:"min_requests,omitempty"`
	MaxNotFoundIncrease float64   `json:"max_not_found_increase,omitempty"`
	MaxErrorIncrease    float64   `json:"max_error_increase,omitempty"`
	MaxPSI              float64   `json:"max_psi,omitempty"`
	FailureLimit        int       `json:"failure_limit,omitempty"`
}

// ShadowConfig is a shadow release's sampling.
type ShadowConfig struct {
	SamplePercent float64 `json:"sample_percent,omitempty"`
}

// Judgement is one decision of a release's history: a judged interval (hold, pass, fail),
// or an action (start, step, pause, resume, promote, abort, flip, rollback).
type Judgement struct {
	At       time.Time `json:"at"`
	Interval int64     `json:"interval"`
	Outcome  string    `json:"outcome"` // hold | pass | fail | start | step | pause | resume | promote | abort | end
	Weight   float64   `json:"weight_percent"`
	Reason   string    `json:"reason,omitempty"`
	// Metric, Value and Limit name the check that decided a fail (or a hold).
	Metric string  `json:"metric,omitempty"`
	Value  float64 `json:"value,omitempty"`
	Limit  float64 `json:"limit,omitempty"`
	By     string  `json:"by,omitempty"` // the replica or user
}

// Duration is a time.Duration that reads and writes JSON as a string such as "10m".
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Releaser is a driver that keeps release records, counters and sketches. Arguments are
// checked by Store. Every method is safe for concurrent use by many processes.
type Releaser interface {
	// Release returns the namespace's record as stored (JSON), nil when there is none.
	Release(ctx context.Context, ns string) ([]byte, error)
	// SwapRelease replaces the record whose Revision is old (0: none) with data, whose
	// Revision is old+1, atomically; ErrConflict when the stored revision is not old. A
	// swap is announced as a flip is (FlipWatcher), where the driver announces flips.
	SwapRelease(ctx context.Context, ns string, old int64, data []byte) error
	// AddCounts adds counts to the counters of (release, interval), atomically per counter.
	AddCounts(ctx context.Context, ns, release string, interval int64, counts map[string]int64) error
	// Counts returns the counters of (release, interval); none is an empty map.
	Counts(ctx context.Context, ns, release string, interval int64) (map[string]int64, error)
	// PutSketch stores replica's sketch called name of release, replacing its last one.
	PutSketch(ctx context.Context, ns, release, name, replica string, data []byte) error
	// Sketches returns every replica's sketch called name of release.
	Sketches(ctx context.Context, ns, release, name string) ([][]byte, error)
}

func (s *Store) releaser() (Releaser, error) {
	r, ok := s.d.(Releaser)
	if !ok {
		return nil, ErrNoReleases
	}
	return r, nil
}

// Release returns the release record of ns, nil when there is none.
func (s *Store) Release(ctx context.Context, ns string) (*Release, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	r, err := s.releaser()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("release %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	data, err := r.Release(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", ns, err)
	}
	if data == nil {
		return nil, nil
	}
	rel := new(Release)
	if err := json.Unmarshal(data, rel); err != nil {
		return nil, fmt.Errorf("release %s: decode: %w", ns, err)
	}
	return rel, nil
}

// SwapRelease stores rel as the release record of rel.Namespace if the stored record's
// revision is still rel.Revision (0: there is none), and sets rel.Revision to the new
// revision; otherwise it returns an error wrapping ErrConflict and changes nothing.
// History is trimmed to the newest MaxReleaseHistory entries.
func (s *Store) SwapRelease(ctx context.Context, rel *Release) error {
	if rel == nil {
		return fmt.Errorf("swap release: %w: nil release", ErrInvalid)
	}
	ns := rel.Namespace
	if err := ValidateNamespace(ns); err != nil {
		return fmt.Errorf("swap release: %w", err)
	}
	if err := ValidateVersion(rel.ID); err != nil {
		return fmt.Errorf("swap release %s: id: %w", ns, err)
	}
	r, err := s.releaser()
	if err != nil {
		return fmt.Errorf("swap release %s: %w", ns, err)
	}
	old := rel.Revision
	next := *rel
	next.Revision = old + 1
	if n := len(next.History); n > MaxReleaseHistory {
		next.History = next.History[n-MaxReleaseHistory:]
	}
	data, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("swap release %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("swap release %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	if err := r.SwapRelease(ctx, ns, old, data); err != nil {
		return fmt.Errorf("swap release %s: %w", ns, err)
	}
	*rel = next
	return nil
}

// AddCounts adds counts to the counters of one judgement interval of a release.
func (s *Store) AddCounts(ctx context.Context, ns, release string, interval int64, counts map[string]int64) error {
	if err := checkReleaseArgs(ns, release); err != nil {
		return fmt.Errorf("add counts: %w", err)
	}
	if len(counts) == 0 {
		return nil
	}
	r, err := s.releaser()
	if err != nil {
		return fmt.Errorf("add counts %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("add counts %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	if err := r.AddCounts(ctx, ns, release, interval, counts); err != nil {
		return fmt.Errorf("add counts %s/%s: %w", ns, release, err)
	}
	return nil
}

// Counts returns the counters of one judgement interval of a release.
func (s *Store) Counts(ctx context.Context, ns, release string, interval int64) (map[string]int64, error) {
	if err := checkReleaseArgs(ns, release); err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	r, err := s.releaser()
	if err != nil {
		return nil, fmt.Errorf("counts %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("counts %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	c, err := r.Counts(ctx, ns, release, interval)
	if err != nil {
		return nil, fmt.Errorf("counts %s/%s: %w", ns, release, err)
	}
	if c == nil {
		c = map[string]int64{}
	}
	return c, nil
}

// PutSketch stores a replica's sketch (of distinct units, say) of a release.
func (s *Store) PutSketch(ctx context.Context, ns, release, name, replica string, data []byte) error {
	if err := checkReleaseArgs(ns, release); err != nil {
		return fmt.Errorf("put sketch: %w", err)
	}
	for _, v := range []string{name, replica} {
		if err := ValidateKey([]byte(v)); err != nil {
			return fmt.Errorf("put sketch %s/%s: %w", ns, release, err)
		}
	}
	r, err := s.releaser()
	if err != nil {
		return fmt.Errorf("put sketch %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("put sketch %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	if err := r.PutSketch(ctx, ns, release, name, replica, data); err != nil {
		return fmt.Errorf("put sketch %s/%s %s: %w", ns, release, name, err)
	}
	return nil
}

// Sketches returns every replica's sketch called name of a release.
func (s *Store) Sketches(ctx context.Context, ns, release, name string) ([][]byte, error) {
	if err := checkReleaseArgs(ns, release); err != nil {
		return nil, fmt.Errorf("sketches: %w", err)
	}
	if err := ValidateKey([]byte(name)); err != nil {
		return nil, fmt.Errorf("sketches %s/%s: %w", ns, release, err)
	}
	r, err := s.releaser()
	if err != nil {
		return nil, fmt.Errorf("sketches %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("sketches %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	out, err := r.Sketches(ctx, ns, release, name)
	if err != nil {
		return nil, fmt.Errorf("sketches %s/%s %s: %w", ns, release, name, err)
	}
	return out, nil
}

func checkReleaseArgs(ns, release string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	// Release ids name records in every store: the version alphabet.
	if err := ValidateVersion(release); err != nil {
		return fmt.Errorf("release id: %w", err)
	}
	return nil
}
