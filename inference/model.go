package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// Devices accepted in Options.Device.
const (
	DeviceAuto = "auto"
	DeviceCPU  = "cpu"
	DeviceCUDA = "cuda"
)

// Options says how a job will use a model.
type Options struct {
	Input          string   // input tensor; "" = the model's only input
	Outputs        []string // outputs to compute; nil = every numeric tensor output
	Features       int      // values the job feeds per row
	BatchSize      int      // most rows per Run
	IntraOpThreads int      // threads per session; 0 = ONNX Runtime's default
	Device         string   // "auto", "cpu" or "cuda"; "" = "auto"
}

// Output is one selected model output.
type Output struct {
	Name  string
	Width int // values per row
}

// Model is a model checked against Options and ready to make sessions. It is
// safe for concurrent use; the sessions it makes are not.
type Model struct {
	Info    ModelInfo
	Input   string
	Outputs []Output
	Device  string // the device in use: "cpu" or "cuda"

	data       []byte
	features   int
	batchSize  int
	fixedBatch int // the input's fixed batch dimension, 0 when dynamic
	elemTypes  []ort.TensorElementDataType
	ranks      []int
	threads    int

	mu     sync.Mutex
	closed bool
}

// Load reads the model at path (a regular file of at most MaxModelBytes, read
// under ctx) and checks it against opts before any data is read: the input exists and is a float32 [batch, Features] tensor, and
// every selected output exists and is a numeric tensor of rank 1 or 2 over
// the batch. Errors name the file and the job field to fix.
//
// With Device "auto" Load tries the CUDA execution provider and falls back
// to the CPU with a log line saying why; with "cuda" an unavailable CUDA
// provider is an error.
func Load(ctx context.Context, path string, opts Options) (*Model, error) {
	if err := checkOptions(opts); err != nil {
		return nil, misfit{fmt.Errorf("model %s: %w", path, err)}
	}
	data, err := readModel(ctx, path)
	if err != nil {
		return nil, err
	}
	info, err := inspectData(path, data)
	if err != nil {
		return nil, err
	}
	m := &Model{
		Info:      *info,
		data:      data,
		features:  opts.Features,
		batchSize: opts.BatchSize,
		threads:   opts.IntraOpThreads,
	}
	if err := m.selectInput(opts); err != nil {
		return nil, misfit{fmt.Errorf("model %s: %w", path, err)}
	}
	if err := m.selectOutputs(opts); err != nil {
		return nil, misfit{fmt.Errorf("model %s: %w", path, err)}
	}
	if err := m.selectDevice(opts.Device); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	return m, nil
}

// Widths a Load accepts. Every worker's session holds, for each selected output, a
// buffer of batch_size rows of the output's width (and a float32 copy), and the
// pipeline as much again per chunk, all allocated before the first row is read; and one
// stored value holds every selected output of a row. So a width is checked, from the
// model's declared shapes, before anything is allocated: a model with a 100,000-wide
// output took over 3 GB for 4,000 rows.
const (
	// MaxOutputWidth is the most values one output may give a row: 4096 (16 KiB a row
	// as float32, about 64 KiB as JSON).
	MaxOutputWidth = 4096
	// MaxValueWidth is the most values the selected outputs together may give a row:
	// what one stored value holds.
	MaxValueWidth = 4096
)

// ErrTooWide is matched by every *WidthError.
var ErrTooWide = errors.New("inference: output too wide")

// WidthError is an output wider than MaxOutputWidth, or the output that takes the
// selected outputs together over MaxValueWidth. It is a misfit.
type WidthError struct {
	Output string
	Width  int // the output's values per row
	Total  int // with the outputs selected before it; 0 for an output too wide alone
}

func (e *WidthError) Error() string {
	if e.Total == 0 {
		return fmt.Sprintf("output %q gives %d values a row, over the %d staticref stores of one output (MaxOutputWidth): leave it out of model.outputs, or use a narrower model",
			e.Output, e.Width, MaxOutputWidth)
	}
	return fmt.Sprintf("output %q (%d values a row) takes the outputs to %d values a row, over the %d one stored value holds (MaxValueWidth): select fewer outputs (model.outputs)",
		e.Output, e.Width, e.Total, MaxValueWidth)
}

// Is makes a WidthError match ErrTooWide and ErrMisfit.
func (e *WidthError) Is(target error) bool { return target == ErrTooWide || target == ErrMisfit }

// ErrMisfit marks a Load error that no retry can mend: the model file is missing or
// is not ONNX, or its input or outputs do not fit the job's options. An unreadable file,
// a missing runtime or an unavailable CUDA device are not misfits.
var ErrMisfit = errors.New("inference: the model does not fit the job")

// misfit wraps an error so that it also matches ErrMisfit; its message is the error's.
type misfit struct{ error }

func (m misfit) Is(target error) bool { return target == ErrMisfit }
func (m misfit) Unwrap() error        { return m.error }

func checkOptions(opts Options) error {
	var errs []error
	if opts.Features <= 0 {
		errs = append(errs, fmt.Errorf("job feeds %d values per row, want at least 1 (source.features)", opts.Features))
	}
	if opts.BatchSize <= 0 {
		errs = append(errs, fmt.Errorf("batch size %d, want at least 1 (model.batch_size)", opts.BatchSize))
	}
	if opts.IntraOpThreads < 0 {
		errs = append(errs, fmt.Errorf("intra-op threads %d, want 0 (default) or more", opts.IntraOpThreads))
	}
	switch opts.Device {
	case "", DeviceAuto, DeviceCPU, DeviceCUDA:
	default:
		errs = append(errs, fmt.Errorf("device %q, want auto, cpu or cuda (model.device)", opts.Device))
	}
	return errors.Join(errs...)
}

func names(ts []TensorInfo) string {
	ns := make([]string, len(ts))
	for i, t := range ts {
		ns[i] = fmt.Sprintf("%q", t.Name)
	}
	return strings.Join(ns, ", ")
}

func (m *Model) selectInput(opts Options) error {
	ins := m.Info.Inputs
	var in *TensorInfo
	switch {
	case opts.Input != "":
		i := slices.IndexFunc(ins, func(t TensorInfo) bool { return t.Name == opts.Input })
		if i < 0 {
			return fmt.Errorf("input %q not found; the model's inputs are %s (model.input)", opts.Input, names(ins))
		}
		in = &ins[i]
	case len(ins) == 1:
		in = &ins[0]
	case len(ins) == 0:
		return errors.New("model has no inputs")
	default:
		return fmt.Errorf("model has %d inputs (%s): name one in model.input", len(ins), names(ins))
	}
	if in.Kind != "tensor" {
		return fmt.Errorf("input %q is a %s, staticref feeds a float32 tensor (model.input)", in.Name, in.Kind)
	}
	if in.ElemType != "float32" {
		return fmt.Errorf("input %q takes %s, staticref feeds float32 (model.input)", in.Name, in.ElemType)
	}
	if len(in.Shape) != 2 {
		return fmt.Errorf("input %q has shape %v, want [batch, features] (model.input)", in.Name, in.Shape)
	}
	if w := in.Shape[1]; w >= 0 && w != int64(opts.Features) {
		return fmt.Errorf("input %q takes %d values per row, job feeds %d (source.features)", in.Name, w, opts.Features)
	}
	switch b := in.Shape[0]; {
	case b < 0:
	case b == 0:
		return fmt.Errorf("input %q has shape %v: batch dimension 0 (model.input)", in.Name, in.Shape)
	default:
		m.fixedBatch = int(b)
	}
	m.Input = in.Name
	return nil
}

// outputProblem says why an output cannot be stored, or returns "" and the
// output's width when it can.
func (m *Model) outputProblem(t TensorInfo) (string, int) {
	if t.Kind != "tensor" {
		return fmt.Sprintf("is a %s, not a tensor; staticref stores numeric tensors", t.Kind), 0
	}
	if _, ok := outputKinds[t.ElemType]; !ok {
		return fmt.Sprintf("holds %s values; staticref stores numeric tensors", t.ElemType), 0
	}
	if len(t.Shape) != 1 && len(t.Shape) != 2 {
		return fmt.Sprintf("has shape %v; staticref stores tensors of shape [batch] or [batch, width]", t.Shape), 0
	}
	if b := t.Shape[0]; b >= 0 && b != int64(m.fixedBatch) {
		return fmt.Sprintf("has shape %v, whose first dimension is not the batch", t.Shape), 0
	}
	if len(t.Shape) == 1 {
		return "", 1
	}
	if t.Shape[1] <= 0 {
		return fmt.Sprintf("has shape %v, whose width is not fixed", t.Shape), 0
	}
	return "", int(t.Shape[1])
}

func (m *Model) selectOutputs(opts Options) error {
	if err := m.pickOutputs(opts); err != nil {
		return err
	}
	total := 0
	for _, o := range m.Outputs {
		if o.Width > MaxOutputWidth {
			return &WidthError{Output: o.Name, Width: o.Width}
		}
		if total += o.Width; total > MaxValueWidth {
			return &WidthError{Output: o.Name, Width: o.Width, Total: total}
		}
	}
	return nil
}

func (m *Model) pickOutputs(opts Options) error {
	outs := m.Info.Outputs
	add := func(t TensorInfo, width int) {
		m.Outputs = append(m.Outputs, Output{Name: t.Name, Width: width})
		m.elemTypes = append(m.elemTypes, outputKinds[t.ElemType])
		m.ranks = append(m.ranks, len(t.Shape))
	}
	if opts.Outputs == nil {
		for _, t := range outs {
			problem, width := m.outputProblem(t)
			if problem != "" {
				slog.Warn("skipping model output", "model", m.Info.Path, "output", t.Name, "reason", problem)
				continue
			}
			add(t, width)
		}
		if len(m.Outputs) == 0 {
			return fmt.Errorf("no numeric tensor outputs among %s", names(outs))
		}
		return nil
	}
	if len(opts.Outputs) == 0 {
		return errors.New("no outputs selected (model.outputs)")
	}
	var errs []error
	for i, name := range opts.Outputs {
		if slices.Contains(opts.Outputs[:i], name) {
			errs = append(errs, fmt.Errorf("output %q is selected twice (model.outputs)", name))
			continue
		}
		j := slices.IndexFunc(outs, func(t TensorInfo) bool { return t.Name == name })
		if j < 0 {
			errs = append(errs, fmt.Errorf("output %q not found; the model's outputs are %s (model.outputs)", name, names(outs)))
			continue
		}
		problem, width := m.outputProblem(outs[j])
		if problem != "" {
			errs = append(errs, fmt.Errorf("output %q %s (model.outputs)", name, problem))
			continue
		}
		add(outs[j], width)
	}
	return errors.Join(errs...)
}

// selectDevice settles which execution provider sessions use. CUDA is
// proven by building a throwaway session with it: appending the provider can
// succeed and session creation still fail when CUDA libraries are missing.
func (m *Model) selectDevice(device string) error {
	if device == DeviceCPU {
		m.Device = DeviceCPU
		return nil
	}
	s, err := m.probeCUDA()
	if err == nil {
		m.Device = DeviceCUDA
		return s.Destroy()
	}
	if device == DeviceCUDA {
		return fmt.Errorf("device cuda: CUDA execution provider unavailable (set model.device to auto or cpu): %w", err)
	}
	slog.Info("CUDA execution provider unavailable, running on CPU", "model", m.Info.Path, "reason", err.Error())
	m.Device = DeviceCPU
	return nil
}

// cudaProvider is the library ONNX Runtime loads the CUDA execution
// provider from; it sits beside libonnxruntime.so in builds that have one.
const cudaProvider = "libonnxruntime_providers_cuda.so"

// probeCUDA builds a session on CUDA. A CPU-only runtime (the one `make ort`
// installs) has no CUDA provider library: say so plainly, rather than let
// ONNX Runtime fail to dlopen it and print its own error on stderr.
func (m *Model) probeCUDA() (*ort.DynamicAdvancedSession, error) {
	provider := filepath.Join(filepath.Dir(loaded), cudaProvider)
	if _, err := os.Stat(provider); err != nil {
		return nil, fmt.Errorf("%s not found beside %s: this ONNX Runtime build is CPU-only", cudaProvider, loaded)
	}
	return m.newORTSession(DeviceCUDA)
}

// newORTSession builds an ONNX Runtime session for the selected input and
// outputs on device.
func (m *Model) newORTSession(device string) (*ort.DynamicAdvancedSession, error) {
	so, err := sessionOptions(m.threads, device)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	outNames := make([]string, len(m.Outputs))
	for i, o := range m.Outputs {
		outNames[i] = o.Name
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(m.data, []string{m.Input}, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return s, nil
}

// sessionOptions are the options of every session: intra-op threads (0: ONNX Runtime's
// default), no spinning, and the CUDA provider when device is cuda. The caller destroys
// them.
func sessionOptions(threads int, device string) (_ *ort.SessionOptions, err error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer func() {
		if err != nil {
			so.Destroy()
		}
	}()
	if threads > 0 {
		if err := so.SetIntraOpNumThreads(threads); err != nil {
			return nil, fmt.Errorf("set intra-op threads: %w", err)
		}
	}
	// ONNX Runtime's pool threads spin while waiting for work, by default. Here the
	// cores are shared with the readers, the encoders, the store and the other workers'
	// sessions, and the spinning takes CPU from all of them: make bench, MLP on Pebble
	// with intra_op_threads 2 and 2 workers, ran the pipeline at 545-584k rows/s
	// spinning and 788-793k without (3.0 µs of CPU a row spinning, 2.0 without). With
	// one thread (the default) there is no pool and this changes nothing.
	for _, key := range spinKeys {
		if err := so.AddSessionConfigEntry(key, "0"); err != nil {
			return nil, fmt.Errorf("set %s: %w", key, err)
		}
	}
	if device == DeviceCUDA {
		cuda, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return nil, fmt.Errorf("cuda provider options: %w", err)
		}
		defer cuda.Destroy()
		if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
			return nil, fmt.Errorf("append cuda provider: %w", err)
		}
	}
	return so, nil
}

// spinKeys are the session config entries that turn thread-pool spinning off.
var spinKeys = []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"}

// Close releases the model. Sessions made from it must be closed by their
// owners; Close does not reach into them.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.data = nil
	return nil
}
