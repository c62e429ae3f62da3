package lookup

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/writers"
)

// online predicts unknown keys from features sent with the request, with the
// namespace's model. A model is loaded per input signature (the live manifest's feature
// count and outputs), lazily, so a flip to a version with other features reloads it.
// Sessions are not safe for concurrent use: a fixed pool of them bounds the CPU that
// online answers may take, and a request waits for a free one (or its deadline).
type online struct {
	path, device string

	mu     sync.Mutex
	models map[string]*onlineModel
}

type onlineModel struct {
	model    *inference.Model
	outputs  []writers.Output
	sessions chan *inference.Session
	made     chan struct{} // tokens: sessions that may still be made
}

func newOnline(path, device string) *online {
	return &online{path: path, device: device, models: map[string]*onlineModel{}}
}

// errFeatures marks bad features in a request (400).
type errFeatures struct{ msg string }

func (e errFeatures) Error() string { return e.msg }

// checkFeatures returns an errFeatures naming what feats lacks of m's features.
func checkFeatures(m *writers.Manifest, feats map[string]float64) error {
	var missing []string
	for _, f := range m.Features {
		if _, ok := feats[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return errFeatures{fmt.Sprintf("missing %s (version %s needs %s)", strings.Join(missing, ", "), m.Version, strings.Join(m.Features, ", "))}
	}
	return nil
}

// predict answers one row. feats must hold every feature of the manifest.
func (o *online) predict(ctx context.Context, m *writers.Manifest, feats map[string]float64) (json.RawMessage, error) {
	if len(m.Features) == 0 {
		return nil, fmt.Errorf("version %s records no feature names", m.Version)
	}
	if err := checkFeatures(m, feats); err != nil {
		return nil, errFeatures{"features: " + err.Error()}
	}
	om, err := o.load(ctx, m)
	if err != nil {
		return nil, err
	}
	var s *inference.Session
	select {
	case s = <-om.sessions:
	case <-om.made:
		if s, err = om.model.NewSession(); err != nil {
			om.made <- struct{}{}
			return nil, fmt.Errorf("online model %s: %w", o.path, err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { om.sessions <- s }()
	in := s.Input(1)
	for i, f := range m.Features {
		in[i] = float32(feats[f])
	}
	outs, err := s.Run(1)
	if err != nil {
		return nil, fmt.Errorf("online model %s: %w", o.path, err)
	}
	vals := make(map[string][]float64, len(om.outputs))
	for k, out := range om.outputs {
		v := make([]float64, out.Width)
		for i := range v {
			v[i] = float64(outs[k][i])
		}
		vals[out.Name] = v
	}
	return writers.DefaultJSON(om.outputs, vals)
}

func (o *online) load(ctx context.Context, m *writers.Manifest) (*onlineModel, error) {
	names := make([]string, len(m.Outputs))
	for i, out := range m.Outputs {
		names[i] = out.Name
	}
	sig := fmt.Sprint(len(m.Features), names)
	o.mu.Lock()
	defer o.mu.Unlock()
	if om, ok := o.models[sig]; ok {
		return om, nil
	}
	if err := inference.Init(); err != nil {
		return nil, err
	}
	opts := inference.Options{Features: len(m.Features), BatchSize: 1, IntraOpThreads: 1, Device: o.device}
	if len(names) > 0 {
		opts.Outputs = slices.Clone(names)
	}
	model, err := inference.Load(ctx, o.path, opts)
	if err != nil {
		return nil, fmt.Errorf("online model for version %s: %w", m.Version, err)
	}
	n := runtime.GOMAXPROCS(0)
	om := &onlineModel{model: model, sessions: make(chan *inference.Session, n), made: make(chan struct{}, n)}
	for range n {
		om.made <- struct{}{}
	}
	for _, out := range model.Outputs {
		om.outputs = append(om.outputs, writers.Output{Name: out.Name, Width: out.Width})
	}
	o.models[sig] = om
	return om, nil
}

func (o *online) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, om := range o.models {
	drain:
		for {
			select {
			case s := <-om.sessions:
				s.Close()
			default:
				break drain
			}
		}
		om.model.Close()
	}
	o.models = map[string]*onlineModel{}
}

// finite reports whether every feature is a finite number.
func finite(feats map[string]float64) error {
	for k, v := range feats {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return errFeatures{fmt.Sprintf("features: %s is not a finite number", k)}
		}
	}
	return nil
}
