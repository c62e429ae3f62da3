// Command loadtest is `make loadtest`: it starts its own redis-server on a free loopback
// port, writes two versions of a namespace with pipeline.Run, serves them with the
// lookup service, and runs its sections in order, each printing what it measured:
//
//   - flips: concurrent single and batch lookups while the live pointer flips between
//     the versions (no errors, no batch that mixes versions);
//   - canary: the same load without flips, with no release and with a canary of the
//     other version at -canary percent (the canary's routing must add no errors and at
//     most 10% to the p99);
//   - baselines: one table, side by side, of redis-benchmark GET, a bare net/http
//     handler answering the same bytes as serve, serve with every key a cache hit, serve
//     with the cache off, and gRPC Get, each with rps, p50, p99, p999, then the targets as
//     PASS/FAIL lines (baselines.go).
//
// It is bounded in time and requests, stops by itself, and exits 1 when an existing key
// failed or a batch mixed versions. A section is one entry of sections: a file of this
// package adds its own with an init func (a name, whether its flag is on, a run func over
// the shared env).
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

// Flags shared by the sections.
var (
	rows       = flag.Int("rows", 20000, "rows per version")
	clients    = flag.Int("clients", 16, "concurrent clients (also redis-benchmark -c)")
	dur        = flag.Duration("duration", 10*time.Second, "load duration of each run")
	maxReq     = flag.Int("max-requests", 2_000_000, "stop a run after this many requests")
	flips      = flag.Int("flips", 30, "flips during the load (0: skip the flips section)")
	batch      = flag.Int("batch", 20, "keys per batchGet")
	batchEvery = flag.Int("batch-every", 4, "every Nth request is a batchGet (0: none)")
	canary     = flag.Float64("canary", 10, "canary weight (percent) of the comparison run (0: skip it)")
	chain      = flag.Bool("chain", false, "compare lookup p99 over a chain of incremental versions (depth 3) with a full version instead (chain.go)")
)

// env is what every section shares: the Redis server, the store with its two complete
// versions, and a lookup service over them.
type env struct {
	ctx       context.Context
	dir       string
	redisPort int
	url       string // the store's URL
	store     *writers.Store
	versions  []string // the two versions, the second live at the start
	keys      []string // every key of both versions
	quiet     *slog.Logger
	base      string // the shared service's http://host:port
}

// section is one part of the run.
type section struct {
	name string
	on   func() bool
	run  func(*env) error
}

// sections run in this order; other files append theirs in init.
var sections = []section{
	{"flips", func() bool { return *flips > 0 }, runFlips},
	{"canary", func() bool { return *canary > 0 }, compareCanary},
}

func main() {
	flag.Parse()
	if grpcLoadChild() {
		return
	}
	if *chain {
		if err := runChain(*rows, *clients, *dur, *maxReq, *batch, *batchEvery); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func run() error {
	if err := inference.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*(*dur)+10*time.Minute)
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
	e := &env{ctx: ctx, dir: dir, redisPort: port, url: "redis://127.0.0.1:" + strconv.Itoa(port) + "/0",
		quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e.store, err = writers.Open(ctx, e.url)
	if err != nil {
		return err
	}
	defer e.store.Close()
	if err := e.writeVersions(); err != nil {
		return err
	}

	cfg := &lookup.Config{Namespaces: map[string]*lookup.NamespaceConfig{"churn": {Store: e.url}}}
	base, done, err := e.serve(cfg, nil)
	if err != nil {
		return err
	}
	defer done()
	e.base = base
	for _, s := range sections {
		if !s.on() {
			continue
		}
		if err := s.run(e); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// writeVersions writes the two versions with the real pipeline.
func (e *env) writeVersions() error {
	spec := shardgen.Spec{Rows: *rows, Shards: 2, Seed: 1}
	if _, err := shardgen.Generate(filepath.Join(e.dir, "features"), spec); err != nil {
		return err
	}
	if err := onnxgen.Logistic(4, 7).Write(filepath.Join(e.dir, "m.onnx")); err != nil {
		return err
	}
	job, err := jobs.Parse([]byte(`name: churn
source: {uri: features/*.parquet, key: user_id, features: [f0, f1, f2, f3]}
model: {path: m.onnx, device: cpu}
sink: {store: `+e.url+`}
defaults: {global: mean, segment_by: country}
release: {keep: 5}
`), filepath.Join(e.dir, "job.yaml"), nil)
	if err != nil {
		return err
	}
	for range 2 {
		res, err := pipeline.Run(e.ctx, pipeline.Config{Job: job, Store: e.store, Log: e.quiet})
		if err != nil {
			return fmt.Errorf("write version: %w", err)
		}
		e.versions = append(e.versions, res.Manifest.Version)
	}
	e.keys = make([]string, *rows)
	for i := range e.keys {
		e.keys[i] = shardgen.RowAt(spec, int64(i)).Key
	}
	return nil
}

// serve starts a lookup service of cfg on a loopback port (and gRPC on grpcLn, if not
// nil), waits until it is ready and returns its base URL and a func that stops it.
func (e *env) serve(cfg *lookup.Config, grpcLn net.Listener) (string, func(), error) {
	if err := cfg.Validate(); err != nil {
		return "", nil, err
	}
	svc, err := lookup.New(e.ctx, cfg, e.quiet)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		svc.Close()
		return "", nil, err
	}
	sctx, sstop := context.WithCancel(e.ctx)
	served := make(chan error, 1)
	go func() { served <- svc.Serve(sctx, ln, grpcLn) }()
	done := func() { sstop(); <-served; svc.Close() }
	for deadline := time.Now().Add(10 * time.Second); !svc.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			done()
			return "", nil, fmt.Errorf("the service is not ready after 10s")
		}
	}
	return "http://" + ln.Addr().String(), done, nil
}

// runFlips drives the shared service with single and batch lookups while it flips.
func runFlips(e *env) error {
	rep, err := loadtest.Run(e.ctx, loadtest.Config{
		BaseURL: e.base, Namespace: "churn", Keys: e.keys,
		Clients: *clients, BatchSize: *batch, BatchEvery: *batchEvery, Duration: *dur, MaxRequests: *maxReq, Flips: *flips,
		Flip: func(ctx context.Context, i int) error {
			_, err := writers.Flip(ctx, e.store, "churn", e.versions[i%2])
			return err
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("lookup service (%d clients, batchGet of %d every %d requests, %d flips):\n  %s\n", *clients, *batch, *batchEvery, *flips, rep)
	for _, s := range rep.Samples {
		fmt.Println("  error:", s)
	}
	if rep.Errors > 0 || rep.Mixed > 0 || rep.Flips < *flips {
		return fmt.Errorf("%d errors, %d mixed-version batches, %d of %d flips", rep.Errors, rep.Mixed, rep.Flips, *flips)
	}
	return nil
}

// compareCanary runs the same load (no flips) without a release and with a canary of the
// other version at -canary percent, and reports the canary's p99 against the baseline's.
func compareCanary(e *env) error {
	weight := *canary
	load := func() (loadtest.Report, error) {
		return loadtest.Run(e.ctx, loadtest.Config{BaseURL: e.base, Namespace: "churn", Keys: e.keys,
			Clients: *clients, BatchSize: *batch, BatchEvery: *batchEvery, Duration: *dur, MaxRequests: *maxReq})
	}
	plain, err := load()
	if err != nil {
		return err
	}
	live, err := e.store.Live(e.ctx, "churn")
	if err != nil {
		return err
	}
	candidate := e.versions[0]
	if candidate == live {
		candidate = e.versions[1]
	}
	// A fixed-weight canary judged once an hour: no judgement during the run.
	if _, err := writers.StartRelease(e.ctx, e.store, writers.ReleaseSpec{Namespace: "churn", Candidate: candidate, Mode: writers.ModeCanary,
		WeightPercent: weight, Canary: writers.CanaryConfig{Interval: writers.Duration(time.Hour)}, By: "loadtest"}, time.Now()); err != nil {
		return err
	}
	if err := waitForArms(e.base, e.keys, true); err != nil {
		return err
	}
	withCanary, err := load()
	if err != nil {
		return err
	}
	if _, err := writers.AbortRelease(e.ctx, e.store, "churn", "loadtest", "load test done", time.Now()); err != nil {
		return err
	}
	if err := waitForArms(e.base, e.keys, false); err != nil {
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

// waitForArms waits until the service routes by a release (routed) or no longer does:
// an answer names its arm or does not.
func waitForArms(base string, keys []string, routed bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		resp, err := http.Get(base + "/v1/churn/" + keys[i%len(keys)])
		if err == nil {
			var a struct {
				Arm string `json:"arm"`
			}
			json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if (a.Arm != "") == routed {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service did not follow the release (routing %v) within 10s", routed)
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
