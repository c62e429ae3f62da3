package lookup

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/staticref/staticref/writers"
)

// Service is the lookup service over one or more namespaces, over HTTP (http.go) and,
// with grpc_addr, gRPC (grpc.go), both through query.go.
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
// The snapshot also carries the namespace's release, if any, and the snapshot of its
// candidate (release.go), so a request sees one consistent (live, release, candidate).
//
// Flips reach the service in two ways: the store's notification (Redis pub/sub on
// redis.FlipChannel, found through writers.Store.WatchFlips) kicks an immediate refresh, and a poll every poll_interval
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

	// replica names this process in release records (the judge's lease) and sketches:
	// random per process.
	replica string
	rt      releaseTiming
}

// namespace is one served namespace.
type namespace struct {
	name   string
	cfg    *NamespaceConfig
	src    atomic.Pointer[openedSource] // nil until the store is open
	online *online                      // nil without a model
	snap   atomic.Pointer[Snapshot]
	loaded atomic.Bool
	kick   chan struct{}
	health health
	met    *nsMetrics // this namespace's request series

	coalesce *coalescer  // nil: misses read the store themselves (coalesce.go)
	reading  atomic.Bool // the coalescer's readers are running
	// refreshing serialises refresh: the background loop and an admin flip both refresh,
	// and a slower one that read the old pointer must not store its snapshot last.
	refreshing sync.Mutex

	rel     releaseState   // the release's counters and the judge's view (release.go)
	shadowQ chan shadowJob // sampled keys for the shadow comparison (shadow.go)
}

// openedSource is a namespace's source once its store is open.
type openedSource struct {
	source
}

// Opening stores. A store that cannot be reached (refused, reset, timed out) when the
// service starts must not keep the other namespaces from being served: New makes one
// attempt per store, all at once, each bounded by minOpenTimeout (or 4 × store_timeout,
// if longer); a namespace whose store was unreachable starts without it, not ready, and
// Run opens it again in the background (connect), the delay doubling from poll_interval
// up to maxOpenBackoff, until it opens or the service stops. What retrying cannot fix is
// still an error from New: a URL that does not parse (ErrConfig), credentials refused, a
// pebble: directory that does not exist.
const (
	// minOpenTimeout is the least time one attempt at opening a store may take (dialling,
	// a TLS handshake, a ping); it is 4 × store_timeout when that is longer.
	minOpenTimeout = 5 * time.Second
	maxOpenBackoff = 30 * time.Second
)

// New reads the admin token and opens every namespace's store. A store that cannot be
// reached does not fail it (see above). It does not wait for the stores' live pointers:
// Run loads them, and /readyz says when they are loaded.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{cfg: cfg, log: log, met: newMetrics(), cache: NewCache(int64(cfg.CacheBytes)), ns: map[string]*namespace{}, now: time.Now,
		replica: replicaID(), rt: defaultReleaseTiming()}
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
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	for name, nc := range cfg.Namespaces {
		if _, err := writers.ParseURL(nc.Store); err != nil {
			return nil, fmt.Errorf("%w: namespaces.%s.store: %v", ErrConfig, name, err)
		}
		n := &namespace{name: name, cfg: nc, kick: make(chan struct{}, 1), shadowQ: make(chan shadowJob, shadowQueue),
			met: s.met.forNamespace(name), coalesce: newCoalescer(nc.Store)}
		if nc.Model != "" {
			n.online = newOnline(nc.Model, nc.Device)
		}
		s.ns[name] = n
		s.names = append(s.names, name)
		s.met.registerReady(name, func() bool { return s.namespaceReadiness(n, s.now()).Ready })
	}
	sort.Strings(s.names)

	// One attempt per store, all at once: a store that is slow to answer does not delay
	// the others.
	errs := make([]error, len(s.names))
	var wg sync.WaitGroup
	for i, name := range s.names {
		n := s.ns[name]
		wg.Go(func() {
			src, retry, err := s.open(ctx, n)
			switch {
			case err == nil:
				n.src.Store(src)
			case retry && ctx.Err() == nil:
				n.health.openFailed()
				s.log.Warn("store unreachable: serving the other namespaces, and connecting to this one in the background",
					"namespace", name, "err", err)
			default:
				errs[i] = fmt.Errorf("namespace %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// open makes one attempt at opening n's store, bounded by the open timeout. retry says
// whether the store was unreachable (and may be tried again).
func (s *Service) open(ctx context.Context, n *namespace) (src *openedSource, retry bool, err error) {
	actx, cancel := context.WithTimeout(ctx, max(minOpenTimeout, 4*time.Duration(s.cfg.StoreTimeout)))
	defer cancel()
	o, err := openSource(actx, n.cfg.Store, s.log, time.Duration(s.cfg.StoreTimeout))
	if err != nil {
		return nil, unreachable(actx, err), err
	}
	return &openedSource{source: o}, false, nil
}

// connect opens n's store again and again until it opens, waiting between attempts from
// poll_interval, doubling, up to maxOpenBackoff (with jitter, so that replicas do not
// all knock at once on a store that comes back). It returns false when ctx is done first.
func (s *Service) connect(ctx context.Context, n *namespace) bool {
	delay := time.Duration(s.cfg.PollInterval)
	for {
		t := time.NewTimer(time.Duration(float64(delay) * (0.75 + rand.Float64()/2)))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		src, _, err := s.open(ctx, n)
		if ctx.Err() != nil {
			if src != nil {
				src.close()
			}
			return false
		}
		if err == nil {
			n.src.Store(src)
			s.log.Info("store connected", "namespace", n.name)
			return true
		}
		delay = min(2*delay, maxOpenBackoff)
		s.log.Warn("store still unreachable: namespace not ready", "namespace", n.name,
			"attempts", n.health.openFailed(), "next_attempt_in", delay.Round(time.Millisecond), "err", err)
	}
}

// Close closes the stores and models. Call it after Run has returned.
func (s *Service) Close() error {
	s.cache.Reset() // the arenas are unmapped once the cache is unreachable
	var errs []error
	for _, n := range s.ns {
		if n.online != nil {
			n.online.close()
		}
		if src := n.src.Load(); src != nil {
			errs = append(errs, src.close())
		}
	}
	return errors.Join(errs...)
}

// catalog is the namespace's store for the background work of releases (counts,
// judgement, status), with the func that gives it back; ok is false while the store is
// unreachable, and the caller tries again on its next tick.
func (n *namespace) catalog(ctx context.Context) (*writers.Store, func(), bool) {
	src := n.src.Load()
	if src == nil {
		return nil, nil, false
	}
	store, done, err := src.catalog(ctx)
	if err != nil || store == nil {
		return nil, nil, false
	}
	return store, done, true
}

// Refresh re-reads every namespace's live pointer now (tests, and after admin flips).
func (s *Service) Refresh(ctx context.Context) {
	for _, n := range s.ns {
		s.refresh(ctx, n)
	}
}

// Run serves HTTP on ln, and gRPC on grpc_addr when the config sets one, until ctx is
// done (see Serve).
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	var gln net.Listener
	if s.cfg.GRPCAddr != "" {
		l, err := net.Listen("tcp", s.cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("grpc_addr %s: %w", s.cfg.GRPCAddr, err)
		}
		gln = l
	}
	return s.Serve(ctx, ln, gln)
}

// Serve serves HTTP on ln and the gRPC API on grpcLn (nil: none) and keeps every
// namespace's snapshot current until ctx is done, then stops accepting, lets in-flight
// requests finish (up to DefaultShutdownGrace) and returns.
func (s *Service) Serve(ctx context.Context, ln, grpcLn net.Listener) error {
	srv := NewHTTPServer(s.Handler(), s.log)
	g, gctx := errgroup.WithContext(ctx)
	served := make(chan struct{}) // closed once the HTTP and gRPC servers have finished their requests
	for _, n := range s.ns {
		g.Go(func() error {
			if n.src.Load() == nil && !s.connect(gctx, n) {
				return nil
			}
			var wg sync.WaitGroup
			if n.coalesce != nil {
				var readers sync.WaitGroup
				for range coalesceReaders {
					readers.Go(func() { s.readMisses(n, served) })
				}
				n.reading.Store(true)
				wg.Go(func() { readers.Wait(); n.reading.Store(false) })
			}
			wg.Go(func() { n.src.Load().watch(gctx, n.name, n.kick) })
			wg.Go(func() { s.releases(gctx, n, served) })
			s.watch(gctx, n)
			wg.Wait()
			return nil
		})
	}
	g.Go(func() error {
		s.log.Info("lookup service listening", "addr", ln.Addr().String(), "namespaces", strings.Join(s.names, ","), "replica", s.replica)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	var gsrv *grpc.Server
	if grpcLn != nil {
		gsrv = s.GRPCServer()
		g.Go(func() error {
			s.log.Info("lookup service listening for gRPC", "grpc", grpcLn.Addr().String(), "service", "staticref.v1.Lookup")
			if err := gsrv.Serve(grpcLn); err != nil {
				return fmt.Errorf("serve grpc: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(served)
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownGrace)
		defer cancel()
		s.log.Info("lookup service shutting down: finishing requests in flight")
		var grpcDone sync.WaitGroup // the gRPC calls in flight finish alongside HTTP's
		if gsrv != nil {
			grpcDone.Go(func() { grpcShutdown(gsrv, DefaultShutdownGrace) })
		}
		err := srv.Shutdown(sctx)
		grpcDone.Wait()
		if err != nil {
			return fmt.Errorf("shut down http: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// NewHTTPServer is the http.Server the service runs its handler in: its timeouts bound
// a slow client's hold on a connection. (make loadtest runs its bare handler in one too,
// so that the comparison is of the handlers.)
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
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

// refresh re-reads n's live pointer, and is the check of its store that readiness
// counts (see Readiness). A store that is not open yet is left to connect.
func (s *Service) refresh(ctx context.Context, n *namespace) {
	src := n.src.Load()
	if src == nil {
		return
	}
	n.refreshing.Lock()
	defer n.refreshing.Unlock()
	n.health.begin(s.now())
	ctx, cancel := context.WithTimeout(ctx, 4*time.Duration(s.cfg.StoreTimeout))
	defer cancel()
	cur := n.snap.Load()
	next, err := src.resolve(ctx, n.name, cur)
	if err != nil {
		// The first failure is a warning, the ones after it, every poll, are not news.
		switch {
		case n.health.end(s.now(), false):
			s.log.Debug("refresh live version", "namespace", n.name, "err", err)
		case ctx.Err() == nil || !errors.Is(err, context.Canceled):
			s.log.Warn("refresh live version: namespace not ready", "namespace", n.name, "err", err)
		}
		s.ageMetrics(n, cur)
		return
	}
	fresh := next != cur // a new live version
	if fresh && next != nil {
		next.prepare(n.cfg, s.log)
	}
	// The release goes into the same snapshot as the live version (release.go).
	rv := s.releaseView(ctx, n, next, cur)
	if rv == nil && cur != nil && cur.rel != nil {
		s.releaseGauges(n, nil)
	}
	if next != nil && rv != next.rel {
		if !fresh {
			c := *next
			next = &c
		}
		next.rel = rv
	}
	if next != cur {
		n.snap.Store(next)
	}
	if fresh {
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
	if n.health.end(s.now(), true) {
		s.log.Info("refresh live version: the store answers again", "namespace", n.name)
	}
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

// replicaID is a random name for this process. It tells nothing of the machine: release
// records, which anyone may read through GET /v1/{ns}:release, carry it. The log says
// which process it is.
func replicaID() string {
	return fmt.Sprintf("replica-%016x", rand.Uint64())
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
