package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/apache/arrow/go/v17/parquet/file"

	"github.com/staticref/staticref/readers"
)

// allocSplit is where the allocations of reading and packing one data set fall, from
// one pass with a single reader that counts mallocs at every batch.
//
// Each row group's first batch carries the row group's set-up (column chunk readers,
// page readers, the first pages' headers), and opening a file parses its footer; that
// is SetupMallocs. Every later batch of a row group is steady state: the mallocs between
// two batches of the same row group are what it takes to decode and build the next
// batch and to pack the one before it. Their mean per batch at two batch sizes B and 2B
// separates a constant per batch from a part that grows with the rows in a batch:
//
//	per batch at B  = perBatch + perRow x B
//	per batch at 2B = perBatch + perRow x 2B
//
// perRow is what the zero-allocation target is about. It also takes in, amortised, the
// allocations Arrow makes once per data page (Thrift-decoding the page header and its
// statistics), since pages are not aligned with batches; pages of ~100k values put those
// at well under 0.001 a row, where an allocation per row would show as 1 or more.
type allocSplit struct {
	Files, RowGroups int
	SetupMallocs     uint64 // file opens, and each row group's first batch and end
	SteadyBatches    int64
	SteadyRows       int64
	SteadyMallocs    uint64
}

// perBatch is the mean mallocs of one steady-state batch.
func (a allocSplit) perBatch() float64 {
	if a.SteadyBatches == 0 {
		return 0
	}
	return float64(a.SteadyMallocs) / float64(a.SteadyBatches)
}

// rowsPerBatch is the mean rows of one steady-state batch.
func (a allocSplit) rowsPerBatch() float64 {
	if a.SteadyBatches == 0 {
		return 0
	}
	return float64(a.SteadyRows) / float64(a.SteadyBatches)
}

// splitAllocs fits perBatch + perRow x rows to the steady state of two passes at
// different batch sizes.
func splitAllocs(small, large allocSplit) (perBatch, perRow float64) {
	dr := large.rowsPerBatch() - small.rowsPerBatch()
	if dr <= 0 {
		return small.perBatch(), 0
	}
	perRow = max(0, (large.perBatch()-small.perBatch())/dr)
	return max(0, small.perBatch()-perRow*small.rowsPerBatch()), perRow
}

// mallocs is the process's malloc count so far (exact: ReadMemStats stops the world).
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// scanAllocs reads and packs every row group of d with one reader at the given batch
// size, as scan does, counting mallocs at each batch (see allocSplit).
func scanAllocs(ctx context.Context, d *dataset, batch int) (allocSplit, error) {
	var (
		a        allocSplit
		keys     = make([]byte, 0, batch*16)
		feats    = make([]float32, batch*len(features))
		valid    = make([]bool, batch)
		last     uint64
		rgBatchN int
	)
	for _, p := range d.files {
		last = mallocs()
		f, err := readers.Open(p, d.readerOptions(batch))
		if err != nil {
			return a, err
		}
		a.Files++
		for _, rg := range f.Info().RowGroups {
			a.RowGroups++
			rgBatchN = 0
			err := f.ReadRowGroup(ctx, rg.Index, func(b *readers.Batch) error {
				now := mallocs()
				if rgBatchN == 0 {
					a.SetupMallocs += now - last
				} else {
					a.SteadyMallocs += now - last
					a.SteadyBatches++
					a.SteadyRows += int64(b.Len)
				}
				rgBatchN++
				last = now
				keys = keys[:0]
				for i := range b.Len {
					if b.KeyValid(i) {
						keys = b.AppendKey(keys, i)
					}
				}
				if _, err := b.Pack(feats[:b.Len*len(features)], len(features), valid); err != nil {
					return err
				}
				return nil
			})
			if err != nil {
				f.Close()
				return a, err
			}
			now := mallocs()
			a.SetupMallocs += now - last
			last = now
		}
		f.Close()
		a.SetupMallocs += mallocs() - last
	}
	return a, nil
}

// pageAllocs reads every page of the columns scan decodes (the key and the features)
// with Arrow's page reader alone, each header decoded and each page decompressed but no
// value decoded, and returns the number of pages and the mallocs made per page beyond
// a column chunk's first (whose own count includes the chunk reader's set-up).
func pageAllocs(d *dataset) (pages int64, perPage float64, err error) {
	cols := append([]string{"user_id"}, features...)
	var later int64
	var m uint64
	for _, p := range d.files {
		r, err := file.OpenParquetFile(p, false)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", p, err)
		}
		sc := r.MetaData().Schema
		for rg := range r.NumRowGroups() {
			rgr := r.RowGroup(rg)
			for _, name := range cols {
				i := sc.ColumnIndexByName(name)
				if i < 0 {
					r.Close()
					return 0, 0, fmt.Errorf("%s: no column %q", p, name)
				}
				pr, err := rgr.GetColumnPageReader(i)
				if err != nil {
					r.Close()
					return 0, 0, fmt.Errorf("%s: column %q: %w", p, name, err)
				}
				first := true
				for {
					before := mallocs()
					if !pr.Next() {
						break
					}
					pages++
					if !first {
						m += mallocs() - before
						later++
					}
					first = false
				}
				if err := pr.Err(); err != nil {
					r.Close()
					return 0, 0, fmt.Errorf("%s: column %q: %w", p, name, err)
				}
			}
		}
		r.Close()
	}
	if later > 0 {
		perPage = float64(m) / float64(later)
	}
	return pages, perPage, nil
}
