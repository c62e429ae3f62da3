package lookup

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the service's Prometheus metrics, on a registry of its own so that several
// services (tests) can live in one process.
type metrics struct {
	reg       *prometheus.Registry
	latency   *prometheus.HistogramVec // namespace, source
	answers   *prometheus.CounterVec   // namespace, source
	fallbacks *prometheus.CounterVec   // namespace, source
	errors    *prometheus.CounterVec   // code
	hits      prometheus.Counter
	misses    prometheus.Counter
	flips     *prometheus.CounterVec // namespace
	live      *prometheus.GaugeVec   // namespace, version
	age       *prometheus.GaugeVec   // namespace
	stale     *prometheus.GaugeVec   // namespace
	grpcCalls *prometheus.CounterVec // method, code

	// Releases (release.go, judge.go, shadow.go).
	relAnswers    *prometheus.CounterVec   // namespace, arm
	relWeight     *prometheus.GaugeVec     // namespace
	relState      *prometheus.GaugeVec     // namespace, state
	judgements    *prometheus.CounterVec   // namespace, outcome
	aborts        *prometheus.CounterVec   // namespace, reason (the failed metric, or admin)
	shadowAbsDiff *prometheus.HistogramVec // namespace
	shadowDropped *prometheus.CounterVec   // namespace
	relPSI        *prometheus.GaugeVec     // namespace
	srm           *prometheus.GaugeVec     // namespace

	nHits, nMisses atomic.Int64 // for the hit ratio
}

func (m *metrics) hit() {
	m.hits.Inc()
	m.nHits.Add(1)
}

func (m *metrics) miss() {
	m.misses.Inc()
	m.nMisses.Add(1)
}

// registerReady adds staticref_namespace_ready{namespace=ns}, computed when scraped.
func (m *metrics) registerReady(ns string, ready func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "staticref_namespace_ready",
		Help:        "1 while the namespace is ready (see /readyz): its store open and answering, a live version loaded.",
		ConstLabels: prometheus.Labels{"namespace": ns},
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "staticref_request_duration_seconds",
			Help:    "Lookup request latency by namespace and answer source (batch for batchGet, error for failed requests).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"namespace", "source"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_answers_total", Help: "Keys answered, by namespace and source.",
		}, []string{"namespace", "source"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_fallbacks_total", Help: "Keys the live version lacks that a fallback answered, by source.",
		}, []string{"namespace", "source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_errors_total", Help: "Error answers by error code.",
		}, []string{"code"}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "staticref_cache_hits_total", Help: "Key lookups answered from the in-process cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "staticref_cache_misses_total", Help: "Key lookups that went to the store.",
		}),
		flips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_flips_seen_total", Help: "Live version changes this process has picked up.",
		}, []string{"namespace"}),
		live: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_live_version", Help: "The live version being served (always 1).",
		}, []string{"namespace", "version"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_namespace_age_seconds", Help: "Age of the live version: now minus its completion time.",
		}, []string{"namespace"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_namespace_stale", Help: "1 when the live version is older than max_staleness.",
		}, []string{"namespace"}),
	}
	m.relAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "staticref_release_answers_total", Help: "Keys answered while a release routes, by arm (live or candidate).",
	}, []string{"namespace", "arm"})
	m.relWeight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "staticref_release_weight_percent", Help: "The candidate's weight of the release this replica serves (0: none routes).",
	}, []string{"namespace"})
	m.relState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "staticref_release_state", Help: "1 for the state of the namespace's release record (running, paused, promoted, aborted).",
	}, []string{"namespace", "state"})
	m.judgements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "staticref_release_judgements_total", Help: "Canary intervals this replica judged, by outcome (hold, pass, fail).",
	}, []string{"namespace", "outcome"})
	m.aborts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "staticref_release_aborts_total", Help: "Releases this replica aborted, by reason: the failed metric (not_found_rate, error_rate, psi) or admin.",
	}, []string{"namespace", "reason"})
	m.shadowAbsDiff = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "staticref_shadow_abs_diff",
		Help:    "|candidate - live| of the first output's first value, per compared shadow key.",
		Buckets: []float64{1e-6, 1e-5, 1e-4, 1e-3, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"namespace"})
	m.shadowDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "staticref_shadow_dropped_total", Help: "Sampled shadow keys dropped because the comparison queue was full.",
	}, []string{"namespace"})
	m.relPSI = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "staticref_release_psi", Help: "PSI of the candidate's answers against the live version's deciles: the last judged canary interval, or a shadow so far.",
	}, []string{"namespace"})
	m.srm = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "staticref_release_srm_p_value", Help: "Sample-ratio-mismatch p-value (chi-squared) of an A/B test's distinct units per arm.",
	}, []string{"namespace"})
	m.grpcCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "staticref_grpc_requests_total", Help: "gRPC calls of the lookup API by method and status code.",
	}, []string{"method", "code"})
	m.reg.MustRegister(m.grpcCalls)
	m.reg.MustRegister(m.relAnswers, m.relWeight, m.relState, m.judgements, m.aborts, m.shadowAbsDiff, m.shadowDropped, m.relPSI, m.srm)
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "staticref_cache_hit_ratio", Help: "Cache hits / (hits + misses) since start.",
	}, func() float64 {
		h, mi := float64(m.nHits.Load()), float64(m.nMisses.Load())
		if h+mi == 0 {
			return 0
		}
		return h / (h + mi)
	})
	m.reg.MustRegister(m.latency, m.answers, m.fallbacks, m.errors, m.hits, m.misses, m.flips, m.live, m.age, m.stale, ratio,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// nsMetrics are one namespace's series of the request metrics, looked up once (New)
// rather than by label values on every request: WithLabelValues hashes the labels and
// takes a lock, which the hot path of a cache hit cannot afford.
type nsMetrics struct {
	answers, fallbacks map[string]prometheus.Counter  // by source
	latency            map[string]prometheus.Observer // by source, and batch and error
}

// answerSources are the sources an answer can have.
var answerSources = []string{SourcePrecomputed, SourceFallbackSegment, SourceFallbackDefault, SourceOnline}

func (m *metrics) forNamespace(ns string) *nsMetrics {
	nm := &nsMetrics{answers: map[string]prometheus.Counter{}, fallbacks: map[string]prometheus.Counter{},
		latency: map[string]prometheus.Observer{}}
	for _, src := range answerSources {
		nm.answers[src] = m.answers.WithLabelValues(ns, src)
		nm.latency[src] = m.latency.WithLabelValues(ns, src)
		if src != SourcePrecomputed {
			nm.fallbacks[src] = m.fallbacks.WithLabelValues(ns, src)
		}
	}
	for _, l := range []string{"batch", "error"} {
		nm.latency[l] = m.latency.WithLabelValues(ns, l)
	}
	return nm
}

func (nm *nsMetrics) answer(source string)   { nm.answers[source].Inc() }
func (nm *nsMetrics) fallback(source string) { nm.fallbacks[source].Inc() }

// observe records one request's latency under label (a source, batch or error).
func (nm *nsMetrics) observe(label string, start time.Time) {
	nm.latency[label].Observe(time.Since(start).Seconds())
}
