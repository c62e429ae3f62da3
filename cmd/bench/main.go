// Command bench measures staticref's batch throughput: for one generated data set it
// times each stage of a job alone (Parquet scan, bare ONNX Runtime inference, store
// writes) and the whole pipeline, for the logistic and MLP models against the embedded
// Pebble store and a local Redis it starts itself, and prints one table with rows/s,
// peak RSS and allocations per row, followed by the performance targets as PASS/FAIL
// lines. `make bench` runs it; docs/performance.md ("Batch throughput") explains the
// numbers.
//
// Modes: the default table; --sweep (pipeline rows/s against batch size and workers,
// written to docs/bench/sweep.csv and plotted to docs/bench/sweep.png); --memcheck
// (peak RSS of the pipeline at 1M and 4M rows, each in a child process of this binary);
// --redismem (Redis memory per row and write speed by layout and encoding, against
// redis-benchmark HSET: redismem.go).
//
// The targets are reported, never enforced by tests: a noisy shared machine must not
// fail a build. --strict makes a FAIL the exit status, for a quiet dedicated runner.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	_ "github.com/staticref/staticref/writers/all" // every store driver
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main parses args, runs the requested mode and returns the exit status: 0, 1 for a
// failed run (or a FAIL with --strict), 2 for bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Rows, "rows", cfg.Rows, "rows in the generated data set")
	fs.IntVar(&cfg.Shards, "shards", cfg.Shards, "Parquet shards in the generated data set")
	fs.IntVar(&cfg.RowGroupRows, "row-group-rows", 200_000, "rows per Parquet row group (Spark and parquet-mr write 128 MiB row groups, millions of these rows; the scan's allocations are per row group)")
	fs.StringVar(&cfg.Cache, "cache", cfg.Cache, "directory the data sets and models are generated into (reused when present)")
	fs.IntVar(&cfg.BatchSize, "batch", cfg.BatchSize, "model.batch_size")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "model.workers (inference sessions)")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "model.intra_op_threads")
	fs.IntVar(&cfg.Readers, "readers", cfg.Readers, "row groups decoded at once (pipeline.Config.Readers)")
	fs.StringVar(&cfg.Encoding, "encoding", cfg.Encoding, "sink.encoding: json or binary")
	models := fs.String("models", strings.Join(cfg.Models, ","), "models to measure: logistic, mlp")
	stores := fs.String("stores", strings.Join(cfg.Stores, ","), "stores to measure: pebble, redis")
	fs.IntVar(&cfg.Repeat, "repeat", cfg.Repeat, "runs of each stage; the table shows medians")
	fs.StringVar(&cfg.ProfileDir, "cpuprofile", "", "write CPU profiles of the first store-write (c) and whole-pipeline (d) run of each case into this directory")
	fs.StringVar(&cfg.Out, "out", "", "also write the report to this file")
	fs.BoolVar(&cfg.Strict, "strict", false, "exit 1 when a target FAILs")
	sweep := fs.Bool("sweep", false, "measure the pipeline against batch size and workers (first of --models and --stores)")
	fs.StringVar(&cfg.SweepCSV, "sweep-csv", cfg.SweepCSV, "where --sweep writes its CSV")
	fs.StringVar(&cfg.SweepPNG, "sweep-png", cfg.SweepPNG, "where --sweep writes its plot")
	memcheck := fs.Bool("memcheck", false, "compare the pipeline's peak RSS at 1M and 4M rows, each in a child process")
	redisMem := fs.Bool("redismem", false, "Redis memory per row and write speed of the hash-buckets layout against the plain one and redis-benchmark HSET, for json and binary values (make redismem)")
	child := fs.Bool("child-pipeline", false, "internal: run the pipeline once and print its result as JSON (used by --memcheck)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [flags]\n\nexample: go run ./cmd/bench --rows 200000 --stores pebble\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Models, cfg.Stores = splitList(*models), splitList(*stores)
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	out := stdout
	if cfg.Out != "" && !*child {
		f, err := os.Create(cfg.Out)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		out = io.MultiWriter(stdout, f)
	}
	cfg.Progress = stderr

	var (
		ok  bool
		err error
	)
	switch {
	case *child:
		err = runChild(ctx, cfg, stdout)
		ok = true
	case *sweep:
		err = runSweep(ctx, cfg, out)
		ok = true
	case *redisMem:
		ok, err = runRedisMem(ctx, cfg, out)
	case *memcheck:
		ok, err = runMemcheck(ctx, cfg, out)
	default:
		var rep *Report
		rep, err = Run(ctx, cfg)
		if rep != nil {
			rep.Print(out)
			ok = rep.Passed()
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if !ok && cfg.Strict {
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
