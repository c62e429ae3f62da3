// Command staticref precomputes ML predictions in batch and serves them by key.
//
// This package only wires: flags, config loading and construction. What a command does
// lives in the packages it calls.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/all" // every store driver
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a failed run or gate, a key not found
	exitUsage  = 2 // bad usage or config
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError marks bad usage: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// silentError is an exit status whose message was already printed.
type silentError struct{ code int }

func (e silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var se silentError
	if errors.As(err, &se) {
		return se.code
	}
	fmt.Fprintf(stderr, "staticref: %v\n", err)
	var ue usageError
	// ErrMismatch: a job that does not fit its data or model is bad config; running it
	// again cannot succeed.
	if errors.As(err, &ue) || errors.Is(err, jobs.ErrInvalid) || errors.Is(err, pipeline.ErrMismatch) {
		return exitUsage
	}
	return exitFailed
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "staticref",
		Short: "Precompute ML predictions in batch and serve them by key",
		Long: `staticref reads Parquet feature shards, runs an ONNX model over every row, and writes
key -> prediction into a store under a new version of a namespace. When the version is
complete and passes its gates, the namespace's live pointer flips to it atomically; old
versions stay for instant rollback.`,
		Example: `  staticref testdata generate --out demo --rows 200000 --shards 4
  staticref run --job jobs/demo.yaml --set 'source.uri=demo/features/*.parquet'
  staticref get --store pebble:.staticref/store --namespace demo u000000042`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		lvl, _ := c.Flags().GetString("log-level")
		var level slog.Level
		if err := level.UnmarshalText([]byte(lvl)); err != nil {
			return usagef("--log-level %q: use debug, info, warn or error", lvl)
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
		return nil
	}
	group(root)
	root.AddCommand(newRunCmd(), newGetCmd(), newDeleteCmd(), newVersionsCmd(), newInspectCmd(), newTestdataCmd(), newScheduleCmd(), newK8sCmd(), newServeCmd(), newReleaseCmd())
	return root
}

// args checks positional arguments, as a usage error.
func args(min, max int) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if len(a) < min || (max >= 0 && len(a) > max) {
			return usagef("%s: wrong number of arguments (see --help)", c.CommandPath())
		}
		return nil
	}
}

// group makes c a command that only holds subcommands: alone it prints its help; with
// anything else it is bad usage (exit 2), not cobra's help (exit 0) or its error (exit 1).
func group(c *cobra.Command) *cobra.Command {
	c.SuggestionsMinimumDistance = 2 // cobra's default, which only its own check sets
	c.Args = func(c *cobra.Command, a []string) error {
		if len(a) == 0 {
			return nil
		}
		hint := ""
		if s := c.SuggestionsFor(a[0]); len(s) > 0 {
			hint = "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usagef("unknown command %q for %q%s (see %s --help)", a[0], c.CommandPath(), hint, c.CommandPath())
	}
	c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return c
}

// checkOutput validates an -o value before any work is done.
func checkOutput(output string) error {
	if output != "text" && output != "json" {
		return usagef("-o %s: use text or json", output)
	}
	return nil
}

// requireFlags fails with a usage error when a flag was not given.
func requireFlags(c *cobra.Command, names ...string) error {
	for _, n := range names {
		if v, _ := c.Flags().GetString(n); v == "" {
			return usagef("%s: --%s is required (see --help)", c.CommandPath(), n)
		}
	}
	return nil
}

// openStore opens the store of a command that reads or manages what runs wrote (get,
// versions): a URL that cannot be right is bad usage (exit 2); a store that is missing,
// cannot be reached or is locked is a failure (exit 1). It never creates a store (run
// opens its job's, which job validation has checked, with writers.Open).
// refuseExportOnly refuses an export-only parquet store where lookups are needed.
func refuseExportOnly(what, url string) error {
	u, err := writers.ParseURL(url)
	if err != nil || !u.ExportOnly() {
		return nil
	}
	return usagef("%s: %s is an export-only store (Parquet files under %s/NAMESPACE/VERSION/), with nothing to look up: "+
		"read its files, use versions list/show on it, or look keys up in a lookup store (pebble:, redis://, bigtable://) that the job also exports from with sink.export",
		what, u.Redacted(), writers.ExportName(u.Export))
}

func openStore(c *cobra.Command, url string) (*writers.Store, error) {
	if err := writers.CheckURL(url); err != nil {
		return nil, usageError{fmt.Errorf("store: %w", err)}
	}
	return writers.OpenExisting(c.Context(), url)
}
