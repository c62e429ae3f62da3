package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/writers"
)

// The --redismem mode (make redismem): Redis memory per row and write speed of a version
// in the hash-buckets layout new versions get, beside the plain layout (a key per row)
// of the versions written before, for json and binary values of the logistic model over
// the bench's data set. Memory is the server's INFO used_memory after the version was
// written minus before (the server emptied first), per row, against the bytes of the
// row's key plus its encoded value; MEMORY USAGE of a sample of keys says the same from
// the other side. Write speed is rows/s of Store.WriteRows (8192-row batches, one
// goroutine, as the pipeline's writer) against redis-benchmark -P 64 sending the same
// commands: HSETs into as many buckets as the version has, values of the same size.

// Targets of --redismem.
const (
	targetRedisBytesRatio = 1.3 // used_memory per row <= 1.3 x key + value bytes
	targetRedisHSETRatio  = 0.8 // write rows/s >= 0.8 x redis-benchmark -P 64 HSET
)

// redisMemLimits are the listpack limits the bench's server runs with: those of the
// redis.conf that Redis ships (and that Debian installs; managed services use the same),
// rather than the larger compiled-in defaults of a server started with no config.
var redisMemLimits = []string{"--hash-max-listpack-entries", "128", "--hash-max-listpack-value", "64"}

// memRun is one layout of one encoding.
type memRun struct {
	Layout        string
	Buckets       int64
	BytesPerRow   float64   // used_memory delta / rows
	SampledPerRow float64   // MEMORY USAGE of sampled keys / their rows
	HashTables    int64     // buckets Redis holds as hash tables instead of listpacks
	RowsPerSec    []float64 // one per repeat
}

func (r memRun) medianRate() float64 {
	s := slices.Clone(r.RowsPerSec)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// memCase is one encoding.
type memCase struct {
	Encoding       string
	KeyBytes       float64 // mean key length
	ValueBytes     float64 // mean encoded value length
	Runs           []memRun
	HSETBenchmark  []float64 // redis-benchmark -P 64 HSET requests/s, one per repeat
	HSETCommand    string
	BenchmarkError string
}

func (c memCase) raw() float64 { return c.KeyBytes + c.ValueBytes }

func (c memCase) benchMedian() float64 {
	s := slices.Clone(c.HSETBenchmark)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// runRedisMem measures and prints; ok is false when a target fails.
func runRedisMem(ctx context.Context, cfg Config, out io.Writer) (bool, error) {
	started := time.Now()
	d, err := ensureDataset(cfg, cfg.Rows, cfg.Shards)
	if err != nil {
		return false, err
	}
	if err := inference.Init(); err != nil {
		return false, err
	}
	srv, err := startRedis(ctx, redisMemLimits...)
	if err != nil {
		return false, err
	}
	defer srv.Stop()
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		return false, err
	}
	c := redis.NewClient(opt)
	defer c.Close()

	inf, err := newInferBench(cfg, d, "logistic")
	if err != nil {
		return false, err
	}
	defer inf.close()
	var cases []memCase
	for _, enc := range []string{writers.EncodingJSON, writers.EncodingBinary} {
		ecfg := cfg
		ecfg.Encoding = enc
		wb, err := newWriteBench(ecfg, d, inf)
		if err != nil {
			return false, err
		}
		mc := memCase{Encoding: enc, KeyBytes: float64(len(wb.keys)) / float64(wb.rows), ValueBytes: wb.meanValue()}
		for _, l := range []struct {
			name      string
			layout    *writers.Layout
			keyPrefix string
		}{
			// What the store chooses for a pipeline's new version: the footers say every
			// key begins with wb.keyPrefix.
			{fmt.Sprintf("%s, fields less %q", writers.LayoutHashBuckets, wb.keyPrefix), nil, wb.keyPrefix},
			{writers.LayoutPlain + " (versions written before)", &writers.Layout{Kind: writers.LayoutPlain}, ""},
			// Keys that share no prefix (UUIDs, hashes): the whole key is the field.
			{writers.LayoutHashBuckets + ", whole keys as fields", nil, ""},
		} {
			cfg.logf("redis memory: %s values, %s layout", enc, l.name)
			r, err := measureRedisMem(ctx, cfg, srv.URL(), c, wb, l.name, l.layout, l.keyPrefix)
			if err != nil {
				return false, fmt.Errorf("%s/%s: %w", enc, l.name, err)
			}
			mc.Runs = append(mc.Runs, r)
		}
		// The same commands from redis-benchmark, into as many buckets as the version
		// has; the repeats alternate with nothing else, after the store's runs.
		buckets := mc.Runs[0].Buckets
		for range cfg.Repeat {
			v, cmd, note := redisBenchmarkHSET(ctx, srv.URL(), buckets, int(mc.ValueBytes+0.5), cfg.Rows)
			mc.HSETCommand = cmd
			if v == 0 {
				mc.BenchmarkError = note
				break
			}
			mc.HSETBenchmark = append(mc.HSETBenchmark, v)
		}
		cases = append(cases, mc)
	}
	return printRedisMem(out, cfg, srv.Version, started, cases), nil
}

// measureRedisMem writes wb's rows into a fresh version on an emptied server cfg.Repeat
// times, and measures the memory of the last.
func measureRedisMem(ctx context.Context, cfg Config, url string, c *redis.Client, wb *writeBench, name string, l *writers.Layout, keyPrefix string) (memRun, error) {
	r := memRun{Layout: name}
	for i := range cfg.Repeat {
		if err := c.FlushAll(ctx).Err(); err != nil {
			return r, err
		}
		runtime.GC()
		before, err := usedMemory(ctx, c)
		if err != nil {
			return r, err
		}
		st, err := writers.Open(ctx, url)
		if err != nil {
			return r, err
		}
		start := time.Now()
		version, err := wb.runLayout(ctx, st, "mem", l, keyPrefix)
		elapsed := time.Since(start)
		if err != nil {
			st.Close()
			return r, err
		}
		r.RowsPerSec = append(r.RowsPerSec, float64(wb.rows)/elapsed.Seconds())
		cfg.logf("  %s: %.0f rows/s", name, r.RowsPerSec[i])
		if i < cfg.Repeat-1 {
			st.Close()
			continue
		}
		after, err := usedMemory(ctx, c)
		if err != nil {
			st.Close()
			return r, err
		}
		r.BytesPerRow = float64(after-before) / float64(wb.rows)
		m, err := st.Manifest(ctx, "mem", version)
		if err != nil {
			st.Close()
			return r, err
		}
		n, err := st.CountKeys(ctx, "mem", version)
		st.Close()
		if err != nil {
			return r, err
		}
		if n != int64(wb.rows) {
			return r, fmt.Errorf("the version holds %d rows, want %d", n, wb.rows)
		}
		if err := sampleRedisMem(ctx, c, wb, m, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// sampleRedisMem fills r's MEMORY USAGE figure and bucket encodings from the version m.
func sampleRedisMem(ctx context.Context, c *redis.Client, wb *writeBench, m *writers.Manifest, r *memRun) error {
	pipe := c.Pipeline()
	var usage, sizes []*redis.IntCmd
	var encs []*redis.StringCmd
	if m.Layout != nil && m.Layout.Kind == writers.LayoutHashBuckets {
		r.Buckets = m.Layout.Buckets
		for b := range m.Layout.Buckets {
			key := fmt.Sprintf("sr:%s:%s#%d", m.Namespace, m.Version, b)
			encs = append(encs, pipe.ObjectEncoding(ctx, key))
			if b < 500 {
				usage = append(usage, pipe.MemoryUsage(ctx, key, 0))
				sizes = append(sizes, pipe.HLen(ctx, key))
			}
		}
	} else {
		for i := 0; i < wb.rows && len(usage) < 2000; i += 97 {
			ks := 0
			if i > 0 {
				ks = wb.keyEnd[i-1]
			}
			usage = append(usage, pipe.MemoryUsage(ctx, "sr:"+m.Namespace+":"+m.Version+":"+string(wb.keys[ks:wb.keyEnd[i]]), 0))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("sample memory: %w", err)
	}
	var bytes, rows int64
	for i, u := range usage {
		bytes += u.Val()
		if sizes != nil {
			rows += sizes[i].Val()
		} else {
			rows++
		}
	}
	if rows > 0 {
		r.SampledPerRow = float64(bytes) / float64(rows)
	}
	for _, e := range encs {
		if e.Val() != "listpack" {
			r.HashTables++
		}
	}
	return nil
}

// usedMemory is INFO memory's used_memory.
func usedMemory(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	_, rest, ok := strings.Cut(info, "used_memory:")
	if !ok {
		return 0, fmt.Errorf("INFO memory has no used_memory")
	}
	v, _, _ := strings.Cut(rest, "\r")
	return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
}

var requestRate = regexp.MustCompile(`: ([0-9.]+) requests per second`)

// redisBenchmarkHSET runs redis-benchmark -P 64 -n N -r BUCKETS with the command
// HSET sr:bench:v#__rand_int__ u__rand_int__ VALUE (VALUE: size bytes) and returns its
// requests/s, the command line, or 0 and why not. Each __rand_int__ is drawn on its own,
// so N commands land in BUCKETS buckets of about N/BUCKETS fields each, as the
// version's rows do (a field collides with another of its bucket rarely); the field is
// 13 bytes, "u" and 12 digits, against the bench's 10-byte keys.
func redisBenchmarkHSET(ctx context.Context, url string, buckets int64, size, n int) (float64, string, string) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return 0, "", "redis-benchmark not on PATH"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return 0, "", err.Error()
	}
	host, port, _ := net.SplitHostPort(opt.Addr)
	value := strings.Repeat("v", max(size, 1))
	args := []string{"-h", host, "-p", port, "-P", "64", "-n", strconv.Itoa(n), "-r", strconv.FormatInt(max(buckets, 1), 10), "-q",
		"HSET", "sr:bench:v#__rand_int__", "u__rand_int__", value}
	cmdline := "redis-benchmark " + strings.Join(args[4:], " ")
	_ = flushRedis(ctx, url)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return 0, cmdline, fmt.Sprintf("redis-benchmark: %v: %s", err, bytes.TrimSpace(out))
	}
	m := requestRate.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return 0, cmdline, fmt.Sprintf("redis-benchmark: no rate in %q", out)
	}
	v, err := strconv.ParseFloat(string(m[len(m)-1][1]), 64)
	if err != nil {
		return 0, cmdline, err.Error()
	}
	_ = flushRedis(ctx, url)
	return v, cmdline, ""
}

// printRedisMem prints the table and the targets, and says whether every target passed.
func printRedisMem(w io.Writer, cfg Config, version string, started time.Time, cases []memCase) bool {
	host, _ := hostname()
	fmt.Fprintf(w, "## staticref bench --redismem: Redis memory per row and write speed, %d rows\n\n", cfg.Rows)
	fmt.Fprintf(w, "machine: %s, %d CPUs (GOMAXPROCS %d), %s/%s, %s, redis-server %s (%s)\n", host, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.GOOS, runtime.GOARCH, runtime.Version(), version, strings.Join(redisMemLimits, " "))
	fmt.Fprintf(w, "run: %s, took %s; rows/s are medians of %d run(s); logistic model values, bench keys (u + 9 digits)\n\n",
		started.UTC().Format(time.RFC3339), time.Since(started).Round(time.Second), cfg.Repeat)
	fmt.Fprintln(w, "| encoding | layout | buckets | key+value B/row | used_memory B/row | x key+value | MEMORY USAGE B/row (sample) | hash-table buckets | write rows/s | redis-benchmark HSET req/s | write / benchmark |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cases {
		for _, r := range c.Runs {
			bench, ratio := "", ""
			if r.Buckets > 0 && c.benchMedian() > 0 {
				bench, ratio = rate(c.benchMedian()), fmt.Sprintf("%.2f", r.medianRate()/c.benchMedian())
			}
			buckets := "-"
			if r.Buckets > 0 {
				buckets = strconv.FormatInt(r.Buckets, 10)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.1f | %.1f | %.2f | %.1f | %d | %s | %s | %s |\n", c.Encoding, r.Layout, buckets,
				c.raw(), r.BytesPerRow, r.BytesPerRow/c.raw(), r.SampledPerRow, r.HashTables, rate(r.medianRate()), bench, ratio)
		}
	}
	fmt.Fprintln(w)
	for _, c := range cases {
		if c.HSETCommand != "" {
			fmt.Fprintf(w, "%s reference: %s\n", c.Encoding, strings.Replace(c.HSETCommand, strings.Repeat("v", int(c.ValueBytes+0.5)), fmt.Sprintf("<%d bytes>", int(c.ValueBytes+0.5)), 1))
		}
	}
	fmt.Fprintln(w)
	ok := true
	for _, c := range cases {
		r := c.Runs[0] // hash-buckets
		ratio := r.BytesPerRow / c.raw()
		pass := ratio <= targetRedisBytesRatio
		ok = ok && pass
		whole := c.Runs[2]
		fmt.Fprintf(w, "%s redis/%s: %.1f B/row of used_memory is %.2fx the %.1f bytes of key plus value (keys sharing no prefix: %.1f B/row, %.2fx; plain layout: %.1f B/row, %.2fx); target <= %.1fx\n",
			passFail(pass), c.Encoding, r.BytesPerRow, ratio, c.raw(), whole.BytesPerRow, whole.BytesPerRow/c.raw(),
			c.Runs[1].BytesPerRow, c.Runs[1].BytesPerRow/c.raw(), targetRedisBytesRatio)
	}
	for _, c := range cases {
		r := c.Runs[0]
		if c.benchMedian() == 0 {
			fmt.Fprintf(w, "SKIPPED redis/%s: write vs redis-benchmark HSET (%s)\n", c.Encoding, c.BenchmarkError)
			continue
		}
		ratio := r.medianRate() / c.benchMedian()
		pass := ratio >= targetRedisHSETRatio
		ok = ok && pass
		fmt.Fprintf(w, "%s redis/%s: write %.0f rows/s is %.2fx redis-benchmark -P 64 HSET (%.0f req/s; plain layout writes %.0f rows/s); target >= %.1fx\n",
			passFail(pass), c.Encoding, r.medianRate(), ratio, c.benchMedian(), c.Runs[1].medianRate(), targetRedisHSETRatio)
	}
	return ok
}
