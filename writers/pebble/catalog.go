package pebble

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/staticref/staticref/writers"
)

// The catalog: small files under DIR/catalog/NS/, each replaced whole by
// writeFileAtomic, so any number of processes may read them at any time:
//
//	catalog/NS/.lock                     flock: orders every read-compare-write of NS
//	catalog/NS/live                      the live version id (absent: none)
//	catalog/NS/lease.json                the writer lease {holder, token, expires}
//	catalog/NS/manifests/VERSION.json    a version's manifest
//	catalog/NS/commits/VERSION/H.json    committed work; H is the SHA-256 of its id
//	catalog/NS/release.json              the release record (see release.go)
//	catalog/NS/releases/RELEASE/...      its counters and sketches (see release.go)
//
// Namespaces and version ids are made of a-z, A-Z, 0-9, '_', '.', '-' and start with a
// letter or digit (writers.ValidateNamespace, ValidateVersion), so each is one path
// segment that is never ".", "..", or hidden, and no namespace's files lie inside
// another's: catalog/demo/ and catalog/demo2/ are siblings. Compare-and-swap (the live
// pointer, the lease, retirement, the release record) holds NS's flock, which excludes
// the goroutines of this process and every other process alike; plain reads take no lock.

func (d *Driver) nsDir(ns string) string { return filepath.Join(d.dir, "catalog", ns) }

func (d *Driver) manifestPath(ns, version string) string {
	return filepath.Join(d.nsDir(ns), "manifests", version+".json")
}

func (d *Driver) commitsDir(ns, version string) string {
	return filepath.Join(d.nsDir(ns), "commits", version)
}

// lockNS takes the namespace's catalog lock.
func (d *Driver) lockNS(ns string) (*flock, error) {
	return lockFile(filepath.Join(d.nsDir(ns), ".lock"), false)
}

// PutManifest implements writers.Driver. A manifest that completes a version still in
// state writing first seals its rows (see seal): a complete version's files never change.
func (d *Driver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	if m.State == writers.StateComplete {
		cur, err := d.manifest(m.Namespace, m.Version)
		if err != nil && !errors.Is(err, writers.ErrNotFound) {
			return err
		}
		if cur == nil || cur.State == writers.StateWriting {
			if err := d.seal(ctx, m.Namespace, m.Version); err != nil {
				return fmt.Errorf("seal the version's rows: %w", err)
			}
		}
	}
	d.rows.Lock()
	defer d.rows.Unlock()
	d.writing.Forget(m.Namespace, m.Version)
	return writeFileAtomic(d.manifestPath(m.Namespace, m.Version), data)
}

// Manifest implements writers.Driver.
func (d *Driver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	return d.manifest(ns, version)
}

func (d *Driver) manifest(ns, version string) (*writers.Manifest, error) {
	data, ok, err := readFile(d.manifestPath(ns, version))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("version %s: %w", version, writers.ErrNotFound)
	}
	m := new(writers.Manifest)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode manifest %s: %w", d.manifestPath(ns, version), err)
	}
	return m, nil
}

// Manifests implements writers.Driver.
func (d *Driver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	ents, err := os.ReadDir(filepath.Join(d.nsDir(ns), "manifests"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ms []*writers.Manifest
	for _, e := range ents {
		name := e.Name()
		if isTemp(name) || !strings.HasSuffix(name, ".json") {
			continue
		}
		m, err := d.manifest(ns, strings.TrimSuffix(name, ".json"))
		if errors.Is(err, writers.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// Live implements writers.Driver.
func (d *Driver) Live(ctx context.Context, ns string) (string, error) {
	data, _, err := readFile(filepath.Join(d.nsDir(ns), "live"))
	return strings.TrimSpace(string(data)), err
}

// SwapLive implements writers.Driver, under the namespace's lock: the pointer compared,
// the next version's manifest checked complete, and the pointer replaced, with no other
// process's flip or retirement in between.
func (d *Driver) SwapLive(ctx context.Context, ns, old, next string) error {
	l, err := d.lockNS(ns)
	if err != nil {
		return err
	}
	defer l.unlock()
	live, err := d.Live(ctx, ns)
	if err != nil {
		return err
	}
	if live != old {
		return fmt.Errorf("%w: live is %q, expected %q", writers.ErrConflict, live, old)
	}
	m, err := d.manifest(ns, next)
	if err != nil {
		return err
	}
	if m.State != writers.StateComplete {
		return fmt.Errorf("version is %s: %w", m.State, writers.ErrNotComplete)
	}
	return writeFileAtomic(filepath.Join(d.nsDir(ns), "live"), []byte(next+"\n"))
}

// DeleteVersion implements writers.Driver: under the namespace's lock, the live version is
// refused and the manifest marked retired; then the version's commits and rows go (rows
// only once no reader holds them: see sweep).
func (d *Driver) DeleteVersion(ctx context.Context, ns, version string) error {
	if err := d.retire(ctx, ns, version); err != nil {
		return err
	}
	if err := os.RemoveAll(d.commitsDir(ns, version)); err != nil {
		return err
	}
	d.sweep(ns)
	return nil
}

// Sweep implements writers.Sweeper: the row files of ns's retired versions that no
// process holds any longer.
func (d *Driver) Sweep(ctx context.Context, ns string) error {
	d.sweep(ns)
	return nil
}

func (d *Driver) retire(ctx context.Context, ns, version string) error {
	l, err := d.lockNS(ns)
	if err != nil {
		return err
	}
	defer l.unlock()
	live, err := d.Live(ctx, ns)
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
	d.rows.Lock()
	defer d.rows.Unlock()
	d.writing.Forget(ns, version)
	if err := writeFileAtomic(d.manifestPath(ns, version), data); err != nil {
		return err
	}
	d.dropWriter(ns, version) // a version retired under its own writer takes no more rows
	return nil
}

// The writer lease: catalog/NS/lease.json, read, compared and written under the
// namespace's lock, so the three operations are atomic across processes. Expiry is judged
// by d.now when the record is read: an expired record is as good as absent, so it is taken
// over by the next AcquireLease and can no longer be renewed by its old holder, even when
// nobody has taken it over yet (the same rule as Redis, where the key itself expires).

type leaseRecord struct {
	Holder  string    `json:"holder"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

func (d *Driver) leasePath(ns string) string { return filepath.Join(d.nsDir(ns), "lease.json") }

// AcquireLease implements writers.Driver.
func (d *Driver) AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (writers.Lease, error) {
	l, err := d.lockNS(ns)
	if err != nil {
		return writers.Lease{}, err
	}
	defer l.unlock()
	now := d.now()
	cur, err := d.readLease(ns)
	if err != nil {
		return writers.Lease{}, err
	}
	if cur != nil && cur.Expires.After(now) {
		return writers.Lease{}, &writers.LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
	}
	lease := writers.Lease{Namespace: ns, Holder: holder, Token: token, Expires: now.Add(ttl).UTC()}
	return lease, d.writeLease(lease)
}

// RenewLease implements writers.Driver.
func (d *Driver) RenewLease(ctx context.Context, lease writers.Lease, ttl time.Duration) (writers.Lease, error) {
	l, err := d.lockNS(lease.Namespace)
	if err != nil {
		return writers.Lease{}, err
	}
	defer l.unlock()
	now := d.now()
	cur, err := d.readLease(lease.Namespace)
	if err != nil {
		return writers.Lease{}, err
	}
	if cur == nil || cur.Token != lease.Token || !cur.Expires.After(now) {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	lease.Expires = now.Add(ttl).UTC()
	return lease, d.writeLease(lease)
}

// ReleaseLease implements writers.Driver. It removes the record only while it is still l's.
func (d *Driver) ReleaseLease(ctx context.Context, lease writers.Lease) error {
	l, err := d.lockNS(lease.Namespace)
	if err != nil {
		return err
	}
	defer l.unlock()
	cur, err := d.readLease(lease.Namespace)
	if err != nil || cur == nil || cur.Token != lease.Token {
		return err
	}
	if err := os.Remove(d.leasePath(lease.Namespace)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(d.nsDir(lease.Namespace))
}

func (d *Driver) readLease(ns string) (*leaseRecord, error) {
	data, ok, err := readFile(d.leasePath(ns))
	if err != nil || !ok {
		return nil, err
	}
	cur := new(leaseRecord)
	if err := json.Unmarshal(data, cur); err != nil {
		return nil, fmt.Errorf("decode lease %s: %w", d.leasePath(ns), err)
	}
	return cur, nil
}

func (d *Driver) writeLease(l writers.Lease) error {
	data, err := json.Marshal(leaseRecord{Holder: l.Holder, Token: l.Token, Expires: l.Expires})
	if err != nil {
		return err
	}
	return writeFileAtomic(d.leasePath(l.Namespace), data)
}

// CommitWork implements writers.Driver: one file per id, named by the id's SHA-256 (ids are
// free-form text), so records of different ids never touch the same file and a second
// record of one id replaces the first. It is written with sync: a resumed run skips the
// committed work, so its record must not outlive the rows it vouches for; the writer's
// rows are synced first (syncRows).
func (d *Driver) CommitWork(ctx context.Context, ns, version string, c writers.Commit, data []byte) error {
	d.rows.RLock()
	defer d.rows.RUnlock()
	if err := d.syncRows(ns, version); err != nil {
		return err
	}
	return d.writeCommitFile(ns, version, c.ID, data)
}

func (d *Driver) writeCommitFile(ns, version, id string, data []byte) error {
	sum := sha256.Sum256([]byte(id))
	return writeFileAtomic(filepath.Join(d.commitsDir(ns, version), hex.EncodeToString(sum[:16])+".json"), data)
}

// Commits implements writers.Driver.
func (d *Driver) Commits(ctx context.Context, ns, version string) ([]writers.Commit, error) {
	dir := d.commitsDir(ns, version)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []writers.Commit
	for _, e := range ents {
		if isTemp(e.Name()) {
			continue
		}
		data, ok, err := readFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		var c writers.Commit
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("decode commit %s: %w", filepath.Join(dir, e.Name()), err)
		}
		out = append(out, c)
	}
	return out, nil
}
