package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/inference"
)

// peakRSSKiB is the process's peak resident set size (VmHWM), or -1 when unknown.
func peakRSSKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux: "5" to clear_refs).
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

func freeOSMemory() { debug.FreeOSMemory() }

// cpuTime is the user+system CPU time of the whole process so far (0 when unknown).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisServer is a redis-server this process started.
type redisServer struct {
	cmd     *exec.Cmd
	dir     string
	port    int
	done    chan struct{}
	Version string
}

func (s *redisServer) URL() string  { return "redis://" + s.Addr() + "/0" }
func (s *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// startRedis starts `redis-server --port P --bind 127.0.0.1 --save ” --appendonly no`
// and the extra arguments on a free loopback port and waits for it to answer.
func startRedis(ctx context.Context, extra ...string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New(`redis-server not found on PATH: install it (apt-get install redis-server) or run with --stores pebble`)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "staticref-bench-redis-")
	if err != nil {
		return nil, err
	}
	s := &redisServer{dir: dir, port: port, done: make(chan struct{})}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, extra...)
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server exited at start:\n%s", log)
		default:
		}
		if err := c.Ping(ctx).Err(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("redis-server did not answer PING within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info, err := c.Info(ctx, "server").Result(); err == nil {
		if _, rest, ok := strings.Cut(info, "redis_version:"); ok {
			s.Version, _, _ = strings.Cut(rest, "\r")
		}
	}
	return s, nil
}

// Stop kills the server and removes its directory.
func (s *redisServer) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	os.RemoveAll(s.dir)
}

func flushRedis(ctx context.Context, url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("flushall: %w", err)
	}
	return nil
}

// childResult is what a --child-pipeline process prints.
type childResult struct {
	Rows       int64   `json:"rows"`
	Seconds    float64 `json:"seconds"`
	RowsPerSec float64 `json:"rows_per_s"`
	PeakRSSKiB int64   `json:"peak_rss_kib"`
	Mallocs    uint64  `json:"mallocs"`
}

// runChild runs the whole pipeline once for the first model and store (the data set
// must exist) and prints a childResult: the process holds nothing else, so VmHWM is the
// pipeline's own peak.
func runChild(ctx context.Context, cfg Config, stdout io.Writer) error {
	d, err := ensureDataset(cfg, cfg.Rows, cfg.Shards)
	if err != nil {
		return err
	}
	if err := inference.Init(); err != nil {
		return err
	}
	store := cfg.Stores[0]
	if store == "redis" {
		if cfg.redisURL = os.Getenv("STATICREF_BENCH_REDIS"); cfg.redisURL == "" {
			return errors.New("child: STATICREF_BENCH_REDIS is not set")
		}
	}
	st, cleanup, err := openStore(ctx, cfg, store)
	if err != nil {
		return err
	}
	defer cleanup()
	defer st.Close()
	job, err := pipelineJob(d, cfg.Models[0], "benchp", cfg, st.URL().Raw)
	if err != nil {
		return err
	}
	m, err := measure(int64(d.spec.Rows), func() error {
		return profiled(os.Getenv("STATICREF_BENCH_PROFILE"), func() error { return runPipeline(ctx, job, st, cfg.Readers) })
	})
	if err != nil {
		return err
	}
	// The whole process's peak, not just the stage's: the child does nothing else.
	return json.NewEncoder(stdout).Encode(childResult{
		Rows: m.Rows, Seconds: m.Elapsed.Seconds(), RowsPerSec: m.RowsPerSec(),
		PeakRSSKiB: peakRSSKiB(), Mallocs: m.Mallocs,
	})
}

// spawnChild runs this binary with --child-pipeline for rows and returns its result.
func spawnChild(ctx context.Context, cfg Config, rows, batch, workers int) (*childResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"--child-pipeline",
		"--rows", strconv.Itoa(rows), "--shards", strconv.Itoa(cfg.Shards), "--cache", cfg.Cache, "--row-group-rows", strconv.Itoa(cfg.RowGroupRows),
		"--batch", strconv.Itoa(batch), "--workers", strconv.Itoa(workers),
		"--threads", strconv.Itoa(cfg.Threads), "--readers", strconv.Itoa(cfg.Readers),
		"--encoding", cfg.Encoding, "--models", cfg.Models[0], "--stores", cfg.Stores[0]}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(os.Environ(), "STATICREF_BENCH_REDIS="+cfg.redisURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("child pipeline (%d rows): %w\n%s", rows, err, stderr.Bytes())
	}
	var res childResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("child pipeline (%d rows): bad output %q: %w", rows, stdout.Bytes(), err)
	}
	return &res, nil
}

// memcheckRows are the two data set sizes --memcheck compares.
var memcheckRows = [2]int{1_000_000, 4_000_000}

// runMemcheck runs the pipeline at 1M and 4M rows in child processes and compares their
// peak RSS; the target is the 4M peak within 1.2x of the 1M peak.
func runMemcheck(ctx context.Context, cfg Config, out io.Writer) (bool, error) {
	if cfg.Stores[0] == "redis" {
		srv, err := startRedis(ctx)
		if err != nil {
			return false, err
		}
		defer srv.Stop()
		cfg.redisURL = srv.URL()
	}
	for _, rows := range memcheckRows {
		if _, err := ensureDataset(cfg, rows, cfg.Shards); err != nil {
			return false, err
		}
	}
	// Repeat runs of each size, interleaved so that a noisy spell of the machine falls on
	// both; each size's peak is the median of its runs.
	runs := make([][]*childResult, len(memcheckRows))
	for range cfg.Repeat {
		for i, rows := range memcheckRows {
			cfg.logf("memcheck: pipeline over %d rows in a child process", rows)
			r, err := spawnChild(ctx, cfg, rows, cfg.BatchSize, cfg.Workers)
			if err != nil {
				return false, err
			}
			runs[i] = append(runs[i], r)
		}
	}
	fmt.Fprintf(out, "## memcheck: %s / %s, batch %d, workers %d, readers %d, %d shards (each run in its own child process)\n\n",
		cfg.Models[0], cfg.Stores[0], cfg.BatchSize, cfg.Workers, cfg.Readers, cfg.Shards)
	fmt.Fprintln(out, "| rows | run | pipeline rows/s | peak RSS (VmHWM) | allocs/row |")
	fmt.Fprintln(out, "|---:|---:|---:|---:|---:|")
	var median [2]int64
	for i, rs := range runs {
		peaks := make([]int64, 0, len(rs))
		for j, r := range rs {
			fmt.Fprintf(out, "| %d | %d | %.0f | %.1f MiB | %.4f |\n", memcheckRows[i], j+1, r.RowsPerSec, float64(r.PeakRSSKiB)/1024,
				float64(r.Mallocs)/float64(r.Rows))
			peaks = append(peaks, r.PeakRSSKiB)
		}
		slices.Sort(peaks)
		median[i] = peaks[len(peaks)/2]
	}
	ratio := float64(median[1]) / float64(median[0])
	ok := ratio <= 1.2
	fmt.Fprintf(out, "\n%s memory bounded: median peak RSS at %d rows (%.1f MiB) is %.2fx the median peak at %d rows (%.1f MiB), %d runs each; target <= 1.20x\n",
		passFail(ok), memcheckRows[1], float64(median[1])/1024, ratio, memcheckRows[0], float64(median[0])/1024, cfg.Repeat)
	return ok, nil
}

func hostname() (string, error) { return os.Hostname() }
