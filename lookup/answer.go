// Package lookup answers "what is the prediction for this key" from a namespace's live
// version, through the store contract of package writers. It is shared by `staticref get`
// and the lookup service (Service, over HTTP and gRPC), so all print the same answer for
// the same key.
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
	"sync"
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
	// RowVersion is the version that held the key (precomputed answers): the version
	// itself, or for an incremental version the base down its chain that answered.
	// ComputedAt is that version's.
	RowVersion string `json:"row_version,omitempty"`
	// Arm is the release arm that answered, live or candidate, while a release routes.
	Arm        string     `json:"arm,omitempty"`
	ComputedAt *time.Time `json:"computed_at,omitempty"`
	AgeSeconds *float64   `json:"age_seconds,omitempty"`
	Stale      *bool      `json:"stale,omitempty"`
	Source     string     `json:"source,omitempty"`
	Error      *Error     `json:"error,omitempty"`

	// head is the answer's JSON up to its version, pre-rendered (render.go); nil: render
	// it from the fields.
	head []byte
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
	sn.fillInto(a, v, source, now, stale, new(answerTimes))
}

// answerTimes holds what an Answer's pointer fields point to: in a request's scratch on
// the hot path (no allocation), else allocated.
type answerTimes struct {
	at    time.Time
	age   float64
	stale bool
}

// fillInto is fill with the pointed-to values kept in t.
func (sn *Snapshot) fillInto(a *Answer, v json.RawMessage, source string, now time.Time, stale bool, t *answerTimes) {
	t.at = sn.Manifest.CompletedAt
	if source == SourceOnline {
		t.at = now
	}
	t.age, t.stale = roundSeconds(now.Sub(t.at)), stale
	a.Value, a.Version, a.Source = v, sn.Manifest.Version, source
	a.ComputedAt, a.AgeSeconds, a.Stale = &t.at, &t.age, &t.stale
}

// fillRow completes a precomputed answer that level i of sn's chain held (0: the version
// itself): its row_version, and that version's computed_at and age.
func (sn *Snapshot) fillRow(a *Answer, v json.RawMessage, i int, now time.Time, stale bool) {
	sn.fillRowInto(a, v, i, now, stale, new(answerTimes))
}

// fillRowInto is fillRow with the pointed-to values kept in t.
func (sn *Snapshot) fillRowInto(a *Answer, v json.RawMessage, i int, now time.Time, stale bool, t *answerTimes) {
	sn.fillInto(a, v, SourcePrecomputed, now, stale, t)
	m := sn.level(i)
	a.RowVersion = m.Version
	if i > 0 {
		t.at = m.CompletedAt
		t.age = roundSeconds(now.Sub(t.at))
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

// scratch is one request's reusable memory: the cache key, the cache entry that a
// precomputed answer's head and value point into, and the rendered answer. Pooled: what
// points into it must not outlive the request (shadowOffer copies the value it keeps).
type scratch struct {
	key, ent, out []byte
	times         answerTimes
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// maxPooled is the largest buffer a scratch keeps for the next request.
const maxPooled = 64 << 10

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	if cap(sc.ent) > maxPooled || cap(sc.out) > maxPooled {
		return
	}
	scratchPool.Put(sc)
}

// answer answers one (already validated) key from the snapshot sn, which the caller
// loaded once for the whole request (or the release candidate's snapshot that the
// request's arm chose from it). missing reports that sn's version lacks the key,
// whatever answered it then. A precomputed answer's head and value are in sc.ent.
func (s *Service) answer(ctx context.Context, n *namespace, sn *Snapshot, key string, req request, sc *scratch) (a Answer, missing bool, _ *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return Answer{}, false, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	a = Answer{Namespace: n.name, Key: key}
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		e, err := s.precomputed(ctx, n, sn, key, sc)
		if err != nil {
			return a, false, err
		}
		if e.found {
			sn.fillRowInto(&a, e.value, e.level, now, stale, &sc.times)
			a.head = e.head
			return a, false, nil
		}
		missing = true
	}
	a, err := s.coldStart(ctx, n, sn, a, req, now, stale)
	return a, missing, err
}

// precomputed reads key from the snapshot's version, down its chain, through the cache,
// into sc. The cache stays keyed by the head version: what a chain answers for a key is
// as immutable as a version's own row, and the entry records the level that held it.
func (s *Service) precomputed(ctx context.Context, n *namespace, sn *Snapshot, key string, sc *scratch) (cached, *apiError) {
	version := sn.Manifest.Version
	sc.key = appendCacheKey(sc.key[:0], n.name, version, key)
	var e cached
	var ok bool
	if sc.ent, e, ok = s.cache.get(sc.ent, sc.key); ok {
		s.met.hit()
		return e, nil
	}
	s.met.miss()
	raw, level, err := s.getOne(ctx, n, sn, key)
	if errors.Is(err, writers.ErrNotFound) {
		s.cache.put(sc.key, missingEntry)
		return cached{}, nil
	}
	if err != nil {
		return cached{}, s.apiErrorOf(n.name, err)
	}
	v, aerr := s.decodeValue(n, sn, raw, level)
	if aerr != nil {
		return cached{}, aerr
	}
	sc.ent, e = renderEntry(sc.ent, n.name, key, version, sn.level(level).Version, level, v)
	s.cache.put(sc.key, sc.ent)
	return e, nil
}

// decodeValue is a stored value that level i of sn's chain held, as the answer's compact
// JSON.
func (s *Service) decodeValue(n *namespace, sn *Snapshot, raw []byte, i int) (json.RawMessage, *apiError) {
	v, err := sn.decode(raw, i)
	if err != nil {
		s.log.Error("undecodable stored value", "namespace", n.name, "version", sn.level(i).Version, "err", err)
		return nil, errorf(CodeInternal, "the stored value of this key cannot be decoded")
	}
	return compactValue(v), nil
}

// coldStart answers a key the version lacks: segment default, online prediction,
// global or static default, else not_found.
func (s *Service) coldStart(ctx context.Context, n *namespace, sn *Snapshot, a Answer, req request, now time.Time, stale bool) (Answer, *apiError) {
	if req.segment != "" {
		if v, ok := sn.fb.segments[req.segment]; ok {
			sn.fill(&a, v, SourceFallbackSegment, now, stale)
			n.met.fallback(SourceFallbackSegment)
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
		n.met.fallback(SourceOnline)
		return a, nil
	}
	if sn.fb.def != nil {
		sn.fill(&a, sn.fb.def, SourceFallbackDefault, now, stale)
		n.met.fallback(SourceFallbackDefault)
		return a, nil
	}
	return a, errorf(CodeNotFound, "key %q is not in version %s of %s", a.Key, sn.Manifest.Version, n.name)
}

// batchParallelism bounds the online predictions one batch keeps in flight.
const batchParallelism = 16

// batch answers keys from one snapshot, a missing key from its features (features[key],
// checked by the caller) when it has some, as a single lookup would. The keys the cache
// does not hold are read with one Store.GetMany: one store round trip for the whole
// batch (per slot group on a Redis Cluster, writers.ManyGetter). A key that nothing
// answers, or whose online prediction is unavailable, is an Answer with the error in its
// place; any other failure fails the batch. missing[i] reports that the version lacks
// keys[i].
func (s *Service) batch(ctx context.Context, n *namespace, sn *Snapshot, keys []string, req request, features map[string]map[string]float64) (_ []Answer, missing []bool, _ *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return nil, nil, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	out := make([]Answer, len(keys))
	entries := make([]cached, len(keys))
	missing = make([]bool, len(keys)) // when not looked up: not known to be missing
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		if err := s.precomputedMany(ctx, n, sn, keys, entries); err != nil {
			return nil, nil, err
		}
		for i := range keys {
			missing[i] = !entries[i].found
		}
	}
	// Keys the version lacks are answered concurrently: an online prediction runs the
	// model, and the namespace's session pool bounds how many run at once.
	fatal := make([]*apiError, len(keys))
	g := new(errgroup.Group)
	g.SetLimit(batchParallelism)
	nm := n.met
	for i, k := range keys {
		a := Answer{Namespace: n.name, Key: k}
		if e := entries[i]; e.found {
			sn.fillRow(&a, e.value, e.level, now, stale)
			a.head = e.head
			nm.answer(SourcePrecomputed)
			out[i] = a
			continue
		}
		g.Go(func() error {
			a, err := s.coldStart(ctx, n, sn, a, request{segment: req.segment, features: features[k]}, now, stale)
			switch {
			case err == nil:
				nm.answer(a.Source)
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

// precomputedMany fills entries[i] with keys[i]'s entry: from the cache, else from one
// read of every key the cache lacks (Store.GetChain down the snapshot's chain: one round
// trip), which it then caches.
func (s *Service) precomputedMany(ctx context.Context, n *namespace, sn *Snapshot, keys []string, entries []cached) *apiError {
	version := sn.Manifest.Version
	var ck []byte
	var todo []int
	for i, k := range keys {
		ck = appendCacheKey(ck[:0], n.name, version, k)
		var ok bool
		if _, entries[i], ok = s.cache.get(nil, ck); ok {
			s.met.hit()
			continue
		}
		s.met.miss()
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return nil
	}
	ask := make([][]byte, len(todo))
	for j, i := range todo {
		ask[j] = []byte(keys[i])
	}
	sctx, cancel := s.storeCtx(ctx)
	vals, from, err := sn.read(sctx, sn.Store, ask)
	cancel()
	if err != nil {
		return s.apiErrorOf(n.name, err)
	}
	for j, i := range todo {
		ck = appendCacheKey(ck[:0], n.name, version, keys[i])
		if vals[j] == nil {
			s.cache.put(ck, missingEntry)
			continue
		}
		v, aerr := s.decodeValue(n, sn, vals[j], from[j])
		if aerr != nil {
			return aerr
		}
		var ent []byte
		ent, entries[i] = renderEntry(nil, n.name, keys[i], version, sn.level(from[j]).Version, from[j], v)
		s.cache.put(ck, ent)
	}
	return nil
}
