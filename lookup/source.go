package lookup

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/staticref/staticref/writers"
)

// A source is where a namespace's snapshots come from. For every store but Pebble that
// is the store itself: the live pointer is read through the store contract, and the
// version's rows are read from the same store. Pebble is different (see pebbleSource).
type source interface {
	// resolve returns the snapshot of the live version, cur itself when the live version
	// is still cur's, and nil when the namespace has no live version.
	resolve(ctx context.Context, ns string, cur *Snapshot) (*Snapshot, error)
	// catalog returns a store through which the catalog may be read and changed (status,
	// flip, rollback), and a function to call when done with it.
	catalog(ctx context.Context) (*writers.Store, func(), error)
	// watch sends on kick whenever the store announces a flip, until ctx is done. Stores
	// without notifications return at once.
	watch(ctx context.Context, ns string, kick chan<- struct{})
	close() error
}

// openSource opens the source a namespace's store URL names.
func openSource(ctx context.Context, url string, log *slog.Logger) (source, error) {
	u, err := writers.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "pebble" {
		return newPebbleSource(u.Dir, log)
	}
	s, err := writers.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	return &storeSource{store: s, log: log}, nil
}

// storeSource reads pointer and rows straight from a shared store (Redis, Bigtable).
type storeSource struct {
	store *writers.Store
	log   *slog.Logger
}

func (s *storeSource) resolve(ctx context.Context, ns string, cur *Snapshot) (*Snapshot, error) {
	live, err := s.store.Live(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("read live pointer of %s: %w", ns, err)
	}
	if live == "" {
		return nil, nil
	}
	if cur != nil && cur.Manifest.Version == live {
		return cur, nil
	}
	m, err := s.store.Manifest(ctx, ns, live)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s/%s: %w", ns, live, err)
	}
	return &Snapshot{Namespace: ns, Manifest: m, Store: s.store}, nil
}

func (s *storeSource) catalog(context.Context) (*writers.Store, func(), error) {
	return s.store, func() {}, nil
}

// watch follows the store's flip announcements, if it makes any (Redis does). Delivery
// is at most once, so a lost message (a reconnect) is covered by the periodic poll.
func (s *storeSource) watch(ctx context.Context, ns string, kick chan<- struct{}) {
	s.store.WatchFlips(ctx, func(flipped string) {
		if flipped != ns {
			return
		}
		select {
		case kick <- struct{}{}:
		default: // a refresh is already pending
		}
	})
}

func (s *storeSource) close() error { return s.store.Close() }
