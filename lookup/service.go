package lookup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// errStoreBusy: the Pebble directory is held by another process (a run).
var errStoreBusy = errors.New("lookup: store busy")

// Service is the HTTP lookup service over one or more namespaces.
//
// Versions during a flip. Each namespace holds its live version as one
// atomic.Pointer[Snapshot]. A request loads that pointer exactly once, at its start, and
// does everything with the snapshot it got: the cache key, the store reads (always of
// that version's rows), the value decoding (that version's manifest), the defaults and
// the "version" it reports. A refresh builds the next snapshot completely (manifest
// read, defaults rendered) before it stores the pointer, so a request sees either the
// old snapshot or the new one, never a mix; and the old version stays intact in the
// store (a flip never deletes it; gc keeps `keep` previous versions), so requests that
// started on it finish on it without an error.
//
// Flips reach the service in two ways: the store's notification (Redis pub/sub on
// writers.RedisFlipChannel) kicks an immediate refresh, and a poll every poll_interval
// catches whatever a notification missed (pub/sub delivers at most once) and the stores
// that have no notification.
type Service struct {
	cfg   *Config
	log   *slog.Logger
	met   *metrics
	cache *Cache
	ns    map[string]*namespace
	names []string // sorted
	token *[sha256.Size]byte
	now   func() time.Time
}

// namespace is one served namespace.
type namespace struct {
	name   string
	cfg    *NamespaceConfig
	src    source
	online *online // nil without a model
	snap   atomic.Pointer[Snapshot]
	loaded atomic.Bool
	kick   chan struct{}
	// refreshing serialises refresh: the background loop and an admin flip both refresh,
	// and a slower one that read the old pointer must not store its snapshot last.
	refreshing sync.Mutex
}

// New opens every namespace's store and reads the admin token. It does not wait for
// the stores to answer: Run loads the pointers, and /readyz says when they are loaded.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log, met: newMetrics(), cache: NewCache(cfg.CacheEntries), ns: map[string]*namespace{}, now: time.Now}
	if cfg.AdminTokenFile != "" {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: admin_token_file: %v", ErrConfig, err)
		}
		warnReadable(log, cfg.AdminTokenFile)
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return nil, fmt.Errorf("%w: admin_token_file %s: the token must be at least 16 characters", ErrConfig, cfg.AdminTokenFile)
		}
		sum := sha256.Sum256([]byte(tok))
		s.token = &sum
	}
	for name, nc := range cfg.Namespaces {
		src, err := openSource(ctx, nc.Store, log)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("namespace %s: %w", name, err)
		}
		n := &namespace{name: name, cfg: nc, src: src, kick: make(chan struct{}, 1)}
		if nc.Model != "" {
			n.online = newOnline(nc.Model, nc.Device)
		}
		s.ns[name] = n
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// Close closes the stores and models. Call it after Run has returned.
func (s *Service) Close() error {
	var errs []error
	for _, n := range s.ns {
		if n.online != nil {
			n.online.close()
		}
		errs = append(errs, n.src.close())
	}
	return errors.Join(errs...)
}

// Ready reports whether every namespace's live pointer has been loaded.
func (s *Service) Ready() bool {
	for _, n := range s.ns {
		if !n.loaded.Load() {
			return false
		}
	}
	return true
}

// Refresh re-reads every namespace's live pointer now (tests, and after admin flips).
func (s *Service) Refresh(ctx context.Context) {
	for _, n := range s.ns {
		s.refresh(ctx, n)
	}
}

// Run serves HTTP on ln and keeps every namespace's snapshot current until ctx is done,
// then stops accepting, lets in-flight requests finish (up to DefaultShutdownGrace) and
// returns.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range s.ns {
		g.Go(func() error { s.watch(gctx, n); return nil })
		g.Go(func() error { n.src.watch(gctx, n.name, n.kick); return nil })
	}
	g.Go(func() error {
		s.log.Info("lookup service listening", "addr", ln.Addr().String(), "namespaces", strings.Join(s.names, ","))
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownGrace)
		defer cancel()
		s.log.Info("lookup service shutting down: finishing requests in flight")
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down http: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// watch keeps one namespace's snapshot current: on every kick and every poll tick.
func (s *Service) watch(ctx context.Context, n *namespace) {
	t := time.NewTicker(time.Duration(s.cfg.PollInterval))
	defer t.Stop()
	s.refresh(ctx, n)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		s.refresh(ctx, n)
	}
}

func (s *Service) refresh(ctx context.Context, n *namespace) {
	n.refreshing.Lock()
	defer n.refreshing.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 4*time.Duration(s.cfg.StoreTimeout))
	defer cancel()
	cur := n.snap.Load()
	next, err := n.src.resolve(ctx, n.name, cur)
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, context.Canceled) {
			s.log.Warn("refresh live version", "namespace", n.name, "err", err)
		}
		s.ageMetrics(n, cur)
		return
	}
	if next != cur {
		if next != nil {
			next.prepare(n.cfg, s.log)
		}
		n.snap.Store(next)
		from, to := versionOf(cur), versionOf(next)
		if from != "" {
			s.met.live.DeleteLabelValues(n.name, from)
		}
		if to != "" {
			s.met.live.WithLabelValues(n.name, to).Set(1)
		}
		if n.loaded.Load() {
			s.met.flips.WithLabelValues(n.name).Inc()
		}
		s.log.Info("live version", "namespace", n.name, "version", to, "previous", from)
	}
	n.loaded.Store(true)
	s.ageMetrics(n, next)
}

func (s *Service) ageMetrics(n *namespace, sn *Snapshot) {
	if sn == nil {
		return
	}
	age := s.now().Sub(sn.Manifest.CompletedAt)
	s.met.age.WithLabelValues(n.name).Set(age.Seconds())
	stale := 0.0
	if n.isStale(age) {
		stale = 1
	}
	s.met.stale.WithLabelValues(n.name).Set(stale)
}

func (n *namespace) isStale(age time.Duration) bool {
	return n.cfg.MaxStaleness > 0 && age > time.Duration(n.cfg.MaxStaleness)
}

func versionOf(sn *Snapshot) string {
	if sn == nil {
		return ""
	}
	return sn.Manifest.Version
}

// storeCtx bounds one store call.
func (s *Service) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Duration(s.cfg.StoreTimeout))
}
