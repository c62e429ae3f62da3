package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/deploy/k8s"
	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/pipeline/progress"
	"github.com/staticref/staticref/writers"
)

func newRunCmd() *cobra.Command {
	var (
		jobFile, store, version, output string
		sets                            []string
		noFlip, wait                    bool
		leaseTTL                        time.Duration
		shardIndex, shardCount          int
		k8sJob                          string
	)
	c := &cobra.Command{
		Use:   "run --job FILE",
		Short: "Run a batch job: score every row and publish a new version",
		Long: `run reads the job's Parquet shards, scores every row with its ONNX model and writes
key -> prediction under a new version of the namespace. When the version is complete and
its gates pass, the live pointer flips to it (unless release.flip is manual or --no-flip).
A failing run or gate never touches the live version. One run writes a namespace at a
time (a lease in the store); a second fails at once, or waits with --wait. Progress is
committed per row group: re-running with --version ID of a failed or killed run skips
what it committed and completes the version with exactly one copy of every row.

With sink.export (a folder, or s3://, gs://, azblob://, file:// prefix) every row is
also written as Parquet to EXPORT/NAMESPACE/VERSION/part-NNNNN.parquet, listed in the
manifest; a failed export fails the version. A parquet:DIR or parquet+s3://… store
writes only that export (no lookup store, no live pointer), for warehouse consumers.

Exit status: 0 on success, 1 on a failed run or gate, 2 on bad usage, a missing or
invalid job file, or a job that does not fit its data or model (found before anything
is written).`,
		Example: `  staticref run --job jobs/churn.yaml
  # an ad-hoc backfill of some keys (here the shards of make demo): an incremental version
  # of just those rows on top of the live one
  staticref run --job jobs/churn.yaml --set 'source.uri=.staticref/demo/features/*.parquet' --set sink.mode=incremental
  # the same job into Redis (needs a server on localhost:6379)
  staticref run --job jobs/churn.yaml --store redis://localhost:6379/0
  # resume a failed run: committed row groups are skipped
  staticref run --job jobs/churn.yaml --version 20261127T020000Z
  # also export every row as Parquet into a bucket
  staticref run --job jobs/churn.yaml --set 'sink.export=s3://warehouse/predictions?region=eu-west-1'
  # export only: Parquet files and a manifest.json, no lookup store
  staticref run --job jobs/churn.yaml --store parquet+gs://warehouse/predictions`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := requireFlags(c, "job"); err != nil {
				return err
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			if version != "" {
				if err := writers.ValidateVersion(version); err != nil {
					return usagef("--version: %v", err)
				}
			}
			if store != "" {
				sets = append(sets, "sink.store="+store)
			}
			if k8sJob != "" {
				if version != "" {
					return usagef("--k8s-job and --version: give one")
				}
				version = k8s.VersionID(k8sJob)
			}
			if err := pipeline.CheckShards(shardIndex, shardCount, version); err != nil {
				return usageError{err}
			}
			job, err := jobs.Load(jobFile, sets)
			if err != nil {
				return usageError{err} // a job file that cannot be read is bad usage too
			}
			s, err := writers.Open(c.Context(), job.Sink.Store)
			if err != nil {
				return err
			}
			defer s.Close()
			start := time.Now()
			res, err := pipeline.Run(c.Context(), pipeline.Config{
				Job: job, Store: s, Version: version, NoFlip: noFlip, Wait: wait, LeaseTTL: leaseTTL, Log: slog.Default(),
				ShardIndex: shardIndex, ShardCount: shardCount,
				Progress: oneErrorLine{progress.Auto(os.Stderr, slog.Default()), progress.IsTerminal(os.Stderr)},
			})
			if res != nil && res.Manifest != nil {
				printSummary(c, res, output, job.Sink.Store)
			}
			if url, _ := c.Flags().GetString("pushgateway"); url != "" {
				sum := progress.FromManifest(job.Name, manifestOf(res), time.Since(start), err)
				sum.Shard, sum.ShardCount = shardIndex, shardCount
				pushRunMetrics(c.Context(), url, sum)
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&jobFile, "job", "", "job file (YAML)")
	f.StringArrayVar(&sets, "set", nil, "override a job field for this run: FIELD=VALUE (dotted path, repeatable)")
	f.StringVar(&store, "store", "", "store URL, overriding sink.store")
	f.StringVar(&version, "version", "", "version id to write, or of a failed run to resume (default: the start time, 20261127T020000Z)")
	f.StringVar(&k8sJob, "k8s-job", "", "write the version of this Kubernetes Job (its pods share it; see k8s render)")
	f.BoolVar(&noFlip, "no-flip", false, "leave the complete version for a later versions flip")
	f.BoolVar(&wait, "wait", false, "wait for another run of the namespace to finish instead of failing")
	f.IntVar(&shardIndex, "shard-index", envInt("JOB_COMPLETION_INDEX", 0), "this process's share of a sharded run (default $JOB_COMPLETION_INDEX)")
	f.IntVar(&shardCount, "shard-count", envInt("STATICREF_SHARD_COUNT", 0), "processes sharing the run's version (default $STATICREF_SHARD_COUNT)")
	f.DurationVar(&leaseTTL, "lease-ttl", pipeline.DefaultLeaseTTL, "writer lease lifetime: how long a killed run blocks the namespace")
	f.StringVarP(&output, "output", "o", "text", "summary format: text or json (the manifest)")
	f.String("pushgateway", os.Getenv(progress.PushEnv), "push the run's metrics to this Prometheus Pushgateway URL at the end (default $"+progress.PushEnv+")")
	return c
}

// oneErrorLine keeps a failed run's error to the one "staticref: ..." line Main prints: it
// drops the reporter's own failure line (an ERROR log line, or the bar's last line),
// which repeats the error and whose counts the summary on stdout already has.
type oneErrorLine struct {
	progress.Reporter
	tty bool
}

func (r oneErrorLine) Finish(s progress.Summary) {
	if s.Err == nil {
		r.Reporter.Finish(s)
		return
	}
	if r.tty {
		fmt.Fprint(os.Stderr, "\r\x1b[K") // clear the bar; the error goes on its line
	}
}

func manifestOf(res *pipeline.Result) *writers.Manifest {
	if res == nil {
		return nil
	}
	return res.Manifest
}

// pushRunMetrics pushes, even after a cancelled run; a gateway that is down is logged,
// and does not change the run's exit status.
func pushRunMetrics(ctx context.Context, url string, s progress.Summary) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := progress.Push(ctx, url, s); err != nil {
		slog.Warn("metrics not pushed", "err", err)
	}
}

func printSummary(c *cobra.Command, res *pipeline.Result, output, store string) {
	m := res.Manifest
	if output == "json" {
		enc := json.NewEncoder(c.OutOrStdout())
		enc.SetIndent("", "  ")
		enc.Encode(m)
		return
	}
	w := c.OutOrStdout()
	fmt.Fprintf(w, "namespace %s version %s: %s\n", m.Namespace, m.Version, m.State)
	fmt.Fprintf(w, "  rows read %d, written %d, skipped %d\n", m.RowsRead, m.RowsWritten, m.RowsSkipped)
	if m.Incremental() {
		fmt.Fprintf(w, "  incremental on base %s (chain depth %d)\n", m.Base, m.ChainDepth())
	}
	for reason, n := range m.SkipReasons {
		fmt.Fprintf(w, "    skipped %d: %s\n", n, reason)
	}
	for _, g := range m.Gates {
		status := "pass"
		if !g.Passed {
			status = "FAIL"
		}
		fmt.Fprintf(w, "  gate %s: %s (%s)\n", g.Name, status, g.Detail)
	}
	if !m.CompletedAt.IsZero() && !m.StartedAt.IsZero() {
		fmt.Fprintf(w, "  took %s\n", m.CompletedAt.Sub(m.StartedAt).Round(1e6))
	}
	switch {
	case res.Waiting > 0:
		fmt.Fprintf(w, "  shard committed; %d row groups left to other shards\n", res.Waiting)
	case res.Flipped:
		prev := res.Previous
		if prev == "" {
			prev = "none"
		}
		fmt.Fprintf(w, "  live: %s (was %s)\n", m.Version, prev)
	case res.Release != nil:
		fmt.Fprintf(w, "  release: %s; follow it with: staticref release status --store %s --namespace %s\n",
			releaseLine(res.Release), writers.RedactURL(store), m.Namespace)
	case m.State == writers.StateComplete:
		fmt.Fprintf(w, "  not live; flip with: staticref versions flip --store %s --namespace %s %s\n", writers.RedactURL(store), m.Namespace, m.Version)
	}
	if len(res.Removed) > 0 {
		fmt.Fprintf(w, "  removed: %s\n", strings.Join(res.Removed, ", "))
	}
}

// releaseLine says what release a run started.
func releaseLine(r *writers.Release) string {
	head := fmt.Sprintf("%s %s of %s against live %s", r.Mode, r.ID, r.Candidate, r.Live)
	if r.Mode == writers.ModeShadow {
		return fmt.Sprintf("%s started, %g%% of requests also read the candidate", head, r.Shadow.SamplePercent)
	}
	steps := make([]string, len(r.Canary.Steps))
	for i, w := range r.Canary.Steps {
		steps[i] = strconv.FormatFloat(w, 'g', -1, 64) + "%"
	}
	return fmt.Sprintf("%s started at %g%% of requests (steps %s, each judged for %s)", head, r.WeightPercent,
		strings.Join(steps, ", "), time.Duration(r.Canary.Interval))
}

// envInt is an integer flag default taken from the environment (0 when unset or bad).
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}
