package lookup

import (
	"encoding/binary"

	"github.com/staticref/staticref/lookup/internal/bytecache"
)

// The cache. A version is immutable once complete, so the answer for (namespace,
// version, key) never changes: there is nothing to invalidate, ever. A flip simply makes
// requests ask for other keys, (namespace, new version, key), and the old version's
// entries are overwritten as the cache fills again. That is why the cache key carries the
// version, and why a request must read its snapshot once: the version it looks up in the
// cache is the version whose manifest decodes the value and fills "version" in the answer.
//
// Misses are cached too: "key not in version V" is as immutable as a value, and unknown
// keys are exactly what a scraper or a cold-start storm repeats.
//
// What it holds, and why it costs the garbage collector nothing. An entry is the answer's
// pre-rendered head (render.go: {"namespace":…,"key":…,"value":…,"version":…), so that a
// hit is a copy and a few appends, never a JSON encoding. The entries live in
// lookup/internal/bytecache: per shard, a map of uint64 to uint64 and a byte arena
// mapped outside the Go heap, so there is no pointer per entry for the GC to scan, and
// a cache of millions of answers adds nothing to a GC cycle, unlike a container/list
// LRU whose every element is a few pointers. (It replaced VictoriaMetrics/fastcache,
// built the same way, whose Get cost a hit about 1µs under load against 0.3µs for a Go
// map of the same answers: see bytecache's doc.) The price: the bound is in bytes
// (cache_bytes, at least 32 MiB), eviction is by age of writing (a shard's arena is a
// ring) rather than LRU, an entry over 64 KiB is not cached (such a value is read from
// the store every time), and a Get copies the entry into the caller's buffer.
//
// An entry is a flag byte (1: the key is in the version, 0: it is not), then, for a key
// that is, the level of the version's chain that held it (0: the version itself; a
// chain is at most 64 deep), the value's start and end in the head (uint32 little-endian
// each) and the head, which names that level's version as row_version.
// The cache key is namespace, version and key joined by NUL (cacheKey); none of the
// three can hold a NUL.

// entryHeader is the flag byte, the level and the value's bounds.
const entryHeader = 1 + 1 + 4 + 4

// Cache holds pre-rendered answers by (namespace, version, key), bounded in bytes. A nil
// *Cache holds nothing.
type Cache struct {
	c *bytecache.Cache
}

// NewCache returns a cache of about maxBytes (at least 32 MiB); maxBytes <= 0 returns nil
// (off).
func NewCache(maxBytes int64) *Cache {
	if maxBytes <= 0 {
		return nil
	}
	return &Cache{c: bytecache.New(maxBytes)}
}

// appendCacheKey appends the cache key of (ns, version, key) to b.
func appendCacheKey(b []byte, ns, version, key string) []byte {
	b = append(b, ns...)
	b = append(b, 0)
	b = append(b, version...)
	b = append(b, 0)
	return append(b, key...)
}

// cached is one entry, read back.
type cached struct {
	found bool
	level int    // the chain level that held the key (Snapshot.level)
	head  []byte // the answer's head (render.go); nil when !found
	value []byte // the value, inside head
}

// get reads k's entry into dst (its capacity reused) and returns dst and the entry: ok
// reports a hit.
func (c *Cache) get(dst, k []byte) ([]byte, cached, bool) {
	if c == nil {
		return dst, cached{}, false
	}
	dst, ok := c.c.Get(dst[:0], k)
	if !ok {
		return dst, cached{}, false
	}
	e, ok := decodeEntry(dst)
	return dst, e, ok
}

// decodeEntry reads an entry as put by entry; ok is false for one that is not an entry.
func decodeEntry(b []byte) (cached, bool) {
	switch {
	case len(b) == 1 && b[0] == 0:
		return cached{}, true
	case len(b) < entryHeader || b[0] != 1:
		return cached{}, false
	}
	lo, hi := binary.LittleEndian.Uint32(b[2:]), binary.LittleEndian.Uint32(b[6:])
	head := b[entryHeader:]
	if lo > hi || int(hi) > len(head) {
		return cached{}, false
	}
	return cached{found: true, level: int(b[1]), head: head, value: head[lo:hi]}, true
}

// renderEntry appends to dst[:0] the entry of a key that is in its version, held by
// level of the version's chain (rowVersion), the head rendered from the value (compact
// JSON), and returns it with the entry read back.
func renderEntry(dst []byte, ns, key, version, rowVersion string, level int, value []byte) ([]byte, cached) {
	dst = append(dst[:0], 1, byte(level), 0, 0, 0, 0, 0, 0, 0, 0)
	dst = appendHead(dst, ns, key, nil, "", "")
	lo := len(dst) - entryHeader + len(`,"value":`)
	dst = append(dst, `,"value":`...)
	dst = append(dst, value...)
	hi := len(dst) - entryHeader
	dst = append(dst, `,"version":`...)
	dst = appendString(dst, version)
	if rowVersion != "" {
		dst = append(dst, `,"row_version":`...)
		dst = appendString(dst, rowVersion)
	}
	binary.LittleEndian.PutUint32(dst[2:], uint32(lo))
	binary.LittleEndian.PutUint32(dst[6:], uint32(hi))
	e, _ := decodeEntry(dst)
	return dst, e
}

// missingEntry is the entry of a key its version lacks.
var missingEntry = []byte{0}

// put stores an entry made by renderEntry (or missingEntry).
func (c *Cache) put(k, entry []byte) {
	if c == nil {
		return
	}
	c.c.Set(k, entry) // bytecache skips an entry over 64 KiB
}

// Reset drops every entry and frees nothing: the arenas stay the cache's.
func (c *Cache) Reset() {
	if c != nil {
		c.c.Reset()
	}
}
