package inference

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"
)

// TensorInfo describes one model input or output.
type TensorInfo struct {
	Name     string  `json:"name"`
	Kind     string  `json:"kind"`                // "tensor", "sequence", "map", "optional", "sparse_tensor", "opaque", "unknown"
	ElemType string  `json:"elem_type,omitempty"` // tensors only: "float32", "float64", "int64", ...
	Shape    []int64 `json:"shape,omitempty"`     // tensors only; -1 for a dynamic dimension
}

// ModelInfo describes a model file: its digest, inputs and outputs.
type ModelInfo struct {
	Path    string       `json:"path"`
	SHA256  string       `json:"sha256"`
	Inputs  []TensorInfo `json:"inputs"`
	Outputs []TensorInfo `json:"outputs"`
}

// String renders a TensorInfo as `name: tensor float32 [-1 4]`.
func (t TensorInfo) String() string {
	if t.Kind != "tensor" && t.Kind != "sparse_tensor" {
		return fmt.Sprintf("%s: %s", t.Name, t.Kind)
	}
	return fmt.Sprintf("%s: %s %s %v", t.Name, t.Kind, t.ElemType, t.Shape)
}

// Inspect reads a model file's digest, inputs and outputs (the file as Load reads it). It loads ONNX
// Runtime (see Init) and builds a temporary session, so it also proves the
// runtime can load the model.
func Inspect(ctx context.Context, path string) (*ModelInfo, error) {
	data, err := readModel(ctx, path)
	if err != nil {
		return nil, err
	}
	return inspectData(path, data)
}

func inspectData(path string, data []byte) (*ModelInfo, error) {
	if err := checkModelProto(data); err != nil {
		return nil, misfit{fmt.Errorf("model %s: not an ONNX model: %w", path, err)}
	}
	if err := Init(); err != nil {
		return nil, err
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, misfit{fmt.Errorf("model %s: ONNX Runtime cannot load it: %w", path, err)}
	}
	sum := sha256.Sum256(data)
	info := &ModelInfo{Path: path, SHA256: hex.EncodeToString(sum[:])}
	for _, in := range ins {
		info.Inputs = append(info.Inputs, tensorInfo(in))
	}
	for _, out := range outs {
		info.Outputs = append(info.Outputs, tensorInfo(out))
	}
	return info, nil
}

// checkModelProto is a cheap structural check that data is an ONNX
// ModelProto, so that a Parquet file or random bytes get a plain answer
// rather than a protobuf parse error from deep inside the runtime: the
// top-level message must parse and carry ir_version (1) and graph (7).
func checkModelProto(data []byte) error {
	if len(data) == 0 {
		return errors.New("file is empty")
	}
	var haveIR, haveGraph bool
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf tag at byte %d: %w", len(data)-len(b), protowire.ParseError(n))
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("bad protobuf field %d at byte %d: %w", num, len(data)-len(b), protowire.ParseError(m))
		}
		switch {
		case num == 1 && typ == protowire.VarintType:
			haveIR = true
		case num == 7 && typ == protowire.BytesType:
			haveGraph = true
		}
		b = b[m:]
	}
	switch {
	case !haveIR:
		return errors.New("no ir_version field")
	case !haveGraph:
		return errors.New("no graph field")
	}
	return nil
}

func tensorInfo(io ort.InputOutputInfo) TensorInfo {
	t := TensorInfo{Name: io.Name, Kind: kindName(io.OrtValueType)}
	if io.OrtValueType == ort.ONNXTypeTensor || io.OrtValueType == ort.ONNXTypeSparseTensor {
		t.ElemType = elemTypeName(io.DataType)
		t.Shape = append([]int64{}, io.Dimensions...)
	}
	return t
}

func kindName(t ort.ONNXType) string {
	switch t {
	case ort.ONNXTypeTensor:
		return "tensor"
	case ort.ONNXTypeSequence:
		return "sequence"
	case ort.ONNXTypeMap:
		return "map"
	case ort.ONNXTypeOptional:
		return "optional"
	case ort.ONNXTypeSparseTensor:
		return "sparse_tensor"
	case ort.ONNXTypeOpaque:
		return "opaque"
	}
	return "unknown"
}

var elemTypeNames = map[ort.TensorElementDataType]string{
	ort.TensorElementDataTypeFloat:      "float32",
	ort.TensorElementDataTypeDouble:     "float64",
	ort.TensorElementDataTypeFloat16:    "float16",
	ort.TensorElementDataTypeBFloat16:   "bfloat16",
	ort.TensorElementDataTypeInt8:       "int8",
	ort.TensorElementDataTypeInt16:      "int16",
	ort.TensorElementDataTypeInt32:      "int32",
	ort.TensorElementDataTypeInt64:      "int64",
	ort.TensorElementDataTypeUint8:      "uint8",
	ort.TensorElementDataTypeUint16:     "uint16",
	ort.TensorElementDataTypeUint32:     "uint32",
	ort.TensorElementDataTypeUint64:     "uint64",
	ort.TensorElementDataTypeBool:       "bool",
	ort.TensorElementDataTypeString:     "string",
	ort.TensorElementDataTypeComplex64:  "complex64",
	ort.TensorElementDataTypeComplex128: "complex128",
}

func elemTypeName(t ort.TensorElementDataType) string {
	if n, ok := elemTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type%d", int(t))
}
