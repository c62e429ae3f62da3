package writers_test

import (
	"os"
	"strings"
	"testing"

	"github.com/staticref/staticref/writers"
)

// These tests need no driver: URL syntax and version order belong to the root package,
// which links no store client.

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
		{"a redis URL without host is bad", "redis:///0", "missing host"},
		{"a redis URL with several hosts is bad", "redis://a:1,b:2/0", "use redis+cluster"},
		{"a redis URL without slashes is bad", "redis:localhost", "want redis://"},
		{"a bigtable URL without table is bad", "bigtable://proj/inst", "want bigtable://PROJECT/INSTANCE/TABLE"},
		{"an empty parquet dir is bad", "parquet:", "has no directory"},
		{"a parquet dir is good", "parquet:exports", ""},
		{"a parquet+s3 prefix with options is good", "parquet+s3://bucket/exports?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1", ""},
		{"a parquet+gs prefix is good", "parquet+gs://bucket/exports", ""},
		{"a parquet+azblob prefix is good", "parquet+azblob://container/exports", ""},
		{"a parquet+s3 URL without bucket is bad", "parquet+s3:///exports", "no bucket"},
		{"a parquet+ftp URL is bad", "parquet+ftp://host/x", `unknown store scheme "parquet+ftp"`},
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
		{"a relative parquet dir is joined to the base", "parquet:out", "/jobs", "parquet:/jobs/out"},
		{"a parquet+s3 URL is unchanged", "parquet+s3://b/out", "/jobs", "parquet+s3://b/out"},
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

// TestOpenWithoutDrivers: this package's tests link no driver, so Open of a well-formed
// URL says how to link one, and creates nothing.
func TestOpenWithoutDrivers(t *testing.T) {
	t.Chdir(t.TempDir())
	s, err := writers.Open(t.Context(), "pebble:store")
	if err == nil {
		s.Close()
		t.Fatal("Open(pebble:store) with no driver linked succeeded, want an error")
	}
	if want := "store scheme pebble is not built into this program (import github.com/staticref/staticref/writers/all)"; !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q, want it to contain %q", err, want)
	}
	if _, err := os.Stat("store"); !os.IsNotExist(err) {
		t.Errorf("stat store after Open: %v, want it not to exist", err)
	}
}
