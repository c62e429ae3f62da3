package dupkeys

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestCountMatchesAMap: the counts equal those of a plain map over the same keys, with
// everything in memory and with the buffer spilled many times over.
func TestCountMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name      string
		n, space  int
		maxMemory int
	}{
		{"no duplicates, in memory", 50_000, 0, 0},
		{"many duplicates, in memory", 50_000, 20_000, 0},
		{"many duplicates over 25 spilled runs", 50_000, 20_000, 2000 * 16},
		{"rare duplicates over spilled runs", 60_000, 1_000_000, 1024 * 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.maxMemory, t.TempDir())
			defer c.Close()
			seen := map[string]int{}
			for i := range tc.n {
				k := fmt.Sprintf("u%09d", i)
				if tc.space > 0 {
					k = fmt.Sprintf("u%09d", rng.IntN(tc.space))
				}
				seen[k]++
				if err := c.Add([]byte(k)); err != nil {
					t.Fatal(err)
				}
			}
			var wantRows, wantKeys int64
			for _, n := range seen {
				if n > 1 {
					wantRows += int64(n - 1)
					wantKeys++
				}
			}
			rows, keys, err := c.Count()
			if err != nil || rows != wantRows || keys != wantKeys {
				t.Errorf("Count() = %d rows, %d keys, %v; want %d, %d", rows, keys, err, wantRows, wantKeys)
			}
			if tc.maxMemory > 0 && len(c.runs) == 0 {
				t.Errorf("nothing was spilled with a %d-byte buffer", tc.maxMemory)
			}
		})
	}
}

// TestCountingAllocatesNothingPerKey: adding, spilling and merging cost a few
// allocations per run of the buffer, none per key.
func TestCountingAllocatesNothingPerKey(t *testing.T) {
	keys := make([][]byte, 100_000)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("k%08d", i%60_000))
	}
	dir := t.TempDir()
	allocs := testing.AllocsPerRun(3, func() {
		c := New(10_000*16, dir) // 10 spilled runs
		for _, k := range keys {
			if err := c.Add(k); err != nil {
				t.Fatal(err)
			}
		}
		if rows, _, err := c.Count(); err != nil || rows != 40_000 {
			t.Fatalf("Count = %d, %v; want 40000", rows, err)
		}
		c.Close()
	})
	if per := allocs / float64(len(keys)); per > 0.01 {
		t.Errorf("%.0f allocations for %d keys (%.3f a key), want almost none per key", allocs, len(keys), per)
	}
}
