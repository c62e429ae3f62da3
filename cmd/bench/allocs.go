package main

import (
	"context"
	"fmt"
	"math"
	"runtime"

	"github.com/apache/arrow/go/v17/parquet/file"

	"github.com/staticref/staticref/readers"
)

// Where reading and packing allocate. A one-reader pass (scanAllocs) counts mallocs at
// every batch. Each row group's first batch carries the row group's set-up (column
// chunk readers, page readers, the first pages), and opening a file parses its footer;
// that is set-up. Every later batch of a row group is steady state: the mallocs between
// two batches of one row group are what it takes to decode and build the next batch and
// to pack the one before it. Steady state is then fitted (fitAllocs) as
//
//	mallocs = perBatch x batches + perDoubling x batches x log2(rows a batch)
//	        + perPage x pages + perRow x rows
//
// over passes at batch sizes from B/2 to 8B of the same rows written with two page
// sizes: batch size moves batches against rows, page size moves pages against rows.
// Arrow allocates per batch (each record's arrays), a few more per batch as batches
// double (its builders grow their buffers by doubling), and per page (Thrift-decoding
// each page header and its statistics, the page's value decoders). perRow is what the
// zero-allocation target is about: an allocation per row would show as 1 or more.

// allocSplit is one pass's count.
type allocSplit struct {
	Batch            int
	Files, RowGroups int
	SetupMallocs     uint64 // file opens, and each row group's first batch and end
	SteadyBatches    int64
	SteadyRows       int64
	SteadyMallocs    uint64
	SteadyPages      int // pages starting after a row group's first batch (pageStarts)
}

// allocFit is the fitted steady state.
type allocFit struct {
	PerBatch, PerDoubling, PerPage, PerRow float64
	// SetupPerRowGroup is set-up of the pass at the job's batch size, per row group.
	SetupPerRowGroup float64
	Passes           []allocSplit
}

// allocBatchShifts are the batch sizes of the passes, as shifts of the job's: B/2 .. 8B.
var allocBatchShifts = []int{-1, 0, 1, 2, 3}

// fitAllocs fits the model above to the passes' steady states by least squares (normal
// equations with columns scaled to 1, solved by Gaussian elimination).
func fitAllocs(passes []allocSplit) allocFit {
	fit := allocFit{Passes: passes}
	const k = 4
	cols := func(p allocSplit) [k]float64 {
		n := float64(p.SteadyBatches)
		return [k]float64{n, n * math.Log2(float64(p.SteadyRows)/max(n, 1)), float64(p.SteadyPages), float64(p.SteadyRows)}
	}
	if len(passes) < k {
		return fit
	}
	var scale [k]float64
	for _, p := range passes {
		for j, v := range cols(p) {
			scale[j] = max(scale[j], math.Abs(v))
		}
	}
	var a [k][k + 1]float64 // normal equations, augmented
	for _, p := range passes {
		x := cols(p)
		for j := range x {
			if scale[j] > 0 {
				x[j] /= scale[j]
			}
		}
		for i := range k {
			for j := range k {
				a[i][j] += x[i] * x[j]
			}
			a[i][k] += x[i] * float64(p.SteadyMallocs)
		}
	}
	for c := range k { // Gauss-Jordan elimination with partial pivoting
		piv := c
		for r := c + 1; r < k; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[piv][c]) {
				piv = r
			}
		}
		if math.Abs(a[piv][c]) < 1e-12 {
			return fit
		}
		a[c], a[piv] = a[piv], a[c]
		for r := range k {
			if r != c {
				f := a[r][c] / a[c][c]
				for j := c; j <= k; j++ {
					a[r][j] -= f * a[c][j]
				}
			}
		}
	}
	var beta [k]float64
	for i := range k {
		beta[i] = a[i][k] / a[i][i] / scale[i]
	}
	fit.PerBatch, fit.PerDoubling, fit.PerPage, fit.PerRow = beta[0], beta[1], beta[2], beta[3]
	return fit
}

// batchRange is the smallest and the largest batch size of the passes.
func (f allocFit) batchRange() (lo, hi int) {
	for _, p := range f.Passes {
		if lo == 0 || p.Batch < lo {
			lo = p.Batch
		}
		hi = max(hi, p.Batch)
	}
	return lo, hi
}

// mallocs is the process's malloc count so far (exact: ReadMemStats stops the world).
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// scanAllocs reads and packs every row group of d with one reader at the given batch
// size, as scan does, counting mallocs at each batch; starts are d's pageStarts.
func scanAllocs(ctx context.Context, d *dataset, starts [][]int64, batch int) (allocSplit, error) {
	a := allocSplit{Batch: batch}
	for _, chunk := range starts {
		for _, row := range chunk {
			if row >= int64(batch) {
				a.SteadyPages++
			}
		}
	}
	var (
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

// pageStarts returns, for every column chunk that scan decodes (the key and the
// features of every row group), the row (within the row group) each of its pages
// starts at, read with Arrow's page reader alone; a dictionary page starts at 0.
func pageStarts(d *dataset) ([][]int64, error) {
	cols := append([]string{"user_id"}, features...)
	var out [][]int64
	for _, p := range d.files {
		r, err := file.OpenParquetFile(p, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		sc := r.MetaData().Schema
		for rg := range r.NumRowGroups() {
			rgr := r.RowGroup(rg)
			for _, name := range cols {
				i := sc.ColumnIndexByName(name)
				if i < 0 {
					r.Close()
					return nil, fmt.Errorf("%s: no column %q", p, name)
				}
				pr, err := rgr.GetColumnPageReader(i)
				if err != nil {
					r.Close()
					return nil, fmt.Errorf("%s: column %q: %w", p, name, err)
				}
				var starts []int64
				var row int64
				for pr.Next() {
					starts = append(starts, row)
					if _, dict := pr.Page().(*file.DictionaryPage); !dict {
						row += int64(pr.Page().NumValues()) // flat columns: one value a row
					}
				}
				if err := pr.Err(); err != nil {
					r.Close()
					return nil, fmt.Errorf("%s: column %q: %w", p, name, err)
				}
				out = append(out, starts)
			}
		}
		r.Close()
	}
	return out, nil
}
