package onnxgen

import (
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file hand-encodes the small subset of onnx.proto that the generated
// models need. Field numbers are those of onnx/onnx.proto (IR version 8).

// ONNX TensorProto.DataType values.
const (
	dtFloat = 1
	dtInt64 = 7
)

// AttributeProto.AttributeType values.
const (
	attrInt  = 2
	attrInts = 7
)

func appendMsg(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// opset encodes an OperatorSetIdProto.
func opset(domain string, version int64) []byte {
	var b []byte
	if domain != "" {
		b = appendString(b, 1, domain)
	}
	return appendInt(b, 2, version)
}

// dim is one dimension of a tensor shape: a positive size or, when param is
// non-empty, a symbolic (dynamic) dimension.
type dim struct {
	value int64
	param string
}

// tensorType encodes a TypeProto holding a TypeProto.Tensor. A nil shape
// leaves the rank unknown.
func tensorType(elem int64, shape []dim) []byte {
	t := appendInt(nil, 1, elem)
	if shape != nil {
		var sh []byte
		for _, d := range shape {
			var db []byte
			if d.param != "" {
				db = appendString(db, 2, d.param)
			} else {
				db = appendInt(db, 1, d.value)
			}
			sh = appendMsg(sh, 1, db)
		}
		t = appendMsg(t, 2, sh)
	}
	return appendMsg(nil, 1, t)
}

// seqMapType encodes TypeProto seq(map(key, value)).
func seqMapType(key int64, value []byte) []byte {
	m := appendInt(nil, 1, key)
	m = appendMsg(m, 2, value)
	mapType := appendMsg(nil, 5, m)
	seq := appendMsg(nil, 1, mapType)
	return appendMsg(nil, 4, seq)
}

// valueInfo encodes a ValueInfoProto.
func valueInfo(name string, typ []byte) []byte {
	b := appendString(nil, 1, name)
	return appendMsg(b, 2, typ)
}

// floatTensor encodes a float32 TensorProto initializer in packed float_data.
func floatTensor(name string, dims []int64, data []float32) []byte {
	var b []byte
	for _, d := range dims {
		b = appendInt(b, 1, d)
	}
	b = appendInt(b, 2, dtFloat)
	packed := make([]byte, 0, 4*len(data))
	for _, v := range data {
		packed = protowire.AppendFixed32(packed, math.Float32bits(v))
	}
	b = appendMsg(b, 4, packed)
	return appendString(b, 8, name)
}

// attribute encodes an AttributeProto of type INT or INTS.
func intAttr(name string, v int64) []byte {
	b := appendString(nil, 1, name)
	b = appendInt(b, 3, v)
	return appendInt(b, 20, attrInt)
}

func intsAttr(name string, vs []int64) []byte {
	b := appendString(nil, 1, name)
	var packed []byte
	for _, v := range vs {
		packed = protowire.AppendVarint(packed, uint64(v))
	}
	b = appendMsg(b, 8, packed)
	return appendInt(b, 20, attrInts)
}

// node encodes a NodeProto.
func node(opType, name, domain string, inputs, outputs []string, attrs ...[]byte) []byte {
	var b []byte
	for _, in := range inputs {
		b = appendString(b, 1, in)
	}
	for _, out := range outputs {
		b = appendString(b, 2, out)
	}
	b = appendString(b, 3, name)
	b = appendString(b, 4, opType)
	for _, a := range attrs {
		b = appendMsg(b, 5, a)
	}
	if domain != "" {
		b = appendString(b, 7, domain)
	}
	return b
}

// io is a graph input or output: a float32 [batch, width] tensor, or, when
// typ is set, a value of that encoded TypeProto.
type io struct {
	name  string
	width int
	typ   []byte
}

func (v io) encode(batch int) []byte {
	if v.typ != nil {
		return valueInfo(v.name, v.typ)
	}
	b := dim{param: batchParam}
	if batch > 0 {
		b = dim{value: int64(batch)}
	}
	return valueInfo(v.name, tensorType(dtFloat, []dim{b, {value: int64(v.width)}}))
}

// graph collects the parts of a GraphProto and the ModelProto around it.
type graph struct {
	name         string
	nodes        [][]byte
	initializers [][]byte
	inputs       []io
	outputs      []io
	mlOpset      bool // import ai.onnx.ml opset 3 as well
}

// model encodes the ModelProto; batch > 0 fixes the batch dimension of the
// tensor inputs and outputs, otherwise it is the dynamic "N".
func (g *graph) model(batch int) []byte {
	var gb []byte
	for _, n := range g.nodes {
		gb = appendMsg(gb, 1, n)
	}
	gb = appendString(gb, 2, g.name)
	for _, t := range g.initializers {
		gb = appendMsg(gb, 5, t)
	}
	for _, in := range g.inputs {
		gb = appendMsg(gb, 11, in.encode(batch))
	}
	for _, out := range g.outputs {
		gb = appendMsg(gb, 12, out.encode(batch))
	}

	b := appendInt(nil, 1, irVersion)
	b = appendString(b, 2, "staticref-onnxgen")
	b = appendString(b, 3, "1")
	b = appendMsg(b, 7, gb)
	b = appendMsg(b, 8, opset("", defaultOpset))
	if g.mlOpset {
		b = appendMsg(b, 8, opset("ai.onnx.ml", mlOpset))
	}
	return b
}
