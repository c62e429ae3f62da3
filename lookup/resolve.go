package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/staticref/staticref/writers"
)

// ErrNoLiveVersion: the namespace has no live version yet.
var ErrNoLiveVersion = errors.New("lookup: namespace has no live version")

// Snapshot is one version of a namespace, fixed for the whole of a request so that no
// answer mixes two versions.
type Snapshot struct {
	Namespace string
	Manifest  *writers.Manifest
	// Store is where the version's rows are read from (nil: the caller passes one to Get).
	Store *writers.Store

	// chain is the version's chain, head first (ResolveChain): the versions a key is read
	// from, newest first; nil for a snapshot built without one (tests), which reads
	// Manifest alone. Resolved once per flip, with the snapshot, never per request.
	chain    []*writers.Manifest
	chainIDs []string

	fb *fallbacks // cold-start answers, rendered by prepare (service only)
	// rel is the namespace's release as this snapshot serves it (service only; nil: none).
	rel *releaseView
	// versionHeader is the Staticref-Version header's value, made once (prepare).
	versionHeader []string
}

// header is the Staticref-Version header value of sn's answers.
func (sn *Snapshot) header() []string {
	if sn.versionHeader != nil {
		return sn.versionHeader
	}
	return []string{sn.Manifest.Version}
}

// Resolve returns the live version of ns with its manifest.
func Resolve(ctx context.Context, s *writers.Store, ns string) (*Snapshot, error) {
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
	return newSnapshot(ctx, s, ns, m)
}

// newSnapshot is the snapshot of version m of ns, with its chain resolved.
func newSnapshot(ctx context.Context, s *writers.Store, ns string, m *writers.Manifest) (*Snapshot, error) {
	sn := &Snapshot{Namespace: ns, Manifest: m, Store: s, chainIDs: []string{m.Version}}
	if m.Incremental() {
		chain, err := writers.ResolveChain(ctx, s, ns, m)
		if err != nil {
			return nil, err
		}
		sn.chain, sn.chainIDs = chain, writers.ChainVersions(chain)
	}
	return sn, nil
}

// deep reports whether sn's version is an increment, read down a chain of versions.
func (sn *Snapshot) deep() bool { return len(sn.chainIDs) > 1 }

// level is the manifest of the version at index i of sn's chain.
func (sn *Snapshot) level(i int) *writers.Manifest {
	if i > 0 && i < len(sn.chain) {
		return sn.chain[i]
	}
	return sn.Manifest
}

// read reads keys from sn's version, down its chain: the raw values (nil: not found, or
// deleted) and the chain index of the version that answered each.
func (sn *Snapshot) read(ctx context.Context, s *writers.Store, keys [][]byte) ([][]byte, []int, error) {
	chain := sn.chainIDs
	if len(chain) == 0 { // a snapshot built by hand, in a test
		chain = []string{sn.Manifest.Version}
	}
	return s.GetChain(ctx, sn.Namespace, chain, keys)
}

// decode turns a raw value that level i of the chain answered into the answer's value.
func (sn *Snapshot) decode(raw []byte, i int) (json.RawMessage, error) {
	return writers.ValueJSON(sn.level(i), raw)
}

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
	sn.versionHeader = []string{m.Version}
}
