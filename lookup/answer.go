// Package lookup answers "what is the prediction for this key" from a namespace's live
// version, through the store contract of package writers. It is shared by `staticref get`
// and the HTTP lookup service (Service), so both print the same answer for the same key.
//
// It never writes rows to a store. The service moves a live pointer only through the
// catalog (writers.Flip, writers.Rollback), on an authenticated admin request.
package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/staticref/staticref/writers"
)

// Sources of an answer.
const (
	SourcePrecomputed     = "precomputed"
	SourceFallbackSegment = "fallback:segment"
	SourceFallbackDefault = "fallback:default"
	SourceOnline          = "online"
)

// Answer is one key's answer, the shape of the lookup API and of `staticref get`.
type Answer struct {
	Namespace  string          `json:"namespace"`
	Key        string          `json:"key"`
	Value      json.RawMessage `json:"value,omitempty"`
	Version    string          `json:"version,omitempty"`
	ComputedAt *time.Time      `json:"computed_at,omitempty"`
	AgeSeconds *float64        `json:"age_seconds,omitempty"`
	Stale      *bool           `json:"stale,omitempty"`
	Source     string          `json:"source,omitempty"`
	Error      *Error          `json:"error,omitempty"`
}

// Error is the JSON error object of the lookup API.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes.
const (
	CodeNotFound        = "not_found"
	CodeInvalid         = "invalid_argument"
	CodeUnavailable     = "unavailable"
	CodeStale           = "stale"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "permission_denied"
	CodeConflict        = "conflict"
	CodeTooLarge        = "too_large"
	CodeMethod          = "method_not_allowed"
	CodeInternal        = "internal"
)

// ErrNoLiveVersion: the namespace has no live version yet.
var ErrNoLiveVersion = errors.New("lookup: namespace has no live version")

// Snapshot is one version of a namespace, fixed for the whole of a request so that no
// answer mixes two versions.
type Snapshot struct {
	Namespace string
	Manifest  *writers.Manifest
	// Store is where the version's rows are read from (nil: the caller passes one to Get).
	// The lookup service sets it, because for Pebble it is a private checkpoint.
	Store writers.Store

	fb *fallbacks // cold-start answers, rendered by prepare (service only)
}

// Resolve returns the live version of ns with its manifest.
func Resolve(ctx context.Context, s writers.Store, ns string) (*Snapshot, error) {
	if err := writers.ValidateNamespace(ns); err != nil {
		return nil, err
	}
	live, err := s.Live(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("read live pointer of %s: %w", ns, err)
	}
	if live == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoLiveVersion, ns)
	}
	m, err := s.Manifest(ctx, ns, live)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s/%s: %w", ns, live, err)
	}
	return &Snapshot{Namespace: ns, Manifest: m, Store: s}, nil
}

// Get answers one key from the snapshot's version. A key the version lacks is an Answer
// with Error code not_found (and a nil error); a store failure is an error.
func (sn *Snapshot) Get(ctx context.Context, s writers.Store, key string, now time.Time) (Answer, error) {
	a := Answer{Namespace: sn.Namespace, Key: key}
	if err := writers.ValidateKey([]byte(key)); err != nil {
		a.Error = &Error{Code: CodeInvalid, Message: err.Error()}
		return a, nil
	}
	raw, err := s.Get(ctx, sn.Namespace, sn.Manifest.Version, []byte(key))
	if errors.Is(err, writers.ErrNotFound) {
		a.Error = &Error{Code: CodeNotFound, Message: fmt.Sprintf("key %q is not in version %s of %s", key, sn.Manifest.Version, sn.Namespace)}
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("get %q from %s/%s: %w", key, sn.Namespace, sn.Manifest.Version, err)
	}
	v, err := writers.ValueJSON(sn.Manifest, raw)
	if err != nil {
		return a, err
	}
	sn.fill(&a, v, SourcePrecomputed, now, false)
	return a, nil
}

// fill completes an answer from sn. An online prediction is computed now; every other
// answer is as old as the version. The age is rounded to the millisecond.
func (sn *Snapshot) fill(a *Answer, v json.RawMessage, source string, now time.Time, stale bool) {
	at := sn.Manifest.CompletedAt
	if source == SourceOnline {
		at = now
	}
	age := roundSeconds(now.Sub(at))
	a.Value, a.Version, a.Source = v, sn.Manifest.Version, source
	a.ComputedAt, a.AgeSeconds, a.Stale = &at, &age, &stale
}

// roundSeconds is d in seconds, to the millisecond: 1.259, not 1.2590231570000001.
func roundSeconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
