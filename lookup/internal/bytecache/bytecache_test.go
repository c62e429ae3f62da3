package bytecache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// value is the value written for key k at write w: its bytes say which, and its length
// varies so entries straddle every position of a shard's arena.
func value(k, w int) []byte {
	return fmt.Appendf(nil, "%d/%d/%s", k, w, bytes.Repeat([]byte{'v'}, (k*7+w)%300))
}

// TestAGetIsTheLatestSetOrAMiss: under random writes well past the cache's size, with
// values rewritten and entries too large to keep, every Get returns exactly the value
// last Set for its key, or a miss; never another key's bytes or an older value.
func TestAGetIsTheLatestSetOrAMiss(t *testing.T) {
	c := New(MinBytes)
	latest := map[int]int{} // key -> write number of its last Set; -1: an oversized one
	r := rand.New(rand.NewPCG(1, 2))
	hits, gets := 0, 0
	for w := range 600_000 {
		k := r.IntN(200_000)
		switch {
		case r.IntN(3) > 0:
			got, ok := c.Get(nil, fmt.Appendf(nil, "key-%d", k))
			gets++
			if !ok {
				continue
			}
			hits++
			if lw, set := latest[k]; !set || lw < 0 || !bytes.Equal(got, value(k, lw)) {
				t.Fatalf("key-%d: got %.40q, want the value of write %d (or a miss)", k, got, latest[k])
			}
		case r.IntN(1000) == 0:
			c.Set(fmt.Appendf(nil, "key-%d", k), make([]byte, MaxEntry))
			latest[k] = -1
		default:
			c.Set(fmt.Appendf(nil, "key-%d", k), value(k, w))
			latest[k] = w
		}
	}
	if hits == 0 {
		t.Fatalf("no hit in %d gets", gets)
	}
	t.Logf("%d of %d gets hit", hits, gets)
}

// TestAWorkingSetThatFitsStaysCached: entries written once, amounting to a quarter of
// the cache, are all still there after many reads and after another quarter is written.
func TestAWorkingSetThatFitsStaysCached(t *testing.T) {
	c := New(MinBytes)
	const n = 20_000 // ~300 bytes each: 6 MB of 32 MiB
	v := bytes.Repeat([]byte{'x'}, 290)
	for i := range 2 * n {
		c.Set(fmt.Appendf(nil, "k%07d", i), v)
	}
	for i := range 2 * n {
		got, ok := c.Get(nil, fmt.Appendf(nil, "k%07d", i))
		if !ok || !bytes.Equal(got, v) {
			t.Fatalf("k%07d: ok %v, %d bytes: an entry of a working set that fits was lost", i, ok, len(got))
		}
	}
	if c.Len() != 2*n {
		t.Errorf("Len %d, want %d", c.Len(), 2*n)
	}
}

// TestTheIndexIsBoundedByTheArena: writing ten times the cache's size of distinct keys
// leaves an index of at most two generations of entries per shard, not every key ever
// written.
func TestTheIndexIsBoundedByTheArena(t *testing.T) {
	c := New(MinBytes)
	v := make([]byte, 100)
	written := 10 * MinBytes / (entryHeader + 8 + len(v))
	for i := range written {
		c.Set(fmt.Appendf(nil, "%08d", i), v)
	}
	perGeneration := MinBytes / (entryHeader + 8 + len(v))
	if got := c.Len(); got > 2*perGeneration+shards {
		t.Errorf("after %d distinct keys the index holds %d entries, want at most two arenas' worth, %d", written, got, 2*perGeneration)
	}
}

// TestConcurrentGetsAndSetsReadWholeValues: readers and writers at once (run with -race)
// read only whole values of the key asked.
func TestConcurrentGetsAndSetsReadWholeValues(t *testing.T) {
	c := New(MinBytes)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for w := range 100_000 {
				k := r.IntN(50_000)
				key := fmt.Appendf(nil, "key-%d", k)
				if g%2 == 0 {
					c.Set(key, value(k, w))
					continue
				}
				got, ok := c.Get(nil, key)
				prefix := fmt.Appendf(nil, "%d/", k)
				if ok && (!bytes.HasPrefix(got, prefix) || bytes.Count(got, []byte("/")) != 2) {
					t.Errorf("key-%d: read %.40q", k, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestAnOversizedEntryIsNotKeptAndResetDropsAll(t *testing.T) {
	c := New(MinBytes)
	c.Set([]byte("small"), []byte("1"))
	c.Set([]byte("big"), make([]byte, MaxEntry))
	if _, ok := c.Get(nil, []byte("big")); ok {
		t.Error("an entry over MaxEntry was kept")
	}
	near := bytes.Repeat([]byte{'n'}, MaxEntry-100) // kept, even by a cache of the least size
	c.Set([]byte("near"), near)
	if got, ok := c.Get(nil, []byte("near")); !ok || !bytes.Equal(got, near) {
		t.Errorf("an entry just under MaxEntry: ok %v, %d bytes", ok, len(got))
	}
	if got, ok := c.Get([]byte("pre:"), []byte("small")); !ok || string(got) != "pre:1" {
		t.Errorf("Get appends to dst: got %q %v", got, ok)
	}
	c.Set([]byte("small"), make([]byte, MaxEntry)) // a key's oversized rewrite: a miss, not the old value
	if _, ok := c.Get(nil, []byte("small")); ok {
		t.Error("a key rewritten with an oversized value still reads its old value")
	}
	c.Set([]byte("a"), []byte("1"))
	c.Reset()
	if _, ok := c.Get(nil, []byte("a")); ok || c.Len() != 0 {
		t.Errorf("after Reset: hit %v, Len %d", ok, c.Len())
	}
	c.Set([]byte("a"), []byte("2"))
	if got, ok := c.Get(nil, []byte("a")); !ok || string(got) != "2" {
		t.Errorf("after Reset and Set: %q %v", got, ok)
	}
}

func BenchmarkGet(b *testing.B) {
	for _, n := range []int{20_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := New(512 << 20)
			keys := make([][]byte, n)
			v := make([]byte, 270)
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "churn\x00v20261201\x00k%07d", i)
				c.Set(keys[i], v)
			}
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(1, 1))
				dst := make([]byte, 0, 512)
				for pb.Next() {
					dst, _ = c.Get(dst[:0], keys[r.IntN(n)])
				}
			})
		})
	}
}
