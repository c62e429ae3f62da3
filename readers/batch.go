package readers

import (
	"fmt"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// Batch is up to Options.BatchSize consecutive rows of one row group. It and
// the Arrow data behind it are valid only during the ReadRowGroup callback
// that received it.
type Batch struct {
	File     string
	RowGroup int
	Offset   int64 // index of the first row of this batch within its row group
	Len      int

	file   *File
	rec    arrow.Record
	key    textCol
	extras []textCol
	feats  []arrow.Array
}

// textCol reads a key or extra column as text. For a dictionary array, dict
// is set and values holds its dictionary.
type textCol struct {
	arr    arrow.Array
	dict   *array.Dictionary
	values arrow.Array
}

func (b *Batch) reset(rec arrow.Record, offset int64) error {
	f := b.file
	b.rec, b.Offset, b.Len = rec, offset, int(rec.NumRows())
	var err error
	if b.key, err = newTextCol(rec.Column(f.keyCol)); err != nil {
		return fmt.Errorf("column %q: %w", f.opts.Key, err)
	}
	b.extras = b.extras[:0]
	for j, c := range f.extCol {
		tc, err := newTextCol(rec.Column(c))
		if err != nil {
			return fmt.Errorf("column %q: %w", f.opts.Extra[j], err)
		}
		b.extras = append(b.extras, tc)
	}
	b.feats = b.feats[:0]
	for _, c := range f.featCol {
		b.feats = append(b.feats, rec.Column(c))
	}
	return nil
}

func newTextCol(a arrow.Array) (textCol, error) {
	tc := textCol{arr: a}
	if d, ok := a.(*array.Dictionary); ok {
		tc.dict, tc.values = d, d.Dictionary()
		if _, ok := tc.values.(*array.Dictionary); ok || !isText(tc.values.DataType()) {
			return tc, fmt.Errorf("unsupported dictionary of %s", typeName(tc.values.DataType()))
		}
		return tc, nil
	}
	if !isText(a.DataType()) {
		return tc, fmt.Errorf("unsupported type %s", typeName(a.DataType()))
	}
	return tc, nil
}

func (c *textCol) valid(i int) bool {
	if c.dict == nil {
		return c.arr.IsValid(i)
	}
	return c.dict.IsValid(i) && c.values.IsValid(c.dict.GetValueIndex(i))
}

func (c *textCol) appendTo(dst []byte, i int) []byte {
	a := c.arr
	if c.dict != nil {
		a, i = c.values, c.dict.GetValueIndex(i)
	}
	switch a := a.(type) {
	case *array.String:
		return append(dst, a.Value(i)...)
	case *array.LargeString:
		return append(dst, a.Value(i)...)
	case *array.Binary:
		return append(dst, a.Value(i)...)
	case *array.LargeBinary:
		return append(dst, a.Value(i)...)
	case *array.Int8:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10)
	case *array.Int16:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10)
	case *array.Int32:
		return strconv.AppendInt(dst, int64(a.Value(i)), 10)
	case *array.Int64:
		return strconv.AppendInt(dst, a.Value(i), 10)
	case *array.Uint8:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10)
	case *array.Uint16:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10)
	case *array.Uint32:
		return strconv.AppendUint(dst, uint64(a.Value(i)), 10)
	case *array.Uint64:
		return strconv.AppendUint(dst, a.Value(i), 10)
	}
	return dst // unreachable: newTextCol checked the type
}

// KeyValid reports whether row i has a key (is not null).
func (b *Batch) KeyValid(i int) bool { return b.key.valid(i) }

// AppendKey appends row i's key to dst: the string's bytes, or the decimal
// form of an integer key. A null key appends nothing. It allocates nothing
// beyond growing dst.
func (b *Batch) AppendKey(dst []byte, i int) []byte {
	if !b.key.valid(i) {
		return dst
	}
	return b.key.appendTo(dst, i)
}

// ExtraValid reports whether extra column j of row i is not null.
func (b *Batch) ExtraValid(j, i int) bool { return b.extras[j].valid(i) }

// AppendExtra appends extra column j of row i to dst, as AppendKey does.
func (b *Batch) AppendExtra(dst []byte, j, i int) []byte {
	if !b.extras[j].valid(i) {
		return dst
	}
	return b.extras[j].appendTo(dst, i)
}

// Record is the projected Arrow record behind the batch: one column per
// distinct column named in Options, in the order key, features, extra. It is
// valid only during the ReadRowGroup callback.
func (b *Batch) Record() arrow.Record { return b.rec }

// markedError is an error with a fixed message that matches a sentinel.
type markedError struct {
	msg  string
	kind error
}

func (e *markedError) Error() string        { return e.msg }
func (e *markedError) Is(target error) bool { return target == e.kind }

// Pack writes the features of all Len rows into dst, row-major, width values
// a row; dst must hold at least Len*width values and valid at least Len.
// valid[i] is set false when any feature of row i is null (a null list or a
// null element); the values of such a row are unspecified. A list row whose
// length is not width is an error naming the column, the file and the row
// (matching ErrListLength). Pack returns the number of invalid rows.
//
// Pack does no per-row allocation: it switches on each column's type once
// per batch, then runs a tight loop over the typed values; a float32 list
// column is a single copy when it has no nulls.
func (b *Batch) Pack(dst []float32, width int, valid []bool) (invalid int, err error) {
	n := b.Len
	switch {
	case width <= 0:
		return 0, fmt.Errorf("shard %s: pack width %d, want > 0", b.File, width)
	case len(dst) < n*width:
		return 0, fmt.Errorf("shard %s: pack buffer holds %d values, want %d", b.File, len(dst), n*width)
	case len(valid) < n:
		return 0, fmt.Errorf("shard %s: pack valid holds %d rows, want %d", b.File, len(valid), n)
	}
	valid = valid[:n]
	for i := range valid {
		valid[i] = true
	}
	if b.file.isList {
		err = b.packList(dst, width, valid)
	} else {
		err = b.packScalars(dst, width, valid)
	}
	if err != nil {
		return 0, err
	}
	for _, v := range valid {
		if !v {
			invalid++
		}
	}
	return invalid, nil
}

type number interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// packColumn writes v into column j of the row-major dst.
func packColumn[T number](dst []float32, width, j int, v []T) {
	k := j
	for _, x := range v {
		dst[k] = float32(x)
		k += width
	}
}

func (b *Batch) packScalars(dst []float32, width int, valid []bool) error {
	if width != len(b.feats) {
		return fmt.Errorf("shard %s: %d feature columns, model expects %d", b.File, len(b.feats), width)
	}
	n := b.Len
	for j, a := range b.feats {
		switch a := a.(type) {
		case *array.Float32:
			packColumn(dst, width, j, a.Float32Values()[:n])
		case *array.Float64:
			packColumn(dst, width, j, a.Float64Values()[:n])
		case *array.Int8:
			packColumn(dst, width, j, a.Int8Values()[:n])
		case *array.Int16:
			packColumn(dst, width, j, a.Int16Values()[:n])
		case *array.Int32:
			packColumn(dst, width, j, a.Int32Values()[:n])
		case *array.Int64:
			packColumn(dst, width, j, a.Int64Values()[:n])
		case *array.Uint8:
			packColumn(dst, width, j, a.Uint8Values()[:n])
		case *array.Uint16:
			packColumn(dst, width, j, a.Uint16Values()[:n])
		case *array.Uint32:
			packColumn(dst, width, j, a.Uint32Values()[:n])
		case *array.Uint64:
			packColumn(dst, width, j, a.Uint64Values()[:n])
		default:
			return fmt.Errorf("shard %s: column %q: unsupported array type %s", b.File, b.file.opts.Features[j], typeName(a.DataType()))
		}
		if a.NullN() > 0 {
			for i := range valid {
				if a.IsNull(i) {
					valid[i] = false
				}
			}
		}
	}
	return nil
}

func (b *Batch) packList(dst []float32, width int, valid []bool) error {
	list := b.feats[0]
	var child arrow.Array
	switch l := list.(type) {
	case *array.List:
		child = l.ListValues()
	case *array.LargeList:
		child = l.ListValues()
	case *array.FixedSizeList:
		child = l.ListValues()
	default:
		return fmt.Errorf("shard %s: column %q: unsupported array type %s", b.File, b.file.opts.Features[0], typeName(list.DataType()))
	}
	var f32 []float32
	var f64 []float64
	switch c := child.(type) {
	case *array.Float32:
		f32 = c.Float32Values()
	case *array.Float64:
		f64 = c.Float64Values()
	default:
		return fmt.Errorf("shard %s: column %q: unsupported list element type %s", b.File, b.file.opts.Features[0], typeName(child.DataType()))
	}
	p := listPacker{b: b, dst: dst, width: width, valid: valid, list: list, child: child, f32: f32, f64: f64}
	off := list.Data().Offset()
	n := b.Len
	switch l := list.(type) {
	case *array.List:
		offs := l.Offsets()
		if off+n+1 > len(offs) {
			return p.corrupt()
		}
		return packRows(&p, offs[off:off+n+1])
	case *array.LargeList:
		offs := l.Offsets()
		if off+n+1 > len(offs) {
			return p.corrupt()
		}
		return packRows(&p, offs[off:off+n+1])
	default:
		size := list.DataType().(*arrow.FixedSizeListType).Len()
		if int(size) != width {
			return p.lengthErr(0, int(size))
		}
		return p.packFixed(off * width)
	}
}

// listPacker holds one batch's list column while its rows are packed.
type listPacker struct {
	b     *Batch
	dst   []float32
	width int
	valid []bool
	list  arrow.Array
	child arrow.Array
	f32   []float32 // the child values, when float32
	f64   []float64 // the child values, when float64
}

func (p *listPacker) numValues() int {
	if p.f32 != nil {
		return len(p.f32)
	}
	return len(p.f64)
}

func (p *listPacker) corrupt() error {
	return fmt.Errorf("shard %s row group %d: column %q: %w: list offsets out of range", p.b.File, p.b.RowGroup, p.b.file.opts.Features[0], ErrCorrupt)
}

func (p *listPacker) lengthErr(i, got int) error {
	b := p.b
	return &markedError{
		msg: fmt.Sprintf("shard %s row group %d row %d: column %q has %d values, model expects %d",
			b.File, b.RowGroup, b.Offset+int64(i), b.file.opts.Features[0], got, p.width),
		kind: ErrListLength,
	}
}

// copyRow packs child values [s, s+width) into row i of dst.
func (p *listPacker) copyRow(i, s int) {
	row := p.dst[i*p.width : (i+1)*p.width]
	if p.f32 != nil {
		copy(row, p.f32[s:s+p.width])
		return
	}
	for k, x := range p.f64[s : s+p.width] {
		row[k] = float32(x)
	}
}

// packRows packs a variable list given its n+1 offsets.
func packRows[O int32 | int64](p *listPacker, offs []O) error {
	n, w, nv := len(offs)-1, p.width, p.numValues()
	listNulls, childNulls := p.list.NullN() > 0, p.child.NullN() > 0
	if !listNulls && !childNulls {
		// Every row is present: check the lengths, then copy the values in one go.
		for i := 0; i < n; i++ {
			if got := int64(offs[i+1]) - int64(offs[i]); got != int64(w) {
				if got < 0 {
					return p.corrupt()
				}
				return p.lengthErr(i, int(got))
			}
		}
		s := int(offs[0])
		if s < 0 || s+n*w > nv {
			return p.corrupt()
		}
		if p.f32 != nil {
			copy(p.dst[:n*w], p.f32[s:s+n*w])
			return nil
		}
		packColumn(p.dst[:n*w], 1, 0, p.f64[s:s+n*w])
		return nil
	}
	for i := 0; i < n; i++ {
		if listNulls && p.list.IsNull(i) {
			p.valid[i] = false
			continue
		}
		s, e := int64(offs[i]), int64(offs[i+1])
		if s < 0 || e < s || e > int64(nv) {
			return p.corrupt()
		}
		if e-s != int64(w) {
			return p.lengthErr(i, int(e-s))
		}
		if childNulls {
			for k := int(s); k < int(e); k++ {
				if p.child.IsNull(k) {
					p.valid[i] = false
					break
				}
			}
		}
		p.copyRow(i, int(s))
	}
	return nil
}

// packFixed packs a fixed_size_list whose size is width, its first row's
// values starting at child value base.
func (p *listPacker) packFixed(base int) error {
	n, w := p.b.Len, p.width
	if base < 0 || base+n*w > p.numValues() {
		return p.corrupt()
	}
	listNulls, childNulls := p.list.NullN() > 0, p.child.NullN() > 0
	if !listNulls && !childNulls {
		if p.f32 != nil {
			copy(p.dst[:n*w], p.f32[base:base+n*w])
			return nil
		}
		packColumn(p.dst[:n*w], 1, 0, p.f64[base:base+n*w])
		return nil
	}
	for i := 0; i < n; i++ {
		if listNulls && p.list.IsNull(i) {
			p.valid[i] = false
			continue
		}
		s := base + i*w
		if childNulls {
			for k := s; k < s+w; k++ {
				if p.child.IsNull(k) {
					p.valid[i] = false
					break
				}
			}
		}
		p.copyRow(i, s)
	}
	return nil
}

// FillNulls sets every null feature value that the last Pack of this batch wrote into
// dst to v: a null scalar, a null list element, or every value of a null list. It is
// how `nulls: fill:V` keeps rows that Pack marked invalid.
func (b *Batch) FillNulls(dst []float32, width int, v float32) {
	if !b.file.isList {
		for j, a := range b.feats {
			if a.NullN() == 0 {
				continue
			}
			for i := range b.Len {
				if a.IsNull(i) {
					dst[i*width+j] = v
				}
			}
		}
		return
	}
	list := b.feats[0]
	ll, ok := list.(array.ListLike)
	if !ok {
		return
	}
	child := ll.ListValues()
	for i := range b.Len {
		row := dst[i*width : (i+1)*width]
		if list.IsNull(i) {
			for k := range row {
				row[k] = v
			}
			continue
		}
		if child.NullN() == 0 {
			continue
		}
		start, end := ll.ValueOffsets(i)
		for k := start; k < end && int(k-start) < width; k++ {
			if child.IsNull(int(k)) {
				row[k-start] = v
			}
		}
	}
}
