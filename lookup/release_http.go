package lookup

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/axiomhq/hyperloglog"
	"golang.org/x/sync/errgroup"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// The release endpoints: GET /v1/{ns}:release reports the release with the counts of
// every replica, POST /v1/{ns}:release (admin) starts, promotes, pauses, resumes or
// aborts one, through the writers' release actions (the same as `staticref release`).

// UnitHeader names the unit a request is routed by, when ?unit= does not.
const UnitHeader = "Staticref-Unit"

// VersionHeader names the version that answered a single lookup; ArmHeader its arm while
// a release routes.
const (
	VersionHeader = "Staticref-Version"
	ArmHeader     = "Staticref-Arm"
)

// unitOf is the unit of a request: ?unit=, else the Staticref-Unit header, else key. It
// reads the query without parsing it into a map.
func unitOf(r *http.Request, key string) string {
	if u, ok := queryValue(r.URL.RawQuery, "unit"); ok && u != "" {
		return u
	}
	if u := r.Header.Get(UnitHeader); u != "" {
		return u
	}
	return key
}

// queryValue is the first value of name in a raw query, unescaped.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			return u, true
		}
		return v, true
	}
	return "", false
}

// ReleaseAnswer is the answer of GET and POST /v1/{ns}:release.
type ReleaseAnswer struct {
	Namespace string         `json:"namespace"`
	Release   *ReleaseStatus `json:"release"`
}

// ReleaseStatus is a release record with the counts of every replica.
type ReleaseStatus struct {
	ID            string    `json:"id"`
	Mode          string    `json:"mode"`
	Live          string    `json:"live"`
	Candidate     string    `json:"candidate"`
	WeightPercent float64   `json:"weight_percent"`
	State         string    `json:"state"`
	Reason        string    `json:"reason"`
	Salt          string    `json:"salt"`
	StartedAt     time.Time `json:"started_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Arms are the counts summed over the release's intervals so far.
	Arms struct {
		Live      armTotals `json:"live"`
		Candidate armTotals `json:"candidate"`
	} `json:"arms"`
	Shadow    *ShadowStatus `json:"shadow"`      // null unless a shadow
	SRMPValue *float64      `json:"srm_p_value"` // null unless an A/B test with units
	// Units are the distinct units per arm (A/B), from every replica's sketch.
	Units *UnitsStatus `json:"units,omitempty"`

	Canary   *writers.CanaryConfig `json:"canary,omitempty"`
	Step     int                   `json:"step"`
	Interval int64                 `json:"interval"` // the judgement interval now
	Judged   int64                 `json:"judged"`   // intervals judged so far
	Failures int                   `json:"failures"`
	Judge    string                `json:"judge,omitempty"`
	Shadowed *writers.ShadowConfig `json:"shadow_config,omitempty"`
	History  []writers.Judgement   `json:"history"`
}

// ShadowStatus is a shadow's comparison so far.
type ShadowStatus struct {
	Sampled     int64    `json:"sampled"`
	Compared    int64    `json:"compared"`
	Missing     int64    `json:"missing"`
	Dropped     int64    `json:"dropped"`
	MeanAbsDiff *float64 `json:"mean_abs_diff"`
	PSI         *float64 `json:"psi"`
}

// UnitsStatus are the distinct units seen per arm.
type UnitsStatus struct {
	Live      uint64 `json:"live"`
	Candidate uint64 `json:"candidate"`
}

// maxStatusIntervals bounds how many intervals a status sums (the newest).
const maxStatusIntervals = 10000

func (s *Service) handleReleaseStatus(w http.ResponseWriter, r *http.Request, n *namespace) {
	store, done, aerr := s.releaseStore(r.Context(), n)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	defer done()
	st, err := s.currentRelease(r.Context(), store, n)
	if errors.Is(err, writers.ErrNoReleases) {
		err = nil // a store that keeps no releases has none
	}
	if err != nil {
		s.writeError(w, s.apiErrorOf(n.name, err))
		return
	}
	writeJSON(w, http.StatusOK, ReleaseAnswer{Namespace: n.name, Release: st})
}

// releaseStore is the store through which n's release is read and changed.
func (s *Service) releaseStore(ctx context.Context, n *namespace) (*writers.Store, func(), *apiError) {
	src := n.src.Load()
	if src == nil {
		return nil, nil, errorf(CodeUnavailable, "the store of %s is unavailable: connecting to it", n.name)
	}
	cctx, cancel := s.storeCtx(ctx)
	defer cancel()
	store, done, err := src.catalog(cctx)
	if err != nil {
		return nil, nil, s.apiErrorOf(n.name, err)
	}
	return store, done, nil
}

// currentRelease reads n's release record and reports it; nil when there is none.
func (s *Service) currentRelease(ctx context.Context, store *writers.Store, n *namespace) (*ReleaseStatus, error) {
	cctx, cancel := s.storeCtx(ctx)
	rec, err := store.Release(cctx, n.name)
	cancel()
	if err != nil || rec == nil {
		return nil, err
	}
	return s.releaseStatus(ctx, store, n, rec)
}

// releaseStatus reports rec with the counts of every replica.
func (s *Service) releaseStatus(ctx context.Context, store *writers.Store, n *namespace, rec *writers.Release) (*ReleaseStatus, error) {
	st := &ReleaseStatus{ID: rec.ID, Mode: rec.Mode, Live: rec.Live, Candidate: rec.Candidate, WeightPercent: rec.WeightPercent,
		State: rec.State, Reason: rec.Reason, Salt: rec.Salt, StartedAt: rec.StartedAt, UpdatedAt: rec.UpdatedAt,
		Step: rec.Step, Judged: rec.Judged, Failures: rec.Failures, Judge: rec.Judge, History: rec.History}
	if st.History == nil {
		st.History = []writers.Judgement{}
	}
	if rec.Mode == writers.ModeCanary {
		c := rec.Canary
		st.Canary = &c
	}
	counts, last, err := s.releaseTotals(ctx, store, n, rec)
	if err != nil {
		return nil, err
	}
	st.Interval = last
	st.Arms.Live, st.Arms.Candidate = totalsOf(counts, writers.ArmLive), totalsOf(counts, writers.ArmCandidate)
	switch rec.Mode {
	case writers.ModeShadow:
		sh := rec.Shadow
		st.Shadowed = &sh
		var shares []float64 // the live version's own shares of its decile bins
		if sn := n.snap.Load(); sn != nil && sn.rel != nil && sn.rel.rec.ID == rec.ID {
			shares = sn.rel.shares
		}
		st.Shadow = shadowStatus(counts, shares)
	case writers.ModeAB:
		live, cand, err := s.distinctUnits(ctx, store, n.name, rec.ID)
		if err != nil {
			return nil, err
		}
		st.Units = &UnitsStatus{Live: live, Candidate: cand}
		if p := srmPValue(float64(live), float64(cand), rec.WeightPercent); !math.IsNaN(p) {
			st.SRMPValue = &p
		}
	}
	return st, nil
}

// shadowStatus is the comparison that a shadow's counts add up to; expected are the live
// version's own shares of its decile bins (nil: a tenth each).
func shadowStatus(counts map[string]int64, expected []float64) *ShadowStatus {
	sh := &ShadowStatus{Sampled: counts["shadow.sampled"], Compared: counts["shadow.compared"],
		Missing: counts["shadow.missing"], Dropped: counts["shadow.dropped"]}
	if sh.Compared > 0 {
		m := float64(counts["shadow.abs_diff_micro"]) / float64(sh.Compared) / 1e6
		sh.MeanAbsDiff = &m
		hist := make([]int64, histBins)
		for b := range hist {
			hist[b] = counts[fmt.Sprintf("shadow.hist.%d", b)]
		}
		if expected == nil {
			expected = dist.DecileShares()
		}
		if p := dist.PSI(expected, hist); !math.IsNaN(p) {
			sh.PSI = &p
		}
	}
	return sh
}

// releaseTotals sums rec's counters over its intervals so far (the newest
// maxStatusIntervals), and returns the interval it is in. Intervals that can get no more
// counts are summed once and kept.
func (s *Service) releaseTotals(ctx context.Context, store *writers.Store, n *namespace, rec *writers.Release) (map[string]int64, int64, error) {
	interval := time.Duration(0)
	if rec.Mode == writers.ModeCanary {
		interval = time.Duration(rec.Canary.Interval)
	}
	now := s.rt.now()
	at := now
	if !rec.Active() && rec.UpdatedAt.Before(now) {
		at = rec.UpdatedAt
	}
	last := intervalOf(rec.StartedAt, interval, at)
	first := max(0, last-maxStatusIntervals+1)
	// final: the intervals before it have ended and every replica has flushed them.
	final := int64(0)
	if interval > 0 {
		final = intervalOf(rec.StartedAt, interval, now.Add(-s.rt.grace-s.rt.flush))
	}

	n.rel.mu.Lock()
	tc := &n.rel.totals
	sum := map[string]int64{}
	from := first
	if tc.id == rec.ID && tc.upto > first {
		for k, v := range tc.sum {
			sum[k] = v
		}
		from = tc.upto
	}
	n.rel.mu.Unlock()

	parts := make([]map[string]int64, last-from+1)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := from; i <= last; i++ {
		g.Go(func() error {
			cctx, cancel := s.storeCtx(gctx)
			defer cancel()
			c, err := store.Counts(cctx, n.name, rec.ID, i)
			parts[i-from] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	// Intervals before upto can get no more counts: their sum is kept for the next status.
	upto := min(final, last+1)
	keep := func() {
		n.rel.mu.Lock()
		if tc.id != rec.ID || tc.upto < upto {
			tc.id, tc.upto, tc.sum = rec.ID, upto, clone(sum)
		}
		n.rel.mu.Unlock()
	}
	for i, c := range parts {
		if from+int64(i) == upto {
			keep()
		}
		for k, v := range c {
			sum[k] += v
		}
	}
	if last+1 == upto {
		keep()
	}
	return sum, last, nil
}

func clone(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// distinctUnits merges every replica's sketches of release id and estimates the
// distinct units per arm.
func (s *Service) distinctUnits(ctx context.Context, store *writers.Store, ns, id string) (live, cand uint64, err error) {
	var est [2]uint64
	for i, name := range unitSketchNames {
		cctx, cancel := s.storeCtx(ctx)
		raws, err := store.Sketches(cctx, ns, id, name)
		cancel()
		if err != nil {
			return 0, 0, err
		}
		total := hyperloglog.New14()
		for _, raw := range raws {
			sk := new(hyperloglog.Sketch)
			if err := sk.UnmarshalBinary(raw); err != nil {
				s.log.Warn("a replica's distinct-unit sketch does not decode: left out", "namespace", ns, "release", id, "sketch", name, "err", err)
				continue
			}
			if err := total.Merge(sk); err != nil {
				s.log.Warn("a replica's distinct-unit sketch does not merge: left out", "namespace", ns, "release", id, "sketch", name, "err", err)
			}
		}
		est[i] = total.Estimate()
	}
	return est[armLive], est[armCandidate], nil
}

// srmPValue is the sample-ratio-mismatch p-value: the chance, under the weights, of a
// split of distinct units at least as uneven as live : cand, by Pearson's chi-squared
// test with one degree of freedom. NaN when there are no units or the weight leaves an
// arm empty.
func srmPValue(live, cand, weightPercent float64) float64 {
	n := live + cand
	if n <= 0 || weightPercent <= 0 || weightPercent >= 100 {
		return math.NaN()
	}
	ec := n * weightPercent / 100
	el := n - ec
	chi2 := (live-el)*(live-el)/el + (cand-ec)*(cand-ec)/ec
	return distuv.ChiSquared{K: 1}.Survival(chi2)
}

// reportGauges computes the shadow and A/B gauges of n's running release from the store.
func (s *Service) reportGauges(ctx context.Context, n *namespace) {
	sn := n.snap.Load()
	if sn == nil || sn.rel == nil || !sn.rel.rec.Active() {
		return
	}
	rec := sn.rel.rec
	if rec.Mode != writers.ModeShadow && rec.Mode != writers.ModeAB {
		return
	}
	store, done, ok := n.catalog(ctx)
	if !ok {
		return
	}
	defer done()
	st, err := s.releaseStatus(ctx, store, n, rec)
	if err != nil {
		s.log.Debug("release gauges", "namespace", n.name, "err", err)
		return
	}
	if st.Shadow != nil && st.Shadow.PSI != nil {
		s.met.relPSI.WithLabelValues(n.name).Set(*st.Shadow.PSI)
	}
	if st.SRMPValue != nil {
		s.met.srm.WithLabelValues(n.name).Set(*st.SRMPValue)
	}
}

// releaseRequest is the body of POST /v1/{ns}:release.
type releaseRequest struct {
	Action        string    `json:"action"`
	Mode          string    `json:"mode"`
	Candidate     string    `json:"candidate"`
	WeightPercent float64   `json:"weight_percent"`
	Salt          string    `json:"salt"`
	Reason        string    `json:"reason"`
	Steps         []float64 `json:"steps"`
	// Any field of release.canary and release.shadow.
	Interval            writers.Duration `json:"interval"`
	MinRequests         int64            `json:"min_requests"`
	MaxNotFoundIncrease float64          `json:"max_not_found_increase"`
	MaxErrorIncrease    float64          `json:"max_error_increase"`
	MaxPSI              float64          `json:"max_psi"`
	FailureLimit        int              `json:"failure_limit"`
	SamplePercent       float64          `json:"sample_percent"`
}

func (s *Service) handleRelease(w http.ResponseWriter, r *http.Request, n *namespace) {
	var body releaseRequest
	if !s.decode(w, r, &body) {
		return
	}
	switch body.Action {
	case "start", "promote", "pause", "resume", "abort":
	default:
		s.writeError(w, errorf(CodeInvalid, `body: action %q: use {"action": "start", "mode": "canary", "candidate": "V", "steps": [1,10,50,100], "interval": "10m"} or {"action": "promote"|"pause"|"resume"|"abort"}`, body.Action))
		return
	}
	store, done, aerr := s.releaseStore(r.Context(), n)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	defer done()
	// Each store call below has its own store_timeout.
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Duration(s.cfg.StoreTimeout))
	defer cancel()
	now := s.rt.now()
	by := "admin" // the record is public: the log has the remote address
	var err error
	var rec *writers.Release
	switch body.Action {
	case "start":
		if aerr := s.checkCandidate(ctx, store, n, body.Candidate); aerr != nil {
			s.writeError(w, aerr)
			return
		}
		spec := writers.ReleaseSpec{Namespace: n.name, Candidate: body.Candidate, Mode: body.Mode, WeightPercent: body.WeightPercent,
			Salt: body.Salt, By: by,
			Canary: writers.CanaryConfig{Steps: body.Steps, Interval: body.Interval, MinRequests: body.MinRequests,
				MaxNotFoundIncrease: body.MaxNotFoundIncrease, MaxErrorIncrease: body.MaxErrorIncrease, MaxPSI: body.MaxPSI,
				FailureLimit: body.FailureLimit},
			Shadow: writers.ShadowConfig{SamplePercent: body.SamplePercent}}
		rec, err = writers.StartRelease(ctx, store, spec, now)
	case "promote":
		rec, err = writers.PromoteRelease(ctx, store, n.name, by, now)
	case "pause":
		rec, err = writers.PauseRelease(ctx, store, n.name, by, now)
	case "resume":
		rec, err = writers.ResumeRelease(ctx, store, n.name, by, now)
	case "abort":
		rec, err = writers.AbortRelease(ctx, store, n.name, by, body.Reason, now)
	}
	if err != nil {
		s.writeError(w, s.releaseError(n.name, body.Action, rec, err))
		return
	}
	if body.Action == "abort" {
		s.met.aborts.WithLabelValues(n.name, "admin").Inc()
	}
	s.log.Info("admin release "+body.Action, "namespace", n.name, "release", rec.ID, "state", rec.State,
		"candidate", rec.Candidate, "weight_percent", rec.WeightPercent, "remote", r.RemoteAddr)
	s.refresh(r.Context(), n)
	st, err := s.releaseStatus(ctx, store, n, rec)
	if err != nil {
		s.writeError(w, s.apiErrorOf(n.name, err))
		return
	}
	writeJSON(w, http.StatusOK, ReleaseAnswer{Namespace: n.name, Release: st})
}

// checkCandidate answers 400 or 404 for a candidate that cannot be released.
func (s *Service) checkCandidate(ctx context.Context, store *writers.Store, n *namespace, v string) *apiError {
	if err := writers.ValidateVersion(v); err != nil {
		return errorf(CodeInvalid, `body: candidate: want a version id, {"candidate": "20261127T020000Z"}: %v`, trimInvalid(err))
	}
	cctx, cancel := s.storeCtx(ctx)
	_, err := store.Manifest(cctx, n.name, v)
	cancel()
	switch {
	case errors.Is(err, writers.ErrNotFound):
		return errorf(CodeNotFound, "version %s of %s does not exist", v, n.name)
	case err != nil:
		return s.apiErrorOf(n.name, err)
	}
	return nil
}

// releaseError is the API error of a failed release action, in terms of the release;
// what it does not recognise goes through apiErrorOf.
func (s *Service) releaseError(ns, action string, rec *writers.Release, err error) *apiError {
	switch {
	case errors.Is(err, writers.ErrReleaseRunning), errors.Is(err, writers.ErrNoReleases), errors.Is(err, writers.ErrInvalid):
		return s.apiErrorOf(ns, err)
	case errors.Is(err, writers.ErrNotComplete):
		return errorf(CodeConflict, "the candidate of %s is not complete: only a complete version can be released", ns)
	case action == "start" && errors.Is(err, writers.ErrNotFound):
		return errorf(CodeNotFound, "%s has no live version to release against: flip one first", ns)
	case errors.Is(err, writers.ErrNotFound):
		return errorf(CodeNotFound, "no release of %s was started: start one first", ns)
	case errors.Is(err, writers.ErrConflict) && rec != nil && !(action == "promote" && rec.Active()):
		if rec.ID != "" && !(action == "start") {
			return errorf(CodeConflict, "release %s of %s is %s: it cannot be %s", rec.ID, ns, rec.State, pastTense(action))
		}
		return errorf(CodeConflict, "the release record of %s changed concurrently; read it and retry", ns)
	}
	return s.apiErrorOf(ns, err)
}

func pastTense(action string) string {
	switch action {
	case "pause":
		return "paused"
	case "resume":
		return "resumed"
	case "abort":
		return "aborted"
	case "promote":
		return "promoted"
	}
	return action + "ed"
}
