package inference

import (
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// ErrClosed reports use of a closed model or session.
var ErrClosed = errors.New("inference: closed")

// outputKinds maps the element types a Session can store to ONNX Runtime's.
var outputKinds = map[string]ort.TensorElementDataType{
	"float32": ort.TensorElementDataTypeFloat,
	"float64": ort.TensorElementDataTypeDouble,
	"int8":    ort.TensorElementDataTypeInt8,
	"int16":   ort.TensorElementDataTypeInt16,
	"int32":   ort.TensorElementDataTypeInt32,
	"int64":   ort.TensorElementDataTypeInt64,
	"uint8":   ort.TensorElementDataTypeUint8,
	"uint16":  ort.TensorElementDataTypeUint16,
	"uint32":  ort.TensorElementDataTypeUint32,
	"uint64":  ort.TensorElementDataTypeUint64,
}

// Session runs batches through one ONNX Runtime session. It is owned by one
// worker: its methods must not be called concurrently.
//
// Buffers are allocated once, in NewSession, for the model's largest batch:
// the input, and one buffer per output in the output's own element type
// (plus a float32 copy when that type is not float32). Each Run wraps
// sub-slices of them in ONNX Runtime tensors and destroys the tensors after,
// so ONNX Runtime writes straight into Go memory and nothing is allocated per
// row. A model with a fixed batch dimension B is run in chunks of B rows,
// with the last chunk padded with zero rows whose outputs are ignored.
type Session struct {
	m       *Model
	sess    *ort.DynamicAdvancedSession
	chunk   int // rows per ONNX Runtime run; 0 = all rows at once
	input   []float32
	outs    []outBuf
	results [][]float32
	inVals  []ort.Value
	outVals []ort.Value
}

// outBuf is one output's reused storage.
type outBuf interface {
	// tensor wraps values [off, off+count) in a tensor of the given shape.
	tensor(shape ort.Shape, off, count int) (ort.Value, error)
	// float32s returns the first n values as float32.
	float32s(n int) []float32
}

type numeric interface{ ort.FloatData | ort.IntData }

type typedBuf[T numeric] struct {
	raw  []T
	conv []float32
}

func (b *typedBuf[T]) tensor(shape ort.Shape, off, count int) (ort.Value, error) {
	return ort.NewTensor(shape, b.raw[off:off+count])
}

func (b *typedBuf[T]) float32s(n int) []float32 {
	for i, v := range b.raw[:n] {
		b.conv[i] = float32(v)
	}
	return b.conv[:n]
}

// float32Buf needs no conversion.
type float32Buf struct{ raw []float32 }

func (b *float32Buf) tensor(shape ort.Shape, off, count int) (ort.Value, error) {
	return ort.NewTensor(shape, b.raw[off:off+count])
}

func (b *float32Buf) float32s(n int) []float32 { return b.raw[:n] }

func newTyped[T numeric](n int) outBuf {
	return &typedBuf[T]{raw: make([]T, n), conv: make([]float32, n)}
}

func newOutBuf(t ort.TensorElementDataType, n int) outBuf {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return &float32Buf{raw: make([]float32, n)}
	case ort.TensorElementDataTypeDouble:
		return newTyped[float64](n)
	case ort.TensorElementDataTypeInt8:
		return newTyped[int8](n)
	case ort.TensorElementDataTypeInt16:
		return newTyped[int16](n)
	case ort.TensorElementDataTypeInt32:
		return newTyped[int32](n)
	case ort.TensorElementDataTypeInt64:
		return newTyped[int64](n)
	case ort.TensorElementDataTypeUint8:
		return newTyped[uint8](n)
	case ort.TensorElementDataTypeUint16:
		return newTyped[uint16](n)
	case ort.TensorElementDataTypeUint32:
		return newTyped[uint32](n)
	case ort.TensorElementDataTypeUint64:
		return newTyped[uint64](n)
	}
	panic(fmt.Sprintf("inference: no buffer for element type %v", t))
}

// NewSession makes a session for one worker, with buffers for the model's
// batch size.
func (m *Model) NewSession() (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("new session for %s: %w", m.Info.Path, ErrClosed)
	}
	sess, err := m.newORTSession(m.Device)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Info.Path, err)
	}
	rows := m.batchSize
	if m.fixedBatch > 0 {
		rows = (rows + m.fixedBatch - 1) / m.fixedBatch * m.fixedBatch
	}
	s := &Session{
		m:       m,
		sess:    sess,
		chunk:   m.fixedBatch,
		input:   make([]float32, rows*m.features),
		outs:    make([]outBuf, len(m.Outputs)),
		results: make([][]float32, len(m.Outputs)),
		inVals:  make([]ort.Value, 1),
		outVals: make([]ort.Value, len(m.Outputs)),
	}
	for i, o := range m.Outputs {
		s.outs[i] = newOutBuf(m.elemTypes[i], rows*o.Width)
	}
	return s, nil
}

// Input returns the session's input buffer for n rows: row-major, n*Features
// values, reused by every call. Callers pack features into it, then Run(n).
// It panics when n is outside [0, BatchSize].
func (s *Session) Input(n int) []float32 {
	if n < 0 || n > s.m.batchSize {
		panic(fmt.Sprintf("inference: Input(%d) outside batch size %d", n, s.m.batchSize))
	}
	return s.input[:n*s.m.features]
}

// Run runs the first n packed rows and returns one slice per selected
// output, in Model.Outputs order, each n*Width float32 values row-major.
// The slices are reused: they are valid until the next Run.
func (s *Session) Run(n int) ([][]float32, error) {
	if s.sess == nil {
		return nil, fmt.Errorf("run: %w", ErrClosed)
	}
	if n < 0 || n > s.m.batchSize {
		return nil, fmt.Errorf("run %d rows: batch size is %d", n, s.m.batchSize)
	}
	if n > 0 {
		if err := s.run(n); err != nil {
			return nil, fmt.Errorf("run %s: %w", s.m.Info.Path, err)
		}
	}
	for i, o := range s.m.Outputs {
		s.results[i] = s.outs[i].float32s(n * o.Width)
	}
	return s.results, nil
}

func (s *Session) run(n int) error {
	f := s.m.features
	chunk, rows := n, n
	if s.chunk > 0 {
		chunk = s.chunk
		rows = (n + chunk - 1) / chunk * chunk
		clear(s.input[n*f : rows*f])
	}
	for off := 0; off < rows; off += chunk {
		if err := s.runChunk(off, chunk); err != nil {
			return err
		}
	}
	return nil
}

// runChunk runs rows [off, off+count) and destroys the tensors it made.
func (s *Session) runChunk(off, count int) (err error) {
	f := s.m.features
	defer func() {
		for i, v := range s.outVals {
			if v != nil {
				v.Destroy()
				s.outVals[i] = nil
			}
		}
		if s.inVals[0] != nil {
			s.inVals[0].Destroy()
			s.inVals[0] = nil
		}
	}()
	in, err := ort.NewTensor(ort.Shape{int64(count), int64(f)}, s.input[off*f:(off+count)*f])
	if err != nil {
		return fmt.Errorf("input tensor: %w", err)
	}
	s.inVals[0] = in
	for i, o := range s.m.Outputs {
		shape := ort.Shape{int64(count), int64(o.Width)}
		if s.m.ranks[i] == 1 {
			shape = ort.Shape{int64(count)}
		}
		v, err := s.outs[i].tensor(shape, off*o.Width, count*o.Width)
		if err != nil {
			return fmt.Errorf("output %q tensor: %w", o.Name, err)
		}
		s.outVals[i] = v
	}
	return s.sess.Run(s.inVals, s.outVals)
}

// Close releases the session's ONNX Runtime resources.
func (s *Session) Close() error {
	if s.sess == nil {
		return nil
	}
	err := s.sess.Destroy()
	s.sess = nil
	if err != nil {
		return fmt.Errorf("close session: %w", err)
	}
	return nil
}
