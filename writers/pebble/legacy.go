package pebble

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pdb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/staticref/staticref/writers"
)

// Stores written before this layout: one Pebble database directly in DIR, every
// namespace's catalog and rows in it, under one-byte tags:
//
//	d\x00NS\x00VERSION\x00KEY   -> value          rows
//	m\x00NS\x00VERSION          -> manifest JSON
//	p\x00NS                     -> live version id
//	s\x00NS\x00VERSION\x00ID    -> commit JSON
//	l\x00NS                     -> lease (not migrated: no writer can hold it while the
//	                               migration holds the database's lock)
//
// They are migrated, not read in place: the first open of such a directory (by any
// command) takes the old database's lock, writes the catalog files and, for every version
// that is not retired, a sealed part with its rows, then writes the STORE marker (the
// commit point) and moves the old database's files into DIR/legacy-layout/, which may be
// deleted once the new layout has served. A crash before the marker leaves the old
// database as it was, and the next open starts the migration afresh; a crash after it
// leaves old files behind, which the next open moves. The cost is one copy of the rows of
// the versions kept, once.
const legacyDir = "legacy-layout"

// isLegacy reports whether dir holds a Pebble database of the earlier layout.
func isLegacy(dir string) bool {
	desc, err := pdb.Peek(dir, vfs.Default)
	return err == nil && desc.Exists
}

func (d *Driver) migrateLegacy() error {
	fixCMalloc()
	old, err := pdb.Open(d.dir, &pdb.Options{Logger: quietLogger{}})
	if err != nil {
		return fmt.Errorf("open the old database (is an earlier staticref using it?): %w", err)
	}
	defer func() {
		if old != nil {
			old.Close()
		}
	}()
	// A migration that was cut short left a partial catalog: start afresh.
	for _, sub := range []string{"catalog", "versions"} {
		if err := os.RemoveAll(filepath.Join(d.dir, sub)); err != nil {
			return err
		}
	}
	retired := map[string]bool{}
	if err := scanPrefix(old, []byte("m\x00"), func(k, v []byte) error {
		ns, version, ok := strings.Cut(string(k), "\x00")
		if !ok {
			return fmt.Errorf("manifest key %q", k)
		}
		var m struct{ State writers.State }
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("manifest %s/%s: %w", ns, version, err)
		}
		if m.State == writers.StateRetired {
			retired[versionKey(ns, version)] = true
		}
		return writeFileAtomic(d.manifestPath(ns, version), v)
	}); err != nil {
		return err
	}
	if err := scanPrefix(old, []byte("p\x00"), func(k, v []byte) error {
		return writeFileAtomic(filepath.Join(d.nsDir(string(k)), "live"), append(bytes.Clone(v), '\n'))
	}); err != nil {
		return err
	}
	if err := scanPrefix(old, []byte("s\x00"), func(k, v []byte) error {
		parts := strings.SplitN(string(k), "\x00", 3)
		if len(parts) != 3 {
			return fmt.Errorf("commit key %q", k)
		}
		return d.writeCommitFile(parts[0], parts[1], parts[2], v)
	}); err != nil {
		return err
	}
	if err := d.copyLegacyRows(old, retired); err != nil {
		return err
	}
	err = old.Close()
	old = nil
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(d.dir, markerFile), []byte(marker)); err != nil {
		return err
	}
	return moveLegacyFiles(d.dir)
}

// copyLegacyRows copies the rows of every version not retired into a sealed part.
func (d *Driver) copyLegacyRows(old *pdb.DB, retired map[string]bool) error {
	var (
		cur   string // versionKey of the part being filled
		db    *pdb.DB
		batch *pdb.Batch
	)
	finish := func() error {
		if db == nil {
			return nil
		}
		err := batch.Commit(pdb.NoSync)
		batch.Close()
		if err == nil {
			err = db.Compact(context.Background(), []byte{}, []byte{0xff}, true)
		}
		err = errors.Join(err, db.Close())
		if err == nil {
			ns, version, _ := strings.Cut(cur, "\x00")
			err = dropLogs(filepath.Join(d.versionDir(ns, version), "part-legacy"))
		}
		db, batch = nil, nil
		return err
	}
	err := scanPrefix(old, []byte("d\x00"), func(k, v []byte) error {
		parts := strings.SplitN(string(k), "\x00", 3)
		if len(parts) != 3 {
			return fmt.Errorf("row key %q", k)
		}
		id := versionKey(parts[0], parts[1])
		if retired[id] {
			return nil
		}
		if id != cur {
			if err := finish(); err != nil {
				return err
			}
			cur = id
			var err error
			db, err = pdb.Open(filepath.Join(d.versionDir(parts[0], parts[1]), "part-legacy"), writeOptions())
			if err != nil {
				return err
			}
			batch = db.NewBatch()
		}
		if err := batch.Set([]byte(parts[2]), v, nil); err != nil {
			return err
		}
		if batch.Len() > 8<<20 {
			if err := batch.Commit(pdb.NoSync); err != nil {
				return err
			}
			batch.Close()
			batch = db.NewBatch()
		}
		return nil
	})
	return errors.Join(err, finish())
}

// scanPrefix calls fn with the rest of every key under prefix (which ends in NUL) and its
// value; both are valid only during the call.
func scanPrefix(db *pdb.DB, prefix []byte, fn func(k, v []byte) error) error {
	upper := bytes.Clone(prefix)
	upper[len(upper)-1]++
	it, err := db.NewIter(&pdb.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key()[len(prefix):], v)
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// moveLegacyFiles moves the old database's files out of the store's top level.
func moveLegacyFiles(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, legacyDir)
	for _, e := range ents {
		name := e.Name()
		if !isPebbleFile(name) {
			continue
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// isPebbleFile reports whether a top-level name is one of a Pebble database's files.
func isPebbleFile(name string) bool {
	for _, p := range []string{"MANIFEST-", "OPTIONS-", "marker.", "archive"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	switch filepath.Ext(name) {
	case ".sst", ".log", ".blob":
		return true
	}
	return name == "LOCK" || name == "CURRENT"
}
