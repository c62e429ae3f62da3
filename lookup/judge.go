package lookup

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// The canary judge (DESIGN.md, "Canary judgement").
//
// Every replica counts; one judges. The judge holds the record's lease (Judge,
// JudgeUntil): a replica takes it by a compare-and-swap of the record (UpdateRelease)
// when it is free or expired, and every record it writes renews it, to now + 2 intervals
// + grace, so a judge that dies is replaced within about two intervals, and two replicas
// never judge at once (each swap checks the lease against the record it swaps).
//
// Intervals are numbered as the counters are, from 0: interval i covers
// [started_at + i×interval, started_at + (i+1)×interval). The record's Judged is the
// number of intervals judged so far, i.e. the next one to judge. An interval is judged
// once it has ended and a grace of two flush intervals has passed (every replica has
// added its counts); a judge that was away judges only the latest ended interval, and
// the ones it skipped count as judged. The judgement reads the interval's counts of all
// replicas and decides:
//
//   - hold while either arm has fewer than min_requests (no data never passes). At
//     weight 100 the live arm gets no traffic, so its rates are those of the latest
//     earlier interval (of the last 8) in which it had min_requests;
//   - fail when the candidate's not-found rate, or its error rate, exceeds live's by more
//     than max_not_found_increase / max_error_increase, or the PSI of the candidate's
//     answer histogram against the live version's own shares of its decile bins (a tenth
//     each unless its values tie, dist.BinShares) exceeds max_psi;
//   - else pass.
//
// failure_limit failed intervals in a row abort the release (AbortRelease, the reason
// naming the metric, its value and the threshold; the live pointer never moves). A pass
// moves to the next step; a pass at the last step (100) promotes (PromoteRelease: the
// flip). A canary with a fixed weight (no steps) is judged, and aborted when it fails,
// but never steps. Every decision goes into the record's History and the log. A paused
// release is not judged.

// errSkip gives up an UpdateRelease: the record changed so that there is nothing to do.
var errSkip = errors.New("lookup: nothing to do")

// baselineLookback is how many earlier intervals the judge searches for live's rates
// when the live arm had no traffic (weight 100).
const baselineLookback = 8

// armTotals are one arm's counts of an interval (or a sum of them).
type armTotals struct {
	Requests int64 `json:"requests"`
	NotFound int64 `json:"not_found"`
	Errors   int64 `json:"errors"`
	hist     [histBins]int64
}

// totalsOf reads an arm's counters (prefix "live" or "candidate") from counts.
func totalsOf(counts map[string]int64, arm string) armTotals {
	t := armTotals{Requests: counts[arm+".requests"], NotFound: counts[arm+".not_found"], Errors: counts[arm+".errors"]}
	for b := range t.hist {
		t.hist[b] = counts[arm+".hist."+strconv.Itoa(b)]
	}
	return t
}

func (t armTotals) rate(n int64) float64 {
	if t.Requests == 0 {
		return 0
	}
	return float64(n) / float64(t.Requests)
}

// verdict is the outcome of one judgement and the check that decided it.
type verdict struct {
	outcome      string // hold | pass | fail
	metric       string
	value, limit float64
	psi          float64 // NaN: not computed
	reason       string
}

// Judged metrics, as the history, the abort reason and the aborts metric name them.
const (
	metricRequests = "requests"
	metricNotFound = "not_found_rate"
	metricErrors   = "error_rate"
	metricPSI      = "psi"
)

// decide judges one interval's counts of both arms under c. expected are the live
// version's own shares of the bins the candidate's answers were binned in (nil: they were
// not, the live version has no distribution).
func decide(c writers.CanaryConfig, live, cand armTotals, expected []float64) verdict {
	v := verdict{psi: math.NaN()}
	if n := min(live.Requests, cand.Requests); n < c.MinRequests {
		v.outcome, v.metric, v.value, v.limit = "hold", metricRequests, float64(n), float64(c.MinRequests)
		v.reason = fmt.Sprintf("live has %d requests and the candidate %d: need %d in each", live.Requests, cand.Requests, c.MinRequests)
		return v
	}
	nf := cand.rate(cand.NotFound) - live.rate(live.NotFound)
	er := cand.rate(cand.Errors) - live.rate(live.Errors)
	if expected != nil {
		var n int64
		for _, x := range cand.hist {
			n += x
		}
		if n > 0 {
			v.psi = dist.PSI(expected, cand.hist[:])
		}
	}
	switch {
	case nf > c.MaxNotFoundIncrease:
		v.outcome, v.metric, v.value, v.limit = "fail", metricNotFound, nf, c.MaxNotFoundIncrease
	case er > c.MaxErrorIncrease:
		v.outcome, v.metric, v.value, v.limit = "fail", metricErrors, er, c.MaxErrorIncrease
	case !math.IsNaN(v.psi) && v.psi > c.MaxPSI:
		v.outcome, v.metric, v.value, v.limit = "fail", metricPSI, v.psi, c.MaxPSI
	default:
		v.outcome = "pass"
	}
	psi := "none"
	if !math.IsNaN(v.psi) {
		psi = strconv.FormatFloat(v.psi, 'f', 4, 64)
	}
	v.reason = fmt.Sprintf("not-found rate %+.4f, error rate %+.4f against live, psi %s; %d live and %d candidate requests",
		nf, er, psi, live.Requests, cand.Requests)
	if v.outcome == "fail" {
		v.reason = fmt.Sprintf("%s %.4f > %g: %s", v.metric, v.value, v.limit, v.reason)
	}
	return v
}

// freshest is the newer of the snapshot's record and the one the judge last saw.
func (st *releaseState) freshest(rec *writers.Release) *writers.Release {
	st.mu.Lock()
	defer st.mu.Unlock()
	if j := st.judged; j != nil && j.ID == rec.ID && j.Revision > rec.Revision {
		return j
	}
	return rec
}

func (st *releaseState) saw(rec *writers.Release) {
	if rec == nil {
		return
	}
	st.mu.Lock()
	if st.judged == nil || st.judged.ID != rec.ID || rec.Revision > st.judged.Revision {
		st.judged = rec
	}
	st.mu.Unlock()
}

// leaseTTL is how long the judge's lease lasts from each record it writes.
func (s *Service) leaseTTL(interval time.Duration) time.Duration {
	return 2*interval + s.rt.grace
}

// judge looks at n's canary: takes or renews the lease, and judges an interval when
// one is due.
func (s *Service) judge(ctx context.Context, n *namespace) {
	sn := n.snap.Load()
	if sn == nil || sn.rel == nil {
		return
	}
	rec := n.rel.freshest(sn.rel.rec)
	interval := time.Duration(rec.Canary.Interval)
	if rec.Mode != writers.ModeCanary || rec.State != writers.ReleaseRunning || rec.Live != sn.Manifest.Version || interval <= 0 {
		return
	}
	now := s.rt.now()
	held := rec.Judge == s.replica && rec.JudgeUntil.After(now)
	if !held && rec.Judge != "" && rec.JudgeUntil.After(now) {
		return // another replica judges
	}
	store, done, ok := n.catalog(ctx)
	if !ok {
		return
	}
	defer done()
	// The latest interval that has ended, grace included (-1: none yet).
	ended := intervalOf(rec.StartedAt, interval, now.Add(-s.rt.grace)) - 1
	if ended < rec.Judged {
		if !held || rec.JudgeUntil.Sub(now) < interval {
			s.takeLease(ctx, store, n, rec, now)
		}
		return
	}
	if ended > rec.Judged {
		s.log.Info("canary judge: judging the latest ended interval only", "namespace", n.name, "release", rec.ID,
			"skipped_from", rec.Judged, "skipped_to", ended-1)
	}

	cctx, cancel := s.storeCtx(ctx)
	counts, err := store.Counts(cctx, n.name, rec.ID, ended)
	cancel()
	if err != nil {
		s.log.Warn("canary judge: read counts", "namespace", n.name, "release", rec.ID, "interval", ended, "err", err)
		return
	}
	live, cand := totalsOf(counts, writers.ArmLive), totalsOf(counts, writers.ArmCandidate)
	baseline := ""
	if live.Requests < rec.Canary.MinRequests && rec.WeightPercent >= 100 {
		for i := ended - 1; i >= 0 && i >= ended-baselineLookback; i-- {
			cctx, cancel := s.storeCtx(ctx)
			c, err := store.Counts(cctx, n.name, rec.ID, i)
			cancel()
			if err != nil {
				s.log.Warn("canary judge: read counts", "namespace", n.name, "release", rec.ID, "interval", i, "err", err)
				return
			}
			if l := totalsOf(c, writers.ArmLive); l.Requests >= rec.Canary.MinRequests {
				live, baseline = l, fmt.Sprintf("; live's rates from interval %d (at weight 100 live has no traffic)", i)
				break
			}
		}
	}
	v := decide(rec.Canary, live, cand, sn.rel.shares)
	v.reason += baseline
	if !math.IsNaN(v.psi) {
		s.met.relPSI.WithLabelValues(n.name).Set(v.psi)
	}
	s.decideInterval(ctx, store, n, rec, ended, v, now)
}

// decideInterval records the verdict of interval e in the record, and steps, aborts or
// promotes as it says.
func (s *Service) decideInterval(ctx context.Context, store *writers.Store, n *namespace, rec *writers.Release, e int64, v verdict, now time.Time) {
	next := rec.Judged
	var promote, stepped bool
	updated, err := writers.UpdateRelease(ctx, store, n.name, now, func(r *writers.Release) error {
		if r.ID != rec.ID || r.State != writers.ReleaseRunning || r.Judged != next {
			return errSkip // paused, ended, or judged by another replica meanwhile
		}
		if r.Judge != "" && r.Judge != s.replica && r.JudgeUntil.After(now) {
			return errSkip
		}
		promote, stepped = false, false
		r.Judge, r.JudgeUntil = s.replica, now.Add(s.leaseTTL(time.Duration(r.Canary.Interval)))
		r.Judged = e + 1
		r.History = append(r.History, writers.Judgement{At: now.UTC(), Interval: e, Outcome: v.outcome, Weight: r.WeightPercent,
			Reason: v.reason, Metric: v.metric, Value: finiteOr0(v.value), Limit: v.limit, By: s.replica})
		switch v.outcome {
		case "fail":
			r.Failures++
		case "pass":
			r.Failures = 0
			steps := r.Canary.Steps
			switch {
			case len(steps) == 0: // a fixed weight: judged, never stepped
			case r.Step < len(steps)-1:
				r.Step++
				r.WeightPercent = steps[r.Step]
				stepped = true
				r.History = append(r.History, writers.Judgement{At: now.UTC(), Interval: e, Outcome: "step", Weight: r.WeightPercent,
					Reason: fmt.Sprintf("interval %d passed: weight %g%% -> %g%%", e, steps[r.Step-1], r.WeightPercent), By: s.replica})
			default:
				promote = true
			}
		}
		return nil
	})
	n.rel.saw(updated)
	if errors.Is(err, errSkip) {
		return
	}
	if err != nil {
		s.log.Warn("canary judge: record the judgement", "namespace", n.name, "release", rec.ID, "interval", e, "err", err)
		return
	}
	s.met.judgements.WithLabelValues(n.name, v.outcome).Inc()
	s.log.Info("canary judgement", "namespace", n.name, "release", rec.ID, "interval", e, "outcome", v.outcome,
		"weight_percent", rec.WeightPercent, "metric", v.metric, "value", v.value, "limit", v.limit,
		"failures", updated.Failures, "reason", v.reason)
	switch {
	case v.outcome == "fail" && updated.Failures >= updated.Canary.FailureLimit:
		reason := fmt.Sprintf("canary judgement: %s %.4f > %g in %d intervals in a row (the last, interval %d: %s)",
			v.metric, v.value, v.limit, updated.Failures, e, v.reason)
		r, err := writers.AbortRunningRelease(ctx, store, n.name, rec.ID, s.replica, reason, now)
		n.rel.saw(r)
		if err != nil {
			s.log.Warn("canary judge: abort", "namespace", n.name, "release", rec.ID, "err", err)
			return
		}
		s.met.aborts.WithLabelValues(n.name, v.metric).Inc()
		s.log.Warn("canary aborted", "namespace", n.name, "release", rec.ID, "candidate", rec.Candidate, "reason", reason)
	case promote:
		r, err := writers.PromoteRunningRelease(ctx, store, n.name, rec.ID, s.replica, now)
		n.rel.saw(r)
		if err != nil {
			s.log.Warn("canary judge: promote", "namespace", n.name, "release", rec.ID, "err", err)
			return
		}
		s.log.Info("canary promoted: the candidate is live", "namespace", n.name, "release", rec.ID, "version", rec.Candidate)
	case stepped:
		s.log.Info("canary step", "namespace", n.name, "release", rec.ID, "weight_percent", updated.WeightPercent)
	}
	select { // follow the change at once rather than at the next poll
	case n.kick <- struct{}{}:
	default:
	}
}

// takeLease takes the judge's lease of rec when it is free or expired, or renews it.
func (s *Service) takeLease(ctx context.Context, store *writers.Store, n *namespace, rec *writers.Release, now time.Time) {
	interval := time.Duration(rec.Canary.Interval)
	updated, err := writers.UpdateRelease(ctx, store, n.name, now, func(r *writers.Release) error {
		if r.ID != rec.ID || r.State != writers.ReleaseRunning {
			return errSkip
		}
		if r.Judge != s.replica && r.Judge != "" && r.JudgeUntil.After(now) {
			return errSkip
		}
		if r.Judge == s.replica && r.JudgeUntil.Sub(now) >= interval {
			return errSkip
		}
		r.Judge, r.JudgeUntil = s.replica, now.Add(s.leaseTTL(interval))
		return nil
	})
	n.rel.saw(updated)
	switch {
	case err == nil && rec.Judge != s.replica:
		s.log.Info("canary judge: this replica judges", "namespace", n.name, "release", rec.ID, "replica", s.replica)
	case err != nil && !errors.Is(err, errSkip):
		s.log.Warn("canary judge: take the lease", "namespace", n.name, "release", rec.ID, "err", err)
	}
}

// finiteOr0 is x, or 0 for NaN and infinities (which JSON cannot hold).
func finiteOr0(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}
