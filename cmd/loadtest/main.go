// Command loadtest is `make loadtest`: it starts its own redis-server on a free loopback
// port, writes two versions of a namespace with pipeline.Run, serves them with the
// lookup service, and drives the service with concurrent single and batch lookups while
// it flips between the versions. Then it runs redis-benchmark GET with the same number
// of clients against the same server, and prints both. It is bounded in time and
// requests, stops by itself, and exits 1 when an existing key failed or a batch mixed
// versions.
//
// This package only wires; the load itself is lookup/loadtest.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/lookup/loadtest"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/all" // every store driver
)

func main() {
	rows := flag.Int("rows", 20000, "rows per version")
	clients := flag.Int("clients", 16, "concurrent clients (also redis-benchmark -c)")
	dur := flag.Duration("duration", 10*time.Second, "load duration")
	maxReq := flag.Int("max-requests", 2_000_000, "stop after this many requests")
	flips := flag.Int("flips", 30, "flips during the load")
	batch := flag.Int("batch", 20, "keys per batchGet")
	batchEvery := flag.Int("batch-every", 4, "every Nth request is a batchGet (0: none)")
	flag.Parse()
	if err := run(*rows, *clients, *dur, *maxReq, *flips, *batch, *batchEvery); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func run(rows, clients int, dur time.Duration, maxReq, flips, batch, batchEvery int) error {
	if err := inference.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "staticref-loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	port, stop, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stop()
	url := "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
	store, err := writers.Open(ctx, url)
	if err != nil {
		return err
	}
	defer store.Close()

	spec := shardgen.Spec{Rows: rows, Shards: 2, Seed: 1}
	if _, err := shardgen.Generate(filepath.Join(dir, "features"), spec); err != nil {
		return err
	}
	if err := onnxgen.Logistic(4, 7).Write(filepath.Join(dir, "m.onnx")); err != nil {
		return err
	}
	job, err := jobs.Parse([]byte(`name: churn
source: {uri: features/*.parquet, key: user_id, features: [f0, f1, f2, f3]}
model: {path: m.onnx, device: cpu}
sink: {store: `+url+`}
defaults: {global: mean, segment_by: country}
release: {keep: 5}
`), filepath.Join(dir, "job.yaml"), nil)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var versions []string
	for range 2 {
		res, err := pipeline.Run(ctx, pipeline.Config{Job: job, Store: store, Log: quiet})
		if err != nil {
			return fmt.Errorf("write version: %w", err)
		}
		versions = append(versions, res.Manifest.Version)
	}

	cfg := &lookup.Config{Namespaces: map[string]*lookup.NamespaceConfig{"churn": {Store: url}}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	svc, err := lookup.New(ctx, cfg, quiet)
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, sstop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- svc.Run(sctx, ln) }()
	for !svc.Ready() {
		time.Sleep(10 * time.Millisecond)
	}

	keys := make([]string, rows)
	for i := range keys {
		keys[i] = shardgen.RowAt(spec, int64(i)).Key
	}
	rep, err := loadtest.Run(ctx, loadtest.Config{
		BaseURL: "http://" + ln.Addr().String(), Namespace: "churn", Keys: keys,
		Clients: clients, BatchSize: batch, BatchEvery: batchEvery, Duration: dur, MaxRequests: maxReq, Flips: flips,
		Flip: func(ctx context.Context, i int) error {
			_, err := writers.Flip(ctx, store, "churn", versions[i%2])
			return err
		},
	})
	sstop()
	if serr := <-served; serr != nil {
		return serr
	}
	if err != nil {
		return err
	}
	fmt.Printf("lookup service (%d clients, batchGet of %d every %d requests, cache 100k):\n  %s\n", clients, batch, batchEvery, rep)
	for _, s := range rep.Samples {
		fmt.Println("  error:", s)
	}

	out, err := exec.CommandContext(ctx, "redis-benchmark", "-p", strconv.Itoa(port), "-t", "get",
		"-c", strconv.Itoa(clients), "-n", "200000", "-q").CombinedOutput()
	if err != nil {
		fmt.Printf("redis-benchmark: %v\n%s", err, out)
	} else {
		lines := strings.Split(strings.TrimSpace(string(out)), "\r")
		fmt.Printf("redis-benchmark -t get -c %d -n 200000 (same server):\n  %s\n", clients, strings.TrimSpace(lines[len(lines)-1]))
	}
	if rep.Errors > 0 || rep.Mixed > 0 || rep.Flips < flips {
		return fmt.Errorf("%d errors, %d mixed-version batches, %d of %d flips", rep.Errors, rep.Mixed, rep.Flips, flips)
	}
	return nil
}

// startRedis starts redis-server on a free loopback port without persistence.
func startRedis(dir string) (int, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start redis-server (is it installed?): %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return port, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return 0, nil, fmt.Errorf("redis-server on port %d did not start", port)
		}
	}
}
