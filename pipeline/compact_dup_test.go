package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/writers"
)

// A version whose rows a resumed run wrote again holds some keys twice (on Pebble, in the
// killed process's part and the resumer's; a Redis SCAN during a resize also repeats
// keys): compacting a chain on it counts each key once, so min_rows_ratio passes at 1.
func TestCompactCountsAKeyScannedTwiceOnce(t *testing.T) {
	ctx := context.Background()
	s, url := openStore(t)
	second, err := writers.Open(ctx, url) // another handle: another part, as another process
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rows := func(lo, hi int) writers.Rows {
		var r writers.Rows
		for i := lo; i < hi; i++ {
			r.Keys = append(r.Keys, fmt.Appendf(nil, "u%05d", i))
			r.Values = append(r.Values, fmt.Appendf(nil, `{"score":%d.5}`, i))
		}
		return r
	}
	put := func(m *writers.Manifest, write func()) {
		t.Helper()
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		write()
		m.State, m.CompletedAt = writers.StateComplete, now
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := writers.Flip(ctx, s, "dup", m.Version); err != nil {
			t.Fatal(err)
		}
	}
	outputs := []writers.Output{{Name: "score", Width: 1}}
	full := &writers.Manifest{Namespace: "dup", Version: "v1", State: writers.StateWriting, Encoding: "json", Outputs: outputs,
		Key: "user_id", StartedAt: now, RowsRead: 1000, RowsWritten: 1000}
	put(full, func() {
		// The killed run wrote rows 0-599 into its part; the resumed one 400-999 into its own.
		if err := second.WriteRows(ctx, "dup", "v1", rows(0, 600)); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteRows(ctx, "dup", "v1", rows(400, 1000)); err != nil {
			t.Fatal(err)
		}
		second.Close() // the killed process is gone
	})
	inc := &writers.Manifest{Namespace: "dup", Version: "v2", State: writers.StateWriting, Encoding: "json", Outputs: outputs,
		Key: "user_id", StartedAt: now, Mode: writers.VersionIncremental, Base: "v1", Depth: 2, RowsRead: 100, RowsWritten: 100}
	put(inc, func() {
		if err := s.WriteRows(ctx, "dup", "v2", rows(1000, 1100)); err != nil {
			t.Fatal(err)
		}
	})
	res, err := pipeline.Compact(ctx, pipeline.MaintainConfig{Store: s, Namespace: "dup", Log: quiet, Keep: -1})
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	m := res.Manifest
	g := gate(m, "min_rows_ratio")
	if !res.Flipped || m.RowsWritten != 1100 || m.RowsRead != 1100 || g == nil || g.Value != 1 {
		t.Fatalf("compacted: flipped %v, rows read %d written %d, gate %+v; want 1100 of each and ratio 1", res.Flipped, m.RowsRead, m.RowsWritten, g)
	}
}
