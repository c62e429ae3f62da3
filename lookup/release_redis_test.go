package lookup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/redistest"
)

// load sends batches of random keys to the replicas in turn until stopped, and counts
// the answers that were not 200 and the keys answered per arm.
type load struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	bad   atomic.Int64
	sent  atomic.Int64
	first atomic.Value // string: the first failure
}

func startLoad(t *testing.T, bases []string, keys []string) *load {
	l := &load{stop: make(chan struct{})}
	for w := range 4 {
		l.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				batch := make([]string, 40)
				for j := range batch {
					batch[j] = keys[rng.IntN(len(keys))]
				}
				body, _ := json.Marshal(map[string][]string{"keys": batch})
				resp, err := http.Post(bases[(w+i)%len(bases)]+"/v1/churn:batchGet", "application/json", strings.NewReader(string(body)))
				if err != nil {
					l.bad.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
					continue
				}
				if resp.StatusCode != 200 {
					l.bad.Add(1)
					l.first.CompareAndSwap(nil, resp.Status)
				}
				resp.Body.Close()
				l.sent.Add(int64(len(batch)))
			}
		})
	}
	return l
}

func (l *load) end(t *testing.T) {
	close(l.stop)
	l.wg.Wait()
	if n := l.bad.Load(); n > 0 {
		t.Errorf("%d failed batches under load, the first: %v", n, l.first.Load())
	}
}

// TestTwoReplicasJudgeACanaryOnRedis: two replicas share the load on one Redis. A
// candidate that lacks half the keys is aborted by the judge within a few intervals, the
// reason recorded and the live pointer untouched; a good candidate steps 10 -> 50 -> 100
// and is flipped live.
func TestTwoReplicasJudgeACanaryOnRedis(t *testing.T) {
	url := redistest.Standalone(t)
	s := openStore(t, url)
	ctx := context.Background()
	keys := keysOf(4000)
	putVersion(t, s, "churn", "v1", keys, liveValue)
	putVersion(t, s, "churn", "v2-half", keys, func(i int) (float64, bool) { v, _ := liveValue(i); return v, i%2 == 0 })
	putVersion(t, s, "churn", "v3-good", keys, candValue)
	if _, err := writers.Flip(ctx, s, "churn", "v1"); err != nil {
		t.Fatal(err)
	}
	cfg := "poll_interval: 200ms\n" + storeConfig(url)
	a, baseA := releaseService(t, cfg, 100*time.Millisecond, 300*time.Millisecond)
	b, baseB := releaseService(t, cfg, 100*time.Millisecond, 300*time.Millisecond)
	replicas := map[string]bool{lookup.Replica(a): true, lookup.Replica(b): true}
	bases := []string{baseA, baseB}
	const canary = `"mode":"canary","steps":[10,50,100],"interval":"1s","min_requests":50,"failure_limit":2`

	t.Run("a candidate that lacks half the keys is aborted", func(t *testing.T) {
		l := startLoad(t, bases, keys)
		defer l.end(t)
		rel := releaseAction(t, baseA, `{"action":"start",`+canary+`,"candidate":"v2-half"}`)
		var rec *writers.Release
		took := eventually(t, 20*time.Second, "the bad candidate aborted", func() bool {
			var err error
			rec, err = s.Release(ctx, "churn")
			return err == nil && rec != nil && rec.ID == rel.ID && rec.State == writers.ReleaseAborted
		})
		t.Logf("aborted %s after the start (%d keys sent): %s", took.Round(time.Millisecond), l.sent.Load(), rec.Reason)
		if took > 6*time.Second {
			t.Errorf("aborted after %s: want within a few 1s intervals", took)
		}
		if !strings.Contains(rec.Reason, "not_found_rate") || rec.WeightPercent != 0 {
			t.Errorf("abort: reason %q, weight %v; want a reason naming not_found_rate and weight 0", rec.Reason, rec.WeightPercent)
		}
		fails := 0
		for _, j := range rec.History {
			if j.Outcome == "fail" {
				fails++
				if j.Metric != "not_found_rate" || j.Value < 0.3 || j.Limit != 0.01 || !replicas[j.By] {
					t.Errorf("fail judgement %+v: want not_found_rate about 0.5 over the limit 0.01, by one of the replicas", j)
				}
			}
		}
		if fails != 2 {
			t.Errorf("history %+v: want 2 failed intervals", rec.History)
		}
		if live, _ := s.Live(ctx, "churn"); live != "v1" {
			t.Errorf("live pointer after the abort: got %s, want v1", live)
		}
		// Every replica answers every key from live again, within a poll.
		for _, base := range bases {
			eventually(t, 2*time.Second, "answers from live on "+base, func() bool {
				for _, a := range batchGet(t, base, keys[:200]).Answers {
					if a.Arm != "" || a.Version != "v1" {
						return false
					}
				}
				return true
			})
		}
	})

	t.Run("a good candidate steps 10, 50, 100 and is flipped live", func(t *testing.T) {
		l := startLoad(t, bases, keys)
		defer l.end(t)
		rel := releaseAction(t, baseB, `{"action":"start",`+canary+`,"candidate":"v3-good"}`)
		stepAt := map[float64]time.Duration{}
		start := time.Now()
		var rec *writers.Release
		took := eventually(t, 30*time.Second, "the good candidate promoted", func() bool {
			var err error
			rec, err = s.Release(ctx, "churn")
			if err != nil || rec == nil || rec.ID != rel.ID {
				return false
			}
			if _, ok := stepAt[rec.WeightPercent]; !ok {
				stepAt[rec.WeightPercent] = time.Since(start)
			}
			if rec.State == writers.ReleaseAborted {
				t.Fatalf("the good candidate was aborted: %s; history %+v", rec.Reason, rec.History)
			}
			return rec.State == writers.ReleasePromoted
		})
		if live, _ := s.Live(ctx, "churn"); live != "v3-good" {
			t.Fatalf("live pointer after the promotion: got %s, want v3-good", live)
		}
		var trail []string
		for _, j := range rec.History {
			switch j.Outcome {
			case "pass", "step", "promote", "fail":
				trail = append(trail, fmt.Sprintf("%s@%g", j.Outcome, j.Weight))
			}
		}
		t.Logf("promoted %s after the start (weights seen at %v; %d keys sent); %s", took.Round(time.Millisecond), stepAt, l.sent.Load(), strings.Join(trail, " "))
		if got, want := strings.Join(trail, " "), "pass@10 step@50 pass@50 step@100 pass@100 promote@100"; got != want {
			t.Errorf("history: got %s, want %s", got, want)
		}
		for _, base := range bases {
			eventually(t, 2*time.Second, "answers from the new live version on "+base, func() bool {
				for _, a := range batchGet(t, base, keys[:200]).Answers {
					if a.Arm != "" || a.Version != "v3-good" {
						return false
					}
				}
				return true
			})
		}
	})
}
