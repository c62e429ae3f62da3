// Package redis is the staticref store driver for Redis and Redis Cluster: it registers
// the redis://, rediss:// and redis+cluster:// schemes with writers.Open, and implements
// writers.Driver beneath the *writers.Store wrapper, which validates arguments, tracks the
// store's lifecycle and prefixes errors before and after every call here. Callers use
// *writers.Store; the Driver type is exported only for tests and tools that tune or
// inspect a Redis store. It must never repeat what the wrapper does, and never import
// pipeline, lookup, scheduler or cmd.
package redis

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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/internal/driverkit"
)

func init() {
	writers.Register(openDriver, "redis", "rediss", "redis+cluster")
}

// FlipChannel is the Pub/Sub channel on which SwapLive announces every flip, as JSON
// {"namespace":…,"version":…,"previous":…} (previous is "" for a first flip). Lookup
// services watch it (Driver.WatchFlips, through writers.Store.WatchFlips) to drop their
// cached live pointer at once instead of waiting for their next poll. SwapRelease
// announces a changed release record there too, as {"namespace":…,"release":true}.
// Delivery is at most once: a subscriber that was disconnected must re-read the pointer
// (and the release) when it reconnects.
const FlipChannel = "sr:flips"

// Defaults of the Driver's tuning fields.
const (
	// DefaultPipelineSize is the number of SETs sent in one pipeline. Measured with
	// BenchmarkRedisPipelineSize (8192-row batches of 40-byte values, MaxInFlight 4,
	// standalone redis-server 7.0 on loopback, 2 cores shared with the client and a load
	// average of 5, so +-20% noise; medians of three 1s runs, rows/s): 256 -> 293k,
	// 1024 -> 316k, 2048 -> 240k, 4096 -> 283k. Past a few hundred commands a round trip
	// no longer limits throughput, and bigger pipelines only hold more memory, fill
	// fewer of the MaxInFlight slots of an 8192-row batch, and resend more after a
	// transient error; 1024 was best or tied in every run.
	DefaultPipelineSize = 1024
	// DefaultMaxInFlight is the number of pipelines one WriteRows keeps in flight.
	DefaultMaxInFlight = 4
	// DefaultRetryFor is how long WriteRows keeps retrying a pipeline that failed with a
	// transient error before it gives up.
	DefaultRetryFor = 30 * time.Second
)

// scanCount is the COUNT hint of the SCANs that count and delete a version's keys.
const scanCount = 1000

// Driver is the store for Redis and Redis Cluster (redis://, rediss://, redis+cluster://).
// One code path serves both, over goredis.UniversalClient; only the operations that must
// visit every key of a version (CountKeys, DeleteVersion) go to each master in turn, and
// WriteRows and GetMany batch differently (a cluster refuses multi-key commands across
// slots).
//
// Key layout. Each namespace NS has a handful of catalog keys, all carrying the hash
// tag {sr:NS} so that Redis Cluster puts them in one slot and a Lua script may read and
// write them together atomically:
//
//	{sr:NS}:live                 string  the live version id (absent: none)
//	{sr:NS}:manifests            hash    version -> manifest JSON
//	{sr:NS}:lease                string  {"holder","token"} JSON, with PX expiry
//	{sr:NS}:shards:VERSION       hash    commit id -> Commit JSON
//	{sr:NS}:release              string  the release record (writers.Release JSON)
//	{sr:NS}:rc:RELEASE:INTERVAL  hash    counter name -> count (expires, CountsTTL)
//	{sr:NS}:rs:RELEASE:NAME      hash    replica -> that replica's sketch called NAME
//
// Rows carry no hash tag, so the rows of one version spread over every master of a
// cluster. A version's manifest says how they are laid out (layout.go has the essay):
// new versions put them into hashes, an HSET field per row; versions written before
// layouts existed have a string per row:
//
//	sr:NS:VERSION#N              hash    hash-buckets: FIELD -> value for the keys of bucket N
//	sr:NS:VERSION:KEY            string  plain: the encoded value
//
// Namespaces and version ids cannot contain ':' or '#' (ValidateNamespace,
// ValidateVersion) or any glob character, so "sr:NS:VERSION:" is a prefix of exactly one
// plain version's rows, "sr:NS:VERSION:*" is a safe SCAN MATCH pattern, and no bucket is
// a plain row; data keys begin with "sr:", never with "{sr:", so no row can be mistaken
// for a catalog key. A plain KEY that contains a {…} hash tag of its own just lands in
// that tag's slot. No command touches keys of two slots.
//
// The flip. SwapLive is one Lua script over {sr:NS}:live and {sr:NS}:manifests: it
// compares the pointer with the expected version, checks that the next version's
// manifest says complete, sets the pointer and publishes on FlipChannel. A script runs
// without interleaving, so two flips can never both win, and a version can never be made
// live while DeleteVersion retires it (that is a script on the same keys too).
//
// Writes. WriteRows splits a batch into pipelines of about PipelineSize rows (one HSET
// per bucket with all of the batch's rows of that bucket; plain: an MSET, or SETs on a
// cluster), keeps at most MaxInFlight of them in flight, and resends a pipeline that
// failed with a transient error (a network error, LOADING, TRYAGAIN, CLUSTERDOWN,
// MASTERDOWN, READONLY) with exponential back-off for up to RetryFor; HSET and SET are
// idempotent, so a resend is safe, and so is a resumed run that rewrites rows. Rows
// are not written atomically with the manifest check (in a cluster they cannot be: they
// live on every master), so WriteRows reads the manifest first and refuses a version not
// in state writing. It remembers a positive answer for driverkit.WritingTTL (one second)
// per version, which spares a large manifest read per batch; PutManifest and
// DeleteVersion in this process forget it at once, so only another process's change can
// take up to a second to be seen. That is harmless under the contract: a version is
// written by the one run that holds its namespace's lease, and gc removes a writing
// version only once it is older than its grace period.
//
// Reads. The driver learns a version's layout from its manifest at the first read and
// keeps it (layoutOf; a layout never changes). Get is one HGET (plain: GET). GetMany
// sends what queueReads queues, in one pipeline: one HMGET per bucket any of the keys
// falls in (plain: one MGET per getManyChunk keys on a standalone server; a GET per key
// on a cluster, which cannot MGET keys of two slots). go-redis splits a cluster's
// pipeline by master and sends to every master at once: one round trip per master that
// holds any of the keys, each in parallel.
//
// Releases (writers.Releaser). The record is one JSON string, {sr:NS}:release, and its
// revision is the record's own "revision" field, so there is nothing to keep in step with
// it. SwapRelease is one Lua script: it decodes the stored record with cjson, compares
// its revision with the caller's old one (0 for no record), sets the new record and
// publishes {"namespace":NS,"release":true} on FlipChannel, so that WatchFlips wakes a
// lookup replica to re-read the release as it does for a flip. (A record changes a few
// times per judgement interval, so decoding it in the script costs the server little.)
// Counters are one hash per (release, interval), raised with HINCRBY in a MULTI together
// with an EXPIRE of CountsTTL, so an interval's counts go away once nobody has added to
// them for that long. Sketches are one hash per (release, name) with a field per
// replica; nothing expires or deletes them (a release has a few). Release ids cannot
// contain ':' (ValidateVersion), so "rc:RELEASE:" and "rs:RELEASE:" never mix two
// releases. All of these keys carry the namespace's hash tag: one slot, like the rest of
// the catalog.
//
// The lease is {sr:NS}:lease, set with SET NX PX; renew and release are Lua scripts that
// compare the stored holder and token first. Expiry is Redis's own, so a lease that
// expired is gone: its old holder cannot renew it even if nobody took it over.
//
// The tuning fields may be changed only before the store is first used.
type Driver struct {
	// PipelineSize is the number of SETs per pipeline (DefaultPipelineSize).
	PipelineSize int
	// MaxInFlight is the number of pipelines one WriteRows call keeps in flight
	// (DefaultMaxInFlight).
	MaxInFlight int
	// RetryFor bounds the retries of a pipeline that failed transiently (DefaultRetryFor).
	RetryFor time.Duration

	client  goredis.UniversalClient
	cluster *goredis.ClusterClient // nil for a standalone server
	addr    string                 // for error messages: host:port[,host:port…]

	writing driverkit.WritingCache
	layouts layouts // of the versions read or written (layout.go)

	tlsCA string // the URL's tls_ca: a PEM file of CAs a rediss:// server is checked against
}

var (
	_ writers.Driver        = (*Driver)(nil)
	_ writers.FlipWatcher   = (*Driver)(nil)
	_ writers.Describer     = (*Driver)(nil)
	_ writers.ManyGetter    = (*Driver)(nil)
	_ writers.Releaser      = (*Driver)(nil)
	_ writers.LayoutChooser = (*Driver)(nil)
)

// Open connects to the Redis server or cluster a redis://, rediss:// or redis+cluster://
// URL names, pings it, and returns the store over it; writers.Open does the same for
// any registered scheme. Query parameters are go-redis options (goredis.ParseURL), e.g.
// ?dial_timeout=3s&pool_size=20, and staticref's own write settings: pipeline=N
// (commands per pipeline), max_in_flight=N (pipelines at once) and retry_for=DURATION
// (how long a failed pipeline is retried). A rediss:// server's certificate is checked
// against the system's CAs, or against those in the PEM file that tls_ca=PATH names (a
// private CA). The *Driver beneath is s.Driver().(*redis.Driver).
func Open(ctx context.Context, rawURL string) (*writers.Store, error) {
	u, err := writers.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	d, err := dial(ctx, u)
	if err != nil {
		return nil, err
	}
	return writers.NewStore(d, u), nil
}

// openDriver is the writers.OpenFunc of the redis schemes. A Redis server has no
// "store that was never written" to refuse, so opts.MustExist changes nothing.
func openDriver(ctx context.Context, u writers.URL, _ writers.OpenOptions) (writers.Driver, error) {
	d, err := dial(ctx, u)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// dial builds the client a parsed URL names and pings the server.
func dial(ctx context.Context, u writers.URL) (*Driver, error) {
	routeGoRedisLogs.Do(func() { goredis.SetLogger(goRedisLogger{}) })
	d := &Driver{
		PipelineSize: DefaultPipelineSize,
		MaxInFlight:  DefaultMaxInFlight,
		RetryFor:     DefaultRetryFor,
	}
	goRedisURL, err := d.takeWriteOptions(u.Raw)
	if err != nil {
		return nil, fmt.Errorf("open redis store %s: %w", u, err)
	}
	switch u.Scheme {
	case "redis", "rediss":
		opt, err := goredis.ParseURL(goRedisURL)
		if err != nil {
			return nil, fmt.Errorf("open redis store %s: %w", u, withoutURL(err))
		}
		if d.tlsCA != "" {
			if opt.TLSConfig == nil {
				return nil, fmt.Errorf("open redis store %s: tls_ca=%q: only a rediss:// URL uses TLS", u, d.tlsCA)
			}
			if opt.TLSConfig.RootCAs, err = loadCAs(d.tlsCA); err != nil {
				return nil, fmt.Errorf("open redis store %s: tls_ca: %w", u, err)
			}
		}
		opt.ContextTimeoutEnabled = true // a caller's deadline bounds reads, not only the 5s ReadTimeout
		d.client, d.addr = goredis.NewClient(opt), opt.Addr
	case "redis+cluster":
		if d.tlsCA != "" {
			return nil, fmt.Errorf("open redis store %s: tls_ca: TLS is supported on a rediss:// server, not on redis+cluster://", u)
		}
		opt, err := goredis.ParseClusterURL(clusterURL(goRedisURL))
		if err != nil {
			return nil, fmt.Errorf("open redis store %s: %w", u, withoutURL(err))
		}
		opt.ContextTimeoutEnabled = true
		d.cluster = goredis.NewClusterClient(opt)
		d.client, d.addr = d.cluster, strings.Join(opt.Addrs, ",")
	default:
		return nil, fmt.Errorf("open redis store: %q is not a redis URL", u)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := d.ping(pctx); err != nil {
		d.client.Close()
		if isAuthError(err) {
			return nil, fmt.Errorf("open redis store: redis at %s refused the credentials (check the user and password in the URL): %w", d.addr, err)
		}
		return nil, fmt.Errorf("open redis store: cannot reach redis at %s (is it running, and is the URL right?): %w", d.addr, err)
	}
	return d, nil
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
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "NOPERM")
}

// ping checks the server, or every master of a cluster (which also loads the slot map).
func (d *Driver) ping(ctx context.Context) error {
	if err := d.client.Ping(ctx).Err(); err != nil {
		return err
	}
	if d.cluster != nil {
		return d.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	return nil
}

// clusterURL turns redis+cluster://[user:pass@]h1:p1,h2:p2[/…][?q] into the form
// goredis.ParseClusterURL reads: redis://[user:pass@]h1:p1?addr=h2:p2[&q].
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
func (d *Driver) Addr() string { return d.addr }

// Describe implements writers.Describer: "redis ADDR".
func (d *Driver) Describe() string { return "redis " + d.addr }

// Client is the underlying go-redis client (a *goredis.Client or *goredis.ClusterClient),
// for tests and tools.
func (d *Driver) Client() goredis.UniversalClient { return d.client }

// Key names; see the type comment.
func tag(ns string) string                 { return "{sr:" + ns + "}" }
func liveKey(ns string) string             { return tag(ns) + ":live" }
func manifestsKey(ns string) string        { return tag(ns) + ":manifests" }
func leaseKey(ns string) string            { return tag(ns) + ":lease" }
func layoutsKey(ns string) string          { return tag(ns) + ":layouts" }
func commitsKey(ns, version string) string { return tag(ns) + ":shards:" + version }
func dataPrefix(ns, version string) string {
	return "sr:" + ns + ":" + version + ":"
}
func releaseKey(ns string) string { return tag(ns) + ":release" }
func countsKey(ns, release string, interval int64) string {
	return tag(ns) + ":rc:" + release + ":" + strconv.FormatInt(interval, 10)
}
func sketchesKey(ns, release, name string) string { return tag(ns) + ":rs:" + release + ":" + name }

// fail names the server in an error of the client.
func (d *Driver) fail(err error) error { return fmt.Errorf("redis %s: %w", d.addr, err) }

// WriteRows implements writers.Driver.
func (d *Driver) WriteRows(ctx context.Context, ns, version string, rows writers.Rows) error {
	if err := d.checkWriting(ctx, ns, version); err != nil {
		return err
	}
	if len(rows.Keys) == 0 {
		return nil
	}

	l, err := d.layoutOf(ctx, ns, version)
	if err != nil {
		return err
	}

	size := max(d.PipelineSize, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(d.MaxInFlight, 1))
	if l.buckets > 0 {
		// Pipelines of about size rows each, cut at bucket boundaries.
		cmds := bucketWrites(l, bucketPrefix(ns, version), rows)
		for lo := 0; lo < len(cmds); {
			hi, n := lo, 0
			for ; hi < len(cmds) && (hi == lo || n < size); hi++ {
				n += len(cmds[hi].args) / 2
			}
			part := cmds[lo:hi]
			g.Go(func() error { return d.writeBuckets(gctx, part) })
			lo = hi
		}
		if err := g.Wait(); err != nil {
			return d.fail(err)
		}
		return nil
	}
	prefix := dataPrefix(ns, version)
	for lo := 0; lo < len(rows.Keys); lo += size {
		hi := min(lo+size, len(rows.Keys))
		g.Go(func() error {
			if d.cluster == nil {
				// One MSET a chunk on a single server: a third of the client's allocations
				// and far fewer commands for the server to dispatch than a pipeline of SETs.
				args := make([]any, 0, 2*(hi-lo))
				for i := lo; i < hi; i++ {
					args = append(args, prefix+string(rows.Keys[i]), rows.Values[i])
				}
				return d.retry(gctx, func(ctx context.Context) error {
					return d.client.MSet(ctx, args...).Err()
				})
			}
			// A cluster spreads a version's keys over every slot: SETs in a pipeline, which
			// go-redis splits by node (an MSET across slots would fail).
			return d.retry(gctx, func(ctx context.Context) error {
				pipe := d.client.Pipeline()
				for i := lo; i < hi; i++ {
					pipe.Set(ctx, prefix+string(rows.Keys[i]), rows.Values[i], 0)
				}
				_, err := pipe.Exec(ctx)
				return err
			})
		})
	}
	if err := g.Wait(); err != nil {
		return d.fail(err)
	}
	return nil
}

// checkWriting refuses a version whose manifest is missing or not in state writing.
func (d *Driver) checkWriting(ctx context.Context, ns, version string) error {
	return d.writing.Check(ctx, ns, version, func(ctx context.Context) (m *writers.Manifest, err error) {
		err = d.retry(ctx, func(ctx context.Context) error {
			m, err = d.manifest(ctx, ns, version)
			return err
		})
		return m, err
	})
}

// retry runs op until it succeeds, fails with an error that is not transient, ctx ends,
// or d.RetryFor has passed; back-off doubles from 20ms to 1s between attempts. Each
// attempt also carries go-redis's own few retries (MaxRetries, 3 by default), so one
// attempt against a server that is down takes a couple of seconds by itself.
func (d *Driver) retry(ctx context.Context, op func(ctx context.Context) error) error {
	start := time.Now()
	deadline := start.Add(d.RetryFor)
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
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, goredis.ErrClosed) {
		return false
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, goredis.ErrPoolTimeout):
		return true
	}
	return goredis.IsLoadingError(err) || goredis.IsTryAgainError(err) || goredis.IsClusterDownError(err) ||
		goredis.IsMasterDownError(err) || goredis.IsReadOnlyError(err)
}

// Get implements writers.Driver.
func (d *Driver) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	l, err := d.layoutOf(ctx, ns, version)
	if errors.Is(err, writers.ErrNotFound) {
		return nil, writers.ErrNotFound // no version, so no key in it
	}
	if err != nil {
		return nil, err
	}
	var v []byte
	if l.buckets > 0 {
		v, err = d.client.HGet(ctx, bucketKey(bucketPrefix(ns, version), l.bucket(key)), string(l.field(key))).Bytes()
	} else {
		v, err = d.client.Get(ctx, dataPrefix(ns, version)+string(key)).Bytes()
	}
	if errors.Is(err, goredis.Nil) {
		return nil, writers.ErrNotFound
	}
	if err != nil {
		return nil, d.fail(err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// getManyChunk is the most keys one MGET of GetMany asks for: a bigger batch is several
// MGETs in one pipeline, so that the server can serve other clients between them.
const getManyChunk = 1000

// GetMany implements writers.ManyGetter: the reads queueReads queues, in one pipeline.
func (d *Driver) GetMany(ctx context.Context, ns, version string, keys [][]byte) ([][]byte, error) {
	l, err := d.layoutOf(ctx, ns, version)
	if errors.Is(err, writers.ErrNotFound) {
		return make([][]byte, len(keys)), nil // no version, so none of its keys
	}
	if err != nil {
		return nil, err
	}
	pipe := d.client.Pipeline()
	decode := queueReads(ctx, pipe, d.cluster != nil, l, ns, version, keys)
	_, _ = pipe.Exec(ctx) // each command's error is decode's to report
	out, err := decode()
	if err != nil {
		return nil, d.fail(err)
	}
	return out, nil
}

// GetChain implements writers.ChainGetter: every level's reads (queueReads, each in its
// own layout) in one pipeline, so a chain costs one round trip like a single version
// (one per master on a cluster), then the first level that holds each key answers it.
func (d *Driver) GetChain(ctx context.Context, ns string, chain []string, keys [][]byte) ([][]byte, []int, error) {
	pipe := d.client.Pipeline()
	decodes := make([]func() ([][]byte, error), len(chain))
	for i, v := range chain {
		l, err := d.layoutOf(ctx, ns, v)
		if errors.Is(err, writers.ErrNotFound) {
			decodes[i] = func() ([][]byte, error) { return make([][]byte, len(keys)), nil }
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		decodes[i] = queueReads(ctx, pipe, d.cluster != nil, l, ns, v, keys)
	}
	_, _ = pipe.Exec(ctx) // each command's error is its decoder's to report
	values, from := make([][]byte, len(keys)), make([]int, len(keys))
	for i := range from {
		from[i] = -1
	}
	for level, decode := range decodes {
		got, err := decode()
		if err != nil {
			return nil, nil, d.fail(err)
		}
		for i, v := range got {
			if from[i] < 0 && v != nil {
				values[i], from[i] = v, level
			}
		}
	}
	return values, from, nil
}

// scanBucketsPerPipeline is how many buckets one pipeline of ScanRows reads: about 8,000
// rows at the ~80 a bucket ChooseLayout aims for.
const scanBucketsPerPipeline = 100

// ScanRows implements writers.Scanner. A bucketed version is read bucket by bucket
// (HGETALL, a pipeline of scanBucketsPerPipeline at a time: every bucket is known from
// the layout); a plain one by SCAN pages of its pattern on every master (scanVersion),
// each read with one pipeline of GETs on the master that holds it. A key that vanished
// between its SCAN and its GET (only a version being deleted loses keys) is left out.
func (d *Driver) ScanRows(ctx context.Context, ns, version string, fn func(writers.Rows) error) error {
	l, err := d.layoutOf(ctx, ns, version)
	switch {
	case errors.Is(err, writers.ErrNotFound):
		return nil // no version, no rows (as CountKeys)
	case err != nil:
		return err
	case l.buckets > 0:
		return d.scanBuckets(ctx, l, ns, version, fn)
	}
	prefix := dataPrefix(ns, version)
	var mu sync.Mutex // a cluster's masters are scanned concurrently; fn is called by one at a time
	err = d.scanVersion(ctx, ns, version, func(ctx context.Context, c *goredis.Client, names []string) error {
		pipe := c.Pipeline()
		cmds := make([]*goredis.StringCmd, len(names))
		for i, n := range names {
			cmds[i] = pipe.Get(ctx, n)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
		var rows writers.Rows
		for i, cmd := range cmds {
			v, err := cmd.Bytes()
			switch {
			case errors.Is(err, goredis.Nil):
				continue
			case err != nil:
				return err
			}
			rows.Keys = append(rows.Keys, []byte(strings.TrimPrefix(names[i], prefix)))
			rows.Values = append(rows.Values, v)
		}
		mu.Lock()
		defer mu.Unlock()
		return fn(rows)
	})
	if err != nil {
		return d.fail(err)
	}
	return nil
}

// scanBuckets passes the rows of a bucketed version to fn, one batch per pipeline of
// buckets.
func (d *Driver) scanBuckets(ctx context.Context, l layout, ns, version string, fn func(writers.Rows) error) error {
	prefix := bucketPrefix(ns, version)
	for lo := uint64(0); lo < l.buckets; lo += scanBucketsPerPipeline {
		hi := min(lo+scanBucketsPerPipeline, l.buckets)
		pipe := d.client.Pipeline()
		cmds := make([]*goredis.MapStringStringCmd, 0, hi-lo)
		for b := lo; b < hi; b++ {
			cmds = append(cmds, pipe.HGetAll(ctx, bucketKey(prefix, b)))
		}
		_, _ = pipe.Exec(ctx) // each command's error is read below
		var rows writers.Rows
		for _, cmd := range cmds {
			fields, err := cmd.Result()
			if err != nil {
				return d.fail(err)
			}
			for f, v := range fields {
				rows.Keys = append(rows.Keys, l.key(f))
				rows.Values = append(rows.Values, []byte(v))
			}
		}
		if len(rows.Keys) == 0 {
			continue
		}
		if err := fn(rows); err != nil {
			return err
		}
	}
	return nil
}

// CountKeys implements writers.Driver: the sum of the buckets' HLENs, exact; for a
// plain version, SCANs of the version's pattern on every master.
func (d *Driver) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	l, err := d.layoutOf(ctx, ns, version)
	switch {
	case errors.Is(err, writers.ErrNotFound):
		return 0, nil // no version: no rows (a plain version's rows need a manifest too)
	case err != nil:
		return 0, err
	case l.buckets > 0:
		n, err := d.countBuckets(ctx, l, ns, version)
		if err != nil {
			return 0, d.fail(err)
		}
		return n, nil
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
				return 0, d.fail(ctx.Err())
			}
		}
		var n atomic.Int64
		err := d.scanVersion(ctx, ns, version, func(ctx context.Context, c *goredis.Client, keys []string) error {
			n.Add(int64(len(keys)))
			return nil
		})
		if err != nil {
			return 0, d.fail(err)
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
func (d *Driver) scanVersion(ctx context.Context, ns, version string, fn func(ctx context.Context, c *goredis.Client, keys []string) error) error {
	pattern := dataPrefix(ns, version) + "*"
	scan := func(ctx context.Context, c *goredis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, scanCount).Result()
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
	if d.cluster != nil {
		return d.cluster.ForEachMaster(ctx, scan)
	}
	return scan(ctx, d.client.(*goredis.Client))
}

// PutManifest implements writers.Driver.
func (d *Driver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	d.writing.Forget(m.Namespace, m.Version)
	d.layouts.forget(m.Namespace, m.Version)
	if err := d.client.HSet(ctx, manifestsKey(m.Namespace), m.Version, data).Err(); err != nil {
		return d.fail(err)
	}
	return nil
}

// Manifest implements writers.Driver.
func (d *Driver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	return d.manifest(ctx, ns, version)
}

// manifest reads and decodes a manifest.
func (d *Driver) manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	data, err := d.client.HGet(ctx, manifestsKey(ns), version).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("version %s: %w", version, writers.ErrNotFound)
	}
	if err != nil {
		return nil, d.fail(err)
	}
	m := new(writers.Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	// A version's layout never changes once chosen, and a manifest that names one names
	// the recorded one (Store.PutManifest copies it), so a read of such a manifest (a
	// reader's, at each flip) also fills the layout cache, and the first lookup of a
	// version costs no read of its own. A manifest without one proves nothing (it may be
	// old, or rewritten by an old binary): layoutOf asks the record.
	if m.Layout != nil {
		if l, err := decodeLayout(m.Layout); err == nil {
			d.layouts.put(ns, version, l)
		}
	}
	return m, nil
}

// Manifests implements writers.Driver.
func (d *Driver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	all, err := d.client.HGetAll(ctx, manifestsKey(ns)).Result()
	if err != nil {
		return nil, d.fail(err)
	}
	ms := make([]*writers.Manifest, 0, len(all))
	for version, data := range all {
		m := new(writers.Manifest)
		if err := json.Unmarshal([]byte(data), m); err != nil {
			return nil, fmt.Errorf("decode manifest %q: %w", version, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// retireScript marks a version retired and drops its commit records, unless it is live
// or its manifest changed since the caller read it (then the caller reads again).
//
//	KEYS: live, manifests, commits hash   ARGV: version, manifest as read, retired manifest
//	returns "ok", "live", "missing" or "changed"
var retireScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return 'live' end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return 'missing' end
if cur ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[3])
return 'ok'
`)

// DeleteVersion implements writers.Driver. It first retires the manifest (and drops the
// commit records) in a script that refuses the live version, and only then deletes the
// rows, with SCAN and UNLINK on every master. In that order, once the rows start to go
// the version can no longer be made live: SwapLive wants a complete manifest. If
// deleting the rows fails half-way the version is already retired; calling DeleteVersion
// again (it accepts a retired version) deletes what is left.
func (d *Driver) DeleteVersion(ctx context.Context, ns, version string) error {
	d.writing.Forget(ns, version)
	d.layouts.forget(ns, version)
	keys := []string{liveKey(ns), manifestsKey(ns), commitsKey(ns, version)}
	var l layout
	for attempt := 0; ; attempt++ {
		old, err := d.client.HGet(ctx, manifestsKey(ns), version).Result()
		if errors.Is(err, goredis.Nil) {
			return fmt.Errorf("version %s: %w", version, writers.ErrNotFound)
		}
		if err != nil {
			return d.fail(err)
		}
		m := new(writers.Manifest)
		if err := json.Unmarshal([]byte(old), m); err != nil {
			return fmt.Errorf("decode manifest: %w", err)
		}
		wl := m.Layout
		if stored, ok, err := d.storedLayout(ctx, ns, version); err != nil {
			return d.fail(err)
		} else if ok {
			wl = stored
		}
		if l, err = decodeLayout(wl); err != nil {
			return err
		}
		m.State = writers.StateRetired
		retired, err := json.Marshal(m)
		if err != nil {
			return err
		}
		res, err := retireScript.Run(ctx, d.client, keys, version, old, retired).Text()
		if err != nil {
			return d.fail(err)
		}
		switch res {
		case "ok":
		case "live":
			return fmt.Errorf("%w: it is the live version", writers.ErrConflict)
		case "missing":
			return fmt.Errorf("version %s: %w", version, writers.ErrNotFound)
		case "changed":
			if attempt < 10 {
				continue
			}
			return errors.New("manifest keeps changing concurrently")
		default:
			return fmt.Errorf("unexpected script reply %q", res)
		}
		break
	}
	var err error
	if l.buckets > 0 {
		err = d.deleteBuckets(ctx, l, ns, version)
	} else {
		err = d.unlinkPlain(ctx, ns, version)
	}
	if err != nil {
		return fmt.Errorf("version retired, but deleting its rows from redis %s failed (run gc or delete it again): %w", d.addr, err)
	}
	// The layout's record goes last: a gc that failed above needs it to delete again.
	if err := d.client.HDel(ctx, layoutsKey(ns), version).Err(); err != nil {
		return d.fail(err)
	}
	return nil
}

// unlinkPlain deletes the rows of a plain version: SCAN and UNLINK on every master.
func (d *Driver) unlinkPlain(ctx context.Context, ns, version string) error {
	return d.scanVersion(ctx, ns, version, func(ctx context.Context, c *goredis.Client, keys []string) error {
		// One UNLINK per key: a multi-key UNLINK fails with CROSSSLOT in a cluster even
		// when every key lives on the same master.
		pipe := c.Pipeline()
		for _, k := range keys {
			pipe.Unlink(ctx, k)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
}

// Live implements writers.Driver.
func (d *Driver) Live(ctx context.Context, ns string) (string, error) {
	v, err := d.client.Get(ctx, liveKey(ns)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", d.fail(err)
	}
	return v, nil
}

// swapScript is the flip: compare the pointer, check the next manifest, set the
// pointer, announce it. See Driver.
//
//	KEYS: live, manifests   ARGV: old ("" = none), next, flip channel, flip message
//	returns {"ok"}, {"conflict", live}, {"missing"} or {"state", state}
var swapScript = goredis.NewScript(`
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

// flipMessage is the message published on FlipChannel.
type flipMessage struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	Previous  string `json:"previous"`
}

// SwapLive implements writers.Driver with swapScript.
func (d *Driver) SwapLive(ctx context.Context, ns, old, next string) error {
	msg, err := json.Marshal(flipMessage{Namespace: ns, Version: next, Previous: old})
	if err != nil {
		return err
	}
	res, err := swapScript.Run(ctx, d.client, []string{liveKey(ns), manifestsKey(ns)},
		old, next, FlipChannel, msg).StringSlice()
	if err != nil {
		return d.fail(err)
	}
	switch {
	case len(res) == 1 && res[0] == "ok":
		return nil
	case len(res) == 2 && res[0] == "conflict":
		return fmt.Errorf("from %q: %w: live is %q", old, writers.ErrConflict, res[1])
	case len(res) == 1 && res[0] == "missing":
		return fmt.Errorf("version %s: %w", next, writers.ErrNotFound)
	case len(res) == 2 && res[0] == "state":
		return fmt.Errorf("version is %s: %w", res[1], writers.ErrNotComplete)
	default:
		return fmt.Errorf("unexpected script reply %q", res)
	}
}

// WatchFlips implements writers.FlipWatcher: it subscribes to FlipChannel and calls fn
// with the namespace of every flip (and every release swap: a flipMessage decodes a
// releaseMessage's namespace) announced there, of every namespace, until ctx is
// done or the store is closed. go-redis resubscribes by itself after a lost connection;
// what was announced meanwhile is lost, which is why a watcher must also poll. fn runs
// on the watching goroutine and should return quickly: messages wait while it runs.
func (d *Driver) WatchFlips(ctx context.Context, fn func(ns string)) {
	sub := d.client.Subscribe(ctx, FlipChannel)
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return // the client was closed
			}
			var f flipMessage
			if err := json.Unmarshal([]byte(msg.Payload), &f); err != nil || f.Namespace == "" {
				continue // not a flip message of ours
			}
			fn(f.Namespace)
		}
	}
}

// CountsTTL is how long the counters of one (release, interval) are kept after the last
// add to them. An interval is judged soon after it ends; a few days leave room for a
// judge that was down over a long weekend, and let the counters of finished releases and
// long-judged intervals go away by themselves.
const CountsTTL = 4 * 24 * time.Hour

// swapReleaseScript is SwapRelease: compare the stored record's revision, set the new
// record, announce it.
//
//	KEYS: release   ARGV: old revision, new record, flip channel, message
//	returns {"ok"}, {"conflict", stored revision} or {"corrupt"}
var swapReleaseScript = goredis.NewScript(`
local rev = 0
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or type(rec['revision']) ~= 'number' then return {'corrupt'} end
  rev = rec['revision']
end
if rev ~= tonumber(ARGV[1]) then return {'conflict', tostring(rev)} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return {'ok'}
`)

// releaseMessage is what SwapRelease publishes on FlipChannel; WatchFlips hands its
// namespace to fn as it does a flip's.
type releaseMessage struct {
	Namespace string `json:"namespace"`
	Release   bool   `json:"release"`
}

// Release implements writers.Releaser.
func (d *Driver) Release(ctx context.Context, ns string) ([]byte, error) {
	data, err := d.client.Get(ctx, releaseKey(ns)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, d.fail(err)
	}
	return data, nil
}

// SwapRelease implements writers.Releaser with swapReleaseScript.
func (d *Driver) SwapRelease(ctx context.Context, ns string, old int64, data []byte) error {
	msg, err := json.Marshal(releaseMessage{Namespace: ns, Release: true})
	if err != nil {
		return err
	}
	res, err := swapReleaseScript.Run(ctx, d.client, []string{releaseKey(ns)}, old, data, FlipChannel, msg).StringSlice()
	if err != nil {
		return d.fail(err)
	}
	switch {
	case len(res) == 1 && res[0] == "ok":
		return nil
	case len(res) == 2 && res[0] == "conflict":
		return fmt.Errorf("from revision %d: %w: the stored revision is %s", old, writers.ErrConflict, res[1])
	case len(res) == 1 && res[0] == "corrupt":
		return fmt.Errorf("redis %s: %s holds no release record with a numeric revision (not written by staticref?): delete it to start over", d.addr, releaseKey(ns))
	default:
		return fmt.Errorf("unexpected script reply %q", res)
	}
}

// AddCounts implements writers.Releaser: one HINCRBY per counter and the key's EXPIRE,
// in one MULTI.
func (d *Driver) AddCounts(ctx context.Context, ns, release string, interval int64, counts map[string]int64) error {
	key := countsKey(ns, release, interval)
	_, err := d.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		for name, n := range counts {
			p.HIncrBy(ctx, key, name, n)
		}
		p.Expire(ctx, key, CountsTTL)
		return nil
	})
	if err != nil {
		return d.fail(err)
	}
	return nil
}

// Counts implements writers.Releaser.
func (d *Driver) Counts(ctx context.Context, ns, release string, interval int64) (map[string]int64, error) {
	all, err := d.client.HGetAll(ctx, countsKey(ns, release, interval)).Result()
	if err != nil {
		return nil, d.fail(err)
	}
	out := make(map[string]int64, len(all))
	for name, v := range all {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("counter %q: %w", name, err)
		}
		out[name] = n
	}
	return out, nil
}

// PutSketch implements writers.Releaser.
func (d *Driver) PutSketch(ctx context.Context, ns, release, name, replica string, data []byte) error {
	if err := d.client.HSet(ctx, sketchesKey(ns, release, name), replica, data).Err(); err != nil {
		return d.fail(err)
	}
	return nil
}

// Sketches implements writers.Releaser.
func (d *Driver) Sketches(ctx context.Context, ns, release, name string) ([][]byte, error) {
	vals, err := d.client.HVals(ctx, sketchesKey(ns, release, name)).Result()
	if err != nil {
		return nil, d.fail(err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// leaseValue is the stored lease: who holds it, and the token of this acquisition. Its
// expiry is the key's PX.
type leaseValue struct {
	Holder string `json:"holder"`
	Token  string `json:"token"`
}

func (v leaseValue) encode() string {
	data, _ := json.Marshal(v) // two strings: cannot fail
	return string(data)
}

// acquireScript: SET NX PX, or who holds the lease and for how long.
//
//	KEYS: lease   ARGV: value, ttl in ms   returns {1} or {0, value, pttl}
var acquireScript = goredis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
`)

// renewScript and releaseScript act only while the lease is still the caller's.
//
//	KEYS: lease   ARGV: value[, ttl in ms]   returns 1 or 0
var (
	renewScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)
	releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)
)

// AcquireLease implements writers.Driver.
func (d *Driver) AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (writers.Lease, error) {
	val := leaseValue{Holder: holder, Token: token}
	start := time.Now()
	res, err := acquireScript.Run(ctx, d.client, []string{leaseKey(ns)}, val.encode(), ttl.Milliseconds()).Slice()
	if err != nil {
		return writers.Lease{}, d.fail(err)
	}
	if len(res) == 1 {
		// Expiry measured from before the request: the client never believes in a lease
		// longer than the server keeps it.
		return writers.Lease{Namespace: ns, Holder: holder, Token: token, Expires: start.Add(ttl).UTC()}, nil
	}
	held := &writers.LeaseHeldError{Namespace: ns}
	if len(res) == 3 {
		if s, ok := res[1].(string); ok {
			var cur leaseValue
			if json.Unmarshal([]byte(s), &cur) == nil {
				held.Holder = cur.Holder
			}
		}
		if ms, ok := res[2].(int64); ok && ms > 0 {
			held.Expires = time.Now().Add(time.Duration(ms) * time.Millisecond).UTC()
		}
	}
	return writers.Lease{}, held
}

// RenewLease implements writers.Driver.
func (d *Driver) RenewLease(ctx context.Context, l writers.Lease, ttl time.Duration) (writers.Lease, error) {
	start := time.Now()
	val := leaseValue{Holder: l.Holder, Token: l.Token}
	ok, err := renewScript.Run(ctx, d.client, []string{leaseKey(l.Namespace)}, val.encode(), ttl.Milliseconds()).Int()
	if err != nil {
		return writers.Lease{}, d.fail(err)
	}
	if ok != 1 {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	l.Expires = start.Add(ttl).UTC()
	return l, nil
}

// ReleaseLease implements writers.Driver.
func (d *Driver) ReleaseLease(ctx context.Context, l writers.Lease) error {
	val := leaseValue{Holder: l.Holder, Token: l.Token}
	if err := releaseScript.Run(ctx, d.client, []string{leaseKey(l.Namespace)}, val.encode()).Err(); err != nil {
		return d.fail(err)
	}
	return nil
}

// CommitWork implements writers.Driver: one field of the version's commits hash per
// commit, so records of different IDs never overwrite each other.
func (d *Driver) CommitWork(ctx context.Context, ns, version string, c writers.Commit, data []byte) error {
	if err := d.client.HSet(ctx, commitsKey(ns, version), c.ID, data).Err(); err != nil {
		return d.fail(err)
	}
	return nil
}

// Commits implements writers.Driver.
func (d *Driver) Commits(ctx context.Context, ns, version string) ([]writers.Commit, error) {
	all, err := d.client.HGetAll(ctx, commitsKey(ns, version)).Result()
	if err != nil {
		return nil, d.fail(err)
	}
	var out []writers.Commit
	for id, data := range all {
		var c writers.Commit
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return nil, fmt.Errorf("decode commit %q: %w", id, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Close implements writers.Driver; the wrapper calls it once.
func (d *Driver) Close() error { return d.client.Close() }

// takeWriteOptions sets d's write settings from the URL's pipeline, max_in_flight and
// retry_for parameters, and its tls_ca, and returns the URL without them, for go-redis.
func (d *Driver) takeWriteOptions(rawURL string) (string, error) {
	base, query, ok := strings.Cut(rawURL, "?")
	if !ok {
		return rawURL, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", err
	}
	for name, set := range map[string]func(string) error{
		"pipeline":      func(v string) (err error) { d.PipelineSize, err = positive(v); return },
		"max_in_flight": func(v string) (err error) { d.MaxInFlight, err = positive(v); return },
		"retry_for": func(v string) (err error) {
			d.RetryFor, err = time.ParseDuration(v)
			return
		},
		"tls_ca": func(v string) error { d.tlsCA = v; return nil },
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
