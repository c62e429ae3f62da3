package pebble_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

	// A second open of the same directory in the same process is refused by Pebble's lock.
	if s2, err := pebble.Open(dir); err == nil {
		s2.Close()
		t.Error("second Open of an open directory succeeded, want an error")
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
		if err := d.FlushForTest(); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.L0TablesForTest(); n < int64(batches) {
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
	if n := d.L0TablesForTest(); n != 0 {
		t.Errorf("after completing the version L0 holds %d tables, want 0", n)
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
		want := dir + " is not a store: it holds no Pebble database (check the path, or run a job into it first)"
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

// TestPebbleCopyVersionCopiesOnlyItsNamespace: the copy of demo's live version, taken
// while the writer holds the directory, holds demo's pointer, manifests and live rows,
// and nothing of the namespaces whose names extend demo (their pointer keys p\x00demo2
// and p\x00demo.x start with demo's, p\x00demo; their manifest and row prefixes do not).
func TestPebbleCopyVersionCopiesOnlyItsNamespace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 100
	publish(t, w, "demo", "v1", n)
	publish(t, w, "demo", "v2", n)
	neighbours := []string{"demo2", "demo.x"}
	for _, ns := range neighbours {
		publish(t, w, ns, "v1", n)
	}

	if live, err := pebble.ReadLive(dir, "demo"); err != nil || live != "v2" {
		t.Errorf("ReadLive(demo) = %q, %v; want v2", live, err)
	}
	if live, err := pebble.ReadLive(dir, "dem"); err != nil || live != "" {
		t.Errorf("ReadLive(dem) = %q, %v; want \"\" (demo's pointer is not dem's)", live, err)
	}

	c, live, err := pebble.CopyVersion(dir, filepath.Join(t.TempDir(), "copy"), "demo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if live != "v2" {
		t.Errorf("CopyVersion copied live version %q, want v2", live)
	}
	if got, err := c.Live(ctx, "demo"); err != nil || got != "v2" {
		t.Errorf("copy: Live(demo) = %q, %v; want v2", got, err)
	}
	ms, err := c.Manifests(ctx, "demo")
	if err != nil || len(ms) != 2 || ms[0].Version != "v1" || ms[1].Version != "v2" {
		t.Errorf("copy: Manifests(demo) = %v, %v; want v1 and v2", ms, err)
	}
	if got, err := c.CountKeys(ctx, "demo", "v2"); err != nil || got != n {
		t.Errorf("copy: CountKeys(demo, v2) = %d, %v; want %d", got, err, n)
	}
	for i := range n {
		key, want := fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "demo/v2/%d", i)
		if got, err := c.Get(ctx, "demo", "v2", key); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("copy: Get(demo, v2, %s) = %q, %v; want %q", key, got, err, want)
		}
	}
	if got, err := c.CountKeys(ctx, "demo", "v1"); err != nil || got != 0 {
		t.Errorf("copy: CountKeys(demo, v1) = %d, %v; want 0 (only the live version's rows are copied)", got, err)
	}
	for _, ns := range neighbours {
		if got, err := c.Live(ctx, ns); err != nil || got != "" {
			t.Errorf("copy: Live(%s) = %q, %v; want \"\"", ns, got, err)
		}
		if ms, err := c.Manifests(ctx, ns); err != nil || len(ms) != 0 {
			t.Errorf("copy: Manifests(%s) = %v, %v; want none", ns, ms, err)
		}
		if got, err := c.CountKeys(ctx, ns, "v1"); err != nil || got != 0 {
			t.Errorf("copy: CountKeys(%s, v1) = %d, %v; want 0", ns, got, err)
		}
	}

	// A namespace with no live version copies nothing and opens nothing.
	if s, live, err := pebble.CopyVersion(dir, filepath.Join(t.TempDir(), "none"), "other"); s != nil || live != "" || err != nil {
		t.Errorf("CopyVersion(other) = %v, %q, %v; want nil, \"\", nil", s, live, err)
	}
}
