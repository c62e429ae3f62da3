package all_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/all"
	"github.com/staticref/staticref/writers/pebble"
)

// TestOpenURL opens a URL of every scheme through writers.Open, with every driver linked.
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
		{name: "an unknown scheme lists the supported ones", url: "mysql://x", wantErr: "use one of pebble:, redis:, rediss:, redis+cluster:, bigtable:, parquet:"},
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
			d, ok := s.Driver().(*pebble.Driver)
			if !ok {
				t.Fatalf("Open(%q) has driver %T, want *pebble.Driver", tc.url, s.Driver())
			}
			if got := d.Dir(); got != tc.wantDir {
				t.Errorf("Open(%q) dir = %q, want %q", tc.url, got, tc.wantDir)
			}
			if got := s.String(); got != tc.wantDir {
				t.Errorf("Open(%q) String() = %q, want the directory %q (writers.Describer)", tc.url, got, tc.wantDir)
			}
		})
	}
}

// TestRegistered: writers/all links a driver for every scheme that ParseURL accepts.
func TestRegistered(t *testing.T) {
	want := []string{"bigtable", "parquet", "parquet+azblob", "parquet+file", "parquet+gs", "parquet+s3", "pebble", "redis", "redis+cluster", "rediss"}
	if got := writers.Registered(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Registered() = %v, want %v", got, want)
	}
}

// TestAParquetStoreOpensAndIsExportOnly: parquet:DIR opens the export-only store, which
// refuses lookups and flips with writers.ErrExportOnly.
func TestAParquetStoreOpensAndIsExportOnly(t *testing.T) {
	ctx := context.Background()
	s, err := writers.Open(ctx, "parquet:"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.URL().ExportOnly() {
		t.Error("a parquet: URL is not ExportOnly")
	}
	if _, err := s.Get(ctx, "ns", "v1", []byte("k")); !errors.Is(err, writers.ErrExportOnly) {
		t.Errorf("Get: got %v, want ErrExportOnly", err)
	}
	if live, err := s.Live(ctx, "ns"); live != "" || err != nil {
		t.Errorf("Live: got %q, %v; want none", live, err)
	}
	if _, err := writers.OpenExisting(ctx, "parquet:"+t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenExisting of an empty folder: got %v, want fs.ErrNotExist", err)
	}
}
