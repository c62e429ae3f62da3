package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// Report is one bench run's results.
type Report struct {
	Config       Config
	Started      time.Time
	Elapsed      time.Duration
	RedisVersion string
	Cases        []*caseResult
}

// Targets, printed as PASS/FAIL lines.
const (
	targetPipelineRatio = 0.8 // pipeline >= 0.8 x the slowest isolated stage
	targetRedisRatio    = 0.8 // Redis write >= 0.8 x redis-benchmark -P 64 of the same HSETs
	// targetAllocsPerRow: reading + packing + encoding make no allocation per row, once
	// the allocations made per batch and per page are taken out (allocs.go); an
	// allocation per row measures 1 or more.
	targetAllocsPerRow = 0.001
)

var stages = []string{stageScan, stageInfer, stageWrite, stagePipeline}

// slowest is the isolated stage (a, b or c) with the fewest rows/s.
func (c *caseResult) slowest() (string, float64) {
	name, rate := "", 0.0
	for _, s := range stages[:3] {
		if r := c.median(s).RowsPerSec(); name == "" || r < rate {
			name, rate = s, r
		}
	}
	return name, rate
}

// Ratio is d / min(a, b, c).
func (c *caseResult) Ratio() float64 {
	_, slow := c.slowest()
	if slow == 0 {
		return 0
	}
	return c.median(stagePipeline).RowsPerSec() / slow
}

// encodePerRow is the allocations per row of encoding values into a reused buffer.
func (c *caseResult) encodePerRow() float64 {
	rows := c.median(stageScan).Rows
	if rows == 0 {
		return 0
	}
	return float64(c.EncodeMallocs) / float64(rows)
}

// steadyAllocs is the allocations per row of reading, packing and encoding in steady
// state, beyond those made per batch and per page (which the target allows).
func (c *caseResult) steadyAllocs() float64 { return max(0, c.Allocs.PerRow) + c.encodePerRow() }

// cpuCeiling is the most rows/s the process's cores (GOMAXPROCS) could give a pipeline
// that does the work of stages a, b and c and nothing else: cores / (CPU a row of
// a + b + c). It is the bound when every stage is CPU work on the same cores, as with
// Pebble.
func (c *caseResult) cpuCeiling() float64 {
	var perRow time.Duration
	for _, s := range stages[:3] {
		perRow += c.median(s).CPUPerRow()
	}
	if perRow <= 0 {
		return 0
	}
	return float64(runtime.GOMAXPROCS(0)) / perRow.Seconds()
}

type target struct {
	ok   bool
	line string
}

func (r *Report) targets() []target {
	var ts []target
	for _, c := range r.Cases {
		name, slow := c.slowest()
		d := c.median(stagePipeline).RowsPerSec()
		ratio := c.Ratio()
		ts = append(ts, target{ratio >= targetPipelineRatio, fmt.Sprintf(
			"%s/%s: pipeline %.0f rows/s is %.2fx the slowest stage (%s, %.0f rows/s); target >= %.2fx",
			c.Model, c.Store, d, ratio, name, slow, targetPipelineRatio)})
	}
	for _, c := range r.Cases {
		if c.Store != "redis" {
			continue
		}
		w := c.median(stageWrite).RowsPerSec()
		if c.RedisBenchmark == 0 {
			ts = append(ts, target{true, fmt.Sprintf("%s/redis: write path vs redis-benchmark SKIPPED (%s)", c.Model, c.RedisBenchNote)})
			continue
		}
		ratio := w / c.RedisBenchmark
		ts = append(ts, target{ratio >= targetRedisRatio, fmt.Sprintf(
			"%s/redis: write path %.0f rows/s is %.2fx redis-benchmark -P 64 HSET into %d buckets, %.0f-byte values (%.0f req/s); target >= %.2fx",
			c.Model, w, ratio, c.RedisBuckets, c.ValueBytes, c.RedisBenchmark, targetRedisRatio)})
	}
	for _, c := range r.Cases {
		a, f := c.steadyAllocs(), c.Allocs
		lo, hi := f.batchRange()
		ts = append(ts, target{a < targetAllocsPerRow, fmt.Sprintf(
			"%s/%s: read+pack+encode %.5f allocs/row (target < %g): steady-state scan %.5f/row beside %.1f per batch, %.1f more per doubling "+
				"of the batch and %.1f per page (fitted over %d passes: batch %d-%d, pages of 256 KiB and 1 MiB), encode %.5f/row; "+
				"set-up %.0f per row group; all in %.4f/row",
			c.Model, c.Store, a, targetAllocsPerRow, f.PerRow, f.PerBatch, f.PerDoubling, f.PerPage, len(f.Passes), lo, hi,
			c.encodePerRow(), f.SetupPerRowGroup, c.median(stageScan).AllocsPerRow())})
	}
	return ts
}

// Passed reports whether every target passed.
func (r *Report) Passed() bool {
	for _, t := range r.targets() {
		if !t.ok {
			return false
		}
	}
	return true
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func mib(kib int64) string {
	if kib < 0 {
		return "?"
	}
	return fmt.Sprintf("%d", kib>>10)
}

// Print writes the table and the target lines.
func (r *Report) Print(w io.Writer) {
	cfg := r.Config
	host, _ := hostname()
	fmt.Fprintf(w, "## staticref bench: %d rows, %d shards, batch %d, workers %d, intra-op threads %d, readers %d, encoding %s\n\n",
		cfg.Rows, cfg.Shards, cfg.BatchSize, cfg.Workers, cfg.Threads, cfg.Readers, cfg.Encoding)
	fmt.Fprintf(w, "machine: %s, %d CPUs (GOMAXPROCS %d), %s/%s, %s", host, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	if r.RedisVersion != "" {
		fmt.Fprintf(w, ", redis-server %s", r.RedisVersion)
	}
	fmt.Fprintf(w, "\nrun: %s, took %s; rows/s are medians of %d run(s)\n\n", r.Started.UTC().Format(time.RFC3339), r.Elapsed.Round(time.Second), cfg.Repeat)

	fmt.Fprintln(w, "| model | store | (a) scan rows/s | (b) infer rows/s | (c) write rows/s | (d) pipeline rows/s | d / min(a,b,c) | slowest | cores busy a/b/c/d | CPU ns/row a/b/c/d | peak RSS MiB a/b/c/d | allocs/row a/b/c/d |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
	for _, c := range r.Cases {
		var cores, cpu, rss, allocs []string
		for _, s := range stages {
			m := c.median(s)
			cores = append(cores, fmt.Sprintf("%.2f", m.Cores()))
			cpu = append(cpu, fmt.Sprintf("%d", m.CPUPerRow().Nanoseconds()))
			rss = append(rss, mib(m.PeakRSSKiB))
			allocs = append(allocs, fmt.Sprintf("%.3f", m.AllocsPerRow()))
		}
		name, _ := c.slowest()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %s |\n", c.Model, c.Store,
			rate(c.median(stageScan).RowsPerSec()), rate(c.median(stageInfer).RowsPerSec()),
			rate(c.median(stageWrite).RowsPerSec()), rate(c.median(stagePipeline).RowsPerSec()),
			c.Ratio(), name, strings.Join(cores, " / "), strings.Join(cpu, " / "), strings.Join(rss, " / "), strings.Join(allocs, " / "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "cores busy and CPU ns/row: this process's user+system time (getrusage), so not redis-server's.")
	fmt.Fprintf(w, "CPU ceiling of the in-process store (%d cores / CPU a row of a+b+c: the bound when every stage is CPU work on the same cores):", runtime.GOMAXPROCS(0))
	for _, c := range r.Cases {
		if ceil := c.cpuCeiling(); ceil > 0 && c.Store == "pebble" {
			fmt.Fprintf(w, " %s/%s %s rows/s, pipeline at %.2f of it;", c.Model, c.Store, rate(ceil), c.median(stagePipeline).RowsPerSec()/ceil)
		}
	}
	fmt.Fprintln(w)
	for _, c := range r.Cases {
		if c.Store == "redis" && c.RedisBenchmark > 0 {
			fmt.Fprintf(w, "%s (%s values): %s HSET/s\n", strings.Replace(c.RedisBenchCommand, strings.Repeat("v", int(c.ValueBytes+0.5)), fmt.Sprintf("<%.0f bytes>", c.ValueBytes), 1), c.Model, rate(c.RedisBenchmark))
		}
	}
	fmt.Fprintln(w, "peak RSS: VmHWM read after each stage; the mark is reset (/proc/self/clear_refs) after a GC and")
	fmt.Fprintln(w, "FreeOSMemory before each stage, so it is the stage's peak plus what the process already holds")
	fmt.Fprintln(w, "(model, packed batches; for (c) the keys and values of every row).")
	fmt.Fprintln(w)
	for _, t := range r.targets() {
		fmt.Fprintf(w, "%s %s\n", passFail(t.ok), t.line)
	}
	fmt.Fprintln(w, "---- memory bounded (4M vs 1M rows): run with --memcheck")
}
