package writers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Key layout of the Pebble store. Every key starts with a one-byte tag and a NUL:
//
//	d\x00<ns>\x00<version>\x00<key>  -> value        rows of a version
//	m\x00<ns>\x00<version>           -> manifest JSON  the catalog
//	p\x00<ns>                        -> version id     the live pointer
//	l\x00<ns>                        -> lease JSON     the writer lease (pebbleLease)
//	s\x00<ns>\x00<version>\x00<id>   -> Shard JSON     committed shards of a version
//
// Namespaces and version ids cannot contain NUL (ValidateNamespace, ValidateVersion), so
// the NUL after each of them ends it unambiguously: the data prefix of namespace "a" is
// "d\x00a\x00", which is not a prefix of "d\x00ab\x00…", and version "v1" ends in
// "v1\x00", which is not a prefix of "v10\x00". Keys come last and are the only free-form
// part, so a key may contain anything, NUL included, without reaching into a neighbouring
// namespace or version. All of a version's rows lie in one contiguous range, which is
// what makes CountKeys a bounded scan and DeleteVersion a single range tombstone.
const (
	tagData     = 'd'
	tagManifest = 'm'
	tagPointer  = 'p'
	tagLease    = 'l'
	tagShard    = 's'
)

// Pebble tuning for bulk loads. A run writes millions of rows in large batches and then
// never touches them again, so the cost that matters is write amplification during the
// load. Pebble's default 4 MiB memtable flushes tiny L0 files that are compacted again and
// again; a 16 MiB memtable turns the same load into a quarter as many flushes and larger,
// already-sorted L0 files. Memory stays bounded: a memtable starts small and grows to
// pebbleMemTableSize, and writes stall (rather than memory growing) once
// pebbleMemTableStopWrites memtables are queued for flushing, so the store never holds
// more than 4 x 16 MiB of memtables plus the 32 MiB block cache, whatever the data size.
// 64 MiB memtables were no faster (make bench: 1.05M vs 1.09M rows/s at 1M rows) but let
// a 4M-row run peak at 1.31x the RSS of a 1M-row one, against 1.13x with 16 MiB.
//
// A load's keys come in no order, so every flushed L0 file spans the whole version, and
// Pebble's default of compacting L0 once it is 4 files deep rewrites the same rows into
// Lbase again and again while the load goes on. Instead, L0 may grow to
// pebbleL0CompactionThreshold files before a compaction starts (writes stall at
// pebbleL0StopWrites, which bounds both the files a compaction merges and its memory),
// and when a version is complete PutManifest compacts its range down to the bottom level
// (compactWritten): one pass from L0 into L6 in a store of this size, a pass per level
// when the store is large enough to have Lbase above L6; it needs temporary disk of about
// the version's size. The run pays for its own compaction, the complete version is one
// sorted run, and the next run inherits no compaction debt. make
// bench (2M rows): the pipeline ran at 1.14M rows/s leaving ~20 L0 files behind,
// against 0.83-0.89M rows/s including the final compaction (0.65-0.9 s); the default
// thresholds plus the final compaction gave 0.61M.
const (
	pebbleMemTableSize          = 16 << 20
	pebbleMemTableStopWrites    = 4
	pebbleCacheSize             = 32 << 20
	pebbleL0CompactionThreshold = 16
	pebbleL0StopWrites          = 40
)

// errClosed is returned by every method of a closed Pebble store.
var errClosed = errors.New("writers: store closed")

// Pebble is the embedded store: one Pebble database in a local directory, the
// zero-setup default (pebble:DIR). Its key layout is described above (tagData and
// friends). Pebble admits one process per directory (it takes a
// lock file), so the in-process mutex below is enough to make SwapLive a true
// compare-and-swap.
//
// Durability: rows are committed with pebble.NoSync, and every catalog change (manifest,
// live pointer, retirement) with pebble.Sync. Pebble's write-ahead log is sequential, so
// syncing a catalog record also makes every row batch committed before it durable: a
// manifest that says complete, once PutManifest returns, describes rows that survive a
// crash. Rows written after the last synced record may be lost in a crash, but they
// belong to a version still in state writing, which a resumed run rewrites.
type Pebble struct {
	db  *pebble.DB
	dir string

	// catalog orders row writes against catalog changes. WriteRows holds it shared while
	// it checks the version's state and commits its batch; PutManifest, SwapLive,
	// DeleteVersion and Close hold it exclusively. So a version cannot be retired,
	// completed or made live half-way through a WriteRows, and a row batch can never
	// land in a version that is no longer writing. Reads hold open instead.
	catalog sync.RWMutex
	closed  atomic.Bool

	// writing spares WriteRows a manifest read (a Pebble Get and a JSON decode) per
	// batch. It is exact here: only this process can change a manifest (Pebble's lock
	// file), and PutManifest and DeleteVersion forget a version under catalog's write lock.
	writing writingCache

	// open is held shared by each method that uses db without holding catalog (reads,
	// lease changes, the final compaction) and exclusively by Close, so the database is
	// never closed under them: Pebble panics on a closed DB. Close takes it before catalog.
	open sync.RWMutex

	// lease serialises the lease's read-compare-write (see AcquireLease).
	lease sync.Mutex
	// now is the lease clock; tests may replace it before first use.
	now func() time.Time
}

var _ Store = (*Pebble)(nil)

// OpenPebble opens (creating it if needed) the Pebble store in dir.
func OpenPebble(dir string) (*Pebble, error) {
	if dir == "" {
		return nil, fmt.Errorf("open pebble store: empty directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
	}
	fixCMalloc()
	opts := &pebble.Options{
		MemTableSize:                pebbleMemTableSize,
		MemTableStopWritesThreshold: pebbleMemTableStopWrites,
		CacheSize:                   pebbleCacheSize,
		L0CompactionThreshold:       pebbleL0CompactionThreshold,
		L0StopWritesThreshold:       pebbleL0StopWrites,
		Logger:                      quietLogger{},
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble store %s (is another staticref process using it?): %w", dir, err)
	}
	return &Pebble{db: db, dir: dir, now: time.Now}, nil
}

// Dir is the directory the store lives in.
func (p *Pebble) Dir() string { return p.dir }

// WriteRows implements Store. All rows go into one Pebble batch, committed without sync.
func (p *Pebble) WriteRows(ctx context.Context, ns, version string, rows Rows) error {
	if err := validateRows(ns, version, rows); err != nil {
		return err
	}
	size := 0
	for i, k := range rows.Keys {
		size += len(k) + len(rows.Values[i])
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}

	p.catalog.RLock()
	defer p.catalog.RUnlock()
	if p.closed.Load() {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, errClosed)
	}
	if err := p.writing.check(ctx, ns, version, func(context.Context) (*Manifest, error) { return p.manifest(ns, version) }); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}

	prefix := dataPrefix(ns, version)
	b := p.db.NewBatchWithSize(size + len(rows.Keys)*(len(prefix)+8))
	defer b.Close()
	buf := make([]byte, 0, len(prefix)+MaxKeyLen)
	for i, k := range rows.Keys {
		buf = append(append(buf[:0], prefix...), k...)
		// Batch.Set copies key and value into the batch.
		if err := b.Set(buf, rows.Values[i], nil); err != nil {
			return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("write rows %s/%s: commit: %w", ns, version, err)
	}
	return nil
}

// Get implements Store. The returned slice is the caller's.
func (p *Pebble) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, errClosed)
	}
	v, err := p.get(append(dataPrefix(ns, version), key...))
	if err != nil {
		return nil, fmt.Errorf("get %s/%s key %q: %w", ns, version, key, err)
	}
	return v, nil
}

// CountKeys implements Store by iterating over the version's key range.
func (p *Pebble) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	if err := validateNV(ns, version); err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, errClosed)
	}
	lower := dataPrefix(ns, version)
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		n++
		if n%(1<<16) == 0 {
			if err := ctx.Err(); err != nil {
				it.Close()
				return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
			}
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	return n, nil
}

// PutManifest implements Store; the manifest is written with sync. A manifest that
// completes a version still writing first compacts the version's rows (compactWritten).
func (p *Pebble) PutManifest(ctx context.Context, m *Manifest) error {
	data, err := manifestJSON(m)
	if err != nil {
		return err
	}
	if m.State == StateComplete {
		if err := p.compactWritten(ctx, m.Namespace, m.Version); err != nil {
			return fmt.Errorf("put manifest %s/%s: compact the version's rows: %w", m.Namespace, m.Version, err)
		}
	}
	p.catalog.Lock()
	defer p.catalog.Unlock()
	if p.closed.Load() {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, errClosed)
	}
	p.writing.forget(m.Namespace, m.Version)
	if err := p.db.Set(manifestKey(m.Namespace, m.Version), data, pebble.Sync); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	return nil
}

// compactWritten compacts the rows of ns/version, if it is still writing, down to the
// bottom level of the LSM (see pebbleL0CompactionThreshold). It holds open, not
// the catalog: other jobs sharing the store (schedule) keep writing and flipping
// meanwhile, and only Close waits for it.
func (p *Pebble) compactWritten(ctx context.Context, ns, version string) error {
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return errClosed
	}
	m, err := p.manifest(ns, version)
	if errors.Is(err, ErrNotFound) || (err == nil && m.State != StateWriting) {
		return nil
	}
	if err != nil {
		return err
	}
	lo := dataPrefix(ns, version)
	return p.db.Compact(ctx, lo, prefixEnd(lo), true)
}

// Manifest implements Store.
func (p *Pebble) Manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, errClosed)
	}
	m, err := p.manifest(ns, version)
	if err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	return m, nil
}

// Manifests implements Store.
func (p *Pebble) Manifests(ctx context.Context, ns string) ([]*Manifest, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return nil, fmt.Errorf("manifests %s: %w", ns, errClosed)
	}
	lower := append(tagPrefix(tagManifest, ns), 0)
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	var ms []*Manifest
	for ok := it.First(); ok; ok = it.Next() {
		m := new(Manifest)
		if err := json.Unmarshal(it.Value(), m); err != nil {
			it.Close()
			return nil, fmt.Errorf("manifests %s: decode %q: %w", ns, it.Key()[len(lower):], err)
		}
		ms = append(ms, m)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	SortManifests(ms)
	return ms, nil
}

// DeleteVersion implements Store: range tombstones over the version's rows and shard
// records and the manifest marked retired, in one synced batch.
func (p *Pebble) DeleteVersion(ctx context.Context, ns, version string) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("delete version: %w", err)
	}
	p.catalog.Lock()
	defer p.catalog.Unlock()
	if p.closed.Load() {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, errClosed)
	}
	live, err := p.live(ns)
	if err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	if live == version {
		return fmt.Errorf("delete version %s/%s: %w: it is the live version", ns, version, ErrConflict)
	}
	m, err := p.manifest(ns, version)
	if err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	m.State = StateRetired
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	p.writing.forget(ns, version)
	b := p.db.NewBatch()
	defer b.Close()
	for _, lower := range [][]byte{dataPrefix(ns, version), shardPrefix(ns, version)} {
		if err := b.DeleteRange(lower, prefixEnd(lower), nil); err != nil {
			return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
		}
	}
	if err := b.Set(manifestKey(ns, version), data, nil); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	return nil
}

// Live implements Store.
func (p *Pebble) Live(ctx context.Context, ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("live: %w", err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return "", fmt.Errorf("live %s: %w", ns, errClosed)
	}
	v, err := p.live(ns)
	if err != nil {
		return "", fmt.Errorf("live %s: %w", ns, err)
	}
	return v, nil
}

// SwapLive implements Store. The exclusive catalog lock makes read-compare-write atomic
// within the process, and Pebble's directory lock keeps other processes out.
func (p *Pebble) SwapLive(ctx context.Context, ns, old, next string) error {
	if err := validateSwap(ns, old, next); err != nil {
		return err
	}
	p.catalog.Lock()
	defer p.catalog.Unlock()
	if p.closed.Load() {
		return fmt.Errorf("swap live %s: %w", ns, errClosed)
	}
	m, err := p.manifest(ns, next)
	if err != nil {
		return fmt.Errorf("swap live %s to %s: %w", ns, next, err)
	}
	if m.State != StateComplete {
		return fmt.Errorf("swap live %s to %s: version is %s, only a complete version can be made live", ns, next, m.State)
	}
	cur, err := p.live(ns)
	if err != nil {
		return fmt.Errorf("swap live %s: %w", ns, err)
	}
	if cur != old {
		return fmt.Errorf("swap live %s from %q to %q: %w: live is %q", ns, old, next, ErrConflict, cur)
	}
	if err := p.db.Set(pointerKey(ns), []byte(next), pebble.Sync); err != nil {
		return fmt.Errorf("swap live %s to %s: %w", ns, next, err)
	}
	return nil
}

// Close implements Store. It waits for writes and catalog changes in flight; calling it
// again is a no-op.
func (p *Pebble) Close() error {
	p.open.Lock()
	defer p.open.Unlock()
	p.catalog.Lock()
	defer p.catalog.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	if err := p.db.Close(); err != nil {
		return fmt.Errorf("close pebble store %s: %w", p.dir, err)
	}
	return nil
}

// manifest reads a manifest; the caller has validated ns and version.
func (p *Pebble) manifest(ns, version string) (*Manifest, error) {
	data, err := p.get(manifestKey(ns, version))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("version %s: %w", version, ErrNotFound)
		}
		return nil, err
	}
	m := new(Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return m, nil
}

// live reads the live pointer, "" when there is none.
func (p *Pebble) live(ns string) (string, error) {
	v, err := p.get(pointerKey(ns))
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return string(v), err
}

// get copies the value of key out of Pebble, mapping pebble.ErrNotFound to ErrNotFound.
func (p *Pebble) get(key []byte) ([]byte, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, closer.Close()
}

func validateNV(ns, version string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateVersion(version)
}

// tagPrefix is "<tag>\x00<ns>".
func tagPrefix(tag byte, ns string) []byte {
	b := make([]byte, 0, 2+len(ns)+1+64+1+32)
	b = append(b, tag, 0)
	return append(b, ns...)
}

// dataPrefix is "d\x00<ns>\x00<version>\x00", the prefix of every row of a version.
func dataPrefix(ns, version string) []byte {
	b := append(tagPrefix(tagData, ns), 0)
	b = append(b, version...)
	return append(b, 0)
}

func manifestKey(ns, version string) []byte {
	b := append(tagPrefix(tagManifest, ns), 0)
	return append(b, version...)
}

func pointerKey(ns string) []byte { return tagPrefix(tagPointer, ns) }

func leaseKey(ns string) []byte { return tagPrefix(tagLease, ns) }

// shardPrefix is "s\x00<ns>\x00<version>\x00", the prefix of a version's shard records.
func shardPrefix(ns, version string) []byte {
	b := append(tagPrefix(tagShard, ns), 0)
	b = append(b, version...)
	return append(b, 0)
}

// prefixEnd is the smallest key greater than every key that starts with prefix. Every
// prefix here ends in NUL, so incrementing the last byte never carries.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	end[len(end)-1]++
	return end
}

// quietLogger drops Pebble's informational messages (it logs every flush and compaction
// decision it finds noteworthy) and keeps errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pebble.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}

// The writer lease. One record per namespace, l\x00<ns> -> {holder, token, expires}.
// AcquireLease, RenewLease and ReleaseLease each read the record, compare, and write it
// under p.lease, so within this process they are atomic; Pebble's directory lock keeps
// every other process out of the store, so that is all the mutual exclusion needed.
// Expiry is judged by p.now when the record is read: an expired record is as good as
// absent, so it is taken over by the next AcquireLease and can no longer be renewed by
// its old holder, even when nobody has taken it over yet (the same rule as Redis, where
// the key itself expires). Records are written with sync, so a lease survives a crash
// until it expires.

// pebbleLease is the stored lease record.
type pebbleLease struct {
	Holder  string    `json:"holder"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// AcquireLease implements Store.
func (p *Pebble) AcquireLease(ctx context.Context, ns, holder string, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(ns, holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	token, err := randomToken()
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	p.lease.Lock()
	defer p.lease.Unlock()
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, errClosed)
	}
	now := p.now()
	cur, err := p.readLease(ns)
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	if cur != nil && cur.Expires.After(now) {
		return Lease{}, &LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
	}
	l := Lease{Namespace: ns, Holder: holder, Token: token, Expires: now.Add(ttl).UTC()}
	if err := p.writeLease(l); err != nil {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
	}
	return l, nil
}

// RenewLease implements Store.
func (p *Pebble) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(l.Namespace, l.Holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	p.lease.Lock()
	defer p.lease.Unlock()
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, errClosed)
	}
	now := p.now()
	cur, err := p.readLease(l.Namespace)
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	if cur == nil || cur.Token != l.Token || !cur.Expires.After(now) {
		return Lease{}, fmt.Errorf("renew lease %s of %s: %w", l.Namespace, l.Holder, ErrLeaseLost)
	}
	l.Expires = now.Add(ttl).UTC()
	if err := p.writeLease(l); err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	return l, nil
}

// ReleaseLease implements Store. It deletes the record only while it is still l's.
func (p *Pebble) ReleaseLease(ctx context.Context, l Lease) error {
	if err := ValidateNamespace(l.Namespace); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	p.lease.Lock()
	defer p.lease.Unlock()
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return fmt.Errorf("release lease %s: %w", l.Namespace, errClosed)
	}
	cur, err := p.readLease(l.Namespace)
	if err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	if cur == nil || cur.Token != l.Token {
		return nil
	}
	if err := p.db.Delete(leaseKey(l.Namespace), pebble.Sync); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	return nil
}

// readLease returns the stored lease record of ns, nil when there is none.
func (p *Pebble) readLease(ns string) (*pebbleLease, error) {
	data, err := p.get(leaseKey(ns))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cur := new(pebbleLease)
	if err := json.Unmarshal(data, cur); err != nil {
		return nil, fmt.Errorf("decode lease: %w", err)
	}
	return cur, nil
}

func (p *Pebble) writeLease(l Lease) error {
	data, err := json.Marshal(pebbleLease{Holder: l.Holder, Token: l.Token, Expires: l.Expires})
	if err != nil {
		return err
	}
	return p.db.Set(leaseKey(l.Namespace), data, pebble.Sync)
}

// CommitShard implements Store: one record per shard, s\x00<ns>\x00<version>\x00<id>,
// so commits of different IDs never touch the same key. It is written with sync: a
// resumed run skips the shard, so its record must not outlive the rows it vouches for,
// and syncing the log makes every row batch committed before it durable too.
func (p *Pebble) CommitShard(ctx context.Context, ns, version string, s Shard) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("commit shard: %w", err)
	}
	if err := checkShardID(s.ID); err != nil {
		return fmt.Errorf("commit shard %s/%s: %w", ns, version, err)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("commit shard %s/%s %q: %w", ns, version, s.ID, err)
	}
	// Shared, like WriteRows: a shard record cannot slip in after DeleteVersion dropped them.
	p.catalog.RLock()
	defer p.catalog.RUnlock()
	if p.closed.Load() {
		return fmt.Errorf("commit shard %s/%s: %w", ns, version, errClosed)
	}
	if err := p.db.Set(append(shardPrefix(ns, version), s.ID...), data, pebble.Sync); err != nil {
		return fmt.Errorf("commit shard %s/%s %q: %w", ns, version, s.ID, err)
	}
	return nil
}

// Shards implements Store. Records are read in key order, which is ID order.
func (p *Pebble) Shards(ctx context.Context, ns, version string) ([]Shard, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	p.open.RLock()
	defer p.open.RUnlock()
	if p.closed.Load() {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, errClosed)
	}
	lower := shardPrefix(ns, version)
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, err)
	}
	var out []Shard
	for ok := it.First(); ok; ok = it.Next() {
		var s Shard
		if err := json.Unmarshal(it.Value(), &s); err != nil {
			it.Close()
			return nil, fmt.Errorf("shards %s/%s: decode %q: %w", ns, version, it.Key()[len(lower):], err)
		}
		out = append(out, s)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, err)
	}
	return out, nil
}

// Checks shared by every store's lease and shard methods.

// checkLeaseArgs checks the arguments of AcquireLease and RenewLease.
func checkLeaseArgs(ns, holder string, ttl time.Duration) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if holder == "" {
		return fmt.Errorf("%w: empty lease holder", ErrInvalid)
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: lease ttl %s (at least 1ms)", ErrInvalid, ttl)
	}
	return nil
}

// checkShardID checks a shard ID: like a key, non-empty valid UTF-8 of at most
// MaxKeyLen bytes.
func checkShardID(id string) error {
	if err := ValidateKey([]byte(id)); err != nil {
		return fmt.Errorf("shard id: %w", err)
	}
	return nil
}

// randomToken returns 128 random bits, hex-encoded: unique per acquisition.
func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
