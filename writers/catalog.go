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
//
// They order versions by their flip history, which Flip records on the manifests, never
// by id: an id from NewVersionID sorts by start time, but one given with --version
// (churn-29400120) or named after a Kubernetes Job created by hand (churn-manual-fix)
// says nothing about when the version went live, and nor does any id about a version
// flipped by hand.

// Version is a manifest together with the state a user sees.
type Version struct {
	*Manifest
	// Effective is EffectiveState(Manifest, live): live, previous, or the stored state.
	Effective State
	// RollbackTarget: Rollback would make this version live now. At most one version of
	// a listing has it.
	RollbackTarget bool
	// LeftByRollback: a rollback took this previous version off live and no flip has made
	// it live since, so Rollback does not return to it; Flip does.
	LeftByRollback bool
}

// VersionIDLayout formats a run's start time (UTC) as a version id.
const VersionIDLayout = "20060102T150405Z"

// List returns the live version of ns and every version in history order, oldest first,
// with the version Rollback would choose marked (Version.RollbackTarget).
//
// History order is the order in which versions were flipped live (Manifest.FlippedAt, or
// LiveAt for a manifest written before FlippedAt existed). A rollback moves nothing in it
// but steps back through it, so after a rollback the live version is followed by the one
// it left. A version that was never live takes its place by when it was completed (or,
// if unfinished, started). Ties, and versions without recorded times, fall back to the id
// order (VersionLess).
func List(ctx context.Context, s *Store, ns string) (live string, versions []Version, err error) {
	h, err := readHistory(ctx, s, ns)
	if err != nil {
		return "", nil, err
	}
	return h.live, h.versions, nil
}

// history is a namespace's versions in history order: what List shows, and what
// Rollback and GC decide on.
type history struct {
	live string
	// liveAt is the live version's place in the history: when it was last flipped live.
	// If that went unrecorded (see Flip), it is just after the latest time the other
	// manifests allow: the live version was completed before it was made live, and every
	// other version last left live no later than that.
	liveAt   time.Time
	versions []Version
	// candidates are the indexes in versions of the versions Rollback may return to, in
	// the order successive rollbacks reach them: candidates[0] is the target.
	candidates []int
}

func readHistory(ctx context.Context, s *Store, ns string) (*history, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	live, err := s.Live(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", ns, err)
	}
	ms, err := s.Manifests(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", ns, err)
	}
	return newHistory(live, ms), nil
}

// newHistory orders ms (every manifest of one namespace, live the live version) by
// history and finds the rollback candidates.
func newHistory(live string, ms []*Manifest) *history {
	h := &history{live: live}
	if live != "" {
		var lm *Manifest
		for _, m := range ms {
			if m.Version == live {
				lm = m
			}
		}
		if lm != nil {
			h.liveAt = flippedAt(lm)
		}
		if h.liveAt.IsZero() {
			for _, m := range ms {
				if m.Version != live && !flippedAt(m).IsZero() {
					h.liveAt = latest(h.liveAt, leftAt(m))
				}
			}
			if lm != nil {
				h.liveAt = latest(h.liveAt, madeAt(lm))
			}
			if !h.liveAt.IsZero() {
				h.liveAt = h.liveAt.Add(time.Nanosecond)
			}
		}
	}
	sort.SliceStable(ms, func(i, j int) bool { return h.before(ms[i], ms[j]) })

	h.versions = make([]Version, len(ms))
	for i, m := range ms {
		v := Version{Manifest: m, Effective: EffectiveState(m, live)}
		v.LeftByRollback = v.Effective == StatePrevious && leftByRollback(m)
		h.versions[i] = v
		if v.Effective == StatePrevious && !v.LeftByRollback && h.beforeLive(m) {
			h.candidates = append(h.candidates, i)
		}
	}
	// The version live just before the live one is the candidate that left live last.
	// (Candidates' last times live do not overlap, so this is also the order they were
	// flipped live in; when a departure went unrecorded, the flip time stands in for it.)
	sort.SliceStable(h.candidates, func(i, j int) bool {
		a, b := h.versions[h.candidates[i]].Manifest, h.versions[h.candidates[j]].Manifest
		if la, lb := leftAt(a), leftAt(b); !la.Equal(lb) {
			return la.After(lb)
		}
		if fa, fb := flippedAt(a), flippedAt(b); !fa.Equal(fb) {
			return fa.After(fb)
		}
		return VersionLess(b.Version, a.Version)
	})
	if len(h.candidates) > 0 {
		h.versions[h.candidates[0]].RollbackTarget = true
	}
	return h
}

// place is m's place in the history: when it was last flipped live, or, for a version
// never live, when it was made.
func (h *history) place(m *Manifest) time.Time {
	switch {
	case m.Version == h.live:
		return h.liveAt
	case !flippedAt(m).IsZero():
		return flippedAt(m)
	default:
		return madeAt(m)
	}
}

// before reports whether a comes before b in history order.
func (h *history) before(a, b *Manifest) bool {
	return placeLess(h.place(a), a.Version, h.place(b), b.Version)
}

// beforeLive reports whether m comes before the live version in history order: false
// when nothing is live.
func (h *history) beforeLive(m *Manifest) bool {
	return h.live != "" && m.Version != h.live && placeLess(h.place(m), m.Version, h.liveAt, h.live)
}

func placeLess(at time.Time, a string, bt time.Time, b string) bool {
	if !at.Equal(bt) {
		return at.Before(bt)
	}
	return VersionLess(a, b)
}

// flippedAt is when m was last flipped live: FlippedAt, or LiveAt in a manifest written
// before FlippedAt existed; zero if never.
func flippedAt(m *Manifest) time.Time {
	if !m.FlippedAt.IsZero() {
		return m.FlippedAt
	}
	return m.LiveAt
}

// leftAt is when m last left live, as far as recorded: when a departure went unrecorded,
// its flip time stands in for it.
func leftAt(m *Manifest) time.Time { return latest(flippedAt(m), m.LeftLiveAt, m.RolledBackAt) }

// leftByRollback reports whether the latest event in m's history is a rollback taking it
// off live.
func leftByRollback(m *Manifest) bool {
	return !m.RolledBackAt.IsZero() && !m.RolledBackAt.Before(latest(flippedAt(m), m.LeftLiveAt))
}

// madeAt is when a version was completed, or started if it never was.
func madeAt(m *Manifest) time.Time {
	if !m.CompletedAt.IsZero() {
		return m.CompletedAt
	}
	return m.StartedAt
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
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
// already live is a no-op success that returns version itself. It records the flip as
// made at time.Now(); FlipAt takes the time.
//
// What a caller may assume. The live pointer is the single source of truth for which
// version answers lookups; manifests only describe versions, and the flip history they
// record (Manifest.LiveAt, FlippedAt, LeftLiveAt, RolledBackAt) is bookkeeping that orders
// List, Rollback and GC. Flip first checks that version is complete, then reads the live
// pointer and swaps it in one store-level compare-and-swap, and only then records the
// history, best effort: on the version it replaced, when it left live (and, for a
// rollback, that a rollback took it off), then on version, when a flip (not a rollback,
// which steps back to the place version already has) made it live. So:
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
//   - Flip never fails after the swap. If recording fails (a crash, a store error), the
//     flip still stands and the history misses a step. The version replaced is written
//     first, so a crash loses the new version's flip time, which the catalog survives:
//     the live version's place is then taken to be just after everything else recorded,
//     and the next Flip away from it records it as live from just before it left, so a
//     version that was live is never mistaken for one that never was and stays a
//     rollback target. A lost record of a rollback (on the version it left) can let a
//     later rollback return to that version.
//
// Each recorded time is later than every time already recorded on the two versions, so
// the history follows the pointer even when the clocks of the processes that flip
// disagree. Manifests are not compare-and-swapped: two processes recording successive
// flips at once can lose one update on the version between them (each re-reads a
// manifest just before writing it, which narrows the window), and the catalog then
// orders that version by the times that remain.
func Flip(ctx context.Context, s *Store, ns, version string) (previous string, err error) {
	return FlipAt(ctx, s, ns, version, time.Now())
}

// FlipAt is Flip recording the flip as made at now (the caller's clock, as GC takes one).
func FlipAt(ctx context.Context, s *Store, ns, version string, now time.Time) (previous string, err error) {
	if err := validateNV(ns, version); err != nil {
		return "", fmt.Errorf("flip: %w", err)
	}
	live, err := s.Live(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	if err := flipFrom(ctx, s, ns, live, version, now, false); err != nil {
		return "", err
	}
	return live, nil
}

// FlipFrom is Flip with an explicit expected current live version ("" for none): it fails
// with an error wrapping ErrConflict, and changes nothing, unless expected is live. For
// callers that decided to flip based on what was live (a gate compared row counts against
// it) and must not overwrite a concurrent flip.
func FlipFrom(ctx context.Context, s *Store, ns, expected, version string) error {
	return FlipFromAt(ctx, s, ns, expected, version, time.Now())
}

// FlipFromAt is FlipFrom recording the flip as made at now.
func FlipFromAt(ctx context.Context, s *Store, ns, expected, version string, now time.Time) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("flip: %w", err)
	}
	return flipFrom(ctx, s, ns, expected, version, now, false)
}

// flipFrom swaps the live pointer of ns from expected to version and records the flip;
// rollback says that it is Rollback's, which steps back in the history.
func flipFrom(ctx context.Context, s *Store, ns, expected, version string, now time.Time, rollback bool) error {
	m, err := s.Manifest(ctx, ns, version)
	if err != nil {
		return fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	if m.State != StateComplete {
		return &NotCompleteError{Namespace: ns, Version: version, State: m.State}
	}
	if m.Incremental() {
		// Every level of its chain must still be there to answer.
		if _, err := ResolveChain(ctx, s, ns, m); err != nil {
			return fmt.Errorf("flip %s to %s: %w", ns, version, err)
		}
	}
	if expected == version {
		// Already live (if the pointer agrees): no swap, and no history but a missing
		// LiveAt. SwapLive still checks that the pointer is what the caller expects.
		live, err := s.Live(ctx, ns)
		if err != nil {
			return fmt.Errorf("flip %s to %s: %w", ns, version, err)
		}
		if live == version {
			if m.LiveAt.IsZero() {
				if cur, err := s.Manifest(ctx, ns, version); err == nil && cur.LiveAt.IsZero() {
					cur.LiveAt = now.UTC()
					_ = s.PutManifest(ctx, cur)
				}
			}
			return nil
		}
	}
	if err := s.SwapLive(ctx, ns, expected, version); err != nil {
		return fmt.Errorf("flip %s to %s: %w", ns, version, err)
	}
	// Best effort from here on: the pointer is the truth and the flip has happened.
	recordFlip(ctx, s, ns, expected, version, now, rollback)
	endRelease(ctx, s, ns, version, now, rollback)
	return nil
}

// recordFlip records the history of a swap of the live pointer of ns from old ("" for
// none) to next at now, re-reading both manifests so that fields updated since they were
// read are not overwritten. Errors are dropped: see Flip.
func recordFlip(ctx context.Context, s *Store, ns, old, next string, now time.Time, rollback bool) {
	var prev, cur *Manifest
	if old != "" {
		if m, err := s.Manifest(ctx, ns, old); err == nil {
			prev = m
		}
	}
	if m, err := s.Manifest(ctx, ns, next); err == nil {
		cur = m
	}
	at := now.UTC()
	for _, m := range []*Manifest{prev, cur} {
		if m == nil {
			continue
		}
		if floor := latest(m.LiveAt, m.FlippedAt, m.LeftLiveAt, m.RolledBackAt); !at.After(floor) {
			at = floor.Add(time.Millisecond)
		}
	}
	if prev != nil {
		if flippedAt(prev).IsZero() {
			// Its own flip went unrecorded: record it as live from just before this one.
			prev.LiveAt = at
			at = at.Add(time.Millisecond)
		}
		prev.LeftLiveAt = at
		if rollback {
			prev.RolledBackAt = at
		}
		_ = s.PutManifest(ctx, prev)
	}
	if cur != nil {
		changed := cur.LiveAt.IsZero()
		if changed {
			cur.LiveAt = at
		}
		if !rollback {
			// A rollback steps back to a version's existing place in the history.
			cur.FlippedAt = at
			changed = true
		}
		if changed {
			_ = s.PutManifest(ctx, cur)
		}
	}
}

// Rollback flips ns back one step in its flip history, to the version that was live
// before the live one, and returns both. It records the rollback as made at time.Now();
// RollbackAt takes the time.
//
// The version it returns to is, of the previous versions (complete and once live) that
// were flipped live before the live one was and that no rollback has taken off live since
// they were last flipped live, the one that left live last. So a rollback never returns to
// the version it just left, nor to any a rollback left on the way here: repeated rollbacks
// walk back through older versions one at a time, and Flip (not Rollback) makes a version
// that a rollback left live again, as a new step in the history. Version ids play no
// part. List marks the version Rollback would choose now (Version.RollbackTarget).
//
// It fails with a *NoRollbackError (wrapping ErrNotFound) when there is no such version,
// with an error wrapping ErrNotFound when nothing is live, and with one wrapping
// ErrConflict when the live version changed while it ran.
func Rollback(ctx context.Context, s *Store, ns string) (from, to string, err error) {
	return RollbackAt(ctx, s, ns, time.Now())
}

// RollbackAt is Rollback recording the rollback as made at now.
func RollbackAt(ctx context.Context, s *Store, ns string, now time.Time) (from, to string, err error) {
	h, err := readHistory(ctx, s, ns)
	if err != nil {
		return "", "", fmt.Errorf("rollback: %w", err)
	}
	if h.live == "" {
		return "", "", fmt.Errorf("rollback %s: %w: no live version", ns, ErrNotFound)
	}
	if len(h.candidates) == 0 {
		none := &NoRollbackError{Namespace: ns, Live: h.live}
		var left time.Time
		for _, v := range h.versions {
			if v.Effective == StatePrevious && v.Version != h.live && !h.beforeLive(v.Manifest) && leftAt(v.Manifest).After(left) {
				none.Newer, left = v.Version, leftAt(v.Manifest)
			}
		}
		return "", "", none
	}
	to = h.versions[h.candidates[0]].Version
	if err := flipFrom(ctx, s, ns, h.live, to, now, true); err != nil {
		return "", "", fmt.Errorf("rollback: %w", err)
	}
	return h.live, to, nil
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

// NoRollbackError is Rollback's answer when no version that was live before the live one
// can be made live again. It wraps ErrNotFound.
type NoRollbackError struct {
	Namespace, Live string
	// Newer is, of the previous versions after the live one in the history, the one that
	// left live last, if any: the one the latest rollback left, which a flip (not a
	// rollback) brings back.
	Newer string
}

func (e *NoRollbackError) Error() string {
	msg := fmt.Sprintf("rollback %s: no version was live before the live %s to roll back to", e.Namespace, e.Live)
	if e.Newer != "" {
		msg += fmt.Sprintf("; %s is newer (a rollback left it): flip to it to go forward again", e.Newer)
	}
	return msg
}

func (e *NoRollbackError) Unwrap() error { return ErrNotFound }

// GC removes (DeleteVersion) the versions of ns that are no longer needed, oldest first in
// history order (see List), and returns their ids. It keeps:
//
//   - the live version;
//   - the keep previous versions that keep successive rollbacks would return to;
//   - previous versions after the live one in the history: ones that rollbacks left on
//     the way to it, which a flip may bring back;
//   - complete versions that were never live and were completed (or started) after the
//     live version was flipped live: they may still be flipped by hand;
//   - writing versions whose StartedAt is not before now-grace;
//   - with nothing live, every complete and previous version;
//   - every version that one kept builds on, down its chain (see ResolveChain), so a kept
//     incremental version never loses its base; an abandoned chain goes whole.
//
// It removes every other version that is not retired, whatever its id: failed versions,
// abandoned runs (writing, started before now-grace), previous versions beyond keep or
// that a rollback left before the live version was flipped live, and complete versions
// that the live one superseded. grace must exceed the longest run, or the caller must hold
// the namespace's writer lease, so that a slow run is not mistaken for an abandoned one. A
// version that becomes live while GC runs is skipped.
func GC(ctx context.Context, s *Store, ns string, keep int, grace time.Duration, now time.Time) (removed []string, err error) {
	if keep < 0 {
		return nil, fmt.Errorf("gc %s: %w: keep %d is negative", ns, ErrInvalid, keep)
	}
	h, err := readHistory(ctx, s, ns)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	cutoff := now.Add(-grace)
	rank := make(map[int]int, len(h.candidates))
	for r, i := range h.candidates {
		rank[i] = r
	}
	doomed := make([]bool, len(h.versions))
	for i, v := range h.versions {
		var d bool
		switch v.Effective {
		case StateFailed:
			d = true
		case StateWriting:
			d = v.StartedAt.Before(cutoff)
		case StatePrevious:
			if r, ok := rank[i]; ok {
				d = r >= keep
				break
			}
			fallthrough
		case StateComplete:
			d = h.beforeLive(v.Manifest)
		}
		doomed[i] = d
	}
	// A version that a kept one builds on (its base, the base's base, ...) is kept too, so
	// no kept version's chain loses a level: the live increment's, a rollback target's, a
	// run's still writing. A chain nothing kept builds on goes whole.
	byID := make(map[string]int, len(h.versions))
	for i, v := range h.versions {
		byID[v.Version] = i
	}
	for i, v := range h.versions {
		if doomed[i] || v.Effective == StateRetired {
			continue
		}
		for m, n := v.Manifest, 0; m.Incremental() && n < maxChainWalk; n++ {
			j, ok := byID[m.Base]
			if !ok {
				break
			}
			doomed[j] = false
			m = h.versions[j].Manifest
		}
	}
	for i, v := range h.versions {
		if !doomed[i] || v.Effective == StateRetired {
			continue
		}
		if err := s.DeleteVersion(ctx, ns, v.Version); err != nil {
			if errors.Is(err, ErrConflict) {
				continue // it became live since we read the history
			}
			return removed, fmt.Errorf("gc %s: %w", ns, err)
		}
		removed = append(removed, v.Version)
	}
	// Rows that earlier deletions had to leave (a reader held them) go now if they can.
	if err := s.Sweep(ctx, ns); err != nil {
		return removed, fmt.Errorf("gc %s: %w", ns, err)
	}
	return removed, nil
}
