// Package driverkit holds what the store drivers (writers/pebble, writers/redis,
// writers/bigtable) share beneath the writers.Store wrapper and that no caller needs.
package driverkit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/staticref/staticref/writers"
)

// WritingTTL is how long a store trusts that a version's manifest is still in state
// writing after it last read it, sparing a manifest read per batch. Within one process
// PutManifest and DeleteVersion forget the answer at once, so only another process's
// change (Redis and Bigtable; Pebble admits one process) can take up to WritingTTL to be
// seen; that is harmless, because a version is written only by the run that holds its
// namespace's lease.
const WritingTTL = time.Second

// WritingCache remembers which versions were recently seen in state writing.
type WritingCache struct {
	mu   sync.Mutex
	seen map[string]time.Time // ns\x00version -> when
}

// Check returns nil if ns/version is in state writing, reading its manifest with read
// unless a recent answer says so.
func (c *WritingCache) Check(ctx context.Context, ns, version string, read func(context.Context) (*writers.Manifest, error)) error {
	id := ns + "\x00" + version
	c.mu.Lock()
	at, ok := c.seen[id]
	c.mu.Unlock()
	if ok && time.Since(at) < WritingTTL {
		return nil
	}
	m, err := read(ctx)
	if err != nil {
		return err
	}
	if m.State != writers.StateWriting {
		c.Forget(ns, version)
		return fmt.Errorf("version is %s, rows go only into a version in state writing", m.State)
	}
	c.mu.Lock()
	if c.seen == nil || len(c.seen) > 1024 {
		c.seen = map[string]time.Time{} // bounded: entries are worthless after WritingTTL
	}
	c.seen[id] = time.Now()
	c.mu.Unlock()
	return nil
}

// Forget drops what is known of ns/version.
func (c *WritingCache) Forget(ns, version string) {
	c.mu.Lock()
	delete(c.seen, ns+"\x00"+version)
	c.mu.Unlock()
}
