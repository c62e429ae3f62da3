package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// incremental stores a complete incremental version of rows on top of base.
func incremental(t *testing.T, s *writers.Store, ns, version, base string, depth int, keys, values []string) {
	t.Helper()
	m := &writers.Manifest{Namespace: ns, Version: version, Job: ns, State: writers.StateWriting, Encoding: "binary",
		StartedAt: t0, Mode: writers.VersionIncremental, Base: base, Depth: depth}
	if err := s.PutManifest(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	write(t, s, ns, version, keys, values)
	setState(t, s, ns, version, writers.StateComplete)
}

// full stores a complete full version of rows.
func full(t *testing.T, s *writers.Store, ns, version string, keys, values []string) {
	t.Helper()
	put(t, s, ns, version, writers.StateWriting)
	write(t, s, ns, version, keys, values)
	setState(t, s, ns, version, writers.StateComplete)
}

func wantChain(t *testing.T, s *writers.Store, ns string, chain []string, ask []string, wantVals []string, wantFrom []int) {
	t.Helper()
	keys := make([][]byte, len(ask))
	for i, k := range ask {
		keys[i] = []byte(k)
	}
	vals, from, err := s.GetChain(context.Background(), ns, chain, keys)
	if err != nil {
		t.Fatalf("GetChain(%v): %v", chain, err)
	}
	if len(vals) != len(ask) || len(from) != len(ask) {
		t.Fatalf("GetChain answered %d values and %d levels for %d keys", len(vals), len(from), len(ask))
	}
	for i := range ask {
		want := []byte(nil)
		if wantVals[i] != "" {
			want = []byte(wantVals[i])
		}
		if !bytes.Equal(vals[i], want) || (want == nil) != (vals[i] == nil) || from[i] != wantFrom[i] {
			t.Errorf("GetChain(%v) key %q: got %q from level %d, want %q from level %d", chain, ask[i], vals[i], from[i], want, wantFrom[i])
		}
	}
}

func testChainReads(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "chain"
	var keys, vals []string
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("k%03d", i))
		vals = append(vals, fmt.Sprintf("full%03d", i))
	}
	full(t, s, ns, "v1", keys, vals)
	incremental(t, s, ns, "v2", "v1", 2, []string{"k001", "k002", "new1"}, []string{"two001", "two002", "twonew1"})
	incremental(t, s, ns, "v3", "v2", 3, []string{"k002", "new2"}, []string{"three002", "threenew2"})

	ask := []string{"k000", "k001", "k002", "new1", "new2", "missing", "k002", "k299"}
	wantChain(t, s, ns, []string{"v3", "v2", "v1"}, ask,
		[]string{"full000", "two001", "three002", "twonew1", "threenew2", "", "three002", "full299"},
		[]int{2, 1, 0, 1, 0, -1, 0, 2})
	// The chain of v2 (a rollback's view) sees none of v3.
	wantChain(t, s, ns, []string{"v2", "v1"}, ask,
		[]string{"full000", "two001", "two002", "twonew1", "", "", "two002", "full299"},
		[]int{1, 0, 0, 0, -1, -1, 0, 1})
	// A chain of one is a GetMany.
	wantChain(t, s, ns, []string{"v1"}, []string{"k005", "new1"}, []string{"full005", ""}, []int{0, -1})

	// Many keys over every level.
	var many []string
	var wantV []string
	var wantF []int
	for i := range 300 {
		many = append(many, fmt.Sprintf("k%03d", (i*7)%300))
		k := many[i]
		switch k {
		case "k001":
			wantV, wantF = append(wantV, "two001"), append(wantF, 1)
		case "k002":
			wantV, wantF = append(wantV, "three002"), append(wantF, 0)
		default:
			wantV, wantF = append(wantV, "full"+k[1:]), append(wantF, 2)
		}
	}
	wantChain(t, s, ns, []string{"v3", "v2", "v1"}, many, wantV, wantF)

	m, err := s.Manifest(ctx, ns, "v3")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := writers.ResolveChain(ctx, s, ns, m)
	if got := writers.ChainVersions(chain); err != nil || !reflect.DeepEqual(got, []string{"v3", "v2", "v1"}) {
		t.Errorf("ResolveChain(v3) = %v, %v; want [v3 v2 v1]", got, err)
	}
	if _, _, err := s.GetChain(ctx, ns, nil, [][]byte{[]byte("k")}); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("GetChain of no versions: %v, want ErrInvalid", err)
	}
	if _, _, err := s.GetChain(ctx, ns, []string{"v3", "bad:version"}, [][]byte{[]byte("k")}); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("GetChain of an invalid version: %v, want ErrInvalid", err)
	}
}

func testChainTombstones(t *testing.T, s *writers.Store) {
	const ns = "tomb"
	full(t, s, ns, "v1", []string{"a", "b", "c"}, []string{"a1", "b1", "c1"})
	incremental(t, s, ns, "v2", "v1", 2, []string{"a", "b"}, []string{string(writers.Tombstone), "b2"})
	incremental(t, s, ns, "v3", "v2", 3, []string{"b", "d"}, []string{string(writers.Tombstone), "d3"})
	wantChain(t, s, ns, []string{"v3", "v2", "v1"}, []string{"a", "b", "c", "d"},
		[]string{"", "", "c1", "d3"}, []int{1, 0, 2, 0})
	// A key deleted and then written again answers its new value.
	incremental(t, s, ns, "v4", "v3", 4, []string{"a"}, []string{"a4"})
	wantChain(t, s, ns, []string{"v4", "v3", "v2", "v1"}, []string{"a", "b"}, []string{"a4", ""}, []int{0, 1})
	if !writers.IsTombstone(writers.Tombstone) || writers.IsTombstone([]byte("{}")) || writers.IsTombstone(nil) || writers.IsTombstone([]byte{0, 0, 0, 0}) {
		t.Error("IsTombstone answers wrongly")
	}
}

func testScanRows(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "scan"
	want := map[string]string{}
	var keys, vals []string
	for i := range 10_000 {
		k, v := fmt.Sprintf("key-%05d", i), fmt.Sprintf("value-%d", i*3)
		keys, vals = append(keys, k), append(vals, v)
		want[k] = v
	}
	full(t, s, ns, "v1", keys, vals)
	full(t, s, ns, "v2", []string{"other"}, []string{"x"})
	full(t, s, ns+"x", "v1", []string{"neighbour"}, []string{"y"})
	got := map[string]string{}
	err := s.ScanRows(ctx, ns, "v1", func(rows writers.Rows) error {
		for i, k := range rows.Keys {
			if prev, dup := got[string(k)]; dup && prev != string(rows.Values[i]) {
				return fmt.Errorf("key %s came twice with %q and %q", k, prev, rows.Values[i])
			}
			got[string(k)] = string(rows.Values[i])
		}
		return nil
	})
	if errors.Is(err, writers.ErrNoScan) {
		t.Skip("the store cannot scan")
	}
	if err != nil {
		t.Fatalf("ScanRows: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		var extra []string
		for k := range got {
			if _, ok := want[k]; !ok {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		t.Fatalf("ScanRows passed %d rows (not asked for: %.5q), want %d", len(got), extra, len(want))
	}
	stop := errors.New("stop")
	if err := s.ScanRows(ctx, ns, "v1", func(writers.Rows) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("ScanRows whose fn fails: %v, want its error", err)
	}
	n := 0
	if err := s.ScanRows(ctx, ns, "missing", func(r writers.Rows) error { n += r.Len(); return nil }); err != nil || n != 0 {
		t.Errorf("ScanRows of a missing version: %d rows, %v; want none, nil", n, err)
	}
}

// testGCChains: full F1 <- I1 <- I2 (live), and an abandoned chain F0 <- J1 that nothing
// kept builds on. gc keeping 0 must keep F1 and I1 (the live chain) and remove F0 and J1;
// after a rollback to I1 and a full flip, gc removes the old chain whole.
func testGCChains(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "gcchain"
	full(t, s, ns, "f0", []string{"k"}, []string{"f0"})
	flipAt(t, s, ns, "f0", 1)
	incremental(t, s, ns, "j1", "f0", 2, []string{"k"}, []string{"j1"})
	flipAt(t, s, ns, "j1", 2)
	full(t, s, ns, "f1", []string{"k"}, []string{"f1"})
	flipAt(t, s, ns, "f1", 3)
	incremental(t, s, ns, "i1", "f1", 2, []string{"k"}, []string{"i1"})
	flipAt(t, s, ns, "i1", 4)
	incremental(t, s, ns, "i2", "i1", 3, []string{"k"}, []string{"i2"})
	flipAt(t, s, ns, "i2", 5)
	// A run writing an increment on the live one keeps its base too.
	m := &writers.Manifest{Namespace: ns, Version: "i3", Job: ns, State: writers.StateWriting, StartedAt: at(25.5),
		Mode: writers.VersionIncremental, Base: "i2", Depth: 4}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}

	removed, err := writers.GC(ctx, s, ns, 0, time.Hour, at(24))
	if want := []string{"f0", "j1"}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Fatalf("GC keeping 0 removed %q, %v; want %q", removed, err, want)
	}
	wantChain(t, s, ns, []string{"i2", "i1", "f1"}, []string{"k"}, []string{"i2"}, []int{0})
	wantValue(t, s, ns, "f1", []byte("k"), []byte("f1"))

	// Rollback from an increment goes to the previous head, whose chain is intact.
	if from, to, err := writers.RollbackAt(ctx, s, ns, at(25)); err != nil || from != "i2" || to != "i1" {
		t.Fatalf("RollbackAt = %s -> %s, %v; want i2 -> i1", from, to, err)
	}
	removed, err = writers.GC(ctx, s, ns, 0, time.Hour, at(26))
	if err != nil || len(removed) != 0 {
		t.Fatalf("GC after the rollback removed %q, %v; want nothing (i2 may be flipped back, f1 is i1's base)", removed, err)
	}
	setState(t, s, ns, "i3", writers.StateFailed)
	full(t, s, ns, "f2", []string{"k"}, []string{"f2"})
	flipAt(t, s, ns, "f2", 27)
	removed, err = writers.GC(ctx, s, ns, 0, time.Hour, at(28))
	sort.Strings(removed)
	if want := []string{"f1", "i1", "i2", "i3"}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Fatalf("GC after a full flip removed %q, %v; want the whole old chain %q", removed, err, want)
	}
}

func testFlipBrokenChain(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "broken"
	full(t, s, ns, "f1", []string{"k"}, []string{"f1"})
	flipAt(t, s, ns, "f1", 1)
	full(t, s, ns, "f2", []string{"k"}, []string{"f2"})
	flipAt(t, s, ns, "f2", 2)
	incremental(t, s, ns, "i1", "f1", 2, []string{"k"}, []string{"i1"})
	if err := s.DeleteVersion(ctx, ns, "f1"); err != nil {
		t.Fatal(err)
	}
	_, err := writers.FlipAt(ctx, s, ns, "i1", at(3))
	var ce *writers.ChainError
	if !errors.As(err, &ce) || ce.Base != "f1" {
		t.Fatalf("flip to an increment whose base is retired: %v, want a ChainError naming f1", err)
	}
	wantLive(t, s, ns, "f2")
}
