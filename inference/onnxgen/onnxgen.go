// Package onnxgen builds small ONNX models with known, seeded weights, for
// tests, benchmarks and `staticref testdata generate`.
//
// Every model is hand-encoded as an ONNX ModelProto (IR version 8, default
// opset 17; the ZipMap model also imports ai.onnx.ml opset 3) with
// protowire, so no Python or ONNX tooling is needed, and every model carries
// an independent float64 reference computation (Predict) over the same
// float32 weights, against which ONNX Runtime's answers can be checked.
//
// The package is pure Go and must never depend on ONNX Runtime or cgo: the
// runtime lives in the parent package, and checking it is the point.
package onnxgen

import (
	"fmt"
	"math"
	"os"
)

const (
	irVersion    = 8
	defaultOpset = 17
	mlOpset      = 3
	batchParam   = "N"
)

// Model is a generated ONNX model and its reference computation.
type Model struct {
	Name     string   // "logistic", "mlp", "embedding", "zipmap", "wide"
	Input    string   // input tensor name
	Features int      // input width F; input shape is [N (dynamic), F], float32
	Outputs  []string // tensor outputs, in graph order
	Bytes    []byte   // serialized ONNX ModelProto

	graph   *graph
	predict func(x []float64) map[string][]float64
}

// WithBatch returns a copy of m whose tensor inputs and outputs have the
// fixed batch dimension batch instead of the dynamic "N", like a model
// exported with a static batch size.
func (m *Model) WithBatch(batch int) *Model {
	if batch <= 0 {
		panic(fmt.Sprintf("onnxgen: batch %d, want at least 1", batch))
	}
	c := *m
	c.Outputs = append([]string(nil), m.Outputs...)
	c.Bytes = m.graph.model(batch)
	return &c
}

// Predict computes every tensor output for one row x (len Features) in
// float64 from the model's float32 weights: output name -> values, one per
// column of that output.
func (m *Model) Predict(x []float64) map[string][]float64 {
	if len(x) != m.Features {
		panic(fmt.Sprintf("onnxgen: %s model takes %d features, got %d", m.Name, m.Features, len(x)))
	}
	return m.predict(x)
}

// Write writes the serialized model to path.
func (m *Model) Write(path string) error {
	if err := os.WriteFile(path, m.Bytes, 0o644); err != nil {
		return fmt.Errorf("write %s model: %w", m.Name, err)
	}
	return nil
}

// rng is splitmix64: tiny, deterministic and good enough for weights.
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// weights returns n float32 values uniform in [-scale, scale].
func (r *rng) weights(n int, scale float64) []float32 {
	w := make([]float32, n)
	for i := range w {
		u := float64(r.next()>>11)/(1<<53)*2 - 1
		w[i] = float32(u * scale)
	}
	return w
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// linear computes x·W + b for W stored row-major as [len(x), len(b)].
func linear(x []float64, w, b []float32) []float64 {
	out := make([]float64, len(b))
	for j := range out {
		s := float64(b[j])
		for i, xi := range x {
			s += xi * float64(w[i*len(b)+j])
		}
		out[j] = s
	}
	return out
}

// Logistic is a logistic regression over features inputs: outputs "score"
// [N,1] = Sigmoid(MatMul(features, W) + b) and "logit" [N,1], the value
// before the sigmoid. W is uniform in [-0.01, 0.01] and b in [-0.5, 0.5], so
// integer features up to ~100 keep the sigmoid out of saturation for a
// handful of features.
func Logistic(features int, seed uint64) *Model {
	r := &rng{state: seed}
	w := r.weights(features, 0.01)
	b := r.weights(1, 0.5)
	g := &graph{
		name: "logistic",
		nodes: [][]byte{
			node("MatMul", "matmul", "", []string{"features", "W"}, []string{"xw"}),
			node("Add", "add", "", []string{"xw", "b"}, []string{"logit"}),
			node("Sigmoid", "sigmoid", "", []string{"logit"}, []string{"score"}),
		},
		initializers: [][]byte{
			floatTensor("W", []int64{int64(features), 1}, w),
			floatTensor("b", []int64{1}, b),
		},
		inputs:  []io{{name: "features", width: features}},
		outputs: []io{{name: "score", width: 1}, {name: "logit", width: 1}},
	}
	return &Model{
		Name:     "logistic",
		Input:    "features",
		Features: features,
		Outputs:  []string{"score", "logit"},
		Bytes:    g.model(0),
		graph:    g,
		predict: func(x []float64) map[string][]float64 {
			z := linear(x, w, b)[0]
			return map[string][]float64{"score": {sigmoid(z)}, "logit": {z}}
		},
	}
}

// MLP is a two-layer perceptron: Gemm(features -> hidden, transB=1), Relu,
// Gemm(hidden -> 2, transB=1), output "scores" [N,2]. First-layer weights are
// uniform in [-0.01, 0.01] (inputs may reach ~100), second-layer weights in
// [-1, 1]/sqrt(hidden), biases in [-0.1, 0.1].
func MLP(features, hidden int, seed uint64) *Model {
	r := &rng{state: seed}
	// Gemm with transB=1 takes B as [out, in]; keep the transposes for the
	// reference computation in [in, out] order.
	w1 := r.weights(hidden*features, 0.01)
	b1 := r.weights(hidden, 0.1)
	w2 := r.weights(2*hidden, 1/math.Sqrt(float64(hidden)))
	b2 := r.weights(2, 0.1)
	g := &graph{
		name: "mlp",
		nodes: [][]byte{
			node("Gemm", "gemm1", "", []string{"features", "W1", "B1"}, []string{"h"}, intAttr("transB", 1)),
			node("Relu", "relu", "", []string{"h"}, []string{"a"}),
			node("Gemm", "gemm2", "", []string{"a", "W2", "B2"}, []string{"scores"}, intAttr("transB", 1)),
		},
		initializers: [][]byte{
			floatTensor("W1", []int64{int64(hidden), int64(features)}, w1),
			floatTensor("B1", []int64{int64(hidden)}, b1),
			floatTensor("W2", []int64{2, int64(hidden)}, w2),
			floatTensor("B2", []int64{2}, b2),
		},
		inputs:  []io{{name: "features", width: features}},
		outputs: []io{{name: "scores", width: 2}},
	}
	w1t := transpose(w1, hidden, features)
	w2t := transpose(w2, 2, hidden)
	return &Model{
		Name:     "mlp",
		Input:    "features",
		Features: features,
		Outputs:  []string{"scores"},
		Bytes:    g.model(0),
		graph:    g,
		predict: func(x []float64) map[string][]float64 {
			h := linear(x, w1t, b1)
			for i, v := range h {
				h[i] = math.Max(v, 0)
			}
			return map[string][]float64{"scores": linear(h, w2t, b2)}
		},
	}
}

// transpose returns the [cols, rows] transpose of a row-major [rows, cols] matrix.
func transpose(m []float32, rows, cols int) []float32 {
	t := make([]float32, len(m))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			t[j*rows+i] = m[i*cols+j]
		}
	}
	return t
}

// Embedding scores an embedding vector: input "embedding" [N,dim], output
// "score" [N,1] = Sigmoid(MatMul(embedding, W) + b). W is uniform in
// [-1, 1]/sqrt(dim) and b in [-0.1, 0.1], for inputs of magnitude ~1.
func Embedding(dim int, seed uint64) *Model {
	r := &rng{state: seed}
	w := r.weights(dim, 1/math.Sqrt(float64(dim)))
	b := r.weights(1, 0.1)
	g := &graph{
		name: "embedding",
		nodes: [][]byte{
			node("MatMul", "matmul", "", []string{"embedding", "W"}, []string{"xw"}),
			node("Add", "add", "", []string{"xw", "b"}, []string{"logit"}),
			node("Sigmoid", "sigmoid", "", []string{"logit"}, []string{"score"}),
		},
		initializers: [][]byte{
			floatTensor("W", []int64{int64(dim), 1}, w),
			floatTensor("b", []int64{1}, b),
		},
		inputs:  []io{{name: "embedding", width: dim}},
		outputs: []io{{name: "score", width: 1}},
	}
	return &Model{
		Name:     "embedding",
		Input:    "embedding",
		Features: dim,
		Outputs:  []string{"score"},
		Bytes:    g.model(0),
		graph:    g,
		predict: func(x []float64) map[string][]float64 {
			return map[string][]float64{"score": {sigmoid(linear(x, w, b)[0])}}
		},
	}
}

// ZipMapClassifier is a two-class softmax classifier shaped like an sklearn
// export: graph outputs "proba_map", a ZipMap(classlabels_int64s=[0,1]) of the
// probabilities of type seq(map(int64, float)), then "probabilities" [N,2] =
// Softmax(MatMul(features, W) + b). Only "probabilities" is a tensor, so it is
// the only name in Outputs. W is uniform in [-0.01, 0.01], b in [-0.5, 0.5].
func ZipMapClassifier(features int, seed uint64) *Model {
	r := &rng{state: seed}
	w := r.weights(2*features, 0.01)
	b := r.weights(2, 0.5)
	g := &graph{
		name: "zipmap",
		nodes: [][]byte{
			node("MatMul", "matmul", "", []string{"features", "W"}, []string{"xw"}),
			node("Add", "add", "", []string{"xw", "b"}, []string{"logits"}),
			node("Softmax", "softmax", "", []string{"logits"}, []string{"probabilities"}, intAttr("axis", -1)),
			node("ZipMap", "zipmap", "ai.onnx.ml", []string{"probabilities"}, []string{"proba_map"},
				intsAttr("classlabels_int64s", []int64{0, 1})),
		},
		initializers: [][]byte{
			floatTensor("W", []int64{int64(features), 2}, w),
			floatTensor("b", []int64{2}, b),
		},
		inputs: []io{{name: "features", width: features}},
		outputs: []io{
			{name: "proba_map", typ: seqMapType(dtInt64, tensorType(dtFloat, nil))},
			{name: "probabilities", width: 2},
		},
		mlOpset: true,
	}
	return &Model{
		Name:     "zipmap",
		Input:    "features",
		Features: features,
		Outputs:  []string{"probabilities"},
		Bytes:    g.model(0),
		graph:    g,
		predict: func(x []float64) map[string][]float64 {
			z := linear(x, w, b)
			m := math.Max(z[0], z[1])
			e0, e1 := math.Exp(z[0]-m), math.Exp(z[1]-m)
			return map[string][]float64{"probabilities": {e0 / (e0 + e1), e1 / (e0 + e1)}}
		},
	}
}

// Wide is a linear layer of many outputs: input "features" [N,features], output "wide"
// [N,width] = MatMul(features, W), W uniform in [-0.01, 0.01]. A width in the
// hundreds of thousands makes the hostile model of a test: its weights are
// features*width floats, its output buffers batch*width.
func Wide(features, width int, seed uint64) *Model {
	r := &rng{state: seed}
	w := r.weights(features*width, 0.01)
	zero := make([]float32, width)
	g := &graph{
		name:         "wide",
		nodes:        [][]byte{node("MatMul", "matmul", "", []string{"features", "W"}, []string{"wide"})},
		initializers: [][]byte{floatTensor("W", []int64{int64(features), int64(width)}, w)},
		inputs:       []io{{name: "features", width: features}},
		outputs:      []io{{name: "wide", width: width}},
	}
	return &Model{
		Name:     "wide",
		Input:    "features",
		Features: features,
		Outputs:  []string{"wide"},
		Bytes:    g.model(0),
		graph:    g,
		predict: func(x []float64) map[string][]float64 {
			return map[string][]float64{"wide": linear(x, w, zero)}
		},
	}
}
