package readers

import (
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
)

// isText reports whether dt can be a key or an extra column: a string,
// binary, a dictionary of either, or an integer.
func isText(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY:
		return true
	case arrow.DICTIONARY:
		v := dt.(*arrow.DictionaryType).ValueType
		return v.ID() != arrow.DICTIONARY && isText(v)
	}
	return isInteger(dt)
}

func isInteger(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func isFloat(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.FLOAT32, arrow.FLOAT64:
		return true
	}
	return false
}

// isNumeric reports whether dt can be a scalar feature. bool is not numeric.
func isNumeric(dt arrow.DataType) bool { return isFloat(dt) || isInteger(dt) }

func isList(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST:
		return true
	}
	return false
}

func listElem(dt arrow.DataType) arrow.DataType {
	return dt.(arrow.ListLikeType).Elem()
}

// typeName names dt the way a job author thinks of it: "string", not "utf8".
func typeName(dt arrow.DataType) string {
	switch dt.ID() {
	case arrow.STRING, arrow.LARGE_STRING:
		return "string"
	case arrow.BINARY, arrow.LARGE_BINARY:
		return "binary"
	case arrow.BOOL:
		return "bool"
	case arrow.DICTIONARY:
		return "dictionary<" + typeName(dt.(*arrow.DictionaryType).ValueType) + ">"
	case arrow.LIST:
		return "list<" + typeName(listElem(dt)) + ">"
	case arrow.LARGE_LIST:
		return "large_list<" + typeName(listElem(dt)) + ">"
	case arrow.FIXED_SIZE_LIST:
		fs := dt.(*arrow.FixedSizeListType)
		return "fixed_size_list<" + typeName(fs.Elem()) + ">[" + strconv.Itoa(int(fs.Len())) + "]"
	}
	return dt.Name()
}
