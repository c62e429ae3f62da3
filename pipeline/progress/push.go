package progress

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/staticref/staticref/writers"
)

// PushEnv is the environment variable that sets --pushgateway.
const PushEnv = "STATICREF_PUSHGATEWAY"

// FromManifest summarises a finished run from its manifest (nil when the run failed
// before creating a version) and error.
func FromManifest(job string, m *writers.Manifest, took time.Duration, err error) Summary {
	s := Summary{Job: job, Duration: took, Err: err}
	if m != nil {
		s.Namespace, s.Version = m.Namespace, m.Version
		s.RowsRead, s.RowsWritten, s.RowsSkipped = m.RowsRead, m.RowsWritten, m.RowsSkipped
	}
	return s
}

// Push sends a run's metrics to the Pushgateway at url, in the group
// {job="staticref", staticref_job=JOB[, shard=I]}:
//
//	staticref_run_rows_read, _rows_written, _rows_skipped   rows of the last run
//	staticref_run_duration_seconds                          how long it took
//	staticref_run_success                                   1 or 0
//	staticref_run_last_success_timestamp_seconds            only pushed on success
//
// It adds to the group (HTTP POST) rather than replacing it, so a failed run leaves the
// last success's timestamp in place: alert on time() - that > your tolerance.
func Push(ctx context.Context, url string, s Summary) error {
	if url == "" {
		return errors.New("progress: no pushgateway URL")
	}
	gauge := func(name, help string, v float64) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		g.Set(v)
		return g
	}
	success := 0.0
	if s.Err == nil {
		success = 1
	}
	p := push.New(url, "staticref").Grouping("staticref_job", s.Job).
		Collector(gauge("staticref_run_rows_read", "Rows the last run read.", float64(s.RowsRead))).
		Collector(gauge("staticref_run_rows_written", "Rows the last run wrote.", float64(s.RowsWritten))).
		Collector(gauge("staticref_run_rows_skipped", "Rows the last run skipped.", float64(s.RowsSkipped))).
		Collector(gauge("staticref_run_duration_seconds", "How long the last run took.", s.Duration.Seconds())).
		Collector(gauge("staticref_run_success", "1 if the last run succeeded, else 0.", success))
	if s.ShardCount > 1 {
		p = p.Grouping("shard", strconv.Itoa(s.Shard))
	}
	if s.Err == nil {
		p = p.Collector(gauge("staticref_run_last_success_timestamp_seconds", "When the last successful run finished (Unix seconds).",
			float64(time.Now().Unix())))
	}
	if err := p.AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to %s: %w", writers.RedactURL(url), redacted{err, url})
	}
	return nil
}

// redacted is an error whose message shows url only with its password replaced: the
// push library and net/http may quote the gateway's URL in their errors.
type redacted struct {
	error
	url string
}

func (r redacted) Error() string {
	msg := r.error.Error()
	if shown := writers.RedactURL(r.url); shown != r.url {
		msg = strings.ReplaceAll(msg, r.url, shown)
		if pw, ok := writers.URLPassword(r.url); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

func (r redacted) Unwrap() error { return r.error }
