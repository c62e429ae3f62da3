// Package shardgen writes deterministic Parquet feature shards for tests,
// demos and `staticref testdata generate`.
//
// Every value is a pure function of (Spec.Seed, row number), so RowAt can
// answer what any row holds without reading the files, and tests anywhere in
// the repository can check a pipeline's output row by row. The package must
// never read its own output to answer RowAt, and must never depend on wall
// time or global randomness.
package shardgen

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
)

// EmbeddingDim is the length of every row's embedding list.
const EmbeddingDim = 8

// DefaultRowGroupRows is the row group size when Spec.RowGroupRows is 0.
const DefaultRowGroupRows = 10000

// ErrSpec is matched by errors for an invalid Spec.
var ErrSpec = errors.New("shardgen: invalid spec")

// Countries are the values of the country segment column.
var Countries = []string{"DE", "FR", "US", "JP", "BR"}

// Spec describes a data set.
type Spec struct {
	Rows         int    // total rows over all shards
	Shards       int    // files part-00000.parquet, ... (1 when 0)
	RowGroupRows int    // rows per row group (DefaultRowGroupRows when 0)
	Seed         uint64 // selects the values
	Codec        string // "zstd" (default) | "snappy"
	NullEvery    int    // >0: f2 is null on rows where row % NullEvery == NullEvery-1
	// PageBytes is the writer's page buffer size (parquet-go's 256 KiB when 0): larger
	// pages, fewer of them, for the same rows.
	PageBytes int
	// FirstRow is the number of the first row (0 when 0): the files hold rows FirstRow to
	// FirstRow+Rows-1, keys and values as RowAt gives them. A second data set with
	// another Seed over overlapping rows has the same keys with new values (a backfill).
	FirstRow int64
}

// Row is one row exactly as written.
type Row struct {
	Key       string                // "u" + zero-padded row number, e.g. u000000042
	F         [4]float64            // f0 float64, f1 float32, f2 int32, f3 int64, exactly as stored; F[2] is 0 when F2Null
	F2Null    bool                  // f2 is null
	Embedding [EmbeddingDim]float64 // the embedding's float32 values, exactly as stored
	Country   string                // one of Countries
}

// shardRow is the Parquet schema of a shard.
type shardRow struct {
	UserID    string    `parquet:"user_id"`
	F0        float64   `parquet:"f0"`
	F1        float32   `parquet:"f1"`
	F2        *int32    `parquet:"f2,optional"`
	F3        int64     `parquet:"f3"`
	Embedding []float32 `parquet:"embedding,list"`
	Country   string    `parquet:"country,dict"`
	Note      string    `parquet:"note"`
}

func (s Spec) withDefaults() Spec {
	if s.Shards == 0 {
		s.Shards = 1
	}
	if s.RowGroupRows == 0 {
		s.RowGroupRows = DefaultRowGroupRows
	}
	if s.Codec == "" {
		s.Codec = "zstd"
	}
	return s
}

func (s Spec) codec() (compress.Codec, error) {
	switch s.Codec {
	case "zstd":
		return &parquet.Zstd, nil
	case "snappy":
		return &parquet.Snappy, nil
	}
	return nil, fmt.Errorf("%w: codec %q, want zstd or snappy", ErrSpec, s.Codec)
}

// ShardPath is the path of shard i in dir.
func ShardPath(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("part-%05d.parquet", i))
}

// ShardRows returns the rows [lo, hi) that shard i of spec holds. Rows are
// split contiguously, the first shards taking no fewer rows than the last.
func ShardRows(spec Spec, i int) (lo, hi int64) {
	spec = spec.withDefaults()
	n, k := int64(spec.Rows), int64(spec.Shards)
	return n * int64(i) / k, n * int64(i+1) / k
}

// Generate writes spec.Shards files into dir (created if missing) and
// returns their paths. The output is a pure function of spec. Each file is
// written beside its final name and renamed into place when complete.
func Generate(dir string, spec Spec) ([]string, error) {
	spec = spec.withDefaults()
	switch {
	case spec.Rows < 0:
		return nil, fmt.Errorf("%w: rows %d, want >= 0", ErrSpec, spec.Rows)
	case spec.Shards < 0:
		return nil, fmt.Errorf("%w: shards %d, want >= 1", ErrSpec, spec.Shards)
	case spec.RowGroupRows < 0:
		return nil, fmt.Errorf("%w: row group rows %d, want >= 1", ErrSpec, spec.RowGroupRows)
	case spec.NullEvery < 0:
		return nil, fmt.Errorf("%w: null every %d, want >= 0", ErrSpec, spec.NullEvery)
	case spec.FirstRow < 0:
		return nil, fmt.Errorf("%w: first row %d, want >= 0", ErrSpec, spec.FirstRow)
	case spec.PageBytes < 0:
		return nil, fmt.Errorf("%w: page bytes %d, want >= 0", ErrSpec, spec.PageBytes)
	}
	codec, err := spec.codec()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	paths := make([]string, spec.Shards)
	for i := range paths {
		paths[i] = ShardPath(dir, i)
		lo, hi := ShardRows(spec, i)
		if err := writeShard(paths[i], spec, codec, spec.FirstRow+lo, spec.FirstRow+hi); err != nil {
			return nil, fmt.Errorf("generate %s: %w", paths[i], err)
		}
	}
	return paths, nil
}

func writeShard(path string, spec Spec, codec compress.Codec, lo, hi int64) (err error) {
	tmp := path + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(tmp)
		}
	}()
	opts := []parquet.WriterOption{
		parquet.Compression(codec),
		parquet.MaxRowsPerRowGroup(int64(spec.RowGroupRows)),
		parquet.CreatedBy("staticref shardgen", "1", ""),
	}
	if spec.PageBytes > 0 {
		opts = append(opts, parquet.PageBufferSize(spec.PageBytes))
	}
	w := parquet.NewGenericWriter[shardRow](out, opts...)
	buf := make([]shardRow, 0, min(spec.RowGroupRows, 4096))
	embeddings := make([]float32, cap(buf)*EmbeddingDim)
	f2s := make([]int32, cap(buf))
	inGroup := 0
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		buf = buf[:0]
		return nil
	}
	for r := lo; r < hi; r++ {
		row := RowAt(spec, r)
		k := len(buf)
		emb := embeddings[k*EmbeddingDim : (k+1)*EmbeddingDim : (k+1)*EmbeddingDim]
		for j, v := range row.Embedding {
			emb[j] = float32(v)
		}
		sr := shardRow{
			UserID:    row.Key,
			F0:        row.F[0],
			F1:        float32(row.F[1]),
			F3:        int64(row.F[3]),
			Embedding: emb,
			Country:   row.Country,
			Note:      "note " + strconv.FormatInt(r%97, 10),
		}
		if !row.F2Null {
			f2s[k] = int32(row.F[2])
			sr.F2 = &f2s[k]
		}
		buf = append(buf, sr)
		inGroup++
		if len(buf) == cap(buf) || inGroup == spec.RowGroupRows {
			if err := flush(); err != nil {
				return err
			}
		}
		if inGroup == spec.RowGroupRows {
			if err := w.Flush(); err != nil {
				return err
			}
			inGroup = 0
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RowAt returns row r (0-based over the whole data set, FirstRow included: a spec with
// FirstRow 100 holds rows 100 on) exactly as Generate writes it.
func RowAt(spec Spec, r int64) Row {
	spec = spec.withDefaults()
	h := hasher{state: mix(spec.Seed ^ mix(uint64(r)+0x632be59bd9b4e019))}
	row := Row{Key: key(r)}
	row.F[0] = math.Round((h.unit()*200-100)*1e6) / 1e6
	row.F[1] = float64(float32(h.unit()*2 - 1))
	f2 := float64(h.intn(201) - 100)
	row.F[3] = float64(h.intn(201) - 100)
	if spec.NullEvery > 0 && r%int64(spec.NullEvery) == int64(spec.NullEvery-1) {
		row.F2Null = true
	} else {
		row.F[2] = f2
	}
	for j := range row.Embedding {
		row.Embedding[j] = float64(float32(h.unit()*2 - 1))
	}
	row.Country = Countries[h.intn(len(Countries))]
	return row
}

func key(r int64) string {
	s := strconv.FormatInt(r, 10)
	const width = 9
	if len(s) >= width {
		return "u" + s
	}
	return "u" + "000000000"[:width-len(s)] + s
}

// hasher is a splitmix64 stream: small, fast and the same on every platform.
type hasher struct{ state uint64 }

func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (h *hasher) next() uint64 {
	h.state += 0x9e3779b97f4a7c15
	return mix(h.state)
}

// unit returns a float64 in [0, 1).
func (h *hasher) unit() float64 { return float64(h.next()>>11) / (1 << 53) }

// intn returns an int in [0, n).
func (h *hasher) intn(n int) int { return int(h.next() % uint64(n)) }
