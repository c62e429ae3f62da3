// Package exporttest reads Parquet exports back, independently of the writer's own
// bookkeeping, for tests: every row of every part file of a version, by key.
package exporttest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/parquet-go/parquet-go"
	"gocloud.dev/blob"

	"github.com/staticref/staticref/writers/export"
)

// File is what one part file holds.
type File struct {
	Key       string
	Rows      int64
	RowGroups int
	Columns   []string
	// Values[key] are the row's values per column other than key, by column name.
	Values map[string]map[string][]float32
	// Keys in file order (a key twice means a duplicated row).
	Keys []string
}

// Read reads the Parquet file rel under the export location url.
func Read(t testing.TB, url, rel string) File {
	t.Helper()
	return decode(t, rel, ReadBytes(t, url, rel))
}

// ReadBytes reads the object rel under the export location url.
func ReadBytes(t testing.TB, url, rel string) []byte {
	t.Helper()
	ctx := context.Background()
	tg, err := export.Open(ctx, url, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	data, err := tg.Bucket().ReadAll(ctx, tg.Prefix()+rel)
	if err != nil {
		t.Fatalf("read export %s: %v", rel, err)
	}
	return data
}

// List lists the keys under the version's folder, relative to the location.
func List(t testing.TB, url, ns, version string) []string {
	t.Helper()
	ctx := context.Background()
	tg, err := export.Open(ctx, url, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	var out []string
	it := tg.Bucket().List(&blob.ListOptions{Prefix: tg.Prefix() + export.VersionDir(ns, version) + "/"})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, o.Key[len(tg.Prefix()):])
	}
	return out
}

func decode(t testing.TB, name string, data []byte) File {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("%s: not a Parquet file parquet-go can read: %v", name, err)
	}
	out := File{Key: name, Rows: f.NumRows(), RowGroups: len(f.RowGroups()), Values: map[string]map[string][]float32{}}
	cols := f.Schema().Columns()
	keyCol := -1
	for i, p := range cols {
		out.Columns = append(out.Columns, p[0])
		if p[0] == export.KeyColumn {
			keyCol = i
		}
	}
	if keyCol < 0 {
		t.Fatalf("%s: no key column in %v", name, out.Columns)
	}
	for _, rg := range f.RowGroups() {
		rows := rg.Rows()
		buf := make([]parquet.Row, 64)
		for {
			n, err := rows.ReadRows(buf)
			for _, r := range buf[:n] {
				vals := map[string][]float32{}
				var key string
				for _, v := range r {
					c := v.Column()
					if c == keyCol {
						key = string(v.ByteArray())
						continue
					}
					vals[cols[c][0]] = append(vals[cols[c][0]], v.Float())
				}
				out.Keys = append(out.Keys, key)
				out.Values[key] = vals
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		rows.Close()
	}
	return out
}
