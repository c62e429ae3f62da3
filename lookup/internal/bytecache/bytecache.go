// Package bytecache is a map of byte keys to byte values bounded in bytes, that costs
// the garbage collector nothing: what the lookup service keeps its rendered answers in.
//
// Why not VictoriaMetrics/fastcache, which it replaces: both keep entries outside the
// pointer graph (an index of uint64 to uint64 and byte arenas that hold no pointers), but
// a fastcache Get walks 512 buckets' own maps and 64 KiB chunks scattered over at least
// 32 MiB, and under load, with the CPU's caches full of the network stack, each of those
// steps is a miss to memory: in make loadtest's profiles a hit's Get cost 0.75-1µs
// where a Go map lookup of the same answers cost about 0.3µs. Here an entry is found
// with one map probe and read from one contiguous arena per shard, written in order, so
// that the entries of a small working set sit together: 0.5-1µs in the same profiles,
// and 650-680ns against fastcache's 860-880ns over a million entries out of the CPU's
// caches (docs/performance.md).
//
// The cache is split into shards by the key's hash, each with its own lock, index and
// arena. An arena is a ring: entries are appended at its write position; when one does
// not fit, the position goes back to 0 and the generation moves on, and the entries
// written before are overwritten as the position passes them. An index entry is the
// arena offset and the generation it was written in, so an overwritten entry is
// recognised and reads as a miss (eviction by age of writing, not LRU; for the lookup
// cache every entry is immutable, so the oldest is as good a victim as any). Index
// entries of two generations ago are deleted whenever an arena wraps, so the index is
// bounded by the arena too (that scan of the shard's index holds its lock: a wrap is a
// short pause of one shard in 256). Get checks the stored key, so a hash collision is a
// miss.
//
// The arenas are one anonymous memory mapping outside the Go heap (on unix), so a large
// cache does not raise the heap the GC paces itself by; its pages are taken from the
// system as entries are first written. It is unmapped when the Cache is unreachable.
package bytecache

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"sync"
)

const (
	shardBits = 8
	shards    = 1 << shardBits
	// MinBytes is the least a cache is sized to: a shard's arena must hold many entries.
	MinBytes = shards << 17 // 32 MiB: 128 KiB a shard
	// MaxEntry is the largest key plus value a cache keeps; a larger Set is ignored.
	MaxEntry = 64 << 10
	// MaxBytes is the most a cache is sized to.
	MaxBytes = 1 << 40

	entryHeader = 2 + 4 // key length (uint16), value length (uint32)
	offsetBits  = 40
	offsetMask  = 1<<offsetBits - 1
	genMask     = 1<<(64-offsetBits) - 1
)

// Cache is safe for concurrent use.
type Cache struct {
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu    sync.RWMutex
	index map[uint64]uint64 // hash -> generation<<offsetBits | offset
	arena []byte
	pos   uint64 // where the next entry goes
	gen   uint64 // the generation being written, masked by genMask; starts at 1
	_     [64]byte
}

// New returns a cache of about maxBytes (at least MinBytes, at most MaxBytes) of
// entries.
func New(maxBytes int64) *Cache {
	per := min(max(maxBytes, MinBytes), MaxBytes) / shards
	mem := allocate(int(per) * shards)
	c := &Cache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		s := &c.shards[i]
		s.arena = mem[i*int(per) : (i+1)*int(per) : (i+1)*int(per)]
		s.index = map[uint64]uint64{}
		s.gen = 1
	}
	runtime.AddCleanup(c, release, mem)
	return c
}

func (c *Cache) shardOf(k []byte) (*shard, uint64) {
	h := maphash.Bytes(c.seed, k)
	return &c.shards[h>>(64-shardBits)], h
}

// Get appends k's value to dst; ok reports whether the cache held it.
func (c *Cache) Get(dst, k []byte) (_ []byte, ok bool) {
	s, h := c.shardOf(k)
	s.mu.RLock()
	if e, found := s.index[h]; found {
		if v, valid := s.read(e, k); valid {
			dst, ok = append(dst, v...), true
		}
	}
	s.mu.RUnlock()
	return dst, ok
}

// read returns the value of the entry at e, if it still holds key k. s.mu is held.
func (s *shard) read(e uint64, k []byte) ([]byte, bool) {
	gen, off := e>>offsetBits, e&offsetMask
	current := gen == s.gen && off < s.pos
	previous := (gen+1)&genMask == s.gen && off >= s.pos
	if !current && !previous || off+entryHeader > uint64(len(s.arena)) {
		return nil, false
	}
	b := s.arena[off:]
	kl, vl := uint64(binary.LittleEndian.Uint16(b)), uint64(binary.LittleEndian.Uint32(b[2:]))
	if entryHeader+kl+vl > uint64(len(b)) || string(b[entryHeader:entryHeader+kl]) != string(k) {
		return nil, false
	}
	return b[entryHeader+kl : entryHeader+kl+vl], true
}

// Set stores v as k's value. An entry over MaxEntry (or half a shard's arena, which is
// at least twice MaxEntry) is not kept, and k then reads as a miss.
func (c *Cache) Set(k, v []byte) {
	s, h := c.shardOf(k)
	n := uint64(entryHeader + len(k) + len(v))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(k) > 0xffff || n > MaxEntry || n > uint64(len(s.arena))/2 {
		delete(s.index, h)
		return
	}
	if s.pos+n > uint64(len(s.arena)) {
		s.wrap()
	}
	b := s.arena[s.pos:]
	binary.LittleEndian.PutUint16(b, uint16(len(k)))
	binary.LittleEndian.PutUint32(b[2:], uint32(len(v)))
	copy(b[entryHeader:], k)
	copy(b[entryHeader+len(k):], v)
	s.index[h] = s.gen<<offsetBits | s.pos
	s.pos += n
}

// wrap starts the arena's next generation from its beginning, and forgets the entries
// that generation's start has made unreachable for good: those of two generations ago.
func (s *shard) wrap() {
	s.pos = 0
	s.gen = (s.gen + 1) & genMask
	if s.gen == 0 {
		s.gen = 1
	}
	for h, e := range s.index {
		if g := e >> offsetBits; g != s.gen && (g+1)&genMask != s.gen {
			delete(s.index, h)
		}
	}
}

// Len is the number of entries indexed: those readable and, until their shard's arena
// next wraps, some that were overwritten.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.index)
		s.mu.RUnlock()
	}
	return n
}

// Reset drops every entry; the memory stays the cache's.
func (c *Cache) Reset() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.index)
		s.pos, s.gen = 0, 1
		s.mu.Unlock()
	}
}
