package readers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/staticref/staticref/readers/shardgen"
)

var scalarFeatures = []string{"f0", "f1", "f2", "f3"}

// readAll reads every row group of every path and calls check for each row
// with its packed features and validity.
func readAll(t testing.TB, paths []string, opts Options, width int, check func(path string, key string, country string, feats []float32, valid bool)) (rows int64) {
	t.Helper()
	var dst []float32
	var valid []bool
	var key, extra []byte
	for _, p := range paths {
		f, err := Open(p, opts)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		for _, rg := range f.Info().RowGroups {
			var next int64
			err := f.ReadRowGroup(context.Background(), rg.Index, func(b *Batch) error {
				if b.Offset != next {
					return fmt.Errorf("batch offset %d, want %d", b.Offset, next)
				}
				if opts.BatchSize > 0 && b.Len > opts.BatchSize {
					return fmt.Errorf("batch of %d rows, want at most %d", b.Len, opts.BatchSize)
				}
				next += int64(b.Len)
				if cap(dst) < b.Len*width {
					dst, valid = make([]float32, b.Len*width), make([]bool, b.Len)
				}
				invalid, err := b.Pack(dst[:b.Len*width], width, valid[:b.Len])
				if err != nil {
					return err
				}
				counted := 0
				for i := 0; i < b.Len; i++ {
					key = b.AppendKey(key[:0], i)
					extra = extra[:0]
					if len(opts.Extra) > 0 {
						extra = b.AppendExtra(extra, 0, i)
					}
					if !valid[i] {
						counted++
					}
					check(p, string(key), string(extra), dst[i*width:(i+1)*width], valid[i])
				}
				if counted != invalid {
					return fmt.Errorf("pack returned %d invalid rows, valid has %d", invalid, counted)
				}
				rows += int64(b.Len)
				return nil
			})
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if next != rg.Rows {
				t.Fatalf("row group %d: read %d rows, want %d", rg.Index, next, rg.Rows)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return rows
}

func TestReadMatchesGenerator(t *testing.T) {
	dir := t.TempDir()
	specs := map[string]shardgen.Spec{
		"zstd":   {Rows: 1003, Shards: 3, RowGroupRows: 100, Seed: 7, NullEvery: 9},
		"snappy": {Rows: 250, Shards: 2, RowGroupRows: 60, Seed: 8, Codec: "snappy"},
	}
	tests := []struct {
		name      string
		spec      string
		batchSize int
		features  []string
	}{
		{"scalar features in batches smaller than a row group", "zstd", 17, scalarFeatures},
		{"scalar features in batches larger than a row group", "zstd", 1000, scalarFeatures},
		{"scalar features in default batches", "snappy", 0, scalarFeatures},
		{"an embedding list in batches smaller than a row group", "zstd", 33, []string{"embedding"}},
		{"an embedding list in batches larger than a row group", "snappy", 500, []string{"embedding"}},
		{"features in another order", "zstd", 64, []string{"f3", "f0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := specs[tt.spec]
			paths, err := shardgen.Generate(filepath.Join(dir, tt.spec), spec)
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{Key: "user_id", Features: tt.features, Extra: []string{"country"}, BatchSize: tt.batchSize}
			isList := tt.features[0] == "embedding"
			width := len(tt.features)
			if isList {
				width = shardgen.EmbeddingDim
			}
			var r int64
			nulls := 0
			rows := readAll(t, paths, opts, width, func(path, key, country string, feats []float32, valid bool) {
				want := shardgen.RowAt(spec, r)
				if key != want.Key {
					t.Fatalf("row %d: got key %q, want %q", r, key, want.Key)
				}
				if country != want.Country {
					t.Fatalf("row %d: got country %q, want %q", r, country, want.Country)
				}
				wantValid := isList || !want.F2Null || !contains(tt.features, "f2")
				if valid != wantValid {
					t.Fatalf("row %d: got valid %v, want %v", r, valid, wantValid)
				}
				if !valid {
					nulls++
				}
				for j, got := range feats {
					var w float64
					if isList {
						w = want.Embedding[j]
					} else {
						if !valid {
							continue
						}
						w = want.F[tt.features[j][1]-'0']
					}
					if got != float32(w) {
						t.Fatalf("row %d feature %d: got %v, want %v", r, j, got, float32(w))
					}
				}
				r++
			})
			if rows != int64(spec.Rows) {
				t.Errorf("got %d rows, want %d", rows, spec.Rows)
			}
			wantNulls := 0
			if spec.NullEvery > 0 && !isList && contains(tt.features, "f2") {
				wantNulls = spec.Rows / spec.NullEvery
			}
			if nulls != wantNulls {
				t.Errorf("got %d invalid rows, want %d", nulls, wantNulls)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestInfoAndWidth(t *testing.T) {
	spec := shardgen.Spec{Rows: 250, Shards: 1, RowGroupRows: 100}
	paths, err := shardgen.Generate(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		features  []string
		wantWidth int
	}{
		{"scalar features are as wide as their count", scalarFeatures, 4},
		{"a variable list has width 0", []string{"embedding"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Open(paths[0], Options{Key: "user_id", Features: tt.features})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Width(); got != tt.wantWidth {
				t.Errorf("got width %d, want %d", got, tt.wantWidth)
			}
			info := f.Info()
			st, _ := os.Stat(paths[0])
			if info.Path != paths[0] || info.Bytes != st.Size() || info.Rows != 250 {
				t.Errorf("got info %+v, want path %s, %d bytes, 250 rows", info, paths[0], st.Size())
			}
			want := []RowGroup{{0, 100}, {1, 100}, {2, 50}}
			if fmt.Sprint(info.RowGroups) != fmt.Sprint(want) {
				t.Errorf("got row groups %v, want %v", info.RowGroups, want)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"b.parquet", "a.parquet", "c.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Glob(filepath.Join(dir, "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.parquet"), filepath.Join(dir, "b.parquet")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	pattern := filepath.Join(dir, "*.csv")
	_, err = Glob(pattern)
	if !errors.Is(err, ErrNoFiles) || !strings.Contains(err.Error(), pattern) {
		t.Errorf("got %v, want an ErrNoFiles error naming %s", err, pattern)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	paths, err := shardgen.Generate(dir, shardgen.Spec{Rows: 300, RowGroupRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	good := paths[0]
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.parquet")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	random := filepath.Join(dir, "random.parquet")
	noise := make([]byte, 4096)
	for i := range noise {
		noise[i] = byte(i*7919 + i>>3)
	}
	if err := os.WriteFile(random, noise, 0o644); err != nil {
		t.Fatal(err)
	}
	// The footer's length claims more than the file holds.
	overclaim := filepath.Join(dir, "overclaim.parquet")
	writeFile(t, overclaim, withFooterLength(data, uint32(len(data))))
	// The footer of the whole file after half its data: the column chunks of the later
	// row groups are claimed past the footer's start.
	footer := footerOf(data)
	short := append(append([]byte(nil), data[:len(data)/2]...), footer...)
	short = binary.LittleEndian.AppendUint32(short, uint32(len(footer)))
	chunksPastFooter := filepath.Join(dir, "chunks-past-footer.parquet")
	writeFile(t, chunksPastFooter, append(short, "PAR1"...))
	fifo := filepath.Join(dir, "fifo.parquet")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := func(key string, features ...string) Options { return Options{Key: key, Features: features} }
	tests := []struct {
		name     string
		path     string
		opts     Options
		want     string
		sentinel error
	}{
		{"a truncated file names the file", truncated, opts("user_id", "f0"), "shard " + truncated + ": ", ErrCorrupt},
		{"random bytes name the file", random, opts("user_id", "f0"), "shard " + random + ": ", ErrCorrupt},
		{"a missing file names the file", filepath.Join(dir, "nope.parquet"), opts("user_id", "f0"), "nope.parquet", os.ErrNotExist},
		{"a footer claiming more than the file holds", overclaim, opts("user_id", "f0"), fmt.Sprintf("the footer claims %d bytes, the file has only %d", len(data), len(data)), ErrCorrupt},
		{"column chunks claimed past the footer", chunksPastFooter, opts("user_id", "f0"), "row group 2 column user_id claims bytes", ErrCorrupt},
		{"a FIFO is no file to wait on", fifo, opts("user_id", "f0"), "shard " + fifo + ": readers: corrupt parquet file: not a regular file", ErrCorrupt},
		{"a missing feature column names the column", good, opts("user_id", "f0", "f9"), "shard " + good + `: column "f9" not found (source.features); the shard's columns are user_id, f0, f1, f2, f3,`, ErrSchema},
		{"a string feature is not numeric", good, opts("user_id", "note"), "shard " + good + `: column "note" is string, features must be numeric (source.features)`, ErrSchema},
		{"a list beside scalars is refused", good, opts("user_id", "f0", "embedding"), `column "embedding" is list<float32>, a list feature must be the only feature (source.features)`, ErrSchema},
		{"a float key is unsupported", good, opts("f0", "f1"), `: column "f0" is float64, a key must be a string or an integer (source.key)`, ErrSchema},
		{"a list key is unsupported", good, opts("embedding", "f1"), `: column "embedding" is list<float32>, a key must be a string or an integer (source.key)`, ErrSchema},
		{"a missing key names the column", good, opts("id", "f1"), `: column "id" not found (source.key)`, ErrSchema},
		{"a float extra is unsupported", good, Options{Key: "user_id", Features: []string{"f0"}, Extra: []string{"f1"}}, `column "f1" is float32, extra columns must be strings or integers (extra)`, ErrSchema},
		{"no features is an error", good, opts("user_id"), "no feature columns (source.features)", ErrSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Open(tt.path, tt.opts)
			if err == nil {
				f.Close()
				t.Fatalf("got no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("got %v, want it to match %v", err, tt.sentinel)
			}
		})
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// withFooterLength is a copy of a Parquet file whose last 8 bytes claim a footer of n bytes.
func withFooterLength(data []byte, n uint32) []byte {
	out := append([]byte(nil), data...)
	binary.LittleEndian.PutUint32(out[len(out)-8:], n)
	return out
}

// footerOf is a Parquet file's footer (its metadata), without the length and magic after it.
func footerOf(data []byte) []byte {
	n := int(binary.LittleEndian.Uint32(data[len(data)-8:]))
	return data[len(data)-8-n : len(data)-8]
}

// TestAFooterClaimingGigabytesIsRefusedBeforeItIsRead: a sparse 2 GiB file whose footer
// length claims 1.8 GB had the reader allocate 1.7 GB before failing.
func TestAFooterClaimingGigabytesIsRefusedBeforeItIsRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge-footer.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 2 << 30
	f.WriteAt([]byte("PAR1"), 0)
	tail := binary.LittleEndian.AppendUint32(nil, 1_800_000_000)
	if _, err := f.WriteAt(append(tail, "PAR1"...), size-8); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for what, open := range map[string]func() error{
		"Open": func() error {
			f, err := Open(path, Options{Key: "user_id", Features: []string{"f0"}})
			if err == nil {
				f.Close()
			}
			return err
		},
		"Describe": func() error { _, err := Describe(path); return err },
	} {
		t.Run(what, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := open()
			runtime.ReadMemStats(&after)
			want := "a footer of 1800000000 bytes, over 67108864 (MaxFooterBytes)"
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want ErrCorrupt naming the file and saying %q", err, want)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
				t.Errorf("allocated %d MiB, want under 16", got>>20)
			}
		})
	}
}

func TestPackErrors(t *testing.T) {
	dir := t.TempDir()
	paths, err := shardgen.Generate(dir, shardgen.Spec{Rows: 40, RowGroupRows: 20})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		features []string
		width    int
		want     string
		sentinel error
	}{
		{"a list longer than the model's width names the row", []string{"embedding"}, 7,
			"shard " + paths[0] + ` row group 1 row 5: column "embedding" has 8 values, model expects 7`, ErrListLength},
		{"a list shorter than the model's width names the row", []string{"embedding"}, 9,
			"shard " + paths[0] + ` row group 1 row 5: column "embedding" has 8 values, model expects 9`, ErrListLength},
		{"scalars of another width are refused", scalarFeatures, 3, "4 feature columns, model expects 3", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Open(paths[0], Options{Key: "user_id", Features: tt.features, BatchSize: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sentinel := errors.New("stop")
			err = f.ReadRowGroup(context.Background(), 1, func(b *Batch) error {
				if b.Offset != 5 {
					return nil
				}
				_, err := b.Pack(make([]float32, b.Len*tt.width), tt.width, make([]bool, b.Len))
				if err == nil {
					return sentinel
				}
				return err
			})
			if err == nil || errors.Is(err, sentinel) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("got %v, want it to match %v", err, tt.sentinel)
			}
		})
	}
}

func TestReadRowGroupStops(t *testing.T) {
	paths, err := shardgen.Generate(t.TempDir(), shardgen.Spec{Rows: 500, RowGroupRows: 500})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(paths[0], Options{Key: "user_id", Features: scalarFeatures, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	t.Run("a cancelled context stops the read", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := f.ReadRowGroup(ctx, 0, func(b *Batch) error {
			calls++
			cancel()
			return nil
		})
		if !errors.Is(err, context.Canceled) || calls != 1 {
			t.Errorf("got %v after %d calls, want context.Canceled after 1", err, calls)
		}
	})
	t.Run("an error from fn is returned as is", func(t *testing.T) {
		want := errors.New("boom")
		if err := f.ReadRowGroup(context.Background(), 0, func(*Batch) error { return want }); err != want {
			t.Errorf("got %v, want %v", err, want)
		}
	})
	t.Run("a missing row group is an error naming the file", func(t *testing.T) {
		err := f.ReadRowGroup(context.Background(), 3, func(*Batch) error { return nil })
		want := "read shard " + paths[0] + " row group 3: "
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	})
	t.Run("a panic in fn is not reported as a corrupt file", func(t *testing.T) {
		defer func() {
			if r := recover(); r != "mine" {
				t.Errorf("got panic %v, want mine", r)
			}
		}()
		f.ReadRowGroup(context.Background(), 0, func(*Batch) error { panic("mine") })
	})
}

func TestConcurrentRowGroups(t *testing.T) {
	spec := shardgen.Spec{Rows: 2000, RowGroupRows: 250, Seed: 3}
	paths, err := shardgen.Generate(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(paths[0], Options{Key: "user_id", Features: []string{"embedding"}, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	errs := make([]error, len(f.Info().RowGroups))
	for rg := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float32, 64*shardgen.EmbeddingDim)
			valid := make([]bool, 64)
			var key []byte
			errs[rg] = f.ReadRowGroup(context.Background(), rg, func(b *Batch) error {
				if _, err := b.Pack(dst, shardgen.EmbeddingDim, valid); err != nil {
					return err
				}
				for i := 0; i < b.Len; i++ {
					r := int64(rg)*250 + b.Offset + int64(i)
					want := shardgen.RowAt(spec, r)
					key = b.AppendKey(key[:0], i)
					if string(key) != want.Key || dst[i*8+3] != float32(want.Embedding[3]) {
						return fmt.Errorf("row %d: got key %s value %v, want %s %v", r, key, dst[i*8+3], want.Key, want.Embedding[3])
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for rg, err := range errs {
		if err != nil {
			t.Errorf("row group %d: %v", rg, err)
		}
	}
}

func TestPackAllocatesNothingPerRow(t *testing.T) {
	spec := shardgen.Spec{Rows: 4096, RowGroupRows: 4096, NullEvery: 5}
	paths, err := shardgen.Generate(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, features := range [][]string{scalarFeatures, {"embedding"}} {
		f, err := Open(paths[0], Options{Key: "user_id", Features: features, Extra: []string{"country"}, BatchSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		width := len(features)
		if width == 1 {
			width = shardgen.EmbeddingDim
		}
		dst, valid := make([]float32, 4096*width), make([]bool, 4096)
		key := make([]byte, 0, 64)
		err = f.ReadRowGroup(context.Background(), 0, func(b *Batch) error {
			allocs := testing.AllocsPerRun(5, func() {
				if _, err := b.Pack(dst, width, valid); err != nil {
					t.Fatal(err)
				}
				for i := 0; i < b.Len; i++ {
					key = b.AppendKey(key[:0], i)
					key = b.AppendExtra(key, 0, i)
				}
			})
			if allocs != 0 {
				t.Errorf("features %v: got %v allocations per batch, want 0", features, allocs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func TestDictionaryAndIntegerKeys(t *testing.T) {
	// country is dictionary-encoded in the file; reading it as a key and as
	// an extra must give the strings.
	spec := shardgen.Spec{Rows: 100, RowGroupRows: 40}
	paths, err := shardgen.Generate(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(paths[0], Options{Key: "country", Features: []string{"f0"}, Extra: []string{"f3", "user_id"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r int64
	for rg := range f.Info().RowGroups {
		err := f.ReadRowGroup(context.Background(), rg, func(b *Batch) error {
			for i := 0; i < b.Len; i++ {
				want := shardgen.RowAt(spec, r)
				got := fmt.Sprintf("%s %s %s", b.AppendKey(nil, i), b.AppendExtra(nil, 0, i), b.AppendExtra(nil, 1, i))
				if w := fmt.Sprintf("%s %d %s", want.Country, int64(want.F[3]), want.Key); got != w {
					return fmt.Errorf("row %d: got %q, want %q", r, got, w)
				}
				if !b.KeyValid(i) || !b.ExtraValid(1, i) {
					return fmt.Errorf("row %d: got a null, want none", r)
				}
				r++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkReadPack(b *testing.B) {
	spec := shardgen.Spec{Rows: 200_000, RowGroupRows: 50_000, Seed: 1}
	paths, err := shardgen.Generate(b.TempDir(), spec)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name     string
		features []string
		width    int
	}{
		{"scalars", scalarFeatures, 4},
		{"embedding", []string{"embedding"}, shardgen.EmbeddingDim},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, err := Open(paths[0], Options{Key: "user_id", Features: bc.features, BatchSize: 8192})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			dst, valid := make([]float32, 8192*bc.width), make([]bool, 8192)
			key := make([]byte, 0, 64)
			var rows int64
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for rg := range f.Info().RowGroups {
					err := f.ReadRowGroup(context.Background(), rg, func(bt *Batch) error {
						if _, err := bt.Pack(dst, bc.width, valid); err != nil {
							return err
						}
						for i := 0; i < bt.Len; i++ {
							key = bt.AppendKey(key[:0], i)
						}
						rows += int64(bt.Len)
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// FuzzOpen feeds mutated Parquet bytes to Open and ReadRowGroup: each must
// return an error or succeed, never panic or hang.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	paths, err := shardgen.Generate(dir, shardgen.Spec{Rows: 30, RowGroupRows: 10, NullEvery: 4})
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(paths[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte("PAR1PAR1"))
	snappy, err := shardgen.Generate(filepath.Join(dir, "snappy"), shardgen.Spec{Rows: 12, RowGroupRows: 5, Codec: "snappy"})
	if err != nil {
		f.Fatal(err)
	}
	if data, err := os.ReadFile(snappy[0]); err == nil {
		f.Add(data)
	}
	optsList := []Options{
		{Key: "user_id", Features: scalarFeatures, Extra: []string{"country"}, BatchSize: 4},
		{Key: "user_id", Features: []string{"embedding"}, BatchSize: 7},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.parquet")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, opts := range optsList {
			fuzzRead(t, path, opts)
		}
	})
}

func fuzzRead(t *testing.T, path string, opts Options) {
	f, err := Open(path, opts)
	if err != nil {
		if !strings.Contains(err.Error(), path) {
			t.Errorf("got %q, want an error naming %s", err, path)
		}
		return
	}
	defer f.Close()
	width := f.Width()
	if width == 0 {
		width = shardgen.EmbeddingDim
	}
	var dst []float32
	var valid []bool
	var key []byte
	for _, rg := range f.Info().RowGroups {
		if rg.Rows > 1<<20 {
			continue // a hostile footer; do not let it allocate without bound
		}
		err := f.ReadRowGroup(context.Background(), rg.Index, func(b *Batch) error {
			if len(valid) < b.Len {
				dst, valid = make([]float32, b.Len*width), make([]bool, b.Len)
			}
			if _, err := b.Pack(dst, width, valid); err != nil && !errors.Is(err, ErrListLength) {
				return err
			}
			for i := 0; i < b.Len; i++ {
				key = b.AppendKey(key[:0], i)
				for j := range opts.Extra {
					key = b.AppendExtra(key, j, i)
				}
			}
			return nil
		})
		if err != nil && !bytes.Contains([]byte(err.Error()), []byte(path)) {
			t.Errorf("got %q, want an error naming %s", err, path)
		}
	}
}

// TestKeyPrefixFromTheFooter: a string key's common prefix comes from every row group's
// statistics (250 keys u000000000..u000000249 in row groups of 100: "u000000"); an
// integer key column (f3 here) has none.
func TestKeyPrefixFromTheFooter(t *testing.T) {
	paths, err := shardgen.Generate(t.TempDir(), shardgen.Spec{Rows: 250, Shards: 1, RowGroupRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, want string }{{"user_id", "u000000"}, {"f3", ""}, {"country", ""}} {
		t.Run(tc.key, func(t *testing.T) {
			f, err := Open(paths[0], Options{Key: tc.key, Features: scalarFeatures})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Info().KeyPrefix; got != tc.want {
				t.Errorf("KeyPrefix = %q, want %q", got, tc.want)
			}
		})
	}
	if got := string(commonPrefix([]byte("héllo"), []byte("hé!"))); got != "hé" {
		t.Errorf("commonPrefix = %q, want %q", got, "hé")
	}
}
