package writers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/storetest"
)

func openPebble(t *testing.T) writers.Store {
	t.Helper()
	s, err := writers.OpenPebble(t.TempDir())
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
	s, err := writers.OpenPebble(dir)
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
	if s2, err := writers.OpenPebble(dir); err == nil {
		s2.Close()
		t.Error("second OpenPebble of an open directory succeeded, want an error")
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

	s, err = writers.OpenPebble(dir)
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

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	abs := t.TempDir()
	t.Chdir(t.TempDir())
	tests := []struct {
		name    string
		url     string
		wantDir string // for pebble stores
		wantErr string // substring
	}{
		{name: "a relative pebble dir opens under the working directory", url: "pebble:store/x", wantDir: "store/x"},
		{name: "an absolute pebble dir opens as is", url: "pebble:" + abs + "/a", wantDir: abs + "/a"},
		{name: "a pebble URL with three slashes opens an absolute dir", url: "pebble://" + abs + "/b", wantDir: abs + "/b"},
		{name: "a pebble URL with a host is refused", url: "pebble://host/dir", wantErr: `names host "host"`},
		{name: "a pebble URL without a dir is refused", url: "pebble:", wantErr: "has no directory"},
		{name: "a redis URL with nothing listening names the address", url: "redis://127.0.0.1:1/0", wantErr: "cannot reach redis at 127.0.0.1:1"},
		{name: "a rediss URL with nothing listening names the address", url: "rediss://127.0.0.1:1/0", wantErr: "cannot reach redis at 127.0.0.1:1"},
		{name: "a redis cluster URL with nothing listening names the addresses", url: "redis+cluster://127.0.0.1:1,127.0.0.1:2", wantErr: "cannot reach redis at 127.0.0.1:1,127.0.0.1:2"},
		{name: "a parquet URL is not available yet", url: "parquet:out", wantErr: "parquet: export is not available yet"},
		{name: "an unknown scheme lists the supported ones", url: "mysql://x", wantErr: "use one of pebble:, redis:, rediss:, redis+cluster:, bigtable:"},
		{name: "a bare path is refused", url: "store", wantErr: "missing scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := writers.Open(ctx, tc.url)
			if tc.wantErr != "" {
				if err == nil {
					s.Close()
					t.Fatalf("Open(%q) succeeded, want an error containing %q", tc.url, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Open(%q) error = %q, want it to contain %q", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tc.url, err)
			}
			defer s.Close()
			p, ok := s.(*writers.Pebble)
			if !ok {
				t.Fatalf("Open(%q) = %T, want *writers.Pebble", tc.url, s)
			}
			if got := p.Dir(); got != tc.wantDir {
				t.Errorf("Open(%q) dir = %q, want %q", tc.url, got, tc.wantDir)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		wantErr string // "" for a good URL
	}{
		{"a relative pebble dir is good", "pebble:.staticref/store", ""},
		{"an absolute pebble URL is good", "pebble:///var/lib/store", ""},
		{"a redis URL with credentials is good", "redis://user:pass@localhost:6379/0", ""},
		{"a rediss URL is good", "rediss://cache.internal:6380/1", ""},
		{"a redis cluster URL with several hosts is good", "redis+cluster://a:7000,b:7001", ""},
		{"a bigtable URL is good", "bigtable://proj/inst/table", ""},
		{"a parquet dir is not available yet", "parquet:exports", "not available yet"},
		{"a redis URL without host is bad", "redis:///0", "missing host"},
		{"a redis URL with several hosts is bad", "redis://a:1,b:2/0", "use redis+cluster"},
		{"a redis URL without slashes is bad", "redis:localhost", "want redis://"},
		{"a bigtable URL without table is bad", "bigtable://proj/inst", "want bigtable://PROJECT/INSTANCE/TABLE"},
		{"an empty parquet dir is bad", "parquet:", "has no directory"},
		{"an unknown scheme is bad", "s3://bucket", `unknown store scheme "s3"`},
		{"an empty URL is bad", "", "missing scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := writers.CheckURL(tc.url)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("CheckURL(%q) = %v, want nil", tc.url, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("CheckURL(%q) = %v, want an error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestResolveURL(t *testing.T) {
	tests := []struct {
		name, url, base, want string
	}{
		{"a relative pebble dir is joined to the base", "pebble:.staticref/store", "/jobs", "pebble:/jobs/.staticref/store"},
		{"a relative pebble dir with dot-dot is cleaned", "pebble:../store", "/srv/jobs", "pebble:/srv/store"},
		{"a relative base gives a relative result", "pebble:store", "jobs", "pebble:jobs/store"},
		{"an absolute pebble dir is unchanged", "pebble:/var/lib/store", "/jobs", "pebble:/var/lib/store"},
		{"a three-slash pebble URL is unchanged", "pebble:///var/lib/store", "/jobs", "pebble:///var/lib/store"},
		{"an empty base changes nothing", "pebble:store", "", "pebble:store"},
		{"a redis URL is unchanged", "redis://localhost:6379/0", "/jobs", "redis://localhost:6379/0"},
		{"a bigtable URL is unchanged", "bigtable://p/i/t", "/jobs", "bigtable://p/i/t"},
		{"a parquet URL is unchanged", "parquet:out", "/jobs", "parquet:out"},
		{"a string without scheme is unchanged", "store", "/jobs", "store"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := writers.ResolveURL(tc.url, tc.base); got != tc.want {
				t.Errorf("ResolveURL(%q, %q) = %q, want %q", tc.url, tc.base, got, tc.want)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	ordered := []string{
		"20261127T020000Z",
		"20261127T020000Z-2",
		"20261127T020000Z-10",
		"20261127T020000Z-x",
		"20261127T020001Z",
	}
	for i := range ordered {
		for j := range ordered {
			if got, want := writers.VersionLess(ordered[i], ordered[j]), i < j; got != want {
				t.Errorf("VersionLess(%q, %q) = %v, want %v", ordered[i], ordered[j], got, want)
			}
		}
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
	s, err := writers.OpenPebble(f.TempDir())
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
	s, err := writers.OpenPebble(b.TempDir())
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
func loadIntoL0(t *testing.T, batches, per int, value func(int) []byte) (*writers.Pebble, *writers.Manifest) {
	t.Helper()
	ctx := context.Background()
	s, err := writers.OpenPebble(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
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
		if err := s.FlushForTest(); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.L0TablesForTest(); n < int64(batches) {
		t.Fatalf("after %d flushes L0 holds %d tables, want >= %d (the test needs an L0 to compact)", batches, n, batches)
	}
	return s, m
}

// TestPebbleCompleteCompactsTheVersion: rows a load flushed into L0 are merged into the
// bottom level when the version is completed, and every row reads back the same after.
func TestPebbleCompleteCompactsTheVersion(t *testing.T) {
	ctx := context.Background()
	const batches, per = 4, 2000
	value := func(i int) []byte { return []byte(fmt.Sprintf(`{"score":%d}`, i*7)) }
	s, m := loadIntoL0(t, batches, per, value)
	defer s.Close()

	m.State = writers.StateComplete
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if n := s.L0TablesForTest(); n != 0 {
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
	s, m := loadIntoL0(t, 4, 5000, func(int) []byte { return []byte("v") })
	done := make(chan error, 1)
	go func() {
		m.State = writers.StateComplete
		done <- s.PutManifest(context.Background(), m)
	}()
	if err := s.Close(); err != nil {
		t.Fatalf("Close during the compaction: %v", err)
	}
	if err := <-done; err != nil && !strings.Contains(err.Error(), "closed") {
		t.Errorf("PutManifest racing Close: %v, want success or a closed-store error", err)
	}
}

// TestPebbleCloseDuringReads: a serve shutting down may close the store while lookups
// and lease renewals are in flight. Each read either answers or says the store is
// closed; none reaches the closed database (Pebble panics there) and Close succeeds.
func TestPebbleCloseDuringReads(t *testing.T) {
	s, m := loadIntoL0(t, 1, 1000, func(int) []byte { return []byte("v") })
	ctx := context.Background()
	reads := map[string]func() error{
		"Get":       func() error { _, err := s.Get(ctx, m.Namespace, m.Version, []byte("k000001")); return err },
		"CountKeys": func() error { _, err := s.CountKeys(ctx, m.Namespace, m.Version); return err },
		"Manifest":  func() error { _, err := s.Manifest(ctx, m.Namespace, m.Version); return err },
		"Manifests": func() error { _, err := s.Manifests(ctx, m.Namespace); return err },
		"Live":      func() error { _, err := s.Live(ctx, m.Namespace); return err },
		"Shards":    func() error { _, err := s.Shards(ctx, m.Namespace, m.Version); return err },
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
					if !strings.Contains(err.Error(), "closed") {
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
