package lookup

import (
	"context"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/staticref/staticref/writers"
)

// The lookups as both protocols ask them. HTTP (http.go) and gRPC (grpc.go) parse their
// requests into the same few values and call lookupOne or lookupBatch, which find the
// namespace's snapshot (once per request), route through its release, answer, and
// count; each protocol then only writes the Answer its own way. So a fallback, a
// staleness rule, an error code or a release arm cannot differ between the two.

// findNamespace is the served namespace called name, or not_found.
func (s *Service) findNamespace(name string) (*namespace, *apiError) {
	n, ok := s.ns[name]
	if !ok {
		if err := writers.ValidateNamespace(name); err != nil {
			return nil, errorf(CodeNotFound, "no namespace %q: names are 1-63 characters of a-z, 0-9, '_', '.', '-'", name)
		}
		return nil, errorf(CodeNotFound, "namespace %q is not served here", name)
	}
	return n, nil
}

// snapshotOf loads the namespace's snapshot, once per request, or says why there is
// none (unavailable).
func (s *Service) snapshotOf(n *namespace) (*Snapshot, *apiError) {
	sn := n.snap.Load()
	if sn == nil {
		msg := "namespace %s has no live version yet"
		switch {
		case n.src.Load() == nil:
			msg = "the store of %s is unavailable: connecting to it"
		case !n.loaded.Load():
			msg = "namespace %s: live version not loaded yet"
		}
		return nil, errorf(CodeUnavailable, msg, n.name)
	}
	return sn, nil
}

// checkKey is a key's problem as an invalid_argument, or nil.
func checkKey(key string) *apiError {
	if len(key) > 0 && len(key) <= writers.MaxKeyLen && utf8.ValidString(key) {
		return nil // writers.ValidateKey's checks, without converting key to bytes
	}
	if err := writers.ValidateKey([]byte(key)); err != nil {
		return errorf(CodeInvalid, "%v", trimInvalid(err))
	}
	return nil
}

// segmentOf is the request's segment as the namespace reads it: none unless its
// fallback names a segment_param.
func segmentOf(n *namespace, segment string) string {
	if n.cfg.Fallback.SegmentParam == "" {
		return ""
	}
	return segment
}

// oneAnswer is what lookupOne found: the answer, the snapshot of the arm that answered
// (its Staticref-Version), and the release and arm that routed it (arm -1: none).
type oneAnswer struct {
	Answer
	sn  *Snapshot
	rel *releaseView
	arm int
}

// lookupOne answers one (validated) key of n for either protocol. unit is what a release
// routes by ("": the key). A precomputed answer points into sc. On success the answer is
// counted by source; the caller records latency and, once the answer is written, calls
// s.shadow.
func (s *Service) lookupOne(ctx context.Context, n *namespace, key, unit string, req request, sc *scratch) (oneAnswer, *apiError) {
	sn, aerr := s.snapshotOf(n)
	if aerr != nil {
		return oneAnswer{arm: -1}, aerr
	}
	// The release in the snapshot picks the arm, and the arm the version (release.go).
	o := oneAnswer{sn: sn, arm: -1, rel: sn.rel}
	if rel := o.rel; rel != nil && rel.routing {
		if unit == "" {
			unit = key
		}
		var h uint64
		o.sn, o.arm, h = rel.route(sn, unit)
		if rel.ab {
			rel.c.units[o.arm].insert(h)
		}
	}
	a, missing, aerr := s.answer(ctx, n, o.sn, key, req, sc)
	o.Answer = a
	if o.arm >= 0 {
		o.rel.count(o.arm, missing, aerr != nil && failedCode(aerr.code), precomputedValue(&o.Answer))
		o.Arm = armNames[o.arm]
	}
	if aerr != nil {
		return o, aerr
	}
	n.met.answer(o.Source)
	return o, nil
}

// shadow offers a written single answer to a running shadow's comparison, if sampled.
func (s *Service) shadow(n *namespace, o *oneAnswer) {
	if rel := o.rel; rel != nil && rel.shadow && o.Source == SourcePrecomputed && rel.sampled() {
		s.shadowOffer(n, rel, o.Key, o.Value) // after the answer is written: never delays it
	}
}

// batchAnswer is what lookupBatch found: the answers, from the snapshot sn (one version
// for the whole answer, but for the candidate arm's keys while a release routes), and
// what shadowBatch needs.
type batchAnswer struct {
	sn      *Snapshot
	stale   bool
	answers []Answer
	missing []bool // nil while a release routes
	rel     *releaseView
}

// checkBatchSize is the problem of a batch of n keys, or nil.
func (s *Service) checkBatchSize(n int) *apiError {
	switch {
	case n == 0:
		return errorf(CodeInvalid, `body: want {"keys": ["k1", ...]} with at least one key`)
	case n > s.cfg.MaxBatch:
		return errorf(CodeInvalid, "batch of %d keys: at most %d (max_batch)", n, s.cfg.MaxBatch)
	}
	return nil
}

// lookupBatch answers keys of n for either protocol; features are, per key, what an
// online prediction of a key the version lacks uses. unit is what a release routes every
// key by ("": each key by itself). It checks the request first: the batch's size, every
// key, every key of features among keys and, when the namespace predicts online, every
// key's features.
func (s *Service) lookupBatch(ctx context.Context, n *namespace, keys []string, unit string, req request, features map[string]map[string]float64) (batchAnswer, *apiError) {
	if err := s.checkBatchSize(len(keys)); err != nil {
		return batchAnswer{}, err
	}
	asked := make(map[string]bool, len(keys))
	for i, k := range keys {
		if err := writers.ValidateKey([]byte(k)); err != nil {
			return batchAnswer{}, errorf(CodeInvalid, "keys[%d]: %v", i, trimInvalid(err))
		}
		asked[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(features)) {
		if !asked[k] {
			return batchAnswer{}, errorf(CodeInvalid, "features[%q]: the key is not among keys", k)
		}
	}
	sn, aerr := s.snapshotOf(n)
	if aerr != nil {
		return batchAnswer{}, aerr
	}
	if n.online != nil { // features are used, so checked before anything is read
		for _, k := range keys {
			f, ok := features[k]
			switch {
			case !ok:
			case f == nil:
				return batchAnswer{}, errorf(CodeInvalid, `features[%q]: want an object of feature values, {"f0": 1.5, ...}`, k)
			default:
				if err := checkFeatures(sn.Manifest, f); err != nil {
					return batchAnswer{}, errorf(CodeInvalid, "features[%q]: %v", k, err)
				}
			}
		}
	}
	b := batchAnswer{sn: sn, rel: sn.rel}
	if b.rel != nil && b.rel.routing {
		b.answers, aerr = s.routedBatch(ctx, n, sn, b.rel, keys, unit, req, features)
	} else {
		b.answers, b.missing, aerr = s.batch(ctx, n, sn, keys, req, features)
	}
	if aerr != nil {
		return batchAnswer{}, aerr
	}
	_, b.stale = s.stale(n, sn)
	return b, nil
}

// shadowBatch offers a written batch's sampled answers to a running shadow.
func (s *Service) shadowBatch(n *namespace, b *batchAnswer) {
	rel := b.rel
	if rel == nil || !rel.shadow || b.missing == nil {
		return
	}
	for i := range b.answers {
		if !b.missing[i] && b.answers[i].Source == SourcePrecomputed && rel.sampled() {
			s.shadowOffer(n, rel, b.answers[i].Key, b.answers[i].Value)
		}
	}
}
