package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/writers"
)

func newVersionsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "versions",
		Short: "List, show, flip, roll back and garbage-collect a namespace's versions",
		Example: `  staticref versions list --store pebble:.staticref/store --namespace demo -o json
  staticref versions rollback --store pebble:.staticref/store --namespace demo
  # make a complete version live: an id from versions list
  staticref versions flip --store pebble:.staticref/store --namespace demo 20261127T020000Z
  staticref versions gc --store pebble:.staticref/store --namespace demo --keep 2
  # fold a chain of incremental versions into one full version
  staticref versions compact --store pebble:.staticref/store --namespace demo`,
	}
	group(c)
	var store, ns string
	pf := c.PersistentFlags()
	pf.StringVar(&store, "store", "", "store URL")
	pf.StringVar(&ns, "namespace", "", "namespace")
	// open checks the flags and a VERSION argument, if any, then opens the store, which
	// must exist: these commands never create one.
	open := func(c *cobra.Command, a []string) (*writers.Store, error) {
		if err := requireFlags(c, "store", "namespace"); err != nil {
			return nil, err
		}
		if err := writers.ValidateNamespace(ns); err != nil {
			return nil, usageError{err}
		}
		for _, v := range a {
			if err := writers.ValidateVersion(v); err != nil {
				return nil, usageError{err}
			}
		}
		return openStore(c, store)
	}

	var output string
	list := &cobra.Command{
		Use:   "list --store URL --namespace NS [-o json]",
		Short: "List versions in flip-history order, with their state, row counts and the rollback target",
		Long: `List a namespace's versions, oldest first in flip history: in the order they were
last flipped live (FLIPPED), whatever their ids. A rollback moves nothing in this order;
it steps back through it, so after one the live version is followed by the version it
left. A version never live stands where it was completed (or, unfinished, started).

The version "versions rollback" would make live is marked "rollback target" (with
-o json, "rollback_target": true); a version a rollback left, which only a flip brings
back, is marked "left by rollback" ("left_by_rollback": true).`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			s, err := open(c, nil)
			if err != nil {
				return err
			}
			defer s.Close()
			_, vs, err := writers.List(c.Context(), s, ns)
			if err != nil {
				return err
			}
			if len(vs) == 0 {
				// Not a failure: -o json prints [] and the table is empty; stderr says why.
				fmt.Fprintf(c.ErrOrStderr(), "staticref: namespace %s has no versions in %s\n", ns, writers.RedactURL(store))
			}
			if output == "json" {
				rows := make([]versionRow, len(vs))
				for i, v := range vs {
					rows[i] = newVersionRow(v)
				}
				return writeJSON(c, rows)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tSTATE\tROWS\tSKIPPED\tCOMPLETED\tFLIPPED\tBASE\tDEPTH\tNOTE")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d\t%s\n", v.Version, v.Effective, v.RowsWritten, v.RowsSkipped,
					timeOrDash(v.CompletedAt), timeOrDash(flippedAt(v)), orDash(v.Base), v.ChainDepth(), versionNote(v))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "text", "text or json")

	show := &cobra.Command{
		Use:   "show --store URL --namespace NS [VERSION]",
		Short: "Print a version's manifest as JSON (default: the live version)",
		Args:  args(0, 1),
		RunE: func(c *cobra.Command, a []string) error {
			s, err := open(c, a)
			if err != nil {
				return err
			}
			defer s.Close()
			live, err := s.Live(c.Context(), ns)
			if err != nil {
				return err
			}
			v := live
			if len(a) == 1 {
				v = a[0]
			}
			if v == "" {
				return fmt.Errorf("namespace %s has no live version; name one (see versions list)", ns)
			}
			m, err := s.Manifest(c.Context(), ns, v)
			if err != nil {
				return noVersion(err, ns, v)
			}
			return writeJSON(c, struct {
				*writers.Manifest
				State writers.State `json:"state"`
				Mode  string        `json:"mode"`
				Depth int           `json:"depth"`
			}{m, writers.EffectiveState(m, live), modeName(m), m.ChainDepth()})
		},
	}

	flip := &cobra.Command{
		Use:   "flip --store URL --namespace NS VERSION",
		Short: "Make a complete version live (compare-and-swap)",
		Args:  args(1, 1),
		RunE: func(c *cobra.Command, a []string) error {
			s, err := open(c, a)
			if err != nil {
				return err
			}
			defer s.Close()
			prev, err := writers.Flip(c.Context(), s, ns, a[0])
			if err != nil {
				return noVersion(err, ns, a[0])
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: live %s (was %s)\n", ns, a[0], orNone(prev))
			return nil
		},
	}

	rollback := &cobra.Command{
		Use:   "rollback --store URL --namespace NS",
		Short: "Flip back to the version that was live before the live one",
		Long: `Flip back one step in the flip history, to the version that was live before the live
one (the one "versions list" marks "rollback target"), whatever the ids.

A rollback never returns to the version it left: a second rollback goes to the version
live before that one, and so on. "versions flip VERSION" brings a version that a rollback
left back, as a new step in the history.`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := open(c, nil)
			if err != nil {
				return err
			}
			defer s.Close()
			from, to, err := writers.Rollback(c.Context(), s, ns)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: live %s (was %s)\n", ns, to, from)
			return nil
		},
	}

	var keep int
	var grace time.Duration
	gc := &cobra.Command{
		Use:   "gc --store URL --namespace NS [--keep N]",
		Short: "Remove versions beyond --keep previous ones, failed and abandoned ones; never the live one",
		Long: `Remove the versions of a namespace that are no longer needed, judged by the flip history
(see "versions list"), never by id. Kept: the live version; the --keep previous versions
that as many rollbacks would return to; versions a rollback left on the way to the live
one; complete versions never live that were completed after the live one went live; and
writing versions younger than --grace. Everything else that is not retired goes: older
previous versions, complete versions the live one superseded, failed and abandoned runs.
A removed version's rows are deleted; its manifest stays, as retired.`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if keep < 0 {
				return usagef("--keep %d: use 0 or more", keep)
			}
			s, err := open(c, nil)
			if err != nil {
				return err
			}
			defer s.Close()
			removed, err := writers.GC(c.Context(), s, ns, keep, grace, time.Now())
			if err != nil {
				return err
			}
			for _, v := range removed {
				fmt.Fprintf(c.OutOrStdout(), "removed %s\n", v)
			}
			if len(removed) == 0 {
				fmt.Fprintf(c.ErrOrStderr(), "%s: nothing to remove (keep %d previous versions)\n", ns, keep)
			}
			return nil
		},
	}
	gc.Flags().IntVar(&keep, "keep", 2, "previous versions to keep besides the live one")
	gc.Flags().DurationVar(&grace, "grace", 24*time.Hour, "age after which a version still writing counts as abandoned")

	c.AddCommand(list, show, flip, rollback, gc, newCompactCmd(&store, &ns))
	return c
}

// versionRow is one element of `versions list -o json`.
type versionRow struct {
	Version        string        `json:"version"`
	State          writers.State `json:"state"`
	Job            string        `json:"job"`
	RowsRead       int64         `json:"rows_read"`
	RowsWritten    int64         `json:"rows_written"`
	RowsSkipped    int64         `json:"rows_skipped"`
	StartedAt      time.Time     `json:"started_at"`
	CompletedAt    time.Time     `json:"completed_at,omitzero"`
	LiveAt         time.Time     `json:"live_at,omitzero"`
	FlippedAt      time.Time     `json:"flipped_at,omitzero"`
	LeftLiveAt     time.Time     `json:"left_live_at,omitzero"`
	RolledBackAt   time.Time     `json:"rolled_back_at,omitzero"`
	RollbackTarget bool          `json:"rollback_target"`
	LeftByRollback bool          `json:"left_by_rollback"`
	ModelSHA256    string        `json:"model_sha256"`
	// Mode is full or incremental; Base the version an incremental one builds on; Depth
	// the length of its chain (1 for a full version).
	Mode  string `json:"mode"`
	Base  string `json:"base,omitempty"`
	Depth int    `json:"depth"`
}

func newVersionRow(v writers.Version) versionRow {
	return versionRow{
		Version: v.Version, State: v.Effective, Job: v.Job,
		RowsRead: v.RowsRead, RowsWritten: v.RowsWritten, RowsSkipped: v.RowsSkipped,
		StartedAt: v.StartedAt, CompletedAt: v.CompletedAt,
		LiveAt: v.LiveAt, FlippedAt: v.FlippedAt, LeftLiveAt: v.LeftLiveAt, RolledBackAt: v.RolledBackAt,
		RollbackTarget: v.RollbackTarget, LeftByRollback: v.LeftByRollback,
		ModelSHA256: v.Model.SHA256,
		Mode:        modeName(v.Manifest), Base: v.Base, Depth: v.ChainDepth(),
	}
}

// flippedAt is when v was last flipped live, as the catalog orders it: LiveAt in a
// manifest written before FlippedAt existed.
func flippedAt(v writers.Version) time.Time {
	if !v.FlippedAt.IsZero() {
		return v.FlippedAt
	}
	return v.LiveAt
}

// versionNote is the NOTE column of `versions list`.
func versionNote(v writers.Version) string {
	switch {
	case v.RollbackTarget:
		return "rollback target"
	case v.LeftByRollback:
		return "left by rollback"
	}
	return "-"
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func writeJSON(c *cobra.Command, v any) error {
	enc := json.NewEncoder(c.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// noVersion says plainly that a version named on the command line does not exist;
// other errors pass through.
func noVersion(err error, ns, version string) error {
	if errors.Is(err, writers.ErrNotFound) {
		return fmt.Errorf("version %s of %s does not exist (see versions list)", version, ns)
	}
	return err
}

// modeName is a manifest's mode, full for one written before modes existed.
func modeName(m *writers.Manifest) string {
	if m.Incremental() {
		return writers.VersionIncremental
	}
	return writers.VersionFull
}
