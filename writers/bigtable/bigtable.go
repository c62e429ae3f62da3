package writers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/bigtable"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults for the bulk writer of the Bigtable store (see Bigtable.MaxInFlight and
// Bigtable.MutationsPerRequest).
const (
	DefaultBigtableMaxInFlight         = 4
	DefaultBigtableMutationsPerRequest = 5000
)

// Column layout of the Bigtable store: one column family, and in it one column per cell
// kind. Every cell is written at timestamp 0 (btCellTime), see Bigtable.
const (
	btFamily     = "p"
	btColValue   = "v"       // data value, manifest JSON, live pointer, shard JSON
	btColHolder  = "holder"  // lease: who holds it
	btColToken   = "token"   // lease: unique per acquisition
	btColExpires = "expires" // lease: RFC 3339 UTC, compared in Go
)

// btCellTime is the timestamp of every cell the store writes. A fixed timestamp makes a
// rewrite of a cell replace it in place (Bigtable keeps one cell per column and
// timestamp), so "last write wins" needs no clock, and makes every mutation idempotent,
// so the client library may retry failed ApplyBulk entries.
const btCellTime = bigtable.Timestamp(0)

// Bigtable is the store for bigtable://PROJECT/INSTANCE/TABLE: one table holds every
// namespace. Row keys, all in the column family "p":
//
//	d#<ns>#<version>#<key>  column v: the value          rows of a version
//	m#<ns>#<version>        column v: manifest JSON      the catalog
//	p#<ns>                  column v: version id         the live pointer
//	l#<ns>                  columns holder, token, expires   the writer lease
//	s#<ns>#<version>#<id>   column v: Shard JSON         committed shards
//
// Namespaces and version ids cannot contain '#' (ValidateNamespace, ValidateVersion), so
// the '#' after each ends it: the prefix "d#a#v1#" of a/v1 is not a prefix of any row of
// namespace "ab" or version "v10". Keys and shard ids come last and may contain anything,
// '#' and NUL included. All rows of a version lie under one prefix: CountKeys is one
// prefix scan, and DeleteVersion one DropRowRange per prefix.
//
// Every cell is written at timestamp 0, so a rewrite replaces the cell rather than adding
// a version of it; the family's GC policy (max versions 1, set when the store creates it)
// is a second guard, and reads ask for the newest cell only.
//
// # Writes
//
// WriteRows splits a batch into ApplyBulk requests of at most MutationsPerRequest rows
// (one SetCell each, far below Bigtable's 100,000 mutations per request) and sends at most
// MaxInFlight of them at once. A batch that names a key twice writes only its last value,
// because ApplyBulk applies entries in no particular order.
//
// WriteRows checks that the version's manifest is in state writing, and then trusts that
// answer for writingTTL (one second) before reading the manifest again. Only "writing"
// is cached, and every PutManifest and DeleteVersion through this *Bigtable forgets the
// cached answer first. So within one process a version stops taking rows as soon as its
// manifest leaves writing, exactly as with Pebble (an in-process lock orders the two); a
// manifest changed by another process is noticed within a second. Rows that land in that
// second belong to a version that the other process just completed, failed or retired
// while this one was still writing it, which the shard protocol does not do.
//
// # The live pointer
//
// SwapLive is one CheckAndMutateRow on p#<ns>: its predicate matches the pointer cell
// whose value is exactly old (or, for old == "", any cell of the row, with the write in
// the false branch), so the compare and the set are one atomic step on the server and two
// flips, from any number of processes, never interleave.
//
// DeleteVersion cannot be made atomic with the pointer (they are different rows). It
// refuses the live version, marks the manifest retired first (so flips to it are refused
// from then on), reads the pointer again and, if a flip made the version live meanwhile,
// puts the old state back and returns ErrConflict; only then does it drop the rows. A
// flip that read the manifest as complete before the retirement and swaps the pointer
// after the second read can still win: a window of one round trip, between two operations
// that only an operator running gc and flip by hand against the same version at the same
// moment can race.
//
// # The lease
//
// The lease row l#<ns> holds holder, token and expiry (RFC 3339, UTC) in three cells.
// Expiry is compared in Go, with the local clock, after reading the row, so holders'
// clocks must agree to well within a ttl. Taking over an expired lease, and renewing one's
// own unexpired lease, is a CheckAndMutateRow whose predicate requires both the token and
// the expiry that were read (a condition filter: the AND of two cell predicates). So of
// any number of processes taking over the same expired lease exactly one wins, and a
// renewal racing a takeover cannot both succeed. A lease that expired is lost to its
// holder even before anyone takes it over (as with Pebble and Redis). Release deletes the
// row only while it carries the caller's token.
type Bigtable struct {
	// MaxInFlight bounds the ApplyBulk requests one WriteRows sends at once; 0 means
	// DefaultBigtableMaxInFlight. Set it before the store is used.
	MaxInFlight int
	// MutationsPerRequest bounds the rows of one ApplyBulk request; 0 means
	// DefaultBigtableMutationsPerRequest. Set it before the store is used.
	MutationsPerRequest int

	project, instance, tableID string
	client                     *bigtable.Client
	admin                      *bigtable.AdminClient
	tbl                        *bigtable.Table

	// catalog orders row writes against catalog changes within this process, as in
	// Pebble: WriteRows holds it shared, PutManifest, SwapLive, DeleteVersion and Close
	// exclusively.
	catalog sync.RWMutex
	closed  atomic.Bool

	writing writingCache
}

var _ Store = (*Bigtable)(nil)

// OpenBigtable opens the store a bigtable://PROJECT/INSTANCE/TABLE URL names, creating the
// table and its column family when they are missing and the credentials allow it. opts
// go to both the data and the admin client. When BIGTABLE_EMULATOR_HOST is set the
// client library connects to that emulator instead of Google Cloud.
func OpenBigtable(ctx context.Context, url string, opts ...option.ClientOption) (*Bigtable, error) {
	project, instance, table, err := parseBigtableURL(url)
	if err != nil {
		return nil, fmt.Errorf("open bigtable store: %w", err)
	}
	client, err := bigtable.NewClient(ctx, project, instance, opts...)
	if err != nil {
		return nil, fmt.Errorf("open bigtable store %s: %w", url, err)
	}
	admin, err := bigtable.NewAdminClient(ctx, project, instance, opts...)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open bigtable store %s: admin client: %w", url, err)
	}
	b := &Bigtable{
		project: project, instance: instance, tableID: table,
		client: client, admin: admin, tbl: client.Open(table),
	}
	if err := b.ensureTable(ctx); err != nil {
		b.closeClients()
		return nil, fmt.Errorf("open bigtable store %s: %w", url, err)
	}
	return b, nil
}

// parseBigtableURL splits bigtable://PROJECT/INSTANCE/TABLE, naming the part that is missing.
func parseBigtableURL(raw string) (project, instance, table string, err error) {
	const want = "want bigtable://PROJECT/INSTANCE/TABLE"
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !strings.EqualFold(scheme, "bigtable") {
		return "", "", "", fmt.Errorf("store URL %q: %s", raw, want)
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 3 {
		return "", "", "", fmt.Errorf("store URL %q: too many path parts: %s", raw, want)
	}
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	for i, name := range []string{"PROJECT", "INSTANCE", "TABLE"} {
		if parts[i] == "" {
			return "", "", "", fmt.Errorf("store URL %q: missing %s: %s", raw, name, want)
		}
	}
	return parts[0], parts[1], parts[2], nil
}

// ensureTable creates the table and the column family when they are missing.
func (b *Bigtable) ensureTable(ctx context.Context) error {
	family := bigtable.Family{GCPolicy: bigtable.MaxVersionsPolicy(1)}
	info, err := b.admin.TableInfo(ctx, b.tableID)
	switch status.Code(err) {
	case codes.OK:
		for _, f := range info.FamilyInfos {
			if f.Name == btFamily {
				return nil
			}
		}
		err := b.admin.CreateColumnFamilyWithConfig(ctx, b.tableID, btFamily, family)
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("table %s has no column family %q and it could not be created: create it with "+
				"cbt -project %s -instance %s createfamily %s %s && cbt -project %s -instance %s setgcpolicy %s %s maxversions=1: %w",
				b.tableID, btFamily, b.project, b.instance, b.tableID, btFamily, b.project, b.instance, b.tableID, btFamily, err)
		}
		return nil
	case codes.NotFound:
		conf := &bigtable.TableConf{TableID: b.tableID, ColumnFamilies: map[string]bigtable.Family{btFamily: family}}
		err := b.admin.CreateTableFromConf(ctx, conf)
		if status.Code(err) == codes.AlreadyExists {
			return b.ensureTable(ctx) // created concurrently; check its family
		}
		if err != nil {
			return fmt.Errorf("table %s does not exist and it could not be created: create it with "+
				"cbt -project %s -instance %s createtable %s families=%s:maxversions=1: %w",
				b.tableID, b.project, b.instance, b.tableID, btFamily, err)
		}
		return nil
	case codes.PermissionDenied:
		// Data-only credentials cannot inspect the table: check that it answers reads.
		_, rerr := b.tbl.ReadRow(ctx, btPointerKey("-"))
		if status.Code(rerr) == codes.NotFound {
			return fmt.Errorf("table %s does not exist and these credentials cannot create it: create it with "+
				"cbt -project %s -instance %s createtable %s families=%s:maxversions=1",
				b.tableID, b.project, b.instance, b.tableID, btFamily)
		}
		if rerr != nil {
			return fmt.Errorf("table %s: %w", b.tableID, rerr)
		}
		return nil
	default:
		return fmt.Errorf("table %s: %w", b.tableID, err)
	}
}

// Table is the Bigtable table the store lives in.
func (b *Bigtable) Table() string { return b.tableID }

// WriteRows implements Store; see Bigtable for how a batch is split and sent.
func (b *Bigtable) WriteRows(ctx context.Context, ns, version string, rows Rows) error {
	if err := validateRows(ns, version, rows); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}

	b.catalog.RLock()
	defer b.catalog.RUnlock()
	if b.closed.Load() {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, errClosed)
	}
	if err := b.checkWriting(ctx, ns, version); err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}

	// Keep only the last occurrence of each key: ApplyBulk applies entries in any order.
	idx := make([]int, 0, len(rows.Keys))
	seen := make(map[string]int, len(rows.Keys))
	for i, k := range rows.Keys {
		if j, ok := seen[string(k)]; ok {
			idx[j] = i
			continue
		}
		seen[string(k)] = len(idx)
		idx = append(idx, i)
	}

	per := b.MutationsPerRequest
	if per <= 0 {
		per = DefaultBigtableMutationsPerRequest
	}
	inFlight := b.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultBigtableMaxInFlight
	}
	prefix := btDataPrefix(ns, version)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(inFlight)
	start := 0
	for ; start < len(idx) && gctx.Err() == nil; start += per {
		chunk := idx[start:min(start+per, len(idx))]
		g.Go(func() error {
			keys := make([]string, len(chunk))
			muts := make([]*bigtable.Mutation, len(chunk))
			for j, i := range chunk {
				keys[j] = prefix + string(rows.Keys[i])
				m := bigtable.NewMutation()
				m.Set(btFamily, btColValue, btCellTime, rows.Values[i])
				muts[j] = m
			}
			errs, err := b.tbl.ApplyBulk(gctx, keys, muts)
			if err != nil {
				return err
			}
			for j, err := range errs {
				if err != nil {
					return fmt.Errorf("key %q: %w", rows.Keys[chunk[j]], err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil && start < len(idx) {
		err = context.Cause(gctx) // stopped before every request was sent
	}
	if err != nil {
		return fmt.Errorf("write rows %s/%s: %w", ns, version, err)
	}
	return nil
}

// checkWriting returns nil if the manifest of ns/version is in state writing.
func (b *Bigtable) checkWriting(ctx context.Context, ns, version string) error {
	return b.writing.check(ctx, ns, version, func(ctx context.Context) (*Manifest, error) {
		return b.manifest(ctx, ns, version)
	})
}

func (b *Bigtable) forgetWriting(ns, version string) { b.writing.forget(ns, version) }

// Get implements Store. The returned slice is the caller's.
func (b *Bigtable) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	if err := ValidateKey(key); err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, err)
	}
	if b.closed.Load() {
		return nil, fmt.Errorf("get %s/%s: %w", ns, version, errClosed)
	}
	v, err := b.readValue(ctx, btDataPrefix(ns, version)+string(key))
	if err != nil {
		return nil, fmt.Errorf("get %s/%s key %q: %w", ns, version, key, err)
	}
	return v, nil
}

// CountKeys implements Store with a prefix scan that returns row keys only.
func (b *Bigtable) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	if err := validateNV(ns, version); err != nil {
		return 0, fmt.Errorf("count keys: %w", err)
	}
	if b.closed.Load() {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, errClosed)
	}
	var n int64
	err := b.tbl.ReadRows(ctx, bigtable.PrefixRange(btDataPrefix(ns, version)),
		func(bigtable.Row) bool { n++; return true },
		bigtable.RowFilter(bigtable.ChainFilters(bigtable.CellsPerRowLimitFilter(1), bigtable.StripValueFilter())))
	if err != nil {
		return 0, fmt.Errorf("count keys %s/%s: %w", ns, version, err)
	}
	return n, nil
}

// PutManifest implements Store.
func (b *Bigtable) PutManifest(ctx context.Context, m *Manifest) error {
	data, err := manifestJSON(m)
	if err != nil {
		return err
	}
	b.catalog.Lock()
	defer b.catalog.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, errClosed)
	}
	b.forgetWriting(m.Namespace, m.Version)
	if err := b.setValue(ctx, btManifestKey(m.Namespace, m.Version), data); err != nil {
		return fmt.Errorf("put manifest %s/%s: %w", m.Namespace, m.Version, err)
	}
	return nil
}

// Manifest implements Store.
func (b *Bigtable) Manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if b.closed.Load() {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, errClosed)
	}
	m, err := b.manifest(ctx, ns, version)
	if err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", ns, version, err)
	}
	return m, nil
}

// Manifests implements Store.
func (b *Bigtable) Manifests(ctx context.Context, ns string) ([]*Manifest, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	if b.closed.Load() {
		return nil, fmt.Errorf("manifests %s: %w", ns, errClosed)
	}
	prefix := btManifestPrefix(ns)
	var ms []*Manifest
	var derr error
	err := b.tbl.ReadRows(ctx, bigtable.PrefixRange(prefix), func(r bigtable.Row) bool {
		m := new(Manifest)
		if err := json.Unmarshal(btValue(r), m); err != nil {
			derr = fmt.Errorf("decode %q: %w", r.Key()[len(prefix):], err)
			return false
		}
		ms = append(ms, m)
		return true
	}, btValueFilter())
	if err := errors.Join(err, derr); err != nil {
		return nil, fmt.Errorf("manifests %s: %w", ns, err)
	}
	SortManifests(ms)
	return ms, nil
}

// DeleteVersion implements Store; see Bigtable for how it guards against a racing flip.
// The manifest is retired before the rows are dropped, so a DeleteVersion that failed
// half-way is finished by calling it again.
func (b *Bigtable) DeleteVersion(ctx context.Context, ns, version string) error {
	if err := validateNV(ns, version); err != nil {
		return fmt.Errorf("delete version: %w", err)
	}
	b.catalog.Lock()
	defer b.catalog.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, errClosed)
	}
	b.forgetWriting(ns, version)
	if err := b.refuseLive(ctx, ns, version); err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	m, err := b.manifest(ctx, ns, version)
	if err != nil {
		return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
	}
	was := m.State
	if was != StateRetired {
		m.State = StateRetired
		if err := b.putManifest(ctx, m); err != nil {
			return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
		}
		if err := b.refuseLive(ctx, ns, version); err != nil {
			// A flip won the race: give the version its state back.
			m.State = was
			if perr := b.putManifest(ctx, m); perr != nil {
				err = errors.Join(err, fmt.Errorf("restore state %s: %w", was, perr))
			}
			return fmt.Errorf("delete version %s/%s: %w", ns, version, err)
		}
	}
	for _, prefix := range []string{btDataPrefix(ns, version), btShardPrefix(ns, version)} {
		if err := b.admin.DropRowRange(ctx, b.tableID, prefix); err != nil {
			return fmt.Errorf("delete version %s/%s: drop rows %q (needs Bigtable admin rights on table %s): %w",
				ns, version, prefix, b.tableID, err)
		}
	}
	return nil
}

// refuseLive returns ErrConflict if version is the live version of ns.
func (b *Bigtable) refuseLive(ctx context.Context, ns, version string) error {
	live, err := b.live(ctx, ns)
	if err != nil {
		return err
	}
	if live == version {
		return fmt.Errorf("%w: it is the live version", ErrConflict)
	}
	return nil
}

// Live implements Store.
func (b *Bigtable) Live(ctx context.Context, ns string) (string, error) {
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("live: %w", err)
	}
	if b.closed.Load() {
		return "", fmt.Errorf("live %s: %w", ns, errClosed)
	}
	v, err := b.live(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("live %s: %w", ns, err)
	}
	return v, nil
}

// SwapLive implements Store with one CheckAndMutateRow on the pointer row; see Bigtable.
func (b *Bigtable) SwapLive(ctx context.Context, ns, old, next string) error {
	if err := validateSwap(ns, old, next); err != nil {
		return err
	}
	b.catalog.Lock()
	defer b.catalog.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("swap live %s: %w", ns, errClosed)
	}
	m, err := b.manifest(ctx, ns, next)
	if err != nil {
		return fmt.Errorf("swap live %s to %s: %w", ns, next, err)
	}
	if m.State != StateComplete {
		return fmt.Errorf("swap live %s to %s: version is %s, only a complete version can be made live", ns, next, m.State)
	}

	set := bigtable.NewMutation()
	set.Set(btFamily, btColValue, btCellTime, []byte(next))
	var mut *bigtable.Mutation
	if old == "" {
		mut = bigtable.NewCondMutation(btColumnFilter(btColValue), nil, set) // set only if absent
	} else {
		mut = bigtable.NewCondMutation(btExactFilter(btColValue, old), set, nil)
	}
	var matched bool
	if err := b.tbl.Apply(ctx, btPointerKey(ns), mut, bigtable.GetCondMutationResult(&matched)); err != nil {
		return fmt.Errorf("swap live %s to %s: %w", ns, next, err)
	}
	if matched == (old == "") {
		cur, err := b.live(ctx, ns)
		if err != nil {
			return fmt.Errorf("swap live %s from %q to %q: %w", ns, old, next, ErrConflict)
		}
		return fmt.Errorf("swap live %s from %q to %q: %w: live is %q", ns, old, next, ErrConflict, cur)
	}
	return nil
}

// AcquireLease implements Store; see Bigtable for the takeover of an expired lease.
func (b *Bigtable) AcquireLease(ctx context.Context, ns, holder string, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(ns, holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	if b.closed.Load() {
		return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, errClosed)
	}
	// Each round either returns or lost a conditional write to another writer, which
	// then holds an unexpired lease that the next read reports. More rounds only cover
	// a holder that keeps releasing in between.
	for range 4 {
		cur, ok, err := b.readLease(ctx, ns)
		if err != nil {
			return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
		}
		now := time.Now()
		if ok && cur.Expires.After(now) {
			return Lease{}, &LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
		}
		token, err := randomToken()
		if err != nil {
			return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
		}
		l := Lease{Namespace: ns, Holder: holder, Token: token, Expires: now.Add(ttl).UTC()}
		set := bigtable.NewMutation()
		set.Set(btFamily, btColHolder, btCellTime, []byte(l.Holder))
		set.Set(btFamily, btColToken, btCellTime, []byte(l.Token))
		set.Set(btFamily, btColExpires, btCellTime, btExpires(l.Expires))
		var mut *bigtable.Mutation
		if ok {
			// Expired: take it over only if it is still exactly the lease we read.
			mut = bigtable.NewCondMutation(btLeaseIs(cur), set, nil)
		} else {
			// Free: take it only if nobody took it since we read.
			mut = bigtable.NewCondMutation(bigtable.PassAllFilter(), nil, set)
		}
		var matched bool
		if err := b.tbl.Apply(ctx, btLeaseKey(ns), mut, bigtable.GetCondMutationResult(&matched)); err != nil {
			return Lease{}, fmt.Errorf("acquire lease %s: %w", ns, err)
		}
		if matched == ok {
			return l, nil
		}
	}
	return Lease{}, fmt.Errorf("acquire lease %s: %w: contended, try again", ns, ErrLeaseHeld)
}

// RenewLease implements Store. As with Pebble and Redis, an expired lease is lost even
// before anyone takes it over. The new expiry is written only if the row is still exactly
// the unexpired lease that was read, so a renewal and a takeover never both succeed.
func (b *Bigtable) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := checkLeaseArgs(l.Namespace, l.Holder, ttl); err != nil {
		return Lease{}, fmt.Errorf("renew lease: %w", err)
	}
	if b.closed.Load() {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, errClosed)
	}
	lost := fmt.Errorf("renew lease %s of %s: %w", l.Namespace, l.Holder, ErrLeaseLost)
	cur, ok, err := b.readLease(ctx, l.Namespace)
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	now := time.Now()
	if !ok || cur.Token != l.Token || !cur.Expires.After(now) {
		return Lease{}, lost
	}
	l.Expires = now.Add(ttl).UTC()
	set := bigtable.NewMutation()
	set.Set(btFamily, btColExpires, btCellTime, btExpires(l.Expires))
	var matched bool
	mut := bigtable.NewCondMutation(btLeaseIs(cur), set, nil)
	if err := b.tbl.Apply(ctx, btLeaseKey(l.Namespace), mut, bigtable.GetCondMutationResult(&matched)); err != nil {
		return Lease{}, fmt.Errorf("renew lease %s: %w", l.Namespace, err)
	}
	if !matched {
		return Lease{}, lost
	}
	return l, nil
}

// ReleaseLease implements Store: the lease row is deleted only if it still carries l's token.
func (b *Bigtable) ReleaseLease(ctx context.Context, l Lease) error {
	if err := ValidateNamespace(l.Namespace); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	if b.closed.Load() {
		return fmt.Errorf("release lease %s: %w", l.Namespace, errClosed)
	}
	if l.Token == "" {
		return nil
	}
	del := bigtable.NewMutation()
	del.DeleteRow()
	mut := bigtable.NewCondMutation(btExactFilter(btColToken, l.Token), del, nil)
	if err := b.tbl.Apply(ctx, btLeaseKey(l.Namespace), mut); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Namespace, err)
	}
	return nil
}

// readLease reads the lease row; ok is false when there is none.
func (b *Bigtable) readLease(ctx context.Context, ns string) (l Lease, ok bool, err error) {
	r, err := b.tbl.ReadRow(ctx, btLeaseKey(ns), bigtable.RowFilter(bigtable.LatestNFilter(1)))
	if err != nil {
		return Lease{}, false, err
	}
	l.Namespace = ns
	for _, it := range r[btFamily] {
		switch strings.TrimPrefix(it.Column, btFamily+":") {
		case btColHolder:
			l.Holder = string(it.Value)
		case btColToken:
			l.Token = string(it.Value)
		case btColExpires:
			if l.Expires, err = time.Parse(time.RFC3339Nano, string(it.Value)); err != nil {
				return Lease{}, false, fmt.Errorf("decode lease expiry %q: %w", it.Value, err)
			}
		}
	}
	if len(r[btFamily]) > 0 && l.Token == "" {
		return Lease{}, false, fmt.Errorf("lease row %q has no token: delete it by hand", btLeaseKey(ns))
	}
	return l, l.Token != "", nil
}

// btExpires encodes a lease expiry; btLeaseIs matches it exactly.
func btExpires(t time.Time) []byte { return []byte(t.UTC().Format(time.RFC3339Nano)) }

// btLeaseIs matches the lease row only while it still carries both the token and the
// expiry of l: a condition filter is the AND of two cell predicates, evaluated by
// CheckAndMutateRow atomically with its mutation.
func btLeaseIs(l Lease) bigtable.Filter {
	return bigtable.ConditionFilter(
		btExactFilter(btColToken, l.Token),
		btExactFilter(btColExpires, string(btExpires(l.Expires))),
		nil)
}

// CommitShard implements Store: one row per shard, so concurrent commits of different
// shards, from any process, touch different rows.
func (b *Bigtable) CommitShard(ctx context.Context, ns, version string, s Shard) error {
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
	// Shared, like WriteRows: a shard row cannot slip in after DeleteVersion dropped them
	// (within this process).
	b.catalog.RLock()
	defer b.catalog.RUnlock()
	if b.closed.Load() {
		return fmt.Errorf("commit shard %s/%s: %w", ns, version, errClosed)
	}
	if err := b.setValue(ctx, btShardPrefix(ns, version)+s.ID, data); err != nil {
		return fmt.Errorf("commit shard %s/%s %q: %w", ns, version, s.ID, err)
	}
	return nil
}

// Shards implements Store; row keys sort by shard id.
func (b *Bigtable) Shards(ctx context.Context, ns, version string) ([]Shard, error) {
	if err := validateNV(ns, version); err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	if b.closed.Load() {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, errClosed)
	}
	prefix := btShardPrefix(ns, version)
	var out []Shard
	var derr error
	err := b.tbl.ReadRows(ctx, bigtable.PrefixRange(prefix), func(r bigtable.Row) bool {
		var s Shard
		if err := json.Unmarshal(btValue(r), &s); err != nil {
			derr = fmt.Errorf("decode shard %q: %w", r.Key()[len(prefix):], err)
			return false
		}
		out = append(out, s)
		return true
	}, btValueFilter())
	if err := errors.Join(err, derr); err != nil {
		return nil, fmt.Errorf("shards %s/%s: %w", ns, version, err)
	}
	return out, nil
}

// Close implements Store. It waits for writes and catalog changes in flight; calling it
// again is a no-op.
func (b *Bigtable) Close() error {
	b.catalog.Lock()
	defer b.catalog.Unlock()
	if b.closed.Swap(true) {
		return nil
	}
	if err := b.closeClients(); err != nil {
		return fmt.Errorf("close bigtable store %s: %w", b.tableID, err)
	}
	return nil
}

func (b *Bigtable) closeClients() error {
	return errors.Join(b.client.Close(), b.admin.Close())
}

// manifest reads a manifest; the caller has validated ns and version.
func (b *Bigtable) manifest(ctx context.Context, ns, version string) (*Manifest, error) {
	data, err := b.readValue(ctx, btManifestKey(ns, version))
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

func (b *Bigtable) putManifest(ctx context.Context, m *Manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.setValue(ctx, btManifestKey(m.Namespace, m.Version), data)
}

// live reads the live pointer, "" when there is none.
func (b *Bigtable) live(ctx context.Context, ns string) (string, error) {
	v, err := b.readValue(ctx, btPointerKey(ns))
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	return string(v), err
}

// readValue reads the value cell of a row, ErrNotFound when the row has none.
func (b *Bigtable) readValue(ctx context.Context, row string) ([]byte, error) {
	r, err := b.tbl.ReadRow(ctx, row, btValueFilter())
	if err != nil {
		return nil, err
	}
	if len(r[btFamily]) == 0 {
		return nil, ErrNotFound
	}
	return btValue(r), nil
}

// setValue writes the value cell of a row.
func (b *Bigtable) setValue(ctx context.Context, row string, value []byte) error {
	m := bigtable.NewMutation()
	m.Set(btFamily, btColValue, btCellTime, value)
	return b.tbl.Apply(ctx, row, m)
}

// btValueFilter reads the newest value cell of a row only.
func btValueFilter() bigtable.ReadOption {
	return bigtable.RowFilter(bigtable.ChainFilters(btColumnFilter(btColValue), bigtable.LatestNFilter(1)))
}

// btValue is the value cell of a row read with btValueFilter, never nil.
func btValue(r bigtable.Row) []byte {
	items := r[btFamily]
	if len(items) == 0 || items[0].Value == nil {
		return []byte{}
	}
	return items[0].Value
}

// btColumnFilter matches the cells of one column of the store's family.
func btColumnFilter(column string) bigtable.Filter {
	return bigtable.ChainFilters(
		bigtable.FamilyFilter("^"+btFamily+"$"),
		bigtable.ColumnFilter("^"+regexp.QuoteMeta(column)+"$"))
}

// btExactFilter matches the newest cell of column if its value is exactly value. Bigtable
// regular expressions are RE2 over bytes; value is always ASCII here (version ids, tokens).
func btExactFilter(column, value string) bigtable.Filter {
	return bigtable.ChainFilters(btColumnFilter(column), bigtable.LatestNFilter(1),
		bigtable.ValueFilter("^"+regexp.QuoteMeta(value)+"$"))
}

func btDataPrefix(ns, version string) string  { return "d#" + ns + "#" + version + "#" }
func btManifestPrefix(ns string) string       { return "m#" + ns + "#" }
func btManifestKey(ns, version string) string { return btManifestPrefix(ns) + version }
func btPointerKey(ns string) string           { return "p#" + ns }
func btLeaseKey(ns string) string             { return "l#" + ns }
func btShardPrefix(ns, version string) string { return "s#" + ns + "#" + version + "#" }
