package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

// Config is one bench run.
type Config struct {
	Rows, Shards int
	RowGroupRows int // rows per Parquet row group (shardgen's default when 0)
	Cache        string
	BatchSize    int
	Workers      int
	Threads      int
	Readers      int
	Encoding     string
	Models       []string
	Stores       []string
	Repeat       int
	ProfileDir   string
	Out          string
	Strict       bool
	SweepCSV     string
	SweepPNG     string
	Progress     io.Writer // progress lines; nil = none

	redisURL string // set when a redis-server is running for this run
}

func defaultConfig() Config {
	return Config{
		Rows:      2_000_000,
		Shards:    8,
		Cache:     ".staticref/bench",
		BatchSize: jobs.DefaultBatchSize,
		Workers:   2,
		Threads:   1,
		Readers:   2,
		Encoding:  writers.EncodingJSON,
		Models:    []string{"logistic", "mlp"},
		Stores:    []string{"pebble", "redis"},
		Repeat:    1,
		SweepCSV:  "docs/bench/sweep.csv",
		SweepPNG:  "docs/bench/sweep.png",
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Rows < 1 {
		errs = append(errs, fmt.Errorf("--rows %d: want >= 1", c.Rows))
	}
	if c.Shards < 1 {
		errs = append(errs, fmt.Errorf("--shards %d: want >= 1", c.Shards))
	}
	if c.BatchSize < 1 || c.Workers < 1 || c.Threads < 1 || c.Readers < 1 || c.Repeat < 1 {
		errs = append(errs, errors.New("--batch, --workers, --threads, --readers and --repeat must be >= 1"))
	}
	for _, m := range c.Models {
		if m != "logistic" && m != "mlp" {
			errs = append(errs, fmt.Errorf("--models: unknown model %q (logistic, mlp)", m))
		}
	}
	for _, s := range c.Stores {
		if s != "pebble" && s != "redis" {
			errs = append(errs, fmt.Errorf("--stores: unknown store %q (pebble, redis)", s))
		}
	}
	if len(c.Models) == 0 || len(c.Stores) == 0 {
		errs = append(errs, errors.New("--models and --stores must name at least one each"))
	}
	return errors.Join(errs...)
}

func (c *Config) logf(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench: "+format+"\n", args...)
	}
}

// dataset is a generated set of shards and the two models.
type dataset struct {
	spec  shardgen.Spec
	dir   string
	files []string
}

func (d *dataset) glob() string { return filepath.Join(d.dir, "features", "*.parquet") }

func (d *dataset) model(name string) string {
	return filepath.Join(d.dir, "models", name+".onnx")
}

// allocsPageBytes is the page size of the data set that the allocation split reads
// beside the default one (parquet-go's 256 KiB pages): 4x fewer pages for the same rows.
const allocsPageBytes = 1 << 20

// modelSeed is the seed of both models, as in the pipeline tests.
const modelSeed = 7

// ensureDataset generates rows x shards into cache/rROWS-sSHARDS unless a complete copy
// is there already (a marker file is written last).
func ensureDataset(cfg Config, rows, shards int) (*dataset, error) {
	return ensureDatasetPages(cfg, rows, shards, 0)
}

// ensureDatasetPages is ensureDataset with pages of pageBytes (the writer's default when
// 0), for the allocation split's second page density.
func ensureDatasetPages(cfg Config, rows, shards, pageBytes int) (*dataset, error) {
	name := fmt.Sprintf("r%d-s%d", rows, shards)
	if cfg.RowGroupRows > 0 {
		name += fmt.Sprintf("-g%d", cfg.RowGroupRows)
	}
	if pageBytes > 0 {
		name += fmt.Sprintf("-p%d", pageBytes)
	}
	dir, err := filepath.Abs(filepath.Join(cfg.Cache, name))
	if err != nil {
		return nil, err
	}
	d := &dataset{spec: shardgen.Spec{Rows: rows, Shards: shards, RowGroupRows: cfg.RowGroupRows, Seed: 1, PageBytes: pageBytes}, dir: dir}
	marker := filepath.Join(dir, "COMPLETE")
	if _, err := os.Stat(marker); err != nil {
		cfg.logf("generating %d rows in %d shards into %s", rows, shards, dir)
		start := time.Now()
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if _, err := shardgen.Generate(filepath.Join(dir, "features"), d.spec); err != nil {
			return nil, fmt.Errorf("generate data set: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "models"), 0o755); err != nil {
			return nil, err
		}
		for _, m := range []*onnxgen.Model{onnxgen.Logistic(4, modelSeed), onnxgen.MLP(4, 16, modelSeed)} {
			if err := m.Write(d.model(m.Name)); err != nil {
				return nil, fmt.Errorf("write model: %w", err)
			}
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return nil, err
		}
		cfg.logf("generated in %s", time.Since(start).Round(time.Millisecond))
	}
	d.files, err = readers.Glob(d.glob())
	if err != nil {
		return nil, err
	}
	return d, nil
}

var features = []string{"f0", "f1", "f2", "f3"}

func (d *dataset) readerOptions(batch int) readers.Options {
	return readers.Options{Key: "user_id", Features: features, BatchSize: batch}
}

// Stage names, in table order.
const (
	stageScan     = "scan"
	stageInfer    = "infer"
	stageWrite    = "write"
	stagePipeline = "pipeline"
)

// measurement is one timed run of a stage.
type measurement struct {
	Rows        int64
	Elapsed     time.Duration
	Mallocs     uint64 // runtime.MemStats.Mallocs delta
	PeakRSSKiB  int64  // VmHWM after the stage
	PeakIsStage bool   // VmHWM was reset before the stage
	// CPU is the process's user+system time during the stage (getrusage), all threads,
	// cgo's included: CPU/Elapsed is how many cores the stage kept busy.
	CPU time.Duration
}

// Cores is the mean number of cores the stage kept busy.
func (m measurement) Cores() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return m.CPU.Seconds() / m.Elapsed.Seconds()
}

// CPUPerRow is the stage's CPU time per row.
func (m measurement) CPUPerRow() time.Duration {
	if m.Rows == 0 {
		return 0
	}
	return m.CPU / time.Duration(m.Rows)
}

func (m measurement) RowsPerSec() float64 {
	if m.Elapsed <= 0 {
		return 0
	}
	return float64(m.Rows) / m.Elapsed.Seconds()
}

func (m measurement) AllocsPerRow() float64 {
	if m.Rows == 0 {
		return 0
	}
	return float64(m.Mallocs) / float64(m.Rows)
}

// measure runs fn once, timing it and counting its process-wide mallocs and peak RSS.
// The Go heap is returned to the OS and the kernel's peak-RSS mark is reset first
// (/proc/self/clear_refs), so the peak is this stage's plus whatever the process holds
// resident before it.
func measure(rows int64, fn func() error) (measurement, error) {
	runtime.GC()
	freeOSMemory()
	reset := resetPeakRSS() == nil
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := cpuTime()
	start := time.Now()
	err := fn()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&after)
	return measurement{
		CPU:         cpu,
		Rows:        rows,
		Elapsed:     elapsed,
		Mallocs:     after.Mallocs - before.Mallocs,
		PeakRSSKiB:  peakRSSKiB(),
		PeakIsStage: reset,
	}, err
}

// caseResult is every stage of one (model, store) pair; each stage holds Repeat runs.
type caseResult struct {
	Model, Store string
	Stages       map[string][]measurement
	// EncodeMallocs counts the mallocs of encoding every row's value into a reused
	// buffer, as the pipeline's workers do (part of the zero-allocation target).
	EncodeMallocs uint64
	ValueBytes    float64 // mean encoded value size
	// RedisBenchmark is redis-benchmark -P 64 HSET's requests/s into RedisBuckets
	// buckets at ValueBytes (0: not run), RedisBenchCommand its command line.
	RedisBenchmark    float64
	RedisBuckets      int64
	RedisBenchCommand string
	RedisBenchNote    string
	// Allocs splits the steady-state allocations of reading and packing into per
	// batch, per page and per row (allocs.go).
	Allocs allocFit
}

// median returns the run of stage with the median rows/s.
func (c *caseResult) median(stage string) measurement {
	ms := slices.Clone(c.Stages[stage])
	if len(ms) == 0 {
		return measurement{}
	}
	slices.SortFunc(ms, func(a, b measurement) int {
		switch x, y := a.RowsPerSec(), b.RowsPerSec(); {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return ms[len(ms)/2]
}

// Run generates (or reuses) the data set and measures every (model, store) pair.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	d, err := ensureDataset(cfg, cfg.Rows, cfg.Shards)
	if err != nil {
		return nil, err
	}
	if err := inference.Init(); err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg, Started: time.Now()}
	if slices.Contains(cfg.Stores, "redis") {
		srv, err := startRedis(ctx)
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		cfg.redisURL = srv.URL()
		rep.RedisVersion = srv.Version
	}
	cfg.logf("splitting the scan's allocations")
	allocs, err := splitScanAllocs(ctx, cfg, d)
	if err != nil {
		return rep, err
	}
	for _, model := range cfg.Models {
		for _, store := range cfg.Stores {
			cfg.logf("measuring %s / %s", model, store)
			c, err := runCase(ctx, cfg, d, model, store)
			if err != nil {
				return rep, fmt.Errorf("%s/%s: %w", model, store, err)
			}
			c.Allocs = allocs
			rep.Cases = append(rep.Cases, c)
		}
	}
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

// splitScanAllocs fits where reading and packing d allocate (allocs.go), from one-reader
// passes over d and over the same rows in larger pages, at several batch sizes.
func splitScanAllocs(ctx context.Context, cfg Config, d *dataset) (allocFit, error) {
	bigPages, err := ensureDatasetPages(cfg, cfg.Rows, cfg.Shards, allocsPageBytes)
	if err != nil {
		return allocFit{}, err
	}
	var passes []allocSplit
	for _, ds := range []*dataset{d, bigPages} {
		starts, err := pageStarts(ds)
		if err != nil {
			return allocFit{}, err
		}
		for _, shift := range allocBatchShifts {
			b := cfg.BatchSize << max(shift, 0) >> max(-shift, 0)
			p, err := scanAllocs(ctx, ds, starts, b)
			if err != nil {
				return allocFit{}, err
			}
			passes = append(passes, p)
		}
	}
	fit := fitAllocs(passes)
	for _, p := range passes {
		if p.Batch == cfg.BatchSize {
			fit.SetupPerRowGroup = float64(p.SetupMallocs) / float64(max(p.RowGroups, 1))
			break
		}
	}
	return fit, nil
}

func runCase(ctx context.Context, cfg Config, d *dataset, model, store string) (*caseResult, error) {
	c := &caseResult{Model: model, Store: store, Stages: map[string][]measurement{}}
	rows := int64(d.spec.Rows)
	add := func(stage string, m measurement, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", stage, err)
		}
		cfg.logf("  %-8s %12.0f rows/s  %4.2f cores  %6.3f allocs/row  peak %d MiB", stage, m.RowsPerSec(), m.Cores(), m.AllocsPerRow(), m.PeakRSSKiB>>10)
		c.Stages[stage] = append(c.Stages[stage], m)
		return nil
	}

	// (a) Parquet scan alone.
	for range cfg.Repeat {
		m, err := measure(rows, func() error { return scan(ctx, cfg, d) })
		if err := add(stageScan, m, err); err != nil {
			return nil, err
		}
	}

	// (b) inference alone, on batches packed beforehand.
	inf, err := newInferBench(cfg, d, model)
	if err != nil {
		return nil, err
	}
	for range cfg.Repeat {
		m, err := measure(rows, func() error { return inf.run(ctx, rows) })
		if err := add(stageInfer, m, err); err != nil {
			inf.close()
			return nil, err
		}
	}

	// (c) store writes alone: the same keys and values the pipeline writes, then the
	// version completed.
	wb, err := newWriteBench(cfg, d, inf)
	inf.close()
	if err != nil {
		return nil, err
	}
	c.EncodeMallocs, c.ValueBytes = wb.encodeMallocs, wb.meanValue()
	for i := range cfg.Repeat {
		st, cleanup, err := openStore(ctx, cfg, store)
		if err != nil {
			return nil, err
		}
		m, err := measure(rows, func() error {
			return profiled(cfg.profilePath(stageWrite, model, store, i), func() error { return wb.run(ctx, st, fmt.Sprintf("benchw%d", i)) })
		})
		st.Close()
		cleanup()
		if err := add(stageWrite, m, err); err != nil {
			return nil, err
		}
	}
	if store == "redis" {
		// The same commands as the write: HSETs into as many buckets as the store gives a
		// version of these rows (see redismem.go).
		buckets, err := redisBuckets(ctx, cfg.redisURL, int64(wb.rows), wb.keyPrefix)
		if err != nil {
			return nil, err
		}
		c.RedisBuckets = buckets
		c.RedisBenchmark, c.RedisBenchCommand, c.RedisBenchNote = redisBenchmarkHSET(ctx, cfg.redisURL, buckets, int(c.ValueBytes+0.5), cfg.Rows)
		if err := flushRedis(ctx, cfg.redisURL); err != nil {
			return nil, err
		}
	}
	wb = nil

	// (d) the whole pipeline, into a fresh store and namespace.
	for i := range cfg.Repeat {
		st, cleanup, err := openStore(ctx, cfg, store)
		if err != nil {
			return nil, err
		}
		job, err := pipelineJob(d, model, "benchp", cfg, st.URL().Raw)
		if err != nil {
			st.Close()
			cleanup()
			return nil, err
		}
		m, err := measure(rows, func() error {
			return profiled(cfg.profilePath(stagePipeline, model, store, i), func() error { return runPipeline(ctx, job, st, cfg.Readers) })
		})
		st.Close()
		cleanup()
		if err := add(stagePipeline, m, err); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// scan decodes every row group of every shard with cfg.Readers goroutines and packs
// keys and features into reused buffers, exactly as the pipeline's readers do, with
// nothing downstream.
func scan(ctx context.Context, cfg Config, d *dataset) error {
	type task struct {
		file string
		rg   int
	}
	var tasks []task
	for _, p := range d.files {
		f, err := readers.Open(p, d.readerOptions(cfg.BatchSize))
		if err != nil {
			return err
		}
		for _, rg := range f.Info().RowGroups {
			tasks = append(tasks, task{p, rg.Index})
		}
		f.Close()
	}
	var next atomic.Int64
	var rowsSeen atomic.Int64
	errc := make(chan error, cfg.Readers)
	for range cfg.Readers {
		go func() {
			errc <- func() error {
				var (
					f        *readers.File
					open     string
					keys     = make([]byte, 0, cfg.BatchSize*16)
					keyEnd   = make([]int, 0, cfg.BatchSize)
					feats    = make([]float32, cfg.BatchSize*len(features))
					valid    = make([]bool, cfg.BatchSize)
					keyValid = make([]bool, 0, cfg.BatchSize)
				)
				defer func() {
					if f != nil {
						f.Close()
					}
				}()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(tasks) {
						return nil
					}
					t := tasks[i]
					if t.file != open {
						if f != nil {
							f.Close()
						}
						var err error
						if f, err = readers.Open(t.file, d.readerOptions(cfg.BatchSize)); err != nil {
							return err
						}
						open = t.file
					}
					err := f.ReadRowGroup(ctx, t.rg, func(b *readers.Batch) error {
						keys, keyEnd, keyValid = keys[:0], keyEnd[:0], keyValid[:0]
						for i := range b.Len {
							ok := b.KeyValid(i)
							if ok {
								keys = b.AppendKey(keys, i)
							}
							keyEnd = append(keyEnd, len(keys))
							keyValid = append(keyValid, ok)
						}
						if _, err := b.Pack(feats[:b.Len*len(features)], len(features), valid); err != nil {
							return err
						}
						rowsSeen.Add(int64(b.Len))
						return nil
					})
					if err != nil {
						return err
					}
				}
			}()
		}()
	}
	var errs []error
	for range cfg.Readers {
		errs = append(errs, <-errc)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if got := rowsSeen.Load(); got != int64(d.spec.Rows) {
		return fmt.Errorf("scanned %d rows, want %d", got, d.spec.Rows)
	}
	return nil
}

// inferBench holds a loaded model and batches packed from the data set's first rows.
type inferBench struct {
	cfg     Config
	model   *inference.Model
	batches [][]float32 // packed features, cfg.BatchSize rows each (the last may be short)
	outs    [][][]float32
	outputs []writers.Output
}

// maxPrepacked bounds the batches packed beforehand; stage (b) cycles through them.
const maxPrepacked = 16

func newInferBench(cfg Config, d *dataset, model string) (*inferBench, error) {
	m, err := inference.Load(context.Background(), d.model(model), inference.Options{
		Features:       len(features),
		BatchSize:      cfg.BatchSize,
		IntraOpThreads: cfg.Threads,
		Device:         inference.DeviceCPU,
	})
	if err != nil {
		return nil, err
	}
	ib := &inferBench{cfg: cfg, model: m}
	for _, o := range m.Outputs {
		ib.outputs = append(ib.outputs, writers.Output{Name: o.Name, Width: o.Width})
	}
	errFull := errors.New("enough batches")
	for _, p := range d.files {
		f, err := readers.Open(p, d.readerOptions(cfg.BatchSize))
		if err != nil {
			m.Close()
			return nil, err
		}
		for _, rg := range f.Info().RowGroups {
			err = f.ReadRowGroup(context.Background(), rg.Index, func(b *readers.Batch) error {
				buf := make([]float32, b.Len*len(features))
				if _, err := b.Pack(buf, len(features), make([]bool, b.Len)); err != nil {
					return err
				}
				ib.batches = append(ib.batches, buf)
				if len(ib.batches) == maxPrepacked {
					return errFull
				}
				return nil
			})
			if err != nil {
				break
			}
		}
		f.Close()
		if errors.Is(err, errFull) || len(ib.batches) >= maxPrepacked {
			break
		}
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	// The outputs of each batch, for the values stage (c) writes.
	s, err := m.NewSession()
	if err != nil {
		m.Close()
		return nil, err
	}
	defer s.Close()
	for _, b := range ib.batches {
		n := len(b) / len(features)
		copy(s.Input(n), b)
		res, err := s.Run(n)
		if err != nil {
			m.Close()
			return nil, err
		}
		var outs [][]float32
		for _, o := range res {
			outs = append(outs, slices.Clone(o))
		}
		ib.outs = append(ib.outs, outs)
	}
	return ib, nil
}

func (ib *inferBench) close() { ib.model.Close() }

// run scores rows rows with cfg.Workers sessions, each copying a packed batch into its
// input (as the pipeline's workers do) and running it.
func (ib *inferBench) run(ctx context.Context, rows int64) error {
	bs := int64(ib.cfg.BatchSize)
	nBatches := (rows + bs - 1) / bs
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, ib.cfg.Workers)
	for w := range ib.cfg.Workers {
		s, err := ib.model.NewSession()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			for {
				i := next.Add(1) - 1
				if i >= nBatches || ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				src := ib.batches[i%int64(len(ib.batches))]
				n := int(min(bs, rows-i*bs))
				n = min(n, len(src)/len(features))
				copy(s.Input(n), src[:n*len(features)])
				if _, err := s.Run(n); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeBench holds every row's key and encoded value, flat, for stage (c).
type writeBench struct {
	cfg           Config
	rows          int
	keys, vals    []byte
	keyEnd        []int
	valEnd        []int
	encodeMallocs uint64
	outputs       []writers.Output
	keyPrefix     string // the prefix the data set's footers say every key has
}

// appendKey appends the data set's key of row r ("u" and nine digits, as shardgen writes it).
func appendKey(dst []byte, r int) []byte {
	dst = append(dst, 'u')
	var digits [20]byte
	s := strconv.AppendInt(digits[:0], int64(r), 10)
	for i := len(s); i < 9; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

func newWriteBench(cfg Config, d *dataset, ib *inferBench) (*writeBench, error) {
	enc, err := writers.NewValueEncoder(cfg.Encoding, ib.outputs)
	if err != nil {
		return nil, err
	}
	rows := d.spec.Rows
	wb := &writeBench{cfg: cfg, rows: rows, outputs: ib.outputs,
		keys: make([]byte, 0, rows*10), keyEnd: make([]int, 0, rows), valEnd: make([]int, 0, rows)}
	for i, p := range d.files {
		f, err := readers.Open(p, d.readerOptions(cfg.BatchSize))
		if err != nil {
			return nil, err
		}
		kp := f.Info().KeyPrefix
		f.Close()
		if i == 0 {
			wb.keyPrefix = kp
		}
		for !strings.HasPrefix(kp, wb.keyPrefix) {
			wb.keyPrefix = wb.keyPrefix[:len(wb.keyPrefix)-1]
		}
	}
	for r := range rows {
		wb.keys = appendKey(wb.keys, r)
		wb.keyEnd = append(wb.keyEnd, len(wb.keys))
	}
	// Steady-state encoding allocations: every row into one reused per-batch buffer, as
	// a pipeline worker encodes a chunk.
	buf := make([]byte, 0, cfg.BatchSize*64)
	outsOf := func(r int) ([][]float32, int) {
		b := (r / cfg.BatchSize) % len(ib.outs)
		return ib.outs[b], r % cfg.BatchSize % (len(ib.batches[b]) / len(features))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for r := range rows {
		if r%cfg.BatchSize == 0 {
			buf = buf[:0]
		}
		outs, j := outsOf(r)
		buf, _ = enc.Append(buf, outs, j)
	}
	runtime.ReadMemStats(&after)
	wb.encodeMallocs = after.Mallocs - before.Mallocs
	for r := range rows {
		outs, j := outsOf(r)
		wb.vals, _ = enc.Append(wb.vals, outs, j)
		wb.valEnd = append(wb.valEnd, len(wb.vals))
	}
	return wb, nil
}

func (wb *writeBench) meanValue() float64 { return float64(len(wb.vals)) / float64(wb.rows) }

// run writes every row into a new version of ns in batches of cfg.BatchSize, from one
// goroutine, and completes the version (PutManifest, state complete), as the pipeline
// does at its end: a store's write of a version includes what completing it costs
// (Pebble merges the version's rows into the bottom level then), and the pipeline (d)
// pays for it too.
func (wb *writeBench) run(ctx context.Context, st *writers.Store, ns string) error {
	_, err := wb.runLayout(ctx, st, ns, nil, wb.keyPrefix)
	return err
}

// runLayout is run with the version's layout asked for (nil: the store's choice, as a
// pipeline run gets) and the key prefix the manifest says (a pipeline run passes the
// footers': wb.keyPrefix), and returns the version written.
func (wb *writeBench) runLayout(ctx context.Context, st *writers.Store, ns string, l *writers.Layout, keyPrefix string) (string, error) {
	version, err := writers.NewVersionID(ctx, st, ns, time.Now())
	if err != nil {
		return "", err
	}
	m := &writers.Manifest{Namespace: ns, Version: version, Job: "bench", State: writers.StateWriting,
		Encoding: wb.cfg.Encoding, Outputs: wb.outputs, StartedAt: time.Now().UTC(),
		ExpectedRows: int64(wb.rows), KeyPrefix: keyPrefix, Layout: l}
	if err := st.PutManifest(ctx, m); err != nil {
		return "", err
	}
	rows := writers.Rows{Keys: make([][]byte, 0, wb.cfg.BatchSize), Values: make([][]byte, 0, wb.cfg.BatchSize)}
	for lo := 0; lo < wb.rows; lo += wb.cfg.BatchSize {
		hi := min(lo+wb.cfg.BatchSize, wb.rows)
		rows.Keys, rows.Values = rows.Keys[:0], rows.Values[:0]
		for r := lo; r < hi; r++ {
			ks, vs := 0, 0
			if r > 0 {
				ks, vs = wb.keyEnd[r-1], wb.valEnd[r-1]
			}
			rows.Keys = append(rows.Keys, wb.keys[ks:wb.keyEnd[r]])
			rows.Values = append(rows.Values, wb.vals[vs:wb.valEnd[r]])
		}
		if err := st.WriteRows(ctx, ns, version, rows); err != nil {
			return "", err
		}
	}
	m.State = writers.StateComplete
	return version, st.PutManifest(ctx, m)
}

// openStore opens a fresh store of the given kind: a new Pebble directory, or the
// bench's redis-server emptied with FLUSHALL. cleanup removes what it made.
func openStore(ctx context.Context, cfg Config, kind string) (*writers.Store, func(), error) {
	switch kind {
	case "pebble":
		dir, err := os.MkdirTemp("", "staticref-bench-pebble-")
		if err != nil {
			return nil, nil, err
		}
		st, err := writers.Open(ctx, "pebble:"+dir)
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return st, func() { os.RemoveAll(dir) }, nil
	case "redis":
		if err := flushRedis(ctx, cfg.redisURL); err != nil {
			return nil, nil, err
		}
		st, err := writers.Open(ctx, cfg.redisURL)
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = flushRedis(context.Background(), cfg.redisURL) }, nil
	}
	return nil, nil, fmt.Errorf("unknown store %q", kind)
}

// pipelineJob builds the job a user would write, through jobs.Parse, so defaults and
// validation are the real ones.
func pipelineJob(d *dataset, model, ns string, cfg Config, storeURL string) (*jobs.Job, error) {
	yaml := fmt.Sprintf(`
name: %s
source:
  uri: %s
  key: user_id
  features: [f0, f1, f2, f3]
model:
  path: %s
  batch_size: %d
  workers: %d
  intra_op_threads: %d
  device: cpu
sink:
  store: %q
  namespace: %s
  encoding: %s
release:
  keep: 1
`, ns, d.glob(), d.model(model), cfg.BatchSize, cfg.Workers, cfg.Threads, storeURL, ns, cfg.Encoding)
	return jobs.Parse([]byte(yaml), filepath.Join(d.dir, "bench-job.yaml"), nil)
}

// profiled runs fn under the CPU profiler writing to path (an execution trace when path
// ends in .trace), or just runs it when path is empty.
func profiled(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if strings.HasSuffix(path, ".trace") {
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	} else {
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return fn()
}

// profilePath is where --cpuprofile puts the profile of a stage's first run ("" for none).
func (c *Config) profilePath(stage, model, store string, run int) string {
	if c.ProfileDir == "" || run > 0 {
		return ""
	}
	return filepath.Join(c.ProfileDir, fmt.Sprintf("%s-%s-%s.pprof", stage, model, store))
}

// runPipeline runs the job once.
func runPipeline(ctx context.Context, job *jobs.Job, st *writers.Store, nReaders int) error {
	res, err := pipeline.Run(ctx, pipeline.Config{
		Job:     job,
		Store:   st,
		Readers: nReaders,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	if got, want := res.Manifest.RowsWritten, res.Manifest.RowsRead; got != want || want == 0 {
		return fmt.Errorf("pipeline wrote %d of %d rows", got, want)
	}
	return nil
}

// redisBuckets is the bucket count the store chooses for a version of rows rows (a
// throwaway manifest, removed with the server's other keys by the caller's flush).
func redisBuckets(ctx context.Context, url string, rows int64, keyPrefix string) (int64, error) {
	st, err := writers.Open(ctx, url)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	m := &writers.Manifest{Namespace: "benchlayout", Version: "v1", State: writers.StateWriting, ExpectedRows: rows, KeyPrefix: keyPrefix}
	if err := st.PutManifest(ctx, m); err != nil {
		return 0, err
	}
	if m.Layout == nil || m.Layout.Buckets < 1 {
		return 0, fmt.Errorf("the store chose layout %+v, want hash buckets", m.Layout)
	}
	return m.Layout.Buckets, nil
}
