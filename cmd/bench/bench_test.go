package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/staticref/staticref/inference"
)

// TestBenchRunsEndToEnd runs the harness on 20k rows against Pebble for both models and
// checks the table, not the speed: every stage is there with a positive rate, and every
// target has a PASS or FAIL line. Performance targets are never asserted in tests.
func TestBenchRunsEndToEnd(t *testing.T) {
	if err := inference.Init(); errors.Is(err, inference.ErrRuntimeMissing) && os.Getenv("CI") == "" {
		t.Skipf("%v", err)
	}
	cache := t.TempDir()
	out := filepath.Join(t.TempDir(), "report.txt")
	var stdout, stderr bytes.Buffer
	code := Main([]string{"--rows", "20000", "--shards", "2", "--batch", "4096", "--stores", "pebble",
		"--cache", cache, "--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("Main exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	report := stdout.String()
	if saved, err := os.ReadFile(out); err != nil || string(saved) != report {
		t.Errorf("--out file: got %q (err %v), want the report printed on stdout", saved, err)
	}

	row := regexp.MustCompile(`(?m)^\| (logistic|mlp) \| pebble \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| (scan|infer|write) \|`)
	rows := row.FindAllStringSubmatch(report, -1)
	if len(rows) != 2 {
		t.Fatalf("got %d table rows for pebble, want 2 (logistic, mlp):\n%s", len(rows), report)
	}
	for _, r := range rows {
		for i, stage := range []string{"scan", "infer", "write", "pipeline", "ratio"} {
			if v := parseRate(r[2+i]); !(v > 0) {
				t.Errorf("%s: %s column is %q, want a number > 0", r[1], stage, r[2+i])
			}
		}
	}
	for _, want := range []string{
		"logistic/pebble: pipeline", "logistic/pebble: read+pack+encode",
		"mlp/pebble: pipeline", "mlp/pebble: read+pack+encode",
		"(a) scan rows/s", "(b) infer rows/s", "(c) write rows/s", "(d) pipeline rows/s", "peak RSS MiB",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if n := strings.Count(report, "PASS ") + strings.Count(report, "FAIL "); n != 4 {
		t.Errorf("got %d PASS/FAIL lines, want 4 (two models x pipeline ratio and allocations):\n%s", n, report)
	}
}

// parseRate reads a table cell such as 940k, 1.08M, 232 or 0.42.
func parseRate(s string) float64 {
	s = strings.TrimSpace(s)
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "M"):
		mult, s = 1e6, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "k"):
		mult, s = 1e3, strings.TrimSuffix(s, "k")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v * mult
}

func TestSweepPlotsFromItsCSV(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.SweepCSV, cfg.SweepPNG = filepath.Join(dir, "sweep.csv"), filepath.Join(dir, "sweep.png")
	var pts []sweepPoint
	for _, w := range sweepWorkers {
		for _, b := range sweepBatches {
			pts = append(pts, sweepPoint{Batch: b, Workers: w, RowsPerSec: float64(b * w), PeakRSSKiB: 1024})
		}
	}
	if err := writeSweepCSV(cfg.SweepCSV, pts); err != nil {
		t.Fatal(err)
	}
	got, err := readSweepCSV(cfg.SweepCSV)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pts) || got[5].RowsPerSec != pts[5].RowsPerSec {
		t.Errorf("read back %v, want %v", got, pts)
	}
	if err := plotSweep(cfg.SweepPNG, cfg, nil); err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(cfg.SweepPNG)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("sweep.png: got %d bytes (err %v), want a PNG", len(png), err)
	}
}

// BenchmarkScan is stage (a) alone on a 200k-row data set, for profiling the readers
// (go test -bench Scan -memprofile mem.out ./cmd/bench).
func BenchmarkScan(b *testing.B) {
	cfg := defaultConfig()
	cfg.Cache = filepath.Join(os.TempDir(), "staticref-bench-cache")
	d, err := ensureDataset(cfg, 200_000, 2)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := scan(b.Context(), cfg, d); err != nil {
			b.Fatal(err)
		}
	}
	rows := float64(b.N) * float64(d.spec.Rows)
	b.ReportMetric(rows/b.Elapsed().Seconds(), "rows/s")
}

// TestFitAllocsRecoversKnownCoefficients: passes made from known per-batch, per-doubling,
// per-page and per-row counts give those counts back, so a per-row allocation cannot
// hide in the other terms.
func TestFitAllocsRecoversKnownCoefficients(t *testing.T) {
	for _, want := range []allocFit{
		{PerBatch: 64, PerDoubling: 1, PerPage: 35, PerRow: 0},
		{PerBatch: 60, PerDoubling: 0, PerPage: 30, PerRow: 1},
	} {
		var passes []allocSplit
		for _, pages := range []int{288, 40} {
			for _, b := range []int{4096, 8192, 16384, 32768, 65536} {
				n := int64(2_000_000 / b)
				rows := n * int64(b)
				m := want.PerBatch*float64(n) + want.PerDoubling*float64(n)*math.Log2(float64(b)) +
					want.PerPage*float64(pages) + want.PerRow*float64(rows)
				passes = append(passes, allocSplit{Batch: b, SteadyBatches: n, SteadyRows: rows, SteadyPages: pages, SteadyMallocs: uint64(math.Round(m))})
			}
		}
		got := fitAllocs(passes)
		for _, c := range []struct {
			name      string
			got, want float64
			tol       float64
		}{
			{"per batch", got.PerBatch, want.PerBatch, 0.05},
			{"per doubling", got.PerDoubling, want.PerDoubling, 0.05},
			{"per page", got.PerPage, want.PerPage, 0.05},
			{"per row", got.PerRow, want.PerRow, 1e-5},
		} {
			if math.Abs(c.got-c.want) > c.tol {
				t.Errorf("%s: got %v, want %v (fit %+v)", c.name, c.got, c.want, got)
			}
		}
	}
}

// TestRedisMemRunsEndToEnd runs --redismem on 20k rows and checks the table and the
// target lines, not the figures: three layouts per encoding, and a PASS or FAIL line
// for memory and for write speed of each encoding.
func TestRedisMemRunsEndToEnd(t *testing.T) {
	if err := inference.Init(); errors.Is(err, inference.ErrRuntimeMissing) && os.Getenv("CI") == "" {
		t.Skipf("%v", err)
	}
	for _, bin := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(bin); err != nil && os.Getenv("CI") == "" {
			t.Skipf("%s not on PATH", bin)
		}
	}
	var stdout, stderr bytes.Buffer
	code := Main([]string{"--redismem", "--rows", "20000", "--shards", "2", "--repeat", "1", "--cache", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("Main exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	report := stdout.String()
	row := regexp.MustCompile(`(?m)^\| (json|binary) \| (hash-buckets, fields less "[^"]*"|plain \(versions written before\)|hash-buckets, whole keys as fields) \| [^|]+ \| ([^|]+) \| ([^|]+) \|`)
	rows := row.FindAllStringSubmatch(report, -1)
	if len(rows) != 6 {
		t.Fatalf("got %d table rows, want 6 (two encodings x three layouts):\n%s", len(rows), report)
	}
	for _, r := range rows {
		if raw, used := parseRate(r[3]), parseRate(r[4]); !(raw > 0) || !(used > raw) {
			t.Errorf("%s/%s: key+value %s B/row, used_memory %s B/row: want both > 0, used above raw", r[1], r[2], r[3], r[4])
		}
	}
	for _, want := range []string{"redis/json: ", "redis/binary: "} {
		if n := strings.Count(report, "PASS "+want) + strings.Count(report, "FAIL "+want); n != 2 {
			t.Errorf("got %d PASS/FAIL lines for %q, want 2 (memory and write speed):\n%s", n, want, report)
		}
	}
}
