// Package parquet is the export-only store: parquet:DIR, parquet+s3://BUCKET/PREFIX?…,
// parquet+gs://…, parquet+azblob://…, parquet+file:///abs/dir. A run into it writes its
// version only as Parquet files (by the pipeline's export, writers/export), for
// warehouse consumers; it keeps no rows to look up and has no live pointer.
//
// Layout under the location (LOC = the folder or object prefix):
//
//	LOC/NS/VERSION/part-NNNNN.parquet       the rows (written by the pipeline's export)
//	LOC/NS/VERSION/manifest.json            the version's manifest, written once the
//	                                        version is complete: after every part file,
//	                                        so a consumer that finds it may read them all
//	LOC/NS/_staticref/manifests/VERSION.json the catalog: every version's manifest, in
//	                                        every state (writing, complete, failed, retired)
//	LOC/NS/_staticref/commits/VERSION/ID.json the commit records, for resume
//	LOC/NS/_staticref/lease.json            the writer lease
//
// The lease. Object stores offer gocloud.dev/blob no compare-and-swap of an existing
// object, only create-if-absent: a lease is taken by creating lease.json if absent (an
// expired one is deleted first), and renewed or released by its holder only after
// reading it back with its token. Two writers that find the same expired lease at the
// same instant may both delete it, but only one create succeeds. A renewal is a read
// then a write, so a holder paused between the two can overwrite a successor's lease;
// the pipeline's fence stops such a writer at its next write.
//
// Get, CountKeys and SwapLive answer with an error wrapping writers.ErrExportOnly; Live
// is always "". It never imports pipeline, lookup, scheduler or cmd.
package parquet

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/export"
	"github.com/staticref/staticref/writers/internal/driverkit"
)

func init() {
	writers.Register(open, "parquet", "parquet+s3", "parquet+gs", "parquet+azblob", "parquet+file")
}

type driver struct {
	t       *export.Target
	writing driverkit.WritingCache
}

func open(ctx context.Context, u writers.URL, opts writers.OpenOptions) (writers.Driver, error) {
	t, err := export.Open(ctx, u.Export, export.Options{MustExist: opts.MustExist})
	if errors.Is(err, fs.ErrNotExist) || gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("open store %s: no export has been written there: %w", u, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", u, err)
	}
	d := &driver{t: t}
	cctx, cancel := context.WithTimeout(ctx, objstore.CallTimeout)
	defer cancel()
	ok, err := t.Bucket().IsAccessible(cctx)
	switch {
	case err != nil:
		t.Close()
		return nil, fmt.Errorf("open store %s: %w", u, err)
	case !ok:
		t.Close()
		return nil, fmt.Errorf("open store %s: the bucket does not exist: %w", u, fs.ErrNotExist)
	}
	if opts.MustExist {
		it := t.Bucket().List(&blob.ListOptions{Prefix: t.Prefix(), Delimiter: "/"})
		if _, err := it.Next(cctx); errors.Is(err, io.EOF) {
			t.Close()
			return nil, fmt.Errorf("open store %s: no export has been written there: %w", u, fs.ErrNotExist)
		}
	}
	return d, nil
}

func (d *driver) Describe() string { return "parquet export " + d.t.Name() }

func (d *driver) key(parts ...string) string { return d.t.Prefix() + path.Join(parts...) }

func (d *driver) manifestKey(ns, version string) string {
	return d.key(ns, "_staticref", "manifests", version+".json")
}

func (d *driver) commitsPrefix(ns, version string) string {
	return d.key(ns, "_staticref", "commits", version) + "/"
}

func (d *driver) leaseKey(ns string) string { return d.key(ns, "_staticref", "lease.json") }

// call runs one store call under objstore's deadline and retries.
func call(ctx context.Context, fn func(ctx context.Context) error) error {
	return objstore.Retry(ctx, fn)
}

func (d *driver) read(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := call(ctx, func(ctx context.Context) error {
		var err error
		data, err = d.t.Bucket().ReadAll(ctx, key)
		return err
	})
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%s: %w", key, writers.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return data, nil
}

func (d *driver) write(ctx context.Context, key string, data []byte, opts *blob.WriterOptions) error {
	if opts == nil {
		opts = &blob.WriterOptions{ContentType: "application/json"}
	}
	err := call(ctx, func(ctx context.Context) error { return d.t.Bucket().WriteAll(ctx, key, data, opts) })
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}

func (d *driver) list(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	token := blob.FirstPageToken
	for {
		var page []*blob.ListObject
		err := call(ctx, func(ctx context.Context) error {
			var err error
			page, token, err = d.t.Bucket().ListPage(ctx, token, 1000, &blob.ListOptions{Prefix: prefix})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, o := range page {
			if !o.IsDir {
				keys = append(keys, o.Key)
			}
		}
		if len(token) == 0 {
			return keys, nil
		}
	}
}

func exportOnly(what string) error {
	return fmt.Errorf("%w: a parquet store keeps no rows to %s: read the Parquet files, or export from a lookup store (pebble:, redis://, bigtable://) with sink.export", writers.ErrExportOnly, what)
}

func (d *driver) WriteRows(ctx context.Context, ns, version string, rows writers.Rows) error {
	// The rows go to the Parquet files; only the version's state is checked here.
	return d.writing.Check(ctx, ns, version, func(ctx context.Context) (*writers.Manifest, error) {
		return d.Manifest(ctx, ns, version)
	})
}

func (d *driver) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	return nil, exportOnly("look up")
}

func (d *driver) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	return 0, exportOnly("count")
}

func (d *driver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	d.writing.Forget(m.Namespace, m.Version)
	if err := d.write(ctx, d.manifestKey(m.Namespace, m.Version), data, nil); err != nil {
		return err
	}
	// The consumers' manifest: published once the version is complete, after its files.
	pub := d.t.Prefix() + export.ManifestName(m.Namespace, m.Version)
	if m.State == writers.StateComplete {
		return d.write(ctx, pub, data, nil)
	}
	err := call(ctx, func(ctx context.Context) error { return d.t.Bucket().Delete(ctx, pub) })
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("delete %s: %w", pub, err)
	}
	return nil
}

func (d *driver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	data, err := d.read(ctx, d.manifestKey(ns, version))
	if err != nil {
		return nil, err
	}
	var m writers.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d.manifestKey(ns, version), err)
	}
	return &m, nil
}

func (d *driver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	keys, err := d.list(ctx, d.key(ns, "_staticref", "manifests")+"/")
	if err != nil {
		return nil, err
	}
	var out []*writers.Manifest
	for _, k := range keys {
		v := strings.TrimSuffix(path.Base(k), ".json")
		m, err := d.Manifest(ctx, ns, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func (d *driver) DeleteVersion(ctx context.Context, ns, version string) error {
	m, err := d.Manifest(ctx, ns, version)
	if err != nil {
		return err
	}
	files, err := d.list(ctx, d.key(export.VersionDir(ns, version))+"/")
	if err != nil {
		return err
	}
	commits, err := d.list(ctx, d.commitsPrefix(ns, version))
	if err != nil {
		return err
	}
	for _, k := range append(files, commits...) {
		err := call(ctx, func(ctx context.Context) error { return d.t.Bucket().Delete(ctx, k) })
		if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	m.State = writers.StateRetired
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	d.writing.Forget(ns, version)
	return d.write(ctx, d.manifestKey(ns, version), data, nil)
}

func (d *driver) Live(ctx context.Context, ns string) (string, error) { return "", nil }

func (d *driver) SwapLive(ctx context.Context, ns, old, next string) error {
	return fmt.Errorf("%w: a parquet store has no live version; its complete versions are the ones with a manifest.json beside their files", writers.ErrExportOnly)
}

func (d *driver) AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (writers.Lease, error) {
	key := d.leaseKey(ns)
	l := writers.Lease{Namespace: ns, Holder: holder, Token: token, Expires: time.Now().Add(ttl)}
	data, _ := json.Marshal(l)
	for attempt := 0; attempt < 3; attempt++ {
		cur, err := d.lease(ctx, ns)
		switch {
		case errors.Is(err, writers.ErrNotFound):
		case err != nil:
			return writers.Lease{}, err
		case time.Now().Before(cur.Expires):
			return writers.Lease{}, &writers.LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
		default: // expired: remove it, then race for the create
			if err := d.t.Bucket().Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
				return writers.Lease{}, fmt.Errorf("delete expired lease %s: %w", key, err)
			}
		}
		err = d.t.Bucket().WriteAll(ctx, key, data, &blob.WriterOptions{ContentType: "application/json", IfNotExist: true})
		switch gcerrors.Code(err) {
		case gcerrors.OK:
			return l, nil
		case gcerrors.FailedPrecondition, gcerrors.AlreadyExists:
			continue // another writer created it first: read who
		default:
			return writers.Lease{}, fmt.Errorf("create lease %s: %w", key, err)
		}
	}
	return writers.Lease{}, fmt.Errorf("take lease %s: contended, try again", key)
}

func (d *driver) lease(ctx context.Context, ns string) (writers.Lease, error) {
	data, err := d.read(ctx, d.leaseKey(ns))
	if err != nil {
		return writers.Lease{}, err
	}
	var l writers.Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return writers.Lease{}, fmt.Errorf("lease %s: %w", d.leaseKey(ns), err)
	}
	return l, nil
}

func (d *driver) RenewLease(ctx context.Context, l writers.Lease, ttl time.Duration) (writers.Lease, error) {
	cur, err := d.lease(ctx, l.Namespace)
	if errors.Is(err, writers.ErrNotFound) || (err == nil && (cur.Token != l.Token || !time.Now().Before(cur.Expires))) {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	if err != nil {
		return writers.Lease{}, err
	}
	l.Expires = time.Now().Add(ttl)
	data, _ := json.Marshal(l)
	if err := d.write(ctx, d.leaseKey(l.Namespace), data, nil); err != nil {
		return writers.Lease{}, err
	}
	return l, nil
}

func (d *driver) ReleaseLease(ctx context.Context, l writers.Lease) error {
	cur, err := d.lease(ctx, l.Namespace)
	if errors.Is(err, writers.ErrNotFound) || (err == nil && cur.Token != l.Token) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := d.t.Bucket().Delete(ctx, d.leaseKey(l.Namespace)); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

func (d *driver) CommitWork(ctx context.Context, ns, version string, c writers.Commit, data []byte) error {
	return d.write(ctx, d.commitsPrefix(ns, version)+base64.RawURLEncoding.EncodeToString([]byte(c.ID))+".json", data, nil)
}

func (d *driver) Commits(ctx context.Context, ns, version string) ([]writers.Commit, error) {
	keys, err := d.list(ctx, d.commitsPrefix(ns, version))
	if err != nil {
		return nil, err
	}
	out := make([]writers.Commit, 0, len(keys))
	for _, k := range keys {
		data, err := d.read(ctx, k)
		if err != nil {
			return nil, err
		}
		var c writers.Commit
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&c); err != nil {
			return nil, fmt.Errorf("commit %s: %w", k, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func (d *driver) Close() error { return d.t.Close() }
