package main

// End-to-end tests of the real binary against real servers: a standalone redis-server, a
// three-master Redis Cluster and the Bigtable emulator. The binary is built once, without
// -race, so a million rows take seconds; the servers are started on free loopback ports
// by writers/redistest and bttest.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/bigtable/bttest"
	"github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/redistest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds staticref once per test process.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "staticref-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "staticref")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// bigData is a generated data set of a million rows shared by the store tests.
type bigData struct {
	dir  string
	spec shardgen.Spec
}

var (
	millionOnce sync.Once
	million     *bigData
)

// millionRows is shared by the tests that prove a million rows per store.
func millionRows(t *testing.T) *bigData {
	t.Helper()
	millionOnce.Do(func() {
		dir, err := os.MkdirTemp("", "staticref-1m-")
		if err != nil {
			t.Fatal(err)
		}
		million = genData(t, dir, shardgen.Spec{Rows: 1_000_000, Shards: 8, RowGroupRows: 50_000, Seed: dataSeed})
	})
	if million == nil {
		t.Fatal("generating a million rows failed")
	}
	return million
}

// faultRows is a smaller data set for fault tests: a restarted redis-server keeps an
// fsync-always append-only file, which makes every write slow.
func faultRows(t *testing.T) *bigData {
	return genData(t, t.TempDir(), shardgen.Spec{Rows: 200_000, Shards: 4, RowGroupRows: 10_000, Seed: dataSeed})
}

func genData(t *testing.T, dir string, spec shardgen.Spec) *bigData {
	t.Helper()
	if _, err := shardgen.Generate(filepath.Join(dir, "features"), spec); err != nil {
		t.Fatal(err)
	}
	if err := onnxgen.Logistic(4, modelSeed).Write(filepath.Join(dir, "logistic.onnx")); err != nil {
		t.Fatal(err)
	}
	return &bigData{dir: dir, spec: spec}
}

// writeJob writes a job file over d's data into a temporary directory.
func (d *bigData) writeJob(t *testing.T, ns string) string {
	t.Helper()
	job := filepath.Join(t.TempDir(), "job.yaml")
	yaml := fmt.Sprintf(`name: %s
source:
  uri: %s
  key: user_id
  features: [f0, f1, f2, f3]
model:
  path: %s
  device: cpu
  batch_size: 8192
defaults:
  global: mean
`, ns, filepath.Join(d.dir, "features", "*.parquet"), filepath.Join(d.dir, "logistic.onnx"))
	if err := os.WriteFile(job, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return job
}

// exe runs the binary and returns its exit code, stdout and stderr.
func exe(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// checkVersion proves a run's result: the keys under the version equal the rows read, and
// `staticref get` answers a sample of keys with the model's exact prediction.
func (d *bigData) checkVersion(t *testing.T, env []string, store, ns string) {
	t.Helper()
	ctx := context.Background()
	s := openFromEnv(t, env, store)
	live, err := s.Live(ctx, ns)
	if err != nil || live == "" {
		t.Fatalf("no live version: %v", err)
	}
	m, err := s.Manifest(ctx, ns, live)
	if err != nil {
		t.Fatal(err)
	}
	if m.RowsRead != int64(d.spec.Rows) || m.RowsWritten != m.RowsRead {
		t.Fatalf("manifest: read %d written %d, want %d each", m.RowsRead, m.RowsWritten, d.spec.Rows)
	}
	n, err := s.CountKeys(ctx, ns, live)
	if err != nil {
		t.Fatal(err)
	}
	if n != m.RowsRead {
		t.Fatalf("keys under version %s: got %d, want %d (rows read)", live, n, m.RowsRead)
	}
	s.Close()

	ref := onnxgen.Logistic(4, modelSeed)
	args := []string{"get", "--store", store, "--namespace", ns, "--"}
	var want []shardgen.Row
	for i := range int64(500) {
		r := (i*7919 + 13) % int64(d.spec.Rows) // spread over every shard
		if i == 0 {
			r = int64(d.spec.Rows) - 1
		}
		row := shardgen.RowAt(d.spec, r)
		want = append(want, row)
		args = append(args, row.Key)
	}
	code, out, stderr := exe(t, env, args...)
	if code != 0 {
		t.Fatalf("get: exit %d: %s", code, stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for i := 0; sc.Scan(); i++ {
		var a lookup.Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		var v map[string]float64
		json.Unmarshal(a.Value, &v)
		exp := ref.Predict(want[i].F[:])
		if a.Key != want[i].Key || a.Version != live ||
			math.Abs(v["score"]-exp["score"][0]) > 1e-5 || math.Abs(v["logit"]-exp["logit"][0]) > 1e-5 {
			t.Fatalf("key %s: got %s, want score %v logit %v from %s", want[i].Key, sc.Bytes(), exp["score"][0], exp["logit"][0], live)
		}
	}
}

func openFromEnv(t *testing.T, env []string, url string) *writers.Store {
	t.Helper()
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	s, err := writers.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storeServer starts a store for a test and returns its URL and the environment the
// binary needs to reach it.
type storeServer struct {
	name  string
	start func(t *testing.T) (url string, env []string)
}

// productionStores are the stores a deployment uses, each on a real server.
var productionStores = []storeServer{
	{"redis", func(t *testing.T) (string, []string) { return redistest.Standalone(t), nil }},
	{"redis cluster", func(t *testing.T) (string, []string) { return redistest.Cluster(t), nil }},
	{"bigtable emulator", func(t *testing.T) (string, []string) {
		srv, err := bttest.NewServer("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		return "bigtable://proj/inst/predictions", []string{"BIGTABLE_EMULATOR_HOST=" + srv.Addr}
	}},
}

func TestAMillionRowsIntoEachProductionStore(t *testing.T) {
	if testing.Short() {
		t.Skip("a million rows per store")
	}
	d := millionRows(t)
	for _, st := range productionStores {
		t.Run(st.name, func(t *testing.T) {
			url, env := st.start(t)
			job := d.writeJob(t, "churn")
			start := time.Now()
			code, out, stderr := exe(t, env, "run", "--job", job, "--store", url)
			if code != 0 {
				t.Fatalf("run: exit %d\n%s\n%s", code, out, stderr)
			}
			t.Logf("%d rows into %s in %s", d.spec.Rows, st.name, time.Since(start).Round(time.Millisecond))
			d.checkVersion(t, env, url, "churn")
		})
	}
}

// TestRedisKilledMidWrite: the run fails cleanly, the live version is untouched, and a
// re-run with --version completes the version with exactly one copy of every row.
func TestRedisKilledMidWrite(t *testing.T) {
	d := faultRows(t)
	srv := redistest.StartStandalone(t)
	url := srv.URL() + "?retry_for=1s&dial_timeout=300ms&max_retries=1"
	job := d.writeJob(t, "churn")
	if code, _, stderr := exe(t, nil, "run", "--job", job, "--store", url); code != 0 {
		t.Fatalf("first run: %s", stderr)
	}
	ctx := context.Background()
	s := openFromEnv(t, nil, srv.URL())
	good, _ := s.Live(ctx, "churn")
	s.Close()

	cmd := exec.Command(binary(t), "run", "--job", job, "--store", url, "--version", "v-killed", "--lease-ttl", "5s", "--set", "model.batch_size=1024")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForShards(t, srv.URL(), "churn", "v-killed", 2)
	srv.Kill()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("run with the server killed: got %v, want exit 1\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), srv.Addr()) {
		t.Errorf("error does not name the server %s:\n%s", srv.Addr(), stderr.String())
	}

	srv.Restart()
	s = openFromEnv(t, nil, srv.URL())
	if live, _ := s.Live(ctx, "churn"); live != good {
		t.Fatalf("live after the failed run: got %s, want %s untouched", live, good)
	}
	s.Close()
	// The dead server could not hear the lease's release: --wait outlasts it.
	code, out, errOut := exe(t, nil, "run", "--job", job, "--store", url, "--version", "v-killed", "--wait")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "resuming") {
		t.Errorf("the re-run did not resume:\n%s", errOut)
	}
	d.checkVersion(t, nil, srv.URL(), "churn")
}

// TestProcessKilledMidRun: kill -9 leaves a writing version and a lease that lapses; a
// re-run with --version and --wait takes the lease over and completes the version.
func TestProcessKilledMidRun(t *testing.T) {
	d := faultRows(t)
	url := redistest.Standalone(t)
	job := d.writeJob(t, "churn")
	cmd := exec.Command(binary(t), "run", "--job", job, "--store", url, "--version", "v-9", "--lease-ttl", "8s", "--set", "model.batch_size=1024")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForShards(t, url, "churn", "v-9", 2)
	kill(t, cmd)

	code, _, stderr := exe(t, nil, "run", "--job", job, "--store", url, "--version", "v-9")
	if code != 1 || !strings.Contains(stderr, "being written by") {
		t.Fatalf("re-run while the dead run's lease lasts: got exit %d %q, want 1 naming the holder", code, stderr)
	}
	code, out, stderr := exe(t, nil, "run", "--job", job, "--store", url, "--version", "v-9", "--wait")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, stderr)
	}
	d.checkVersion(t, nil, url, "churn")
}

// TestTwoRunsOfOneNamespace: never two writers. The first two cases hold the lease in
// the test itself, so the other writer is certainly there when the run starts (two runs
// of 20k rows started together may well not overlap): without --wait the run fails at
// once naming it and starts no version; with --wait it waits, then completes. Two real
// runs with --wait both complete, one after the other.
func TestTwoRunsOfOneNamespace(t *testing.T) {
	_, job, _ := workspace(t, 20_000, "")
	url := redistest.Standalone(t)
	ctx := context.Background()
	s := openFromEnv(t, nil, url)
	defer s.Close()
	args := []string{"run", "--job", job, "--store", url, "--set", "model.batch_size=512"}
	const other = "other-host:4242"
	hold := func(t *testing.T) writers.Lease {
		t.Helper()
		l, err := s.AcquireLease(ctx, "churn", other, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	complete := func(t *testing.T) int {
		t.Helper()
		ms, err := s.Manifests(ctx, "churn")
		if err != nil {
			t.Fatal(err)
		}
		var done int // complete, or retired by the gc of release.keep: 1
		for _, m := range ms {
			if (m.State == writers.StateComplete || m.State == writers.StateRetired) && m.RowsWritten == 20_000 {
				done++
			}
		}
		return done
	}

	t.Run("without --wait the run fails naming the writer", func(t *testing.T) {
		l := hold(t)
		defer s.ReleaseLease(ctx, l)
		code, _, stderr := exe(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, "being written by "+other) {
			t.Fatalf("got exit %d, want 1 naming %s:\n%s", code, other, stderr)
		}
		if ms, _ := s.Manifests(ctx, "churn"); len(ms) != 0 {
			t.Errorf("the refused run started %d versions, want none", len(ms))
		}
	})

	t.Run("with --wait the run waits for the writer, then completes", func(t *testing.T) {
		l := hold(t)
		cmd := exec.Command(binary(t), append(args, "--wait")...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		waiting := make(chan struct{})
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			var once sync.Once
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				log.WriteString(sc.Text() + "\n")
				if strings.Contains(sc.Text(), "waiting for the writer lease") && strings.Contains(sc.Text(), other) {
					once.Do(func() { close(waiting) })
				}
			}
		}()
		select {
		case <-waiting:
		case <-copied:
			cmd.Wait()
			t.Fatalf("the run ended without waiting for %s:\n%s", other, log.String())
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-copied
			cmd.Wait()
			t.Fatalf("the run did not report waiting for %s in 30s:\n%s", other, log.String())
		}
		if n := complete(t); n != 0 {
			t.Fatalf("%d versions completed while the lease was held by %s", n, other)
		}
		if err := s.ReleaseLease(ctx, l); err != nil {
			t.Fatal(err)
		}
		<-copied
		if err := cmd.Wait(); err != nil {
			t.Fatalf("the waiting run: %v\n%s", err, log.String())
		}
		if n := complete(t); n != 1 {
			t.Errorf("versions that completed with every row: got %d, want 1", n)
		}
	})

	t.Run("two runs with --wait both complete", func(t *testing.T) {
		var errs [2]error
		var logs [2]bytes.Buffer
		var wg sync.WaitGroup
		for i := range errs {
			cmd := exec.Command(binary(t), append(args, "--wait")...)
			cmd.Stderr = &logs[i]
			wg.Go(func() { errs[i] = cmd.Run() })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("runs ended with %v and %v, want both to complete\n%s\n%s", errs[0], errs[1], &logs[0], &logs[1])
		}
		if n := complete(t); n != 3 {
			t.Errorf("versions that completed with every row: got %d, want 3", n)
		}
	})
}

// kill sends SIGKILL to a running staticref and fails the test if the run had already
// ended by itself, which would leave nothing to recover from.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the run ended (%v) before it could be killed; give it more rows", cmd.ProcessState)
	}
}

// redisClient is a plain client of the server at url, closed with the test.
func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitForShards polls until version has at least n committed shards.
func waitForShards(t *testing.T, url, ns, version string, n int) {
	t.Helper()
	s := openFromEnv(t, nil, url)
	defer s.Close()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if shards, err := s.Commits(context.Background(), ns, version); err == nil && len(shards) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("version %s never committed %d shards", version, n)
}

// TestFourShardProcessesAgainstRedis runs an Indexed-Job-like sharded run: four processes
// at once write one version; the last to commit flips it. Then a shard is killed and
// re-run, and the version still completes with every row exactly once.
func TestFourShardProcessesAgainstRedis(t *testing.T) {
	d := faultRows(t)
	url := redistest.Standalone(t)
	job := d.writeJob(t, "churn")
	start := func(version string, i int) *exec.Cmd {
		cmd := exec.Command(binary(t), "run", "--job", job, "--store", url, "--version", version,
			"--set", "model.workers=1", "--set", "model.batch_size=1024", "--lease-ttl", "5s")
		cmd.Env = append(os.Environ(), fmt.Sprintf("JOB_COMPLETION_INDEX=%d", i), "STATICREF_SHARD_COUNT=4")
		cmd.Stderr = &bytes.Buffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	t.Run("four processes at once", func(t *testing.T) {
		var cmds []*exec.Cmd
		for i := range 4 {
			cmds = append(cmds, start("v-indexed", i))
		}
		for i, c := range cmds {
			if err := c.Wait(); err != nil {
				t.Fatalf("shard %d: %v\n%s", i, err, c.Stderr)
			}
		}
		d.checkVersion(t, nil, url, "churn")
		s := openFromEnv(t, nil, url)
		defer s.Close()
		if live, _ := s.Live(context.Background(), "churn"); live != "v-indexed" {
			t.Fatalf("live: got %s, want v-indexed", live)
		}
	})

	t.Run("a killed shard re-run completes the version", func(t *testing.T) {
		// Shard 3 is killed once its first rows are in, before the others start: they
		// commit their shards, and none may flip a version that lacks shard 3.
		rdb := redisClient(t, url)
		before := rdb.DBSize(context.Background()).Val()
		victim := start("v-killed-shard", 3)
		// Rows come 1,024 to a batch; the lease and the manifest are a few keys more.
		for deadline := time.Now().Add(60 * time.Second); rdb.DBSize(context.Background()).Val() <= before+100; {
			if time.Now().After(deadline) {
				t.Fatalf("shard 3 wrote no rows in 60s:\n%s", victim.Stderr)
			}
			time.Sleep(2 * time.Millisecond)
		}
		kill(t, victim)
		var cmds []*exec.Cmd
		for i := range 3 {
			cmds = append(cmds, start("v-killed-shard", i))
		}
		for i, c := range cmds {
			if err := c.Wait(); err != nil {
				t.Fatalf("shard %d: %v\n%s", i, err, c.Stderr)
			}
		}
		s := openFromEnv(t, nil, url)
		live, _ := s.Live(context.Background(), "churn")
		s.Close()
		if live == "v-killed-shard" {
			t.Fatal("the version went live without its killed shard")
		}
		retry := exec.Command(binary(t), "run", "--job", job, "--store", url, "--version", "v-killed-shard",
			"--shard-index", "3", "--shard-count", "4", "--wait")
		if out, err := retry.CombinedOutput(); err != nil {
			t.Fatalf("re-run of shard 3: %v\n%s", err, out)
		}
		d.checkVersion(t, nil, url, "churn")
	})
}

// TestUnreachableRedisSaysItOnce: go-redis's own dial logs go to --log-level debug, so
// a user reads one line naming the address, not the client's retries first.
func TestUnreachableRedisSaysItOnce(t *testing.T) {
	code, _, stderr := exe(t, nil, "get", "--store", "redis://127.0.0.1:1/0", "--namespace", "churn", "k")
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || len(lines) != 1 || !strings.Contains(stderr, "cannot reach redis at 127.0.0.1:1") {
		t.Errorf("got exit %d and %d lines:\n%s\nwant exit 1 and one line naming 127.0.0.1:1", code, len(lines), stderr)
	}
	_, _, debug := exe(t, nil, "get", "--log-level", "debug", "--store", "redis://127.0.0.1:1/0", "--namespace", "churn", "k")
	if !strings.Contains(debug, "go-redis") {
		t.Errorf("--log-level debug lacks go-redis's own lines:\n%s", debug)
	}
}
