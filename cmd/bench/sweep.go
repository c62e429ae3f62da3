package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/staticref/staticref/inference"
)

var (
	sweepBatches = []int{1024, 4096, 8192, 32768}
	sweepWorkers = []int{1, 2, 4}
)

type sweepPoint struct {
	Batch, Workers int
	RowsPerSec     float64
	PeakRSSKiB     int64
}

// runSweep measures the whole pipeline for the first model and store at every batch
// size and worker count, each point in its own child process (so each peak RSS is the
// point's own), writes the CSV and plots it.
func runSweep(ctx context.Context, cfg Config, out io.Writer) error {
	if _, err := ensureDataset(cfg, cfg.Rows, cfg.Shards); err != nil {
		return err
	}
	if err := inference.Init(); err != nil {
		return err
	}
	if cfg.Stores[0] == "redis" {
		srv, err := startRedis(ctx)
		if err != nil {
			return err
		}
		defer srv.Stop()
		cfg.redisURL = srv.URL()
	}
	var pts []sweepPoint
	for _, w := range sweepWorkers {
		for _, b := range sweepBatches {
			var runs []float64
			var peak int64
			for range cfg.Repeat {
				r, err := spawnChild(ctx, cfg, cfg.Rows, b, w)
				if err != nil {
					return err
				}
				runs = append(runs, r.RowsPerSec)
				peak = max(peak, r.PeakRSSKiB)
			}
			p := sweepPoint{Batch: b, Workers: w, RowsPerSec: medianOf(runs), PeakRSSKiB: peak}
			cfg.logf("sweep: batch %5d workers %d: %.0f rows/s, peak %d MiB", b, w, p.RowsPerSec, peak>>10)
			pts = append(pts, p)
		}
	}
	if err := writeSweepCSV(cfg.SweepCSV, pts); err != nil {
		return err
	}
	if err := plotSweep(cfg.SweepPNG, cfg, pts); err != nil {
		return err
	}
	fmt.Fprintf(out, "## sweep: %s / %s, %d rows, %d shards, readers %d, intra-op threads %d (medians of %d)\n\n",
		cfg.Models[0], cfg.Stores[0], cfg.Rows, cfg.Shards, cfg.Readers, cfg.Threads, cfg.Repeat)
	fmt.Fprintln(out, "| batch | workers | pipeline rows/s | peak RSS MiB |")
	fmt.Fprintln(out, "|---:|---:|---:|---:|")
	for _, p := range pts {
		fmt.Fprintf(out, "| %d | %d | %.0f | %d |\n", p.Batch, p.Workers, p.RowsPerSec, p.PeakRSSKiB>>10)
	}
	fmt.Fprintf(out, "\nwrote %s and %s\n", cfg.SweepCSV, cfg.SweepPNG)
	return nil
}

func medianOf(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func writeSweepCSV(path string, pts []sweepPoint) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"batch_size", "workers", "rows_per_s", "peak_rss_kib"})
	for _, p := range pts {
		_ = w.Write([]string{strconv.Itoa(p.Batch), strconv.Itoa(p.Workers),
			strconv.FormatFloat(p.RowsPerSec, 'f', 0, 64), strconv.FormatInt(p.PeakRSSKiB, 10)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readSweepCSV reads what writeSweepCSV wrote, so the plot is made from the output.
func readSweepCSV(path string) ([]sweepPoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var pts []sweepPoint
	for i, r := range recs {
		if i == 0 {
			continue
		}
		if len(r) < 3 {
			return nil, fmt.Errorf("read %s: line %d has %d fields", path, i+1, len(r))
		}
		b, err1 := strconv.Atoi(r[0])
		w, err2 := strconv.Atoi(r[1])
		v, err3 := strconv.ParseFloat(r[2], 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("read %s: line %d: bad number", path, i+1)
		}
		pts = append(pts, sweepPoint{Batch: b, Workers: w, RowsPerSec: v})
	}
	return pts, nil
}

// plotSweep plots rows/s against batch size (log2 axis), one line per worker count,
// from the CSV at cfg.SweepCSV.
func plotSweep(path string, cfg Config, _ []sweepPoint) error {
	pts, err := readSweepCSV(cfg.SweepCSV)
	if err != nil {
		return err
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("staticref pipeline: %s / %s, %d rows", cfg.Models[0], cfg.Stores[0], cfg.Rows)
	p.X.Label.Text = "batch size (rows)"
	p.Y.Label.Text = "rows/s"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks(batchTicks())
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	var workers []int
	for _, pt := range pts {
		found := false
		for _, w := range workers {
			found = found || w == pt.Workers
		}
		if !found {
			workers = append(workers, pt.Workers)
		}
	}
	for i, w := range workers {
		var xy plotter.XYs
		for _, pt := range pts {
			if pt.Workers == w {
				xy = append(xy, plotter.XY{X: float64(pt.Batch), Y: pt.RowsPerSec})
			}
		}
		line, points, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		c := plotutil.Color(i)
		line.Color, points.Color = c, c
		points.Shape = plotutil.Shape(i)
		line.Width = vg.Points(1.5)
		p.Add(line, points)
		p.Legend.Add(fmt.Sprintf("workers %d", w), line, points)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.BackgroundColor = color.White
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

func batchTicks() []plot.Tick {
	var ts []plot.Tick
	for _, b := range sweepBatches {
		ts = append(ts, plot.Tick{Value: float64(b), Label: strconv.Itoa(b)})
	}
	return ts
}
