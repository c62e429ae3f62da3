// Package export writes a version's rows as Parquet files into a local folder or an
// object-store prefix (s3://, gs://, azblob://, file://, through gocloud.dev/blob): the
// `sink.export` of a job and the files of an export-only `parquet:` store.
//
// A file holds a column `key` (a string: the key exactly as the lookup store holds it,
// whatever the source column's type) and one column per model output, float32 for an
// output of width 1 and list<float32> for a wider one; zstd; row groups cut when the
// buffered (uncompressed) row group reaches a byte target. Columns are in name order,
// as parquet-go lays out a group; readers should address them by name.
//
// A file is streamed straight into the bucket's writer as rows arrive: nothing is staged
// whole in memory or on disk. An object appears only when its writer closes without error
// (gocloud.dev/blob writers are atomic on Close; fileblob renames a temporary file), so a
// file aborted or cut off by a crash never shows up half-written, and writing the same
// name again replaces it whole.
//
// It never imports pipeline, lookup, scheduler or cmd.
package export

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/parquet-go/parquet-go"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/writers"
)

// DefaultRowGroupBytes is the row group target when Options.RowGroupBytes is 0.
const DefaultRowGroupBytes = 64 << 20

// KeyColumn is the name of the key column.
const KeyColumn = "key"

// Options shape the files.
type Options struct {
	// RowGroupBytes: a row group is flushed when its buffered, uncompressed size reaches
	// this many bytes (DefaultRowGroupBytes when 0).
	RowGroupBytes int64
	// MustExist: a local folder that does not exist is an error, not created.
	MustExist bool
}

// Target is an open export location: a bucket and a prefix within it.
type Target struct {
	bucket *blob.Bucket
	prefix string // "" or ending in "/"
	name   string // for messages: SCHEME://BUCKET/PREFIX or the local folder, no query
	opts   Options
}

// CheckURL reports whether raw can name an export location, without opening anything:
// a local folder, file://…, s3://BUCKET/PREFIX, gs://…, azblob://… (writers.CheckExportURL).
func CheckURL(raw string) error { return writers.CheckExportURL(raw) }

// Name is raw as messages and manifests show it: the query (endpoints, options) and any
// userinfo dropped, so no secret is ever recorded (writers.ExportName).
func Name(raw string) string { return writers.ExportName(raw) }

// Open opens the export location raw. A local folder (or file:// URL) is created if it
// does not exist.
func Open(ctx context.Context, raw string, opts Options) (*Target, error) {
	if err := CheckURL(raw); err != nil {
		return nil, fmt.Errorf("export %s: %w", Name(raw), err)
	}
	if opts.RowGroupBytes <= 0 {
		opts.RowGroupBytes = DefaultRowGroupBytes
	}
	t := &Target{name: Name(raw), opts: opts}
	if objstore.IsURL(raw) {
		o, err := objstore.Parse(raw)
		if err != nil {
			return nil, err
		}
		if t.bucket, err = objstore.OpenBucket(ctx, o); err != nil {
			return nil, fmt.Errorf("export %s: %w", t.name, err)
		}
		if o.Key != "" {
			t.prefix = strings.TrimSuffix(o.Key, "/") + "/"
		}
		return t, nil
	}
	dir := raw
	if p, ok := objstore.FilePath(raw); ok {
		dir = p
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", t.name, err)
	}
	// Temporary files beside their destination (NoTempDir), so that Close's rename never
	// crosses file systems; no .attrs sidecar files beside the Parquet.
	if t.bucket, err = fileblob.OpenBucket(dir, &fileblob.Options{CreateDir: !opts.MustExist, NoTempDir: true, Metadata: fileblob.MetadataDontWrite}); err != nil {
		return nil, fmt.Errorf("export %s: %w", t.name, err)
	}
	return t, nil
}

// Name names the location in messages and manifests (no query, no secret).
func (t *Target) Name() string { return t.name }

// Bucket is the bucket beneath the location, and Prefix the prefix of its keys.
func (t *Target) Bucket() *blob.Bucket { return t.bucket }

// Prefix is the key prefix of the location within its bucket ("" or ending in "/").
func (t *Target) Prefix() string { return t.prefix }

// Close closes the bucket.
func (t *Target) Close() error { return t.bucket.Close() }

// VersionDir is the path, relative to the location, of a version's files.
func VersionDir(ns, version string) string { return ns + "/" + version }

// PartName is the path, relative to the location, of part n of a version.
func PartName(ns, version string, n int) string {
	return fmt.Sprintf("%s/part-%05d.parquet", VersionDir(ns, version), n)
}

// ManifestName is the path, relative to the location, of a complete version's manifest.
func ManifestName(ns, version string) string { return VersionDir(ns, version) + "/manifest.json" }

// Publish writes a complete version's manifest (JSON) beside its files, as the sign to
// consumers that the folder is whole.
func (t *Target) Publish(ctx context.Context, ns, version string, manifest []byte) error {
	ctx, cancel := context.WithTimeout(ctx, objstore.CallTimeout)
	defer cancel()
	rel := ManifestName(ns, version)
	if err := t.bucket.WriteAll(ctx, t.prefix+rel, manifest, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("export %s/%s: %w", t.name, rel, err)
	}
	return nil
}

// Schema is the Parquet schema of an export of outputs; an output named like the key
// column is refused.
func Schema(outputs []writers.Output) (*parquet.Schema, error) {
	g := parquet.Group{KeyColumn: parquet.String()}
	for _, o := range outputs {
		if o.Name == KeyColumn {
			return nil, fmt.Errorf("model output %q: the export's key column has that name", o.Name)
		}
		if _, dup := g[o.Name]; dup {
			return nil, fmt.Errorf("model output %q: listed twice", o.Name)
		}
		switch {
		case o.Width < 1:
			return nil, fmt.Errorf("model output %q: width %d", o.Name, o.Width)
		case o.Width == 1:
			g[o.Name] = parquet.Leaf(parquet.FloatType)
		default:
			g[o.Name] = parquet.List(parquet.Leaf(parquet.FloatType))
		}
	}
	return parquet.NewSchema("staticref", g), nil
}

// File is one Parquet file being written. It is not safe for concurrent use.
type File struct {
	path    string // relative to the target
	name    string // full name, for messages
	cancel  context.CancelFunc
	bw      *blob.Writer
	counter *countingWriter
	pw      *parquet.Writer
	outputs []writers.Output
	order   []int // the outputs in leaf column order, -1 for the key
	target  int64
	flushed int64 // the writer's Size after the last row group was cut
	row     parquet.Row
	rows    int64
	done    bool
	stall   *time.Timer
	stalled atomic.Bool
}

// Create starts part n of version ns/version (an existing object of that name is replaced
// only when the new one closes). Cancelling ctx, or Abort, abandons it: no object appears.
func (t *Target) Create(ctx context.Context, ns, version string, n int, outputs []writers.Output) (*File, error) {
	schema, err := Schema(outputs)
	if err != nil {
		return nil, err
	}
	rel := PartName(ns, version, n)
	f := &File{path: rel, name: t.name + "/" + rel, outputs: outputs, target: t.opts.RowGroupBytes}
	index := map[string]int{KeyColumn: -1}
	for k, o := range outputs {
		index[o.Name] = k
	}
	for _, p := range schema.Columns() {
		f.order = append(f.order, index[p[0]])
	}
	wctx, cancel := context.WithCancel(ctx)
	bw, err := t.bucket.NewWriter(wctx, t.prefix+rel, &blob.WriterOptions{ContentType: "application/vnd.apache.parquet"})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("export %s: %w", f.name, err)
	}
	// The watchdog: a store that stops answering mid-file (the GCS client retries a
	// refused connection forever) must fail the file, not hang the run. Every write that
	// returns, and the start of Close, gives the upload another CallTimeout.
	f.stall = time.AfterFunc(objstore.CallTimeout, func() { f.stalled.Store(true); cancel() })
	f.cancel, f.bw, f.counter = cancel, bw, &countingWriter{w: bw, progress: func() { f.stall.Reset(objstore.CallTimeout) }}
	f.pw = parquet.NewWriter(f.counter, schema, parquet.Compression(&parquet.Zstd),
		parquet.CreatedBy("staticref export", "1", ""))
	return f, nil
}

// Name is the file's full name, for messages.
func (f *File) Name() string { return f.name }

// Add appends the row of index row of a batch: key, and for each output k its values
// outs[k][row*Width : (row+1)*Width].
func (f *File) Add(key []byte, outs [][]float32, row int) error {
	// A row's values go column by column, in the schema's leaf order; a list's values
	// repeat at level 1 after the first, all defined (the list and its elements are
	// required).
	r := f.row[:0]
	for col, k := range f.order {
		if k < 0 {
			r = append(r, parquet.ByteArrayValue(key).Level(0, 0, col))
			continue
		}
		o := f.outputs[k]
		vals := outs[k][row*o.Width : (row+1)*o.Width]
		if o.Width == 1 {
			r = append(r, parquet.FloatValue(vals[0]).Level(0, 0, col))
			continue
		}
		for i, v := range vals {
			r = append(r, parquet.FloatValue(v).Level(min(i, 1), 1, col))
		}
	}
	f.row = r
	if _, err := f.pw.WriteRows([]parquet.Row{r}); err != nil {
		return f.fail(err)
	}
	f.rows++
	if f.pw.Size()-f.flushed >= f.target {
		if err := f.pw.Flush(); err != nil {
			return f.fail(err)
		}
		f.flushed = f.pw.Size()
	}
	return nil
}

// Close finishes the file: the footer, then the object, which exists once Close returns
// nil.
func (f *File) Close() (writers.ExportFile, error) {
	if f.done {
		return writers.ExportFile{}, fmt.Errorf("export %s: closed twice", f.name)
	}
	f.done = true
	defer f.cancel()
	defer f.stall.Stop()
	if err := f.pw.Close(); err != nil {
		f.cancel()
		f.bw.Close()
		return writers.ExportFile{}, f.fail(err)
	}
	f.stall.Reset(objstore.CallTimeout)
	if err := f.bw.Close(); err != nil {
		return writers.ExportFile{}, f.fail(err)
	}
	return writers.ExportFile{Path: f.path, Rows: f.rows, Bytes: f.counter.n}, nil
}

// fail names the file in err, and says so when the watchdog cut it off.
func (f *File) fail(err error) error {
	if f.stalled.Load() {
		return fmt.Errorf("export %s: the store made no progress for %s: %w", f.name, objstore.CallTimeout, err)
	}
	return fmt.Errorf("export %s: %w", f.name, err)
}

// Abort abandons the file: no object is written. It does nothing after Close.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.stall.Stop()
	f.cancel() // a cancelled context makes Close abort the upload
	f.bw.Close()
}

// countingWriter counts the bytes its writer took and reports each write that returned.
type countingWriter struct {
	w        io.Writer
	n        int64
	progress func()
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err == nil {
		c.progress()
	}
	return n, err
}
