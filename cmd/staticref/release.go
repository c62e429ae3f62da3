package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/writers"
)

// historyShown is how many of a release's newest history entries the text form prints.
const historyShown = 5

func newReleaseCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "release",
		Short: "Start, watch, promote, pause, resume and abort a canary, A/B test or shadow of a candidate version",
		Long: `A release serves a complete candidate version beside the live one: a canary (a share of
units, judged every interval, stepped up and flipped live at 100 or aborted), an A/B test
(a fixed share until promoted or aborted) or a shadow (every answer from live; a sample
of requests also reads the candidate and compares). A unit (the request's ?unit= or
Staticref-Unit header, else the key) answers from the candidate when its bucket,
SHA-256(salt + ":" + unit) mod 10000, is below weight * 100. The lookup service follows
the release within a second. See docs/releases.md.

Each subcommand prints the release record: as aligned text, or with -o json as the record
itself ("status" of a namespace without a release prints null).`,
		Example: `  # a canary over 1%, 10%, 50%, then 100% (a flip), judged every 10 minutes
  staticref release start --store pebble:.staticref/store --namespace churn \
    --candidate 20261128T020000Z --steps 1,10,50,100 --interval 10m
  # an A/B test with half of the users on the candidate
  staticref release start --store pebble:.staticref/store --namespace churn \
    --candidate 20261128T020000Z --mode ab --weight 50 --salt churn-ab-1
  staticref release status --store pebble:.staticref/store --namespace churn -o json
  staticref release abort --store pebble:.staticref/store --namespace churn --reason "bad PSI"`,
	}
	group(c)
	var store, ns, output string
	pf := c.PersistentFlags()
	pf.StringVar(&store, "store", "", "store URL")
	pf.StringVar(&ns, "namespace", "", "namespace")
	pf.StringVarP(&output, "output", "o", "text", "text or json")

	// check validates the flags every subcommand shares; open then opens the store, which
	// must exist: these commands never create one.
	check := func(c *cobra.Command) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		if err := requireFlags(c, "store", "namespace"); err != nil {
			return err
		}
		if err := writers.ValidateNamespace(ns); err != nil {
			return usageError{err}
		}
		return nil
	}
	open := func(c *cobra.Command) (*writers.Store, error) { return openStore(c, store) }
	// show prints rel, with the version live now when it is no longer rel.Live.
	show := func(c *cobra.Command, s *writers.Store, rel *writers.Release) error {
		if output == "json" {
			return writeJSON(c, rel)
		}
		if rel == nil {
			fmt.Fprintln(c.OutOrStdout(), "no release")
			return nil
		}
		live, _ := s.Live(c.Context(), ns) // only a note: the record is what was asked for
		return printRelease(c.OutOrStdout(), rel, live)
	}

	var spec writers.ReleaseSpec
	var steps string
	start := &cobra.Command{
		Use:   "start --store URL --namespace NS --candidate VERSION [--mode canary|ab|shadow] [--weight P | --steps 1,10,50,100 --interval D] [--salt S]",
		Short: "Start a release of a complete candidate against the live version",
		Long: `Start a release of --candidate, a complete version that is not live, against the live
version. Only one release of a namespace runs at a time: promote or abort it first.

  canary  --steps 1,10,50,100: the candidate answers for 1% of units; every --interval the
          counts of every lookup replica are judged (hold, pass or fail) and a pass moves
          to the next step; passing 100 flips the candidate live. --weight P instead
          keeps it at P% (still judged) until promoted or aborted.
  ab      --weight P (above 0, below 100): fixed until promoted or aborted.
  shadow  every answer from live; --sample-percent of requests also read the candidate.

--salt fixes the bucketing (default: the release id), so that apps and SQL can recompute
each unit's arm; the same salt gives the same arms in a later release.`,
		Example: `  staticref release start --store pebble:.staticref/store --namespace churn \
    --candidate 20261128T020000Z --steps 1,10,50,100 --interval 10m --min-requests 500
  staticref release start --store pebble:.staticref/store --namespace churn \
    --candidate 20261128T020000Z --mode shadow --sample-percent 25`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := check(c); err != nil {
				return err
			}
			if err := requireFlags(c, "candidate"); err != nil {
				return err
			}
			if err := releaseSpec(c, &spec, steps); err != nil {
				return err
			}
			spec.Namespace, spec.By = ns, releaseBy()
			s, err := open(c)
			if err != nil {
				return err
			}
			defer s.Close()
			rel, err := writers.StartRelease(c.Context(), s, spec, time.Now())
			if err != nil {
				return releaseRefused(err, "start", ns, nil)
			}
			return show(c, s, rel)
		},
	}
	sf := start.Flags()
	d := writers.DefaultCanary
	sf.StringVar(&spec.Candidate, "candidate", "", "the complete version to release (see versions list)")
	sf.StringVar(&spec.Mode, "mode", writers.ModeCanary, "canary, ab or shadow")
	sf.Float64Var(&spec.WeightPercent, "weight", 0, "percent of units on the candidate: an A/B test's, or a canary's fixed weight")
	sf.StringVar(&steps, "steps", "", "a canary's rising weights in percent, ending at 100, e.g. 1,10,50,100")
	spec.Canary.Interval = d.Interval
	sf.Var((*durationFlag)(&spec.Canary.Interval), "interval", "a canary's judgement interval")
	sf.StringVar(&spec.Salt, "salt", "", "the bucketing salt (default: the release id)")
	sf.Int64Var(&spec.Canary.MinRequests, "min-requests", d.MinRequests, "canary: hold an interval while either arm has fewer requests")
	sf.Float64Var(&spec.Canary.MaxNotFoundIncrease, "max-not-found-increase", d.MaxNotFoundIncrease, "canary: fail when the candidate's not-found rate exceeds live's by more")
	sf.Float64Var(&spec.Canary.MaxErrorIncrease, "max-error-increase", d.MaxErrorIncrease, "canary: fail when the candidate's error rate exceeds live's by more")
	sf.Float64Var(&spec.Canary.MaxPSI, "max-psi", d.MaxPSI, "canary: fail when the PSI of the candidate's answers against live's deciles is higher")
	sf.IntVar(&spec.Canary.FailureLimit, "failure-limit", d.FailureLimit, "canary: abort after this many failed intervals in a row")
	sf.Float64Var(&spec.Shadow.SamplePercent, "sample-percent", writers.DefaultShadowSamplePercent, "shadow: percent of requests that also read the candidate")

	status := &cobra.Command{
		Use:   "status --store URL --namespace NS [-o json]",
		Short: "Print the namespace's release: arms, weight, state and the last judgements",
		Args:  args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := check(c); err != nil {
				return err
			}
			s, err := open(c)
			if err != nil {
				return err
			}
			defer s.Close()
			rel, err := s.Release(c.Context(), ns)
			if err != nil {
				return releaseRefused(err, "status", ns, nil)
			}
			return show(c, s, rel)
		},
	}

	// action is a subcommand that changes the running release.
	type actionFunc func(c *cobra.Command, s *writers.Store) (*writers.Release, error)
	action := func(name, short string, do actionFunc) *cobra.Command {
		return &cobra.Command{
			Use:   name + " --store URL --namespace NS",
			Short: short,
			Args:  args(0, 0),
			RunE: func(c *cobra.Command, _ []string) error {
				if err := check(c); err != nil {
					return err
				}
				s, err := open(c)
				if err != nil {
					return err
				}
				defer s.Close()
				rel, err := do(c, s)
				if err != nil {
					return releaseRefused(err, name, ns, rel)
				}
				return show(c, s, rel)
			},
		}
	}
	promote := action("promote", "Flip the candidate live now, which ends the release as promoted",
		func(c *cobra.Command, s *writers.Store) (*writers.Release, error) {
			return writers.PromoteRelease(c.Context(), s, ns, releaseBy(), time.Now())
		})
	pause := action("pause", "Hold a running release at its weight: no judgement steps or aborts it",
		func(c *cobra.Command, s *writers.Store) (*writers.Release, error) {
			return writers.PauseRelease(c.Context(), s, ns, releaseBy(), time.Now())
		})
	resume := action("resume", "Resume a paused release (its failed intervals start again from 0)",
		func(c *cobra.Command, s *writers.Store) (*writers.Release, error) {
			return writers.ResumeRelease(c.Context(), s, ns, releaseBy(), time.Now())
		})
	var reason string
	abort := action("abort", "End the release with the candidate at weight 0; the live pointer never moved",
		func(c *cobra.Command, s *writers.Store) (*writers.Release, error) {
			return writers.AbortRelease(c.Context(), s, ns, releaseBy(), reason, time.Now())
		})
	abort.Use += " [--reason TEXT]"
	abort.Flags().StringVar(&reason, "reason", "", "why, for the record (default: aborted by USER)")
	promote.Example = `  staticref release promote --store pebble:.staticref/store --namespace churn`
	abort.Example = `  staticref release abort --store pebble:.staticref/store --namespace churn --reason "not-found rate up"`

	c.AddCommand(start, status, promote, pause, resume, abort)
	return c
}

// releaseSpec checks start's flags, as usage errors, before the store is opened: the
// mode, the weight or steps it needs, and no knob of another mode. spec holds the flags'
// values; steps is --steps as given.
func releaseSpec(c *cobra.Command, spec *writers.ReleaseSpec, steps string) error {
	if err := writers.ValidateVersion(spec.Candidate); err != nil {
		return usagef("--candidate: %v", err)
	}
	set := c.Flags().Changed
	only := func(mode string, flags ...string) error {
		for _, f := range flags {
			if set(f) && spec.Mode != mode {
				return usagef("--%s applies to --mode %s, not %s (see --help)", f, mode, spec.Mode)
			}
		}
		return nil
	}
	canaryFlags := []string{"steps", "interval", "min-requests", "max-not-found-increase", "max-error-increase", "max-psi", "failure-limit"}
	w := spec.WeightPercent
	switch spec.Mode {
	case writers.ModeCanary:
		switch {
		case set("weight") && set("steps"):
			return usagef("--weight and --steps: give a canary one of them, a fixed weight or steps")
		case set("steps"):
			parsed, err := parseSteps(steps)
			if err != nil {
				return err
			}
			spec.Canary.Steps = parsed
		case set("weight"):
			if !(w > 0 && w <= 100) {
				return usagef("--weight %v: a canary's weight is a percent above 0 and at most 100", w)
			}
		default:
			return usagef("a canary needs --steps (e.g. 1,10,50,100) or a fixed --weight (see --help)")
		}
		cf := spec.Canary
		if set("interval") && cf.Interval <= 0 {
			return usagef("--interval %s: use a duration above 0, e.g. 10m", time.Duration(cf.Interval))
		}
		if cf.MinRequests < 1 {
			return usagef("--min-requests %d: use 1 or more", cf.MinRequests)
		}
		for _, f := range []struct {
			name string
			v    float64
		}{{"max-not-found-increase", cf.MaxNotFoundIncrease}, {"max-error-increase", cf.MaxErrorIncrease}} {
			if !(f.v > 0 && f.v <= 1) {
				return usagef("--%s %v: use a fraction above 0 and at most 1, e.g. 0.01 for one point", f.name, f.v)
			}
		}
		if !(cf.MaxPSI > 0) || math.IsInf(cf.MaxPSI, 0) {
			return usagef("--max-psi %v: use a PSI above 0, e.g. 0.25", cf.MaxPSI)
		}
		if cf.FailureLimit < 1 {
			return usagef("--failure-limit %d: use 1 or more", cf.FailureLimit)
		}
		spec.Shadow = writers.ShadowConfig{}
		return only(writers.ModeShadow, "sample-percent")
	case writers.ModeAB:
		if !set("weight") {
			return usagef("--mode ab needs --weight, the candidate's percent of units (e.g. 50)")
		}
		if !(w > 0 && w < 100) {
			return usagef("--weight %v: an A/B test's weight is a percent above 0 and below 100", w)
		}
		spec.Canary, spec.Shadow = writers.CanaryConfig{}, writers.ShadowConfig{}
		if err := only(writers.ModeCanary, canaryFlags...); err != nil {
			return err
		}
		return only(writers.ModeShadow, "sample-percent")
	case writers.ModeShadow:
		if p := spec.Shadow.SamplePercent; !(p > 0 && p <= 100) {
			return usagef("--sample-percent %v: use a percent above 0 and at most 100", p)
		}
		if set("weight") {
			return usagef("--weight applies to --mode canary or ab: a shadow answers every request from live (see --sample-percent)")
		}
		spec.Canary = writers.CanaryConfig{}
		return only(writers.ModeCanary, canaryFlags...)
	}
	return usagef("--mode %q: use canary, ab or shadow", spec.Mode)
}

// parseSteps parses --steps: rising percents above 0, ending at 100.
func parseSteps(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		w, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(w > 0 && w <= 100) {
			return nil, usagef("--steps %s: %q is not a percent above 0 and at most 100; use rising weights ending at 100, e.g. 1,10,50,100", s, f)
		}
		if len(out) > 0 && w <= out[len(out)-1] {
			return nil, usagef("--steps %s: the steps must rise, e.g. 1,10,50,100", s)
		}
		out = append(out, w)
	}
	if out[len(out)-1] != 100 {
		return nil, usagef("--steps %s: the last step must be 100 (passing it flips the candidate live), e.g. 1,10,50,100", s)
	}
	return out, nil
}

// releaseRefused says what an action the store refused means, and how to go on; the exit
// code stays 1. rel is the record the action saw, if any.
func releaseRefused(err error, action, ns string, rel *writers.Release) error {
	// The states each action starts from (writers.PauseRelease and the others).
	from := map[string][]string{
		"pause":   {writers.ReleaseRunning},
		"resume":  {writers.ReleasePaused},
		"promote": {writers.ReleaseRunning, writers.ReleasePaused},
		"abort":   {writers.ReleaseRunning, writers.ReleasePaused},
	}[action]
	switch {
	case errors.Is(err, writers.ErrNoReleases):
		return fmt.Errorf("%s release of %s: this store does not keep release records (a driver without releases; see docs/releases.md)", action, ns)
	case rel == nil && action != "start" && errors.Is(err, writers.ErrNotFound):
		return fmt.Errorf("%s release of %s: no release was started (see staticref release start --help)", action, ns)
	case rel != nil && from != nil && !slices.Contains(from, rel.State) && errors.Is(err, writers.ErrConflict):
		if !rel.Active() {
			return fmt.Errorf("%s release of %s: release %s has ended (%s); start a new one with staticref release start", action, ns, rel.ID, rel.State)
		}
		return fmt.Errorf("%s release of %s: release %s is %s, not %s", action, ns, rel.ID, rel.State, strings.Join(from, " or "))
	}
	return err
}

// releaseBy names who acts, for the release's history.
func releaseBy() string {
	if u := os.Getenv("USER"); u != "" {
		return "cli:" + u
	}
	return "cli"
}

// printRelease writes rel as aligned lines; live is the version live now ("" unknown).
func printRelease(w io.Writer, r *writers.Release, live string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("release", r.ID)
	line("namespace", r.Namespace)
	line("mode", r.Mode)
	liveNote := r.Live
	if live != "" && live != r.Live {
		liveNote += "  (" + live + " is live now)"
	}
	line("live", liveNote)
	line("candidate", r.Candidate)
	switch r.Mode {
	case writers.ModeShadow:
		line("sample", pct(r.Shadow.SamplePercent)+" of requests also read the candidate")
	case writers.ModeCanary:
		c := r.Canary
		how := "fixed"
		if len(c.Steps) > 0 {
			ws := make([]string, len(c.Steps))
			for i, s := range c.Steps {
				ws[i] = strconv.FormatFloat(s, 'g', -1, 64)
			}
			how = fmt.Sprintf("step %d of %s", r.Step+1, strings.Join(ws, ","))
		}
		line("weight", fmt.Sprintf("%s  (%s, judged every %s)", pct(r.WeightPercent), how, shortDuration(time.Duration(c.Interval))))
		line("judgement", fmt.Sprintf("min_requests %d, max_not_found_increase %g, max_error_increase %g, max_psi %g",
			c.MinRequests, c.MaxNotFoundIncrease, c.MaxErrorIncrease, c.MaxPSI))
		line("failures", fmt.Sprintf("%d in a row (aborts at %d)", r.Failures, c.FailureLimit))
	default:
		line("weight", pct(r.WeightPercent))
	}
	line("state", r.State)
	line("reason", orDash(r.Reason))
	line("salt", r.Salt)
	line("started", timeOrDash(r.StartedAt))
	line("updated", timeOrDash(r.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	h := r.History
	if len(h) == 0 {
		return nil
	}
	title := "history"
	if len(h) > historyShown {
		title = fmt.Sprintf("history (last %d of %d; all with -o json)", historyShown, len(h))
		h = h[len(h)-historyShown:]
	}
	fmt.Fprintln(w, title)
	var b strings.Builder
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, j := range h {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", timeOrDash(j.At), j.Outcome, pct(j.Weight), judgedInterval(j), judgedMetric(j), j.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" {
			fmt.Fprintln(w, strings.TrimRight(l, " \n")) // no padding after an empty reason
		}
	}
	return nil
}

// judgedInterval is "interval N" for a judged interval (numbered from 0, the first after
// the start) and the step it passed, else "-".
func judgedInterval(j writers.Judgement) string {
	switch j.Outcome {
	case "hold", "pass", "fail", "step":
	default:
		if j.Interval == 0 {
			return "-"
		}
	}
	return "interval " + strconv.FormatInt(j.Interval, 10)
}

// judgedMetric is the check that decided, "metric=value (limit L)", else "-".
func judgedMetric(j writers.Judgement) string {
	if j.Metric == "" {
		return "-"
	}
	return fmt.Sprintf("%s=%.4g (limit %.4g)", j.Metric, j.Value, j.Limit)
}

func pct(p float64) string { return strconv.FormatFloat(p, 'g', -1, 64) + "%" }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDuration drops a duration's zero tails: 10m, not 10m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// durationFlag is a writers.Duration as a flag.
type durationFlag writers.Duration

func (d *durationFlag) String() string {
	if *d == 0 {
		return ""
	}
	return shortDuration(time.Duration(*d))
}

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationFlag(v)
	return nil
}

func (d *durationFlag) Type() string { return "duration" }
