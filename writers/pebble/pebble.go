// Package pebble is the embedded store driver, the zero-setup default, opened for
// pebble:DIR and pebble:///abs/dir URLs. Import it (or writers/all) for writers.Open to
// know the scheme; Open opens a directory directly.
//
// A store directory holds a catalog of small files and, per version, its rows as Pebble
// databases (see catalog.go and rows.go for the layout and why it is safe):
//
//	DIR/STORE                      marks the directory as a store of this layout
//	DIR/catalog/NS/...             live pointer, manifests, lease, commits, releases: small files
//	DIR/versions/NS/VERSION/...    the version's rows: Pebble databases, sealed when complete
//
// Any number of processes may use one store directory at once: runs writing versions of
// different namespaces (or shards of one version), lookup services answering from the
// live versions in place, and the CLI flipping, rolling back and collecting garbage. No
// process ever opens a database another process writes: a version is written by the
// processes of the run that holds its namespace's lease, each into its own part, and is
// read by others only once it is complete and sealed. A flip is one atomic rename of a
// small file, so it reaches every reader at its next poll, whatever the version's size,
// and copies nothing.
//
// What a crash leaves, at each step of a version's life: during the writes, parts with
// some rows and a manifest still writing (a resumed run adds a part of its own and skips
// the committed work; the rows of the crashed part hold the same values); during sealing,
// the same, and sealing again is harmless; after the manifest says complete, a complete
// version whose files never change again; during a flip, the old pointer or the new one
// (a rename); during gc, a retired manifest whose rows a later sweep removes. Nothing
// is ever lost that a complete version holds, and the live version is never touched.
//
// Stores written by staticref before this layout (one Pebble database in DIR) are migrated
// when first opened: see migrateLegacy.
package pebble

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/internal/driverkit"
)

func init() { writers.Register(openURL, "pebble") }

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
// and when a version is complete, sealing compacts its part down to the bottom level (seal):
// one pass from L0 into L6 in a part of this size, a pass per level when the part is large
// enough to have Lbase above L6; it needs temporary disk of about the version's size. The run pays for its own compaction, the complete version is one
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

// markerFile marks a directory as a store of this layout; its contents name the layout.
const (
	markerFile = "STORE"
	marker     = "staticref pebble store, layout 2: catalog/ and versions/ (docs/stores.md)\n"
)

// Driver is the Pebble driver beneath a *writers.Store. Reach it, for Dir and the test
// hooks, with s.Driver().(*pebble.Driver).
type Driver struct {
	dir  string
	proc string // this process's part name suffix: random per open

	// rows orders this process's row writes against its catalog changes. WriteRows and
	// CommitWork hold it shared while they check the version's state and commit; sealing,
	// PutManifest and retirement hold it exclusively, so a row batch never lands in a
	// version this process has completed or retired. Other processes are ordered by the
	// lease, as on Redis (see driverkit.WritingCache).
	rows sync.RWMutex
	// writing spares WriteRows a manifest read per batch.
	writing driverkit.WritingCache

	wmu     sync.Mutex
	writers map[string]*writer // versionKey -> this process's part, open for writing

	rmu     sync.Mutex
	openMu  sync.Mutex         // one reader open at a time, so a version opens once
	readers map[string]*reader // versionKey -> the version open read-only

	stop, done chan struct{} // the janitor's

	// now is the lease clock; tests may replace it before first use.
	now func() time.Time
}

var (
	_ writers.Driver     = (*Driver)(nil)
	_ writers.Describer  = (*Driver)(nil)
	_ writers.Sweeper    = (*Driver)(nil)
	_ writers.ManyGetter = (*Driver)(nil)
	_ writers.Releaser   = (*Driver)(nil)
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
// directory that does not exist or holds no store, rather than creating a store in
// whatever directory a typo named.
func openURL(ctx context.Context, u writers.URL, opts writers.OpenOptions) (writers.Driver, error) {
	if opts.MustExist {
		_, err := os.Stat(u.Dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("open store: store directory %s does not exist (check the path, or run a job into it first): %w", u.Dir, err)
		case err != nil:
			return nil, fmt.Errorf("open store %s: %w", u.Dir, err)
		case !isStore(u.Dir) && !isLegacy(u.Dir):
			return nil, fmt.Errorf("open store: %s is not a store: it holds no staticref store (check the path, or run a job into it first): %w", u.Dir, fs.ErrNotExist)
		}
	}
	d, err := openDir(u.Dir)
	if err != nil {
		return nil, err // not a non-nil Driver holding a nil *Driver
	}
	return d, nil
}

func isStore(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, markerFile))
	return err == nil
}

func openDir(dir string) (*Driver, error) {
	if dir == "" {
		return nil, fmt.Errorf("open pebble store: empty directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
	}
	d := &Driver{
		dir: dir, proc: randomHex(8), now: time.Now,
		writers: map[string]*writer{}, readers: map[string]*reader{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if !isStore(dir) {
		if isLegacy(dir) {
			if err := d.migrateLegacy(); err != nil {
				return nil, fmt.Errorf("open pebble store %s: migrate the store written by an earlier staticref: %w", dir, err)
			}
		}
		if err := writeFileAtomic(filepath.Join(dir, markerFile), []byte(marker)); err != nil {
			return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
		}
	}
	if isLegacy(dir) {
		if err := moveLegacyFiles(dir); err != nil { // left by a migration cut short
			return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
		}
	}
	go d.janitor(d.stop, d.done)
	return d, nil
}

// Dir is the directory the store lives in.
func (d *Driver) Dir() string { return d.dir }

// Describe implements writers.Describer: the store's directory.
func (d *Driver) Describe() string { return d.dir }

// Close implements writers.Driver: the janitor stops, and every part and reader this
// process has open is closed (a part being written stays unsealed: a resumed run goes on).
func (d *Driver) Close() error {
	close(d.stop)
	<-d.done
	d.rows.Lock()
	defer d.rows.Unlock()
	var err error
	d.wmu.Lock()
	for id, w := range d.writers {
		err = errors.Join(err, w.db.Close(), w.pin.unlock())
		delete(d.writers, id)
	}
	d.wmu.Unlock()
	d.rmu.Lock()
	for id, r := range d.readers {
		r.mu.Lock()
		err = errors.Join(err, r.close())
		r.mu.Unlock()
		delete(d.readers, id)
	}
	d.rmu.Unlock()
	return err
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
