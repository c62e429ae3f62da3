package writers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Driver is what one backend (Pebble, Redis, Bigtable) implements beneath Store. It is
// exported only so that the driver packages (writers/pebble, writers/redis,
// writers/bigtable) can implement it; everyone else uses *Store, which wraps a Driver.
//
// The wrapper has already done, before any method is called, everything that is the same
// for every backend: namespace, version, key and shard-id validation, lease argument
// checks, lease tokens, manifest and commit encoding, the open/closed lifecycle (no method
// is called after Close has begun, and Close is called once, after every call in flight has
// returned) and the "op ns/version:" prefix of every error. A driver returns bare errors
// (wrapping ErrNotFound, ErrConflict, ErrNotComplete, ErrLeaseLost or a *LeaseHeldError
// where the contract says so) that name only what the wrapper cannot know, such as the
// server's address. Drivers must be safe for concurrent use.
type Driver interface {
	// WriteRows stores rows.Keys[i] -> rows.Values[i] under version, which must be a
	// version whose manifest says writing (refuse it otherwise). Keys are valid, and
	// rows has as many values as keys.
	WriteRows(ctx context.Context, ns, version string, rows Rows) error
	// Get returns a copy of the value of key in version, or an error wrapping ErrNotFound.
	Get(ctx context.Context, ns, version string, key []byte) ([]byte, error)
	// CountKeys counts the keys stored under version (a full scan).
	CountKeys(ctx context.Context, ns, version string) (int64, error)

	// PutManifest creates or replaces the manifest of m.Namespace/m.Version; data is m
	// encoded as JSON, which is what the driver stores.
	PutManifest(ctx context.Context, m *Manifest, data []byte) error
	// Manifest returns the stored manifest, or an error wrapping ErrNotFound.
	Manifest(ctx context.Context, ns, version string) (*Manifest, error)
	// Manifests returns every manifest of ns, in any order.
	Manifests(ctx context.Context, ns string) ([]*Manifest, error)
	// DeleteVersion removes a version's rows and commits and marks its manifest retired,
	// refusing (ErrConflict) the live version and (ErrNotFound) one without a manifest.
	DeleteVersion(ctx context.Context, ns, version string) error

	// Live returns the live version of ns, "" when there is none.
	Live(ctx context.Context, ns string) (string, error)
	// SwapLive sets the live pointer of ns to next if it is old ("" = none) and next's
	// manifest says complete, atomically; else ErrConflict or ErrNotComplete.
	SwapLive(ctx context.Context, ns, old, next string) error

	// AcquireLease takes the lease of ns for holder with the given token until now+ttl,
	// or returns a *LeaseHeldError while another holder's lease is unexpired.
	AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (Lease, error)
	// RenewLease extends l to now+ttl while it is still l's (same token, unexpired), else
	// returns an error wrapping ErrLeaseLost.
	RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)
	// ReleaseLease deletes the lease if it is still l's; otherwise it does nothing.
	ReleaseLease(ctx context.Context, l Lease) error

	// CommitWork records c (encoded as data) for version; concurrent records of different
	// IDs must all survive, and a second record of the same ID replaces the first.
	CommitWork(ctx context.Context, ns, version string, c Commit, data []byte) error
	// Commits returns the records of version, in any order.
	Commits(ctx context.Context, ns, version string) ([]Commit, error)

	// Close releases the driver's resources.
	Close() error
}

// Optional capabilities. A driver may implement any of these; Store finds them with a
// type assertion on the Driver interface and offers them to callers, which must cope with
// a store that lacks them.

// FlipWatcher is a driver that announces flips. WatchFlips calls fn with the namespace of
// every flip announced until ctx is done, then returns. Delivery is at most once (a
// reconnect can lose one), so a caller must also poll.
type FlipWatcher interface {
	WatchFlips(ctx context.Context, fn func(ns string))
}

// ManyGetter is a driver that reads many keys of one version in one round trip (a Redis
// MGET or a pipeline per cluster slot group, a Bigtable ReadRows of a row list, one
// Pebble iterator pass). Keys are valid; the result has one entry per key, nil for a key
// the version lacks. Store.GetMany falls back to one Get per key without it.
type ManyGetter interface {
	GetMany(ctx context.Context, ns, version string, keys [][]byte) ([][]byte, error)
}

// ChainGetter is a driver that reads many keys down a chain of versions (an incremental
// version and its bases, head first) in one round trip: every level's reads in one Redis
// pipeline, one Bigtable ReadRows of every level's row keys. Keys are valid. values[i] is
// the value of keys[i] in the first version of chain that holds it, tombstones included
// (the wrapper turns them into "deleted"), and from[i] that version's index in chain; nil
// and -1 when no version holds it. Store.GetChain falls back to one GetMany per level,
// for the keys still unanswered, without it.
type ChainGetter interface {
	GetChain(ctx context.Context, ns string, chain []string, keys [][]byte) (values [][]byte, from []int, err error)
}

// Scanner is a driver that can pass every row of a version to a function, in batches (a
// Pebble iterator, Redis SCAN pages read with MGET, a Bigtable prefix ReadRows). fn may
// keep neither the slices nor the bytes they hold beyond its call. A key may come twice
// (a Redis SCAN during a resize, a Pebble version resumed into two parts), always with
// the same value. An error from fn stops the scan and is returned. Store.ScanRows needs
// it: compaction (versions compact) reads whole versions through it.
type Scanner interface {
	ScanRows(ctx context.Context, ns, version string, fn func(rows Rows) error) error
}

// LayoutChooser is a driver that lays out versions in more than one way (Redis: one key
// per row, or rows in hash buckets). Store.PutManifest calls ChooseLayout when it stores
// the first manifest of a version whose Layout is nil, and records the answer in it; a
// later manifest of the same version without a Layout gets the stored one, so a layout
// never changes once chosen. ChooseLayout must decide from m alone (its ExpectedRows,
// Encoding, Outputs, Sources) and the server's settings, never at random: the shards of a
// sharded run may create the same version at once, and must all choose the same.
type LayoutChooser interface {
	ChooseLayout(ctx context.Context, m *Manifest) (*Layout, error)
}

// Sweeper is a driver that may leave the rows of a retired version behind for a while (a
// reader still held them when it was retired). Sweep removes those of ns that nobody
// holds any longer; GC calls it every time, so that a gc run frees what earlier ones
// could not, even when it retires nothing new.
type Sweeper interface {
	Sweep(ctx context.Context, ns string) error
}

// Describer is a driver that can say where it is, for messages: a directory, an address,
// a table. Store.String falls back to the redacted URL.
type Describer interface {
	Describe() string
}

// OpenFunc opens a driver for a parsed URL. It honours opts.MustExist (see OpenExisting).
type OpenFunc func(ctx context.Context, u URL, opts OpenOptions) (Driver, error)

// OpenOptions are the choices Open and OpenExisting pass to a driver.
type OpenOptions struct {
	// MustExist: refuse, with an error wrapping fs.ErrNotExist, a store that has never been
	// written (a pebble: directory holding no store), instead of creating one.
	MustExist bool
}

var registry = struct {
	sync.RWMutex
	open map[string]OpenFunc
}{open: map[string]OpenFunc{}}

// Register makes a driver available to Open for the given URL schemes. Driver packages
// call it from init; a binary links the drivers it wants by importing them (writers/all
// imports every one). Registering a scheme twice panics.
func Register(open OpenFunc, schemes ...string) {
	registry.Lock()
	defer registry.Unlock()
	for _, s := range schemes {
		if _, dup := registry.open[s]; dup {
			panic(fmt.Sprintf("writers: store scheme %s registered twice", s))
		}
		registry.open[s] = open
	}
}

func opener(scheme string) (OpenFunc, bool) {
	registry.RLock()
	defer registry.RUnlock()
	open, ok := registry.open[scheme]
	return open, ok
}

// Registered returns the schemes with a registered driver, sorted.
func Registered() []string {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]string, 0, len(registry.open))
	for s := range registry.open {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
