package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/scheduler"
)

func newScheduleCmd() *cobra.Command {
	var (
		dir, store, addr, stateDir, catchUp string
		sets                                []string
	)
	c := &cobra.Command{
		Use:   "schedule --jobs DIR",
		Short: "Run every job in a directory on its schedule (a daemon)",
		Long: `schedule runs each job file in DIR (*.yaml) on the job's schedule: five cron fields,
or six with seconds first, or a descriptor such as @daily, in the timezone a CRON_TZ=
prefix names (UTC otherwise). A job never runs twice at once: a run that comes due while
the previous one is still going is skipped and counted. Across daemons the store's writer
lease does the same; a run that finds it held is logged as skipped, not failed.

Runs missed while the daemon was down are skipped, or run once at start-up with
--catch-up once; DIR/schedule.yaml sets it per job:

  jobs:
    churn: {catch_up: once}

The daemon remembers each job's last scheduled time in --state DIR. SIGHUP reloads the
jobs directory (all or nothing: an invalid file keeps the jobs already loaded).
SIGINT/SIGTERM cancel the runs in progress, which leave resumable versions, and exit.
/metrics and /healthz are served on --addr.`,
		Example: `  staticref schedule --jobs jobs/
  staticref schedule --jobs /etc/staticref/jobs --store redis://redis:6379/0 --catch-up once
  kill -HUP $(pidof staticref)   # after editing a job file`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := requireFlags(c, "jobs"); err != nil {
				return err
			}
			policy, err := scheduler.ParseCatchUp(catchUp)
			if err != nil {
				return usagef("--catch-up: %v", err)
			}
			if store != "" {
				sets = append(sets, "sink.store="+store)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			runner := &scheduler.PipelineRunner{}
			s, err := scheduler.New(scheduler.Config{
				Dir: dir, Sets: sets, Runner: runner.Run, StateDir: stateDir, CatchUp: policy, Reload: hup,
			})
			if err != nil {
				return usageError{err}
			}
			if len(s.Jobs()) == 0 {
				slog.Warn("no job in the directory has a schedule; nothing will run until one does (add schedule: to a job file, then SIGHUP)", "dir", dir)
			}
			return s.RunWithHTTP(c.Context(), addr, nil)
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "jobs", "", "directory of job files (*.yaml)")
	f.StringVar(&store, "store", "", "store URL, overriding every job's sink.store")
	f.StringArrayVar(&sets, "set", nil, "override a field of every job: FIELD=VALUE (repeatable)")
	f.StringVar(&addr, "addr", ":9090", "address for /metrics and /healthz")
	f.StringVar(&stateDir, "state", ".staticref/schedule", "directory for the daemon's state (each job's last scheduled time)")
	f.StringVar(&catchUp, "catch-up", "skip", "runs missed while down: skip, or once (run once at start-up)")
	return c
}
