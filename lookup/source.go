package lookup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/staticref/staticref/writers"
)

// A source is where a namespace's snapshots come from: the store itself, whose live
// pointer is read through the store contract and whose version's rows are read in place
// (Pebble included: its complete versions are immutable files that any number of
// processes read while runs write others). Tests substitute their own.
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

// openSource opens the source a namespace's store URL names; timeout bounds each store
// call of its resolve. A URL that does not parse is an error wrapping writers.ErrBadURL.
func openSource(ctx context.Context, url string, log *slog.Logger, timeout time.Duration) (source, error) {
	if _, err := writers.ParseURL(url); err != nil {
		return nil, err
	}
	// OpenExisting: a pebble: directory that holds no store is a mistake in the config,
	// not an empty store to create and serve nothing from.
	s, err := writers.OpenExisting(ctx, url)
	if err != nil {
		return nil, err
	}
	return &storeSource{store: s, log: log, timeout: timeout}, nil
}

// unreachable reports whether a store failed to open because it could not be reached, or
// not in time: refused, reset, timed out, a name that does not resolve yet, an RPC
// service that is unavailable. Such a store may come back, so the service opens it again
// in the background. Anything else (a password refused, a certificate not trusted, a
// pebble: directory that does not exist) is a mistake that retrying cannot fix.
//
// attempt is the context the open ran under: an open cut short by its deadline is
// unreachable whatever the driver made of the deadline.
func unreachable(attempt context.Context, err error) bool {
	if errors.Is(attempt.Err(), context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}

// storeSource reads pointer and rows straight from the store.
type storeSource struct {
	store   *writers.Store
	log     *slog.Logger
	timeout time.Duration // store_timeout, for each call
}

func (s *storeSource) resolve(ctx context.Context, ns string, cur *Snapshot) (*Snapshot, error) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	live, err := s.store.Live(cctx, ns)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read live pointer of %s: %w", ns, err)
	}
	if live == "" {
		return nil, nil
	}
	if cur != nil && cur.Manifest.Version == live {
		return cur, nil
	}
	cctx, cancel = context.WithTimeout(ctx, s.timeout)
	m, err := s.store.Manifest(cctx, ns, live)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("read manifest %s/%s: %w", ns, live, err)
	}
	// Each base's manifest is one more read: store_timeout for each, not one for all.
	cctx, cancel = context.WithTimeout(ctx, s.timeout*time.Duration(m.ChainDepth()))
	defer cancel()
	sn, err := newSnapshot(cctx, s.store, ns, m)
	if err != nil {
		return nil, fmt.Errorf("resolve %s/%s: %w", ns, live, err)
	}
	return sn, nil
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
