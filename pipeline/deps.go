package pipeline

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/writers"
)

// Input is what the pipeline needs from one input file (satisfied by *readers.File).
type Input interface {
	Info() readers.FileInfo
	Width() int
	ReadRowGroup(ctx context.Context, rg int, fn func(*readers.Batch) error) error
	Close() error
}

// Predictor is one worker's inference session (satisfied by *inference.Session).
type Predictor interface {
	// Input returns the buffer for n rows of packed features, row-major.
	Input(n int) []float32
	// Run scores the first n rows and returns one slice per output (n*Width values).
	Run(n int) ([][]float32, error)
	Close() error
}

// Model is a loaded model, checked against the job's features.
type Model struct {
	Info         writers.ModelInfo
	Input        string
	Width        int // features per row
	Outputs      []writers.Output
	Device       string
	NewPredictor func() (Predictor, error)
	Close        func() error
}

// Deps are the parts a run is built from. Tests of this package substitute fakes; real
// runs use Default.
type Deps struct {
	// OpenInput opens one input file and checks its schema. An object's reads go on under
	// ctx (the run's), so a cancelled run stops a read in flight.
	OpenInput func(ctx context.Context, path string, opts readers.Options) (Input, error)
	// LoadModel loads the job's model for rows of width features, reading it under ctx.
	LoadModel func(ctx context.Context, path string, opts inference.Options) (*Model, error)
}

// Default wires the real Parquet reader and ONNX Runtime.
func Default() Deps {
	return Deps{
		OpenInput: func(ctx context.Context, path string, opts readers.Options) (Input, error) {
			return readers.OpenContext(ctx, path, opts)
		},
		LoadModel: loadModel,
	}
}

// named makes an error about src, a local copy of the model object at path, name the
// object (SCHEME://BUCKET/KEY, without the URL's options) instead of the copy, which is
// gone by the time anyone reads the message.
func named(err error, src, path string) error {
	if src == path {
		return err
	}
	name := path
	if o, perr := objstore.Parse(path); perr == nil {
		name = o.Name()
	}
	return &renamedError{msg: strings.ReplaceAll(err.Error(), src, name), err: err}
}

type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

func loadModel(ctx context.Context, path string, opts inference.Options) (*Model, error) {
	if err := inference.Init(); err != nil {
		return nil, err
	}
	src := path // what is read: path, or a local copy of an object
	if objstore.IsURL(path) {
		// A model in object storage is downloaded once per run under ctx, capped as a
		// local model is; inference loads it into memory, so the copy goes at once.
		tmp, err := objstore.Download(ctx, path, "staticref-model-*.onnx", inference.MaxModelBytes)
		if err != nil {
			return nil, fmt.Errorf("model %w", err)
		}
		defer os.Remove(tmp)
		src = tmp
	} else if p, ok := objstore.FilePath(path); ok {
		path, src = p, p
	}
	if opts.Features == 0 {
		// A variable-length list column: the model's declared input width decides, and
		// every row's list must have that many values.
		w, err := inputWidth(ctx, src, opts.Input)
		if err != nil {
			return nil, named(err, src, path)
		}
		opts.Features = w
	}
	m, err := inference.Load(ctx, src, opts)
	if err != nil {
		return nil, named(err, src, path)
	}
	info := writers.ModelInfo{Path: path, SHA256: m.Info.SHA256}
	for _, t := range m.Info.Inputs {
		info.Inputs = append(info.Inputs, writers.Tensor{Name: t.Name, Type: t.ElemType, Shape: t.Shape})
	}
	for _, t := range m.Info.Outputs {
		info.Outputs = append(info.Outputs, writers.Tensor{Name: t.Name, Type: t.ElemType, Shape: t.Shape})
	}
	outs := make([]writers.Output, len(m.Outputs))
	for i, o := range m.Outputs {
		outs[i] = writers.Output{Name: o.Name, Width: o.Width}
	}
	return &Model{
		Info:    info,
		Input:   m.Input,
		Width:   opts.Features,
		Outputs: outs,
		Device:  m.Device,
		NewPredictor: func() (Predictor, error) {
			return m.NewSession()
		},
		Close: m.Close,
	}, nil
}

// inputWidth is the fixed second dimension of the model's input.
func inputWidth(ctx context.Context, path, input string) (int, error) {
	info, err := inference.Inspect(ctx, path)
	if err != nil {
		return 0, err
	}
	for _, t := range info.Inputs {
		if (input == "" && len(info.Inputs) == 1) || t.Name == input {
			if len(t.Shape) == 2 && t.Shape[1] > 0 {
				return int(t.Shape[1]), nil
			}
			return 0, fmt.Errorf("model %s: input %q has no fixed width (%v); a variable-length list column (source.features) needs one", path, t.Name, t.Shape)
		}
	}
	return 0, fmt.Errorf("model %s: input %q not found (model.input)", path, input)
}
