// Package pebble is the embedded store driver: one Pebble database in a local directory,
// the zero-setup default, opened for pebble:DIR and pebble:///abs/dir URLs. Import it (or
// writers/all) for writers.Open to know the scheme; Open opens a directory directly.
package pebble

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/internal/driverkit"
)

func init() { writers.Register(openURL, "pebble") }

// Key layout of the Pebble store. Every key starts with a one-byte tag and a NUL:
//
//	d\x00<ns>\x00<version>\x00<key>  -> value        rows of a version
//	m\x00<ns>\x00<version>           -> manifest JSON  the catalog
//	p\x00<ns>                        -> version id     the live pointer
//	l\x00<ns>                        -> lease JSON     the writer lease (leaseRecord)
//	s\x00<ns>\x00<version>\x00<id>   -> Commit JSON    committed work of a version
//
// Namespaces and version ids cannot contain NUL (ValidateNamespace, ValidateVersion), so
// the NUL after each of them ends it unambiguously: the data prefix of namespace "a" is
// "d\x00a\x00", which is not a prefix of "d\x00ab\x00…", and version "v1" ends in
// "v1\x00", which is not a prefix of "v10\x00". Keys come last and are the only free-form
// part, so a key may contain anything, NUL included, without reaching into a neighbouring
// namespace or version. All of a version's rows lie in one contiguous range, which is
// what makes CountKeys a bounded scan and DeleteVersion a single range tombstone. The
// live pointer and lease keys end in the namespace itself, not in a NUL, so they are
// only ever read and written whole, never used as a range prefix ("p\x00a" is a prefix
// of "p\x00ab").
const (
	tagData     = 'd'
	tagManifest = 'm'
	tagPointer  = 'p'
	tagLease    = 'l'
	tagCommit   = 's' // "s" for shard, as stored manifests still call commits
)

// Pebble tuning for bulk loads. A run writes millions of rows in large batches and then
// never touches them again, so the cost that matters is write amplification during the
// load. Pebble's default 4 MiB memtable flushes tiny L0 files that are compacted again and
// again; a 16 MiB memtable turns the same load into a quarter as many flushes and larger,
// already-sorted L0 files. Memory stays bounded: a memtable starts small and grows to
// memTableSize, and writes stall (rather than memory growing) once
// memTableStopWrites memtables are queued for flushing, so the store never holds
// more than 4 x 16 MiB of memtables plus the 32 MiB block cache, whatever the data size.
// 64 MiB memtables were no faster (make bench: 1.05M vs 1.09M rows/s at 1M rows) but let
// a 4M-row run peak at 1.31x the RSS of a 1M-row one, against 1.13x with 16 MiB.
//
// A load's keys come in no order, so every flushed L0 file spans the whole version, and
// Pebble's default of compacting L0 once it is 4 files deep rewrites the same rows into
// Lbase again and again while the load goes on. Instead, L0 may grow to
// l0CompactionThreshold files before a compaction starts (writes stall at
// l0StopWrites, which bounds both the files a compaction merges and its memory),
// and when a version is complete PutManifest compacts its range down to the bottom level
// (compactWritten): one pass from L0 into L6 in a store of this size, a pass per level
// when the store is large enough to have Lbase above L6; it needs temporary disk of about
// the version's size. The run pays for its own compaction, the complete version is one
// sorted run, and the next run inherits no compaction debt. make
// bench (2M rows): the pipeline ran at 1.14M rows/s leaving ~20 L0 files behind,
// against 0.83-0.89M rows/s including the final compaction (0.65-0.9 s); the default
// thresholds plus the final compaction gave 0.61M.
const (
	memTableSize          = 16 << 20
	memTableStopWrites    = 4
	cacheSize             = 32 << 20
	l0CompactionThreshold = 16
	l0StopWrites          = 40
)

// Driver is the Pebble driver beneath a *writers.Store: one Pebble database in a local
// directory. Its key layout is described above (tagData and friends). Pebble admits one
// process per directory (it takes a lock file), so the in-process mutexes below are
// enough to make SwapLive a true compare-and-swap. Reach it, for Dir and the test hooks,
// with s.Driver().(*pebble.Driver).
//
// Durability: rows are committed with pebble.NoSync, and every catalog change (manifest,
// live pointer, retirement) with pebble.Sync. Pebble's write-ahead log is sequential, so
// syncing a catalog record also makes every row batch committed before it durable: a
// manifest that says complete, once PutManifest returns, describes rows that survive a
// crash. Rows written after the last synced record may be lost in a crash, but they
// belong to a version still in state writing, which a resumed run rewrites.
//
// The wrapper calls Close only after every other call has returned, which is what keeps
// Pebble (it panics on a closed DB) from being closed under a read, a lease change or the
// final compaction; the driver itself needs no open/closed state.
type Driver struct {
	db  *pdb.DB
	dir string

	// catalog orders row writes against catalog changes. WriteRows and CommitWork hold it
	// shared while they check the version's state and commit their batch; PutManifest,
	// SwapLive and DeleteVersion hold it exclusively. So a version cannot be retired,
	// completed or made live half-way through a WriteRows, and a row batch can never
	// land in a version that is no longer writing. Reads take no lock.
	catalog sync.RWMutex

	// writing spares WriteRows a manifest read (a Pebble Get and a JSON decode) per
	// batch. It is exact here: only this process can change a manifest (Pebble's lock
	// file), and PutManifest and DeleteVersion forget a version under catalog's write lock.
	writing driverkit.WritingCache

	// lease serialises the lease's read-compare-write (see AcquireLease).
	lease sync.Mutex
	// now is the lease clock; tests may replace it before first use.
	now func() time.Time
}

var (
	_ writers.Driver    = (*Driver)(nil)
	_ writers.Describer = (*Driver)(nil)
)

// Open opens (creating it if needed) the Pebble store in dir.
func Open(dir string) (*writers.Store, error) {
	d, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	return writers.NewStore(d, writers.URL{Raw: "pebble:" + dir, Scheme: "pebble", Dir: filepath.Clean(dir)}), nil
}

// openURL is the writers.OpenFunc of the pebble scheme. With opts.MustExist it refuses a
// directory that does not exist or holds no Pebble database, rather than creating a store
// in whatever directory a typo named.
func openURL(ctx context.Context, u writers.URL, opts writers.OpenOptions) (writers.Driver, error) {
	if opts.MustExist {
		desc, err := pdb.Peek(u.Dir, vfs.Default)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("open store: store directory %s does not exist (check the path, or run a job into it first): %w", u.Dir, err)
		case err != nil:
			return nil, fmt.Errorf("open store %s: %w", u.Dir, err)
		case !desc.Exists:
			return nil, fmt.Errorf("open store: %s is not a store: it holds no Pebble database (check the path, or run a job into it first): %w", u.Dir, fs.ErrNotExist)
		}
	}
	d, err := openDir(u.Dir)
	if err != nil {
		return nil, err // not a non-nil Driver holding a nil *Driver
	}
	return d, nil
}

func openDir(dir string) (*Driver, error) {
	if dir == "" {
		return nil, fmt.Errorf("open pebble store: empty directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
	}
	fixCMalloc()
	opts := &pdb.Options{
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: memTableStopWrites,
		CacheSize:                   cacheSize,
		L0CompactionThreshold:       l0CompactionThreshold,
		L0StopWritesThreshold:       l0StopWrites,
		Logger:                      quietLogger{},
	}
	db, err := pdb.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble store %s (is another staticref process using it?): %w", dir, err)
	}
	return &Driver{db: db, dir: dir, now: time.Now}, nil
}

// Dir is the directory the store lives in.
func (d *Driver) Dir() string { return d.dir }

// Describe implements writers.Describer: the store's directory.
func (d *Driver) Describe() string { return d.dir }

// WriteRows implements writers.Driver. All rows go into one Pebble batch, committed
// without sync.
func (d *Driver) WriteRows(ctx context.Context, ns, version string, rows writers.Rows) error {
	size := 0
	for i, k := range rows.Keys {
		size += len(k) + len(rows.Values[i])
	}

	d.catalog.RLock()
	defer d.catalog.RUnlock()
	if err := d.writing.Check(ctx, ns, version, func(context.Context) (*writers.Manifest, error) { return d.manifest(ns, version) }); err != nil {
		return err
	}

	prefix := dataPrefix(ns, version)
	b := d.db.NewBatchWithSize(size + len(rows.Keys)*(len(prefix)+8))
	defer b.Close()
	buf := make([]byte, 0, len(prefix)+writers.MaxKeyLen)
	for i, k := range rows.Keys {
		buf = append(append(buf[:0], prefix...), k...)
		// Batch.Set copies key and value into the batch.
		if err := b.Set(buf, rows.Values[i], nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pdb.NoSync); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Get implements writers.Driver. The returned slice is the caller's.
func (d *Driver) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	return d.get(append(dataPrefix(ns, version), key...))
}

// CountKeys implements writers.Driver by iterating over the version's key range.
func (d *Driver) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	lower := dataPrefix(ns, version)
	it, err := d.db.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, err
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		n++
		if n%(1<<16) == 0 {
			if err := ctx.Err(); err != nil {
				it.Close()
				return 0, err
			}
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, err
	}
	return n, nil
}

// PutManifest implements writers.Driver; the manifest is written with sync. A manifest
// that completes a version still writing first compacts the version's rows
// (compactWritten).
func (d *Driver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	if m.State == writers.StateComplete {
		if err := d.compactWritten(ctx, m.Namespace, m.Version); err != nil {
			return fmt.Errorf("compact the version's rows: %w", err)
		}
	}
	d.catalog.Lock()
	defer d.catalog.Unlock()
	d.writing.Forget(m.Namespace, m.Version)
	return d.db.Set(manifestKey(m.Namespace, m.Version), data, pdb.Sync)
}

// compactWritten compacts the rows of ns/version, if it is still writing, down to the
// bottom level of the LSM (see l0CompactionThreshold). It does not hold the catalog:
// other jobs sharing the store (schedule) keep writing and flipping meanwhile, and only
// Close (through the wrapper) waits for it.
func (d *Driver) compactWritten(ctx context.Context, ns, version string) error {
	m, err := d.manifest(ns, version)
	if errors.Is(err, writers.ErrNotFound) || (err == nil && m.State != writers.StateWriting) {
		return nil
	}
	if err != nil {
		return err
	}
	lo := dataPrefix(ns, version)
	return d.db.Compact(ctx, lo, prefixEnd(lo), true)
}

// Manifest implements writers.Driver.
func (d *Driver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	return d.manifest(ns, version)
}

// Manifests implements writers.Driver.
func (d *Driver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	lower := manifestPrefix(ns)
	it, err := d.db.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, err
	}
	var ms []*writers.Manifest
	for ok := it.First(); ok; ok = it.Next() {
		m := new(writers.Manifest)
		if err := json.Unmarshal(it.Value(), m); err != nil {
			it.Close()
			return nil, fmt.Errorf("decode %q: %w", it.Key()[len(lower):], err)
		}
		ms = append(ms, m)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	return ms, nil
}

// DeleteVersion implements writers.Driver: range tombstones over the version's rows and
// commit records and the manifest marked retired, in one synced batch.
func (d *Driver) DeleteVersion(ctx context.Context, ns, version string) error {
	d.catalog.Lock()
	defer d.catalog.Unlock()
	live, err := d.live(ns)
	if err != nil {
		return err
	}
	if live == version {
		return fmt.Errorf("%w: it is the live version", writers.ErrConflict)
	}
	m, err := d.manifest(ns, version)
	if err != nil {
		return err
	}
	m.State = writers.StateRetired
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	d.writing.Forget(ns, version)
	b := d.db.NewBatch()
	defer b.Close()
	for _, lower := range [][]byte{dataPrefix(ns, version), commitPrefix(ns, version)} {
		if err := b.DeleteRange(lower, prefixEnd(lower), nil); err != nil {
			return err
		}
	}
	if err := b.Set(manifestKey(ns, version), data, nil); err != nil {
		return err
	}
	return b.Commit(pdb.Sync)
}

// Live implements writers.Driver.
func (d *Driver) Live(ctx context.Context, ns string) (string, error) {
	return d.live(ns)
}

// SwapLive implements writers.Driver. The exclusive catalog lock makes read-compare-write
// atomic within the process, and Pebble's directory lock keeps other processes out.
func (d *Driver) SwapLive(ctx context.Context, ns, old, next string) error {
	d.catalog.Lock()
	defer d.catalog.Unlock()
	m, err := d.manifest(ns, next)
	if err != nil {
		return err
	}
	if m.State != writers.StateComplete {
		return fmt.Errorf("version is %s: %w", m.State, writers.ErrNotComplete)
	}
	cur, err := d.live(ns)
	if err != nil {
		return err
	}
	if cur != old {
		return fmt.Errorf("%w: live is %q, expected %q", writers.ErrConflict, cur, old)
	}
	return d.db.Set(pointerKey(ns), []byte(next), pdb.Sync)
}

// Close implements writers.Driver.
func (d *Driver) Close() error { return d.db.Close() }

// manifest reads a manifest.
func (d *Driver) manifest(ns, version string) (*writers.Manifest, error) {
	data, err := d.get(manifestKey(ns, version))
	if err != nil {
		if errors.Is(err, writers.ErrNotFound) {
			return nil, fmt.Errorf("version %s: %w", version, writers.ErrNotFound)
		}
		return nil, err
	}
	m := new(writers.Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	return m, nil
}

// live reads the live pointer, "" when there is none.
func (d *Driver) live(ns string) (string, error) {
	v, err := d.get(pointerKey(ns))
	if errors.Is(err, writers.ErrNotFound) {
		return "", nil
	}
	return string(v), err
}

// get copies the value of key out of Pebble, mapping pebble.ErrNotFound to
// writers.ErrNotFound.
func (d *Driver) get(key []byte) ([]byte, error) {
	v, closer, err := d.db.Get(key)
	if errors.Is(err, pdb.ErrNotFound) {
		return nil, writers.ErrNotFound
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

// manifestPrefix is "m\x00<ns>\x00", the prefix of every manifest of a namespace.
func manifestPrefix(ns string) []byte { return append(tagPrefix(tagManifest, ns), 0) }

func manifestKey(ns, version string) []byte { return append(manifestPrefix(ns), version...) }

// pointerKey is "p\x00<ns>": a point key, not a prefix (see the key layout).
func pointerKey(ns string) []byte { return tagPrefix(tagPointer, ns) }

// leaseKey is "l\x00<ns>": a point key, not a prefix (see the key layout).
func leaseKey(ns string) []byte { return tagPrefix(tagLease, ns) }

// commitPrefix is "s\x00<ns>\x00<version>\x00", the prefix of a version's commit records.
func commitPrefix(ns, version string) []byte {
	b := append(tagPrefix(tagCommit, ns), 0)
	b = append(b, version...)
	return append(b, 0)
}

// prefixEnd is the smallest key greater than every key that starts with prefix. Only
// prefixes that end in NUL (dataPrefix, manifestPrefix, commitPrefix) are ranges here, so
// incrementing the last byte never carries; any other key is refused, since its range
// would take in the keys of namespaces whose names extend it.
func prefixEnd(prefix []byte) []byte {
	if len(prefix) == 0 || prefix[len(prefix)-1] != 0 {
		panic(fmt.Sprintf("pebble: prefixEnd of %q, which does not end in NUL", prefix))
	}
	end := bytes.Clone(prefix)
	end[len(end)-1]++
	return end
}

// quietLogger drops Pebble's informational messages (it logs every flush and compaction
// decision it finds noteworthy) and keeps errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	pdb.DefaultLogger.Errorf(format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	pdb.DefaultLogger.Fatalf(format, args...)
}

// The writer lease. One record per namespace, l\x00<ns> -> {holder, token, expires}.
// AcquireLease, RenewLease and ReleaseLease each read the record, compare, and write it
// under d.lease, so within this process they are atomic; Pebble's directory lock keeps
// every other process out of the store, so that is all the mutual exclusion needed.
// Expiry is judged by d.now when the record is read: an expired record is as good as
// absent, so it is taken over by the next AcquireLease and can no longer be renewed by
// its old holder, even when nobody has taken it over yet (the same rule as Redis, where
// the key itself expires). Records are written with sync, so a lease survives a crash
// until it expires.

// leaseRecord is the stored lease record.
type leaseRecord struct {
	Holder  string    `json:"holder"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// AcquireLease implements writers.Driver.
func (d *Driver) AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (writers.Lease, error) {
	d.lease.Lock()
	defer d.lease.Unlock()
	now := d.now()
	cur, err := d.readLease(ns)
	if err != nil {
		return writers.Lease{}, err
	}
	if cur != nil && cur.Expires.After(now) {
		return writers.Lease{}, &writers.LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
	}
	l := writers.Lease{Namespace: ns, Holder: holder, Token: token, Expires: now.Add(ttl).UTC()}
	if err := d.writeLease(l); err != nil {
		return writers.Lease{}, err
	}
	return l, nil
}

// RenewLease implements writers.Driver.
func (d *Driver) RenewLease(ctx context.Context, l writers.Lease, ttl time.Duration) (writers.Lease, error) {
	d.lease.Lock()
	defer d.lease.Unlock()
	now := d.now()
	cur, err := d.readLease(l.Namespace)
	if err != nil {
		return writers.Lease{}, err
	}
	if cur == nil || cur.Token != l.Token || !cur.Expires.After(now) {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	l.Expires = now.Add(ttl).UTC()
	if err := d.writeLease(l); err != nil {
		return writers.Lease{}, err
	}
	return l, nil
}

// ReleaseLease implements writers.Driver. It deletes the record only while it is still
// l's.
func (d *Driver) ReleaseLease(ctx context.Context, l writers.Lease) error {
	d.lease.Lock()
	defer d.lease.Unlock()
	cur, err := d.readLease(l.Namespace)
	if err != nil {
		return err
	}
	if cur == nil || cur.Token != l.Token {
		return nil
	}
	return d.db.Delete(leaseKey(l.Namespace), pdb.Sync)
}

// readLease returns the stored lease record of ns, nil when there is none.
func (d *Driver) readLease(ns string) (*leaseRecord, error) {
	data, err := d.get(leaseKey(ns))
	if errors.Is(err, writers.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cur := new(leaseRecord)
	if err := json.Unmarshal(data, cur); err != nil {
		return nil, fmt.Errorf("decode lease: %w", err)
	}
	return cur, nil
}

func (d *Driver) writeLease(l writers.Lease) error {
	data, err := json.Marshal(leaseRecord{Holder: l.Holder, Token: l.Token, Expires: l.Expires})
	if err != nil {
		return err
	}
	return d.db.Set(leaseKey(l.Namespace), data, pdb.Sync)
}

// CommitWork implements writers.Driver: one record per unit of work,
// s\x00<ns>\x00<version>\x00<id>, so commits of different IDs never touch the same key.
// It is written with sync: a resumed run skips the work, so its record must not outlive
// the rows it vouches for, and syncing the log makes every row batch committed before it
// durable too.
func (d *Driver) CommitWork(ctx context.Context, ns, version string, c writers.Commit, data []byte) error {
	// Shared, like WriteRows: a commit record cannot slip in after DeleteVersion dropped
	// them.
	d.catalog.RLock()
	defer d.catalog.RUnlock()
	return d.db.Set(append(commitPrefix(ns, version), c.ID...), data, pdb.Sync)
}

// Commits implements writers.Driver. Records are read in key order, which is ID order.
func (d *Driver) Commits(ctx context.Context, ns, version string) ([]writers.Commit, error) {
	lower := commitPrefix(ns, version)
	it, err := d.db.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, err
	}
	var out []writers.Commit
	for ok := it.First(); ok; ok = it.Next() {
		var c writers.Commit
		if err := json.Unmarshal(it.Value(), &c); err != nil {
			it.Close()
			return nil, fmt.Errorf("decode %q: %w", it.Key()[len(lower):], err)
		}
		out = append(out, c)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	return out, nil
}
