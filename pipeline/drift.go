package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// The drift gates compare a complete version with the live one before it may replace it
// (DESIGN.md, "Drift gates before any flip"). Each is off unless release.gates sets it,
// and passes, saying so, when there is no live version.
//
//   - max_psi: per output, the population stability index of the new version's values
//     against the live version's over the live version's deciles, empty bins floored at
//     dist.Floor. Both sides come from the distributions the manifests record (no row is
//     read): each version's shares of the ten bins are estimated from its quantiles
//     (dist.SharesOver), and the expected shares are the live version's own, a tenth each
//     unless its values tie across a decile. The gate's value is the largest PSI of any
//     output both versions have; a live version that records no distributions (written by
//     an older staticref) is not compared.
//   - min_key_overlap: the share of the live version's sampled keys that the new version
//     holds: a candidate that lost keys scores below 1. The sample is the one the live
//     version's run recorded (Manifest.SampleKeys, see keySample); a live version that
//     recorded none (written before, or without the gates) is compared through this run's
//     own sample instead, the share of it that live holds, and the detail says so.
//   - max_mean_abs_diff: per output, the mean of |new - live| over every value of the
//     sampled keys that both versions hold (NaN and null values left out), the largest of
//     any output both versions have with the same width. With no sampled key in both
//     versions there is nothing to compare, and the gate fails.
//
// Sampled keys are read from both versions with Store.GetMany, sampleBatch at a time.
const sampleBatch = 1000

// driftGates computes the drift gates that are set. lm is the live version's manifest
// (nil when there is none).
func (r *run) driftGates(ctx context.Context, live string, lm *writers.Manifest) ([]writers.GateResult, error) {
	g := r.job.Release.Gates
	var out []writers.GateResult
	// The live side of every comparison is live's chain; an increment's is its base's
	// (it is compared with what it builds on, whatever is live now).
	// The distribution and key sample of a chain's population are those of the full
	// version at its bottom (an increment's describe its own few rows).
	liveChain, ref := []string{live}, lm
	if r.m.Incremental() && len(r.baseChain) > 0 {
		lm, live = r.baseChain[0], r.baseChain[0].Version
		liveChain, ref = writers.ChainVersions(r.baseChain), r.baseChain[len(r.baseChain)-1]
	} else if lm != nil && lm.Incremental() {
		c, err := writers.ResolveChain(ctx, r.store, r.ns, lm)
		if err != nil {
			return nil, fmt.Errorf("drift gates: live version: %w", err)
		}
		liveChain, ref = writers.ChainVersions(c), c[len(c)-1]
	}
	none := func(name string, limit float64) writers.GateResult {
		return writers.GateResult{Name: name, Passed: true, Limit: limit, Detail: "no live version to compare with"}
	}
	if g.MaxPSI != nil {
		if lm == nil {
			out = append(out, none("max_psi", *g.MaxPSI))
		} else {
			out = append(out, psiGate(r.m, ref, *g.MaxPSI))
		}
	}
	if !g.SamplesKeys() {
		return out, nil
	}
	if lm == nil {
		if g.MinKeyOverlap != nil {
			out = append(out, none("min_key_overlap", *g.MinKeyOverlap))
		}
		if g.MaxMeanAbsDiff != nil {
			out = append(out, none("max_mean_abs_diff", *g.MaxMeanAbsDiff))
		}
		return out, nil
	}
	cmp, err := r.compareSample(ctx, lm, liveChain, ref.SampleKeys)
	if err != nil {
		return nil, fmt.Errorf("drift gates: %w", err)
	}
	if g.MinKeyOverlap != nil {
		out = append(out, cmp.overlapGate(live, *g.MinKeyOverlap))
	}
	if g.MaxMeanAbsDiff != nil {
		out = append(out, cmp.diffGate(live, *g.MaxMeanAbsDiff))
	}
	return out, nil
}

func psiGate(m, lm *writers.Manifest, limit float64) writers.GateResult {
	res := writers.GateResult{Name: "max_psi", Limit: limit, Passed: true}
	if len(lm.Distributions) == 0 {
		res.Detail = fmt.Sprintf("live version %s records no distributions (written before they were recorded): not compared", lm.Version)
		return res
	}
	if len(m.Distributions) == 0 {
		res.Detail = fmt.Sprintf("version %s records no distributions (row groups committed by an older staticref): not compared", m.Version)
		return res
	}
	liveBy := map[string]writers.Distribution{}
	for _, d := range lm.Distributions {
		liveBy[d.Output] = d
	}
	var each, skipped []string
	worst, worstName := -1.0, ""
	for _, d := range m.Distributions {
		ld, ok := liveBy[d.Output]
		edges := dist.Deciles(ld)
		if !ok || edges == nil || len(d.Quantiles) == 0 {
			skipped = append(skipped, d.Output)
			continue
		}
		psi := dist.PSIOfShares(dist.SharesOver(ld, edges), dist.SharesOver(d, edges))
		each = append(each, fmt.Sprintf("%s %.4f", d.Output, psi))
		if psi > worst {
			worst, worstName = psi, d.Output
		}
	}
	if worstName == "" {
		res.Detail = fmt.Sprintf("no output has values in both this version and live version %s: not compared", lm.Version)
		return res
	}
	res.Value = worst
	res.Passed = worst <= limit
	res.Detail = fmt.Sprintf("output %s: PSI %.4f against live version %s over its deciles, at most %.4f (every output: %s)",
		worstName, worst, lm.Version, limit, strings.Join(each, ", "))
	if len(skipped) > 0 {
		res.Detail += "; not compared, for lack of values in one version: " + strings.Join(skipped, ", ")
	}
	return res
}

// sampleComparison is what reading the sampled keys from both versions found.
type sampleComparison struct {
	sampled, inLive int
	fromLive        bool     // the sample is the live version's; else this run's
	incremental     bool     // this version is an increment, compared with its base
	outputs         []string // compared: in both versions with one width
	sum             []float64
	n               []int64
	notCompared     []string
}

// compareSample reads the sampled keys from this version and the live one.
func (r *run) compareSample(ctx context.Context, lm *writers.Manifest, liveChain []string, liveSample []string) (*sampleComparison, error) {
	keys := r.sample.keys()
	cmp := &sampleComparison{incremental: r.m.Incremental()}
	if len(liveSample) > 0 && !r.m.Incremental() {
		keys = keys[:0:0]
		for _, k := range liveSample {
			keys = append(keys, []byte(k))
		}
		cmp.fromLive = true
	}
	cmp.sampled = len(keys)
	type pair struct{ mine, live int } // offsets of an output's values in each decoded row
	var pairs []pair
	var widths []int
	liveOff := map[string][2]int{}
	off := 0
	for _, o := range lm.Outputs {
		liveOff[o.Name] = [2]int{off, o.Width}
		off += o.Width
	}
	off = 0
	for _, o := range r.m.Outputs {
		if lo, ok := liveOff[o.Name]; ok && lo[1] == o.Width {
			cmp.outputs = append(cmp.outputs, o.Name)
			pairs = append(pairs, pair{off, lo[0]})
			widths = append(widths, o.Width)
		} else {
			cmp.notCompared = append(cmp.notCompared, o.Name)
		}
		off += o.Width
	}
	cmp.sum = make([]float64, len(pairs))
	cmp.n = make([]int64, len(pairs))
	var mine, theirs []float64
	for start := 0; start < len(keys); start += sampleBatch {
		batch := keys[start:min(start+sampleBatch, len(keys))]
		mv, err := r.store.GetMany(ctx, r.ns, r.m.Version, batch)
		if err != nil {
			return nil, fmt.Errorf("read sampled keys of version %s: %w", r.m.Version, err)
		}
		lv, _, err := r.store.GetChain(ctx, r.ns, liveChain, batch)
		if err != nil {
			return nil, fmt.Errorf("read sampled keys of live version %s: %w", lm.Version, err)
		}
		for i, key := range batch {
			switch {
			case cmp.fromLive && lv[i] == nil && len(liveChain) > 1:
				cmp.sampled-- // deleted since it was sampled: not a key live answers
				continue
			case cmp.fromLive && lv[i] == nil:
				return nil, fmt.Errorf("sampled key %q of live version %s is not in the store", key, lm.Version)
			case !cmp.fromLive && mv[i] == nil:
				return nil, fmt.Errorf("sampled key %q of version %s is not in the store", key, r.m.Version)
			case mv[i] == nil || lv[i] == nil:
				continue // counted as not in both
			}
			cmp.inLive++ // in both versions
			if mine, err = decodeValue(r.m, mv[i], mine[:0]); err != nil {
				return nil, fmt.Errorf("key %q: %w", key, err)
			}
			if theirs, err = decodeValue(lm, lv[i], theirs[:0]); err != nil {
				return nil, fmt.Errorf("key %q of live version %s: %w", key, lm.Version, err)
			}
			for k, p := range pairs {
				for j := range widths[k] {
					a, b := mine[p.mine+j], theirs[p.live+j]
					if !math.IsNaN(a) && !math.IsNaN(b) {
						cmp.sum[k] += math.Abs(a - b)
						cmp.n[k]++
					}
				}
			}
		}
	}
	return cmp, nil
}

func (c *sampleComparison) overlapGate(live string, limit float64) writers.GateResult {
	res := writers.GateResult{Name: "min_key_overlap", Limit: limit, Passed: true}
	if c.sampled == 0 {
		res.Detail = "no key was sampled: the version has no rows"
		return res
	}
	res.Value = float64(c.inLive) / float64(c.sampled)
	res.Passed = res.Value >= limit
	if c.fromLive {
		res.Detail = fmt.Sprintf("%d of %d keys sampled from live version %s are in this version: overlap %.4f, at least %.4f",
			c.inLive, c.sampled, live, res.Value, limit)
	} else {
		res.Detail = fmt.Sprintf("%d of %d sampled keys are in live version %s (it records no key sample, so this version's keys were sampled): overlap %.4f, at least %.4f",
			c.inLive, c.sampled, live, res.Value, limit)
	}
	return res
}

func (c *sampleComparison) diffGate(live string, limit float64) writers.GateResult {
	res := writers.GateResult{Name: "max_mean_abs_diff", Limit: limit}
	var each []string
	worst, worstName, worstN := -1.0, "", int64(0)
	for k, name := range c.outputs {
		if c.n[k] == 0 {
			continue
		}
		d := c.sum[k] / float64(c.n[k])
		each = append(each, fmt.Sprintf("%s %.6g", name, d))
		if d > worst {
			worst, worstName, worstN = d, name, c.n[k]
		}
	}
	switch {
	case c.sampled == 0:
		res.Passed, res.Detail = true, "no key was sampled: the version has no rows"
		return res
	case c.inLive == 0 && c.incremental:
		res.Passed = true
		res.Detail = fmt.Sprintf("nothing to compare: none of the increment's %d sampled keys is in base %s (they are all new keys)", c.sampled, live)
		return res
	case c.inLive == 0:
		res.Detail = fmt.Sprintf("nothing to compare: none of the %d sampled keys is in live version %s", c.sampled, live)
		return res
	case worstName == "":
		res.Detail = fmt.Sprintf("nothing to compare: no output of this version has a value, under its name and width, in live version %s (outputs %s)",
			live, strings.Join(c.notCompared, ", "))
		return res
	}
	res.Value = worst
	res.Passed = worst <= limit
	res.Detail = fmt.Sprintf("output %s: mean |value - live value| %.6g over %d values of the %d sampled keys in live version %s, at most %.6g (every output: %s)",
		worstName, worst, worstN, c.inLive, live, limit, strings.Join(each, ", "))
	if len(c.notCompared) > 0 {
		res.Detail += "; not in live with the same width: " + strings.Join(c.notCompared, ", ")
	}
	return res
}

// decodeValue appends a stored value's numbers to dst, every output's Width values in
// manifest order (NaN for a null).
func decodeValue(m *writers.Manifest, raw []byte, dst []float64) ([]float64, error) {
	if m.Encoding == writers.EncodingBinary {
		width := 0
		for _, o := range m.Outputs {
			width += o.Width
		}
		if len(raw) != 4*width {
			return nil, fmt.Errorf("value has %d bytes, the outputs of version %s need %d", len(raw), m.Version, 4*width)
		}
		for i := range width {
			v := float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
			if math.IsInf(v, 0) {
				v = math.NaN()
			}
			dst = append(dst, v)
		}
		return dst, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("value of version %s is not a JSON object: %w", m.Version, err)
	}
	for _, o := range m.Outputs {
		f := obj[o.Name]
		if o.Width == 1 {
			var v *float64
			if err := json.Unmarshal(f, &v); err != nil {
				return nil, fmt.Errorf("output %s of version %s: %w", o.Name, m.Version, err)
			}
			dst = append(dst, orNaN(v))
			continue
		}
		var vs []*float64
		if err := json.Unmarshal(f, &vs); err != nil || len(vs) != o.Width {
			return nil, fmt.Errorf("output %s of version %s: want %d numbers, got %.40s", o.Name, m.Version, o.Width, f)
		}
		for _, v := range vs {
			dst = append(dst, orNaN(v))
		}
	}
	return dst, nil
}

func orNaN(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}
