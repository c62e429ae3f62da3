// Command loadtest is `make loadtest`: it starts its own redis-server on a free loopback
// port, writes two versions of a namespace with pipeline.Run, serves them with the
// lookup service, and drives the service with concurrent single and batch lookups while
// it flips between the versions. Then it runs the same load twice without flips, once
// with no release and once with a canary of the other version at -canary percent, and
// compares their p99 (the canary's routing must add no errors and at most 10% to the
// p99). Last it runs redis-benchmark GET with the same number of clients against the
// same server, and prints everything. It is bounded in time and requests, stops by
// itself, and exits 1 when an existing key failed or a batch mixed versions.
//
// This package only wires; the load itself is lookup/loadtest.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	canary := flag.Float64("canary", 10, "canary weight (percent) of the comparison run (0: skip it)")
	chain := flag.Bool("chain", false, "compare lookup p99 over a chain of incremental versions (depth 3) with a full version instead (chain.go)")
	flag.Parse()
	if *chain {
		if err := runChain(*rows, *clients, *dur, *maxReq, *batch, *batchEvery); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*rows, *clients, *dur, *maxReq, *flips, *batch, *batchEvery, *canary); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func run(rows, clients int, dur time.Duration, maxReq, flips, batch, batchEvery int, canary float64) error {
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
	defer func() { sstop(); <-served }()
	if err != nil {
		return err
	}
	fmt.Printf("lookup service (%d clients, batchGet of %d every %d requests, cache 100k):\n  %s\n", clients, batch, batchEvery, rep)
	for _, s := range rep.Samples {
		fmt.Println("  error:", s)
	}

	if rep.Errors > 0 || rep.Mixed > 0 || rep.Flips < flips {
		return fmt.Errorf("%d errors, %d mixed-version batches, %d of %d flips", rep.Errors, rep.Mixed, rep.Flips, flips)
	}
	if canary > 0 {
		if err := compareCanary(ctx, store, "http://"+ln.Addr().String(), keys, versions, clients, batch, batchEvery, dur, maxReq, canary); err != nil {
			return err
		}
	}

	out, err := exec.CommandContext(ctx, "redis-benchmark", "-p", strconv.Itoa(port), "-t", "get",
		"-c", strconv.Itoa(clients), "-n", "200000", "-q").CombinedOutput()
	if err != nil {
		fmt.Printf("redis-benchmark: %v\n%s", err, out)
	} else {
		lines := strings.Split(strings.TrimSpace(string(out)), "\r")
		fmt.Printf("redis-benchmark -t get -c %d -n 200000 (same server):\n  %s\n", clients, strings.TrimSpace(lines[len(lines)-1]))
	}
	return nil
}

// compareCanary runs the same load (no flips) without a release and with a canary of the
// other version at weight percent, and reports the canary's p99 against the baseline's.
func compareCanary(ctx context.Context, store *writers.Store, base string, keys, versions []string, clients, batch, batchEvery int, dur time.Duration, maxReq int, weight float64) error {
	load := func() (loadtest.Report, error) {
		return loadtest.Run(ctx, loadtest.Config{BaseURL: base, Namespace: "churn", Keys: keys,
			Clients: clients, BatchSize: batch, BatchEvery: batchEvery, Duration: dur, MaxRequests: maxReq})
	}
	plain, err := load()
	if err != nil {
		return err
	}
	live, err := store.Live(ctx, "churn")
	if err != nil {
		return err
	}
	candidate := versions[0]
	if candidate == live {
		candidate = versions[1]
	}
	// A fixed-weight canary judged once an hour: no judgement during the run.
	if _, err := writers.StartRelease(ctx, store, writers.ReleaseSpec{Namespace: "churn", Candidate: candidate, Mode: writers.ModeCanary,
		WeightPercent: weight, Canary: writers.CanaryConfig{Interval: writers.Duration(time.Hour)}, By: "loadtest"}, time.Now()); err != nil {
		return err
	}
	if err := waitForArms(ctx, base, keys); err != nil {
		return err
	}
	withCanary, err := load()
	if err != nil {
		return err
	}
	if _, err := writers.AbortRelease(ctx, store, "churn", "loadtest", "load test done", time.Now()); err != nil {
		return err
	}
	fmt.Printf("same load, no flips, no release:\n  %s\n", plain)
	fmt.Printf("same load with a canary of %s at %g%%:\n  %s\n", candidate, weight, withCanary)
	for _, s := range withCanary.Samples {
		fmt.Println("  error:", s)
	}
	ratio := float64(withCanary.P99) / float64(plain.P99)
	verdict := "PASS"
	if ratio > 1.10 || withCanary.Errors > 0 || withCanary.Mixed > 0 {
		verdict = "FAIL"
	}
	fmt.Printf("%s canary %g%%: p99 %s is %.2fx the p99 without a release (%s), %d errors; target <= 1.10x and no errors\n",
		verdict, weight, withCanary.P99, ratio, plain.P99, withCanary.Errors)
	if withCanary.Errors > 0 || withCanary.Mixed > 0 {
		return fmt.Errorf("canary: %d errors, %d mixed-version batches", withCanary.Errors, withCanary.Mixed)
	}
	return nil
}

// waitForArms waits until the service routes by the release: an answer names its arm.
func waitForArms(ctx context.Context, base string, keys []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/v1/churn/" + keys[i%len(keys)])
		if err == nil {
			var a struct {
				Arm string `json:"arm"`
			}
			json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if a.Arm != "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service did not route by the canary within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
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
