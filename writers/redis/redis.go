package writers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// RedisFlipChannel is the Pub/Sub channel on which SwapLive announces every flip, as
// JSON {"namespace":…,"version":…,"previous":…} (previous is "" for a first flip).
// Lookup services subscribe to it to drop their cached live pointer at once instead of
// waiting for their next poll. Delivery is at most once: a subscriber that was
// disconnected must re-read the pointer when it reconnects.
const RedisFlipChannel = "sr:flips"

// Defaults of the Redis store's tuning fields.
const (
	// DefaultRedisPipelineSize is the number of SETs sent in one pipeline. Measured
	// with BenchmarkRedisPipelineSize (8192-row batches of 40-byte values, MaxInFlight
	// 4, standalone redis-server 7.0 on loopback, 2 cores shared with the client and a
	// load average of 5, so +-20% noise; medians of three 1s runs, rows/s): 256 -> 293k,
	// 1024 -> 316k, 2048 -> 240k, 4096 -> 283k. Past a few hundred commands a round trip
	// no longer limits throughput, and bigger pipelines only hold more memory, fill
	// fewer of the MaxInFlight slots of an 8192-row batch, and resend more after a
	// transient error; 1024 was best or tied in every run.
	DefaultRedisPipelineSize = 1024
	// DefaultRedisMaxInFlight is the number of pipelines one WriteRows keeps in flight.
	DefaultRedisMaxInFlight = 4
	// DefaultRedisRetryFor is how long WriteRows keeps retrying a pipeline that failed
	// with a transient error before it gives up.
	DefaultRedisRetryFor = 30 * time.Second
)

// redisScanCount is the COUNT hint of the SCANs that count and delete a version's keys.
const redisScanCount = 1000

// Redis is the store for Redis and Redis Cluster (redis://, rediss://, redis+cluster://).
// One code path serves both, over redis.UniversalClient; only the operations that must
// visit every key of a version (CountKeys, DeleteVersion) go to each master in turn.
//
// Key layout. Each namespace NS has a handful of catalog keys, all carrying the hash
// tag {sr:NS} so that Redis Cluster puts them in one slot and a Lua script may read and
// write them together atomically:
//
//	{sr:NS}:live               string  the live version id (absent: none)
//	{sr:NS}:manifests          hash    version -> manifest JSON
//	{sr:NS}:lease              string  {"holder","token"} JSON, with PX expiry
//	{sr:NS}:shards:VERSION     hash    shard id -> Shard JSON
//
// Rows are plain strings with no hash tag, so the rows of one version spread over every
// master of a cluster:
//
//	sr:NS:VERSION:KEY          string  the encoded value
//
// Namespaces and version ids cannot contain ':' (ValidateNamespace, ValidateVersion) or
// any glob character, so "sr:NS:VERSION:" is a prefix of exactly one version's rows and
// "sr:NS:VERSION:*" is a safe SCAN MATCH pattern; data keys begin with "sr:", never with
// "{sr:", so no row can be mistaken for a catalog key. A KEY that contains a {…} hash tag
// of its own just lands in that tag's slot. No command touches keys of two slots.
//
// The flip. SwapLive is one Lua script over {sr:NS}:live and {sr:NS}:manifests: it
// compares the pointer with the expected version, checks that the next version's
// manifest says complete, sets the pointer and publishes on RedisFlipChannel. A script
// runs without interleaving, so two flips can never both win, and a version can never
// be made live while DeleteVersion retires it (that is a script on the same keys too).
//
// Writes. WriteRows splits a batch into pipelines of PipelineSize SETs, keeps at most
// MaxInFlight of them in flight, and resends a pipeline that failed with a transient
// error (a network error, LOADING, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY) with
// exponential back-off for up to RetryFor; SET is idempotent, so a resend is safe. Rows
// are not written atomically with the manifest check (in a cluster they cannot be: they
// live on every master), so WriteRows reads the manifest first and refuses a version not
// in state writing. It remembers a positive answer for writingTTL (one second) per
// version, which spares a large manifest read per batch; PutManifest and DeleteVersion
// in this process forget it at once, so only another process's change can take up to a
// second to be seen. That is harmless under the contract: a version is written by the
// one run that holds its namespace's lease, and gc removes a writing version only once
// it is older than its grace period.
//
// The lease is {sr:NS}:lease, set with SET NX PX; renew and release are Lua scripts that
// compare the stored holder and token first. Expiry is Redis's own, so a lease that
// expired is gone: its old holder cannot renew it even if nobody took it over.
//
// The tuning fields may be changed only before the store is first used.
type Redis struct {
	// PipelineSize is the number of SETs per pipeline (DefaultRedisPipelineSize).
	PipelineSize int
	// MaxInFlight is the number of pipelines one WriteRows call keeps in flight
	// (DefaultRedisMaxInFlight).
	MaxInFlight int
	// RetryFor bounds the retries of a pipeline that failed transiently (DefaultRedisRetryFor).
	RetryFor time.Duration

	client  redis.UniversalClient
	cluster *redis.ClusterClient // nil for a standalone server
	addr    string               // for error messages: host:port[,host:port…]

	writing writingCache
	closed  atomic.Bool

	tlsCA string // the URL's tls_ca: a PEM file of CAs a rediss:// server is checked against
}

var _ Store = (*Redis)(nil)

// OpenRedis connects to the Redis server or cluster a redis://, rediss:// or
// redis+cluster:// URL names and pings it. Query parameters are go-redis options
// (redis.ParseURL), e.g. ?dial_timeout=3s&pool_size=20, and staticref's own write
// settings: pipeline=N (commands per pipeline), max_in_flight=N (pipelines at once) and
// retry_for=DURATION (how long a failed pipeline is retried). A rediss:// server's
// certificate is checked against the system's CAs, or against those in the PEM file that
// tls_ca=PATH names (a private CA).
func OpenRedis(ctx context.Context, rawURL string) (*Redis, error) {
	routeGoRedisLogs.Do(func() { redis.SetLogger(goRedisLogger{}) })
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	r := &Redis{
		PipelineSize: DefaultRedisPipelineSize,
		MaxInFlight:  DefaultRedisMaxInFlight,
		RetryFor:     DefaultRedisRetryFor,
	}
	goRedisURL, err := r.takeWriteOptions(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open redis store %s: %w", RedactURL(rawURL), err)
	}
	rawURL = goRedisURL
	switch u.scheme {
	case "redis", "rediss":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open redis store %s: %w", RedactURL(rawURL), withoutURL(err))
		}
		if r.tlsCA != "" {
			if opt.TLSConfig == nil {
				return nil, fmt.Errorf("open redis store %s: tls_ca=%q: only a rediss:// URL uses TLS", RedactURL(rawURL), r.tlsCA)
			}
			if opt.TLSConfig.RootCAs, err = loadCAs(r.tlsCA); err != nil {
				return nil, fmt.Errorf("open redis store %s: tls_ca: %w", RedactURL(rawURL), err)
			}
		}
		r.client, r.addr = redis.NewClient(opt), opt.Addr
	case "redis+cluster":
		if r.tlsCA != "" {
			return nil, fmt.Errorf("open redis store %s: tls_ca: TLS is supported on a rediss:// server, not on redis+cluster://", RedactURL(rawURL))
		}
		opt, err := redis.ParseClusterURL(clusterURL(rawURL))
		if err != nil {
			return nil, fmt.Errorf("open redis store %s: %w", RedactURL(rawURL), withoutURL(err))
		}
		r.cluster = redis.NewClusterClient(opt)
		r.client, r.addr = r.cluster, strings.Join(opt.Addrs, ",")
	default:
		return nil, fmt.Errorf("open redis store: %q is not a redis URL", RedactURL(rawURL))
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := r.ping(pctx); err != nil {
		r.client.Close()
		if isAuthError(err) {
			return nil, fmt.Errorf("open redis store: redis at %s refused the credentials (check the user and password in the URL): %w", r.addr, err)
		}
		return nil, fmt.Errorf("open redis store: cannot reach redis at %s (is it running, and is the URL right?): %w", r.addr, err)
	}
	return r, nil
}

// go-redis prints each failed dial to stderr with its own format, before staticref's
// error says the same thing once. Its lines go to slog at debug level instead.
var routeGoRedisLogs sync.Once

type goRedisLogger struct{}

func (goRedisLogger) Printf(ctx context.Context, format string, args ...any) {
	slog.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, args...))
}

// isAuthError says whether the server rejected the connection's credentials: a wrong
// user or password (WRONGPASS), none where one is required (NOAUTH), or a user whose
// ACL forbids the command.
func isAuthError(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "NOPERM")
}

// ping checks the server, or every master of a cluster (which also loads the slot map).
func (r *Redis) ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return err
	}
	if r.cluster != nil {
		return r.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	return nil
}

// clusterURL turns redis+cluster://[user:pass@]h1:p1,h2:p2[/…][?q] into the form
// redis.ParseClusterURL reads: redis://[user:pass@]h1:p1?addr=h2:p2[&q].
func clusterURL(raw string) string {
	rest := raw[strings.Index(raw, "://")+3:]
	rest, query, _ := strings.Cut(rest, "?")
	authority, _, _ := strings.Cut(rest, "/")
	userinfo := ""
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	hosts := strings.Split(authority, ",")
	q := url.Values{}
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	out := "redis://" + userinfo + hosts[0]
	extra := q.Encode()
	if query != "" {
		if extra != "" {
			extra += "&"
		}
		extra += query
	}
	if extra != "" {
		out += "?" + extra
	}
	return out
}

// withoutURL drops the URL that a *url.Error quotes in full, password included, and
// keeps what went wrong.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Addr is the address (or, for a cluster, the seed addresses) the store talks to.
func (r *Redis) Addr() string { return r.addr }

// Client is the underlying go-redis client (a *redis.Client or *redis.ClusterClient), for
// subscribing to RedisFlipChannel and for tests.
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Key names; see the type comment.
func redisTag(ns string) string                { return "{sr:" + ns + "}" }
func redisLiveKey(ns string) string            { return redisTag(ns) + ":live" }
func redisManifestsKey(ns string) string       { return redisTag(ns) + ":manifests" }
func redisLeaseKey(ns string) string           { return redisTag(ns) + ":lease" }
func redisShardsKey(ns, version string) string { return redisTag(ns) + ":shards:" + version }
func redisDataPrefix(ns, version string) string {
	return "sr:" + ns + ":" + version + ":"
}

// WriteRows implements Store.
func (r *Redis) WriteRows(ctx context.Context, ns, version string, rows Rows) error {
	if err := validateRows(ns, version, rows); err != nil {
		return err
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	if err := r.checkWriting(ctx, ns, version); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	if len(rows.Keys) == 0 {
		return nil
	}

	size := max(r.PipelineSize, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(r.MaxInFlight, 1))
	prefix := redisDataPrefix(ns, version)
	for lo := 0; lo < len(rows.Keys); lo += size {
		hi := min(lo+size, len(rows.Keys))
		g.Go(func() error {
			if r.cluster == nil {
				// One MSET a chunk on a single server: a third of the client's allocations
				// and far fewer commands for the server to dispatch than a pipeline of SETs.
				args := make([]any, 0, 2*(hi-lo))
				for i := lo; i < hi; i++ {
					args = append(args, prefix+string(rows.Keys[i]), rows.Values[i])
				}
				return r.retry(gctx, func(ctx context.Context) error {
					return r.client.MSet(ctx, args...).Err()
				})
			}
			// A cluster spreads a version's keys over every slot: SETs in a pipeline, which
			// go-redis splits by node (an MSET across slots would fail).
			return r.retry(gctx, func(ctx context.Context) error {
				pipe := r.client.Pipeline()
				for i := lo; i < hi; i++ {
					pipe.Set(ctx, prefix+string(rows.Keys[i]), rows.Values[i], 0)
				}
				_, err := pipe.Exec(ctx)
				return err
			})
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("write rows %s/%s to redis %s: %w", ns, version, r.addr, err)
	}
	return nil
}

// checkWriting refuses a version whose manifest is missing or not in state writing.
func (r *Redis) checkWriting(ctx context.Context, ns, version string) error {
	return r.writing.check(ctx, ns, version, func(ctx context.Context) (m *Manifest, err error) {
		err = r.retry(ctx, func(ctx context.Context) error {
			m, err = r.manifest(ctx, ns, version)
			return err
		})
		return m, err
	})
}

// forget drops the cached writing state of a version.
func (r *Redis) forget(ns, version string) { r.writing.forget(ns, version) }

// retry runs op until it succeeds, fails with an error that is not transient, ctx ends,
// or r.RetryFor has passed; back-off doubles from 20ms to 1s between attempts. Each
// attempt also carries go-redis's own few retries (MaxRetries, 3 by default), so one
// attempt against a server that is down takes a couple of seconds by itself.
func (r *Redis) retry(ctx context.Context, op func(ctx context.Context) error) error {
	start := time.Now()
	deadline := start.Add(r.RetryFor)
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || !isTransient(err) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("gave up after %d attempts over %s: %w", attempt, time.Since(start).Round(time.Millisecond), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// isTransient reports whether err may go away by itself: a network error, or a server
// that is loading, failing over or resharding.
func isTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrPoolTimeout):
		return true
	}
	return redis.IsLoadingError(err) || redis.IsTryAgainError(err) || redis.IsClusterDownError(err) ||
		redis.IsMasterDownError(err) || redis.IsReadOnlyError(err)
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	v, err := r.client.Get(ctx, redisDataPrefix(ns, version)+string(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get %s/%s key %q: %w", ns, version, key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s/%s key %q from redis %s: %w", ns, version, key, r.addr, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// CountKeys implements Store: SCANs of the version's pattern on every master.
func (r *Redis) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	if err := validateNV(ns, version); err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	// SCAN returns a key twice when the server resizes its table during the scan (as it
	// does after gc unlinks a big version), and never misses a key that exists
	// throughout. So count until two scans agree, at most countScans times, pausing
	// between scans that disagree to let the resize progress, and return the smallest
	// count: after countScans, still at least the true count.
	best, prev := int64(-1), int64(-1)
	for i := range countScans {
		if i > 1 {
			select {
			case <-time.After(countPause):
			case <-ctx.Done():
				return 0, fmt.Errorf("count keys %s/%s in redis %s: %w", ns, version, r.addr, ctx.Err())
			}
		}
		var n atomic.Int64
		err := r.scanVersion(ctx, ns, version, func(ctx context.Context, c *redis.Client, keys []string) error {
			n.Add(int64(len(keys)))
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("count keys %s/%s in redis %s: %w", ns, version, r.addr, err)
		}
		if best < 0 || n.Load() < best {
			best = n.Load()
		}
		if n.Load() == prev {
			break
		}
		prev = n.Load()
	}
	return best, nil
}

// countScans bounds the scans of CountKeys, countPause spaces those after the second
// (a server's cron, which advances a resize, ticks every 100 ms by default).
const (
	countScans = 4
	countPause = 200 * time.Millisecond
)

// scanVersion calls fn with each page of SCAN MATCH sr:NS:VERSION:* on every master (the
// one server when standalone), together with the client of the master the keys live on.
// SCAN returns every key that exists for the whole scan at least once; a key may come
// twice if the keyspace is resized during the scan, so counts are exact only for a
// version nobody is writing or deleting, which is when CountKeys is meant to be called.
func (r *Redis) scanVersion(ctx context.Context, ns, version string, fn func(ctx context.Context, c *redis.Client, keys []string) error) error {
	pattern := redisDataPrefix(ns, version) + "*"
	scan := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, redisScanCount).Result()
			if err != nil {
				return err
			}
			if len(keys) > 0 {
				if err := fn(ctx, c, keys); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if r.cluster != nil {
		return r.cluster.ForEachMaster(ctx, scan)
	}
	return scan(ctx, r.client.(*redis.Client))
}

// PutManifest implements Store.
func (r *Redis) PutManifest(ctx context.Context, m *Manifest) error {
	data, err := manifestJSON(m)
	if err != nil {
		return err
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	r.forget(m.Namespace, m.Version)
	if err := r.client.HSet(ctx, redisManifestsKey(m.Namespace), m.Version, data).Err(); err != nil {
		return fmt.Errorf("put manifest %s/%s in redis %s: %w", m.Namespace, m.Version, r.addr, err)
	}
	return nil
}

// Manifest implements Store.
func (r *Redis) Manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	m, err := r.manifest(ctx, ns, version)
	if err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	return m, nil
}

// manifest reads and decodes a manifest; the caller has validated ns and version.
func (r *Redis) manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	data, err := r.client.HGet(ctx, redisManifestsKey(ns), version).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("version %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", r.addr, err)
	}
	m := new(Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return m, nil
}

// Manifests implements Store.
func (r *Redis) Manifests(ctx context.Context, ns string) ([]*Manifest, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	all, err := r.client.HGetAll(ctx, redisManifestsKey(ns)).Result()
	if err != nil {
		return nil, fmt.Errorf("manifests %s in redis %s: %w", ns, r.addr, err)
	}
	ms := make([]*Manifest, 0, len(all))
	for version, data := range all {
		m := new(Manifest)
		if err := json.Unmarshal([]byte(data), m); err != nil {
			return nil, fmt.Errorf("manifests %s: decode %q: %w", ns, version, err)
		}
		ms = append(ms, m)
	}
	SortManifests(ms)
	return ms, nil
}

// redisRetireScript marks a version retired and drops its shard records, unless it is
// live or its manifest changed since the caller read it (then the caller reads again).
//
//	KEYS: live, manifests, shards hash   ARGV: version, manifest as read, retired manifest
//	returns "ok", "live", "missing" or "changed"
var redisRetireScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return 'live' end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return 'missing' end
if cur ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[3])
return 'ok'
`)

// DeleteVersion implements Store. It first retires the manifest (and drops the shard
// records) in a script that refuses the live version, and only then deletes the rows,
// with SCAN and UNLINK on every master. In that order, once the rows start to go the
// version can no longer be made live: SwapLive wants a complete manifest. If deleting
// the rows fails half-way the version is already retired; calling DeleteVersion again
// (it accepts a retired version) deletes what is left.
func (r *Redis) DeleteVersion(ctx context.Context, ns, version string) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("delete version: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	r.forget(ns, version)
	keys := []string{redisLiveKey(ns), redisManifestsKey(ns), redisShardsKey(ns, version)}
	for attempt := 0; ; attempt++ {
		old, err := r.client.HGet(ctx, redisManifestsKey(ns), version).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("delete version %s/%s: version %s: %w", ns, version, version, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete version %s/%s in redis %s: %w", ns, version, r.addr, err)
		}
		m := new(Manifest)
		if err := json.Unmarshal([]byte(old), m); err != nil {
			return fmt.Errorf("delete version %s/%s: decode manifest: %w", ns, version, err)
		}
		m.State = StateRetired
		retired, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
		}
		res, err := redisRetireScript.Run(ctx, r.client, keys, version, old, retired).Text()
		if err != nil {
			return fmt.Errorf("delete version %s/%s in redis %s: %w", ns, version, r.addr, err)
		}
		switch res {
		case "ok":
		case "live":
			return fmt.Errorf("delete version %s/%s: %w: it is the live version", ns, version, ErrConflict)
		case "missing":
			return fmt.Errorf("delete version %s/%s: version %s: %w", ns, version, version, ErrNotFound)
		case "changed":
			if attempt < 10 {
				continue
			}
			return fmt.Errorf("delete version %s/%s: manifest keeps changing concurrently", ns, version)
		default:
			return fmt.Errorf("delete version %s/%s: unexpected script reply %q", ns, version, res)
		}
		break
	}
	err := r.scanVersion(ctx, ns, version, func(ctx context.Context, c *redis.Client, keys []string) error {
		// One UNLINK per key: a multi-key UNLINK fails with CROSSSLOT in a cluster even
		// when every key lives on the same master.
		pipe := c.Pipeline()
		for _, k := range keys {
			pipe.Unlink(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete version %s/%s: version retired, but deleting its rows from redis %s failed (run gc or delete it again): %w", ns, version, r.addr, err)
	}
	return nil
}

// Live implements Store.
func (r *Redis) Live(ctx context.Context, ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("live: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return "", fmt.Errorf("live %s: %w", ns, err)
	}
	v, err := r.client.Get(ctx, redisLiveKey(ns)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("live %s in redis %s: %w", ns, r.addr, err)
	}
	return v, nil
}

// redisSwapScript is the flip: compare the pointer, check the next manifest, set the
// pointer, announce it. See Redis.
//
//	KEYS: live, manifests   ARGV: old ("" = none), next, flip channel, flip message
//	returns {"ok"}, {"conflict", live}, {"missing"} or {"state", state}
var redisSwapScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'conflict', cur} end
local m = redis.call('HGET', KEYS[2], ARGV[2])
if not m then return {'missing'} end
local st = cjson.decode(m)['state']
if st ~= 'complete' then return {'state', tostring(st)} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'ok'}
`)

// redisFlip is the message published on RedisFlipChannel.
type redisFlip struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	Previous  string `json:"previous"`
}

// SwapLive implements Store with redisSwapScript.
func (r *Redis) SwapLive(ctx context.Context, ns, old, next string) error {
	if err := validateSwap(ns, old, next); err != nil {
		return err
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("swap live %s: %w", ns, err)
	}
	msg, err := json.Marshal(redisFlip{Namespace: ns, Version: next, Previous: old})
	if err != nil {
		return fmt.Errorf("swap live %s: %w", ns, err)
	}
	res, err := redisSwapScript.Run(ctx, r.client, []string{redisLiveKey(ns), redisManifestsKey(ns)},
		old, next, RedisFlipChannel, msg).StringSlice()
	if err != nil {
		return fmt.Errorf("swap live %s to %s in redis %s: %w", ns, next, r.addr, err)
	}
	switch {
	case len(res) == 1 && res[0] == "ok":
		return nil
	case len(res) == 2 && res[0] == "conflict":
		return fmt.Errorf("swap live %s from %q to %q: %w: live is %q", ns, old, next, ErrConflict, res[1])
	case len(res) == 1 && res[0] == "missing":
		return fmt.Errorf("swap live %s to %s: version %s: %w", ns, next, next, ErrNotFound)
	case len(res) == 2 && res[0] == "state":
		return fmt.Errorf("swap live %s to %s: version is %s, only a complete version can be made live", ns, next, res[1])
	default:
		return fmt.Errorf("swap live %s to %s: unexpected script reply %q", ns, next, res)
	}
}

// redisLeaseValue is the stored lease: who holds it, and the token of this acquisition.
// Its expiry is the key's PX.
type redisLeaseValue struct {
	Holder string `json:"holder"`
	Token  string `json:"token"`
}

func (v redisLeaseValue) encode() string {
	data, _ := json.Marshal(v) // two strings: cannot fail
	return string(data)
}

// redisAcquireScript: SET NX PX, or who holds the lease and for how long.
//
//	KEYS: lease   ARGV: value, ttl in ms   returns {1} or {0, value, pttl}
var redisAcquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
`)

// redisRenewScript and redisReleaseScript act only while the lease is still the caller's.
//
//	KEYS: lease   ARGV: value[, ttl in ms]   returns 1 or 0
var (
	redisRenewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)
	redisReleaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)
)

// AcquireLease implements Store.
func (r *Redis) AcquireLease(ctx context.Context, ns, holder string, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(ns, holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	token, err := randomToken()
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	val := redisLeaseValue{Holder: holder, Token: token}
	start := time.Now()
	res, err := redisAcquireScript.Run(ctx, r.client, []string{redisLeaseKey(ns)}, val.encode(), ttl.Milliseconds()).Slice()
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s in redis %s: %w", ns, r.addr, err)
	}
	if len(res) == 1 {
		// Expiry measured from before the request: the client never believes in a lease
		// longer than the server keeps it.
		return Lease{Namespace: ns, Holder: holder, Token: token, Expires: start.Add(ttl).UTC()}, nil
	}
	held := &LeaseHeldError{Namespace: ns}
	if len(res) == 3 {
		if s, ok := res[1].(string); ok {
			var cur redisLeaseValue
			if json.Unmarshal([]byte(s), &cur) == nil {
				held.Holder = cur.Holder
			}
		}
		if ms, ok := res[2].(int64); ok && ms > 0 {
			held.Expires = time.Now().Add(time.Duration(ms) * time.Millisecond).UTC()
		}
	}
	return Lease{}, held
}

// RenewLease implements Store.
func (r *Redis) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(l.Namespace, l.Holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	start := time.Now()
	val := redisLeaseValue{Holder: l.Holder, Token: l.Token}
	ok, err := redisRenewScript.Run(ctx, r.client, []string{redisLeaseKey(l.Namespace)}, val.encode(), ttl.Milliseconds()).Int()
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease %s in redis %s: %w", l.Namespace, r.addr, err)
	}
	if ok != 1 {
		return Lease{}, fmt.Errorf("renew lease %s of %s: %w", l.Namespace, l.Holder, ErrLeaseLost)
	}
	l.Expires = start.Add(ttl).UTC()
	return l, nil
}

// ReleaseLease implements Store.
func (r *Redis) ReleaseLease(ctx context.Context, l Lease) error {
	if err := ValidateNamespace(l.Namespace); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	val := redisLeaseValue{Holder: l.Holder, Token: l.Token}
	if err := redisReleaseScript.Run(ctx, r.client, []string{redisLeaseKey(l.Namespace)}, val.encode()).Err(); err != nil {
		return fmt.Errorf("release lease %s in redis %s: %w", l.Namespace, r.addr, err)
	}
	return nil
}

// CommitShard implements Store: one field of the version's shards hash per shard, so
// commits of different IDs never overwrite each other.
func (r *Redis) CommitShard(ctx context.Context, ns, version string, s Shard) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("commit shard: %w", err)
	}
	if err := checkShardID(s.ID); err != nil {
		return fmt.Errorf("commit shard %s/%s: %w", ns, version, err)
	}
	if err := r.checkOpen(); err != nil {
		return fmt.Errorf("commit shard %s/%s: %w", ns, version, err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("commit shard %s/%s %q: %w", ns, version, s.ID, err)
	}
	if err := r.client.HSet(ctx, redisShardsKey(ns, version), s.ID, data).Err(); err != nil {
		return fmt.Errorf("commit shard %s/%s %q in redis %s: %w", ns, version, s.ID, r.addr, err)
	}
	return nil
}

// Shards implements Store.
func (r *Redis) Shards(ctx context.Context, ns, version string) ([]Shard, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	if err := r.checkOpen(); err != nil {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, err)
	}
	all, err := r.client.HGetAll(ctx, redisShardsKey(ns, version)).Result()
	if err != nil {
		return nil, fmt.Errorf("shards %s/%s in redis %s: %w", ns, version, r.addr, err)
	}
	var out []Shard
	for id, data := range all {
		var s Shard
		if err := json.Unmarshal([]byte(data), &s); err != nil {
			return nil, fmt.Errorf("shards %s/%s: decode %q: %w", ns, version, id, err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close implements Store; calling it again is a no-op.
func (r *Redis) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("close redis store %s: %w", r.addr, err)
	}
	return nil
}

func (r *Redis) checkOpen() error {
	if r.closed.Load() {
		return errClosed
	}
	return nil
}

// takeWriteOptions sets r's write settings from the URL's pipeline, max_in_flight and
// retry_for parameters, and its tls_ca, and returns the URL without them, for go-redis.
func (r *Redis) takeWriteOptions(rawURL string) (string, error) {
	base, query, ok := strings.Cut(rawURL, "?")
	if !ok {
		return rawURL, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", err
	}
	for name, set := range map[string]func(string) error{
		"pipeline":      func(v string) (err error) { r.PipelineSize, err = positive(v); return },
		"max_in_flight": func(v string) (err error) { r.MaxInFlight, err = positive(v); return },
		"retry_for": func(v string) (err error) {
			r.RetryFor, err = time.ParseDuration(v)
			return
		},
		"tls_ca": func(v string) error { r.tlsCA = v; return nil },
	} {
		if !q.Has(name) {
			continue
		}
		v := q.Get(name)
		if v == "" {
			return "", fmt.Errorf("%s: empty value", name)
		}
		if err := set(v); err != nil {
			return "", fmt.Errorf("%s=%q: %w", name, v, err)
		}
		q.Del(name)
	}
	if len(q) == 0 {
		return base, nil
	}
	return base + "?" + q.Encode(), nil
}

// loadCAs reads the PEM certificates in path into a pool.
func loadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

func positive(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err == nil && n < 1 {
		err = errors.New("must be at least 1")
	}
	return n, err
}
