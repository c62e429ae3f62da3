package pebble_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/pebble"
	"github.com/staticref/staticref/writers/storetest"
)

func openPebble(t *testing.T) *writers.Store {
	t.Helper()
	s, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPebbleConformance(t *testing.T) {
	storetest.Run(t, openPebble)
}

func TestPebbleReopenKeepsDataAndPointer(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "nested", "store")
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	rows := writers.Rows{Keys: [][]byte{[]byte("k1"), []byte("k2")}, Values: [][]byte{[]byte("a"), []byte("b")}}
	if err := s.WriteRows(ctx, "ns", "v1", rows); err != nil {
		t.Fatal(err)
	}
	m.State = writers.StateComplete
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.Flip(ctx, s, "ns", "v1"); err != nil {
		t.Fatal(err)
	}

	// A second handle on the directory, as another process would open it, sees it all.
	s2, err := pebble.Open(dir)
	if err != nil {
		t.Fatalf("second Open of an open directory: %v", err)
	}
	if v, err := s2.Get(ctx, "ns", "v1", []byte("k1")); err != nil || string(v) != "a" {
		t.Errorf("second handle: Get(k1) = %q, %v; want a, nil", v, err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := s.Get(ctx, "ns", "v1", []byte("k1")); err == nil {
		t.Error("Get after Close succeeded, want an error")
	}

	s, err = pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if live, err := s.Live(ctx, "ns"); err != nil || live != "v1" {
		t.Errorf("Live after reopen = %q, %v; want v1, nil", live, err)
	}
	if v, err := s.Get(ctx, "ns", "v1", []byte("k2")); err != nil || string(v) != "b" {
		t.Errorf("Get(k2) after reopen = %q, %v; want b, nil", v, err)
	}
	if n, err := s.CountKeys(ctx, "ns", "v1"); err != nil || n != 2 {
		t.Errorf("CountKeys after reopen = %d, %v; want 2, nil", n, err)
	}
	got, err := s.Manifest(ctx, "ns", "v1")
	if err != nil || got.State != writers.StateComplete || got.LiveAt.IsZero() {
		t.Errorf("Manifest after reopen = %+v, %v; want complete with LiveAt set", got, err)
	}
}

func TestPebbleWriteRowsNamesTheBadKey(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t)
	defer s.Close()
	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}); err != nil {
		t.Fatal(err)
	}
	rows := writers.Rows{Keys: [][]byte{[]byte("ok"), {'b', 0xff}}, Values: [][]byte{nil, nil}}
	err := s.WriteRows(ctx, "ns", "v1", rows)
	if !errors.Is(err, writers.ErrInvalid) || !strings.Contains(err.Error(), `row 1`) || !strings.Contains(err.Error(), `"b\xff"`) {
		t.Errorf("WriteRows error = %v, want ErrInvalid naming row 1 and its key", err)
	}
}

// FuzzValidate checks that names and keys either are refused or round-trip through a
// Pebble write and Get unchanged, without reaching into a neighbouring namespace or
// version: every value records where it was written, so a read that lands in another
// namespace's or version's range shows up as a wrong value.
func FuzzValidate(f *testing.F) {
	for _, seed := range []struct {
		ns  string
		key []byte
	}{
		{"a", []byte("k")},
		{"ab", []byte("\x00")},
		{"a.b", []byte("\x00ab\x00v1\x00k")},
		{"", []byte("")},
		{"A", []byte{0xff}},
		{"a\x00b", []byte("ключ")},
		{strings.Repeat("n", 63), bytes.Repeat([]byte("é"), 512)},
	} {
		f.Add(seed.ns, seed.key)
	}
	s, err := pebble.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	ctx := context.Background()
	versions := []string{"v1", "v10"}

	f.Fuzz(func(t *testing.T, ns string, key []byte) {
		nsErr := writers.ValidateNamespace(ns)
		keyErr := writers.ValidateKey(key)
		if nsErr != nil && !errors.Is(nsErr, writers.ErrInvalid) {
			t.Fatalf("ValidateNamespace error %v does not wrap ErrInvalid", nsErr)
		}
		if keyErr != nil && !errors.Is(keyErr, writers.ErrInvalid) {
			t.Fatalf("ValidateKey error %v does not wrap ErrInvalid", keyErr)
		}
		if nsErr != nil || keyErr != nil {
			return
		}
		tag := func(ns, v string) []byte { return append([]byte(ns+"\x00"+v+"\x00"), key...) }
		for _, v := range versions {
			if err := s.PutManifest(ctx, &writers.Manifest{Namespace: ns, Version: v, State: writers.StateWriting}); err != nil {
				t.Fatal(err)
			}
			rows := writers.Rows{Keys: [][]byte{bytes.Clone(key)}, Values: [][]byte{tag(ns, v)}}
			if err := s.WriteRows(ctx, ns, v, rows); err != nil {
				t.Fatalf("WriteRows(%q, %s, %q): %v", ns, v, key, err)
			}
		}
		for _, v := range versions {
			got, err := s.Get(ctx, ns, v, key)
			if err != nil || !bytes.Equal(got, tag(ns, v)) {
				t.Fatalf("Get(%q, %s, %q) = %q, %v; want %q", ns, v, key, got, err, tag(ns, v))
			}
		}
		// Neighbours: namespaces that are prefixes or extensions of ns.
		neighbours := []string{ns + "a", ns + ".", ns[:len(ns)-1]}
		for _, other := range neighbours {
			if writers.ValidateNamespace(other) != nil {
				continue
			}
			for _, v := range versions {
				got, err := s.Get(ctx, other, v, key)
				switch {
				case errors.Is(err, writers.ErrNotFound):
				case err != nil:
					t.Fatalf("Get(%q, %s, %q): %v", other, v, key, err)
				case !bytes.Equal(got, tag(other, v)):
					t.Fatalf("Get(%q, %s, %q) = %q, want %q or not found", other, v, key, got, tag(other, v))
				}
			}
		}
	})
}

func BenchmarkPebbleWriteRows(b *testing.B) {
	ctx := context.Background()
	s, err := pebble.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "bench", Version: "v1", State: writers.StateWriting}); err != nil {
		b.Fatal(err)
	}
	const batch = 8192
	rows := writers.Rows{Keys: make([][]byte, batch), Values: make([][]byte, batch)}
	value := []byte(`{"score":0.123456}`)
	n := 0
	for b.Loop() {
		for i := range batch {
			rows.Keys[i] = fmt.Appendf(rows.Keys[i][:0], "user-%012d", n)
			rows.Values[i] = value
			n++
		}
		if err := s.WriteRows(ctx, "bench", "v1", rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
}

// loadIntoL0 opens a Pebble store holding version ns/v1, still writing, whose
// batches x per rows (key k%06d, value value(i), keys in no order within a batch) were
// each flushed into an L0 file, as a long load does.
func loadIntoL0(t *testing.T, batches, per int, value func(int) []byte) (*writers.Store, *pebble.Driver, *writers.Manifest) {
	t.Helper()
	ctx := context.Background()
	s, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := s.Driver().(*pebble.Driver)
	m := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	for b := range batches {
		var rows writers.Rows
		for i := b; i < batches*per; i += batches {
			rows.Keys = append(rows.Keys, []byte(fmt.Sprintf("k%06d", i)))
			rows.Values = append(rows.Values, value(i))
		}
		if err := s.WriteRows(ctx, "ns", "v1", rows); err != nil {
			t.Fatal(err)
		}
		if err := d.FlushForTest("ns", "v1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.L0TablesForTest("ns", "v1"); n < int64(batches) {
		t.Fatalf("after %d flushes L0 holds %d tables, want >= %d (the test needs an L0 to compact)", batches, n, batches)
	}
	return s, d, m
}

// TestPebbleCompleteCompactsTheVersion: rows a load flushed into L0 are merged into the
// bottom level when the version is completed, and every row reads back the same after.
func TestPebbleCompleteCompactsTheVersion(t *testing.T) {
	ctx := context.Background()
	const batches, per = 4, 2000
	value := func(i int) []byte { return []byte(fmt.Sprintf(`{"score":%d}`, i*7)) }
	s, d, m := loadIntoL0(t, batches, per, value)
	defer s.Close()

	m.State = writers.StateComplete
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n, err := d.SealedL0ForTest("ns", "v1"); err != nil || n != 0 {
		t.Errorf("after completing the version L0 holds %d tables (%v), want 0", n, err)
	}
	if n, err := s.CountKeys(ctx, "ns", "v1"); err != nil || n != batches*per {
		t.Errorf("CountKeys = %d, %v; want %d", n, err, batches*per)
	}
	for i := range batches * per {
		got, err := s.Get(ctx, "ns", "v1", []byte(fmt.Sprintf("k%06d", i)))
		if err != nil || !bytes.Equal(got, value(i)) {
			t.Fatalf("Get(k%06d) = %q, %v; want %q", i, got, err, value(i))
		}
	}
	got, err := s.Manifest(ctx, "ns", "v1")
	if err != nil || got.State != writers.StateComplete {
		t.Errorf("manifest after complete: %+v, %v", got, err)
	}
}

// TestPebbleCloseDuringTheFinalCompaction: Close waits for a completing version's
// compaction (Pebble panics on a closed database) rather than racing it; whichever
// comes first, neither panics and Close succeeds.
func TestPebbleCloseDuringTheFinalCompaction(t *testing.T) {
	s, _, m := loadIntoL0(t, 4, 5000, func(int) []byte { return []byte("v") })
	done := make(chan error, 1)
	go func() {
		m.State = writers.StateComplete
		done <- s.PutManifest(context.Background(), m)
	}()
	if err := s.Close(); err != nil {
		t.Fatalf("Close during the compaction: %v", err)
	}
	if err := <-done; err != nil && !errors.Is(err, writers.ErrClosed) {
		t.Errorf("PutManifest racing Close: %v, want success or a closed-store error", err)
	}
}

// TestPebbleCloseDuringReads: a serve shutting down may close the store while lookups
// and lease renewals are in flight. Each read either answers or says the store is
// closed; none reaches the closed database (Pebble panics there) and Close succeeds.
func TestPebbleCloseDuringReads(t *testing.T) {
	s, _, m := loadIntoL0(t, 1, 1000, func(int) []byte { return []byte("v") })
	ctx := context.Background()
	reads := map[string]func() error{
		"Get":       func() error { _, err := s.Get(ctx, m.Namespace, m.Version, []byte("k000001")); return err },
		"CountKeys": func() error { _, err := s.CountKeys(ctx, m.Namespace, m.Version); return err },
		"Manifest":  func() error { _, err := s.Manifest(ctx, m.Namespace, m.Version); return err },
		"Manifests": func() error { _, err := s.Manifests(ctx, m.Namespace); return err },
		"Live":      func() error { _, err := s.Live(ctx, m.Namespace); return err },
		"Commits":   func() error { _, err := s.Commits(ctx, m.Namespace, m.Version); return err },
		"lease": func() error {
			l, err := s.AcquireLease(ctx, m.Namespace, "reader", time.Minute)
			if err != nil {
				return err
			}
			if _, err := s.RenewLease(ctx, l, time.Minute); err != nil {
				return err
			}
			return s.ReleaseLease(ctx, l)
		},
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, len(reads))
	errs := make(chan error, len(reads))
	for name, read := range reads {
		wg.Go(func() {
			started <- struct{}{}
			for {
				if err := read(); err != nil {
					if !errors.Is(err, writers.ErrClosed) {
						errs <- fmt.Errorf("%s: %w", name, err)
					}
					return
				}
			}
		})
	}
	for range reads {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close during reads: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("read racing Close: %v, want success or a closed-store error", err)
	}
}

// TestPebbleOpenExisting: OpenExisting refuses, with an error wrapping fs.ErrNotExist
// and without creating anything, a directory that does not exist or holds no store,
// and opens one that does.
func TestPebbleOpenExisting(t *testing.T) {
	ctx := context.Background()

	t.Run("a directory that does not exist is refused and not created", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "nope", "store")
		s, err := writers.OpenExisting(ctx, "pebble:"+dir)
		if err == nil {
			s.Close()
			t.Fatal("OpenExisting succeeded, want an error")
		}
		want := "store directory " + dir + " does not exist (check the path, or run a job into it first)"
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenExisting error = %v, want fs.ErrNotExist saying %q", err, want)
		}
		if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s after OpenExisting: %v, want it not to exist", filepath.Dir(dir), err)
		}
	})
	t.Run("a directory that holds no store is refused and left alone", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := writers.OpenExisting(ctx, "pebble:"+dir)
		if err == nil {
			s.Close()
			t.Fatal("OpenExisting succeeded, want an error")
		}
		want := dir + " is not a store: it holds no staticref store (check the path, or run a job into it first)"
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenExisting error = %v, want fs.ErrNotExist saying %q", err, want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("OpenExisting wrote into the directory: %v", ents)
		}
	})
	t.Run("a store opens, and Open creates one", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		s, err := writers.Open(ctx, "pebble:"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = writers.OpenExisting(ctx, "pebble://"+dir)
		if err != nil {
			t.Fatalf("OpenExisting of a store: %v", err)
		}
		defer s.Close()
		if got := s.String(); got != dir {
			t.Errorf("String() = %q, want the directory %q", got, dir)
		}
		if got := s.Driver().(*pebble.Driver).Dir(); got != dir {
			t.Errorf("Dir() = %q, want %q", got, dir)
		}
	})
}

// publish writes rows k0..k<n-1> (values ns/version/i) into a new version of ns, marks it
// complete and flips it live.
func publish(t *testing.T, s *writers.Store, ns, version string, n int) {
	t.Helper()
	ctx := context.Background()
	m := &writers.Manifest{Namespace: ns, Version: version, State: writers.StateWriting}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	var rows writers.Rows
	for i := range n {
		rows.Keys = append(rows.Keys, fmt.Appendf(nil, "k%d", i))
		rows.Values = append(rows.Values, fmt.Appendf(nil, "%s/%s/%d", ns, version, i))
	}
	if err := s.WriteRows(ctx, ns, version, rows); err != nil {
		t.Fatal(err)
	}
	m.State = writers.StateComplete
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.Flip(ctx, s, ns, version); err != nil {
		t.Fatal(err)
	}
}

// TestPebbleHandlesShareAStoreAsProcessesDo: two handles on one directory (each with its
// own parts and locks, as two processes have) see each other's flips at once, read each
// other's complete versions in place, and flip back and forth; nothing is copied.
func TestPebbleHandlesShareAStoreAsProcessesDo(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openAt(t, dir), openAt(t, dir)
	const n = 500
	publish(t, a, "demo", "v1", n)
	wantVersion(t, b, "demo", "v1", n)
	publish(t, b, "demo", "v2", n) // b writes while a has v1 open
	wantVersion(t, a, "demo", "v2", n)
	if _, err := writers.Flip(ctx, a, "demo", "v1"); err != nil {
		t.Fatal(err)
	}
	if live, err := b.Live(ctx, "demo"); err != nil || live != "v1" {
		t.Errorf("b: Live after a's flip = %q, %v; want v1", live, err)
	}
	for _, s := range []*writers.Store{a, b} {
		if n, err := s.CountKeys(ctx, "demo", "v2"); err != nil || n != 500 {
			t.Errorf("CountKeys(v2) = %d, %v; want 500", n, err)
		}
	}
}

// TestPebbleGCRemovesAVersionOnlyOnceNoReaderHoldsIt: a version retired while another
// handle answers from it keeps answering there, is gone for everyone else at once, and
// its files go when the reader lets go; disk after many flips is the versions kept.
func TestPebbleGCRemovesAVersionOnlyOnceNoReaderHoldsIt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, r := openAt(t, dir), openAt(t, dir)
	const n = 200
	publish(t, w, "demo", "v1", n)
	wantVersion(t, r, "demo", "v1", n) // r holds v1 open
	publish(t, w, "demo", "v2", n)
	if removed, err := writers.GC(ctx, w, "demo", 0, time.Hour, time.Now()); err != nil || len(removed) != 1 {
		t.Fatalf("GC = %v, %v; want v1 removed", removed, err)
	}
	if _, err := w.Get(ctx, "demo", "v1", []byte("k1")); !errors.Is(err, writers.ErrNotFound) {
		t.Errorf("Get of the retired v1 from the gc's handle: %v, want ErrNotFound", err)
	}
	if got, err := r.Get(ctx, "demo", "v1", []byte("k1")); err != nil || string(got) != "demo/v1/1" {
		t.Errorf("the reader of v1 after gc: Get = %q, %v; want it to finish on v1", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "versions", "demo", "v1")); err != nil {
		t.Errorf("v1's files while a reader holds them: %v, want them kept", err)
	}
	r.Driver().(*pebble.Driver).CloseIdleForTest(time.Now().Add(time.Hour))
	if _, err := os.Stat(filepath.Join(dir, "versions", "demo", "v1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("v1's files once its reader let go: %v, want them removed", err)
	}

	for i := 3; i <= 12; i++ {
		publish(t, w, "demo", fmt.Sprintf("v%d", i), n)
		if _, err := writers.GC(ctx, w, "demo", 1, time.Hour, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(dir, "versions", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range ents {
		kept = append(kept, e.Name())
	}
	if want := []string{"v11", "v12"}; !slices.Equal(kept, want) {
		t.Errorf("version directories after 12 flips with keep 1: %v, want %v (the live one and one previous)", kept, want)
	}
}

// TestPebbleMigratesTheEarlierLayout: a store written by an earlier staticref (one Pebble
// database, every namespace under one-byte tags) opens as a store of this layout: the live
// pointers, manifests, commits and every row of the versions kept, exactly; retired
// versions bring no rows; the old files are moved aside, and a second open is plain.
func TestPebbleMigratesTheEarlierLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	old, err := pdb.Open(dir, &pdb.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(ns, v string, st writers.State) []byte {
		data, _ := json.Marshal(writers.Manifest{Namespace: ns, Version: v, State: st, Encoding: "json"})
		return data
	}
	const n = 3000
	set := func(k string, v []byte) {
		if err := old.Set([]byte(k), v, pdb.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"demo", "demo2"} {
		set("m\x00"+ns+"\x00v0", manifest(ns, "v0", writers.StateRetired))
		set("m\x00"+ns+"\x00v1", manifest(ns, "v1", writers.StateComplete))
		set("p\x00"+ns, []byte("v1"))
		set("s\x00"+ns+"\x00v1\x00f.parquet#0", []byte(`{"id":"f.parquet#0","rows":7}`))
		for i := range n {
			set(fmt.Sprintf("d\x00%s\x00v1\x00k%d", ns, i), fmt.Appendf(nil, "%s/v1/%d", ns, i))
			set(fmt.Sprintf("d\x00%s\x00v0\x00k%d", ns, i), []byte("stale"))
		}
	}
	set("l\x00demo", []byte(`{"holder":"gone","token":"t","expires":"2026-01-01T00:00:00Z"}`))
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 { // the second open finds the new layout
		s, err := writers.OpenExisting(ctx, "pebble:"+dir)
		if err != nil {
			t.Fatalf("OpenExisting of the earlier layout: %v", err)
		}
		for _, ns := range []string{"demo", "demo2"} {
			wantVersion(t, s, ns, "v1", n)
			if got, err := s.Commits(ctx, ns, "v1"); err != nil || len(got) != 1 || got[0].ID != "f.parquet#0" || got[0].Rows != 7 {
				t.Errorf("Commits(%s, v1) = %+v, %v; want the one commit", ns, got, err)
			}
			_, vs, err := writers.List(ctx, s, ns)
			if err != nil || len(vs) != 2 || vs[0].Effective != writers.StateRetired || vs[1].Effective != writers.StateLive {
				t.Errorf("List(%s) = %+v, %v; want v0 retired and v1 live", ns, vs, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "versions", ns, "v0")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the retired %s/v0 has row files (%v), want none", ns, err)
			}
		}
		if l, err := s.AcquireLease(ctx, "demo", "new-run", time.Minute); err != nil {
			t.Errorf("AcquireLease after migration: %v", err)
		} else {
			s.ReleaseLease(ctx, l)
		}
		s.Close()
	}
	ents, _ := os.ReadDir(dir)
	var top []string
	for _, e := range ents {
		top = append(top, e.Name())
	}
	if want := []string{"STORE", "catalog", "legacy-layout", "versions"}; !slices.Equal(top, want) {
		t.Errorf("store directory after migration holds %v, want %v", top, want)
	}
}

func openAt(t *testing.T, dir string) *writers.Store {
	t.Helper()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// wantVersion checks that version of ns is live in s and holds exactly the n rows that
// publish writes.
func wantVersion(t *testing.T, s *writers.Store, ns, version string, n int) {
	t.Helper()
	ctx := context.Background()
	if live, err := s.Live(ctx, ns); err != nil || live != version {
		t.Fatalf("Live(%s) = %q, %v; want %s", ns, live, err, version)
	}
	for i := range n {
		key, want := fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "%s/%s/%d", ns, version, i)
		if got, err := s.Get(ctx, ns, version, key); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get(%s, %s, %s) = %q, %v; want %q", ns, version, key, got, err, want)
		}
	}
	if got, err := s.CountKeys(ctx, ns, version); err != nil || got != int64(n) {
		t.Errorf("CountKeys(%s, %s) = %d, %v; want %d", ns, version, got, err, n)
	}
}

type quiet struct{}

func (quiet) Infof(string, ...any)              {}
func (quiet) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (quiet) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// TestPebbleGCFreesWhatAnEarlierGCHadToLeave: a version retired while another handle held
// it keeps its files; once that handle is gone, the next gc removes them even though it
// retires nothing new. A sealed version keeps no write-ahead logs.
func TestPebbleGCFreesWhatAnEarlierGCHadToLeave(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := openAt(t, dir)
	r, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, w, "demo", "v1", 100)
	wantVersion(t, r, "demo", "v1", 100)
	publish(t, w, "demo", "v2", 100)
	if _, err := writers.GC(ctx, w, "demo", 0, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	v1 := filepath.Join(dir, "versions", "demo", "v1")
	if _, err := os.Stat(v1); err != nil {
		t.Fatalf("v1 while r holds it: %v, want its files kept", err)
	}
	r.Close() // as a serve that is stopped
	if removed, err := writers.GC(ctx, w, "demo", 0, time.Hour, time.Now()); err != nil || len(removed) != 0 {
		t.Fatalf("second GC = %v, %v; want nothing new retired", removed, err)
	}
	if _, err := os.Stat(v1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("v1 after the second gc: %v, want its files removed", err)
	}
	if logs, _ := filepath.Glob(filepath.Join(dir, "versions", "demo", "v2", "part-*", "*.log")); len(logs) != 0 {
		t.Errorf("the sealed v2 keeps write-ahead logs %v, want none", logs)
	}
}

// TestPebbleHandlesShareReleases: two handles on one directory (each with its own locks,
// as two processes have) update one release record by compare-and-swap and add to the
// same counters at once; no swap and no increment is lost, and each sees the other's
// sketches, whatever their names.
func TestPebbleHandlesShareReleases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	handles := []*writers.Store{openAt(t, dir), openAt(t, dir)}
	rel := &writers.Release{ID: "r1", Namespace: "demo", Mode: writers.ModeCanary, Live: "v1", Candidate: "v2",
		WeightPercent: 1, State: writers.ReleaseRunning, Salt: "r1"}
	if err := handles[0].SwapRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	const (
		swaps   = 20 // per handle
		workers = 4  // per handle
		adds    = 10 // per worker
	)
	var wg sync.WaitGroup
	conflicts := make([]int, len(handles))
	for h, s := range handles {
		// One goroutine swaps, read-modify-write until it wins, each win adding 1 to Judged.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for won := 0; won < swaps; {
				cur, err := s.Release(ctx, "demo")
				if err != nil || cur == nil {
					t.Errorf("handle %d: Release = %+v, %v", h, cur, err)
					return
				}
				cur.Judged++
				cur.Reason = fmt.Sprint("handle ", h)
				switch err := s.SwapRelease(ctx, cur); {
				case err == nil:
					won++
				case errors.Is(err, writers.ErrConflict):
					conflicts[h]++
				default:
					t.Errorf("handle %d: SwapRelease: %v", h, err)
					return
				}
			}
		}()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range adds {
					if err := s.AddCounts(ctx, "demo", "r1", 7, map[string]int64{"live.requests": 3, "candidate.requests": 1}); err != nil {
						t.Errorf("handle %d: AddCounts: %v", h, err)
						return
					}
				}
				replica := fmt.Sprintf("host/%d ..%d", h, w) // free-form: a slash, dots, a space
				if err := s.PutSketch(ctx, "demo", "r1", "units/live", replica, []byte(replica)); err != nil {
					t.Errorf("handle %d: PutSketch: %v", h, err)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("conflicts lost and retried: %v", conflicts)

	n := int64(len(handles))
	for h, s := range handles {
		cur, err := s.Release(ctx, "demo")
		if err != nil || cur == nil {
			t.Fatalf("handle %d: Release = %+v, %v", h, cur, err)
		}
		if cur.Revision != 1+n*swaps || cur.Judged != n*swaps {
			t.Errorf("handle %d: revision %d, judged %d; want %d, %d", h, cur.Revision, cur.Judged, 1+n*swaps, n*swaps)
		}
		c, err := s.Counts(ctx, "demo", "r1", 7)
		if want := map[string]int64{"live.requests": 3 * n * workers * adds, "candidate.requests": n * workers * adds}; err != nil || !maps.Equal(c, want) {
			t.Errorf("handle %d: Counts = %v, %v; want %v", h, c, err, want)
		}
		sk, err := s.Sketches(ctx, "demo", "r1", "units/live")
		if err != nil || len(sk) != int(n)*workers {
			t.Errorf("handle %d: Sketches = %q, %v; want %d", h, sk, err, n*workers)
		}
	}
	// Nothing but plain files inside the release's directory, none hidden but the lock.
	ents, err := os.ReadDir(filepath.Join(dir, "catalog", "demo", "releases", "r1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || (strings.HasPrefix(e.Name(), ".") && e.Name() != ".lock") {
			t.Errorf("release directory holds %q, want plain files", e.Name())
		}
	}
}

// TestPebbleGetManyFollowsGet: GetMany answers what Get answers, key by key, over every
// part of a version written by two processes, for batches small and large, with repeated
// keys and empty values; a version another process is still writing, or that is retired,
// answers nothing, as Get does.
func TestPebbleGetManyFollowsGet(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, c := openAt(t, dir), openAt(t, dir)
	b, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &writers.Manifest{Namespace: "demo", Version: "v1", State: writers.StateWriting}
	if err := a.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	// a writes k00..k59, b (a second shard) k40..k99 and an empty value; each its own part.
	for s, span := range map[*writers.Store][2]int{a: {0, 60}, b: {40, 100}} {
		var rows writers.Rows
		for i := span[0]; i < span[1]; i++ {
			rows.Keys = append(rows.Keys, fmt.Appendf(nil, "k%02d", i))
			rows.Values = append(rows.Values, fmt.Appendf(nil, "v%02d", i))
		}
		if s == b {
			rows.Keys, rows.Values = append(rows.Keys, []byte("empty")), append(rows.Values, []byte{})
		}
		if err := s.WriteRows(ctx, "demo", "v1", rows); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := c.GetMany(ctx, "demo", "v1", [][]byte{[]byte("k00"), []byte("k50"), []byte("k99")}); err != nil || slices.ContainsFunc(got, func(v []byte) bool { return v != nil }) {
		t.Errorf("GetMany of a version others write = %q, %v; want nothing", got, err)
	}
	if got, err := a.GetMany(ctx, "demo", "v1", [][]byte{[]byte("k99"), []byte("k00"), []byte("k50")}); err != nil || got[0] != nil || string(got[1]) != "v00" || string(got[2]) != "v50" {
		t.Errorf("GetMany by a writer = %q, %v; want its own part: [nil v00 v50]", got, err)
	}
	if err := b.Close(); err != nil { // b's shard is done
		t.Fatal(err)
	}
	m.State = writers.StateComplete
	if err := a.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if parts, err := a.Driver().(*pebble.Driver).PartsForTest("demo", "v1"); err != nil || len(parts) != 2 {
		t.Fatalf("parts of v1 = %v, %v; want 2", parts, err)
	}

	batches := [][][]byte{
		{[]byte("k42")},
		{[]byte("k99"), []byte("k00")},
		{[]byte("empty"), []byte("k05"), []byte("k05"), []byte("nope")},
	}
	var all [][]byte
	for i := 120; i >= 0; i -= 3 {
		all = append(all, fmt.Appendf(nil, "k%02d", i%110), []byte("empty"), fmt.Appendf(nil, "k%02d", (i*7)%100))
	}
	batches = append(batches, all)
	for _, s := range []*writers.Store{a, c} {
		for _, keys := range batches {
			got, err := s.GetMany(ctx, "demo", "v1", keys)
			if err != nil || len(got) != len(keys) {
				t.Fatalf("GetMany(%d keys) = %d values, %v", len(keys), len(got), err)
			}
			for i, k := range keys {
				want, err := s.Get(ctx, "demo", "v1", k)
				if errors.Is(err, writers.ErrNotFound) {
					want = nil
				} else if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got[i], want) || (got[i] == nil) != (want == nil) {
					t.Errorf("GetMany(%d keys)[%d] (%s) = %q, want %q as Get answers", len(keys), i, k, got[i], want)
				}
			}
			seen := map[*byte]bool{} // each answer is its own copy, even of a repeated key
			for i := range got {
				if len(got[i]) > 0 {
					if seen[&got[i][0]] {
						t.Errorf("GetMany(%d keys)[%d] (%s) shares its bytes with another answer", len(keys), i, keys[i])
					}
					seen[&got[i][0]] = true
				}
			}
		}
	}
	if _, err := writers.Flip(ctx, a, "demo", "v1"); err != nil {
		t.Fatal(err)
	}
	publish(t, a, "demo", "v2", 10)
	if err := a.DeleteVersion(ctx, "demo", "v1"); err != nil {
		t.Fatal(err)
	}
	// c, which had v1 open, answers from it until it closes it idle, as Get does (see
	// TestPebbleGCRemovesAVersionOnlyOnceNoReaderHoldsIt); a and a new process do not.
	for _, s := range []*writers.Store{a, openAt(t, dir)} {
		if got, err := s.GetMany(ctx, "demo", "v1", [][]byte{[]byte("k00"), []byte("k99"), []byte("k50")}); err != nil || slices.ContainsFunc(got, func(v []byte) bool { return v != nil }) {
			t.Errorf("GetMany of a retired version = %q, %v; want nothing", got, err)
		}
	}
}
