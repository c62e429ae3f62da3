package scheduler

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

type metrics struct {
	runs        *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	duration    *prometheus.HistogramVec
	running     *prometheus.GaugeVec
	next        *prometheus.GaugeVec
	jobs        prometheus.Gauge
	reloads     *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_schedule_runs_total",
			Help: "Scheduled runs by job and outcome (success, failure, cancelled, skipped_overlap, skipped_lease).",
		}, []string{"job", "outcome"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_schedule_last_success_timestamp_seconds",
			Help: "When the job's last successful run finished (Unix seconds).",
		}, []string{"job"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "staticref_schedule_run_duration_seconds",
			Help:    "How long scheduled runs took.",
			Buckets: prometheus.ExponentialBuckets(1, 2.5, 12), // 1s to about 6.6h
		}, []string{"job"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_schedule_running",
			Help: "1 while a run of the job is in progress.",
		}, []string{"job"}),
		next: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "staticref_schedule_next_run_timestamp_seconds",
			Help: "When the job next comes due (Unix seconds).",
		}, []string{"job"}),
		jobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "staticref_schedule_jobs",
			Help: "Jobs scheduled.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "staticref_schedule_reloads_total",
			Help: "Reloads of the jobs directory by result.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.runs, m.lastSuccess, m.duration, m.running, m.next, m.jobs, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// The process and Go collectors, unless the caller's registry already has them.
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	return m, nil
}

// Handler serves /metrics and /healthz (200 while Run is scheduling, 503 otherwise).
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.alive.Load() {
			http.Error(w, "not scheduling", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// RunWithHTTP runs the scheduler and serves Handler on addr until ctx ends. ready, if
// not nil, is called with the bound address (useful with ":0").
func (s *Scheduler) RunWithHTTP(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		err := s.Run(gctx)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		return err
	})
	return g.Wait()
}
