package writers

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Reading a Pebble store that another process holds.
//
// A Pebble directory admits one process at a time: Open takes a lock file, and even a
// read-only open takes it. A lookup service must still see the versions that a CLI or
// scheduled run publishes into the same directory, so these functions open the directory
// read-only WITHOUT the lock. That is safe for reading because Pebble never rewrites a
// file in place: a read-only open replays the WAL it finds and reads immutable sstables;
// at worst it sees a state that is a moment old. It is never safe for writing, so the
// handle never leaves this file: ReadPebbleLive reads one pointer, and CopyPebbleVersion
// copies what serving one version needs into a private store the caller owns, immune to
// the writer's compactions and gc.

// ReadPebbleLive returns the live version of ns in the Pebble store at dir ("" if none),
// without taking the directory's lock.
func ReadPebbleLive(dir, ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", err
	}
	ro, err := openUnlocked(dir)
	if err != nil {
		return "", err
	}
	defer ro.Close()
	return readString(ro, pointerKey(ns))
}

// CopyPebbleVersion copies, from the Pebble store at dir and without taking its lock, the
// namespace's live pointer, its manifests and every row of its live version into a new
// Pebble store at dst, and opens that. It returns the live version it copied ("" and a
// nil store when ns has none). Pointer and rows come from one read-only open, so they
// agree: the copy holds every row of the version it names live, since a version is
// flipped only once complete.
func CopyPebbleVersion(dir, dst, ns string) (*Pebble, string, error) {
	if err := ValidateNamespace(ns); err != nil {
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
	prefixes := [][]byte{pointerKey(ns), append(tagPrefix(tagManifest, ns), 0), dataPrefix(ns, live)}
	if err := copyPrefixes(ro, dst, prefixes); err != nil {
		return nil, "", fmt.Errorf("copy version %s of %s from %s: %w", live, ns, dir, err)
	}
	s, err := OpenPebble(dst)
	if err != nil {
		return nil, "", err
	}
	return s, live, nil
}

func openUnlocked(dir string) (*pebble.DB, error) {
	fixCMalloc()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, FS: noLockFS{vfs.Default}, Logger: quietLogger{}})
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

// copyPrefixes copies every key under each prefix from src into a new database at dst.
func copyPrefixes(src *pebble.DB, dst string, prefixes [][]byte) (err error) {
	fixCMalloc()
	db, err := pebble.Open(dst, &pebble.Options{Logger: quietLogger{}, DisableWAL: true})
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			err = db.Flush()
		}
		err = errors.Join(err, db.Close())
	}()
	for _, pre := range prefixes {
		upper := append([]byte(nil), pre...)
		upper[len(upper)-1]++
		it, err := src.NewIter(&pebble.IterOptions{LowerBound: pre, UpperBound: upper})
		if err != nil {
			return err
		}
		b := db.NewBatch()
		for ok := it.First(); ok && err == nil; ok = it.Next() {
			var v []byte
			if v, err = it.ValueAndErr(); err == nil {
				err = b.Set(it.Key(), v, nil)
			}
			if err == nil && b.Len() > 8<<20 {
				err = b.Commit(pebble.NoSync)
				b = db.NewBatch()
			}
		}
		err = errors.Join(err, it.Close())
		if err == nil {
			err = b.Commit(pebble.NoSync)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func readString(db *pebble.DB, key []byte) (string, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	return string(v), nil
}
