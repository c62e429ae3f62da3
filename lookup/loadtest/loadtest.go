// Package loadtest drives a running lookup service with concurrent single and batch
// lookups while a flipper moves the live pointer back and forth, and reports what the
// done-criteria of the service ask for: errors, batch answers that mixed versions, and
// latency percentiles. It is used by `make loadtest` (cmd/loadtest) and by a short test
// in package lookup. It only reads over HTTP; it never touches a store itself.
package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Config is one load run.
type Config struct {
	BaseURL   string // http://127.0.0.1:PORT
	Namespace string
	Keys      []string // keys that exist in every version flipped between
	Clients   int      // concurrent clients
	BatchSize int      // keys per batchGet; every BatchEvery-th request is a batch
	// BatchEvery: 1 makes every request a batch, 0 none.
	BatchEvery  int
	Duration    time.Duration // the run stops after it...
	MaxRequests int           // ...or after this many requests (0: no bound)
	// Flips are spread evenly over Duration; the load goes on until the last one is
	// done, so each flip happens under load however slow flips are.
	Flips int
	// Flip moves the live pointer; called Flips times from one goroutine.
	Flip func(ctx context.Context, i int) error
}

// Report is what a run measured.
type Report struct {
	Requests, Batches int
	Errors            int      // non-2xx answers, transport errors and answers with an error for an existing key
	Mixed             int      // batch answers whose live answers name more than one version
	Flips             int      // flips done
	FlipErrors        int      // flips that failed
	Samples           []string // the first few errors
	Elapsed           time.Duration
	P50, P99, P999    time.Duration
	Max               time.Duration
}

// Throughput is requests per second.
func (r Report) Throughput() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

func (r Report) String() string {
	return fmt.Sprintf("requests %d (%d batches) in %s = %.0f req/s; errors %d; mixed-version batches %d; flips %d (failed %d); latency p50 %s p99 %s p999 %s max %s",
		r.Requests, r.Batches, r.Elapsed.Round(time.Millisecond), r.Throughput(), r.Errors, r.Mixed, r.Flips, r.FlipErrors,
		r.P50, r.P99, r.P999, r.Max)
}

type answer struct {
	Version string          `json:"version"`
	Arm     string          `json:"arm"` // while a release routes: live or candidate
	Error   json.RawMessage `json:"error"`
}

type batchAnswer struct {
	Version string   `json:"version"`
	Answers []answer `json:"answers"`
}

// Run runs the load and returns its report. It stops by itself after Duration (and the
// last flip) or MaxRequests, or when ctx is done.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Clients <= 0 || len(cfg.Keys) == 0 || cfg.Duration <= 0 {
		return Report{}, fmt.Errorf("loadtest: need clients, keys and a duration")
	}
	flipCtx := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	flipsDone := make(chan struct{})
	go func() {
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
		}
		select {
		case <-flipsDone:
		case <-ctx.Done():
		}
		cancel()
	}()
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients * 2},
	}
	defer client.CloseIdleConnections()

	var (
		mu     sync.Mutex
		rep    Report
		lat    []time.Duration
		issued int
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		rep.Errors++
		if len(rep.Samples) < 5 {
			rep.Samples = append(rep.Samples, fmt.Sprintf(format, args...))
		}
	}
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if cfg.MaxRequests > 0 && issued >= cfg.MaxRequests {
			return false
		}
		issued++
		return true
	}

	var wg sync.WaitGroup
	if cfg.Flips > 0 && cfg.Flip != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(flipsDone)
			ctx := flipCtx
			every := cfg.Duration / time.Duration(cfg.Flips+1)
			t := time.NewTicker(every)
			defer t.Stop()
			for i := range cfg.Flips {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				err := cfg.Flip(ctx, i)
				mu.Lock()
				if err != nil {
					rep.FlipErrors++
					if len(rep.Samples) < 5 {
						rep.Samples = append(rep.Samples, "flip: "+err.Error())
					}
				} else {
					rep.Flips++
				}
				mu.Unlock()
			}
		}()
	} else {
		close(flipsDone)
	}
	start := time.Now()
	for c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			var mine []time.Duration
			batches := 0
			for n := 0; ctx.Err() == nil && take(); n++ {
				isBatch := cfg.BatchEvery > 0 && n%cfg.BatchEvery == 0
				t0 := time.Now()
				var err error
				if isBatch {
					batches++
					err = doBatch(ctx, client, cfg, rng, &mu, &rep)
				} else {
					err = doGet(ctx, client, cfg, cfg.Keys[rng.IntN(len(cfg.Keys))])
				}
				if ctx.Err() != nil {
					break // the run ended mid-request: not an answer
				}
				mine = append(mine, time.Since(t0))
				if err != nil {
					fail("%v", err)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			rep.Batches += batches
			mu.Unlock()
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	rep.Requests = len(lat)
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	rep.P50, rep.P99, rep.P999 = pct(0.50), pct(0.99), pct(0.999)
	if len(lat) > 0 {
		rep.Max = lat[len(lat)-1]
	}
	return rep, nil
}

func doGet(ctx context.Context, c *http.Client, cfg Config, key string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.BaseURL+"/v1/"+cfg.Namespace+"/"+key, nil)
	_, err := call(c, req, "GET "+key)
	return err
}

// call sends req and returns the body of a 200 answer; any other status is an error
// carrying what the service said.
func call(c *http.Client, req *http.Request, what string) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", what, resp.StatusCode, bytes.TrimSpace(body))
	}
	return body, nil
}

func doBatch(ctx context.Context, c *http.Client, cfg Config, rng *rand.Rand, mu *sync.Mutex, rep *Report) error {
	keys := make([]string, cfg.BatchSize)
	for i := range keys {
		keys[i] = cfg.Keys[rng.IntN(len(cfg.Keys))]
	}
	b, _ := json.Marshal(map[string][]string{"keys": keys})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.BaseURL+"/v1/"+cfg.Namespace+":batchGet", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	body, err := call(c, req, "batchGet")
	if err != nil {
		return err
	}
	var ba batchAnswer
	if err := json.Unmarshal(body, &ba); err != nil {
		return fmt.Errorf("batchGet: %v", err)
	}
	for _, a := range ba.Answers {
		// The batch's version is the live one; while a release routes, an answer of the
		// candidate arm names the candidate, and only a live answer must agree.
		if a.Arm != "candidate" && a.Version != ba.Version {
			mu.Lock()
			rep.Mixed++
			mu.Unlock()
			break
		}
	}
	for i, a := range ba.Answers {
		if a.Error != nil {
			return fmt.Errorf("batchGet: key %s: %s", keys[i], a.Error)
		}
	}
	if len(ba.Answers) != len(keys) {
		return fmt.Errorf("batchGet: %d answers for %d keys", len(ba.Answers), len(keys))
	}
	return nil
}
