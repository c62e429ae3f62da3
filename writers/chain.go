package writers

import (
	"context"
	"errors"
	"fmt"
)

// Incremental versions (DESIGN.md, "Incremental versions"). A full version holds every
// key of a namespace; an incremental one holds only the rows its run wrote (new values of
// some keys, new keys, tombstones for deleted keys) and names its Base, the version that
// was live when its run started. A read of a key goes down the chain: the version itself,
// its base, the base's base, ... down to a full version; the first version that holds the
// key answers, and a tombstone there answers "deleted", which the caller treats as a key
// no version holds (lookup's cold-start answers). So an increment never copies or
// changes a row of its base, and rollback, flip and release work on it as on any version:
// every version of a chain stays as it was written.
//
// The chain of a version is fixed when it is written (its base is in its manifest), so a
// reader resolves it once, when it learns of a flip (ResolveChain), never per request,
// and then reads keys with GetChain in one store round trip where the driver allows it
// (ChainGetter). GC never removes a version that a kept version builds on, however deep.
// A chain is at most a few versions deep (sink.max_chain, default DefaultMaxChain);
// compaction (Compact, `staticref versions compact`) folds one into a new full version.

// Version modes (Manifest.Mode).
const (
	VersionFull        = "full"
	VersionIncremental = "incremental"
)

// DefaultMaxChain is the deepest chain an incremental run may make, unless sink.max_chain
// says otherwise.
const DefaultMaxChain = 8

// maxChainWalk bounds ResolveChain's walk, against a cycle of hand-edited manifests.
const maxChainWalk = 1024

// Tombstone is the stored value of a deleted key in an incremental version: one zero
// byte, which no value encoding produces (a JSON value starts with '{', a binary one is 4
// bytes per float).
var Tombstone = []byte{0}

// IsTombstone reports whether a stored value is a tombstone.
func IsTombstone(v []byte) bool { return len(v) == 1 && v[0] == 0 }

// Incremental reports whether m is an incremental version.
func (m *Manifest) Incremental() bool { return m.Mode == VersionIncremental }

// ChainDepth is the length of m's chain: 1 for a full version, or one written before
// increments existed.
func (m *Manifest) ChainDepth() int {
	if m.Depth < 1 {
		return 1
	}
	return m.Depth
}

// ChainError says why a version's chain cannot be read: a base is missing, retired or
// never completed. It wraps ErrNotFound.
type ChainError struct {
	Namespace, Version, Base string
	Why                      string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("version %s of %s builds on %s, which %s: its chain cannot be read; flip another version or run a full one",
		e.Version, e.Namespace, e.Base, e.Why)
}

func (e *ChainError) Unwrap() error { return ErrNotFound }

// ResolveChain returns head's chain, head first, then its base, down to a full version.
// Every base must be complete (it may be live or previous); a missing, retired, failed or
// writing base is a *ChainError.
func ResolveChain(ctx context.Context, s *Store, ns string, head *Manifest) ([]*Manifest, error) {
	chain := []*Manifest{head}
	for m := head; m.Incremental(); {
		if len(chain) > maxChainWalk {
			return nil, fmt.Errorf("resolve chain of %s/%s: more than %d versions deep (a cycle of bases?)", ns, head.Version, maxChainWalk)
		}
		if m.Base == "" {
			return nil, &ChainError{Namespace: ns, Version: m.Version, Base: `""`, Why: "is not named (an incremental manifest without a base)"}
		}
		b, err := s.Manifest(ctx, ns, m.Base)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil, &ChainError{Namespace: ns, Version: m.Version, Base: m.Base, Why: "does not exist"}
		case err != nil:
			return nil, fmt.Errorf("resolve chain of %s/%s: %w", ns, head.Version, err)
		case b.State != StateComplete:
			return nil, &ChainError{Namespace: ns, Version: m.Version, Base: m.Base, Why: "is " + string(b.State)}
		}
		chain = append(chain, b)
		m = b
	}
	return chain, nil
}

// ChainVersions are the version ids of a chain, head first.
func ChainVersions(chain []*Manifest) []string {
	out := make([]string, len(chain))
	for i, m := range chain {
		out[i] = m.Version
	}
	return out
}

// GetChain reads keys down chain (version ids of ns, head first; see ResolveChain) in as
// few round trips as the driver can (ChainGetter; otherwise one GetMany per level, for
// the keys still unanswered). values[i] is the value of keys[i] in the first version of
// chain that holds it and from[i] that version's index in chain; a key that no version
// holds has nil and -1; a key whose first holder has a tombstone (deleted) has nil and
// that version's index. Either way a nil value is a key to answer as not found.
func (s *Store) GetChain(ctx context.Context, ns string, chain []string, keys [][]byte) (values [][]byte, from []int, err error) {
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("get chain %s: %w: empty chain", ns, ErrInvalid)
	}
	for _, v := range chain {
		if err := validateNV(ns, v); err != nil {
			return nil, nil, fmt.Errorf("get chain: %w", err)
		}
	}
	for i, k := range keys {
		if err := ValidateKey(k); err != nil {
			return nil, nil, fmt.Errorf("get chain %s/%s: key %d: %w", ns, chain[0], i, err)
		}
	}
	if len(keys) == 0 {
		return nil, nil, nil
	}
	if len(chain) == 1 { // a full version: its own values, no chain to walk
		if values, err = s.getMany(ctx, ns, chain[0], keys); err != nil {
			return nil, nil, fmt.Errorf("get chain: %w", err)
		}
		from = make([]int, len(keys))
		for i, v := range values {
			if v == nil {
				from[i] = -1
			} else if IsTombstone(v) {
				values[i] = nil
			}
		}
		return values, from, nil
	}
	if cg, ok := s.d.(ChainGetter); ok {
		if err := s.enter(); err != nil {
			return nil, nil, fmt.Errorf("get chain %s/%s: %w", ns, chain[0], err)
		}
		values, from, err = cg.GetChain(ctx, ns, chain, keys)
		s.mu.RUnlock()
		if err != nil {
			return nil, nil, fmt.Errorf("get chain %s/%s: %w", ns, chain[0], err)
		}
		if len(values) != len(keys) || len(from) != len(keys) {
			return nil, nil, fmt.Errorf("get chain %s/%s: the driver answered %d of %d keys", ns, chain[0], len(values), len(keys))
		}
	} else {
		values, from = make([][]byte, len(keys)), make([]int, len(keys))
		todo := make([]int, len(keys)) // indexes of the keys still unanswered
		for i := range from {
			from[i], todo[i] = -1, i
		}
		for level, v := range chain {
			ask := make([][]byte, len(todo))
			for j, i := range todo {
				ask[j] = keys[i]
			}
			got, err := s.getMany(ctx, ns, v, ask)
			if err != nil {
				return nil, nil, fmt.Errorf("get chain: %w", err)
			}
			left := todo[:0]
			for j, i := range todo {
				if got[j] != nil {
					values[i], from[i] = got[j], level
				} else {
					left = append(left, i)
				}
			}
			if todo = left; len(todo) == 0 {
				break
			}
		}
	}
	for i, v := range values {
		if IsTombstone(v) {
			values[i] = nil
		}
	}
	return values, from, nil
}

// ErrNoScan: the store's driver cannot pass a version's rows to a caller (no Scanner).
var ErrNoScan = errors.New("writers: the store cannot scan a version's rows")

// ScanRows passes every row of version of ns to fn, in batches (see Scanner): a key may
// come twice, with the same value; tombstones come as they are stored. fn may call the
// store's other methods (compaction writes each batch into a new version), but Close must
// not be called until ScanRows returns: the call in flight and fn's would wait for each
// other.
func (s *Store) ScanRows(ctx context.Context, ns, version string, fn func(rows Rows) error) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("scan rows: %w", err)
	}
	sc, ok := s.d.(Scanner)
	if !ok {
		return fmt.Errorf("scan rows %s/%s: %w", ns, version, ErrNoScan)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("scan rows %s/%s: %w", ns, version, err)
	}
	defer s.mu.RUnlock()
	if err := sc.ScanRows(ctx, ns, version, fn); err != nil {
		return fmt.Errorf("scan rows %s/%s: %w", ns, version, err)
	}
	return nil
}
