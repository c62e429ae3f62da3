package lookup

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strconv"

	"github.com/staticref/staticref/writers/dist"
)

// Shadow. A shadow answers every request from live; for a sample of them (the record's
// sample_percent), once the answer is written, the key goes on the namespace's bounded
// queue with the value live answered, and a fixed pool of workers reads the key from the
// candidate (through the cache, as any lookup) and compares: compared or missing, the sum
// of |Δ| of the first output's first value in micro-units, and a histogram of the
// candidate's values over the live version's deciles. A full queue drops the key, counted
// as dropped: the request never waits for the comparison. The counts are flushed to the
// store like a canary's (interval 0), so GET :release reports the mean |Δ| and the PSI
// over every replica. Keys that live lacks are not sampled: there is nothing to compare.

const (
	shadowQueue   = 1024
	shadowWorkers = 2
)

// shadowJob is one sampled key: the view it was answered under and live's value.
type shadowJob struct {
	v    *releaseView
	key  string
	live json.RawMessage
}

// shadowOffer queues a sampled key for comparison, or drops it when the queue is full.
// It keeps a copy of live: the caller's may be in its request's pooled scratch.
func (s *Service) shadowOffer(n *namespace, v *releaseView, key string, live json.RawMessage) {
	v.c.shadow.sampled.Add(1)
	select {
	case n.shadowQ <- shadowJob{v: v, key: key, live: bytes.Clone(live)}:
	default:
		v.c.shadow.dropped.Add(1)
		s.met.shadowDropped.WithLabelValues(n.name).Inc()
	}
}

// shadowWorker compares queued keys until ctx is done.
func (s *Service) shadowWorker(ctx context.Context, n *namespace) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-n.shadowQ:
			s.compare(ctx, n, j)
		}
	}
}

// dropShadowQueue counts what is left on the queue at shutdown as dropped.
func (n *namespace) dropShadowQueue() {
	for {
		select {
		case j := <-n.shadowQ:
			j.v.c.shadow.dropped.Add(1)
		default:
			return
		}
	}
}

func (s *Service) compare(ctx context.Context, n *namespace, j shadowJob) {
	sh := &j.v.c.shadow
	sc := getScratch()
	defer putScratch(sc)
	e, err := s.precomputed(ctx, n, j.v.cand, j.key, sc)
	v := e.value
	switch {
	case err != nil:
		sh.dropped.Add(1)
		return
	case !e.found:
		sh.missing.Add(1)
		return
	}
	lv, lok := firstValue(j.live)
	cv, cok := firstValue(v)
	if !lok || !cok {
		sh.dropped.Add(1) // a null output: nothing to compare
		return
	}
	d := math.Abs(cv - lv)
	sh.compared.Add(1)
	sh.absDiffMicro.Add(int64(math.Round(d * 1e6)))
	s.met.shadowAbsDiff.WithLabelValues(n.name).Observe(d)
	if j.v.edges != nil {
		if b := dist.Bin(j.v.edges, cv); b >= 0 {
			sh.hist[b].Add(1)
		}
	}
}

// firstValue is the first value of the first output of a value object as the API
// answers it ({"score":0.47,...} or {"scores":[0.1,0.9],...}), read without decoding the
// rest; ok is false for a null value or anything else.
func firstValue(v []byte) (float64, bool) {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return 0, false
	}
	i = skipSpace(v, i+1)
	if i >= len(v) || v[i] != '"' {
		return 0, false
	}
	for i++; i < len(v) && v[i] != '"'; i++ { // the output's name
		if v[i] == '\\' {
			i++
		}
	}
	i = skipSpace(v, i+1)
	if i >= len(v) || v[i] != ':' {
		return 0, false
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == '[' {
		i = skipSpace(v, i+1)
	}
	j := i
	for j < len(v) && (v[j] == '-' || v[j] == '+' || v[j] == '.' || v[j] == 'e' || v[j] == 'E' || (v[j] >= '0' && v[j] <= '9')) {
		j++
	}
	if j == i {
		return 0, false
	}
	x, err := strconv.ParseFloat(string(v[i:j]), 64)
	return x, err == nil
}

func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}
