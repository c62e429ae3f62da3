package pebble

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	pdb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/staticref/staticref/writers"
)

// Reading a Pebble store that another process holds.
//
// A Pebble directory admits one process at a time: Open takes a lock file, and even a
// read-only open takes it. A lookup service must still see the versions that a CLI or
// scheduled run publishes into the same directory, so these functions open the directory
// read-only WITHOUT the lock. That is safe for reading because Pebble never rewrites a
// file in place: a read-only open replays the WAL it finds and reads immutable sstables;
// at worst it sees a state that is a moment old. It is never safe for writing, so the
// handle never leaves this file: ReadLive reads one pointer, and CopyVersion copies what
// serving one version needs into a private store the caller owns, immune to the writer's
// compactions and gc.

// ReadLive returns the live version of ns in the Pebble store at dir ("" if none),
// without taking the directory's lock.
func ReadLive(dir, ns string) (string, error) {
	if err := writers.ValidateNamespace(ns); err != nil {
		return "", err
	}
	ro, err := openUnlocked(dir)
	if err != nil {
		return "", err
	}
	defer ro.Close()
	return readString(ro, pointerKey(ns))
}

// CopyVersion copies, from the Pebble store at dir and without taking its lock, the
// namespace's live pointer, its manifests and every row of its live version into a new
// Pebble store at dst, and opens that. It returns the live version it copied ("" and a
// nil store when ns has none). Pointer and rows come from one read-only open, so they
// agree: the copy holds every row of the version it names live, since a version is
// flipped only once complete. Nothing of any other namespace is copied, not even of one
// whose name extends ns.
func CopyVersion(dir, dst, ns string) (*writers.Store, string, error) {
	if err := writers.ValidateNamespace(ns); err != nil {
		return nil, "", err
	}
	ro, err := openUnlocked(dir)
	if err != nil {
		return nil, "", err
	}
	defer ro.Close()
	live, err := readString(ro, pointerKey(ns))
	if err != nil || live == "" {
		return nil, "", err
	}
	// The pointer is a point key, not a prefix (p\x00demo is a prefix of p\x00demo2's
	// key): it is copied as the value just read. The other two are NUL-terminated ranges.
	points := []keyValue{{pointerKey(ns), []byte(live)}}
	prefixes := [][]byte{manifestPrefix(ns), dataPrefix(ns, live)}
	if err := copyInto(ro, dst, points, prefixes); err != nil {
		return nil, "", fmt.Errorf("copy version %s of %s from %s: %w", live, ns, dir, err)
	}
	s, err := Open(dst)
	if err != nil {
		return nil, "", err
	}
	return s, live, nil
}

func openUnlocked(dir string) (*pdb.DB, error) {
	fixCMalloc()
	db, err := pdb.Open(dir, &pdb.Options{ReadOnly: true, FS: noLockFS{vfs.Default}, Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("open pebble store %s read-only: %w", dir, err)
	}
	return db, nil
}

// noLockFS opens a Pebble directory without its lock file; only for read-only opens.
type noLockFS struct{ vfs.FS }

func (noLockFS) Lock(string) (io.Closer, error) { return io.NopCloser(nil), nil }

// Open stands in the newest OPTIONS file for OPTIONS-000000: a read-only DB writes no
// OPTIONS file of its own.
func (f noLockFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	if filepath.Base(name) == "OPTIONS-000000" {
		if _, err := os.Stat(name); err != nil {
			matches, _ := filepath.Glob(filepath.Join(filepath.Dir(name), "OPTIONS-*"))
			sort.Strings(matches)
			if len(matches) > 0 {
				name = matches[len(matches)-1]
			}
		}
	}
	return f.FS.Open(name, opts...)
}

type keyValue struct{ key, value []byte }

// copyInto writes points, and every key of src under each prefix (each ending in NUL: see
// prefixEnd), into a new database at dst.
func copyInto(src *pdb.DB, dst string, points []keyValue, prefixes [][]byte) (err error) {
	fixCMalloc()
	db, err := pdb.Open(dst, &pdb.Options{Logger: quietLogger{}, DisableWAL: true})
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			err = db.Flush()
		}
		err = errors.Join(err, db.Close())
	}()
	w := &batchWriter{db: db, b: db.NewBatch()}
	defer func() { w.b.Close() }()
	for _, kv := range points {
		if err := w.set(kv.key, kv.value); err != nil {
			return err
		}
	}
	for _, pre := range prefixes {
		if err := copyRange(src, w, pre); err != nil {
			return err
		}
	}
	return w.b.Commit(pdb.NoSync)
}

// copyRange copies every key of src under pre (which ends in NUL) into w.
func copyRange(src *pdb.DB, w *batchWriter, pre []byte) (err error) {
	it, err := src.NewIter(&pdb.IterOptions{LowerBound: pre, UpperBound: prefixEnd(pre)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }() // Close returns the iterator's error
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := w.set(it.Key(), v); err != nil {
			return err
		}
	}
	return nil
}

// batchWriter sets keys through a batch that it commits, without sync, and starts afresh
// whenever it grows past 8 MiB; the caller commits the last one.
type batchWriter struct {
	db *pdb.DB
	b  *pdb.Batch
}

func (w *batchWriter) set(key, value []byte) error {
	if err := w.b.Set(key, value, nil); err != nil { // Set copies key and value
		return err
	}
	if w.b.Len() <= 8<<20 {
		return nil
	}
	if err := w.b.Commit(pdb.NoSync); err != nil {
		return err
	}
	w.b.Close()
	w.b = w.db.NewBatch()
	return nil
}

func readString(db *pdb.DB, key []byte) (string, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pdb.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}
