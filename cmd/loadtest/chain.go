package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
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
)

// runChain is `loadtest -chain`: lookup p99 over a chain of incremental versions, depth 3
// (a full version and two increments of a tenth of its keys each, overlapping it and
// adding keys), against a full version of the same keys, on one redis-server, with the
// answer cache off so that every lookup reads the store. Each side is loaded twice,
// alternating, and the better p99 of each is compared: the target is at most 1.3x, which a
// read of the whole chain in one round trip (GetChain, one pipeline) allows and a round
// trip per level would not.
func runChain(rows, clients int, dur time.Duration, maxReq, batch, batchEvery int) error {
	if err := inference.Init(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*dur+5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "staticref-loadtest-chain-")
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
	if err := onnxgen.Logistic(4, 7).Write(filepath.Join(dir, "m.onnx")); err != nil {
		return err
	}
	full := shardgen.Spec{Rows: rows, Shards: 2, Seed: 1}
	tenth := max(1, rows/10)
	sets := []shardgen.Spec{
		full,
		{Rows: tenth, Shards: 1, Seed: 2, FirstRow: int64(rows - tenth/2)}, // half existing keys, half new
		{Rows: tenth, Shards: 1, Seed: 3, FirstRow: int64(rows / 3)},
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	publish := func(ns string, spec shardgen.Spec, mode string) error {
		data := filepath.Join(dir, fmt.Sprintf("%s-%d-%d", ns, spec.Seed, spec.FirstRow))
		if _, err := shardgen.Generate(filepath.Join(data, "features"), spec); err != nil {
			return err
		}
		job, err := jobs.Parse([]byte(`name: `+ns+`
source: {uri: `+filepath.Join(data, "features", "*.parquet")+`, key: user_id, features: [f0, f1, f2, f3]}
model: {path: `+filepath.Join(dir, "m.onnx")+`, device: cpu}
sink: {store: `+url+`, mode: `+mode+`}
release: {keep: 5}
`), filepath.Join(dir, "job.yaml"), nil)
		if err != nil {
			return err
		}
		_, err = pipeline.Run(ctx, pipeline.Config{Job: job, Store: store, Log: quiet})
		return err
	}
	if err := publish("flat", full, "full"); err != nil {
		return fmt.Errorf("write the full version: %w", err)
	}
	for i, spec := range sets {
		mode := map[bool]string{true: "full", false: "incremental"}[i == 0]
		if err := publish("chain", spec, mode); err != nil {
			return fmt.Errorf("write level %d of the chain: %w", i, err)
		}
	}
	live, _ := store.Live(ctx, "chain")
	head, err := store.Manifest(ctx, "chain", live)
	if err != nil {
		return err
	}

	cfg := &lookup.Config{CacheBytes: -1, Namespaces: map[string]*lookup.NamespaceConfig{"flat": {Store: url}, "chain": {Store: url}}}
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
	defer func() { sstop(); <-served }()
	for !svc.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	keys := make([]string, rows) // every key of the full version: the chain answers them all
	for i := range keys {
		keys[i] = shardgen.RowAt(full, int64(i)).Key
	}
	load := func(ns string) (loadtest.Report, error) {
		return loadtest.Run(ctx, loadtest.Config{BaseURL: "http://" + ln.Addr().String(), Namespace: ns, Keys: keys,
			Clients: clients, BatchSize: batch, BatchEvery: batchEvery, Duration: dur, MaxRequests: maxReq})
	}
	var best [2]loadtest.Report
	for round := range 2 {
		for i, ns := range []string{"flat", "chain"} {
			rep, err := load(ns)
			if err != nil {
				return err
			}
			fmt.Printf("round %d, %s (%s): %s\n", round+1, ns, map[bool]string{true: "a full version", false: fmt.Sprintf("a chain of depth %d", head.ChainDepth())}[i == 0], rep)
			for _, s := range rep.Samples {
				fmt.Println("  error:", s)
			}
			if rep.Errors > 0 {
				return fmt.Errorf("%s: %d errors", ns, rep.Errors)
			}
			if round == 0 || rep.P99 < best[i].P99 {
				best[i] = rep
			}
		}
	}
	ratio := float64(best[1].P99) / float64(best[0].P99)
	verdict := "PASS"
	if ratio > 1.3 {
		verdict = "FAIL"
	}
	fmt.Printf("%s chain of depth %d: p99 %s is %.2fx a full version's (%s), cache off, %d clients; target <= 1.3x\n",
		verdict, head.ChainDepth(), best[1].P99, ratio, best[0].P99, clients)
	return nil
}
