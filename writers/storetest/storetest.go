// Package storetest is the conformance suite that every staticref store must pass: rows,
// manifests, the live pointer's compare-and-swap, and the version lifecycle (flip,
// rollback, gc) run through writers' catalog functions. A store's own test calls Run with
// a function that opens a fresh, empty store. It must never depend on a particular store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// Run runs the conformance suite. open must return a fresh, empty store for each call;
// Run closes it when the subtest ends. The lease subtests use leases of 200ms and wait
// for them to expire, so a store must honour expiry within a few hundred milliseconds.
func Run(t *testing.T, open func(t *testing.T) *writers.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *writers.Store)
	}{
		{"rows written are read back unchanged", testRoundTrip},
		{"a key written twice keeps the last value", testLastWriteWins},
		{"a missing key, version or namespace is not found", testNotFound},
		{"versions and namespaces are isolated from each other", testIsolation},
		{"invalid names are refused with no partial write", testInvalid},
		{"rows go only into a version in state writing", testWriteState},
		{"manifests round trip with every field", testManifestRoundTrip},
		{"manifests are listed oldest first", testManifestOrder},
		{"swap live is a compare-and-swap", testSwapLive},
		{"swap live refuses a version that is not complete", testSwapLiveState},
		{"concurrent flips from the same version have exactly one winner", testConcurrentFlips},
		{"flip and rollback follow the lifecycle", testFlipRollback},
		{"flips record the history on the manifests, in the pointer's order", testFlipHistory},
		{"versions are listed in history order with the rollback target marked", testListHistory},
		{"rollback steps back through the history, whatever the ids", testRollbackHistory},
		{"manifests written before the history fields still order sensibly", testLegacyHistory},
		{"gc keeps what may still be needed and removes the rest", testGC},
		{"gc keeps what a rollback left until a flip supersedes it", testGCRollback},
		{"delete version retires a version and refuses the live one", testDeleteVersion},
		{"new version ids get -N suffixes when taken", testNewVersionID},
		{"a held lease is refused to another holder, naming the holder", testLeaseHeld},
		{"an expired lease can be taken over and is lost to its old holder", testLeaseExpiry},
		{"a released lease can be acquired again", testLeaseRelease},
		{"concurrent acquires of a lease have exactly one winner", testLeaseConcurrent},
		{"committed work is read back in id order", testCommits},
		{"concurrent commits of different work all survive", testCommitsConcurrent},
		{"delete version drops the version's commits", testCommitsDeleted},
		{"get many reads every key of a version, nil for the missing", testGetMany},
		{"a release record is changed only by compare-and-swap", testReleaseSwap},
		{"concurrent swaps of a release record have exactly one winner", testReleaseConcurrent},
		{"release counters add up across writers, per interval", testReleaseCounts},
		{"release sketches are kept per replica", testReleaseSketches},
		{"release records of neighbouring namespaces are apart", testReleaseNeighbours},
		{"chain reads answer each key from the newest version that holds it", testChainReads},
		{"a tombstone answers deleted, whatever older versions hold", testChainTombstones},
		{"a scan passes every row of a version once or more, and nothing else", testScanRows},
		{"gc keeps every version a kept version builds on and removes abandoned chains", testGCChains},
		{"flip refuses an increment whose base is gone", testFlipBrokenChain},
		{"nothing done to a namespace touches one whose name extends it", testNeighbours},
		{"close waits for the calls in flight and refuses later ones", testCloseInFlight},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

var t0 = time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)

// put stores a minimal manifest for ns/version in state st.
func put(t *testing.T, s *writers.Store, ns, version string, st writers.State) *writers.Manifest {
	t.Helper()
	m := &writers.Manifest{Namespace: ns, Version: version, Job: ns, State: st, Encoding: "binary", StartedAt: t0}
	if err := s.PutManifest(context.Background(), m); err != nil {
		t.Fatalf("PutManifest(%s/%s): %v", ns, version, err)
	}
	return m
}

// setState rewrites the stored manifest's state.
func setState(t *testing.T, s *writers.Store, ns, version string, st writers.State) {
	t.Helper()
	m, err := s.Manifest(context.Background(), ns, version)
	if err != nil {
		t.Fatalf("Manifest(%s/%s): %v", ns, version, err)
	}
	m.State = st
	if err := s.PutManifest(context.Background(), m); err != nil {
		t.Fatalf("PutManifest(%s/%s): %v", ns, version, err)
	}
}

// complete writes one row into a new version and marks it complete.
func complete(t *testing.T, s *writers.Store, ns, version string) {
	t.Helper()
	put(t, s, ns, version, writers.StateWriting)
	write(t, s, ns, version, []string{"k"}, []string{version})
	setState(t, s, ns, version, writers.StateComplete)
}

func write(t *testing.T, s *writers.Store, ns, version string, keys, values []string) {
	t.Helper()
	var rows writers.Rows
	for i := range keys {
		rows.Keys = append(rows.Keys, []byte(keys[i]))
		rows.Values = append(rows.Values, []byte(values[i]))
	}
	if err := s.WriteRows(context.Background(), ns, version, rows); err != nil {
		t.Fatalf("WriteRows(%s/%s): %v", ns, version, err)
	}
}

func wantValue(t *testing.T, s *writers.Store, ns, version string, key, want []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), ns, version, key)
	if err != nil {
		t.Errorf("Get(%s/%s, %q): %v, want %q", ns, version, key, err, want)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Get(%s/%s, %q) = %q, want %q", ns, version, key, got, want)
	}
}

func wantNotFound(t *testing.T, s *writers.Store, ns, version string, key []byte) {
	t.Helper()
	got, err := s.Get(context.Background(), ns, version, key)
	if !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Get(%s/%s, %q) = %q, %v, want ErrNotFound", ns, version, key, got, err)
	}
}

func wantCount(t *testing.T, s *writers.Store, ns, version string, want int64) {
	t.Helper()
	got, err := s.CountKeys(context.Background(), ns, version)
	if err != nil {
		t.Fatalf("CountKeys(%s/%s): %v", ns, version, err)
	}
	if got != want {
		t.Errorf("CountKeys(%s/%s) = %d, want %d", ns, version, got, want)
	}
}

func wantLive(t *testing.T, s *writers.Store, ns, want string) {
	t.Helper()
	got, err := s.Live(context.Background(), ns)
	if err != nil {
		t.Fatalf("Live(%s): %v", ns, err)
	}
	if got != want {
		t.Errorf("Live(%s) = %q, want %q", ns, got, want)
	}
}

func testRoundTrip(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "rt", "v1", writers.StateWriting)

	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	prefixes := []string{"user-", "ключ/", "用户:", "🙂 ", "a\x00b", "\u00e9t\u00e9-", "x"}
	var keys, values [][]byte
	for i := range 3000 {
		k := []byte(fmt.Sprintf("%s%d", prefixes[i%len(prefixes)], i))
		v := append(bytes.Clone(allBytes[i%256:]), allBytes[:i%256]...)
		keys, values = append(keys, k), append(values, v)
	}
	keys = append(keys, []byte(strings.Repeat("é", writers.MaxKeyLen/2)), []byte("empty value"))
	values = append(values, []byte("longest key"), []byte{})

	// Three batches of uneven size.
	for _, r := range [][2]int{{0, 1}, {1, 1000}, {1000, len(keys)}} {
		rows := writers.Rows{Keys: keys[r[0]:r[1]], Values: values[r[0]:r[1]]}
		if err := s.WriteRows(ctx, "rt", "v1", rows); err != nil {
			t.Fatalf("WriteRows(rows %d-%d): %v", r[0], r[1], err)
		}
	}
	for i := range keys {
		wantValue(t, s, "rt", "v1", keys[i], values[i])
		if t.Failed() {
			t.FailNow()
		}
	}
	wantCount(t, s, "rt", "v1", int64(len(keys)))

	// The value returned is the caller's to keep and modify.
	v1, _ := s.Get(ctx, "rt", "v1", keys[1])
	for i := range v1 {
		v1[i] = 0xff
	}
	wantValue(t, s, "rt", "v1", keys[1], values[1])
}

func testLastWriteWins(t *testing.T, s *writers.Store) {
	put(t, s, "lw", "v1", writers.StateWriting)
	write(t, s, "lw", "v1", []string{"a", "b", "a"}, []string{"a1", "b1", "a2"})
	wantValue(t, s, "lw", "v1", []byte("a"), []byte("a2"))
	write(t, s, "lw", "v1", []string{"b"}, []string{"b2"})
	wantValue(t, s, "lw", "v1", []byte("b"), []byte("b2"))
	wantCount(t, s, "lw", "v1", 2)
}

func testNotFound(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "nf", "v1", writers.StateWriting)
	write(t, s, "nf", "v1", []string{"here"}, []string{"x"})

	wantNotFound(t, s, "nf", "v1", []byte("missing"))
	wantNotFound(t, s, "nf", "v2", []byte("here"))
	wantNotFound(t, s, "other", "v1", []byte("here"))
	wantCount(t, s, "nf", "v2", 0)
	if _, err := s.Manifest(ctx, "nf", "v2"); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Manifest(missing version) error = %v, want ErrNotFound", err)
	}
	if ms, err := s.Manifests(ctx, "other"); err != nil || len(ms) != 0 {
		t.Errorf("Manifests(missing namespace) = %d manifests, %v; want none, nil", len(ms), err)
	}
	wantLive(t, s, "nf", "")
}

func testIsolation(t *testing.T, s *writers.Store) {
	// Namespaces and versions that are prefixes of each other, and keys that contain
	// what a naive encoding would use as separators.
	type cell struct{ ns, version string }
	cells := []cell{{"a", "v1"}, {"a", "v10"}, {"ab", "v1"}, {"ab", "v10"}, {"a.b", "v1"}, {"a", "v1.0"}}
	keys := []string{"k", "0", "\x00v1\x00k", "/k", ":k", "v10/k", "ab"}
	for _, c := range cells {
		put(t, s, c.ns, c.version, writers.StateWriting)
	}
	for i, c := range cells {
		if i == len(cells)-1 {
			continue // one cell stays empty
		}
		vals := make([]string, len(keys))
		for j, k := range keys {
			vals[j] = c.ns + "|" + c.version + "|" + k
		}
		write(t, s, c.ns, c.version, keys, vals)
	}
	// Extra keys only in a/v1.
	write(t, s, "a", "v1", []string{"only-a-v1"}, []string{"x"})

	for i, c := range cells {
		if i == len(cells)-1 {
			wantCount(t, s, c.ns, c.version, 0)
			wantNotFound(t, s, c.ns, c.version, []byte("k"))
			continue
		}
		for _, k := range keys {
			wantValue(t, s, c.ns, c.version, []byte(k), []byte(c.ns+"|"+c.version+"|"+k))
		}
		want := int64(len(keys))
		if c == (cell{"a", "v1"}) {
			want++
		} else {
			wantNotFound(t, s, c.ns, c.version, []byte("only-a-v1"))
		}
		wantCount(t, s, c.ns, c.version, want)
	}
	// Manifests of one namespace do not include another's.
	ms, err := s.Manifests(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		if m.Namespace != "a" {
			t.Errorf("Manifests(a) includes namespace %q", m.Namespace)
		}
		got = append(got, m.Version)
	}
	if want := []string{"v1", "v1.0", "v10"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Manifests(a) versions = %q, want %q", got, want)
	}
}

func testInvalid(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "ok", "v1", writers.StateWriting)
	good := writers.Rows{Keys: [][]byte{[]byte("a"), []byte("b")}, Values: [][]byte{[]byte("1"), []byte("2")}}

	names := []struct {
		name, ns, version string
	}{
		{"an empty namespace", "", "v1"},
		{"an uppercase namespace", "OK", "v1"},
		{"a namespace with a slash", "o/k", "v1"},
		{"a namespace with NUL", "o\x00k", "v1"},
		{"a namespace starting with a dash", "-ok", "v1"},
		{"a namespace of 64 characters", strings.Repeat("n", 64), "v1"},
		{"an empty version", "ok", ""},
		{"a version with a space", "ok", "v 1"},
		{"a version with a slash", "ok", "v/1"},
		{"a version with NUL", "ok", "v\x001"},
	}
	for _, tc := range names {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			if err := s.WriteRows(ctx, tc.ns, tc.version, good); !errors.Is(err, writers.ErrInvalid) {
				t.Errorf("WriteRows error = %v, want ErrInvalid", err)
			}
			if _, err := s.Get(ctx, tc.ns, tc.version, []byte("a")); !errors.Is(err, writers.ErrInvalid) {
				t.Errorf("Get error = %v, want ErrInvalid", err)
			}
			m := &writers.Manifest{Namespace: tc.ns, Version: tc.version, State: writers.StateWriting}
			if err := s.PutManifest(ctx, m); !errors.Is(err, writers.ErrInvalid) {
				t.Errorf("PutManifest error = %v, want ErrInvalid", err)
			}
		})
	}

	keys := []struct {
		name string
		key  []byte
	}{
		{"an empty key", []byte{}},
		{"a key that is not UTF-8", []byte{'k', 0xff, 0xfe}},
		{"a key longer than MaxKeyLen", bytes.Repeat([]byte("k"), writers.MaxKeyLen+1)},
	}
	for _, tc := range keys {
		t.Run(tc.name+" is refused with no partial write", func(t *testing.T) {
			rows := writers.Rows{
				Keys:   append(append([][]byte{}, good.Keys...), tc.key),
				Values: append(append([][]byte{}, good.Values...), []byte("3")),
			}
			err := s.WriteRows(ctx, "ok", "v1", rows)
			if !errors.Is(err, writers.ErrInvalid) {
				t.Fatalf("WriteRows error = %v, want ErrInvalid", err)
			}
			wantCount(t, s, "ok", "v1", 0)
		})
	}

	t.Run("rows with more keys than values are refused", func(t *testing.T) {
		rows := writers.Rows{Keys: good.Keys, Values: good.Values[:1]}
		if err := s.WriteRows(ctx, "ok", "v1", rows); err == nil {
			t.Fatal("WriteRows succeeded, want an error")
		}
		wantCount(t, s, "ok", "v1", 0)
	})
}

func testWriteState(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	rows := writers.Rows{Keys: [][]byte{[]byte("a")}, Values: [][]byte{[]byte("1")}}
	if err := s.WriteRows(ctx, "ws", "missing", rows); err == nil {
		t.Error("WriteRows into a version without manifest succeeded, want an error")
	}
	wantCount(t, s, "ws", "missing", 0)
	for _, st := range []writers.State{writers.StateComplete, writers.StateFailed, writers.StateRetired} {
		v := "v-" + string(st)
		put(t, s, "ws", v, st)
		if err := s.WriteRows(ctx, "ws", v, rows); err == nil {
			t.Errorf("WriteRows into a %s version succeeded, want an error", st)
		}
		wantCount(t, s, "ws", v, 0)
	}
}

// jsonRoundTrip is what a store that keeps manifests as JSON gives back.
func jsonRoundTrip(t *testing.T, m *writers.Manifest) *writers.Manifest {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := new(writers.Manifest)
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func testManifestRoundTrip(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	full := &writers.Manifest{
		Namespace:    "churn",
		Version:      "20261127T020000Z-2",
		Job:          "churn",
		State:        writers.StateComplete,
		LiveAt:       t0.Add(time.Hour),
		FlippedAt:    t0.Add(3 * time.Hour),
		LeftLiveAt:   t0.Add(4 * time.Hour),
		RolledBackAt: t0.Add(4 * time.Hour),
		Model: writers.ModelInfo{
			Path:    "models/churn.onnx",
			SHA256:  strings.Repeat("ab", 32),
			Inputs:  []writers.Tensor{{Name: "features", Type: "float32", Shape: []int64{-1, 4}}},
			Outputs: []writers.Tensor{{Name: "score", Type: "float32", Shape: []int64{-1, 1}}},
		},
		Encoding: "json",
		Outputs:  []writers.Output{{Name: "score", Width: 1}, {Name: "probs", Width: 2}},
		Sources: []writers.Source{
			{Path: "data/part-0.parquet", Bytes: 1 << 20, Rows: 1000},
			{Path: "data/part-1.parquet", Bytes: 2 << 20, Rows: 2000},
		},
		RowsRead:    3000,
		RowsWritten: 2990,
		RowsSkipped: 10,
		SkipReasons: map[string]int64{"null key": 4, "null feature": 6},
		NullOutputs: 1,
		StartedAt:   t0,
		CompletedAt: t0.Add(30 * time.Minute),
		Error:       "",
		Commits: []writers.Commit{
			{ID: "0-of-2", Rows: 1000, CommittedAt: t0.Add(10 * time.Minute)},
			{ID: "1-of-2", Rows: 1990, CommittedAt: t0.Add(20 * time.Minute)},
		},
		Gates: []writers.GateResult{
			{Name: "min_rows_ratio", Passed: true, Value: 0.99, Limit: 0.9},
			{Name: "max_null_fraction", Passed: false, Value: 0.0003, Limit: 0, Detail: "1 of 2990 rows"},
		},
		Defaults: &writers.Defaults{
			Method:    "mean",
			Global:    map[string][]float64{"score": {0.25}, "probs": {0.5, 0.5}},
			SegmentBy: "country",
			Segments:  map[string]map[string][]float64{"DE": {"score": {0.3}}, "FR": {"score": {0.2}}},
		},
	}
	failed := &writers.Manifest{Namespace: "churn", Version: "20261127T020000Z", State: writers.StateFailed,
		StartedAt: t0, Error: "read shard data/part-1.parquet: unexpected EOF"}

	for _, m := range []*writers.Manifest{full, failed} {
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatalf("PutManifest(%s): %v", m.Version, err)
		}
		got, err := s.Manifest(ctx, m.Namespace, m.Version)
		if err != nil {
			t.Fatalf("Manifest(%s): %v", m.Version, err)
		}
		if want := jsonRoundTrip(t, m); !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Errorf("Manifest(%s) = %s, want %s", m.Version, g, w)
		}
	}

	// Replacing a manifest replaces every field.
	repl := &writers.Manifest{Namespace: full.Namespace, Version: full.Version, State: writers.StateRetired}
	if err := s.PutManifest(ctx, repl); err != nil {
		t.Fatal(err)
	}
	got, err := s.Manifest(ctx, repl.Namespace, repl.Version)
	if err != nil {
		t.Fatal(err)
	}
	if want := jsonRoundTrip(t, repl); !reflect.DeepEqual(got, want) {
		t.Errorf("replaced manifest = %+v, want %+v", got, want)
	}
}

func testManifestOrder(t *testing.T, s *writers.Store) {
	want := []string{
		"20261126T230000Z",
		"20261127T020000Z",
		"20261127T020000Z-2",
		"20261127T020000Z-3",
		"20261127T020000Z-10",
		"20261127T020001Z",
	}
	for _, i := range []int{3, 0, 5, 2, 4, 1} {
		put(t, s, "order", want[i], writers.StateWriting)
	}
	ms, err := s.Manifests(context.Background(), "order")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Version)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Manifests order = %q, want %q", got, want)
	}
}

func testSwapLive(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	complete(t, s, "sw", "v1")
	complete(t, s, "sw", "v2")
	wantLive(t, s, "sw", "")

	if err := s.SwapLive(ctx, "sw", "", "v1"); err != nil {
		t.Fatalf("SwapLive(none -> v1): %v", err)
	}
	wantLive(t, s, "sw", "v1")

	steps := []struct {
		name, old, next string
	}{
		{"expecting no live version when there is one", "", "v2"},
		{"expecting the wrong live version", "v2", "v2"},
		{"expecting a version that does not exist", "v9", "v2"},
	}
	for _, tc := range steps {
		t.Run(tc.name+" conflicts and leaves live unchanged", func(t *testing.T) {
			err := s.SwapLive(ctx, "sw", tc.old, tc.next)
			if !errors.Is(err, writers.ErrConflict) {
				t.Errorf("SwapLive(%q -> %q) error = %v, want ErrConflict", tc.old, tc.next, err)
			}
			wantLive(t, s, "sw", "v1")
		})
	}

	if err := s.SwapLive(ctx, "sw", "v1", "v2"); err != nil {
		t.Fatalf("SwapLive(v1 -> v2): %v", err)
	}
	wantLive(t, s, "sw", "v2")
	wantLive(t, s, "other", "")
}

func testSwapLiveState(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	complete(t, s, "sl", "v1")
	if err := s.SwapLive(ctx, "sl", "", "v1"); err != nil {
		t.Fatal(err)
	}
	put(t, s, "sl", "writing", writers.StateWriting)
	put(t, s, "sl", "failed", writers.StateFailed)
	complete(t, s, "sl", "retired")
	if err := s.DeleteVersion(ctx, "sl", "retired"); err != nil {
		t.Fatal(err)
	}
	for _, next := range []string{"writing", "failed", "retired", "missing"} {
		if err := s.SwapLive(ctx, "sl", "v1", next); err == nil {
			t.Errorf("SwapLive(v1 -> %s) succeeded, want an error", next)
		}
		wantLive(t, s, "sl", "v1")
	}
	if err := s.SwapLive(ctx, "sl", "v1", ""); err == nil {
		t.Error("SwapLive(v1 -> none) succeeded, want an error")
	}
	wantLive(t, s, "sl", "v1")
}

func testConcurrentFlips(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const n = 16
	complete(t, s, "race", "v00")
	if _, err := writers.Flip(ctx, s, "race", "v00"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		complete(t, s, "race", fmt.Sprintf("v%02d", i))
	}

	errs := make([]error, n+1)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = writers.FlipFrom(ctx, s, "race", "v00", fmt.Sprintf("v%02d", i))
		}()
	}
	close(start)
	wg.Wait()

	var winners []string
	for i := 1; i <= n; i++ {
		switch {
		case errs[i] == nil:
			winners = append(winners, fmt.Sprintf("v%02d", i))
		case !errors.Is(errs[i], writers.ErrConflict):
			t.Errorf("FlipFrom(v00 -> v%02d) error = %v, want nil or ErrConflict", i, errs[i])
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners = %q, want exactly one", winners)
	}
	wantLive(t, s, "race", winners[0])
	// A flip that lost the compare-and-swap recorded nothing.
	for i := 1; i <= n; i++ {
		v := fmt.Sprintf("v%02d", i)
		m, err := s.Manifest(ctx, "race", v)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := !m.LiveAt.IsZero() || !m.FlippedAt.IsZero(), v == winners[0]; got != want {
			t.Errorf("Manifest(%s) records a flip: %v, want %v (winner %s)", v, got, want, winners[0])
		}
	}
}

func wantStates(t *testing.T, s *writers.Store, ns string, want map[string]writers.State) {
	t.Helper()
	_, versions, err := writers.List(context.Background(), s, ns)
	if err != nil {
		t.Fatalf("List(%s): %v", ns, err)
	}
	got := make(map[string]writers.State)
	for _, v := range versions {
		got[v.Version] = v.Effective
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("effective states = %v, want %v", got, want)
	}
}

func testFlipRollback(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "life"
	complete(t, s, ns, "v1")
	complete(t, s, ns, "v2")
	put(t, s, ns, "v3", writers.StateWriting)
	put(t, s, ns, "v4", writers.StateFailed)
	wantStates(t, s, ns, map[string]writers.State{"v1": "complete", "v2": "complete", "v3": "writing", "v4": "failed"})

	if _, _, err := writers.Rollback(ctx, s, ns); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Rollback with nothing live: error = %v, want ErrNotFound", err)
	}

	prev, err := writers.Flip(ctx, s, ns, "v1")
	if err != nil || prev != "" {
		t.Fatalf("Flip(v1) = %q, %v; want \"\", nil", prev, err)
	}
	prev, err = writers.Flip(ctx, s, ns, "v2")
	if err != nil || prev != "v1" {
		t.Fatalf("Flip(v2) = %q, %v; want v1, nil", prev, err)
	}
	wantLive(t, s, ns, "v2")
	wantStates(t, s, ns, map[string]writers.State{"v1": "previous", "v2": "live", "v3": "writing", "v4": "failed"})
	m, err := s.Manifest(ctx, ns, "v2")
	if err != nil || m.LiveAt.IsZero() {
		t.Errorf("Manifest(v2).LiveAt = %v, %v; want it set", m.LiveAt, err)
	}

	prev, err = writers.Flip(ctx, s, ns, "v2")
	if err != nil || prev != "v2" {
		t.Errorf("Flip(v2) again = %q, %v; want v2, nil (a no-op)", prev, err)
	}
	for _, v := range []string{"v3", "v4", "missing"} {
		if _, err := writers.Flip(ctx, s, ns, v); err == nil {
			t.Errorf("Flip(%s) succeeded, want an error", v)
		}
		wantLive(t, s, ns, "v2")
	}
	if err := writers.FlipFrom(ctx, s, ns, "v1", "v1"); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("FlipFrom(v1 -> v1) while v2 is live: error = %v, want ErrConflict", err)
	}

	from, to, err := writers.Rollback(ctx, s, ns)
	if err != nil || from != "v2" || to != "v1" {
		t.Fatalf("Rollback = %q -> %q, %v; want v2 -> v1, nil", from, to, err)
	}
	wantLive(t, s, ns, "v1")
	wantValue(t, s, ns, "v1", []byte("k"), []byte("v1"))
	wantStates(t, s, ns, map[string]writers.State{"v1": "live", "v2": "previous", "v3": "writing", "v4": "failed"})

	if _, _, err := writers.Rollback(ctx, s, ns); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Rollback with no older previous version: error = %v, want ErrNotFound", err)
	}
	wantLive(t, s, ns, "v1")
}

// Version ids that sort against their age, as --version and --k8s-job can make them: by
// VersionLess, hotfix < cron1 < cron2 < manual, whatever order the tests publish them in.
const (
	cron1  = "churn-29400120"   // --version named after a CronJob's Job
	hotfix = "20261201T101500Z" // a run with a default (start time) id
	cron2  = "churn-29401560"   // the CronJob's next Job
	manual = "churn-manual-fix" // --k8s-job of a Job created by hand
)

// at is the test clock: hour h of 2026-12-01.
func at(h float64) time.Time {
	return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(h * float64(time.Hour)))
}

// made writes a version of one row in state st, started and (unless writing) completed
// at hour h.
func made(t *testing.T, s *writers.Store, ns, version string, st writers.State, h float64) {
	t.Helper()
	put(t, s, ns, version, writers.StateWriting)
	write(t, s, ns, version, []string{"k"}, []string{version})
	m, err := s.Manifest(context.Background(), ns, version)
	if err != nil {
		t.Fatal(err)
	}
	m.State, m.StartedAt = st, at(h)
	if st != writers.StateWriting {
		m.CompletedAt = at(h)
	}
	if err := s.PutManifest(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func flipAt(t *testing.T, s *writers.Store, ns, version string, h float64) {
	t.Helper()
	if _, err := writers.FlipAt(context.Background(), s, ns, version, at(h)); err != nil {
		t.Fatalf("FlipAt(%s, %s): %v", ns, version, err)
	}
}

// wantHistory checks List: the versions in order, the live one, and the rollback target
// ("" for none).
func wantHistory(t *testing.T, s *writers.Store, ns string, order []string, live, target string) {
	t.Helper()
	gotLive, versions, err := writers.List(context.Background(), s, ns)
	if err != nil {
		t.Fatalf("List(%s): %v", ns, err)
	}
	var got []string
	gotTarget := ""
	for _, v := range versions {
		got = append(got, v.Version)
		if v.RollbackTarget {
			if gotTarget != "" {
				t.Errorf("List(%s) marks %s and %s as the rollback target, want one", ns, gotTarget, v.Version)
			}
			gotTarget = v.Version
		}
	}
	if !reflect.DeepEqual(got, order) {
		t.Errorf("List(%s) order = %q, want %q", ns, got, order)
	}
	if gotLive != live {
		t.Errorf("List(%s) live = %q, want %q", ns, gotLive, live)
	}
	if gotTarget != target {
		t.Errorf("List(%s) rollback target = %q, want %q", ns, gotTarget, target)
	}
}

func wantTimes(t *testing.T, s *writers.Store, ns, version string, liveAt, flippedAt, leftAt, rolledBackAt time.Time) {
	t.Helper()
	m, err := s.Manifest(context.Background(), ns, version)
	if err != nil {
		t.Fatalf("Manifest(%s/%s): %v", ns, version, err)
	}
	got := []time.Time{m.LiveAt, m.FlippedAt, m.LeftLiveAt, m.RolledBackAt}
	want := []time.Time{liveAt, flippedAt, leftAt, rolledBackAt}
	for i, name := range []string{"LiveAt", "FlippedAt", "LeftLiveAt", "RolledBackAt"} {
		if !got[i].Equal(want[i]) {
			t.Errorf("Manifest(%s).%s = %v, want %v", version, name, got[i], want[i])
		}
	}
}

func testFlipHistory(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "fh"
	var never time.Time
	for _, v := range []string{cron1, hotfix, cron2} {
		made(t, s, ns, v, writers.StateComplete, 0)
	}
	flipAt(t, s, ns, cron1, 1)
	flipAt(t, s, ns, hotfix, 2)
	wantTimes(t, s, ns, cron1, at(1), at(1), at(2), never)
	wantTimes(t, s, ns, hotfix, at(2), at(2), never, never)

	if _, _, err := writers.RollbackAt(ctx, s, ns, at(3)); err != nil {
		t.Fatalf("RollbackAt: %v", err)
	}
	wantLive(t, s, ns, cron1)
	// A rollback steps back: cron1 keeps its place; hotfix records that a rollback left it.
	wantTimes(t, s, ns, cron1, at(1), at(1), at(2), never)
	wantTimes(t, s, ns, hotfix, at(2), at(2), at(3), at(3))

	// A flip made live again keeps the first LiveAt and moves FlippedAt.
	flipAt(t, s, ns, hotfix, 4)
	wantTimes(t, s, ns, hotfix, at(2), at(4), at(3), at(3))
	wantTimes(t, s, ns, cron1, at(1), at(1), at(4), never)

	// A flip whose clock is behind is still recorded after the version it replaced went
	// live, so the history follows the pointer.
	flipAt(t, s, ns, cron2, -100)
	m, err := s.Manifest(ctx, ns, cron2)
	if err != nil {
		t.Fatal(err)
	}
	if !m.FlippedAt.After(at(4)) || !m.LiveAt.Equal(m.FlippedAt) {
		t.Errorf("Manifest(%s) after a flip with a slow clock: LiveAt %v, FlippedAt %v; want both after %v", cron2, m.LiveAt, m.FlippedAt, at(4))
	}
	wantTimes(t, s, ns, hotfix, at(2), at(4), m.FlippedAt, at(3))
	wantHistory(t, s, ns, []string{cron1, hotfix, cron2}, cron2, hotfix)

	// Flipping to the live version records nothing.
	flipAt(t, s, ns, cron2, 10)
	if again, err := s.Manifest(ctx, ns, cron2); err != nil || !again.FlippedAt.Equal(m.FlippedAt) {
		t.Errorf("Manifest(%s).FlippedAt after a no-op flip = %v, %v; want %v unchanged", cron2, again.FlippedAt, err, m.FlippedAt)
	}
}

func testListHistory(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "lh"
	const late = "20200101T000000Z" // sorts first, made last
	made(t, s, ns, cron1, writers.StateComplete, 0)
	made(t, s, ns, hotfix, writers.StateComplete, 0.5)
	made(t, s, ns, cron2, writers.StateComplete, 2.5)
	flipAt(t, s, ns, cron1, 1)
	made(t, s, ns, manual, writers.StateComplete, 1.5) // never live: gate failed
	flipAt(t, s, ns, hotfix, 2)
	flipAt(t, s, ns, cron2, 3)
	made(t, s, ns, late, writers.StateComplete, 4)
	made(t, s, ns, "churn-29402000", writers.StateWriting, 5)

	order := []string{cron1, manual, hotfix, cron2, late, "churn-29402000"}
	wantHistory(t, s, ns, order, cron2, hotfix)

	// A rollback moves nothing in the history: only states and the target do.
	if from, to, err := writers.RollbackAt(ctx, s, ns, at(6)); err != nil || from != cron2 || to != hotfix {
		t.Fatalf("RollbackAt = %s -> %s, %v; want %s -> %s", from, to, err, cron2, hotfix)
	}
	wantHistory(t, s, ns, order, hotfix, cron1)
	wantStates(t, s, ns, map[string]writers.State{cron1: "previous", manual: "complete", hotfix: "live",
		cron2: "previous", late: "complete", "churn-29402000": "writing"})
	_, versions, err := writers.List(ctx, s, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		if want := v.Version == cron2; v.LeftByRollback != want {
			t.Errorf("List: %s LeftByRollback = %v, want %v", v.Version, v.LeftByRollback, want)
		}
	}

	// A flip appends to the history, wherever the version was before.
	flipAt(t, s, ns, cron1, 7)
	wantHistory(t, s, ns, []string{manual, hotfix, cron2, late, "churn-29402000", cron1}, cron1, hotfix)
}

// testRollbackHistory runs scripts of flips and rollbacks. Before each rollback, List
// must mark the version it then returns to.
func testRollbackHistory(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	type step struct {
		op      string // flip; rollback (to version); none (no rollback; version is the one to go forward to)
		version string
	}
	flip := func(v string) step { return step{"flip", v} }
	back := func(v string) step { return step{"rollback", v} }
	none := func(newer string) step { return step{"none", newer} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"a hotfix published between two cron runs is what a rollback returns to", []step{
			flip(cron1), flip(hotfix), flip(cron2), back(hotfix), back(cron1), none(hotfix)}},
		{"a hotfix published last rolls back to the cron runs before it", []step{
			flip(cron1), flip(cron2), flip(hotfix), back(cron2), back(cron1), none(cron2)}},
		{"a Job created by hand between two cron runs is what a rollback returns to", []step{
			flip(cron1), flip(manual), flip(cron2), back(manual), back(cron1), none(manual)}},
		{"a rollback never returns to the version it left, and a flip brings that back", []step{
			flip(cron1), flip(hotfix), flip(cron2), back(hotfix), flip(cron2), back(hotfix), back(cron1), none(hotfix)}},
		{"a flip to an older version by hand is a new step back from", []step{
			flip(cron1), flip(hotfix), flip(cron2), flip(cron1), back(cron2), back(hotfix), none(cron2)}},
		{"a flip after a rollback leaves the version rolled back from behind", []step{
			flip(cron1), flip(hotfix), back(cron1), flip(cron2), back(cron1), none(cron2)}},
		{"with one version live there is nothing to roll back to", []step{
			flip(manual), none("")}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := fmt.Sprintf("rh%d", i)
			for _, v := range []string{cron1, hotfix, cron2, manual} {
				made(t, s, ns, v, writers.StateComplete, 0)
			}
			for j, st := range tc.steps {
				now := at(float64(j + 1))
				switch st.op {
				case "flip":
					if _, err := writers.FlipAt(ctx, s, ns, st.version, now); err != nil {
						t.Fatalf("step %d: FlipAt(%s): %v", j, st.version, err)
					}
				case "rollback":
					live, _ := s.Live(ctx, ns)
					wantTarget(t, s, ns, st.version)
					from, to, err := writers.RollbackAt(ctx, s, ns, now)
					if err != nil || from != live || to != st.version {
						t.Fatalf("step %d: RollbackAt = %q -> %q, %v; want %s -> %s", j, from, to, err, live, st.version)
					}
				case "none":
					live, _ := s.Live(ctx, ns)
					wantTarget(t, s, ns, "")
					_, to, err := writers.RollbackAt(ctx, s, ns, now)
					var nr *writers.NoRollbackError
					if !errors.As(err, &nr) || !errors.Is(err, writers.ErrNotFound) {
						t.Fatalf("step %d: RollbackAt = %q, %v; want a *NoRollbackError", j, to, err)
					}
					if nr.Live != live || nr.Newer != st.version {
						t.Errorf("step %d: NoRollbackError live %q, newer %q; want %q, %q", j, nr.Live, nr.Newer, live, st.version)
					}
					wantLive(t, s, ns, live)
				}
			}
		})
	}
}

func wantTarget(t *testing.T, s *writers.Store, ns, want string) {
	t.Helper()
	_, versions, err := writers.List(context.Background(), s, ns)
	if err != nil {
		t.Fatalf("List(%s): %v", ns, err)
	}
	got := ""
	for _, v := range versions {
		if v.RollbackTarget {
			got = v.Version
		}
	}
	if got != want {
		t.Errorf("List(%s) rollback target = %q, want %q", ns, got, want)
	}
}

// testLegacyHistory stores manifests as the catalog wrote them before FlippedAt,
// LeftLiveAt and RolledBackAt existed (LiveAt only, and a rollback recorded nothing):
// cron1, hotfix and cron2 were flipped live in that order, then rolled back to hotfix.
func testLegacyHistory(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "legacy"
	for i, v := range []string{cron1, hotfix, cron2} {
		made(t, s, ns, v, writers.StateComplete, 0)
		m, err := s.Manifest(ctx, ns, v)
		if err != nil {
			t.Fatal(err)
		}
		m.LiveAt = at(float64(i + 1))
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	made(t, s, ns, manual, writers.StateComplete, 2.5) // never live
	if err := s.SwapLive(ctx, ns, "", hotfix); err != nil {
		t.Fatal(err)
	}
	// LiveAt orders them; cron2 went live after hotfix first did, so a rollback left it.
	wantHistory(t, s, ns, []string{cron1, hotfix, manual, cron2}, hotfix, cron1)

	// After a flip, the version it replaced is the one to return to, not cron2.
	flipAt(t, s, ns, manual, 4)
	wantTarget(t, s, ns, hotfix)
	for i, want := range []string{hotfix, cron1} {
		if _, to, err := writers.RollbackAt(ctx, s, ns, at(float64(5+i))); err != nil || to != want {
			t.Fatalf("RollbackAt = %q, %v; want %s", to, err, want)
		}
	}
	var nr *writers.NoRollbackError
	if _, _, err := writers.RollbackAt(ctx, s, ns, at(7)); !errors.As(err, &nr) || nr.Newer != hotfix {
		t.Errorf("a third RollbackAt: %v; want a *NoRollbackError pointing at %s", err, hotfix)
	}
}

// testGC publishes versions whose ids sort against their age; gc must judge them by
// the history alone.
func testGC(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "gc"
	const live = "20261130T000000Z"       // flipped last, sorts first
	const superseded = "20300101T000000Z" // complete before live went live, sorts last
	const candidate = "20000101T000000Z"  // complete after live went live, sorts first
	now := at(24)
	for i, v := range []string{cron1, manual, hotfix, cron2, live} {
		made(t, s, ns, v, writers.StateComplete, float64(i)+0.5)
		flipAt(t, s, ns, v, float64(i+1))
	}
	made(t, s, ns, "churn-failed", writers.StateFailed, 1.5)
	made(t, s, ns, "churn-abandoned", writers.StateWriting, 2.5)
	made(t, s, ns, superseded, writers.StateComplete, 4.7)
	made(t, s, ns, candidate, writers.StateComplete, 6)
	made(t, s, ns, "churn-running", writers.StateWriting, 23.9)

	removed, err := writers.GC(ctx, s, ns, 2, time.Hour, now)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	want := []string{cron1, "churn-failed", manual, "churn-abandoned", superseded}
	if !reflect.DeepEqual(removed, want) {
		t.Errorf("GC removed %q, want %q", removed, want)
	}
	wantLive(t, s, ns, live)
	wantStates(t, s, ns, map[string]writers.State{
		cron1:             "retired",
		"churn-failed":    "retired",
		manual:            "retired",
		"churn-abandoned": "retired",
		hotfix:            "previous",
		cron2:             "previous",
		superseded:        "retired",
		live:              "live",
		candidate:         "complete",
		"churn-running":   "writing",
	})
	for _, v := range want {
		wantCount(t, s, ns, v, 0)
	}
	wantValue(t, s, ns, hotfix, []byte("k"), []byte(hotfix))
	wantValue(t, s, ns, candidate, []byte("k"), []byte(candidate))

	removed, err = writers.GC(ctx, s, ns, 2, time.Hour, now)
	if err != nil || len(removed) != 0 {
		t.Errorf("second GC removed %q, %v; want nothing", removed, err)
	}
	removed, err = writers.GC(ctx, s, ns, 0, time.Hour, now)
	if want := []string{hotfix, cron2}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Errorf("GC keeping 0 removed %q, %v; want %q", removed, err, want)
	}
	wantLive(t, s, ns, live)
}

func testGCRollback(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	const ns = "gcrb"
	for _, v := range []string{cron1, hotfix, cron2} {
		made(t, s, ns, v, writers.StateComplete, 0)
	}
	made(t, s, ns, manual, writers.StateComplete, 3.5)
	flipAt(t, s, ns, cron1, 1)
	flipAt(t, s, ns, hotfix, 2)
	flipAt(t, s, ns, cron2, 3)
	if _, to, err := writers.RollbackAt(ctx, s, ns, at(4)); err != nil || to != hotfix {
		t.Fatalf("RollbackAt = %q, %v; want %s", to, err, hotfix)
	}
	// cron2 comes after the live hotfix in the history: a flip may bring it back.
	removed, err := writers.GC(ctx, s, ns, 0, time.Hour, at(24))
	if want := []string{cron1}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Errorf("GC keeping 0 after a rollback removed %q, %v; want %q", removed, err, want)
	}
	// Once another version is flipped live, cron2 is behind it: superseded, not a
	// rollback target, so gc removes it and keeps the one a rollback returns to.
	flipAt(t, s, ns, manual, 5)
	wantTarget(t, s, ns, hotfix)
	removed, err = writers.GC(ctx, s, ns, 1, time.Hour, at(24))
	if want := []string{cron2}; err != nil || !reflect.DeepEqual(removed, want) {
		t.Errorf("GC keeping 1 after a flip removed %q, %v; want %q", removed, err, want)
	}
	wantStates(t, s, ns, map[string]writers.State{cron1: "retired", hotfix: "previous", cron2: "retired", manual: "live"})
}

func testDeleteVersion(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	complete(t, s, "del", "v1")
	complete(t, s, "del", "v2")
	if _, err := writers.Flip(ctx, s, "del", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVersion(ctx, "del", "v1"); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("DeleteVersion(live) error = %v, want ErrConflict", err)
	}
	wantValue(t, s, "del", "v1", []byte("k"), []byte("v1"))

	if err := s.DeleteVersion(ctx, "del", "v2"); err != nil {
		t.Fatalf("DeleteVersion(v2): %v", err)
	}
	wantNotFound(t, s, "del", "v2", []byte("k"))
	wantCount(t, s, "del", "v2", 0)
	m, err := s.Manifest(ctx, "del", "v2")
	if err != nil || m.State != writers.StateRetired {
		t.Errorf("Manifest(v2) after delete = %v, %v; want state retired", m, err)
	}
	if err := s.DeleteVersion(ctx, "del", "missing"); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("DeleteVersion(missing) error = %v, want ErrNotFound", err)
	}
}

func testNewVersionID(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	at := time.Date(2026, 11, 27, 3, 0, 0, 0, time.FixedZone("CET", 3600))
	want := []string{"20261127T020000Z", "20261127T020000Z-2", "20261127T020000Z-3"}
	for _, w := range want {
		id, err := writers.NewVersionID(ctx, s, "ids", at)
		if err != nil {
			t.Fatal(err)
		}
		if id != w {
			t.Errorf("NewVersionID = %q, want %q", id, w)
		}
		put(t, s, "ids", id, writers.StateWriting)
	}
	id, err := writers.NewVersionID(ctx, s, "other", at)
	if err != nil || id != want[0] {
		t.Errorf("NewVersionID(other namespace) = %q, %v; want %q", id, err, want[0])
	}
}

// wantHeld checks that err is a *LeaseHeldError for ns naming holder.
func wantHeld(t *testing.T, err error, ns, holder string) {
	t.Helper()
	var held *writers.LeaseHeldError
	switch {
	case !errors.As(err, &held):
		t.Errorf("AcquireLease error = %v, want a *LeaseHeldError", err)
	case !errors.Is(err, writers.ErrLeaseHeld):
		t.Errorf("AcquireLease error = %v, want it to wrap ErrLeaseHeld", err)
	case held.Namespace != ns || held.Holder != holder:
		t.Errorf("LeaseHeldError names %s held by %q, want %s held by %q", held.Namespace, held.Holder, ns, holder)
	}
}

func acquire(t *testing.T, s *writers.Store, ns, holder string, ttl time.Duration) writers.Lease {
	t.Helper()
	l, err := s.AcquireLease(context.Background(), ns, holder, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", ns, holder, err)
	}
	if l.Namespace != ns || l.Holder != holder || l.Token == "" {
		t.Fatalf("AcquireLease(%s, %s) = %+v, want that namespace and holder and a token", ns, holder, l)
	}
	return l
}

// acquireEventually polls AcquireLease until it succeeds or 5 seconds pass.
func acquireEventually(t *testing.T, s *writers.Store, ns, holder string, ttl time.Duration) writers.Lease {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := s.AcquireLease(context.Background(), ns, holder, ttl)
		if err == nil {
			return l
		}
		if !errors.Is(err, writers.ErrLeaseHeld) || time.Now().After(deadline) {
			t.Fatalf("AcquireLease(%s, %s) after the lease expired: %v, want success", ns, holder, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLeaseHeld(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	before := time.Now()
	a := acquire(t, s, "ls", "run-a", time.Minute)
	if a.Expires.Before(before.Add(50*time.Second)) || a.Expires.After(time.Now().Add(time.Minute+time.Second)) {
		t.Errorf("lease expires %s, want about a minute from %s", a.Expires, before)
	}
	_, err := s.AcquireLease(ctx, "ls", "run-b", time.Minute)
	wantHeld(t, err, "ls", "run-a")
	var held *writers.LeaseHeldError
	if errors.As(err, &held) && (held.Expires.Before(time.Now()) || held.Expires.After(time.Now().Add(time.Minute+time.Second))) {
		t.Errorf("LeaseHeldError expires %s, want within the next minute", held.Expires)
	}
	// The same holder name does not get a second lease either: a lease is per acquisition.
	_, err = s.AcquireLease(ctx, "ls", "run-a", time.Minute)
	wantHeld(t, err, "ls", "run-a")

	// Other namespaces have their own lease.
	acquire(t, s, "ls2", "run-b", time.Minute)

	// Renewing extends the lease and keeps its token.
	r, err := s.RenewLease(ctx, a, 2*time.Minute)
	if err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if r.Token != a.Token || !r.Expires.After(a.Expires) {
		t.Errorf("RenewLease = %+v, want token %s and an expiry after %s", r, a.Token, a.Expires)
	}
	// A forged token renews nothing.
	forged := a
	forged.Token += "x"
	if _, err := s.RenewLease(ctx, forged, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease with a wrong token: error = %v, want ErrLeaseLost", err)
	}
	if err := s.ReleaseLease(ctx, forged); err != nil {
		t.Errorf("ReleaseLease with a wrong token: %v, want nil", err)
	}
	_, err = s.AcquireLease(ctx, "ls", "run-b", time.Minute)
	wantHeld(t, err, "ls", "run-a")

	for _, tc := range []struct {
		name, ns, holder string
		ttl              time.Duration
	}{
		{"an invalid namespace", "A/B", "run", time.Minute},
		{"an empty holder", "ls3", "", time.Minute},
		{"a zero ttl", "ls3", "run", 0},
	} {
		if _, err := s.AcquireLease(ctx, tc.ns, tc.holder, tc.ttl); !errors.Is(err, writers.ErrInvalid) {
			t.Errorf("AcquireLease with %s: error = %v, want ErrInvalid", tc.name, err)
		}
	}
}

func testLeaseExpiry(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	a := acquire(t, s, "lx", "run-a", 200*time.Millisecond)
	b := acquireEventually(t, s, "lx", "run-b", time.Minute)
	if b.Token == a.Token {
		t.Errorf("takeover lease has the old token %s, want a new one", a.Token)
	}
	if _, err := s.RenewLease(ctx, a, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease by the old holder after takeover: error = %v, want ErrLeaseLost", err)
	}
	// The old holder's release must not release its successor's lease.
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Errorf("ReleaseLease by the old holder: %v, want nil", err)
	}
	_, err := s.AcquireLease(ctx, "lx", "run-c", time.Minute)
	wantHeld(t, err, "lx", "run-b")
	if _, err := s.RenewLease(ctx, b, time.Minute); err != nil {
		t.Errorf("RenewLease by the new holder: %v", err)
	}

	// A lease that expired is lost even when nobody has taken it over.
	c := acquire(t, s, "lx2", "run-c", 200*time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	if _, err := s.RenewLease(ctx, c, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease after expiry: error = %v, want ErrLeaseLost", err)
	}
}

func testLeaseRelease(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	a := acquire(t, s, "lr", "run-a", time.Minute)
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Errorf("second ReleaseLease: %v, want nil", err)
	}
	if _, err := s.RenewLease(ctx, a, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease after release: error = %v, want ErrLeaseLost", err)
	}
	b := acquire(t, s, "lr", "run-b", time.Minute)
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Errorf("ReleaseLease of a released lease: %v, want nil", err)
	}
	_, err := s.AcquireLease(ctx, "lr", "run-c", time.Minute)
	wantHeld(t, err, "lr", "run-b")
	if err := s.ReleaseLease(ctx, b); err != nil {
		t.Fatal(err)
	}
	acquire(t, s, "lr", "run-c", time.Minute)
}

func testLeaseConcurrent(t *testing.T, s *writers.Store) {
	const n = 16
	leases := make([]writers.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			leases[i], errs[i] = s.AcquireLease(context.Background(), "lc", fmt.Sprintf("run-%02d", i), time.Minute)
		}()
	}
	close(start)
	wg.Wait()
	var winners []string
	for i := range n {
		if errs[i] == nil {
			winners = append(winners, leases[i].Holder)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners = %q, want exactly one", winners)
	}
	for i := range n {
		if errs[i] != nil {
			wantHeld(t, errs[i], "lc", winners[0])
		}
	}
}

func wantCommits(t *testing.T, s *writers.Store, ns, version string, want []writers.Commit) {
	t.Helper()
	got, err := s.Commits(context.Background(), ns, version)
	if err != nil {
		t.Fatalf("Commits(%s/%s): %v", ns, version, err)
	}
	if len(got) != len(want) {
		t.Fatalf("Commits(%s/%s) = %d shards %+v, want %d %+v", ns, version, len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Rows != want[i].Rows || !got[i].CommittedAt.Equal(want[i].CommittedAt) {
			t.Errorf("Commits(%s/%s)[%d] = %+v, want %+v", ns, version, i, got[i], want[i])
		}
	}
}

func commit(t *testing.T, s *writers.Store, ns, version string, sh writers.Commit) {
	t.Helper()
	if err := s.CommitWork(context.Background(), ns, version, sh); err != nil {
		t.Fatalf("CommitShard(%s/%s, %s): %v", ns, version, sh.ID, err)
	}
}

func testCommits(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "sh", "v1", writers.StateWriting)
	put(t, s, "sh", "v10", writers.StateWriting)
	wantCommits(t, s, "sh", "v1", nil)

	shards := []writers.Commit{
		{ID: "part-1.parquet#0", Rows: 10, CommittedAt: t0.Add(time.Minute)},
		{ID: "part-0.parquet#1", Rows: 20, CommittedAt: t0.Add(2 * time.Minute)},
		{ID: "part-0.parquet#0", Rows: 30, CommittedAt: t0.Add(3 * time.Minute)},
		{ID: "dir/ключ:0", Rows: 0, CommittedAt: t0.Add(4 * time.Minute)},
	}
	for _, sh := range shards {
		commit(t, s, "sh", "v1", sh)
	}
	commit(t, s, "sh", "v10", writers.Commit{ID: "other", Rows: 1, CommittedAt: t0})
	want := []writers.Commit{shards[3], shards[2], shards[1], shards[0]}
	wantCommits(t, s, "sh", "v1", want)

	// Committing an ID again replaces its record.
	again := writers.Commit{ID: "part-0.parquet#1", Rows: 21, CommittedAt: t0.Add(time.Hour)}
	commit(t, s, "sh", "v1", again)
	want[2] = again
	wantCommits(t, s, "sh", "v1", want)

	wantCommits(t, s, "sh", "v10", []writers.Commit{{ID: "other", Rows: 1, CommittedAt: t0}})
	wantCommits(t, s, "other", "v1", nil)

	for _, id := range []string{"", "bad\xff", strings.Repeat("x", writers.MaxKeyLen+1)} {
		if err := s.CommitWork(ctx, "sh", "v1", writers.Commit{ID: id}); !errors.Is(err, writers.ErrInvalid) {
			t.Errorf("CommitShard(id %q) error = %v, want ErrInvalid", id, err)
		}
	}
	if err := s.CommitWork(ctx, "sh", "v/1", writers.Commit{ID: "x"}); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("CommitShard(version v/1) error = %v, want ErrInvalid", err)
	}
	wantCommits(t, s, "sh", "v1", want)
}

func testCommitsConcurrent(t *testing.T, s *writers.Store) {
	const n = 16
	put(t, s, "shc", "v1", writers.StateWriting)
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	want := make([]writers.Commit, n)
	for i := range n {
		want[i] = writers.Commit{ID: fmt.Sprintf("shard-%02d", i), Rows: int64(100 + i), CommittedAt: t0.Add(time.Duration(i) * time.Second)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.CommitWork(context.Background(), "shc", "v1", want[i])
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("CommitShard(%s): %v", want[i].ID, err)
		}
	}
	wantCommits(t, s, "shc", "v1", want)
}

func testCommitsDeleted(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	complete(t, s, "shd", "v1")
	complete(t, s, "shd", "v2")
	for _, v := range []string{"v1", "v2"} {
		commit(t, s, "shd", v, writers.Commit{ID: "0", Rows: 1, CommittedAt: t0})
	}
	if err := s.DeleteVersion(ctx, "shd", "v1"); err != nil {
		t.Fatalf("DeleteVersion(v1): %v", err)
	}
	wantCommits(t, s, "shd", "v1", nil)
	wantCommits(t, s, "shd", "v2", []writers.Commit{{ID: "0", Rows: 1, CommittedAt: t0}})
}

// testNeighbours runs the whole lifecycle on namespace demo (rows, commits, a lease,
// flips, rollback, gc, delete) next to demo2 and demo.x, whose names extend it, and
// checks that nothing of theirs changed: a store whose prefixes do not end where a name
// ends would read or delete their live pointers, manifests, rows or commits.
func testNeighbours(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	neighbours := []string{"demo2", "demo.x", "demo-", "demo_"}
	for _, ns := range neighbours {
		for _, v := range []string{"v1", "v2"} {
			put(t, s, ns, v, writers.StateWriting)
			write(t, s, ns, v, []string{"k1", "k2"}, []string{ns + v + "1", ns + v + "2"})
			commit(t, s, ns, v, writers.Commit{ID: "c-" + v, Rows: 2})
			complete(t, s, ns, v)
		}
		if _, err := writers.Flip(ctx, s, ns, "v1"); err != nil {
			t.Fatalf("Flip(%s, v1): %v", ns, err)
		}
	}
	neighbourLease := acquire(t, s, "demo2", "other-run", time.Minute)

	for _, v := range []string{"v1", "v2", "v3"} {
		put(t, s, "demo", v, writers.StateWriting)
		write(t, s, "demo", v, []string{"k1", "k2"}, []string{"d1", "d2"})
		commit(t, s, "demo", v, writers.Commit{ID: "c-" + v, Rows: 2})
		complete(t, s, "demo", v)
		if _, err := writers.Flip(ctx, s, "demo", v); err != nil {
			t.Fatalf("Flip(demo, %s): %v", v, err)
		}
	}
	if _, _, err := writers.Rollback(ctx, s, "demo"); err != nil {
		t.Fatalf("Rollback(demo): %v", err)
	}
	if _, err := writers.GC(ctx, s, "demo", 0, time.Hour, time.Now()); err != nil {
		t.Fatalf("GC(demo): %v", err)
	}
	l := acquire(t, s, "demo", "run", time.Minute)
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Fatalf("ReleaseLease(demo): %v", err)
	}
	if err := s.DeleteVersion(ctx, "demo", "v3"); err != nil {
		t.Fatalf("DeleteVersion(demo, v3): %v", err)
	}

	for _, ns := range neighbours {
		wantLive(t, s, ns, "v1")
		wantStates(t, s, ns, map[string]writers.State{"v1": writers.StateLive, "v2": writers.StateComplete})
		for _, v := range []string{"v1", "v2"} {
			wantValue(t, s, ns, v, []byte("k1"), []byte(ns+v+"1"))
			wantCount(t, s, ns, v, 3) // k1, k2 and the k that complete writes
			wantCommits(t, s, ns, v, []writers.Commit{{ID: "c-" + v, Rows: 2}})
		}
	}
	if _, err := s.AcquireLease(ctx, "demo2", "intruder", time.Minute); !errors.Is(err, writers.ErrLeaseHeld) {
		t.Errorf("AcquireLease(demo2) after demo's lease came and went = %v, want ErrLeaseHeld", err)
	}
	if _, err := s.RenewLease(ctx, neighbourLease, time.Minute); err != nil {
		t.Errorf("RenewLease(demo2): %v, want its lease untouched", err)
	}
}

// testCloseInFlight closes the store while goroutines read and write it: every call
// either completes or fails with ErrClosed (a driver closed under a call would panic or
// fail otherwise), and once Close returns every call fails with ErrClosed.
func testCloseInFlight(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "cl", "v1", writers.StateWriting)
	write(t, s, "cl", "v1", []string{"k"}, []string{"v"})

	var wg, running sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if j == 1 {
					running.Done() // one call made: Close now races the ones that follow
				}
				var err error
				switch (i + j) % 4 {
				case 0:
					_, err = s.Get(ctx, "cl", "v1", []byte("k"))
				case 1:
					err = s.WriteRows(ctx, "cl", "v1", writers.Rows{Keys: [][]byte{[]byte(fmt.Sprint("k", i, j))}, Values: [][]byte{[]byte("v")}})
				case 2:
					_, err = s.Manifests(ctx, "cl")
				case 3:
					_, err = s.CountKeys(ctx, "cl", "v1")
				}
				if err != nil {
					if !errors.Is(err, writers.ErrClosed) {
						errs <- err
					}
					if j == 0 {
						running.Done()
					}
					return
				}
			}
		}()
	}
	running.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Get(ctx, "cl", "v1", []byte("k")); !errors.Is(err, writers.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Live(ctx, "cl"); !errors.Is(err, writers.ErrClosed) {
		t.Errorf("Live after Close = %v, want ErrClosed", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a call racing Close failed with %v, want success or ErrClosed", err)
	}
}

func testGetMany(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	put(t, s, "gm", "v1", writers.StateWriting)
	var keys, vals []string
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("k%03d", i))
		vals = append(vals, fmt.Sprintf("v%03d", i))
	}
	write(t, s, "gm", "v1", keys, vals)
	put(t, s, "gm", "v2", writers.StateWriting)
	write(t, s, "gm", "v2", []string{"k000"}, []string{"other"})
	setState(t, s, "gm", "v1", writers.StateComplete)

	ask := [][]byte{[]byte("k007"), []byte("missing"), []byte("k299"), []byte("k007"), []byte("k000")}
	for i := range 200 {
		ask = append(ask, []byte(fmt.Sprintf("k%03d", (i*7)%300)))
	}
	got, err := s.GetMany(ctx, "gm", "v1", ask)
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if len(got) != len(ask) {
		t.Fatalf("GetMany answered %d values for %d keys", len(got), len(ask))
	}
	for i, k := range ask {
		want := []byte(nil)
		if n, err := fmt.Sscanf(string(k), "k%03d", new(int)); err == nil && n == 1 {
			want = []byte("v" + string(k[1:]))
		}
		if !bytes.Equal(got[i], want) || (want == nil) != (got[i] == nil) {
			t.Errorf("GetMany[%d] (%q) = %q, want %q", i, k, got[i], want)
		}
	}
	if got, err := s.GetMany(ctx, "gm", "v2", [][]byte{[]byte("k000"), []byte("k001")}); err != nil || string(got[0]) != "other" || got[1] != nil {
		t.Errorf("GetMany(v2) = %q, %v; want [other nil]", got, err)
	}
	if got, err := s.GetMany(ctx, "gm", "nope", [][]byte{[]byte("k000")}); err != nil || len(got) != 1 || got[0] != nil {
		t.Errorf("GetMany(missing version) = %q, %v; want [nil]", got, err)
	}
	if _, err := s.GetMany(ctx, "gm", "v1", [][]byte{[]byte("ok"), {}}); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("GetMany with an empty key: %v, want ErrInvalid", err)
	}
}

func newRelease(ns, id string) *writers.Release {
	return &writers.Release{ID: id, Namespace: ns, Mode: writers.ModeCanary, Live: "v1", Candidate: "v2",
		WeightPercent: 10, State: writers.ReleaseRunning, Salt: id, StartedAt: t0, UpdatedAt: t0,
		Canary: writers.CanaryConfig{Steps: []float64{10, 50, 100}, Interval: writers.Duration(time.Minute), MinRequests: 100}}
}

func testReleaseSwap(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	if r, err := s.Release(ctx, "rel"); err != nil || r != nil {
		t.Fatalf("Release with none = %+v, %v; want nil, nil", r, err)
	}
	r := newRelease("rel", "r1")
	if err := s.SwapRelease(ctx, r); err != nil {
		t.Fatalf("SwapRelease(new): %v", err)
	}
	if r.Revision != 1 {
		t.Errorf("revision after the first swap = %d, want 1", r.Revision)
	}
	got, err := s.Release(ctx, "rel")
	if err != nil || got == nil {
		t.Fatalf("Release = %+v, %v", got, err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("Release round trip:\n got %+v\nwant %+v", got, r)
	}
	stale := *got
	got.WeightPercent = 50
	got.History = append(got.History, writers.Judgement{At: t0, Outcome: "pass", Weight: 50, Metric: "psi", Value: 0.01, Limit: 0.25})
	if err := s.SwapRelease(ctx, got); err != nil || got.Revision != 2 {
		t.Fatalf("SwapRelease(rev 1) = %v, revision %d; want nil, 2", err, got.Revision)
	}
	stale.State = writers.ReleaseAborted
	if err := s.SwapRelease(ctx, &stale); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("SwapRelease with a stale revision = %v, want ErrConflict", err)
	}
	again := newRelease("rel", "r2") // revision 0: "none expected", but one exists
	if err := s.SwapRelease(ctx, again); !errors.Is(err, writers.ErrConflict) {
		t.Errorf("SwapRelease(revision 0) over a record = %v, want ErrConflict", err)
	}
	if cur, _ := s.Release(ctx, "rel"); cur == nil || cur.WeightPercent != 50 || cur.State != writers.ReleaseRunning || len(cur.History) != 1 {
		t.Errorf("after the refused swaps: %+v, want the revision 2 record", cur)
	}
}

func testReleaseConcurrent(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	base := newRelease("relc", "r1")
	if err := s.SwapRelease(ctx, base); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := *base
			r.Reason = fmt.Sprint("writer ", i)
			errs[i] = s.SwapRelease(ctx, &r)
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, writers.ErrConflict):
			t.Errorf("swap %d: %v, want nil or ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent swaps from one revision won, want exactly 1", won)
	}
	if cur, _ := s.Release(ctx, "relc"); cur == nil || cur.Revision != 2 {
		t.Errorf("after the race: %+v, want revision 2", cur)
	}
}

func testReleaseCounts(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	if c, err := s.Counts(ctx, "cnt", "r1", 0); err != nil || len(c) != 0 {
		t.Fatalf("Counts with none = %v, %v; want empty", c, err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if err := s.AddCounts(ctx, "cnt", "r1", 3, map[string]int64{"live.requests": 2, "candidate.requests": 1, "candidate.not_found": 0}); err != nil {
					t.Errorf("AddCounts: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.AddCounts(ctx, "cnt", "r1", 4, map[string]int64{"live.requests": 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCounts(ctx, "cnt", "r2", 3, map[string]int64{"live.requests": 7}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Counts(ctx, "cnt", "r1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got["live.requests"] != 200 || got["candidate.requests"] != 100 || got["candidate.not_found"] != 0 {
		t.Errorf("Counts(r1, 3) = %v, want live.requests 200, candidate.requests 100", got)
	}
	if got, _ := s.Counts(ctx, "cnt", "r1", 4); got["live.requests"] != 5 || len(got) != 1 {
		t.Errorf("Counts(r1, 4) = %v, want live.requests 5 alone", got)
	}
	if got, _ := s.Counts(ctx, "cnt", "r2", 3); got["live.requests"] != 7 {
		t.Errorf("Counts(r2, 3) = %v, want live.requests 7", got)
	}
}

func testReleaseSketches(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	for _, rep := range []string{"replica-a", "replica-b"} {
		if err := s.PutSketch(ctx, "sk", "r1", "units.live", rep, []byte("old-"+rep)); err != nil {
			t.Fatal(err)
		}
		if err := s.PutSketch(ctx, "sk", "r1", "units.live", rep, []byte("new-"+rep)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutSketch(ctx, "sk", "r1", "units.candidate", "replica-a", []byte("c")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Sketches(ctx, "sk", "r1", "units.live")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range got {
		names = append(names, string(b))
	}
	sort.Strings(names)
	if want := []string{"new-replica-a", "new-replica-b"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Sketches(units.live) = %q, want %q", names, want)
	}
	if got, _ := s.Sketches(ctx, "sk", "r2", "units.live"); len(got) != 0 {
		t.Errorf("Sketches of another release = %q, want none", got)
	}
}

func testReleaseNeighbours(t *testing.T, s *writers.Store) {
	ctx := context.Background()
	for _, ns := range []string{"demo", "demo2", "demo.x"} {
		if err := s.SwapRelease(ctx, newRelease(ns, "r-"+strings.ReplaceAll(ns, ".", "-"))); err != nil {
			t.Fatal(err)
		}
		if err := s.AddCounts(ctx, ns, "r1", 1, map[string]int64{"n": int64(len(ns))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"demo", "demo2", "demo.x"} {
		r, err := s.Release(ctx, ns)
		if err != nil || r == nil || r.Namespace != ns || r.ID != "r-"+strings.ReplaceAll(ns, ".", "-") {
			t.Errorf("Release(%s) = %+v, %v; want its own", ns, r, err)
		}
		if c, _ := s.Counts(ctx, ns, "r1", 1); c["n"] != int64(len(ns)) {
			t.Errorf("Counts(%s) = %v, want n %d", ns, c, len(ns))
		}
	}
}
