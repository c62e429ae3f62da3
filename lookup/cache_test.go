package lookup

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestCachedAnswersAreExactWhileTheCacheEvicts: a cache at its least size, filled with
// several times its size of rendered answers of two versions, reads each (namespace,
// version, key) back as exactly the entry rendered for it, or as a miss: eviction loses
// answers, never mixes them up.
func TestCachedAnswersAreExactWhileTheCacheEvicts(t *testing.T) {
	c := NewCache(1) // the least: 32 MiB
	versions := []string{"20261201T010000Z", "20261201T020000Z-2"}
	value := func(v, k int) []byte { return fmt.Appendf(nil, `{"p":%d.%06d}`, k, v) }
	r := rand.New(rand.NewPCG(3, 4))
	var k, ent, dst []byte
	hits, misses := 0, 0
	const keys = 400_000 // of ~170-byte entries: about 2 × 68 MB into 32 MiB
	for i := range 3 * keys {
		v, n := r.IntN(2), r.IntN(keys)
		key := fmt.Sprintf("user-%07d", n)
		k = appendCacheKey(k[:0], "churn", versions[v], key)
		if i < keys || r.IntN(4) == 0 {
			if n%97 == 0 {
				c.put(k, missingEntry)
			} else {
				ent, _ = renderEntry(ent, "churn", key, versions[v], versions[v], 0, value(v, n))
				c.put(k, ent)
			}
			continue
		}
		var e cached
		var ok bool
		if dst, e, ok = c.get(dst, k); !ok {
			misses++
			continue
		}
		hits++
		switch {
		case n%97 == 0 && e.found:
			t.Fatalf("%s of %s: found %q, want the key's missing entry", key, versions[v], e.head)
		case n%97 != 0 && !e.found:
			t.Fatalf("%s of %s: read as missing", key, versions[v])
		case n%97 != 0:
			want, _ := renderEntry(nil, "churn", key, versions[v], versions[v], 0, value(v, n))
			if w, _ := decodeEntry(want); !bytes.Equal(e.head, w.head) || !bytes.Equal(e.value, value(v, n)) {
				t.Fatalf("%s of %s: got %q, want %q", key, versions[v], e.head, w.head)
			}
		}
	}
	if hits == 0 || misses == 0 {
		t.Fatalf("%d hits, %d misses: the test should both hit and evict", hits, misses)
	}
	t.Logf("%d hits, %d misses", hits, misses)
}
