package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/staticref/staticref/writers"
)

// fallbacks are a snapshot's cold-start answers, rendered once when the snapshot is
// built, so that a fallback answer costs no more than a cache hit.
type fallbacks struct {
	segments map[string]json.RawMessage // segment value -> the version's default
	def      json.RawMessage            // computed global or static default; nil: none
}

// prepare renders the snapshot's defaults for the namespace's fallback config. Defaults
// that do not fit the version's outputs are logged and left out.
func (sn *Snapshot) prepare(cfg *NamespaceConfig, log *slog.Logger) {
	fb := &fallbacks{segments: map[string]json.RawMessage{}}
	m := sn.Manifest
	if d := m.Defaults; d != nil {
		for seg, vals := range d.Segments {
			if v, err := writers.DefaultJSON(m.Outputs, vals); err == nil {
				fb.segments[seg] = v
			}
		}
	}
	switch cfg.Fallback.kind {
	case "computed":
		if m.Defaults != nil && m.Defaults.Global != nil {
			v, err := writers.DefaultJSON(m.Outputs, m.Defaults.Global)
			if err != nil {
				log.Warn("computed default does not fit the outputs", "namespace", sn.Namespace, "version", m.Version, "err", err)
			}
			fb.def = v
		}
	case "static":
		vals := map[string][]float64{}
		for _, o := range m.Outputs {
			if v, ok := cfg.Fallback.static[o.Name]; ok {
				vals[o.Name] = v
			} else if one, ok := cfg.Fallback.static["*"]; ok {
				vals[o.Name] = make([]float64, o.Width)
				for i := range vals[o.Name] {
					vals[o.Name][i] = one[0]
				}
			}
		}
		v, err := writers.DefaultJSON(m.Outputs, vals)
		if err != nil {
			log.Warn("fallback.default does not fit the live version's outputs", "namespace", sn.Namespace, "version", m.Version, "err", err)
		}
		fb.def = v
	}
	sn.fb = fb
}

// request is what one key's answer depends on besides the key.
type request struct {
	segment  string             // value of the segment parameter, "" if none
	features map[string]float64 // nil unless the request sent features
}

// apiError is an error answer: a code from the status table and a message for the
// client. Internal causes are logged, never put in message.
type apiError struct {
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(code, format string, args ...any) *apiError {
	return &apiError{code: code, message: fmt.Sprintf(format, args...)}
}

// storeError turns a failed store call into an answer and logs its cause.
func (s *Service) storeError(ns string, err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errStoreBusy):
		return errorf(CodeUnavailable, "the store of %s is busy (a run holds it); try again, or use `staticref versions`", ns)
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("store call timed out", "namespace", ns, "err", err)
		return errorf(CodeUnavailable, "the store of %s did not answer in time", ns)
	case errors.Is(err, context.Canceled):
		return errorf(CodeUnavailable, "request cancelled")
	}
	s.log.Error("store call failed", "namespace", ns, "err", err)
	return errorf(CodeUnavailable, "the store of %s is unavailable", ns)
}

// stale reports the snapshot's age and whether it is past max_staleness.
func (s *Service) stale(n *namespace, sn *Snapshot) (time.Time, bool) {
	now := s.now()
	return now, n.isStale(now.Sub(sn.Manifest.CompletedAt))
}

// answer answers one (already validated) key from the snapshot sn, which the caller
// loaded once for the whole request.
func (s *Service) answer(ctx context.Context, n *namespace, sn *Snapshot, key string, req request) (Answer, *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return Answer{}, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	a := Answer{Namespace: n.name, Key: key}
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		v, found, err := s.precomputed(ctx, n, sn, key)
		if err != nil {
			return a, err
		}
		if found {
			sn.fill(&a, v, SourcePrecomputed, now, stale)
			return a, nil
		}
	}
	return s.coldStart(ctx, n, sn, a, req, now, stale)
}

// precomputed reads key from the snapshot's version, through the cache.
func (s *Service) precomputed(ctx context.Context, n *namespace, sn *Snapshot, key string) (json.RawMessage, bool, *apiError) {
	ck := cacheKey(n.name, sn.Manifest.Version, key)
	if v, found, ok := s.cache.Get(ck); ok {
		s.met.hit()
		return v, found, nil
	}
	s.met.miss()
	sctx, cancel := s.storeCtx(ctx)
	raw, err := sn.Store.Get(sctx, n.name, sn.Manifest.Version, []byte(key))
	cancel()
	if errors.Is(err, writers.ErrNotFound) {
		s.cache.Put(ck, nil, false)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.storeError(n.name, err)
	}
	v, err := writers.ValueJSON(sn.Manifest, raw)
	if err != nil {
		s.log.Error("undecodable stored value", "namespace", n.name, "version", sn.Manifest.Version, "err", err)
		return nil, false, errorf(CodeInternal, "the stored value of this key cannot be decoded")
	}
	s.cache.Put(ck, v, true)
	return v, true, nil
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
// place; any other failure fails the batch.
func (s *Service) batch(ctx context.Context, n *namespace, sn *Snapshot, keys []string, req request, features map[string]map[string]float64) ([]Answer, *apiError) {
	now, stale := s.stale(n, sn)
	if stale && n.cfg.OnStale == OnStaleError {
		return nil, errorf(CodeStale, "version %s of %s is older than max_staleness %s", sn.Manifest.Version, n.name, time.Duration(n.cfg.MaxStaleness))
	}
	out := make([]Answer, len(keys))
	found := make([]bool, len(keys))
	vals := make([]json.RawMessage, len(keys))
	if !(stale && n.cfg.OnStale == OnStaleFallback) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(batchParallelism)
		for i, k := range keys {
			if v, f, ok := s.cache.Get(cacheKey(n.name, sn.Manifest.Version, k)); ok {
				s.met.hit()
				vals[i], found[i] = v, f
				continue
			}
			g.Go(func() error {
				v, f, err := s.precomputed(gctx, n, sn, k)
				if err != nil {
					return err
				}
				vals[i], found[i] = v, f
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err.(*apiError)
		}
	}
	// Keys the version lacks are answered concurrently: an online prediction runs the
	// model, and the namespace's session pool bounds how many run at once.
	fatal := make([]*apiError, len(keys))
	g := new(errgroup.Group)
	g.SetLimit(batchParallelism)
	for i, k := range keys {
		a := Answer{Namespace: n.name, Key: k}
		if found[i] {
			sn.fill(&a, vals[i], SourcePrecomputed, now, stale)
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
			return nil, err
		}
	}
	return out, nil
}
