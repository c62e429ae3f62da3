package pipeline

import (
	"fmt"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// Output distributions (the manifest's Distributions: count, mean, stddev, p0..p100 and a
// histogram per output) come from the pass that writes the version: the accountant adds
// each batch's output values to a dist.Sketch of the batch's row group (all Width values
// of every row written; NaN and infinite values left out), and the row group's commit
// record carries the sketch's state. finish totals the version from the records of every
// row group, whoever committed them, so a resumed or sharded run records the same
// distribution as a single run, without reading a row again. See dist.Sketch for what
// is exact and what is within dist.RelativeError.
//
// The states travel in the commit records' Sketches (dist.Sketch.AppendState), by output.

// newSketches is one empty sketch per output.
func newSketches(outputs []writers.Output) []*dist.Sketch {
	s := make([]*dist.Sketch, len(outputs))
	for i := range s {
		s[i] = new(dist.Sketch)
	}
	return s
}

// addSketches adds the output values of a chunk's kept rows: batch-level work, with no
// allocation once a sketch has seen the powers of two its output spans.
func addSketches(sketches []*dist.Sketch, outputs []writers.Output, c *chunk) {
	n := len(c.kept)
	if n == 0 {
		return // c.outs still holds an earlier batch's values
	}
	for k, o := range outputs {
		sketches[k].Add(c.outs[k][:n*o.Width])
	}
}

// stashSketches puts the sketches' states into commit.
func stashSketches(commit *writers.Commit, outputs []writers.Output, sketches []*dist.Sketch) {
	commit.Sketches = make(map[string][]float64, len(outputs))
	for k, o := range outputs {
		commit.Sketches[o.Name] = sketches[k].AppendState(nil)
	}
}

// takeSketches removes the sketch states from a commit record and adds them to
// totals (one per output). It reports false when the record has none (written by a
// staticref from before distributions were recorded), and an error for a state that is
// not one.
func takeSketches(commit *writers.Commit, outputs []writers.Output, totals []*dist.Sketch) (bool, error) {
	states := commit.Sketches
	commit.Sketches = nil // the manifest keeps the distributions, not every row group's state
	for _, o := range outputs {
		if states[o.Name] == nil {
			return false, nil
		}
	}
	for k, o := range outputs {
		if err := totals[k].LoadState(states[o.Name]); err != nil {
			return false, fmt.Errorf("shard %s: distribution of output %s: %w", commit.ID, o.Name, err)
		}
	}
	return true, nil
}

// distributions is the manifest's Distributions from the totals.
func distributions(outputs []writers.Output, totals []*dist.Sketch) []writers.Distribution {
	out := make([]writers.Distribution, len(outputs))
	for k, o := range outputs {
		out[k] = totals[k].Distribution(o.Name)
	}
	return out
}
