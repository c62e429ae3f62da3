package lookup

import (
	"container/list"
	"encoding/json"
	"hash/maphash"
	"sync"
)

// The cache. A version is immutable once complete, so the answer for (namespace,
// version, key) never changes: there is nothing to invalidate, ever. A flip simply makes
// requests ask for other keys, (namespace, new version, key), and the old version's
// entries age out of the LRU. That is why the cache key carries the version, and why a
// request must read its snapshot once: the version it looks up in the cache is the
// version whose manifest decodes the value and fills "version" in the answer.
//
// Misses are cached too (found=false): "key not in version V" is as immutable as a
// value, and unknown keys are exactly what a scraper or a cold-start storm repeats.
//
// The bound is a number of entries, split evenly over shards, each an LRU behind its
// own mutex, so that concurrent requests on different keys rarely contend.
const cacheShards = 32

type cacheEntry struct {
	key   string
	value json.RawMessage
	found bool
}

type cacheShard struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used
	items map[string]*list.Element
}

// Cache is a bounded LRU of answers by (namespace, version, key). The zero of a nil
// *Cache is a cache that holds nothing.
type Cache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

// NewCache returns a cache of at most entries answers; entries <= 0 returns nil (off).
func NewCache(entries int) *Cache {
	if entries <= 0 {
		return nil
	}
	c := &Cache{seed: maphash.MakeSeed()}
	per := max(1, (entries+cacheShards-1)/cacheShards)
	for i := range c.shards {
		c.shards[i] = cacheShard{max: per, ll: list.New(), items: map[string]*list.Element{}}
	}
	return c
}

func cacheKey(ns, version, key string) string { return ns + "\x00" + version + "\x00" + key }

func (c *Cache) shard(k string) *cacheShard {
	return &c.shards[maphash.String(c.seed, k)%cacheShards]
}

// Get returns the cached answer: ok reports a hit, found whether the key exists.
func (c *Cache) Get(k string) (v json.RawMessage, found, ok bool) {
	if c == nil {
		return nil, false, false
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.items[k]
	if !ok {
		return nil, false, false
	}
	s.ll.MoveToFront(e)
	ent := e.Value.(*cacheEntry)
	return ent.value, ent.found, true
}

// Put stores an answer, evicting the least recently used entry of its shard when full.
func (c *Cache) Put(k string, v json.RawMessage, found bool) {
	if c == nil {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[k]; ok {
		s.ll.MoveToFront(e)
		return
	}
	s.items[k] = s.ll.PushFront(&cacheEntry{key: k, value: v, found: found})
	for s.ll.Len() > s.max {
		last := s.ll.Back()
		s.ll.Remove(last)
		delete(s.items, last.Value.(*cacheEntry).key)
	}
}

// Len is the number of cached answers.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.ll.Len()
		s.mu.Unlock()
	}
	return n
}
