package shardgen

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestGenerateIsDeterministic(t *testing.T) {
	spec := Spec{Rows: 500, Shards: 2, RowGroupRows: 100, Seed: 9, NullEvery: 4}
	a, err := Generate(filepath.Join(t.TempDir(), "a"), spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(filepath.Join(t.TempDir(), "b"), spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		x, _ := os.ReadFile(a[i])
		y, _ := os.ReadFile(b[i])
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("shard %d: got different or empty files (%d and %d bytes), want identical", i, len(x), len(y))
		}
		if got, want := filepath.Base(a[i]), filepath.Base(ShardPath("", i)); got != want {
			t.Errorf("got name %s, want %s", got, want)
		}
	}
}

func TestRowAt(t *testing.T) {
	spec := Spec{Rows: 100, Seed: 1, NullEvery: 10}
	tests := []struct {
		name string
		r    int64
		key  string
		null bool
	}{
		{"the first row is not null", 0, "u000000000", false},
		{"row 9 of every 10 is null", 9, "u000000009", true},
		{"row 42 is zero-padded", 42, "u000000042", false},
		{"rows past a billion keep every digit", 1234567890, "u1234567890", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row := RowAt(spec, tt.r)
			if row.Key != tt.key || row.F2Null != tt.null {
				t.Errorf("got key %s null %v, want %s %v", row.Key, row.F2Null, tt.key, tt.null)
			}
			if row.F2Null && row.F[2] != 0 {
				t.Errorf("got f2 %v on a null row, want 0", row.F[2])
			}
			for j, v := range row.Embedding {
				if v != float64(float32(v)) || v < -1 || v >= 1 {
					t.Errorf("embedding %d: got %v, want a float32 in [-1, 1)", j, v)
				}
			}
			if row.F[2] < -100 || row.F[2] > 100 || row.F[3] < -100 || row.F[3] > 100 {
				t.Errorf("got f2 %v f3 %v, want both in [-100, 100]", row.F[2], row.F[3])
			}
			if RowAt(spec, tt.r) != row {
				t.Errorf("got a different row on a second call, want the same")
			}
		})
	}
}

func TestShardRowsCoverEveryRow(t *testing.T) {
	spec := Spec{Rows: 1001, Shards: 7}
	var next int64
	for i := 0; i < spec.Shards; i++ {
		lo, hi := ShardRows(spec, i)
		if lo != next || hi < lo {
			t.Fatalf("shard %d: got [%d, %d), want to start at %d", i, lo, hi, next)
		}
		next = hi
	}
	if next != int64(spec.Rows) {
		t.Errorf("got %d rows, want %d", next, spec.Rows)
	}
}

func TestGenerateRejectsBadSpecs(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"an unknown codec", Spec{Rows: 1, Codec: "brotli"}},
		{"negative rows", Spec{Rows: -1}},
		{"negative null spacing", Spec{Rows: 1, NullEvery: -2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Generate(t.TempDir(), tt.spec); !errors.Is(err, ErrSpec) {
				t.Errorf("got %v, want ErrSpec", err)
			}
		})
	}
}
