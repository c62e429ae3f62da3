package main

// End-to-end tests of staticref serve on the embedded Pebble store (docs/stores.md,
// "Pebble"; docs/lookup.md, "Serving from the embedded Pebble store"), every party a
// separate process of the real binary: runs that write and flip versions of millions of
// rows, serves that answer from one store directory at once, and the CLI flipping and
// rolling back. Every answer is checked against a value computed here, independently of
// the store: shardgen.RowAt gives a key's features, and onnxgen's float64 reference
// computation the prediction of the known-weight model its version was run with (each
// version is run with a model of its own seed, so no two versions agree on a value).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

// flipSLA is how soon after a flip every serve must answer from the new version
// (docs/lookup.md: a flip reaches every lookup service within one poll_interval, 500ms
// by default).
const flipSLA = time.Second

// pebbleNS is the namespace of these tests (bigData.writeJob's job name).
const pebbleNS = "churn"

// pebbleData is a generated data set, a job over it and a pebble: store, with the model
// each version of the namespace was run with.
type pebbleData struct {
	*bigData
	job      string
	storeDir string
	store    string // pebble:storeDir

	mu     sync.Mutex
	models map[string]*onnxgen.Model // version -> the model it was run with
	order  map[string]int            // version -> its place in the order of publication
}

// newPebbleData generates rows with the binary (testdata generate: the seed dataSeed, so
// shardgen.RowAt answers what every row holds).
func newPebbleData(t *testing.T, rows, shards, rowGroupRows int) *pebbleData {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	code, _, stderr := exe(t, nil, "testdata", "generate", "--out", dir, "--rows", strconv.Itoa(rows),
		"--shards", strconv.Itoa(shards), "--row-group-rows", strconv.Itoa(rowGroupRows))
	if code != 0 {
		t.Fatalf("testdata generate: exit %d: %s", code, stderr)
	}
	t.Logf("generated %d rows in %s", rows, time.Since(start).Round(time.Millisecond))
	// writeJob's job names DIR/logistic.onnx; every run below overrides model.path.
	if err := onnxgen.Logistic(4, modelSeed).Write(filepath.Join(dir, "logistic.onnx")); err != nil {
		t.Fatal(err)
	}
	d := &pebbleData{
		bigData:  &bigData{dir: dir, spec: shardgen.Spec{Rows: rows, Shards: shards, RowGroupRows: rowGroupRows, Seed: dataSeed}},
		storeDir: filepath.Join(dir, "store"),
		models:   map[string]*onnxgen.Model{},
		order:    map[string]int{},
	}
	d.store = "pebble:" + d.storeDir
	d.job = d.writeJob(t, pebbleNS)
	return d
}

// publish runs the job into version with a logistic model of its own seed (extra: more
// flags) and returns when the run exited 0. The flip is the run's last write to the
// catalog (only gc follows it), so the exit is a moment after the flip.
func (d *pebbleData) publish(t *testing.T, version string, seed uint64, extra ...string) time.Time {
	t.Helper()
	m := onnxgen.Logistic(4, seed)
	path := filepath.Join(d.dir, "logistic-"+version+".onnx")
	if err := m.Write(path); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.models[version] = m
	d.order[version] = len(d.order)
	d.mu.Unlock()
	args := append([]string{"run", "--job", d.job, "--store", d.store, "--version", version, "--set", "model.path=" + path}, extra...)
	start := time.Now()
	code, out, stderr := exe(t, nil, args...)
	exited := time.Now()
	if code != 0 {
		t.Fatalf("run %s: exit %d\n%s\n%s", version, code, out, stderr)
	}
	t.Logf("run %s: %d rows in %s", version, d.spec.Rows, exited.Sub(start).Round(time.Millisecond))
	if !slices.Contains(extra, "--no-flip") {
		if live, err := os.ReadFile(filepath.Join(d.storeDir, "catalog", pebbleNS, "live")); err != nil || strings.TrimSpace(string(live)) != version {
			t.Fatalf("after run %s: live is %q (%v), want %s", version, live, err, version)
		}
	}
	return exited
}

// check proves one answer: key r's prediction by the model version was run with.
func (d *pebbleData) check(a lookup.Answer, r int64, version string) error {
	d.mu.Lock()
	m := d.models[version]
	d.mu.Unlock()
	row := shardgen.RowAt(d.spec, r)
	switch {
	case m == nil:
		return fmt.Errorf("key %s: answered from version %q, which no run wrote", a.Key, version)
	case a.Key != row.Key:
		return fmt.Errorf("answered key %q, want %q", a.Key, row.Key)
	case a.Source != lookup.SourcePrecomputed || a.Error != nil:
		return fmt.Errorf("key %s: got source %q error %+v, want precomputed", a.Key, a.Source, a.Error)
	}
	var v map[string]float64
	if err := json.Unmarshal(a.Value, &v); err != nil {
		return fmt.Errorf("key %s: value %s: %v", a.Key, a.Value, err)
	}
	exp := m.Predict(row.F[:])
	if math.Abs(v["score"]-exp["score"][0]) > 1e-5 || math.Abs(v["logit"]-exp["logit"][0]) > 1e-5 {
		return fmt.Errorf("key %s in %s: got %s, want score %v logit %v", a.Key, version, a.Value, exp["score"][0], exp["logit"][0])
	}
	return nil
}

func (d *pebbleData) index(version string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, ok := d.order[version]; ok {
		return i
	}
	return -1
}

// liveWritten is when the live pointer was last written: a flip renames a new file into
// place (writeFileAtomic), so its mtime is the moment of the flip, a few microseconds
// before the rename.
func (d *pebbleData) liveWritten(t *testing.T) time.Time {
	t.Helper()
	fi, err := os.Stat(filepath.Join(d.storeDir, "catalog", pebbleNS, "live"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// serveProc is a staticref serve process.
type serveProc struct {
	cmd  *exec.Cmd
	base string
	log  *serveLog
	done chan struct{} // closed once the process has exited
}

// serve writes a serve config over d's store (default poll_interval) and starts a serve
// process on a free loopback port, ready; cleanup kills it by its pid if it still runs.
func (d *pebbleData) serve(t *testing.T) *serveProc {
	t.Helper()
	cfg := filepath.Join(d.dir, "serve.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces:\n  "+pebbleNS+":\n    store: "+d.store+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{log: &serveLog{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), "serve", "--config", cfg, "--addr", "127.0.0.1:0")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGKILL) // this process, by its pid
			<-p.done
		}
	})
	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if p.base == "" {
			if m := addrRE.FindStringSubmatch(p.log.String()); m != nil {
				p.base = "http://" + m[1]
			}
		}
		if p.base != "" {
			if r, err := http.Get(p.base + "/readyz"); err == nil {
				r.Body.Close()
				if r.StatusCode == 200 {
					return p
				}
			}
		}
		if p.exited() {
			t.Fatalf("serve exited at start (%v):\n%s", p.cmd.ProcessState, p.log.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 15s:\n%s", p.log.String())
		}
	}
}

func (p *serveProc) pid() int { return p.cmd.Process.Pid }

func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code; a serve that had already exited is a
// failure, and so is one that does not stop within 15s.
func (p *serveProc) stop(t *testing.T) int {
	t.Helper()
	if p.exited() {
		t.Fatalf("serve %d had exited by itself (%v):\n%s", p.pid(), p.cmd.ProcessState, p.log.String())
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("serve %d did not stop within 15s of SIGTERM:\n%s", p.pid(), p.log.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// answered is one answer a client read: when the request started and ended, and the
// version it named.
type answered struct {
	start, end time.Time
	version    string
}

// lookupClient asks one serve for random keys of d and checks every answer. Its methods
// run in any goroutine: they report problems through problem, never through t.
type lookupClient struct {
	d    *pebbleData
	name string
	base string
	http *http.Client

	mu        sync.Mutex
	answers   []answered
	gets      int // single GETs answered 200
	batches   int // batches answered 200
	keys      int // keys answered, in both
	byVersion map[string]int
	problems  []string
	nProblems int
}

func newLookupClient(d *pebbleData, name, base string) *lookupClient {
	return &lookupClient{
		d: d, name: name, base: base, byVersion: map[string]int{},
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
}

func (c *lookupClient) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nProblems++
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *lookupClient) record(start, end time.Time, version string, keys int, batch bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers = append(c.answers, answered{start, end, version})
	c.keys += keys
	c.byVersion[version] += keys
	if batch {
		c.batches++
	} else {
		c.gets++
	}
}

// get asks for one random key and returns the version its answer named ("" on failure).
func (c *lookupClient) get(rng *rand.Rand) string {
	r := rng.Int64N(int64(c.d.spec.Rows))
	key := shardgen.RowAt(c.d.spec, r).Key
	start := time.Now()
	resp, err := c.http.Get(c.base + "/v1/" + pebbleNS + "/" + key)
	if err != nil {
		c.problem("GET %s: %v", key, err)
		return ""
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	end := time.Now()
	if err != nil || resp.StatusCode != http.StatusOK {
		c.problem("GET %s: status %d (%v): %s", key, resp.StatusCode, err, body)
		return ""
	}
	var a lookup.Answer
	if err := json.Unmarshal(body, &a); err != nil {
		c.problem("GET %s: %v: %s", key, err, body)
		return ""
	}
	if err := c.d.check(a, r, a.Version); err != nil {
		c.problem("GET: %v", err)
	}
	c.record(start, end, a.Version, 1, false)
	return a.Version
}

// batch asks for n distinct random keys at once and returns the version the batch named.
func (c *lookupClient) batch(rng *rand.Rand, n int) string {
	rows := map[string]int64{}
	var keys []string
	for len(keys) < n {
		r := rng.Int64N(int64(c.d.spec.Rows))
		k := shardgen.RowAt(c.d.spec, r).Key
		if _, dup := rows[k]; !dup {
			rows[k] = r
			keys = append(keys, k)
		}
	}
	req, _ := json.Marshal(map[string][]string{"keys": keys})
	start := time.Now()
	resp, err := c.http.Post(c.base+"/v1/"+pebbleNS+":batchGet", "application/json", bytes.NewReader(req))
	if err != nil {
		c.problem("batchGet: %v", err)
		return ""
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	end := time.Now()
	if err != nil || resp.StatusCode != http.StatusOK {
		c.problem("batchGet: status %d (%v): %s", resp.StatusCode, err, body)
		return ""
	}
	var b lookup.BatchAnswer
	if err := json.Unmarshal(body, &b); err != nil {
		c.problem("batchGet: %v: %.300s", err, body)
		return ""
	}
	if len(b.Answers) != n {
		c.problem("batchGet of %d keys: got %d answers", n, len(b.Answers))
	}
	seen := map[string]bool{}
	for _, a := range b.Answers {
		r, asked := rows[a.Key]
		switch {
		case !asked || seen[a.Key]:
			c.problem("batchGet: answer for key %q, asked once for %v", a.Key, keys)
			continue
		case a.Version != b.Version:
			c.problem("batchGet from version %s: key %s answered from %q", b.Version, a.Key, a.Version)
		}
		seen[a.Key] = true
		if err := c.d.check(a, r, b.Version); err != nil {
			c.problem("batchGet: %v", err)
		}
	}
	c.record(start, end, b.Version, n, true)
	return b.Version
}

// run asks, a single GET and a batch of 50 in turn, until ctx is done.
func (c *lookupClient) run(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := 0; ctx.Err() == nil; i++ {
		if i%2 == 0 {
			c.get(rng)
		} else {
			c.batch(rng, 50)
		}
	}
}

// firstAnswer is when the earliest answer from version to a request started at since or
// later arrived (zero: none yet).
func (c *lookupClient) firstAnswer(version string, since time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for _, a := range c.answers {
		if a.version == version && !a.start.Before(since) && (first.IsZero() || a.end.Before(first)) {
			first = a.end
		}
	}
	return first
}

// waitFor polls every 20ms until serve answers from version, for up to 5s (longer than
// flipSLA, so that a slow flip is measured, not only failed), and returns when the first
// answer from it to a request started at since or later arrived (from the poll, or from
// a client running meanwhile); zero if none came. since must follow every answer from an
// earlier time version was live.
func (c *lookupClient) waitFor(version string, since time.Time) time.Time {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if c.get(rng) == version {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c.firstAnswer(version, since)
}

// report fails t with the client's problems, and checks that no answer went back in
// time: history is the namespace's live versions in the order they went live, and a
// request that started after another's answer arrived is answered from the same step of
// history or a later one (serve swaps one snapshot pointer per namespace).
func (c *lookupClient) report(t *testing.T, history ...string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nProblems > 0 {
		t.Errorf("%s: %d problems, the first %d:\n%s", c.name, c.nProblems, len(c.problems), strings.Join(c.problems, "\n"))
	}
	// step[i] is the earliest step of history that answer i can be, given the answers
	// that arrived before it started (the least constraining choice).
	step := make([]int, len(c.answers))
	byStart := make([]int, len(c.answers))
	for i := range byStart {
		byStart[i] = i
	}
	byEnd := slices.Clone(byStart)
	sort.Slice(byStart, func(i, j int) bool { return c.answers[byStart[i]].start.Before(c.answers[byStart[j]].start) })
	sort.Slice(byEnd, func(i, j int) bool { return c.answers[byEnd[i]].end.Before(c.answers[byEnd[j]].end) })
	floor, from, j := 0, "", 0
	for _, i := range byStart {
		a := c.answers[i]
		for ; j < len(byEnd) && c.answers[byEnd[j]].end.Before(a.start); j++ {
			if s := step[byEnd[j]]; s > floor {
				floor, from = s, c.answers[byEnd[j]].version
			}
		}
		q := slices.Index(history[floor:], a.version)
		if q < 0 {
			t.Errorf("%s: a request started at %s was answered from %s after an answer from %s had arrived (live history %v)",
				c.name, a.start.Format("15:04:05.000"), a.version, from, history)
			break
		}
		step[i] = floor + q
	}
	var vs []string
	for v, n := range c.byVersion {
		vs = append(vs, fmt.Sprintf("%s:%d", v, n))
	}
	sort.Strings(vs)
	t.Logf("%s: %d GETs and %d batches answered 200 (%d keys), keys per version %s",
		c.name, c.gets, c.batches, c.keys, strings.Join(vs, " "))
}

// answersBetween counts the requests that started and ended within [from, to].
func (c *lookupClient) answersBetween(from, to time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.answers {
		if !a.start.Before(from) && !a.end.After(to) {
			n++
		}
	}
	return n
}

// TestServeOnPebbleWhileRunsWriteAndFlipTwoMillionRows: serve answers from a pebble:
// store while three runs in a row each write a 2M-row version beside the live one and
// flip it. Throughout, a client asks random keys (single GETs and batches of 50): every
// answer is 200 and exact for the version it names, a batch names one version for all
// its keys, no answer goes back to an older version, and each flip reaches serve within
// a second of the run's exit. serve never exits, and stops with 0 on SIGTERM.
func TestServeOnPebbleWhileRunsWriteAndFlipTwoMillionRows(t *testing.T) {
	d := newPebbleData(t, 2_000_000, 8, 50_000)
	d.publish(t, "v0", 100)
	srv := d.serve(t)
	c := newLookupClient(d, "serve", srv.base)
	if c.waitFor("v0", time.Time{}).IsZero() {
		t.Fatalf("serve never answered from v0:\n%s", srv.log.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx, 1) }()
	stopClient := sync.OnceFunc(func() { cancel(); <-done })
	defer stopClient()

	for i, v := range []string{"v1", "v2", "v3"} {
		started := time.Now()
		exited := d.publish(t, v, uint64(101+i))
		flipped := d.liveWritten(t)
		first := c.waitFor(v, started)
		if first.IsZero() {
			t.Fatalf("serve never answered from %s, 5s after the run exited:\n%s", v, srv.log.String())
		}
		during := c.answersBetween(started, exited)
		t.Logf("flip to %s: first answer %s after the run exited, %s after the flip; %d requests answered during the run",
			v, first.Sub(exited).Round(time.Millisecond), first.Sub(flipped).Round(time.Millisecond), during)
		if during == 0 {
			t.Errorf("run %s: no request was answered while it wrote", v)
		}
		if first.Sub(exited) > flipSLA {
			t.Errorf("flip to %s: serve answered from it %s after the run exited, want within %s", v, first.Sub(exited), flipSLA)
		}
	}
	stopClient()
	if srv.exited() {
		t.Fatalf("serve exited during the runs (%v):\n%s", srv.cmd.ProcessState, srv.log.String())
	}
	c.report(t, "v0", "v1", "v2", "v3")
	for _, v := range []string{"v0", "v1", "v2", "v3"} {
		if c.byVersion[v] == 0 {
			t.Errorf("no answer from %s", v)
		}
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exit after SIGTERM: got %d, want 0\n%s", code, srv.log.String())
	}
}

// TestTwoServesShareOnePebbleStoreAndFollowAThirdProcessFlips: two serve processes
// answer from the same store directory at once, and a flip and then a rollback by a
// third process (the CLI) reach both within a second.
func TestTwoServesShareOnePebbleStoreAndFollowAThirdProcessFlips(t *testing.T) {
	d := newPebbleData(t, 50_000, 2, 10_000)
	d.publish(t, "va", 200)
	d.publish(t, "vb", 201, "--no-flip")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var serves []*serveProc
	var clients []*lookupClient
	for i := range 2 {
		p := d.serve(t)
		c := newLookupClient(d, fmt.Sprintf("serve %d (pid %d)", i+1, p.pid()), p.base)
		if c.waitFor("va", time.Time{}).IsZero() {
			t.Fatalf("%s never answered from va:\n%s", c.name, p.log.String())
		}
		wg.Go(func() { c.run(ctx, uint64(10+i)) })
		serves, clients = append(serves, p), append(clients, c)
	}

	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"versions", "flip", "vb"}, "vb"},
		{[]string{"versions", "rollback"}, "va"},
	} {
		args := append([]string{step.args[0], step.args[1], "--store", d.store, "--namespace", pebbleNS}, step.args[2:]...)
		started := time.Now()
		code, out, stderr := exe(t, nil, args...)
		exited := time.Now()
		if code != 0 || !strings.Contains(out, "live "+step.want) {
			t.Fatalf("%s: exit %d, %q %s; want live %s", strings.Join(step.args, " "), code, out, stderr, step.want)
		}
		flipped := d.liveWritten(t)
		firsts := make([]time.Time, len(clients))
		var polls sync.WaitGroup
		for i, c := range clients {
			polls.Go(func() { firsts[i] = c.waitFor(step.want, started) })
		}
		polls.Wait()
		for i, c := range clients {
			if firsts[i].IsZero() {
				t.Fatalf("%s never answered from %s, 5s after %s:\n%s", c.name, step.want, step.args[1], serves[i].log.String())
			}
			t.Logf("%s to %s: %s answered from it %s after the CLI exited, %s after the flip",
				step.args[1], step.want, c.name, firsts[i].Sub(exited).Round(time.Millisecond), firsts[i].Sub(flipped).Round(time.Millisecond))
			if firsts[i].Sub(exited) > flipSLA {
				t.Errorf("%s to %s: %s answered from it %s after the CLI exited, want within %s", step.args[1], step.want, c.name, firsts[i].Sub(exited), flipSLA)
			}
		}
	}
	cancel()
	wg.Wait()
	for i, p := range serves {
		clients[i].report(t, "va", "vb", "va")
		if code := p.stop(t); code != 0 {
			t.Errorf("%s: exit after SIGTERM: got %d, want 0\n%s", clients[i].name, code, p.log.String())
		}
	}
}

// TestPebbleDiskHoldsTheVersionsKeptNotOnePerFlip: after N runs with release.keep: 1, the
// store's versions/NS/ holds the live version and the previous one, once no process
// holds the versions the flips retired.
//
// A lookup keeps a version open until it has gone unread for 30s (readerIdle), so right
// after N quick flips a serve that answered from each still holds them all: gc retires
// them at once and removes their rows once the holder lets go. The test proves both
// halves without waiting 30s: while serve A runs, every version directory on disk beyond
// live and previous is retired and held open by A (its /proc/PID/fd); when A stops,
// nothing holds them (their .readers lock is free); and after one more run, with a new
// serve B answering throughout, versions/NS/ holds exactly live and previous, and the
// whole store directory takes less than (kept versions + 1) x one version's size, where
// kept versions = 2 (live + release.keep), however many flips came before.
func TestPebbleDiskHoldsTheVersionsKeptNotOnePerFlip(t *testing.T) {
	const flips = 5
	d := newPebbleData(t, 200_000, 4, 25_000)
	keep1 := []string{"--set", "release.keep=1"}
	d.publish(t, "v0", 300, keep1...)
	a := d.serve(t)
	ca := newLookupClient(d, fmt.Sprintf("serve A (pid %d)", a.pid()), a.base)
	if ca.waitFor("v0", time.Time{}).IsZero() {
		t.Fatalf("serve A never answered from v0:\n%s", a.log.String())
	}
	version := func(i int) string { return fmt.Sprintf("v%d", i) }
	for i := 1; i <= flips; i++ {
		started := time.Now()
		exited := d.publish(t, version(i), uint64(300+i), keep1...)
		first := ca.waitFor(version(i), started)
		if first.IsZero() || first.Sub(exited) > flipSLA {
			t.Fatalf("serve A: first answer from %s at %s, the run exited at %s; want within %s",
				version(i), first.Format("15:04:05.000"), exited.Format("15:04:05.000"), flipSLA)
		}
		t.Logf("after run %s: version directories %v; serve A answered from it %s after the run exited",
			version(i), versionDirs(t, d), first.Sub(exited).Round(time.Millisecond))
	}
	aLive, aPrev := version(flips), version(flips-1)

	// While A runs: every extra directory is retired and held by A. A reader is closed
	// and its directory removed at any moment (A's idle close), so the check is retried.
	var onDisk, extra []string
	var held map[string]bool
	deadline := time.Now().Add(5 * time.Second)
	for {
		held = versionsHeldBy(t, a.pid(), d)
		onDisk, extra = versionDirs(t, d), nil
		var unaccounted []string
		for _, v := range onDisk {
			if v == aLive || v == aPrev {
				continue
			}
			extra = append(extra, v)
			if st := manifestState(t, d, v); st != writers.StateRetired || !held[v] {
				unaccounted = append(unaccounted, fmt.Sprintf("%s (%s, held by A: %v)", v, st, held[v]))
			}
		}
		if len(unaccounted) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versions on disk beyond live %s and previous %s that are not retired and held by serve A: %v (held: %v)", aLive, aPrev, unaccounted, held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("with serve A running: on disk %v: live %s, previous %s, and %v retired and held open by A", onDisk, aLive, aPrev, extra)

	if code := a.stop(t); code != 0 {
		t.Fatalf("serve A: exit after SIGTERM: got %d, want 0\n%s", code, a.log.String())
	}
	ca.report(t, "v0", "v1", "v2", "v3", "v4", "v5")
	for _, v := range extra {
		if !readersFree(t, d, v) {
			t.Errorf("retired version %s: its .readers lock is still held after serve A exited", v)
		}
	}

	b := d.serve(t)
	cb := newLookupClient(d, fmt.Sprintf("serve B (pid %d)", b.pid()), b.base)
	if cb.waitFor(aLive, time.Time{}).IsZero() {
		t.Fatalf("serve B never answered from %s:\n%s", aLive, b.log.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cb.run(ctx, 3) }()
	stopClient := sync.OnceFunc(func() { cancel(); <-done })
	defer stopClient()
	bLive := version(flips + 1)
	started := time.Now()
	exited := d.publish(t, bLive, uint64(300+flips+1), keep1...)
	if first := cb.waitFor(bLive, started); first.IsZero() || first.Sub(exited) > flipSLA {
		t.Fatalf("serve B: first answer from %s at %s, the run exited at %s; want within %s",
			bLive, first.Format("15:04:05.000"), exited.Format("15:04:05.000"), flipSLA)
	} else {
		t.Logf("serve B answered from %s %s after the run exited", bLive, first.Sub(exited).Round(time.Millisecond))
	}
	stopClient()
	cb.report(t, aLive, bLive)

	onDisk = versionDirs(t, d)
	if want := []string{aLive, bLive}; !slices.Equal(onDisk, want) {
		t.Errorf("versions/%s/ after %d flips: got %v, want %v (live and the one previous that release.keep: 1 keeps)", pebbleNS, flips+1, onDisk, want)
	}
	liveSize, _ := dirBytes(t, filepath.Join(d.storeDir, "versions", pebbleNS, bLive))
	prevSize, _ := dirBytes(t, filepath.Join(d.storeDir, "versions", pebbleNS, aLive))
	size := max(liveSize, prevSize)
	total, logs := dirBytes(t, d.storeDir)
	const kept = 2
	t.Logf("after %d flips: store %d bytes on disk (%d of them in Pebble logs), one version %d bytes (%.2f versions)",
		flips+1, total, logs, size, float64(total)/float64(size))
	if total >= (kept+1)*size {
		t.Errorf("store directory after %d flips: %d bytes, want less than (%d kept + 1) x %d bytes", flips+1, total, kept, size)
	}
	if code := b.stop(t); code != 0 {
		t.Errorf("serve B: exit after SIGTERM: got %d, want 0\n%s", code, b.log.String())
	}
}

// versionDirs lists the version directories of the namespace, sorted.
func versionDirs(t *testing.T, d *pebbleData) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.storeDir, "versions", pebbleNS))
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			vs = append(vs, e.Name())
		}
	}
	sort.Strings(vs)
	return vs
}

// versionsHeldBy lists the versions of the namespace that process pid has files open in:
// a reader holds the version's .readers lock file and its tables open.
func versionsHeldBy(t *testing.T, pid int, d *pebbleData) map[string]bool {
	t.Helper()
	root, err := filepath.EvalSymlinks(filepath.Join(d.storeDir, "versions", pebbleNS))
	if err != nil {
		t.Fatal(err)
	}
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err != nil {
			continue // closed since the listing
		}
		if rest, ok := strings.CutPrefix(target, root+string(filepath.Separator)); ok {
			v, _, _ := strings.Cut(rest, string(filepath.Separator))
			held[v] = true
		}
	}
	return held
}

// manifestState reads a version's state from its manifest file.
func manifestState(t *testing.T, d *pebbleData, version string) writers.State {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.storeDir, "catalog", pebbleNS, "manifests", version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m writers.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m.State
}

// readersFree reports whether this process can take a version's .readers lock
// exclusively, as gc must before it removes the rows: nobody holds the version (or it is
// gone).
func readersFree(t *testing.T, d *pebbleData, version string) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(d.storeDir, "versions", pebbleNS, version, ".readers"))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

// dirBytes is the disk the files under dir take (their allocated blocks: Pebble
// preallocates its logs), and how much of it their *.log files take.
func dirBytes(t *testing.T, dir string) (n, logs int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walking
		}
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				b := fi.Sys().(*syscall.Stat_t).Blocks * 512
				n += b
				if strings.HasSuffix(path, ".log") {
					logs += b
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, logs
}
