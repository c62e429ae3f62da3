package readers

import (
	"bytes"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/pierrec/lz4/v4"
)

// lz4RawCompression is Parquet's LZ4_RAW codec id (7), which Arrow v17
// names but does not implement. Files from pyarrow, DuckDB, Rust and
// parquet-go use it, so this package registers a block codec for it.
const lz4RawCompression = compress.Compression(7)

func init() {
	if _, err := compress.GetCodec(lz4RawCompression); err != nil {
		compress.RegisterCodec(lz4RawCompression, lz4RawCodec{})
	}
}

// lz4RawCodec is an Arrow compress.Codec for LZ4_RAW: bare LZ4 blocks.
// Arrow calls Decode with dst sized to the page's uncompressed length and
// expects a panic on bad input (as its snappy and zstd codecs do); the reader
// recovers it as a corrupt-file error.
type lz4RawCodec struct{}

func (lz4RawCodec) Decode(dst, src []byte) []byte {
	n, err := lz4.UncompressBlock(src, dst)
	if err != nil {
		panic(fmt.Errorf("lz4_raw: %w", err))
	}
	return dst[:n]
}

func (lz4RawCodec) Encode(dst, src []byte) []byte {
	if cap(dst) < lz4.CompressBlockBound(len(src)) {
		dst = make([]byte, lz4.CompressBlockBound(len(src)))
	}
	dst = dst[:cap(dst)]
	var c lz4.Compressor
	n, err := c.CompressBlock(src, dst)
	if err != nil {
		panic(fmt.Errorf("lz4_raw: %w", err))
	}
	return dst[:n]
}

func (c lz4RawCodec) EncodeLevel(dst, src []byte, _ int) []byte { return c.Encode(dst, src) }

func (lz4RawCodec) CompressBound(n int64) int64 { return int64(lz4.CompressBlockBound(int(n))) }

// NewReader and NewWriter are streaming forms, which Parquet pages never use.
func (c lz4RawCodec) NewReader(r io.Reader) io.ReadCloser {
	return io.NopCloser(&errReader{fmt.Errorf("lz4_raw: streaming is not supported")})
}

func (c lz4RawCodec) NewWriter(w io.Writer) io.WriteCloser {
	return &blockWriter{w: w, c: c}
}

func (c lz4RawCodec) NewWriterLevel(w io.Writer, _ int) (io.WriteCloser, error) {
	return c.NewWriter(w), nil
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// blockWriter buffers everything and writes one block on Close.
type blockWriter struct {
	w   io.Writer
	c   lz4RawCodec
	buf bytes.Buffer
}

func (b *blockWriter) Write(p []byte) (int, error) { return b.buf.Write(p) }

func (b *blockWriter) Close() error {
	_, err := b.w.Write(b.c.Encode(nil, b.buf.Bytes()))
	return err
}
