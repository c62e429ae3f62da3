package pipeline

import (
	"fmt"

	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/writers"
)

// chunk carries one batch through every stage and owns all its buffers; chunks are reused
// for the whole run, so steady state allocates nothing per row.
type chunk struct {
	file     string
	rowGroup int
	offset   int64
	n        int // rows read

	keys     []byte // keys of all n rows, back to back
	keyEnd   []int
	keyValid []bool
	features []float32 // n * width, row-major
	valid    []bool
	seg      []byte // segment values, back to back
	segEnd   []int
	segValid []bool
	width    int

	// set by infer
	kept      []int32     // row index of each kept row
	outs      [][]float32 // per output, len(kept) * width: copied from the session
	vals      []byte
	valEnd    []int
	nullOuts  int
	nullKeys  int
	nullFeats int
	rows      writers.Rows
}

func newChunk(batch, width int) *chunk {
	return &chunk{
		keyEnd:   make([]int, 0, batch),
		keyValid: make([]bool, 0, batch),
		features: make([]float32, batch*width),
		valid:    make([]bool, batch),
		width:    width,
		kept:     make([]int32, 0, batch),
		valEnd:   make([]int, 0, batch),
	}
}

// where names a row for error messages.
func (c *chunk) where(i int) string {
	return fmt.Sprintf("shard %s row group %d row %d", c.file, c.rowGroup, c.offset+int64(i))
}

// load copies what the later stages need out of a reader batch, which is valid only
// during the reader's callback.
func (c *chunk) load(b *readers.Batch, width int, segments bool, fill float32, filling bool) error {
	c.file, c.rowGroup, c.offset, c.n = b.File, b.RowGroup, b.Offset, b.Len
	c.keys, c.keyEnd, c.keyValid = c.keys[:0], c.keyEnd[:0], c.keyValid[:0]
	c.seg, c.segEnd, c.segValid = c.seg[:0], c.segEnd[:0], c.segValid[:0]
	for i := range b.Len {
		ok := b.KeyValid(i)
		if ok {
			c.keys = b.AppendKey(c.keys, i)
		}
		c.keyEnd = append(c.keyEnd, len(c.keys))
		c.keyValid = append(c.keyValid, ok)
	}
	if segments {
		for i := range b.Len {
			ok := b.ExtraValid(0, i)
			if ok {
				c.seg = b.AppendExtra(c.seg, 0, i)
			}
			c.segEnd = append(c.segEnd, len(c.seg))
			c.segValid = append(c.segValid, ok)
		}
	}
	if need := b.Len * width; cap(c.features) < need {
		c.features = make([]float32, need)
	}
	if cap(c.valid) < b.Len {
		c.valid = make([]bool, b.Len)
	}
	c.features, c.valid = c.features[:b.Len*width], c.valid[:b.Len]
	invalid, err := b.Pack(c.features, width, c.valid)
	if err != nil || invalid == 0 || !filling {
		return err
	}
	// fill:V replaces each null feature with V and keeps the row.
	b.FillNulls(c.features, width, fill)
	for i := range c.valid {
		c.valid[i] = true
	}
	return nil
}

func (c *chunk) key(i int) []byte {
	start := 0
	if i > 0 {
		start = c.keyEnd[i-1]
	}
	return c.keys[start:c.keyEnd[i]]
}

func (c *chunk) segment(i int) ([]byte, bool) {
	if len(c.segValid) == 0 || !c.segValid[i] {
		return nil, false
	}
	start := 0
	if i > 0 {
		start = c.segEnd[i-1]
	}
	return c.seg[start:c.segEnd[i]], true
}

// infer selects the rows to score, runs the predictor and encodes every kept row.
func (c *chunk) infer(p Predictor, enc *writers.ValueEncoder, skip bool) error {
	c.kept, c.nullKeys, c.nullFeats, c.nullOuts = c.kept[:0], 0, 0, 0
	for i := range c.n {
		switch {
		case !c.keyValid[i] && skip:
			c.nullKeys++
		case !c.keyValid[i]:
			return fmt.Errorf("%s: null key (source.key); use source.nulls: skip to drop such rows", c.where(i))
		case !c.valid[i] && skip:
			c.nullFeats++
		case !c.valid[i]:
			return fmt.Errorf("%s: null feature value (source.nulls is fail; use skip or fill:0)", c.where(i))
		default:
			if err := writers.ValidateKey(c.key(i)); err != nil {
				return fmt.Errorf("%s: %w", c.where(i), err)
			}
			c.kept = append(c.kept, int32(i))
		}
	}
	n, w := len(c.kept), c.width
	c.vals, c.valEnd = c.vals[:0], c.valEnd[:0]
	if n == 0 {
		c.rows = writers.Rows{}
		return nil
	}
	in := p.Input(n)
	if n == c.n {
		copy(in, c.features[:n*w])
	} else {
		for j, i := range c.kept {
			copy(in[j*w:(j+1)*w], c.features[int(i)*w:(int(i)+1)*w])
		}
	}
	outs, err := p.Run(n)
	if err != nil {
		return fmt.Errorf("shard %s row group %d: inference: %w", c.file, c.rowGroup, err)
	}
	if len(c.outs) != len(outs) {
		c.outs = make([][]float32, len(outs))
	}
	for k, o := range outs {
		c.outs[k] = append(c.outs[k][:0], o...)
	}
	for j := range n {
		var null bool
		c.vals, null = enc.Append(c.vals, c.outs, j)
		c.valEnd = append(c.valEnd, len(c.vals))
		if null {
			c.nullOuts++
		}
	}
	c.rows.Keys, c.rows.Values = c.rows.Keys[:0], c.rows.Values[:0]
	start := 0
	for j, i := range c.kept {
		c.rows.Keys = append(c.rows.Keys, c.key(int(i)))
		c.rows.Values = append(c.rows.Values, c.vals[start:c.valEnd[j]])
		start = c.valEnd[j]
	}
	return nil
}
