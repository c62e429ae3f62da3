package writers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Catalog operations: the version lifecycle over any Store. They use only the Store
// methods, so every store gets the same flip, rollback and gc semantics; pipeline,
// lookup and cmd call these rather than SwapLive and DeleteVersion directly.

// Version is a manifest together with the state a user sees.
type Version struct {
	*Manifest
	// Effective is EffectiveState(Manifest, live): live, previous, or the stored state.
	Effective State
}

// VersionIDLayout formats a run's start time (UTC) as a version id.
const VersionIDLayout = "20060102T150405Z"

// List returns the live version of ns and every version, oldest first.
func List(ctx context.Context, s *Store, ns string) (live string, versions []Version, err error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", nil, fmt.Errorf("list versions: %w", err)
	}
	live, err = s.Live(ctx, ns)
	if err != nil {
		return "", nil, fmt.Errorf("list versions of %s: %w", ns, err)
	}
	ms, err := s.Manifests(ctx, ns)
	if err != nil {
		return "", nil, fmt.Errorf("list versions of %s: %w", ns, err)
	}
	SortManifests(ms)
	versions = make([]Version, len(ms))
	for i, m := range ms {
		versions[i] = Version{Manifest: m, Effective: EffectiveState(m, live)}
	}
	return live, versions, nil
}

// NewVersionID returns the id for a run started at t: t.UTC() formatted 20060102T150405Z,
// or with -2, -3, ... appended if a manifest with that id exists.
func NewVersionID(ctx context.Context, s *Store, ns string, t time.Time) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("new version id: %w", err)
	}
	ms, err := s.Manifests(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("new version id for %s: %w", ns, err)
	}
	taken := make(map[string]bool, len(ms))
	for _, m := range ms {
		taken[m.Version] = true
	}
	base := t.UTC().Format(VersionIDLayout)
	id := base
	for n := 2; taken[id]; n++ {
		id = base + "-" + strconv.Itoa(n)
	}
	return id, nil
}

// Flip makes version the live version of ns, by compare-and-swap from the version that is
// live now, and returns that previous version ("" if none). Flipping to the version that is
// already live is a no-op success that returns version itself.
//
// What a caller may assume. The live pointer is the single source of truth for which
// version answers lookups; manifests only describe versions. Flip first checks that version
// is complete, then reads the live pointer and swaps it in one store-level compare-and-swap,
// and only then records LiveAt on the manifests, best effort. So:
//
//   - If Flip returns an error, the pointer is wherever it was: either the swap was never
//     attempted (the version was not complete, or a read failed) or the compare-and-swap
//     lost to a concurrent flip (errors.Is(err, ErrConflict)) and the winner's version is
//     live. The version we meant to publish is still complete and intact, rows included;
//     it was never visible to readers, and it can be flipped again later (or by hand).
//     Nothing needs cleaning up, and a retry is safe.
//   - If Flip returns nil, lookups that read the pointer afterwards see version. Readers
//     that read the pointer before keep answering from the old version, which stays
//     intact (it becomes previous), so no reader ever sees a half-written version.
//   - Flip never fails after the swap: LiveAt is bookkeeping that makes the old version
//     show as previous and makes it a rollback target. If recording it fails (a crash,
//     a store error), the flip still stands; the next Flip fills in a missing LiveAt on
//     the version it flips away from, so a version that was live is never mistaken for
//     one that never was.
//
// Manifests are not compare-and-swapped, so two processes recording LiveAt on the same
// manifest at once can lose one update; both write the same field, which makes it harmless.
func Flip(ctx context.Context, s *Store, ns, version string) (previous string, err error) {
	if err := validateNV(ns, version); err != nil {
		return "", fmt.Errorf("flip: %w", err)
	}
	live, err := s.Live(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	if err := flipFrom(ctx, s, ns, live, version); err != nil {
		return "", err
	}
	return live, nil
}

// FlipFrom is Flip with an explicit expected current live version ("" for none): it fails
// with an error wrapping ErrConflict, and changes nothing, unless expected is live. For
// callers that decided to flip based on what was live (a gate compared row counts against
// it) and must not overwrite a concurrent flip.
func FlipFrom(ctx context.Context, s *Store, ns, expected, version string) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("flip: %w", err)
	}
	return flipFrom(ctx, s, ns, expected, version)
}

func flipFrom(ctx context.Context, s *Store, ns, expected, version string) error {
	m, err := s.Manifest(ctx, ns, version)
	if err != nil {
		return fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	if m.State != StateComplete {
		return &NotCompleteError{Namespace: ns, Version: version, State: m.State}
	}
	if expected == version {
		// Already live (if the pointer agrees): no swap, no write. SwapLive still checks
		// that the pointer is what the caller expects.
		live, err := s.Live(ctx, ns)
		if err != nil {
			return fmt.Errorf("flip %s to %s: %w", ns, version, err)
		}
		if live == version {
			markLive(ctx, s, m, time.Now())
			return nil
		}
	}
	if err := s.SwapLive(ctx, ns, expected, version); err != nil {
		return fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	// Best effort from here on: the pointer is the truth and the flip has happened.
	now := time.Now()
	markLive(ctx, s, m, now)
	if expected != "" && expected != version {
		if old, err := s.Manifest(ctx, ns, expected); err == nil {
			markLive(ctx, s, old, now)
		}
	}
	return nil
}

// markLive records LiveAt on a manifest that lacks it, re-reading it first so that a
// manifest updated since it was read is not overwritten with stale fields. Errors are
// dropped: see Flip.
func markLive(ctx context.Context, s *Store, m *Manifest, now time.Time) {
	if !m.LiveAt.IsZero() {
		return
	}
	cur, err := s.Manifest(ctx, m.Namespace, m.Version)
	if err != nil || !cur.LiveAt.IsZero() {
		return
	}
	cur.LiveAt = now.UTC()
	_ = s.PutManifest(ctx, cur)
}

// Rollback flips ns back to the newest version older than the live one whose effective
// state is previous, and returns both. It fails with an error wrapping ErrNotFound when
// there is no such version, and with one wrapping ErrConflict when the live version
// changed while it ran.
func Rollback(ctx context.Context, s *Store, ns string) (from, to string, err error) {
	live, versions, err := List(ctx, s, ns)
	if err != nil {
		return "", "", fmt.Errorf("rollback: %w", err)
	}
	if live == "" {
		return "", "", fmt.Errorf("rollback %s: %w: no live version", ns, ErrNotFound)
	}
	none := &NoRollbackError{Namespace: ns, Live: live}
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		if v.Effective != StatePrevious {
			continue
		}
		if !VersionLess(v.Version, live) {
			none.Newer = v.Version
			continue
		}
		to = v.Version
		break
	}
	if to == "" {
		return "", "", none
	}
	if err := FlipFrom(ctx, s, ns, live, to); err != nil {
		return "", "", fmt.Errorf("rollback: %w", err)
	}
	return live, to, nil
}

// NotCompleteError is Flip's answer for a version that is not complete. It wraps
// ErrNotComplete.
type NotCompleteError struct {
	Namespace, Version string
	State              State
}

func (e *NotCompleteError) Error() string {
	return fmt.Sprintf("flip %s to %s: version %s is %s: only a complete version can be made live", e.Namespace, e.Version, e.Version, e.State)
}

func (e *NotCompleteError) Unwrap() error { return ErrNotComplete }

// NoRollbackError is Rollback's answer when no version older than the live one can be
// made live again. It wraps ErrNotFound.
type NoRollbackError struct {
	Namespace, Live string
	// Newer is the oldest previous version newer than the live one, if any: one that a
	// rollback left, which a flip (not a rollback) brings back.
	Newer string
}

func (e *NoRollbackError) Error() string {
	msg := fmt.Sprintf("rollback %s: no version older than the live %s to roll back to", e.Namespace, e.Live)
	if e.Newer != "" {
		msg += fmt.Sprintf("; %s is newer (a rollback left it): flip to it to go forward again", e.Newer)
	}
	return msg
}

func (e *NoRollbackError) Unwrap() error { return ErrNotFound }

// GC removes (DeleteVersion) the versions of ns that are no longer needed, oldest first,
// and returns their ids:
//
//   - previous versions older than the live one, beyond the newest keep;
//   - failed versions;
//   - complete versions that were never live and are older than the live one (superseded);
//   - writing versions whose StartedAt is before now-grace (abandoned runs).
//
// It never removes the live version, the newest keep previous versions, complete or
// previous versions newer than the live one (they may still be flipped by hand, or were
// rolled back from), or a writing version younger than grace. grace must exceed the
// longest run, or the caller must hold the namespace's writer lease, so that a slow run is
// not mistaken for an abandoned one. A version that becomes live while GC runs is skipped.
func GC(ctx context.Context, s *Store, ns string, keep int, grace time.Duration, now time.Time) (removed []string, err error) {
	if keep < 0 {
		return nil, fmt.Errorf("gc %s: %w: keep %d is negative", ns, ErrInvalid, keep)
	}
	live, versions, err := List(ctx, s, ns)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	olderThanLive := func(v Version) bool { return live != "" && VersionLess(v.Version, live) }
	cutoff := now.Add(-grace)

	var doomed []string
	kept := 0
	// Newest first, so the newest keep previous versions are the ones kept.
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		switch v.Effective {
		case StateFailed:
			doomed = append(doomed, v.Version)
		case StateWriting:
			if v.StartedAt.Before(cutoff) {
				doomed = append(doomed, v.Version)
			}
		case StateComplete:
			if olderThanLive(v) {
				doomed = append(doomed, v.Version)
			}
		case StatePrevious:
			if !olderThanLive(v) {
				continue
			}
			if kept < keep {
				kept++
				continue
			}
			doomed = append(doomed, v.Version)
		}
	}
	sort.Slice(doomed, func(i, j int) bool { return VersionLess(doomed[i], doomed[j]) })
	for _, id := range doomed {
		if err := s.DeleteVersion(ctx, ns, id); err != nil {
			if errors.Is(err, ErrConflict) {
				continue // it became live since List
			}
			return removed, fmt.Errorf("gc %s: %w", ns, err)
		}
		removed = append(removed, id)
	}
	return removed, nil
}
