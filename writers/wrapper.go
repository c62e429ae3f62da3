package writers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Store is the store contract as callers see it: one type over every driver. It does
// what is the same for every backend, once: it validates arguments (a bad name never
// reaches a driver), prefixes every error with the operation and what it was on
// ("get ns/version key "k": …"), encodes manifests and commits, makes lease tokens, and
// tracks the open/closed lifecycle: Close waits for every call in flight, and a call
// after Close fails with ErrClosed without touching the driver.
//
// A Store is safe for concurrent use.
type Store struct {
	d   Driver
	url URL

	// mu is held shared by every call for as long as it uses d, and exclusively by Close,
	// which therefore waits for the calls in flight; calls that arrive while Close waits
	// block until it is done and then see closed. No method calls another while it holds
	// mu (a shared lock taken twice deadlocks against a waiting Close).
	mu     sync.RWMutex
	closed bool
}

// NewStore wraps a driver. Open does this for registered schemes; tests of other packages
// use it to wrap a fake or instrumented driver.
func NewStore(d Driver, u URL) *Store { return &Store{d: d, url: u} }

// URL is the URL the store was opened with.
func (s *Store) URL() URL { return s.url }

// Driver returns the driver beneath s, for driver packages' own tests and capabilities.
func (s *Store) Driver() Driver { return s.d }

// String names the store for messages: the driver's own description (a directory, an
// address), else the redacted URL.
func (s *Store) String() string {
	if d, ok := s.d.(Describer); ok {
		return d.Describe()
	}
	return s.url.Redacted()
}

// enter begins a call: it fails with ErrClosed once Close has begun. Every successful
// enter is paired with a deferred s.mu.RUnlock.
func (s *Store) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

// Close waits for the calls in flight, then closes the driver. Calling it again is a
// no-op.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.d.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s, err)
	}
	return nil
}

// WriteRows stores rows.Keys[i] -> rows.Values[i] under version of ns. A key written twice
// keeps the last value. The version's manifest must exist with state writing.
func (s *Store) WriteRows(ctx context.Context, ns, version string, rows Rows) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("write rows: %w", err)
	}
	if len(rows.Keys) != len(rows.Values) {
		return fmt.Errorf("write rows %s/%s: %w: %d keys but %d values", ns, version, ErrInvalid, len(rows.Keys), len(rows.Values))
	}
	for i, k := range rows.Keys {
		if err := ValidateKey(k); err != nil {
			return fmt.Errorf("write rows %s/%s: row %d: %w", ns, version, i, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	if err := s.d.WriteRows(ctx, ns, version, rows); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	return nil
}

// Get returns the value of key in version of ns, or an error wrapping ErrNotFound. The
// returned slice is the caller's.
func (s *Store) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	v, err := s.d.Get(ctx, ns, version, key)
	if err != nil {
		return nil, fmt.Errorf("get %s/%s key %q: %w", ns, version, key, err)
	}
	return v, nil
}

// GetMany returns the values of keys in version of ns, one entry per key (nil for a key
// the version lacks), in as few store round trips as the driver can (see ManyGetter).
func (s *Store) GetMany(ctx context.Context, ns, version string, keys [][]byte) ([][]byte, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("get many: %w", err)
	}
	for i, k := range keys {
		if err := ValidateKey(k); err != nil {
			return nil, fmt.Errorf("get many %s/%s: key %d: %w", ns, version, i, err)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return s.getMany(ctx, ns, version, keys)
}

// getMany is GetMany of keys already checked (GetChain checks a chain's names and keys
// once for all its levels).
func (s *Store) getMany(ctx context.Context, ns, version string, keys [][]byte) ([][]byte, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("get many %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	if mg, ok := s.d.(ManyGetter); ok {
		vals, err := mg.GetMany(ctx, ns, version, keys)
		if err != nil {
			return nil, fmt.Errorf("get many %s/%s: %w", ns, version, err)
		}
		if len(vals) != len(keys) {
			return nil, fmt.Errorf("get many %s/%s: the driver answered %d of %d keys", ns, version, len(vals), len(keys))
		}
		return vals, nil
	}
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		v, err := s.d.Get(ctx, ns, version, k)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("get many %s/%s key %q: %w", ns, version, k, err)
		default:
			vals[i] = v
		}
	}
	return vals, nil
}

// CountKeys counts the keys stored under version of ns (a full scan; for checks).
func (s *Store) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	if err := validateNV(ns, version); err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	if err := s.enter(); err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	n, err := s.d.CountKeys(ctx, ns, version)
	if err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	return n, nil
}

// PutManifest creates or replaces the manifest of m.Namespace/m.Version. On a store that
// chooses layouts (LayoutChooser), a manifest without a Layout gets one, set in m: the
// stored manifest's when there is one (a layout never changes), else the one the store
// chooses for a new version. A caller that sets m.Layout itself must have it from the
// store, or be creating the version (LayoutPlain asks for the original layout).
func (s *Store) PutManifest(ctx context.Context, m *Manifest) error {
	if m == nil {
		return fmt.Errorf("put manifest: %w: nil manifest", ErrInvalid)
	}
	if err := validateNV(m.Namespace, m.Version); err != nil {
		return fmt.Errorf("put manifest: %w", err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	defer s.mu.RUnlock()
	if err := s.layout(ctx, m); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	if err := s.d.PutManifest(ctx, m, data); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	return nil
}

// layout sets m.Layout when it is nil on a driver that chooses layouts (see PutManifest).
// The caller holds s.mu.
func (s *Store) layout(ctx context.Context, m *Manifest) error {
	lc, ok := s.d.(LayoutChooser)
	if !ok || m.Layout != nil {
		return nil
	}
	cur, err := s.d.Manifest(ctx, m.Namespace, m.Version)
	switch {
	case err == nil:
		m.Layout = cur.Layout // nil for a version written before layouts: it stays so
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	}
	l, err := lc.ChooseLayout(ctx, m)
	if err != nil {
		return fmt.Errorf("choose layout: %w", err)
	}
	m.Layout = l
	return nil
}

// Manifest returns the stored manifest of version, or an error wrapping ErrNotFound.
func (s *Store) Manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	m, err := s.d.Manifest(ctx, ns, version)
	if err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	return m, nil
}

// Manifests returns every manifest of ns, oldest version first.
func (s *Store) Manifests(ctx context.Context, ns string) ([]*Manifest, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	ms, err := s.d.Manifests(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	SortManifests(ms)
	return ms, nil
}

// DeleteVersion removes the rows and commits of a version and marks its manifest
// retired. It returns an error wrapping ErrConflict when version is live, and one
// wrapping ErrNotFound when it has no manifest.
func (s *Store) DeleteVersion(ctx context.Context, ns, version string) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("delete version: %w", err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	if err := s.d.DeleteVersion(ctx, ns, version); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	return nil
}

// Live returns the live version of ns, or "" when there is none.
func (s *Store) Live(ctx context.Context, ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("live: %w", err)
	}
	if err := s.enter(); err != nil {
		return "", fmt.Errorf("live %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	v, err := s.d.Live(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("live %s: %w", ns, err)
	}
	return v, nil
}

// SwapLive sets the live pointer of ns to next if it currently is old ("" = none), and
// returns an error wrapping ErrConflict otherwise, or ErrNotComplete when next's manifest
// is not complete. Callers flip with Flip, which also records LiveAt.
func (s *Store) SwapLive(ctx context.Context, ns, old, next string) error {
	if err := ValidateNamespace(ns); err != nil {
		return fmt.Errorf("swap live: %w", err)
	}
	if err := ValidateVersion(next); err != nil {
		return fmt.Errorf("swap live %s: %w", ns, err)
	}
	if old != "" {
		if err := ValidateVersion(old); err != nil {
			return fmt.Errorf("swap live %s: %w", ns, err)
		}
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("swap live %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	if err := s.d.SwapLive(ctx, ns, old, next); err != nil {
		return fmt.Errorf("swap live %s to %s: %w", ns, next, err)
	}
	return nil
}

// AcquireLease takes the namespace's writer lease for ttl if it is free or its holder let
// it expire. While another holder's lease is unexpired it returns a *LeaseHeldError
// (wrapping ErrLeaseHeld) naming that holder and the expiry.
func (s *Store) AcquireLease(ctx context.Context, ns, holder string, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(ns, holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	token, err := randomToken()
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	if err := s.enter(); err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	l, err := s.d.AcquireLease(ctx, ns, holder, token, ttl)
	if err != nil {
		var held *LeaseHeldError
		if errors.As(err, &held) {
			return Lease{}, err // it names the namespace and says what to do
		}
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	return l, nil
}

// RenewLease extends a held lease to now+ttl. It returns an error wrapping ErrLeaseLost
// when the lease is no longer l's (expired and taken over, or released).
func (s *Store) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(l.Namespace, l.Holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	if err := s.enter(); err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	defer s.mu.RUnlock()
	nl, err := s.d.RenewLease(ctx, l, ttl)
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease %s of %s: %w", l.Namespace, l.Holder, err)
	}
	return nl, nil
}

// ReleaseLease gives the lease up; releasing a lease no longer held is not an error.
func (s *Store) ReleaseLease(ctx context.Context, l Lease) error {
	if err := ValidateNamespace(l.Namespace); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	defer s.mu.RUnlock()
	if err := s.d.ReleaseLease(ctx, l); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	return nil
}

// CommitWork records that every row of one unit of work (an input file's row group) has
// been written to version. Recording the same ID again replaces the record. Concurrent
// records of different IDs by different processes all survive.
func (s *Store) CommitWork(ctx context.Context, ns, version string, c Commit) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := ValidateKey([]byte(c.ID)); err != nil {
		return fmt.Errorf("commit %s/%s: id: %w", ns, version, err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("commit %s/%s %q: %w", ns, version, c.ID, err)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("commit %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	if err := s.d.CommitWork(ctx, ns, version, c, data); err != nil {
		return fmt.Errorf("commit %s/%s %q: %w", ns, version, c.ID, err)
	}
	return nil
}

// Commits returns the committed units of work of version, in ID order.
func (s *Store) Commits(ctx context.Context, ns, version string) ([]Commit, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("commits: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("commits %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	cs, err := s.d.Commits(ctx, ns, version)
	if err != nil {
		return nil, fmt.Errorf("commits %s/%s: %w", ns, version, err)
	}
	sortCommits(cs)
	return cs, nil
}

// Sweep removes what earlier deletions of ns's versions had to leave behind, where the
// driver defers deletions (see Sweeper); elsewhere it does nothing.
func (s *Store) Sweep(ctx context.Context, ns string) error {
	if err := ValidateNamespace(ns); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	sw, ok := s.d.(Sweeper)
	if !ok {
		return nil
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("sweep %s: %w", ns, err)
	}
	defer s.mu.RUnlock()
	if err := sw.Sweep(ctx, ns); err != nil {
		return fmt.Errorf("sweep %s: %w", ns, err)
	}
	return nil
}

// WatchFlips calls fn with the namespace of every flip the store announces until ctx is
// done, and reports whether the store announces flips at all (false: it returned at once,
// and only polling sees a flip). Delivery is at most once.
func (s *Store) WatchFlips(ctx context.Context, fn func(ns string)) bool {
	w, ok := s.d.(FlipWatcher)
	if !ok {
		return false
	}
	if err := s.enter(); err != nil {
		return true
	}
	// Not held while watching: Close must not wait for a watch that lasts until ctx ends.
	s.mu.RUnlock()
	w.WatchFlips(ctx, fn)
	return true
}

func validateNV(ns, version string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateVersion(version)
}

// checkLeaseArgs checks the arguments of AcquireLease and RenewLease.
func checkLeaseArgs(ns, holder string, ttl time.Duration) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if holder == "" {
		return fmt.Errorf("%w: empty lease holder", ErrInvalid)
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: lease ttl %s (at least 1ms)", ErrInvalid, ttl)
	}
	return nil
}

// randomToken returns 128 random bits, hex-encoded: unique per acquisition.
func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
