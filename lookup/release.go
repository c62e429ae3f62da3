package lookup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/axiomhq/hyperloglog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// Releases on read (docs/lookup.md, "Releases"; DESIGN.md, "Release strategies on read").
//
// The triple. A request must see one consistent (live version, release, candidate
// version): an answer routed by a weight that a later record changed, or from a
// candidate that the record no longer names, would be neither the old rollout nor the
// new one. So the release is part of the snapshot: every refresh reads the live pointer
// and then the namespace's release record, and for a release that routes (a canary or
// A/B test, running or paused) or a running shadow it also builds a snapshot of the
// candidate version (its manifest and its cold-start defaults), all before the one
// pointer store that publishes them together. A request loads that pointer once, as it
// always did, and everything it does (the arm, the version, the cache key, the defaults,
// the counting) follows from what it loaded. A record is rebuilt into a new view only
// when its revision, or the live version, changed; the candidate's snapshot is reused
// while the record names the same candidate (a complete version never changes).
//
// A record whose live version is not the one being served routes nothing: a flip or
// rollback by hand ends the release (writers.endRelease), and until that bookkeeping
// lands, or if it failed, the pointer is the truth.
//
// Routing costs a request that no release routes nothing but a nil check. One that a
// release routes hashes its unit (SHA-256 over a stack buffer, no allocation) and
// compares the bucket with the weight; the arm's version then keys the cache as the live
// one did, so the immutable-version cache keeps working for both arms.
//
// Counting. Each replica counts, per arm, requests, keys the arm's version lacks
// (not_found, whatever fallback then answered), server-side errors and a histogram of
// the answers' first value over the live version's deciles, in atomic counters of the
// view's releaseCounters: a request adds to them and never waits. A background loop of
// Run (releases) swaps them to zero every flush interval (1s) and adds them to the
// store's counters of the current judgement interval with Store.AddCounts; a failed add
// puts them back, to be added with the next. Counts are attributed to the interval in
// which they are flushed, so up to one flush interval of counts lands in the next one;
// the judge waits a grace of two flush intervals past an interval's end before reading
// it, so every replica has flushed. At shutdown the loop waits for the HTTP server to
// finish its requests and flushes once more.

// Arms, as indexes of the counters.
const (
	armLive      = 0
	armCandidate = 1
)

var armNames = [2]string{writers.ArmLive, writers.ArmCandidate}

// histBins is the number of bins of the answer histograms: the live version's deciles.
const histBins = 10

// Release timing defaults; tests shorten them (export_test.go).
const (
	defaultFlushEvery  = time.Second
	defaultReportEvery = 5 * time.Second
)

// releaseTiming is the clock and the periods of the release loop.
type releaseTiming struct {
	now    func() time.Time
	flush  time.Duration // how often counts are added to the store (and the judge looks)
	grace  time.Duration // how long past an interval's end the judge waits for flushes
	report time.Duration // how often the shadow and A/B gauges are computed from the store
}

func defaultReleaseTiming() releaseTiming {
	return releaseTiming{now: time.Now, flush: defaultFlushEvery, grace: 2*defaultFlushEvery + 250*time.Millisecond, report: defaultReportEvery}
}

// releaseView is a release record as one snapshot serves it.
type releaseView struct {
	rec  *writers.Release
	live string // the live version the view was built against

	routing bool      // a canary or A/B test that decides the arm
	ab      bool      // routing as an A/B test: distinct units are counted
	shadow  bool      // a running shadow: a sample of requests also read the candidate
	cand    *Snapshot // the candidate, prepared; nil unless routing or shadow
	// limit: the candidate answers a unit whose bucket is below it (weight × Buckets/100,
	// compared as writers.Release.Arm compares).
	limit float64
	// sample: a shadow samples a request when a uniform draw below 10000 is below it.
	sample uint64
	edges  []float64 // the live version's deciles of its first output; nil: no histogram
	shares []float64 // the live version's own shares of the bins of edges (PSI's expected)
	c      *releaseCounters

	// broken: the candidate could not be read; the next refresh builds the view again.
	broken bool

	answers [2]prometheus.Counter // staticref_release_answers_total per arm
}

// bucketOf is writers.Bucket(salt, unit) without allocating for units of ordinary
// length, and the next 8 bytes of the same hash, for the distinct-unit sketches.
func bucketOf(salt, unit string) (bucket uint32, h uint64) {
	var buf [192]byte
	var sum [sha256.Size]byte
	if n := len(salt) + 1 + len(unit); n <= len(buf) {
		b := append(buf[:0], salt...)
		b = append(b, ':')
		b = append(b, unit...)
		sum = sha256.Sum256(b)
	} else {
		sum = sha256.Sum256([]byte(salt + ":" + unit))
	}
	return binary.BigEndian.Uint32(sum[:4]) % writers.Buckets, binary.BigEndian.Uint64(sum[4:12])
}

// route returns the snapshot that answers unit under v, the arm, and the unit's hash.
func (v *releaseView) route(live *Snapshot, unit string) (*Snapshot, int, uint64) {
	b, h := bucketOf(v.rec.Salt, unit)
	if float64(b) < v.limit {
		return v.cand, armCandidate, h
	}
	return live, armLive, h
}

// count records one key's answer on arm: missing when the arm's version lacks the key,
// failed when a server-side error answered, else value is the answer's value.
func (v *releaseView) count(arm int, missing, failed bool, value json.RawMessage) {
	a := &v.c.arms[arm]
	a.requests.Add(1)
	v.answers[arm].Inc()
	switch {
	case failed:
		a.errors.Add(1)
	case missing:
		a.notFound.Add(1)
	case v.edges != nil:
		if x, ok := firstValue(value); ok {
			if b := dist.Bin(v.edges, x); b >= 0 {
				a.hist[b].Add(1)
			}
		}
	}
}

// sampled draws whether a shadow reads the candidate for one request.
func (v *releaseView) sampled() bool {
	return v.sample > 0 && rand.Uint64N(10000) < v.sample
}

// failedCode reports whether an error answer counts as an error of the arm: the server
// could not answer (not a bad request, and not a key the version lacks).
func failedCode(code string) bool {
	switch code {
	case CodeUnavailable, CodeInternal, CodeStale:
		return true
	}
	return false
}

// armCounts are one arm's counters.
type armCounts struct {
	requests, notFound, errors atomic.Int64
	hist                       [histBins]atomic.Int64
}

// shadowCounts are a shadow's counters. sampled counts the keys sent to the comparison
// (compared + missing + dropped once they are all done).
type shadowCounts struct {
	sampled, compared, missing, dropped, absDiffMicro atomic.Int64
	hist                                              [histBins]atomic.Int64
}

// unitSketch is one arm's distinct units, a HyperLogLog sketch behind a mutex (an insert
// is a few nanoseconds under it).
type unitSketch struct {
	mu    sync.Mutex
	sk    *hyperloglog.Sketch
	dirty bool
}

func (u *unitSketch) insert(h uint64) {
	u.mu.Lock()
	u.sk.InsertHash(h)
	u.dirty = true
	u.mu.Unlock()
}

// marshal returns the sketch when it changed since the last call.
func (u *unitSketch) marshal() ([]byte, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.dirty {
		return nil, false
	}
	b, err := u.sk.MarshalBinary()
	if err != nil {
		return nil, false
	}
	u.dirty = false
	return b, true
}

func (u *unitSketch) markDirty() {
	u.mu.Lock()
	u.dirty = true
	u.mu.Unlock()
}

// releaseCounters are one release's counts on this replica, not yet added to the store.
type releaseCounters struct {
	id       string
	start    time.Time
	interval time.Duration // the canary's judgement interval; 0: everything in interval 0

	arms   [2]armCounts
	shadow shadowCounts
	units  [2]unitSketch

	fields []counterField // every counter with its name in the store
}

type counterField struct {
	name string
	v    *atomic.Int64
}

func newReleaseCounters(rec *writers.Release) *releaseCounters {
	c := &releaseCounters{id: rec.ID, start: rec.StartedAt}
	if rec.Mode == writers.ModeCanary {
		c.interval = time.Duration(rec.Canary.Interval)
	}
	for i := range c.units {
		c.units[i].sk = hyperloglog.New14()
	}
	for i, arm := range armNames {
		a := &c.arms[i]
		c.fields = append(c.fields,
			counterField{arm + ".requests", &a.requests},
			counterField{arm + ".not_found", &a.notFound},
			counterField{arm + ".errors", &a.errors})
		for b := range a.hist {
			c.fields = append(c.fields, counterField{arm + ".hist." + strconv.Itoa(b), &a.hist[b]})
		}
	}
	sh := &c.shadow
	c.fields = append(c.fields,
		counterField{"shadow.sampled", &sh.sampled},
		counterField{"shadow.compared", &sh.compared},
		counterField{"shadow.missing", &sh.missing},
		counterField{"shadow.dropped", &sh.dropped},
		counterField{"shadow.abs_diff_micro", &sh.absDiffMicro})
	for b := range sh.hist {
		c.fields = append(c.fields, counterField{"shadow.hist." + strconv.Itoa(b), &sh.hist[b]})
	}
	return c
}

// take swaps every counter to zero and returns the ones that were not.
func (c *releaseCounters) take() map[string]int64 {
	var out map[string]int64
	for _, f := range c.fields {
		if n := f.v.Swap(0); n != 0 {
			if out == nil {
				out = map[string]int64{}
			}
			out[f.name] = n
		}
	}
	return out
}

// giveBack adds counts that could not be stored back to the counters.
func (c *releaseCounters) giveBack(counts map[string]int64) {
	for _, f := range c.fields {
		if n := counts[f.name]; n != 0 {
			f.v.Add(n)
		}
	}
}

// intervalOf is the judgement interval of a release at t: floor((t - start) / interval),
// 0 before the start and for releases without an interval.
func intervalOf(start time.Time, interval time.Duration, t time.Time) int64 {
	if interval <= 0 || !t.After(start) {
		return 0
	}
	return int64(t.Sub(start) / interval)
}

// releaseState is a namespace's release bookkeeping: the counters of its release, and
// those of releases that ended and still have counts to flush.
type releaseState struct {
	mu      sync.Mutex
	cur     *releaseCounters
	retired []*releaseCounters
	// judged is the freshest record the judge wrote or read (nil: none), newer than the
	// snapshot's until the next refresh.
	judged *writers.Release
	// totals caches the sums of intervals that will get no more counts, for status.
	totals struct {
		id   string
		upto int64 // intervals [0, upto) are summed in sum
		sum  map[string]int64
	}
	logged bool // the failure to read the record was logged
}

// countersFor returns the counters of rec, retiring those of an earlier release.
func (st *releaseState) countersFor(rec *writers.Release) *releaseCounters {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cur != nil && st.cur.id == rec.ID {
		return st.cur
	}
	if st.cur != nil {
		st.retired = append(st.retired, st.cur)
	}
	st.cur = newReleaseCounters(rec)
	return st.cur
}

// releaseView reads the namespace's release record and returns the view that the next
// snapshot of live serves; cur is the snapshot served now (its view is reused when
// nothing changed). nil: no release, or a store that keeps none.
func (s *Service) releaseView(ctx context.Context, n *namespace, live, cur *Snapshot) *releaseView {
	if live == nil || live.Store == nil {
		return nil
	}
	var old *releaseView
	if cur != nil {
		old = cur.rel
	}
	cctx, cancel := s.storeCtx(ctx)
	rec, err := live.Store.Release(cctx, n.name)
	cancel()
	switch {
	case errors.Is(err, writers.ErrNoReleases):
		return nil
	case err != nil:
		// The live pointer was read: keep serving, with the view as it was if it still
		// fits the live version. The next refresh tries again.
		n.rel.mu.Lock()
		first := !n.rel.logged
		n.rel.logged = true
		n.rel.mu.Unlock()
		if first {
			s.log.Warn("read release record: keeping the release as it was", "namespace", n.name, "err", err)
		}
		if old != nil && old.live == live.Manifest.Version {
			return old
		}
		return nil
	case rec == nil:
		return nil
	}
	n.rel.mu.Lock()
	n.rel.logged = false
	n.rel.mu.Unlock()
	if old != nil && !old.broken && old.rec.ID == rec.ID && old.rec.Revision == rec.Revision && old.live == live.Manifest.Version {
		return old
	}
	v := &releaseView{rec: rec, live: live.Manifest.Version, limit: rec.WeightPercent * writers.Buckets / 100}
	ours := rec.Active() && rec.Live == live.Manifest.Version
	v.routing = ours && rec.Routing()
	v.ab = v.routing && rec.Mode == writers.ModeAB
	v.shadow = ours && rec.Mode == writers.ModeShadow && rec.State == writers.ReleaseRunning
	if v.shadow {
		v.sample = uint64(rec.Shadow.SamplePercent * 100)
	}
	if v.routing || v.shadow {
		switch {
		case old != nil && old.cand != nil && old.cand.Manifest.Version == rec.Candidate:
			v.cand = old.cand
		default:
			cctx, cancel := s.storeCtx(ctx)
			m, err := live.Store.Manifest(cctx, n.name, rec.Candidate)
			cancel()
			var c *Snapshot
			if err == nil {
				// A candidate increment reads its chain: store_timeout for each base.
				cctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.StoreTimeout)*time.Duration(m.ChainDepth()))
				c, err = newSnapshot(cctx, live.Store, n.name, m)
				cancel()
			}
			if err != nil {
				s.log.Warn("read the release candidate's manifest: answering from live until it can be read",
					"namespace", n.name, "release", rec.ID, "candidate", rec.Candidate, "err", err)
				v.routing, v.ab, v.shadow, v.broken = false, false, false, true
				break
			}
			c.prepare(n.cfg, s.log)
			v.cand = c
		}
	}
	if d := live.Manifest.Distributions; len(d) > 0 {
		v.edges, v.shares = decileBins(d[0])
	}
	v.c = n.rel.countersFor(rec)
	for i, arm := range armNames {
		v.answers[i] = s.met.relAnswers.WithLabelValues(n.name, arm)
	}
	if v.ab {
		// A replica that restarted, or a view rebuilt, puts its sketch again.
		for i := range v.c.units {
			v.c.units[i].markDirty()
		}
	}
	s.releaseGauges(n, v)
	if old == nil || old.rec.ID != rec.ID || old.rec.State != rec.State || old.rec.WeightPercent != rec.WeightPercent || old.routing != v.routing || old.shadow != v.shadow {
		s.log.Info("release", "namespace", n.name, "release", rec.ID, "mode", rec.Mode, "state", rec.State,
			"live", rec.Live, "candidate", rec.Candidate, "weight_percent", rec.WeightPercent,
			"routing", v.routing, "shadow", v.shadow)
	}
	return v
}

// decileBins are the deciles of a live version's output and the shares of its own values
// in the bins they make: a tenth each, unless its values tie across a decile (a discrete
// output), when assuming a tenth would fail a candidate identical to live. nil: none.
func decileBins(d writers.Distribution) (edges, shares []float64) {
	if edges = dist.Deciles(d); edges == nil {
		return nil, nil
	}
	return edges, dist.BinShares(d, edges)
}

// releaseGauges sets the weight and state gauges of n's release.
func (s *Service) releaseGauges(n *namespace, v *releaseView) {
	for _, st := range []string{writers.ReleaseRunning, writers.ReleasePaused, writers.ReleasePromoted, writers.ReleaseAborted} {
		val := 0.0
		if v != nil && v.rec.State == st {
			val = 1
		}
		s.met.relState.WithLabelValues(n.name, st).Set(val)
	}
	w := 0.0
	if v != nil && (v.routing || v.shadow) {
		w = v.rec.WeightPercent
	}
	s.met.relWeight.WithLabelValues(n.name).Set(w)
}

// flush adds this replica's counts of n's releases to the store, and its sketches of
// distinct units. Counts that cannot be added are kept for the next flush.
func (s *Service) flush(ctx context.Context, n *namespace) {
	store, done, ok := n.catalog(ctx)
	if !ok {
		return
	}
	defer done()
	n.rel.mu.Lock()
	all := append([]*releaseCounters{}, n.rel.retired...)
	n.rel.retired = nil
	cur := n.rel.cur
	n.rel.mu.Unlock()
	if cur != nil {
		all = append(all, cur)
	}
	now := s.rt.now()
	for _, c := range all {
		if counts := c.take(); counts != nil {
			cctx, cancel := s.storeCtx(ctx)
			err := store.AddCounts(cctx, n.name, c.id, intervalOf(c.start, c.interval, now), counts)
			cancel()
			if err != nil {
				c.giveBack(counts)
				s.log.Warn("add release counts: keeping them for the next flush", "namespace", n.name, "release", c.id, "err", err)
				if c != cur {
					n.rel.mu.Lock()
					n.rel.retired = append(n.rel.retired, c)
					n.rel.mu.Unlock()
				}
				continue
			}
		}
		for i := range c.units {
			data, ok := c.units[i].marshal()
			if !ok {
				continue
			}
			cctx, cancel := s.storeCtx(ctx)
			err := store.PutSketch(cctx, n.name, c.id, unitSketchNames[i], s.replica, data)
			cancel()
			if err != nil {
				c.units[i].markDirty()
				s.log.Warn("put distinct-unit sketch", "namespace", n.name, "release", c.id, "err", err)
			}
		}
	}
}

// unitSketchNames are the names of the distinct-unit sketches in the store, per arm.
var unitSketchNames = [2]string{"units.live", "units.candidate"}

// releases is the release loop of one namespace: every flush interval it adds the counts
// to the store, lets the judge look at the canary, and now and then computes the shadow
// and A/B gauges. It also runs the shadow workers. When ctx is done it waits for served
// (the HTTP server has finished its requests) and for the workers, and flushes once more.
func (s *Service) releases(ctx context.Context, n *namespace, served <-chan struct{}) {
	var wg sync.WaitGroup
	for range shadowWorkers {
		wg.Go(func() { s.shadowWorker(ctx, n) })
	}
	t := time.NewTicker(s.rt.flush)
	defer t.Stop()
	var reported time.Time
	for {
		select {
		case <-ctx.Done():
			<-served
			wg.Wait()
			n.dropShadowQueue()
			fctx, cancel := context.WithTimeout(context.Background(), 4*time.Duration(s.cfg.StoreTimeout))
			s.flush(fctx, n)
			cancel()
			return
		case <-t.C:
		}
		s.flush(ctx, n)
		s.judge(ctx, n)
		if now := s.rt.now(); now.Sub(reported) >= s.rt.report {
			reported = now
			s.reportGauges(ctx, n)
		}
	}
}
