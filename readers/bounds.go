package readers

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxFooterBytes is the largest Parquet footer (the file's metadata) a shard may have:
// 64 MiB, a hundred times that of a file of 1,000 columns in 100 row groups. The footer
// is read whole into memory, so its length, which the file's last 8 bytes claim, is
// checked against this and against the file's size before anything is read: a claim of
// 1.8 GB had the Parquet reader allocate 1.7 GB before it failed.
const MaxFooterBytes = 64 << 20

// footerTail is the last 8 bytes of a Parquet file: the footer's length (uint32, little
// endian) and the magic PAR1 (PARE for an encrypted footer).
const footerTail = 8

// checkFooter checks the sizes a file claims at its ends before any of it is parsed: the
// magic at both ends, and a footer length that fits between the leading magic and the
// tail, within MaxFooterBytes. It returns where the footer starts: the column chunks
// must lie before it.
func checkFooter(r io.ReaderAt, size int64) (footerStart int64, err error) {
	if size < 4+footerTail {
		return 0, fmt.Errorf("%w: %d bytes, too small to be Parquet", ErrCorrupt, size)
	}
	var head [4]byte
	var tail [footerTail]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return 0, corrupt(fmt.Errorf("read header: %w", err))
	}
	if _, err := r.ReadAt(tail[:], size-footerTail); err != nil {
		return 0, corrupt(fmt.Errorf("read footer length: %w", err))
	}
	if !magic(head[:]) || !magic(tail[4:]) {
		return 0, fmt.Errorf("%w: no PAR1 magic at the start and end: not a Parquet file", ErrCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	switch {
	case n > size-4-footerTail:
		return 0, fmt.Errorf("%w: the footer claims %d bytes, the file has only %d", ErrCorrupt, n, size)
	case n > MaxFooterBytes:
		return 0, fmt.Errorf("%w: a footer of %d bytes, over %d (MaxFooterBytes)", ErrCorrupt, n, MaxFooterBytes)
	}
	return size - footerTail - n, nil
}

func magic(b []byte) bool { return string(b) == "PAR1" || string(b) == "PARE" }

// checkChunks checks that every column chunk the shard reads lies between the leading
// magic and the footer, as its metadata claims: a chunk claimed past the end would be
// read from the footer's bytes, or not at all.
func (f *File) checkChunks(footerStart int64) error {
	md := f.pr.MetaData()
	for rg := range f.rowGroups {
		g := md.RowGroup(rg)
		for _, leaf := range f.leaves {
			cc, err := g.ColumnChunk(leaf)
			if err != nil {
				return fmt.Errorf("shard %s: %w: row group %d column %d: %w", f.path, ErrCorrupt, rg, leaf, err)
			}
			start := cc.DataPageOffset()
			if cc.HasDictionaryPage() && cc.DictionaryPageOffset() > 0 && cc.DictionaryPageOffset() < start {
				start = cc.DictionaryPageOffset()
			}
			n := cc.TotalCompressedSize()
			if start < 4 || n < 0 || start > footerStart || n > footerStart-start {
				return fmt.Errorf("shard %s: %w: row group %d column %s claims bytes %d to %d, outside the file's data (4 to %d)",
					f.path, ErrCorrupt, rg, cc.PathInSchema(), start, start+n, footerStart)
			}
		}
	}
	return nil
}
