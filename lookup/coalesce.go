package lookup

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/staticref/staticref/writers"
)

// Coalescing cache misses. Under load, many requests miss the cache at the same moment,
// and each would be its own store round trip: a write and a read syscall on both ends, a
// command for Redis to parse. Instead, a namespace on a remote store (Redis, Bigtable)
// hands its single-key misses to a reader goroutine (coalesceReaders of them). A reader
// takes one miss, waiting; then, without waiting, every other miss already queued (up
// to coalesceMax); and reads them all with one Store.GetMany per (store, version). So
// a miss that arrives alone is read alone, at once, with no timer and no added delay,
// and misses that arrive while the readers are busy share the next round trip: the
// busier the service, the bigger the batches. A request that waits gives up when its
// own context is done; a full queue, or readers that are not running (a Service whose
// Run has not started, as in tests of the handler), make a miss read the store itself.
// Pebble is in-process: its misses read it directly.
//
// One reader: in make loadtest (16 clients, the cache off, 2 cores) one reader gave
// 34-36k lookups/s where two gave 23-27k and four 23-31k, because the fewer the
// readers, the more misses queue behind each round trip and share the next. Its ceiling,
// coalesceMax keys per round trip, is some 300k misses/s at a 200µs round trip.
const (
	coalesceReaders = 1
	coalesceMax     = 64
	coalesceQueue   = 1024
)

// missReq is one queued miss. Requests are pooled: one is put back only by the request
// that received its answer, after which no reader holds it.
type missReq struct {
	sn   *Snapshot
	key  []byte       // the request's own copy, its capacity reused
	done chan missRes // buffered: a reader never waits on a request that gave up
	// until is when the request gives up waiting: a reader leaves out one past it, so a
	// slow round trip does not make it read for requests that are gone.
	until time.Time
}

var missReqs = sync.Pool{New: func() any { return &missReq{done: make(chan missRes, 1)} }}

type missRes struct {
	raw   []byte // nil: the version (down its chain) lacks the key
	level int    // the chain level that held it
	err   error
}

// coalescer is a namespace's queue of misses.
type coalescer struct {
	q chan *missReq
}

func newCoalescer(storeURL string) *coalescer {
	if u, err := writers.ParseURL(storeURL); err != nil || u.Scheme == "pebble" {
		return nil
	}
	return &coalescer{q: make(chan *missReq, coalesceQueue)}
}

// getOne reads key of sn's version, down its chain: queued for a reader, or itself when
// it cannot be; level is the chain level that held it. The read is bounded by the
// service's store_timeout either way. A key nothing holds (or that was deleted) is
// writers.ErrNotFound.
func (s *Service) getOne(ctx context.Context, n *namespace, sn *Snapshot, key string) (raw []byte, level int, _ error) {
	c := n.coalesce
	if c == nil || !n.reading.Load() {
		return s.readOne(ctx, sn, []byte(key))
	}
	// Queued or read, a miss waits at most store_timeout (or its caller's deadline, when
	// sooner), by a context of its own: neither a slow store nor readers that stopped
	// (at shutdown) can hold it longer. The batch a reader makes of it gets a
	// store_timeout of its own, so a caller in a hurry does not cut the others' read short.
	wctx, cancel := s.storeCtx(ctx)
	defer cancel()
	r := missReqs.Get().(*missReq)
	r.sn, r.key = sn, append(r.key[:0], key...)
	r.until, _ = wctx.Deadline()
	select {
	case c.q <- r:
	default: // the readers are behind: do not add to their queue
		r.sn = nil
		missReqs.Put(r)
		return s.readOne(ctx, sn, []byte(key))
	}
	select {
	case res := <-r.done:
		r.sn = nil
		missReqs.Put(r)
		if res.err == nil && res.raw == nil {
			return nil, 0, writers.ErrNotFound
		}
		return res.raw, res.level, res.err
	case <-wctx.Done(): // r stays with the reader, and is not reused
		return nil, 0, wctx.Err()
	}
}

// readOne reads one key down sn's chain under store_timeout.
func (s *Service) readOne(ctx context.Context, sn *Snapshot, key []byte) ([]byte, int, error) {
	sctx, cancel := s.storeCtx(ctx)
	defer cancel()
	vals, from, err := sn.read(sctx, sn.Store, [][]byte{key})
	switch {
	case err != nil:
		return nil, 0, err
	case vals[0] == nil:
		return nil, 0, writers.ErrNotFound
	}
	return vals[0], from[0], nil
}

// readMisses is one reader of n's queue, until stop is closed: once the servers have
// finished their requests, so that a request in flight at shutdown is still read. Its
// reads are bounded by store_timeout, not by a context of Run's.
func (s *Service) readMisses(n *namespace, stop <-chan struct{}) {
	c := n.coalesce
	batch := make([]*missReq, 0, coalesceMax)
	keys := make([][]byte, 0, coalesceMax)
	for {
		batch = batch[:0]
		select {
		case <-stop:
			return
		case r := <-c.q:
			batch = append(batch, r)
		}
	more:
		for len(batch) < coalesceMax {
			select {
			case r := <-c.q:
				batch = append(batch, r)
			default:
				break more
			}
		}
		now := time.Now()
		live := batch[:0]
		for _, r := range batch {
			if now.Before(r.until) {
				live = append(live, r)
			} // else its request has given up: nothing to answer
		}
		keys = s.readBatch(live, keys)
	}
}

// readBatch reads the misses of one batch, one read per snapshot among them (GetChain
// down its chain: one round trip; a flip or a release can put two versions in one
// batch), each under store_timeout, and answers them. keys is scratch space, returned
// for the next batch.
func (s *Service) readBatch(batch []*missReq, keys [][]byte) [][]byte {
	for len(batch) > 0 {
		sn := batch[0].sn
		same := 0 // batch[:same] are sn's requests
		for i, r := range batch {
			if r.sn == sn {
				batch[same], batch[i] = r, batch[same]
				same++
			}
		}
		keys = keys[:0]
		for _, r := range batch[:same] {
			keys = append(keys, r.key)
		}
		ctx, cancel := s.storeCtx(context.Background())
		vals, from, err := sn.read(ctx, sn.Store, keys)
		cancel()
		if err == nil && (len(vals) != same || len(from) != same) {
			err = errors.New("lookup: GetChain answered another number of keys")
		}
		for i, r := range batch[:same] {
			if err != nil {
				r.done <- missRes{err: err}
			} else {
				r.done <- missRes{raw: vals[i], level: from[i]}
			}
		}
		batch = batch[same:]
	}
	clear(keys[:cap(keys)]) // no reference to a pooled request's key past its answer
	return keys[:0]
}
