package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/staticref/staticref/lookup"
	pb "github.com/staticref/staticref/lookup/grpcapi/staticref/v1"
)

// The baselines section: serve beside what bounds it, in one run, on one machine.
//
//   - redis-benchmark GET with -clients connections against the same redis-server (40-byte
//     values, random keys of a keyspace it SET first): the store's own ceiling;
//   - a bare net/http handler answering the same bytes, headers included, as serve's
//     answer to one key, in an http.Server with serve's timeouts: the HTTP stack's
//     ceiling;
//   - a net/http handler that answers each key from a Go map of every key's answer, as
//     serve rendered it: what a lookup of random keys costs in the same stack (its
//     memory is touched at random, not one answer's bytes kept in cache), the ceiling
//     of any cache;
//   - the same handler reading each key from the store first (writers.Store.Get, one
//     Redis round trip a request, no coalescing): what a miss costs a service that does
//     the obvious thing;
//   - serve with every key a cache hit (the cache warmed by batchGets of every key);
//   - serve with the cache off (cache_bytes: off): every request a store round trip;
//   - gRPC Get of the same keys against the warm service.
//
// The HTTP rows are driven by wrk (C, one process of its own, -clients connections, a
// random existing key per request from a Lua script); the gRPC row by this binary
// started again as a child (-grpc-load), so that no load generator shares the server's
// Go runtime. Each run lasts -duration. The table goes to stdout and, with -out, to
// OUT/baselines.txt beside a plot, OUT/baselines.svg.

var (
	baselines  = flag.Bool("baselines", true, "run the baselines section (redis-benchmark, bare handler, serve hits and misses, gRPC)")
	outDir     = flag.String("out", "", "write the baselines table and plot into this folder (baselines.txt, baselines.svg)")
	cpuProfile = flag.String("cpuprofile", "", "write CPU profiles of the process during the first run of the bare handler and of serve into this folder (bare.pprof, hits.pprof, misses.pprof)")
	repeat     = flag.Int("repeat", 3, "runs of each HTTP row, interleaved; the table shows each row's best run by rps")
	wrkThreads = flag.Int("wrk-threads", 2, "wrk threads (-t)")

	// The child that drives gRPC.
	grpcLoad     = flag.String("grpc-load", "", "internal: drive gRPC Get at this address and print the result as JSON")
	grpcKeysFile = flag.String("grpc-keys", "", "internal: the keys file of -grpc-load")
)

func init() {
	sections = append(sections, section{"baselines", func() bool { return *baselines }, runBaselines})
}

// result is one row of the table.
type result struct {
	Name           string
	RPS            float64
	P50, P99, P999 time.Duration
	Requests       int
	Errors         int
	Note           string
}

func (r result) row() string {
	ms := func(d time.Duration) string {
		if d == 0 {
			return "—"
		}
		return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s |", r.Name, thousands(r.RPS), ms(r.P50), ms(r.P99), ms(r.P999), r.Note)
}

func thousands(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func runBaselines(e *env) error {
	for _, tool := range []string{"wrk", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not on PATH: apt-get install -y wrk redis-tools (or redis-server)", tool)
		}
	}
	keysFile := filepath.Join(e.dir, "keys.txt")
	if err := os.WriteFile(keysFile, []byte(strings.Join(e.keys, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	script := filepath.Join(e.dir, "keys.lua")
	if err := os.WriteFile(script, []byte(wrkScript(keysFile)), 0o644); err != nil {
		return err
	}

	// The warm service, with gRPC, and the one without a cache.
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hits, stopHits, err := e.serve(&lookup.Config{Namespaces: map[string]*lookup.NamespaceConfig{"churn": {Store: e.url}}}, gln)
	if err != nil {
		return err
	}
	defer stopHits()
	misses, stopMisses, err := e.serve(&lookup.Config{CacheBytes: -1, Namespaces: map[string]*lookup.NamespaceConfig{"churn": {Store: e.url}}}, nil)
	if err != nil {
		return err
	}
	defer stopMisses()
	if err := warm(hits, e.keys); err != nil {
		return err
	}
	body, header, err := sample(hits, e.keys[0])
	if err != nil {
		return err
	}
	bare, stopBare, err := bareHandler(func(string) []byte { return body }, header)
	if err != nil {
		return err
	}
	defer stopBare()
	answers := make(map[string][]byte, len(e.keys))
	for _, k := range e.keys {
		if answers["/v1/churn/"+k], _, err = sample(hits, k); err != nil {
			return err
		}
	}
	mapped, stopMapped, err := bareHandler(func(path string) []byte { return answers[path] }, header)
	if err != nil {
		return err
	}
	defer stopMapped()
	live, err := e.store.Live(e.ctx, "churn")
	if err != nil {
		return err
	}
	direct, stopDirect, err := bareHandler(func(path string) []byte {
		key := strings.TrimPrefix(path, "/v1/churn/")
		if _, err := e.store.Get(e.ctx, "churn", live, []byte(key)); err != nil {
			return nil // a 500: wrk counts it, and the run fails
		}
		return answers[path]
	}, header)
	if err != nil {
		return err
	}
	defer stopDirect()

	fmt.Printf("\nbaselines: %d clients, %s per run, %d existing keys at random, GOMAXPROCS %d, %d CPUs\n",
		*clients, *dur, len(e.keys), runtime.GOMAXPROCS(0), runtime.NumCPU())
	var rs []result
	r, err := redisBenchmark(e)
	if err != nil {
		return err
	}
	rs = append(rs, r)
	runs := []struct {
		name, url, note, profile string
	}{
		{"bare net/http handler, the same bytes", bare + "/v1/churn/", fmt.Sprintf("%d-byte answer", len(body)), "bare.pprof"},
		{"net/http handler, a map of every answer", mapped + "/v1/churn/", "each key's own answer", "map.pprof"},
		{"serve, cache hits (warm)", hits + "/v1/churn/", "every key cached", "hits.pprof"},
		{"net/http handler, a store Get per request", direct + "/v1/churn/", "one Redis round trip each, not coalesced", ""},
		{"serve, cache misses (cache off)", misses + "/v1/churn/", "a store read per request, coalesced", "misses.pprof"},
	}
	// The machine's other load comes and goes: the rows are run in turn, -repeat times,
	// and each shows its best run (the one least disturbed; its own p99 with it), with
	// its median beside it.
	got := make([][]result, len(runs))
	for i := range max(1, *repeat) {
		for j, run := range runs {
			stop := func() {}
			if run.profile != "" && *cpuProfile != "" && i == 0 {
				if stop, err = startProfile(filepath.Join(*cpuProfile, run.profile)); err != nil {
					return err
				}
			}
			r, err := runWrk(e.ctx, script, run.url)
			stop()
			if err != nil {
				return fmt.Errorf("%s: %w", run.name, err)
			}
			r.Name, r.Note = run.name, run.note
			got[j] = append(got[j], r)
		}
	}
	var medians []result
	for _, g := range got {
		slices.SortFunc(g, func(a, b result) int { return cmp.Compare(a.RPS, b.RPS) })
		best := g[len(g)-1]
		medians = append(medians, g[len(g)/2])
		if len(g) > 1 {
			best.Note += fmt.Sprintf("; best of %d, median %s rps, p99 %.2f ms", len(g), thousands(g[len(g)/2].RPS),
				float64(g[len(g)/2].P99)/float64(time.Millisecond))
		}
		for _, r := range g {
			best.Errors = max(best.Errors, r.Errors)
		}
		rs = append(rs, best)
	}
	r, err = runGRPCChild(e.ctx, gln.Addr().String(), keysFile)
	if err != nil {
		return fmt.Errorf("grpc: %w", err)
	}
	rs = append(rs, r)

	var b strings.Builder
	fmt.Fprintf(&b, "| %d clients, %s each | rps | p50 | p99 | p999 | |\n|---|---|---|---|---|---|\n", *clients, *dur)
	for _, r := range rs {
		fmt.Fprintln(&b, r.row())
	}
	var bad []string
	for _, r := range rs {
		if r.Errors > 0 {
			bad = append(bad, fmt.Sprintf("%s: %d errors", r.Name, r.Errors))
		}
	}
	b.WriteString("\n")
	bareR, mapR, hitR, directR, missR := rs[1], rs[2], rs[3], rs[4], rs[5]
	target := func(ok bool, format string, args ...any) {
		v := "PASS"
		if !ok {
			v = "FAIL"
		}
		fmt.Fprintf(&b, "%s "+format+"\n", append([]any{v}, args...)...)
	}
	target(hitR.RPS >= 0.9*bareR.RPS, "cache hits: %.2fx the bare handler's rps; target >= 0.9x", hitR.RPS/bareR.RPS)
	target(missR.RPS >= 0.7*bareR.RPS, "cache misses: %.2fx the bare handler's rps; target >= 0.7x", missR.RPS/bareR.RPS)
	target(hitR.P99 <= bareR.P99*3/2, "cache hits: p99 %.2fx the bare handler's; target <= 1.5x", float64(hitR.P99)/float64(bareR.P99))
	target(missR.P99 <= bareR.P99*3/2, "cache misses: p99 %.2fx the bare handler's; target <= 1.5x", float64(missR.P99)/float64(bareR.P99))
	fmt.Fprintf(&b, "(medians of the %d runs: cache hits %.2fx, cache misses %.2fx the bare handler's rps; p99 %.2fx and %.2fx)\n",
		len(got[0]), medians[2].RPS/medians[0].RPS, medians[4].RPS/medians[0].RPS,
		float64(medians[2].P99)/float64(medians[0].P99), float64(medians[4].P99)/float64(medians[0].P99))
	fmt.Fprintf(&b, "(for scale: the map of every answer %.2fx, a store Get per request %.2fx, gRPC Get %.2fx, redis-benchmark GET %.2fx the bare handler's rps; cache hits %.2fx the map's, cache misses %.2fx the store Get handler's)\n",
		mapR.RPS/bareR.RPS, directR.RPS/bareR.RPS, rs[6].RPS/bareR.RPS, rs[0].RPS/bareR.RPS, hitR.RPS/mapR.RPS, missR.RPS/directR.RPS)
	fmt.Print(b.String())
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			return err
		}
		head := fmt.Sprintf("make loadtest, %s, %s, %d CPUs (GOMAXPROCS %d), load average %s\n\n",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), runtime.NumCPU(), runtime.GOMAXPROCS(0), loadAvg())
		if err := os.WriteFile(filepath.Join(*outDir, "baselines.txt"), []byte(head+b.String()), 0o644); err != nil {
			return err
		}
		if err := plotBaselines(filepath.Join(*outDir, "baselines.svg"), rs); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		fmt.Printf("wrote %s and %s\n", filepath.Join(*outDir, "baselines.txt"), filepath.Join(*outDir, "baselines.svg"))
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// warm asks every key once, by batchGets of 1000 (the default max_batch).
func warm(base string, keys []string) error {
	for lo := 0; lo < len(keys); lo += 1000 {
		b, _ := json.Marshal(map[string][]string{"keys": keys[lo:min(lo+1000, len(keys))]})
		resp, err := http.Post(base+"/v1/churn:batchGet", "application/json", strings.NewReader(string(b)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("warm the cache: batchGet answered %d", resp.StatusCode)
		}
	}
	return nil
}

// sample is serve's answer to key: its body and headers.
func sample(base, key string) ([]byte, http.Header, error) {
	resp, err := http.Get(base + "/v1/churn/" + key)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, nil, fmt.Errorf("sample answer: %d %s %v", resp.StatusCode, body, err)
	}
	h := http.Header{}
	for _, k := range []string{"Content-Type", lookup.VersionHeader} {
		h[k] = resp.Header[k]
	}
	return body, h, nil
}

// bareHandler serves body(path) with header to every request, in an http.Server set up
// as serve's (lookup.NewHTTPServer: the same timeouts): what net/http alone costs. A nil
// body is a 500, which wrk counts as an error.
func bareHandler(body func(path string) []byte, header http.Header) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := lookup.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := body(r.URL.Path)
		if b == nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		h := w.Header()
		for k, v := range header {
			h[k] = v
		}
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// wrkScript asks a random key of keysFile per request and prints the result in one line.
func wrkScript(keysFile string) string {
	return `local keys = {}
local n = 0
local path = nil

init = function(args)
  path = wrk.path
  for line in io.lines("` + keysFile + `") do
    n = n + 1
    keys[n] = line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  return wrk.format("GET", path .. keys[math.random(n)])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout, e.status))
end
`
}

var wrkResult = regexp.MustCompile(`RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)`)

// runWrk drives url (a path prefix the script appends a key to) for -duration.
func runWrk(ctx context.Context, script, url string) (result, error) {
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(*wrkThreads), "-c", strconv.Itoa(*clients),
		"-d", fmt.Sprintf("%ds", int(dur.Seconds())), "--timeout", "5s", "-s", script, url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	m := wrkResult.FindStringSubmatch(string(out))
	if m == nil {
		return result{}, fmt.Errorf("wrk printed no result:\n%s", out)
	}
	n := make([]int64, len(m)-1)
	for i := range n {
		n[i], _ = strconv.ParseInt(m[i+1], 10, 64)
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return result{RPS: float64(n[0]) / (float64(n[1]) / 1e6), Requests: int(n[0]), P50: us(n[2]), P99: us(n[3]), P999: us(n[4]),
		Errors: int(n[5] + n[6])}, nil
}

var (
	rbThroughput = regexp.MustCompile(`throughput summary: ([0-9.]+) requests per second`)
	rbSummary    = regexp.MustCompile(`(?m)avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)`)
	rbPercentile = regexp.MustCompile(`(?m)^([0-9.]+)% <= ([0-9.]+) milliseconds`)
)

// redisBenchmark is redis-benchmark GET against the same server, of 40-byte values it
// SET first under random keys.
func redisBenchmark(e *env) (result, error) {
	port := strconv.Itoa(e.redisPort)
	// redis-benchmark has no time bound, only -n: about -duration's worth at 60k GET/s,
	// and a deadline of three times that.
	n := strconv.Itoa(max(100000, int(60000*dur.Seconds())))
	if out, err := exec.CommandContext(e.ctx, "redis-benchmark", "-p", port, "-t", "set", "-c", strconv.Itoa(*clients),
		"-n", "100000", "-d", "40", "-r", "100000", "-q").CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("redis-benchmark SET: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 3*(*dur)+10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-p", port, "-t", "get", "-c", strconv.Itoa(*clients),
		"-n", n, "-d", "40", "-r", "100000", "--precision", "3").CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark GET: %v\n%s", err, out)
	}
	text := strings.ReplaceAll(string(out), "\r", "\n")
	r := result{Name: "redis-benchmark GET, same server", Note: "40-byte values"}
	m := rbThroughput.FindStringSubmatch(text)
	s := rbSummary.FindStringSubmatch(text)
	if m == nil || s == nil {
		return result{}, fmt.Errorf("redis-benchmark printed no summary:\n%s", text)
	}
	ms := func(v string) time.Duration {
		f, _ := strconv.ParseFloat(v, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	r.P50, r.P99 = ms(s[3]), ms(s[5])
	for _, p := range rbPercentile.FindAllStringSubmatch(text, -1) {
		if pct, _ := strconv.ParseFloat(p[1], 64); pct >= 99.9 {
			r.P999 = ms(p[2])
			break
		}
	}
	return r, nil
}

func startProfile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// runGRPCChild runs this binary again as the gRPC load generator and reads its result.
func runGRPCChild(ctx context.Context, addr, keysFile string) (result, error) {
	exe, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, *dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, exe, "-grpc-load", addr, "-grpc-keys", keysFile,
		"-duration", dur.String(), "-clients", strconv.Itoa(*clients))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("gRPC load child: %v", err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return result{}, fmt.Errorf("gRPC load child printed %q: %v", out, err)
	}
	return r, nil
}

// grpcLoadChild is the child's whole life: with -grpc-load it drives Get with -clients
// concurrent callers over a few connections for -duration, prints a result as JSON and
// reports true.
func grpcLoadChild() bool {
	if *grpcLoad == "" {
		return false
	}
	r, err := driveGRPC(*grpcLoad, *grpcKeysFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest -grpc-load:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return true
}

func driveGRPC(addr, keysFile string) (result, error) {
	f, err := os.Open(keysFile)
	if err != nil {
		return result{}, err
	}
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		keys = append(keys, sc.Text())
	}
	f.Close()
	if len(keys) == 0 {
		return result{}, errors.New("no keys")
	}
	const conns = 4
	var clients_ []pb.LookupClient
	for range conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		clients_ = append(clients_, pb.NewLookupClient(c))
	}
	end := time.Now().Add(*dur)
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		wg     sync.WaitGroup
		passed = time.Now()
	)
	for c := range *clients {
		wg.Go(func() {
			cl := clients_[c%conns]
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			var mine []time.Duration
			bad := 0
			for time.Now().Before(end) {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cl.Get(ctx, &pb.GetRequest{Namespace: "churn", Key: keys[rng.IntN(len(keys))]})
				cancel()
				mine = append(mine, time.Since(t0))
				if err != nil {
					if bad++; bad == 1 {
						fmt.Fprintln(os.Stderr, "loadtest -grpc-load: Get:", err)
					}
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(passed)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return result{Name: "gRPC Get, cache hits", RPS: float64(len(lat)) / elapsed.Seconds(), Requests: len(lat),
		P50: pct(0.5), P99: pct(0.99), P999: pct(0.999), Errors: errs,
		Note: fmt.Sprintf("Go client in a child process, %d connections", conns)}, nil
}

// machine names the CPU, from /proc/cpuinfo.
func machine() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOOS + "/" + runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOOS + "/" + runtime.GOARCH
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
