package lookup

import (
	"sync/atomic"

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
