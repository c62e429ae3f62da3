package pebble

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/staticref/staticref/writers"
)

// Releases (writers.Releaser) live in the catalog beside the live pointer, as small files
// replaced whole by writeFileAtomic, so a lookup reads them with no lock, as it reads live:
//
//	catalog/NS/release.json                the release record, as the Store encoded it
//	catalog/NS/releases/REL/.lock          flock: orders the counter updates of REL
//	catalog/NS/releases/REL/counts-I.json  the counters of judgement interval I
//	catalog/NS/releases/REL/sketch-N-R.bin replica R's sketch called N
//
// A swap of the record holds the namespace's lock (the one flips hold), reads the stored
// record's revision (none: 0), compares it and renames the new record into place, so of
// any number of swaps from one revision, in any processes, exactly one wins. Counters are
// a JSON object per interval, read, added to and replaced under the release's own lock:
// every replica adds its counts each interval, and a lock per release keeps those
// updates off the namespace's lock, which flips and leases take. An increment is lost
// only with the process that made it (a crash before the rename). REL is a version-alphabet
// id and I a decimal number, so both are plain path segments.
//
// Sketch names and replica ids are free-form text, so the file is named by the first 16
// bytes of the SHA-256 of each, in hex (fixed length, no separator or dot can result, and
// Sketches lists a name's files by their prefix); the file holds both names, so that a
// reader checks the name rather than trusting the hash and a person can tell whose file
// it is, then the sketch: uvarint len(name), name, uvarint len(replica), replica, data.
// Each replica replaces only its own file, so replicas need no lock. Nothing removes a
// release's files yet: the contract has no delete, and they are small (a counter file per
// interval, a sketch per replica and name).

const releaseFile = "release.json"

func (d *Driver) releaseDir(ns, release string) string {
	return filepath.Join(d.nsDir(ns), "releases", release)
}

// Release implements writers.Releaser.
func (d *Driver) Release(ctx context.Context, ns string) ([]byte, error) {
	data, _, err := readFile(filepath.Join(d.nsDir(ns), releaseFile))
	return data, err
}

// SwapRelease implements writers.Releaser: a compare-and-swap under the namespace's lock.
func (d *Driver) SwapRelease(ctx context.Context, ns string, old int64, data []byte) error {
	l, err := d.lockNS(ns)
	if err != nil {
		return err
	}
	defer l.unlock()
	path := filepath.Join(d.nsDir(ns), releaseFile)
	cur, ok, err := readFile(path)
	if err != nil {
		return err
	}
	var rev int64
	if ok {
		var r struct {
			Revision int64 `json:"revision"`
		}
		if err := json.Unmarshal(cur, &r); err != nil {
			return fmt.Errorf("decode release record %s: %w", path, err)
		}
		rev = r.Revision
	}
	if rev != old {
		return fmt.Errorf("%w: the release record is at revision %d, expected %d", writers.ErrConflict, rev, old)
	}
	return writeFileAtomic(path, data)
}

func (d *Driver) countsPath(ns, release string, interval int64) string {
	return filepath.Join(d.releaseDir(ns, release), "counts-"+strconv.FormatInt(interval, 10)+".json")
}

// AddCounts implements writers.Releaser: read, add and replace under the release's lock.
func (d *Driver) AddCounts(ctx context.Context, ns, release string, interval int64, counts map[string]int64) error {
	l, err := lockFile(filepath.Join(d.releaseDir(ns, release), ".lock"), false)
	if err != nil {
		return err
	}
	defer l.unlock()
	path := d.countsPath(ns, release, interval)
	cur, err := readCounts(path)
	if err != nil {
		return err
	}
	for k, n := range counts {
		cur[k] += n
	}
	data, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// Counts implements writers.Releaser.
func (d *Driver) Counts(ctx context.Context, ns, release string, interval int64) (map[string]int64, error) {
	return readCounts(d.countsPath(ns, release, interval))
}

// readCounts reads a counter file; none is an empty map.
func readCounts(path string) (map[string]int64, error) {
	data, ok, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c := map[string]int64{}
	if !ok {
		return c, nil
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("decode counters %s: %w", path, err)
	}
	return c, nil
}

// nameHash names a free-form name in a file name.
func nameHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// PutSketch implements writers.Releaser: the replica's file, replaced whole.
func (d *Driver) PutSketch(ctx context.Context, ns, release, name, replica string, data []byte) error {
	buf := make([]byte, 0, 2*binary.MaxVarintLen64+len(name)+len(replica)+len(data))
	buf = binary.AppendUvarint(buf, uint64(len(name)))
	buf = append(buf, name...)
	buf = binary.AppendUvarint(buf, uint64(len(replica)))
	buf = append(buf, replica...)
	buf = append(buf, data...)
	path := filepath.Join(d.releaseDir(ns, release), "sketch-"+nameHash(name)+"-"+nameHash(replica)+".bin")
	return writeFileAtomic(path, buf)
}

// Sketches implements writers.Releaser: every replica's file of name, in file name order.
func (d *Driver) Sketches(ctx context.Context, ns, release, name string) ([][]byte, error) {
	dir := d.releaseDir(ns, release)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	prefix := "sketch-" + nameHash(name) + "-"
	var out [][]byte
	for _, e := range ents {
		if isTemp(e.Name()) || !strings.HasPrefix(e.Name(), prefix) || !strings.HasSuffix(e.Name(), ".bin") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		raw, ok, err := readFile(path)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		stored, rest, err := splitSketch(raw)
		if err != nil {
			return nil, fmt.Errorf("decode sketch %s: %w", path, err)
		}
		if stored == name {
			out = append(out, rest)
		}
	}
	return out, nil
}

// splitSketch returns the name a sketch file holds and the sketch, past the replica id.
func splitSketch(raw []byte) (name string, data []byte, err error) {
	field := func() ([]byte, error) {
		n, w := binary.Uvarint(raw)
		if w <= 0 || n > uint64(len(raw)-w) {
			return nil, errors.New("truncated header")
		}
		f := raw[w : w+int(n)]
		raw = raw[w+int(n):]
		return f, nil
	}
	nm, err := field()
	if err != nil {
		return "", nil, err
	}
	if _, err := field(); err != nil { // the replica id
		return "", nil, err
	}
	return string(nm), raw, nil
}
