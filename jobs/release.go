package jobs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// validateDrift checks the drift gates and the canary and shadow settings, every problem
// at once. A threshold that the store would take 0 for its default (writers.DefaultCanary)
// is refused at 0, so that a 0 written out never silently means something else.
func (r Release) validateDrift() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	bad := func(v float64, lo, hi float64) bool { return math.IsNaN(v) || v < lo || v > hi }
	g := r.Gates
	if v := g.MaxPSI; v != nil && bad(*v, 0, math.MaxFloat64) {
		add("release.gates.max_psi: %v: use a PSI of 0 or more, as in 0.25 (under 0.1 is a small shift, over 0.25 a large one)", *v)
	}
	if v := g.MaxMeanAbsDiff; v != nil && bad(*v, 0, math.MaxFloat64) {
		add("release.gates.max_mean_abs_diff: %v: use a difference of 0 or more, in the outputs' units", *v)
	}
	if v := g.MinKeyOverlap; v != nil && bad(*v, 0, 1) {
		add("release.gates.min_key_overlap: %v: use a share from 0 to 1", *v)
	}
	if n := g.Samples(); n < 1 || n > MaxSampleKeys {
		add("release.gates.sample_keys: %d: use 1 to %d, or leave it out for %d", n, MaxSampleKeys, DefaultSampleKeys)
	}

	c := r.Canary
	if len(c.Steps) > 0 {
		if msg := checkSteps(c.Steps); msg != "" {
			add("release.canary.steps: %s: %s", formatSteps(c.Steps), msg)
		}
	}
	if c.Interval != nil && *c.Interval <= 0 {
		add("release.canary.interval: %s: use a duration above 0, as in 10m", time.Duration(*c.Interval))
	}
	if c.MinRequests != nil && *c.MinRequests < 1 {
		add("release.canary.min_requests: %d: use 1 or more", *c.MinRequests)
	}
	for _, f := range []struct {
		name string
		v    *float64
		hi   float64
		use  string
	}{
		{"max_not_found_increase", c.MaxNotFoundIncrease, 1, "a rate above 0 and at most 1, as in 0.01"},
		{"max_error_increase", c.MaxErrorIncrease, 1, "a rate above 0 and at most 1, as in 0.005"},
		{"max_psi", c.MaxPSI, math.MaxFloat64, "a PSI above 0, as in 0.25"},
	} {
		if f.v != nil && (bad(*f.v, 0, f.hi) || *f.v == 0) {
			add("release.canary.%s: %v: use %s (0 would be taken for the default)", f.name, *f.v, f.use)
		}
	}
	if c.FailureLimit != nil && *c.FailureLimit < 1 {
		add("release.canary.failure_limit: %d: use 1 or more (failed intervals in a row that abort the release)", *c.FailureLimit)
	}
	if v := r.Shadow.SamplePercent; v != nil && (bad(*v, 0, 100) || *v == 0) {
		add("release.shadow.sample_percent: %v: use a percentage above 0 and at most 100, as in 10", *v)
	}
	return p
}

// checkSteps is what is wrong with a canary's steps ("" when nothing): the rule the
// store applies when the release starts (writers.StartRelease), checked here so that a
// job file says it before a run.
func checkSteps(steps []float64) string {
	for i, w := range steps {
		if math.IsNaN(w) || w <= 0 || w > 100 || (i > 0 && w <= steps[i-1]) {
			return "use rising weights above 0, ending at 100, as in [1, 10, 50, 100]"
		}
	}
	if steps[len(steps)-1] != 100 {
		return "the last step must be 100 (which flips the candidate live)"
	}
	return ""
}

func formatSteps(steps []float64) string {
	s := make([]string, len(steps))
	for i, w := range steps {
		s[i] = strconv.FormatFloat(w, 'g', -1, 64)
	}
	return "[" + strings.Join(s, ", ") + "]"
}
