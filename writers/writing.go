package writers

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// writingTTL is how long a store trusts that a version's manifest is still in state
// writing after it last read it, sparing a manifest read per batch. Within one process
// PutManifest and DeleteVersion forget the answer at once, so only another process's
// change (Redis and Bigtable; Pebble admits one process) can take up to writingTTL to be
// seen; that is harmless, because a version is written only by the run that holds its
// namespace's lease.
const writingTTL = time.Second

// writingCache remembers which versions were recently seen in state writing.
type writingCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // ns\x00version -> when
}

// check returns nil if ns/version is in state writing, reading its manifest with read
// unless a recent answer says so.
func (c *writingCache) check(ctx context.Context, ns, version string, read func(context.Context) (*Manifest, error)) error {
	id := ns + "\x00" + version
	c.mu.Lock()
	at, ok := c.seen[id]
	c.mu.Unlock()
	if ok && time.Since(at) < writingTTL {
		return nil
	}
	m, err := read(ctx)
	if err != nil {
		return err
	}
	if m.State != StateWriting {
		c.forget(ns, version)
		return fmt.Errorf("version is %s, rows go only into a version in state writing", m.State)
	}
	c.mu.Lock()
	if c.seen == nil || len(c.seen) > 1024 {
		c.seen = map[string]time.Time{} // bounded: entries are worthless after writingTTL
	}
	c.seen[id] = time.Now()
	c.mu.Unlock()
	return nil
}

// forget drops what is known of ns/version.
func (c *writingCache) forget(ns, version string) {
	c.mu.Lock()
	delete(c.seen, ns+"\x00"+version)
	c.mu.Unlock()
}
