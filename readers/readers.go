// Package readers turns local Parquet feature shards into Arrow record batches
// and packs their feature columns into the float32 matrices a model consumes.
//
// A shard is opened with Open, which checks the columns a job names (key,
// features, pass-through extras) against the file's schema before any data is
// read, so a misconfigured job fails on its first file with one error that
// names the file and the column. Row groups are then streamed with
// ReadRowGroup in batches of at most Options.BatchSize rows; only the named
// columns are decoded (projection), and memory is bounded by the batch size
// and one row group's column chunks, never by the file size.
//
// The package must never import pipeline, lookup, scheduler or cmd, must never
// hold a whole file in memory, and must never let a hostile file crash the
// process: panics raised inside the Arrow Parquet decoder are recovered and
// returned as errors naming the file.
package readers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/metadata"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/staticref/staticref/readers/objstore"
)

// DefaultBatchSize is the number of rows per Batch when Options.BatchSize is 0.
const DefaultBatchSize = 8192

// Sentinel errors, matched with errors.Is.
var (
	// ErrNoFiles is returned by Glob when a pattern matches nothing.
	ErrNoFiles = errors.New("readers: no files match")
	// ErrSchema is matched by every *SchemaError: a job's columns do not fit a shard.
	ErrSchema = errors.New("readers: schema mismatch")
	// ErrCorrupt is matched by errors for files that are not valid Parquet,
	// including panics recovered from the decoder.
	ErrCorrupt = errors.New("readers: corrupt parquet file")
	// ErrListLength is matched by Pack's error when a list row's length is not the model's width.
	ErrListLength = errors.New("readers: list length mismatch")
)

// Options names the columns to read from every shard.
type Options struct {
	// Key is the key column: a string (utf8, large_utf8, a dictionary of
	// strings, or binary holding UTF-8) or an integer (int8..int64, uint8..uint64).
	Key string
	// Features are numeric columns (float32/64, int8..64, uint8..64; bool is
	// not numeric) in model-input order, or exactly one list column: a list,
	// large_list or fixed_size_list of float32 or float64.
	Features []string
	// Extra are pass-through columns (a segment column, say): string or integer.
	Extra []string
	// BatchSize is the number of rows per Batch (DefaultBatchSize when 0).
	BatchSize int
}

// Glob expands a glob pattern into a sorted list of paths, as GlobContext does with
// a background context.
func Glob(pattern string) ([]string, error) {
	return GlobContext(context.Background(), pattern)
}

// GlobContext expands a glob pattern into a sorted list of paths. The pattern is a
// local glob, a file:// URL, or an object URL (s3://, gs://, azblob://, bucket options
// as query parameters) whose key is matched within path segments over a recursive
// listing of the prefix before the first wildcard, under ctx; object paths are returned
// as URLs that Open opens again. A pattern that matches nothing is an error naming the
// pattern (matching ErrNoFiles).
func GlobContext(ctx context.Context, pattern string) ([]string, error) {
	if objstore.IsURL(pattern) {
		urls, err := objstore.Glob(ctx, pattern)
		if err != nil {
			return nil, err
		}
		if len(urls) == 0 {
			o, _ := objstore.Parse(pattern)
			return nil, fmt.Errorf("glob %q: %w", o.Name(), ErrNoFiles)
		}
		return urls, nil // sorted: sharded runs split this list
	}
	if p, ok := objstore.FilePath(pattern); ok {
		pattern = p
	}
	paths, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("glob %q: %w", pattern, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("glob %q: %w", pattern, ErrNoFiles)
	}
	sort.Strings(paths)
	return paths, nil
}

// RowGroup describes one row group of a shard.
type RowGroup struct {
	Index int
	Rows  int64
}

// FileInfo describes a shard as the manifest records it.
type FileInfo struct {
	Path      string
	Bytes     int64
	Rows      int64
	RowGroups []RowGroup
	// KeyPrefix is the longest prefix, of whole characters, that every key of the file
	// has by the key column's statistics in the footer ("" when they say none: an integer
	// key, no usable statistics, no common prefix). A hint for stores that can store
	// keys shorter (Redis' hash buckets), never a promise: a writer's statistics can be
	// wrong, so a store must cope with a key without it.
	KeyPrefix string
}

// SchemaError reports a column that a job names and a shard cannot provide.
// Its message reads `shard PATH: column "NAME" REASON (FIELD)`, then the shard's
// columns when NAME is not one of them.
type SchemaError struct {
	Path   string // the shard
	Column string // the column named by the job
	Field  string // the job field that named it: source.key, source.features or extra
	Reason string // e.g. `not found`, `is string, features must be numeric`
	// Columns are the shard's columns, when the column was not found.
	Columns []string
}

func (e *SchemaError) Error() string {
	msg := fmt.Sprintf("shard %s: column %q %s (%s)", e.Path, e.Column, e.Reason, e.Field)
	if len(e.Columns) > 0 {
		msg += "; the shard's columns are " + strings.Join(e.Columns, ", ")
	}
	return msg
}

// Is makes every SchemaError match ErrSchema.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }

// Job fields named in schema errors.
const (
	fieldKey      = "source.key"
	fieldFeatures = "source.features"
	fieldExtra    = "extra"
)

// File is one opened shard. Its methods may be called from several
// goroutines, each reading a different row group.
type File struct {
	path  string
	bytes int64
	opts  Options
	src   parquet.ReaderAtSeeker // the local file, or ranged reads of an object
	close func() error
	// remote marks an object: column chunks are read in larger pieces, each one range
	// request.
	remote bool
	pr     *file.Reader
	fr     *pqarrow.FileReader

	rowGroups []RowGroup
	rows      int64

	// leaves are the Parquet leaf column indices to decode; the record
	// reader returns one column per distinct top-level field, in the order
	// of first appearance in key, features, extra.
	leaves    []int
	keyCol    int // record column of the key
	keyField  int // top-level field of the key
	keyPrefix string
	featCol   []int // record column of each feature
	extCol    []int // record column of each extra
	listDim   int   // for a list feature: fixed size, or 0 when variable
	isList    bool  // features is one list column
}

// Open opens one shard and checks its schema against opts before reading any
// data. A missing column, a non-numeric feature, a list of non-floats or a key
// of an unsupported type is a *SchemaError naming the file and the column; a
// truncated or corrupt file is an error naming the file.
//
// path is a local path, a file:// URL or an object URL as GlobContext returns it. An
// object is read with ranged reads only: its size from its attributes, its footer,
// then the column chunks of the named columns, each read under a deadline and retried
// on transient errors (see package objstore).
func Open(path string, opts Options) (f *File, err error) {
	return OpenContext(context.Background(), path, opts)
}

// corrupt marks err, from reading a file's structure, with ErrCorrupt, unless it is the
// failure of a read on its way (a dead or hung object store, a cancelled run), which says
// nothing about the file.
func corrupt(err error) error {
	var re *objstore.ReadError
	if errors.As(err, &re) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// OpenContext is Open under ctx, which bounds the open and, for an object, every read.
func OpenContext(ctx context.Context, path string, opts Options) (f *File, err error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if objstore.IsURL(path) {
		return openObject(ctx, path, opts)
	}
	if p, ok := objstore.FilePath(path); ok {
		path = p
	}
	// A FIFO's open would wait for a writer, and a device's read never end: only a
	// regular file is read, checked before the open (made without blocking) and after.
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("shard %s: %w: not a regular file (%s)", path, ErrCorrupt, st.Mode().Type())
	}
	osf, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			osf.Close()
		}
	}()
	st, err := osf.Stat()
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("shard %s: %w: not a regular file (%s)", path, ErrCorrupt, st.Mode().Type())
	}
	footerStart, err := checkFooter(osf, st.Size())
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	f = &File{path: path, bytes: st.Size(), opts: opts, src: osf, close: osf.Close}
	if err := f.open(footerStart); err != nil {
		return nil, err
	}
	return f, nil
}

// openObject opens an object with the checks a local file gets: the footer's claimed
// size against the object's size (from its attributes), then the chunks.
func openObject(ctx context.Context, u string, opts Options) (f *File, err error) {
	r, err := objstore.Open(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("shard %w", err)
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	footerStart, err := checkFooter(r, r.Size())
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", r.Name(), err)
	}
	f = &File{path: u, bytes: r.Size(), opts: opts, src: r, close: r.Close, remote: true}
	if err := f.open(footerStart); err != nil {
		return nil, err
	}
	return f, nil
}

// remoteBufferBytes is how much of a column chunk one ranged read of an object fetches:
// large enough that a chunk costs few requests, small enough to bound memory per reader.
const remoteBufferBytes = 1 << 20

// open parses the footer, resolves the columns and checks that their chunks lie before
// footerStart, turning decoder panics on hostile footers into errors.
func (f *File) open(footerStart int64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("shard %s: %w: %v", f.path, ErrCorrupt, r)
		}
	}()
	props := parquet.NewReaderProperties(memory.DefaultAllocator)
	// Stream column chunks through a small buffer instead of reading each
	// whole chunk into memory.
	props.BufferedStreamEnabled = true
	if f.remote {
		props.BufferSize = remoteBufferBytes
	}
	pr, err := file.NewParquetReader(f.src, file.WithReadProps(props))
	if err != nil {
		return fmt.Errorf("shard %s: %w", f.path, corrupt(err))
	}
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: int64(f.opts.BatchSize)}, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("shard %s: %w", f.path, corrupt(err))
	}
	f.pr, f.fr = pr, fr

	md := pr.MetaData()
	f.rowGroups = make([]RowGroup, pr.NumRowGroups())
	for i := range f.rowGroups {
		n := md.RowGroup(i).NumRows()
		if n < 0 {
			return fmt.Errorf("shard %s: %w: row group %d has %d rows", f.path, ErrCorrupt, i, n)
		}
		f.rowGroups[i] = RowGroup{Index: i, Rows: n}
		f.rows += n
	}
	if err := f.resolve(); err != nil {
		return err
	}
	if err := f.checkChunks(footerStart); err != nil {
		return err
	}
	f.keyPrefix = f.statsKeyPrefix()
	return nil
}

// statsKeyPrefix is FileInfo.KeyPrefix: the common prefix of the smallest and largest
// key of every row group, by the footer's statistics of a string key column. Every key
// sorts between its row group's two, so it has their common prefix: at the first byte
// where a key left the prefix it would sort below the smallest or above the largest.
// Statistics that the writer's version gets wrong are not used (StatsSet).
func (f *File) statsKeyPrefix() string {
	md := f.pr.MetaData()
	sc := md.Schema
	leaf := -1
	for l := 0; l < sc.NumColumns(); l++ {
		if sc.Root().FieldIndexByField(sc.ColumnRoot(l)) == f.keyField {
			leaf = l
			break
		}
	}
	if leaf < 0 || sc.Column(leaf).PhysicalType() != parquet.Types.ByteArray {
		return ""
	}
	var prefix []byte
	seen := false
	for i := range f.pr.NumRowGroups() {
		rg := md.RowGroup(i)
		if rg.NumRows() == 0 {
			continue
		}
		cc, err := rg.ColumnChunk(leaf)
		if err != nil {
			return ""
		}
		st, err := cc.Statistics()
		bs, ok := st.(*metadata.ByteArrayStatistics)
		if err != nil || !ok || !bs.HasMinMax() {
			return ""
		}
		p := commonPrefix(bs.Min(), bs.Max())
		if seen {
			p = commonPrefix(prefix, p)
		}
		prefix, seen = p, true
		if len(prefix) == 0 {
			return ""
		}
	}
	for len(prefix) > 0 && !utf8.Valid(prefix) {
		prefix = prefix[:len(prefix)-1] // whole characters only
	}
	return string(prefix)
}

func commonPrefix(a, b []byte) []byte {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return a[:n:n]
}

// resolve maps the job's column names to top-level fields, checks their
// types and computes the projection.
func (f *File) resolve() error {
	fields := f.fr.Manifest.Fields
	find := func(name string) int {
		for i := range fields {
			if fields[i].Field.Name == name {
				return i
			}
		}
		return -1
	}
	var order []int      // distinct top-level field indices, in record order
	pos := map[int]int{} // field index -> record column
	use := func(fi int) int {
		if p, ok := pos[fi]; ok {
			return p
		}
		pos[fi] = len(order)
		order = append(order, fi)
		return pos[fi]
	}
	schemaErr := func(col, field, reason string) error {
		return &SchemaError{Path: f.path, Column: col, Field: field, Reason: reason}
	}
	// A column that is not there is told with the shard's columns: a typo shows at once.
	notFound := func(col, field string) error {
		e := &SchemaError{Path: f.path, Column: col, Field: field, Reason: "not found"}
		for i := range fields {
			e.Columns = append(e.Columns, fields[i].Field.Name)
		}
		return e
	}

	if f.opts.Key == "" {
		return fmt.Errorf("shard %s: %w: no key column (%s)", f.path, ErrSchema, fieldKey)
	}
	if len(f.opts.Features) == 0 {
		return fmt.Errorf("shard %s: %w: no feature columns (%s)", f.path, ErrSchema, fieldFeatures)
	}

	fi := find(f.opts.Key)
	if fi < 0 {
		return notFound(f.opts.Key, fieldKey)
	}
	if dt := fields[fi].Field.Type; !isText(dt) {
		return schemaErr(f.opts.Key, fieldKey, "is "+typeName(dt)+", a key must be a string or an integer")
	}
	f.keyCol, f.keyField = use(fi), fi

	for _, name := range f.opts.Features {
		fi := find(name)
		if fi < 0 {
			return notFound(name, fieldFeatures)
		}
		dt := fields[fi].Field.Type
		switch {
		case isNumeric(dt):
		case isList(dt):
			if len(f.opts.Features) != 1 {
				return schemaErr(name, fieldFeatures, "is "+typeName(dt)+", a list feature must be the only feature")
			}
			if !isFloat(listElem(dt)) {
				return schemaErr(name, fieldFeatures, "is "+typeName(dt)+", list features must hold float32 or float64")
			}
			f.isList = true
			if fs, ok := dt.(*arrow.FixedSizeListType); ok {
				f.listDim = int(fs.Len())
			}
		default:
			return schemaErr(name, fieldFeatures, "is "+typeName(dt)+", features must be numeric")
		}
		f.featCol = append(f.featCol, use(fi))
	}

	for _, name := range f.opts.Extra {
		fi := find(name)
		if fi < 0 {
			return notFound(name, fieldExtra)
		}
		if dt := fields[fi].Field.Type; !isText(dt) {
			return schemaErr(name, fieldExtra, "is "+typeName(dt)+", extra columns must be strings or integers")
		}
		f.extCol = append(f.extCol, use(fi))
	}

	// The leaves of each field, found through the Parquet schema: the
	// columns under a top-level node, in the order of the fields.
	sc := f.pr.MetaData().Schema
	for _, fi := range order {
		for leaf := 0; leaf < sc.NumColumns(); leaf++ {
			if sc.Root().FieldIndexByField(sc.ColumnRoot(leaf)) == fi {
				f.leaves = append(f.leaves, leaf)
			}
		}
	}
	if len(f.leaves) == 0 {
		return fmt.Errorf("shard %s: %w: no leaf columns to read", f.path, ErrCorrupt)
	}
	return nil
}

// Info describes the shard: its path, size, rows and row groups.
func (f *File) Info() FileInfo {
	return FileInfo{
		Path:      f.path,
		Bytes:     f.bytes,
		Rows:      f.rows,
		RowGroups: append([]RowGroup(nil), f.rowGroups...),
		KeyPrefix: f.keyPrefix,
	}
}

// Width is the number of float32 values Pack writes per row: for a single
// list feature column, its fixed size (fixed_size_list) or 0 for a variable
// list, whose width the model decides; for scalar columns, len(Features).
func (f *File) Width() int {
	if f.isList {
		return f.listDim
	}
	return len(f.opts.Features)
}

// Close releases the shard.
func (f *File) Close() error {
	if err := f.close(); err != nil {
		return fmt.Errorf("close shard %s: %w", f.path, err)
	}
	return nil
}

// callbackPanic carries a panic raised by the caller's fn through the
// decoder's recover, so that it is re-raised rather than reported as a
// corrupt file.
type callbackPanic struct{ v any }

// ReadRowGroup streams row group rg in Batches of at most BatchSize rows,
// calling fn for each in order. The Batch and everything reached through it
// are valid only during fn. An error returned by fn stops the read and is
// returned as is; read errors are wrapped `read shard PATH row group N: ...`.
// ReadRowGroup stops with ctx's error when ctx is cancelled.
func (f *File) ReadRowGroup(ctx context.Context, rg int, fn func(*Batch) error) (err error) {
	wrap := func(err error) error {
		return fmt.Errorf("read shard %s row group %d: %w", f.path, rg, err)
	}
	if rg < 0 || rg >= len(f.rowGroups) {
		return wrap(fmt.Errorf("no such row group (the file has %d)", len(f.rowGroups)))
	}
	defer func() {
		if r := recover(); r != nil {
			if cp, ok := r.(callbackPanic); ok {
				panic(cp.v)
			}
			err = wrap(fmt.Errorf("%w: %v", ErrCorrupt, r))
		}
	}()
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	// pqarrow opens the column readers on errgroup goroutines, where a panic
	// on a hostile footer cannot be recovered; open them here first, under
	// the recover above.
	rgr := f.pr.RowGroup(rg)
	for _, leaf := range f.leaves {
		if _, err := rgr.MetaData().ColumnChunk(leaf); err != nil {
			return wrap(corrupt(err))
		}
		if _, err := rgr.GetColumnPageReader(leaf); err != nil {
			return wrap(corrupt(err))
		}
	}
	rr, err := f.fr.GetRecordReader(ctx, f.leaves, []int{rg})
	if err != nil {
		return wrap(err)
	}
	defer rr.Release()

	b := &Batch{File: f.path, RowGroup: rg, file: f}
	want := f.rowGroups[rg].Rows
	var offset int64
	for rr.Next() {
		rec := rr.Record()
		n := rec.NumRows()
		if n == 0 {
			continue
		}
		if offset+n > want {
			return wrap(fmt.Errorf("%w: more rows than the %d in the footer", ErrCorrupt, want))
		}
		if err := b.reset(rec, offset); err != nil {
			return wrap(err)
		}
		if err := callFn(fn, b); err != nil {
			return err
		}
		offset += n
		if err := ctx.Err(); err != nil {
			return wrap(err)
		}
	}
	if err := rr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return wrap(err)
	}
	if offset != want {
		// Arrow v17 drops some decoder errors (an unsupported encoding such
		// as BYTE_STREAM_SPLIT) and just stops; never pass that off as success.
		return wrap(fmt.Errorf("%w: read %d rows, the footer says %d (an unsupported encoding or a corrupt page)", ErrCorrupt, offset, want))
	}
	return nil
}

// callFn runs fn, marking a panic it raises as the caller's own.
func callFn(fn func(*Batch) error, b *Batch) error {
	defer func() {
		if r := recover(); r != nil {
			panic(callbackPanic{r})
		}
	}()
	return fn(b)
}
