package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/staticref/staticref/writers"
)

// DefaultLeaseTTL is the writer lease's lifetime: a writer that dies holds its namespace
// for at most this long.
const DefaultLeaseTTL = 30 * time.Second

// lease takes the namespace's writer lease (waiting for it with cfg.Wait) and keeps it
// renewed. The returned context is cancelled, with writers.ErrLeaseLost as its cause,
// if a renewal fails: a writer that cannot prove it still holds the namespace stops
// writing. release gives the lease up.
//
// The fence. A renewal that fails is not the only way to lose a lease: a process paused
// past its lease (SIGSTOP, a VM or container freeze, a long GC stall, a hung renewal)
// finds on waking that another writer may have taken the namespace over and gc may have
// retired its version, before its renewal goroutine has had a chance to notice. So every
// row write runs under fenced, whose deadline is when the lease was last known to hold:
// the moment the last successful renewal was sent, plus the lease's ttl (the store counts
// the ttl from when it received the renewal, which is later, so the fence closes first).
// Time keeps passing while a process is paused, so a writer that wakes past its fence
// writes nothing more: its next write fails at once, and one in flight is cut off by the
// deadline (go-redis and the other clients honour a context's deadline on every send).
func (r *run) lease(ctx context.Context) (context.Context, func(), error) {
	ttl := r.cfg.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	holder := r.cfg.Holder
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	// A sharded run's processes write one version together: each shard index has its
	// own lease, so two pods of one index never write at once.
	name := r.ns
	if r.sharded() {
		name = fmt.Sprintf("%s.shard-%d", r.ns, r.cfg.ShardIndex)
		if err := writers.ValidateNamespace(name); err != nil {
			return nil, nil, fmt.Errorf("sharded run of %s: namespace too long for a shard lease: %w", r.ns, err)
		}
	}
	var l writers.Lease
	for {
		var err error
		l, err = r.store.AcquireLease(ctx, name, holder, ttl)
		if err == nil {
			break
		}
		var held *writers.LeaseHeldError
		if !r.cfg.Wait || !errors.As(err, &held) {
			return nil, nil, fmt.Errorf("take the writer lease of %s: %w", r.ns, err)
		}
		r.log.Info("waiting for the writer lease", "namespace", r.ns, "holder", held.Holder, "expires", held.Expires)
		select {
		case <-time.After(min(ttl/3, time.Second)):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	r.fence.Store(time.Now().Add(ttl)) // sent no later than now
	ctx, cancel := context.WithCancelCause(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sent := time.Now()
				next, err := r.store.RenewLease(ctx, l, ttl)
				switch {
				case err == nil:
					l = next
					r.fence.Store(sent.Add(ttl))
				case ctx.Err() != nil:
					return
				case errors.Is(err, writers.ErrLeaseLost) || !r.now().Before(l.Expires):
					cancel(fmt.Errorf("renew the writer lease of %s: %w", r.ns, err))
					return
				default:
					// A transient store error: the lease still holds until l.Expires, and
					// the next tick tries again.
					r.log.Warn("could not renew the writer lease; retrying", "namespace", r.ns, "err", err)
				}
			}
		}
	}()
	release := func() {
		cancel(nil)
		<-stopped
		rctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		if err := r.store.ReleaseLease(rctx, l); err != nil {
			r.log.Warn("could not release the writer lease", "namespace", r.ns, "err", err)
		}
	}
	return ctx, release, nil
}

// fenced returns ctx bounded by the lease's fence (see lease), for one row write.
func (r *run) fenced(ctx context.Context) (context.Context, context.CancelFunc, error) {
	until, _ := r.fence.Load().(time.Time)
	if until.IsZero() {
		return ctx, func() {}, nil
	}
	if !time.Now().Before(until) {
		return nil, nil, fmt.Errorf("the writer lease of %s was last known to hold until %s: %w",
			r.ns, until.UTC().Format(time.RFC3339Nano), writers.ErrLeaseLost)
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	return ctx, cancel, nil
}
