// Package lookup answers "what is the prediction for this key" from a namespace's live
// version, through the store contract of package writers. It is shared by `staticref get`
// and the HTTP lookup service (Service), so both print the same answer for the same key.
//
// It never writes rows to a store. The service moves a live pointer only through the
// catalog: writers.Flip and writers.Rollback on an authenticated admin request, and
// writers.PromoteRelease when an admin promotes a release or a canary passes its last
// step (judge.go). Besides, it writes only release records, counters and sketches,
// through the store's release contract (release.go).
package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

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
	Namespace string          `json:"namespace"`
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value,omitempty"`
	Version   string          `json:"version,omitempty"`
	// Arm is the release arm that answered, live or candidate, while a release routes.
	Arm string `json:"arm,omitempty"`
	// RowVersion is the version that held the key: the version itself, or for an
	// incremental version the base down its chain that answered (precomputed answers).
	// ComputedAt is that version's.
	RowVersion string     `json:"row_version,omitempty"`
	ComputedAt *time.Time `json:"computed_at,omitempty"`
	AgeSeconds *float64   `json:"age_seconds,omitempty"`
	Stale      *bool      `json:"stale,omitempty"`
	Source     string     `json:"source,omitempty"`
	Error      *Error     `json:"error,omitempty"`
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

// Get answers one key from the snapshot's version. A key the version lacks is an Answer
// with Error code not_found (and a nil error); a store failure is an error.
func (sn *Snapshot) Get(ctx context.Context, s *writers.Store, key string, now time.Time) (Answer, error) {
	a := Answer{Namespace: sn.Namespace, Key: key}
	if err := writers.ValidateKey([]byte(key)); err != nil {
		a.Error = &Error{Code: CodeInvalid, Message: err.Error()}
		return a, nil
	}
	vals, from, err := sn.read(ctx, s, [][]byte{[]byte(key)})
	if err != nil {
		return a, fmt.Errorf("get %q from %s/%s: %w", key, sn.Namespace, sn.Manifest.Version, err)
	}
	if vals[0] == nil {
		a.Error = &Error{Code: CodeNotFound, Message: fmt.Sprintf("key %q is not in version %s of %s", key, sn.Manifest.Version, sn.Namespace)}
		return a, nil
	}
	v, err := sn.decode(vals[0], from[0])
	if err != nil {
		return a, err
	}
	sn.fillRow(&a, v, from[0], now, false)
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

// fillRow completes a precomputed answer that level i of sn's chain held: its
// row_version, and that version's computed_at and age.
func (sn *Snapshot) fillRow(a *Answer, v json.RawMessage, i int, now time.Time, stale bool) {
	sn.fill(a, v, SourcePrecomputed, now, stale)
	m := sn.level(i)
	a.RowVersion = m.Version
	if i > 0 {
		at, age := m.CompletedAt, roundSeconds(now.Sub(m.CompletedAt))
		a.ComputedAt, a.AgeSeconds = &at, &age
	}
}

// roundSeconds is d in seconds, to the millisecond: 1.259, not 1.2590231570000001.
func roundSeconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }

// request is what one key's answer depends on besides the key.
type request struct {
	segment  string             // value of the segment parameter, "" if none
	features map[string]float64 // nil unless the request sent features
}

// stale reports the snapshot's age and whether it is past max_staleness.
func (s *Service) stale(n *namespace, sn *Snapshot) (time.Time, bool) {
	now := s.now()
	return now, n.isStale(now.Sub(sn.Manifest.CompletedAt))
}

// answer answers one (already validated) key from the snapshot sn, which the caller
// loaded once for the whole request (or the release candidate's snapshot that the
// request's arm chose from it). missing reports that sn's version lacks the key,
// whatever answered it then.
func (s *Service) answer(ctx context.Context, n *namespace, sn *Snapshot, key string, req request) (a Answer, missing bool, _ *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return Answer{}, false, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	a = Answer{Namespace: n.name, Key: key}
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		v, level, found, err := s.precomputedAt(ctx, n, sn, key)
		if err != nil {
			return a, false, err
		}
		if found {
			sn.fillRow(&a, v, level, now, stale)
			return a, false, nil
		}
		missing = true
	}
	a, err := s.coldStart(ctx, n, sn, a, req, now, stale)
	return a, missing, err
}

// precomputed reads key from the snapshot's version, through the cache.
func (s *Service) precomputed(ctx context.Context, n *namespace, sn *Snapshot, key string) (json.RawMessage, bool, *apiError) {
	v, _, found, err := s.precomputedAt(ctx, n, sn, key)
	return v, found, err
}

// precomputedAt is precomputed that also says which level of the snapshot's chain held
// the key (0: the version itself).
func (s *Service) precomputedAt(ctx context.Context, n *namespace, sn *Snapshot, key string) (json.RawMessage, int, bool, *apiError) {
	ck := cacheKey(n.name, sn.Manifest.Version, key)
	if v, found, ok := s.cache.Get(ck); ok {
		s.met.hit()
		v, level := sn.unpack(v, found)
		return v, level, found, nil
	}
	s.met.miss()
	sctx, cancel := s.storeCtx(ctx)
	vals, from, err := sn.read(sctx, sn.Store, [][]byte{[]byte(key)})
	cancel()
	if err != nil {
		return nil, 0, false, s.apiErrorOf(n.name, err)
	}
	v, found, aerr := s.decodeRow(n, sn, ck, vals[0], from[0])
	return v, from[0], found, aerr
}

// decodeRow decodes and caches what level i of sn's chain answered for a key (raw nil:
// nothing, or deleted).
func (s *Service) decodeRow(n *namespace, sn *Snapshot, ck string, raw []byte, i int) (json.RawMessage, bool, *apiError) {
	if raw == nil {
		s.cache.Put(ck, nil, false)
		return nil, false, nil
	}
	v, err := sn.decode(raw, i)
	if err != nil {
		s.log.Error("undecodable stored value", "namespace", n.name, "version", sn.level(i).Version, "err", err)
		return nil, false, errorf(CodeInternal, "the stored value of this key cannot be decoded")
	}
	s.cache.Put(ck, sn.pack(v, i), true)
	return v, true, nil
}

// The cache stays keyed by the head version (what a chain answers for a key is as
// immutable as a version's own row). For a snapshot read down a chain, an entry's value
// carries the level that held the key as one leading byte (a chain is at most 64 deep),
// so a hit answers with the right row_version; a full version's entries are the bare
// value.
func (sn *Snapshot) pack(v json.RawMessage, level int) json.RawMessage {
	if !sn.deep() {
		return v
	}
	return append(json.RawMessage{byte(level)}, v...)
}

func (sn *Snapshot) unpack(v json.RawMessage, found bool) (json.RawMessage, int) {
	if !sn.deep() || !found || len(v) == 0 {
		return v, 0
	}
	return v[1:], int(v[0])
}

// coldStart answers a key the version lacks: segment default, online prediction,
// global or static default, else not_found.
func (s *Service) coldStart(ctx context.Context, n *namespace, sn *Snapshot, a Answer, req request, now time.Time, stale bool) (Answer, *apiError) {
	if req.segment != "" {
		if v, ok := sn.fb.segments[req.segment]; ok {
			sn.fill(&a, v, SourceFallbackSegment, now, stale)
			s.met.fallbacks.WithLabelValues(n.name, SourceFallbackSegment).Inc()
			return a, nil
		}
	}
	if req.features != nil && n.online != nil {
		v, err := n.online.predict(ctx, sn.Manifest, req.features)
		var fe errFeatures
		switch {
		case errors.As(err, &fe):
			return a, errorf(CodeInvalid, "%s", fe.msg)
		case err != nil:
			s.log.Error("online prediction failed", "namespace", n.name, "err", err)
			return a, errorf(CodeUnavailable, "online prediction is unavailable")
		}
		sn.fill(&a, v, SourceOnline, now, false)
		s.met.fallbacks.WithLabelValues(n.name, SourceOnline).Inc()
		return a, nil
	}
	if sn.fb.def != nil {
		sn.fill(&a, sn.fb.def, SourceFallbackDefault, now, stale)
		s.met.fallbacks.WithLabelValues(n.name, SourceFallbackDefault).Inc()
		return a, nil
	}
	return a, errorf(CodeNotFound, "key %q is not in version %s of %s", a.Key, sn.Manifest.Version, n.name)
}

// batchParallelism bounds the store reads one batch keeps in flight.
const batchParallelism = 16

// batch answers keys from one snapshot, a missing key from its features (features[key],
// checked by the caller) when it has some, as a single lookup would. A key that nothing
// answers, or whose online prediction is unavailable, is an Answer with the error in its
// place; any other failure fails the batch. missing[i] reports that the version lacks
// keys[i].
func (s *Service) batch(ctx context.Context, n *namespace, sn *Snapshot, keys []string, req request, features map[string]map[string]float64) (_ []Answer, missing []bool, _ *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return nil, nil, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	out := make([]Answer, len(keys))
	found := make([]bool, len(keys))
	vals := make([]json.RawMessage, len(keys))
	levels := make([]int, len(keys))
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		// The keys the cache lacks are read in one store call, down the whole chain.
		var ask [][]byte
		var askAt []int
		for i, k := range keys {
			if v, f, ok := s.cache.Get(cacheKey(n.name, sn.Manifest.Version, k)); ok {
				s.met.hit()
				found[i] = f
				vals[i], levels[i] = sn.unpack(v, f)
				continue
			}
			s.met.miss()
			ask, askAt = append(ask, []byte(k)), append(askAt, i)
		}
		if len(ask) > 0 {
			sctx, cancel := s.storeCtx(ctx)
			raw, from, err := sn.read(sctx, sn.Store, ask)
			cancel()
			if err != nil {
				return nil, nil, s.apiErrorOf(n.name, err)
			}
			for j, i := range askAt {
				v, f, aerr := s.decodeRow(n, sn, cacheKey(n.name, sn.Manifest.Version, keys[i]), raw[j], from[j])
				if aerr != nil {
					return nil, nil, aerr
				}
				vals[i], found[i], levels[i] = v, f, from[j]
			}
		}
		missing = make([]bool, len(keys))
		for i := range keys {
			missing[i] = !found[i]
		}
	} else {
		missing = make([]bool, len(keys)) // not looked up: not known to be missing
	}
	// Keys the version lacks are answered concurrently: an online prediction runs the
	// model, and the namespace's session pool bounds how many run at once.
	fatal := make([]*apiError, len(keys))
	g := new(errgroup.Group)
	g.SetLimit(batchParallelism)
	for i, k := range keys {
		a := Answer{Namespace: n.name, Key: k}
		if found[i] {
			sn.fillRow(&a, vals[i], levels[i], now, stale)
			s.met.answers.WithLabelValues(n.name, SourcePrecomputed).Inc()
			out[i] = a
			continue
		}
		g.Go(func() error {
			a, err := s.coldStart(ctx, n, sn, a, request{segment: req.segment, features: features[k]}, now, stale)
			switch {
			case err == nil:
				s.met.answers.WithLabelValues(n.name, a.Source).Inc()
			case err.code != CodeNotFound && err.code != CodeUnavailable:
				fatal[i] = err
			default:
				a.Error = &Error{Code: err.code, Message: err.message}
				a.Version = sn.Manifest.Version
			}
			out[i] = a
			return nil
		})
	}
	_ = g.Wait() // the goroutines report through fatal
	for _, err := range fatal {
		if err != nil {
			return nil, nil, err
		}
	}
	return out, missing, nil
}
