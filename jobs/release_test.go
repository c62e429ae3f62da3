package jobs

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReleaseSettingsAndDriftGatesAreRead(t *testing.T) {
	t.Run("every field of release.yaml is kept as written", func(t *testing.T) {
		j, err := Load(filepath.Join("testdata", "release.good.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		g, c := j.Release.Gates, j.Release.Canary
		checks := []struct {
			name      string
			got, want any
		}{
			{"release.flip", j.Release.Flip, "canary"},
			{"max_psi", *g.MaxPSI, 0.2},
			{"max_mean_abs_diff", *g.MaxMeanAbsDiff, 0.05},
			{"min_key_overlap", *g.MinKeyOverlap, 0.9},
			{"sample_keys", g.Samples(), 5000},
			{"gates that sample keys", g.SamplesKeys(), true},
			{"canary.interval", time.Duration(*c.Interval), 2 * time.Minute},
			{"canary.min_requests", *c.MinRequests, int64(500)},
			{"canary.max_not_found_increase", *c.MaxNotFoundIncrease, 0.02},
			{"canary.max_error_increase", *c.MaxErrorIncrease, 0.01},
			{"canary.max_psi", *c.MaxPSI, 0.3},
			{"canary.failure_limit", *c.FailureLimit, 3},
			{"shadow.sample_percent", *j.Release.Shadow.SamplePercent, 20.0},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		if !slices.Equal(c.CanarySteps(), []float64{5, 25, 100}) {
			t.Errorf("canary.steps: got %v, want [5 25 100]", c.CanarySteps())
		}
	})

	t.Run("left out, the drift gates are off and a canary steps 1, 10, 50, 100", func(t *testing.T) {
		j, err := Load(filepath.Join("testdata", "minimal.good.yaml"), []string{"release.flip=shadow"})
		if err != nil {
			t.Fatal(err)
		}
		g := j.Release.Gates
		if g.MaxPSI != nil || g.MaxMeanAbsDiff != nil || g.MinKeyOverlap != nil || g.SamplesKeys() || g.Samples() != DefaultSampleKeys {
			t.Errorf("gates: %+v, want the drift gates off and sample_keys %d", g, DefaultSampleKeys)
		}
		if got := j.Release.Canary.CanarySteps(); !slices.Equal(got, []float64{1, 10, 50, 100}) {
			t.Errorf("default steps: got %v, want DESIGN's 1, 10, 50, 100", got)
		}
		if j.Release.Flip != "shadow" || j.Release.Shadow.SamplePercent != nil {
			t.Errorf("release: %+v, want flip shadow with the store's default sample_percent", j.Release)
		}
	})

	t.Run("every problem of release.bad.yaml is reported at once", func(t *testing.T) {
		_, err := Load(filepath.Join("testdata", "release.bad.yaml"), nil)
		if err == nil {
			t.Fatal("got no error")
		}
		for _, w := range []string{
			`release.flip: "blue-green": use auto, manual, canary or shadow`,
			"release.gates.max_psi: -1: use a PSI of 0 or more",
			"release.gates.max_mean_abs_diff: -0.5: use a difference of 0 or more",
			"release.gates.min_key_overlap: 1.5: use a share from 0 to 1",
			"release.gates.sample_keys: 0: use 1 to 1000000",
			"release.canary.steps: [10, 5, 100]: use rising weights above 0, ending at 100",
			"release.canary.interval: 0s: use a duration above 0",
			"release.canary.min_requests: 0: use 1 or more",
			"release.canary.max_not_found_increase: 0: use a rate above 0 and at most 1, as in 0.01 (0 would be taken for the default)",
			"release.canary.max_error_increase: 2: use a rate above 0 and at most 1",
			"release.canary.max_psi: 0: use a PSI above 0",
			"release.canary.failure_limit: 0: use 1 or more",
			"release.shadow.sample_percent: 150: use a percentage above 0 and at most 100",
		} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error lacks %q:\n%v", w, err)
			}
		}
	})

	t.Run("an unknown field and a word for a duration are problems with their lines", func(t *testing.T) {
		job := "name: churn\nsource: {uri: d/*.parquet, key: k, features: [f0]}\nmodel: {path: m.onnx}\nrelease:\n  canary:\n    judge: me\n    interval: soon\n"
		_, err := Parse([]byte(job), "j.yaml", nil)
		for _, w := range []string{
			"line 6: release.canary.judge: unknown field",
			`line 7: release.canary.interval: "soon" is not a duration (e.g. 10m)`,
		} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error lacks %q: %v", w, err)
			}
		}
	})

	t.Run("steps must end at 100", func(t *testing.T) {
		_, err := Load(filepath.Join("testdata", "release.good.yaml"), []string{"release.canary.steps=[1, 50]"})
		if err == nil || !strings.Contains(err.Error(), "release.canary.steps: [1, 50]: the last step must be 100") {
			t.Errorf("got %v", err)
		}
	})

	t.Run("a --set of a duration is read like the file's", func(t *testing.T) {
		j, err := Load(filepath.Join("testdata", "release.good.yaml"), []string{"release.canary.interval=90s"})
		if err != nil || time.Duration(*j.Release.Canary.Interval) != 90*time.Second {
			t.Errorf("got %v, %v; want 90s", err, j)
		}
		_, err = Load(filepath.Join("testdata", "release.good.yaml"), []string{"release.canary.interval=[1]"})
		if err == nil || !strings.Contains(err.Error(), "--set release.canary.interval") {
			t.Errorf("a list for a duration: got %v", err)
		}
	})
}
