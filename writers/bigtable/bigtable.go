// Package bigtable is the Bigtable store driver, for bigtable://PROJECT/INSTANCE/TABLE
// URLs: import it (or writers/all) and writers.Open opens them.
package bigtable

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bt "cloud.google.com/go/bigtable"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/internal/driverkit"
)

func init() {
	writers.Register(openURL, "bigtable")
}

// Defaults for the bulk writer (see Driver.MaxInFlight and Driver.MutationsPerRequest).
const (
	DefaultMaxInFlight         = 4
	DefaultMutationsPerRequest = 5000
)

// Column layout of the Bigtable store: one column family, and in it one column per cell
// kind. Every cell is written at timestamp 0 (btCellTime), see Driver.
const (
	btFamily     = "p"
	btColValue   = "v"       // data value, manifest JSON, live pointer, commit JSON
	btColHolder  = "holder"  // lease: who holds it
	btColToken   = "token"   // lease: unique per acquisition
	btColExpires = "expires" // lease: RFC 3339 UTC, compared in Go
	btColRelease = "release" // release record: JSON
	btColRev     = "rev"     // release record: its revision, in decimal
)

// btCellTime is the timestamp of every cell the store writes. A fixed timestamp makes a
// rewrite of a cell replace it in place (Bigtable keeps one cell per column and
// timestamp), so "last write wins" needs no clock, and makes every mutation idempotent,
// so the client library may retry failed ApplyBulk entries.
const btCellTime = bt.Timestamp(0)

// Driver is the store for bigtable://PROJECT/INSTANCE/TABLE: one table holds every
// namespace. Row keys, all in the column family "p":
//
//	d#<ns>#<version>#<key>  column v: the value          rows of a version
//	m#<ns>#<version>        column v: manifest JSON      the catalog
//	p#<ns>                  column v: version id         the live pointer
//	l#<ns>                  columns holder, token, expires   the writer lease
//	s#<ns>#<version>#<id>   column v: Commit JSON        committed work
//	r#<ns>                  columns release (JSON), rev (decimal)   the release record
//	c#<ns>#<release>#<interval>  a column per counter: int64    release counters
//	k#<ns>#<release>#<name> a column per replica: the sketch    release sketches
//
// Namespaces, version ids and release ids cannot contain '#' (ValidateNamespace,
// ValidateVersion), so the '#' after each ends it: the prefix "d#a#v1#" of a/v1 is not a
// prefix of any row of namespace "ab" or version "v10". Keys, commit ids and sketch names
// come last and may contain anything, '#' and NUL included; a row that ends in one of them
// is still read whole by its exact key, never as a prefix. The interval of a counter row
// is written as 20 digits, zero-padded ("%020d"), so that no interval is a prefix of
// another and the rows of one release sort by interval (negative ones, which the release
// code never uses, come first). All rows of a version lie under one prefix: CountKeys is
// one prefix scan, and DeleteVersion one DropRowRange per prefix.
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
// answer for driverkit.WritingTTL (one second) before reading the manifest again. Only
// "writing" is cached, and every PutManifest and DeleteVersion through this *Driver
// forgets the cached answer first. So within one process a version stops taking rows as
// soon as its manifest leaves writing, exactly as with Pebble (an in-process lock orders
// the two); a manifest changed by another process is noticed within a second. Rows that
// land in that second belong to a version that the other process just completed, failed
// or retired while this one was still writing it, which the commit protocol does not do.
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
//
// # Releases
//
// The release record of a namespace is the row r#<ns>: its JSON in column release and its
// revision, in decimal, in column rev. SwapRelease is one CheckAndMutateRow on that row,
// like SwapLive: for old > 0 the predicate matches the rev cell whose value is exactly
// old and the true branch sets both cells; for old == 0 it matches any rev cell and the
// set is in the false branch. So any number of replicas, in any number of processes, may
// race to change the record and exactly one of those starting from the same revision
// wins; the client library never retries a conditional mutation, so a winner is never
// told that it lost to itself. Nothing announces a swap: this driver has no FlipWatcher,
// and replicas poll the record as they poll the live pointer.
//
// The counters of one judgement interval are the columns of c#<ns>#<release>#<interval>,
// one per counter name, each an 8-byte big-endian int64 as Bigtable's increment keeps it.
// AddCounts is one ReadModifyWriteRow of IncrementInt64 rules, which the server applies to
// the row atomically (all the counters of one call together) and serially with other
// increments. An increment is not idempotent, so it is never retried: an AddCounts that
// failed with a transport error may or may not have counted. Increments write their cells
// at the server's time, not at timestamp 0; the family keeps one version, and Counts reads
// the newest cell of each column.
//
// A sketch is the cell of column <replica> in row k#<ns>#<release>#<name>, at timestamp 0
// so that a replica's next sketch replaces its last one; Sketches reads the row. Release
// rows, counters and sketches are never deleted by the store.
type Driver struct {
	// MaxInFlight bounds the ApplyBulk requests one WriteRows sends at once; 0 means
	// DefaultMaxInFlight. Set it before the store is used.
	MaxInFlight int
	// MutationsPerRequest bounds the rows of one ApplyBulk request; 0 means
	// DefaultMutationsPerRequest. Set it before the store is used.
	MutationsPerRequest int

	project, instance, tableID string
	client                     *bt.Client
	admin                      *bt.AdminClient
	tbl                        *bt.Table

	// catalog orders row writes against catalog changes within this process, as in
	// Pebble: WriteRows and CommitWork hold it shared, PutManifest, SwapLive and
	// DeleteVersion exclusively.
	catalog sync.RWMutex

	writing driverkit.WritingCache
}

var (
	_ writers.Driver     = (*Driver)(nil)
	_ writers.Describer  = (*Driver)(nil)
	_ writers.ManyGetter = (*Driver)(nil)
	_ writers.Releaser   = (*Driver)(nil)
)

// Open opens the store a bigtable://PROJECT/INSTANCE/TABLE URL names, creating the table
// and its column family when they are missing and the credentials allow it. opts go to
// both the data and the admin client. When BIGTABLE_EMULATOR_HOST is set the client
// library connects to that emulator instead of Google Cloud. writers.Open opens the same
// URLs, without options.
func Open(ctx context.Context, url string, opts ...option.ClientOption) (*writers.Store, error) {
	u, err := writers.ParseURL(url)
	if err != nil {
		if what := missingPart(url); what != "" {
			return nil, fmt.Errorf("open bigtable store: %w (%s)", err, what)
		}
		return nil, fmt.Errorf("open bigtable store: %w", err)
	}
	d, err := open(ctx, u, opts...)
	if err != nil {
		return nil, err
	}
	return writers.NewStore(d, u), nil
}

// openURL is the writers.OpenFunc of the bigtable scheme. opts.MustExist changes nothing:
// a missing table is created, as Open does (only Pebble tells a store never written from
// an empty one).
func openURL(ctx context.Context, u writers.URL, _ writers.OpenOptions) (writers.Driver, error) {
	return open(ctx, u)
}

func open(ctx context.Context, u writers.URL, opts ...option.ClientOption) (*Driver, error) {
	project, instance, table, err := splitURL(u)
	if err != nil {
		return nil, fmt.Errorf("open bigtable store: %w", err)
	}
	client, err := bt.NewClient(ctx, project, instance, opts...)
	if err != nil {
		return nil, fmt.Errorf("open bigtable store %s: %w", u.Redacted(), err)
	}
	admin, err := bt.NewAdminClient(ctx, project, instance, opts...)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open bigtable store %s: admin client: %w", u.Redacted(), err)
	}
	d := &Driver{
		project: project, instance: instance, tableID: table,
		client: client, admin: admin, tbl: client.Open(table),
	}
	if err := d.ensureTable(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("open bigtable store %s: %w", u.Redacted(), err)
	}
	return d, nil
}

const wantURL = "want bigtable://PROJECT/INSTANCE/TABLE"

// splitURL takes PROJECT, INSTANCE and TABLE from a parsed URL, naming the part that is
// missing.
func splitURL(u writers.URL) (project, instance, table string, err error) {
	if u.Scheme != "bigtable" {
		return "", "", "", fmt.Errorf("store URL %q: %s", u.Redacted(), wantURL)
	}
	parts, problem := urlParts(u.Hosts, u.Path)
	if problem != "" {
		return "", "", "", fmt.Errorf("store URL %q: %s: %s", u.Redacted(), problem, wantURL)
	}
	return parts[0], parts[1], parts[2], nil
}

// urlParts returns PROJECT, INSTANCE and TABLE from the hosts and path of a URL, or says
// what is wrong with them: "missing INSTANCE".
func urlParts(hosts []string, path string) (parts []string, problem string) {
	if len(hosts) > 1 {
		return nil, "several projects"
	}
	rest := strings.Split(path, "/")
	if len(rest) > 2 {
		return nil, "too many path parts"
	}
	parts = append(append(parts, hosts...), rest...)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	for i, name := range []string{"PROJECT", "INSTANCE", "TABLE"} {
		if parts[i] == "" {
			return nil, "missing " + name
		}
	}
	return parts, ""
}

// missingPart names what a bigtable: URL that writers.ParseURL refused lacks ("missing
// INSTANCE"), which ParseURL does not say; "" when it cannot tell. It takes the URL apart
// only for this message: what is opened is always what ParseURL returned.
func missingPart(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !strings.EqualFold(scheme, "bigtable") {
		return ""
	}
	head := rest
	if i := strings.IndexByte(head, '?'); i >= 0 {
		head = head[:i]
	}
	if i := strings.LastIndexByte(head, '@'); i >= 0 {
		rest = rest[i+1:] // past the userinfo, which is never shown
	}
	authority, path, _ := strings.Cut(rest, "/")
	_, problem := urlParts(strings.Split(authority, ","), path)
	return problem
}

// ensureTable creates the table and the column family when they are missing.
func (d *Driver) ensureTable(ctx context.Context) error {
	family := bt.Family{GCPolicy: bt.MaxVersionsPolicy(1)}
	info, err := d.admin.TableInfo(ctx, d.tableID)
	switch status.Code(err) {
	case codes.OK:
		for _, f := range info.FamilyInfos {
			if f.Name == btFamily {
				return nil
			}
		}
		err := d.admin.CreateColumnFamilyWithConfig(ctx, d.tableID, btFamily, family)
		if err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("table %s has no column family %q and it could not be created: create it with "+
				"cbt -project %s -instance %s createfamily %s %s && cbt -project %s -instance %s setgcpolicy %s %s maxversions=1: %w",
				d.tableID, btFamily, d.project, d.instance, d.tableID, btFamily, d.project, d.instance, d.tableID, btFamily, err)
		}
		return nil
	case codes.NotFound:
		conf := &bt.TableConf{TableID: d.tableID, ColumnFamilies: map[string]bt.Family{btFamily: family}}
		err := d.admin.CreateTableFromConf(ctx, conf)
		if status.Code(err) == codes.AlreadyExists {
			return d.ensureTable(ctx) // created concurrently; check its family
		}
		if err != nil {
			return fmt.Errorf("table %s does not exist and it could not be created: create it with "+
				"cbt -project %s -instance %s createtable %s families=%s:maxversions=1: %w",
				d.tableID, d.project, d.instance, d.tableID, btFamily, err)
		}
		return nil
	case codes.PermissionDenied:
		// Data-only credentials cannot inspect the table: check that it answers reads.
		_, rerr := d.tbl.ReadRow(ctx, btPointerKey("-"))
		if status.Code(rerr) == codes.NotFound {
			return fmt.Errorf("table %s does not exist and these credentials cannot create it: create it with "+
				"cbt -project %s -instance %s createtable %s families=%s:maxversions=1",
				d.tableID, d.project, d.instance, d.tableID, btFamily)
		}
		if rerr != nil {
			return fmt.Errorf("table %s: %w", d.tableID, rerr)
		}
		return nil
	default:
		return fmt.Errorf("table %s: %w", d.tableID, err)
	}
}

// Table is the Bigtable table the store lives in.
func (d *Driver) Table() string { return d.tableID }

// Describe implements writers.Describer: "bigtable PROJECT/INSTANCE/TABLE".
func (d *Driver) Describe() string {
	return "bigtable " + d.project + "/" + d.instance + "/" + d.tableID
}

// WriteRows implements writers.Driver; see Driver for how a batch is split and sent.
func (d *Driver) WriteRows(ctx context.Context, ns, version string, rows writers.Rows) error {
	d.catalog.RLock()
	defer d.catalog.RUnlock()
	if err := d.checkWriting(ctx, ns, version); err != nil {
		return err
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

	per := d.MutationsPerRequest
	if per <= 0 {
		per = DefaultMutationsPerRequest
	}
	inFlight := d.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultMaxInFlight
	}
	prefix := btDataPrefix(ns, version)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(inFlight)
	start := 0
	for ; start < len(idx) && gctx.Err() == nil; start += per {
		chunk := idx[start:min(start+per, len(idx))]
		g.Go(func() error {
			keys := make([]string, len(chunk))
			muts := make([]*bt.Mutation, len(chunk))
			for j, i := range chunk {
				keys[j] = prefix + string(rows.Keys[i])
				m := bt.NewMutation()
				m.Set(btFamily, btColValue, btCellTime, rows.Values[i])
				muts[j] = m
			}
			errs, err := d.tbl.ApplyBulk(gctx, keys, muts)
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
	return err
}

// checkWriting returns nil if the manifest of ns/version is in state writing.
func (d *Driver) checkWriting(ctx context.Context, ns, version string) error {
	return d.writing.Check(ctx, ns, version, func(ctx context.Context) (*writers.Manifest, error) {
		return d.manifest(ctx, ns, version)
	})
}

// Get implements writers.Driver. The returned slice is the caller's.
func (d *Driver) Get(ctx context.Context, ns, version string, key []byte) ([]byte, error) {
	return d.readValue(ctx, btDataPrefix(ns, version)+string(key))
}

// GetMany implements writers.ManyGetter with one ReadRows of the keys' rows, read with
// Get's filter. A key asked for twice is asked of the server once, and each answer is a
// slice of its own.
func (d *Driver) GetMany(ctx context.Context, ns, version string, keys [][]byte) ([][]byte, error) {
	prefix := btDataPrefix(ns, version)
	type answer struct {
		value []byte
		given bool
	}
	found := make(map[string]*answer, len(keys))
	rows := make(bt.RowList, 0, len(keys))
	for _, k := range keys {
		row := prefix + string(k)
		if _, dup := found[row]; !dup {
			found[row] = nil
			rows = append(rows, row)
		}
	}
	err := d.tbl.ReadRows(ctx, rows, func(r bt.Row) bool {
		found[r.Key()] = &answer{value: btValue(r)}
		return true
	}, btValueFilter())
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		a := found[prefix+string(k)]
		switch {
		case a == nil: // missing
		case a.given:
			out[i] = bytes.Clone(a.value)
		default:
			out[i], a.given = a.value, true
		}
	}
	return out, nil
}

// GetChain implements writers.ChainGetter with one ReadRows of every level's row keys:
// a chain costs one round trip like a single version. The first level that holds a key
// answers it.
func (d *Driver) GetChain(ctx context.Context, ns string, chain []string, keys [][]byte) ([][]byte, []int, error) {
	found := make(map[string][]byte, len(keys)*len(chain))
	rows := make(bt.RowList, 0, len(keys)*len(chain))
	for _, v := range chain {
		prefix := btDataPrefix(ns, v)
		for _, k := range keys {
			row := prefix + string(k)
			if _, dup := found[row]; !dup {
				found[row] = nil
				rows = append(rows, row)
			}
		}
	}
	err := d.tbl.ReadRows(ctx, rows, func(r bt.Row) bool {
		found[r.Key()] = btValue(r)
		return true
	}, btValueFilter())
	if err != nil {
		return nil, nil, err
	}
	values, from := make([][]byte, len(keys)), make([]int, len(keys))
	for i, k := range keys {
		from[i] = -1
		for level, v := range chain {
			if val := found[btDataPrefix(ns, v)+string(k)]; val != nil {
				values[i], from[i] = bytes.Clone(val), level
				break
			}
		}
	}
	return values, from, nil
}

// ScanRows implements writers.Scanner with a prefix ReadRows of the version's rows, in
// batches of scanBatch.
func (d *Driver) ScanRows(ctx context.Context, ns, version string, fn func(writers.Rows) error) error {
	prefix := btDataPrefix(ns, version)
	var rows writers.Rows
	var ferr error
	err := d.tbl.ReadRows(ctx, bt.PrefixRange(prefix), func(r bt.Row) bool {
		rows.Keys = append(rows.Keys, []byte(strings.TrimPrefix(r.Key(), prefix)))
		rows.Values = append(rows.Values, btValue(r))
		if rows.Len() >= scanBatch {
			ferr = fn(rows)
			rows = writers.Rows{}
		}
		return ferr == nil
	}, btValueFilter())
	if ferr != nil {
		return ferr
	}
	if err != nil {
		return err
	}
	if rows.Len() > 0 {
		return fn(rows)
	}
	return nil
}

// scanBatch is how many rows ScanRows passes at once.
const scanBatch = 4096

// CountKeys implements writers.Driver with a prefix scan that returns row keys only.
func (d *Driver) CountKeys(ctx context.Context, ns, version string) (int64, error) {
	var n int64
	err := d.tbl.ReadRows(ctx, bt.PrefixRange(btDataPrefix(ns, version)),
		func(bt.Row) bool { n++; return true },
		bt.RowFilter(bt.ChainFilters(bt.CellsPerRowLimitFilter(1), bt.StripValueFilter())))
	if err != nil {
		return 0, err
	}
	return n, nil
}

// PutManifest implements writers.Driver.
func (d *Driver) PutManifest(ctx context.Context, m *writers.Manifest, data []byte) error {
	d.catalog.Lock()
	defer d.catalog.Unlock()
	d.writing.Forget(m.Namespace, m.Version)
	return d.setValue(ctx, btManifestKey(m.Namespace, m.Version), data)
}

// Manifest implements writers.Driver.
func (d *Driver) Manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	return d.manifest(ctx, ns, version)
}

// Manifests implements writers.Driver.
func (d *Driver) Manifests(ctx context.Context, ns string) ([]*writers.Manifest, error) {
	prefix := btManifestPrefix(ns)
	var ms []*writers.Manifest
	var derr error
	err := d.tbl.ReadRows(ctx, bt.PrefixRange(prefix), func(r bt.Row) bool {
		m := new(writers.Manifest)
		if err := json.Unmarshal(btValue(r), m); err != nil {
			derr = fmt.Errorf("decode %q: %w", r.Key()[len(prefix):], err)
			return false
		}
		ms = append(ms, m)
		return true
	}, btValueFilter())
	if err := errors.Join(err, derr); err != nil {
		return nil, err
	}
	return ms, nil
}

// DeleteVersion implements writers.Driver; see Driver for how it guards against a racing
// flip. The manifest is retired before the rows are dropped, so a DeleteVersion that
// failed half-way is finished by calling it again.
func (d *Driver) DeleteVersion(ctx context.Context, ns, version string) error {
	d.catalog.Lock()
	defer d.catalog.Unlock()
	d.writing.Forget(ns, version)
	if err := d.refuseLive(ctx, ns, version); err != nil {
		return err
	}
	m, err := d.manifest(ctx, ns, version)
	if err != nil {
		return err
	}
	was := m.State
	if was != writers.StateRetired {
		m.State = writers.StateRetired
		if err := d.putManifest(ctx, m); err != nil {
			return err
		}
		if err := d.refuseLive(ctx, ns, version); err != nil {
			// A flip won the race: give the version its state back.
			m.State = was
			if perr := d.putManifest(ctx, m); perr != nil {
				err = errors.Join(err, fmt.Errorf("restore state %s: %w", was, perr))
			}
			return err
		}
	}
	for _, prefix := range []string{btDataPrefix(ns, version), btCommitPrefix(ns, version)} {
		if err := d.admin.DropRowRange(ctx, d.tableID, prefix); err != nil {
			return fmt.Errorf("drop rows %q (needs Bigtable admin rights on table %s): %w", prefix, d.tableID, err)
		}
	}
	return nil
}

// refuseLive returns ErrConflict if version is the live version of ns.
func (d *Driver) refuseLive(ctx context.Context, ns, version string) error {
	live, err := d.live(ctx, ns)
	if err != nil {
		return err
	}
	if live == version {
		return fmt.Errorf("%w: it is the live version", writers.ErrConflict)
	}
	return nil
}

// Live implements writers.Driver.
func (d *Driver) Live(ctx context.Context, ns string) (string, error) {
	return d.live(ctx, ns)
}

// SwapLive implements writers.Driver with one CheckAndMutateRow on the pointer row; see
// Driver.
func (d *Driver) SwapLive(ctx context.Context, ns, old, next string) error {
	d.catalog.Lock()
	defer d.catalog.Unlock()
	m, err := d.manifest(ctx, ns, next)
	if err != nil {
		return err
	}
	if m.State != writers.StateComplete {
		return fmt.Errorf("version is %s: %w", m.State, writers.ErrNotComplete)
	}

	set := bt.NewMutation()
	set.Set(btFamily, btColValue, btCellTime, []byte(next))
	var mut *bt.Mutation
	if old == "" {
		mut = bt.NewCondMutation(btColumnFilter(btColValue), nil, set) // set only if absent
	} else {
		mut = bt.NewCondMutation(btExactFilter(btColValue, old), set, nil)
	}
	var matched bool
	if err := d.tbl.Apply(ctx, btPointerKey(ns), mut, bt.GetCondMutationResult(&matched)); err != nil {
		return err
	}
	if matched == (old == "") {
		cur, err := d.live(ctx, ns)
		if err != nil {
			return fmt.Errorf("from %q: %w", old, writers.ErrConflict)
		}
		return fmt.Errorf("from %q: %w: live is %q", old, writers.ErrConflict, cur)
	}
	return nil
}

// AcquireLease implements writers.Driver; see Driver for the takeover of an expired lease.
func (d *Driver) AcquireLease(ctx context.Context, ns, holder, token string, ttl time.Duration) (writers.Lease, error) {
	// Each round either returns or lost a conditional write to another writer, which
	// then holds an unexpired lease that the next read reports. More rounds only cover
	// a holder that keeps releasing in between. A lost round wrote nothing, so every
	// round may use the same token.
	for range 4 {
		cur, ok, err := d.readLease(ctx, ns)
		if err != nil {
			return writers.Lease{}, err
		}
		now := time.Now()
		if ok && cur.Expires.After(now) {
			return writers.Lease{}, &writers.LeaseHeldError{Namespace: ns, Holder: cur.Holder, Expires: cur.Expires}
		}
		l := writers.Lease{Namespace: ns, Holder: holder, Token: token, Expires: now.Add(ttl).UTC()}
		set := bt.NewMutation()
		set.Set(btFamily, btColHolder, btCellTime, []byte(l.Holder))
		set.Set(btFamily, btColToken, btCellTime, []byte(l.Token))
		set.Set(btFamily, btColExpires, btCellTime, btExpires(l.Expires))
		var mut *bt.Mutation
		if ok {
			// Expired: take it over only if it is still exactly the lease we read.
			mut = bt.NewCondMutation(btLeaseIs(cur), set, nil)
		} else {
			// Free: take it only if nobody took it since we read.
			mut = bt.NewCondMutation(bt.PassAllFilter(), nil, set)
		}
		var matched bool
		if err := d.tbl.Apply(ctx, btLeaseKey(ns), mut, bt.GetCondMutationResult(&matched)); err != nil {
			return writers.Lease{}, err
		}
		if matched == ok {
			return l, nil
		}
	}
	return writers.Lease{}, fmt.Errorf("%w: contended, try again", writers.ErrLeaseHeld)
}

// RenewLease implements writers.Driver. As with Pebble and Redis, an expired lease is
// lost even before anyone takes it over. The new expiry is written only if the row is
// still exactly the unexpired lease that was read, so a renewal and a takeover never both
// succeed.
func (d *Driver) RenewLease(ctx context.Context, l writers.Lease, ttl time.Duration) (writers.Lease, error) {
	cur, ok, err := d.readLease(ctx, l.Namespace)
	if err != nil {
		return writers.Lease{}, err
	}
	now := time.Now()
	if !ok || cur.Token != l.Token || !cur.Expires.After(now) {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	l.Expires = now.Add(ttl).UTC()
	set := bt.NewMutation()
	set.Set(btFamily, btColExpires, btCellTime, btExpires(l.Expires))
	var matched bool
	mut := bt.NewCondMutation(btLeaseIs(cur), set, nil)
	if err := d.tbl.Apply(ctx, btLeaseKey(l.Namespace), mut, bt.GetCondMutationResult(&matched)); err != nil {
		return writers.Lease{}, err
	}
	if !matched {
		return writers.Lease{}, writers.ErrLeaseLost
	}
	return l, nil
}

// ReleaseLease implements writers.Driver: the lease row is deleted only if it still
// carries l's token.
func (d *Driver) ReleaseLease(ctx context.Context, l writers.Lease) error {
	if l.Token == "" {
		return nil
	}
	del := bt.NewMutation()
	del.DeleteRow()
	mut := bt.NewCondMutation(btExactFilter(btColToken, l.Token), del, nil)
	return d.tbl.Apply(ctx, btLeaseKey(l.Namespace), mut)
}

// readLease reads the lease row; ok is false when there is none.
func (d *Driver) readLease(ctx context.Context, ns string) (l writers.Lease, ok bool, err error) {
	r, err := d.tbl.ReadRow(ctx, btLeaseKey(ns), bt.RowFilter(bt.LatestNFilter(1)))
	if err != nil {
		return writers.Lease{}, false, err
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
				return writers.Lease{}, false, fmt.Errorf("decode lease expiry %q: %w", it.Value, err)
			}
		}
	}
	if len(r[btFamily]) > 0 && l.Token == "" {
		return writers.Lease{}, false, fmt.Errorf("lease row %q has no token: delete it by hand", btLeaseKey(ns))
	}
	return l, l.Token != "", nil
}

// btExpires encodes a lease expiry; btLeaseIs matches it exactly.
func btExpires(t time.Time) []byte { return []byte(t.UTC().Format(time.RFC3339Nano)) }

// btLeaseIs matches the lease row only while it still carries both the token and the
// expiry of l: a condition filter is the AND of two cell predicates, evaluated by
// CheckAndMutateRow atomically with its mutation.
func btLeaseIs(l writers.Lease) bt.Filter {
	return bt.ConditionFilter(
		btExactFilter(btColToken, l.Token),
		btExactFilter(btColExpires, string(btExpires(l.Expires))),
		nil)
}

// CommitWork implements writers.Driver: one row per commit, so concurrent commits of
// different work, from any process, touch different rows.
func (d *Driver) CommitWork(ctx context.Context, ns, version string, c writers.Commit, data []byte) error {
	// Shared, like WriteRows: a commit row cannot slip in after DeleteVersion dropped them
	// (within this process).
	d.catalog.RLock()
	defer d.catalog.RUnlock()
	return d.setValue(ctx, btCommitPrefix(ns, version)+c.ID, data)
}

// Commits implements writers.Driver; row keys sort by commit id.
func (d *Driver) Commits(ctx context.Context, ns, version string) ([]writers.Commit, error) {
	prefix := btCommitPrefix(ns, version)
	var out []writers.Commit
	var derr error
	err := d.tbl.ReadRows(ctx, bt.PrefixRange(prefix), func(r bt.Row) bool {
		var c writers.Commit
		if err := json.Unmarshal(btValue(r), &c); err != nil {
			derr = fmt.Errorf("decode commit %q: %w", r.Key()[len(prefix):], err)
			return false
		}
		out = append(out, c)
		return true
	}, btValueFilter())
	if err := errors.Join(err, derr); err != nil {
		return nil, err
	}
	return out, nil
}

// Release implements writers.Releaser: the release cell of r#<ns>, nil when there is none.
func (d *Driver) Release(ctx context.Context, ns string) ([]byte, error) {
	r, err := d.tbl.ReadRow(ctx, btReleaseKey(ns),
		bt.RowFilter(bt.ChainFilters(btColumnFilter(btColRelease), bt.LatestNFilter(1))))
	if err != nil {
		return nil, err
	}
	if len(r[btFamily]) == 0 {
		return nil, nil
	}
	return btValue(r), nil
}

// SwapRelease implements writers.Releaser with one CheckAndMutateRow on r#<ns>; see
// Driver.
func (d *Driver) SwapRelease(ctx context.Context, ns string, old int64, data []byte) error {
	set := bt.NewMutation()
	set.Set(btFamily, btColRelease, btCellTime, data)
	set.Set(btFamily, btColRev, btCellTime, []byte(strconv.FormatInt(old+1, 10)))
	var mut *bt.Mutation
	if old == 0 {
		mut = bt.NewCondMutation(btColumnFilter(btColRev), nil, set) // set only if absent
	} else {
		mut = bt.NewCondMutation(btExactFilter(btColRev, strconv.FormatInt(old, 10)), set, nil)
	}
	var matched bool
	if err := d.tbl.Apply(ctx, btReleaseKey(ns), mut, bt.GetCondMutationResult(&matched)); err != nil {
		return err
	}
	if matched == (old == 0) {
		r, err := d.tbl.ReadRow(ctx, btReleaseKey(ns),
			bt.RowFilter(bt.ChainFilters(btColumnFilter(btColRev), bt.LatestNFilter(1))))
		switch {
		case err != nil:
			return fmt.Errorf("from revision %d: %w", old, writers.ErrConflict)
		case len(r[btFamily]) == 0:
			return fmt.Errorf("from revision %d: %w: there is no record", old, writers.ErrConflict)
		default:
			return fmt.Errorf("from revision %d: %w: the record is at revision %s", old, writers.ErrConflict, btValue(r))
		}
	}
	return nil
}

// AddCounts implements writers.Releaser with one ReadModifyWriteRow; see Driver.
func (d *Driver) AddCounts(ctx context.Context, ns, release string, interval int64, counts map[string]int64) error {
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names) // the same request for the same counts
	rmw := bt.NewReadModifyWrite()
	for _, name := range names {
		rmw.Increment(btFamily, name, counts[name])
	}
	_, err := d.tbl.ApplyReadModifyWrite(ctx, btCounterKey(ns, release, interval), rmw)
	return err
}

// Counts implements writers.Releaser: the newest cell of every column of the counter row.
func (d *Driver) Counts(ctx context.Context, ns, release string, interval int64) (map[string]int64, error) {
	row := btCounterKey(ns, release, interval)
	r, err := d.tbl.ReadRow(ctx, row, bt.RowFilter(bt.LatestNFilter(1)))
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(r[btFamily]))
	for _, it := range r[btFamily] {
		name := strings.TrimPrefix(it.Column, btFamily+":")
		if len(it.Value) != 8 {
			return nil, fmt.Errorf("counter %q of row %q holds %d bytes, want an 8-byte int64", name, row, len(it.Value))
		}
		out[name] = int64(binary.BigEndian.Uint64(it.Value))
	}
	return out, nil
}

// PutSketch implements writers.Releaser: the replica's cell of the sketch row.
func (d *Driver) PutSketch(ctx context.Context, ns, release, name, replica string, data []byte) error {
	m := bt.NewMutation()
	m.Set(btFamily, replica, btCellTime, data)
	return d.tbl.Apply(ctx, btSketchKey(ns, release, name), m)
}

// Sketches implements writers.Releaser: every replica's cell of the sketch row, in replica
// order.
func (d *Driver) Sketches(ctx context.Context, ns, release, name string) ([][]byte, error) {
	r, err := d.tbl.ReadRow(ctx, btSketchKey(ns, release, name), bt.RowFilter(bt.LatestNFilter(1)))
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, it := range r[btFamily] {
		v := it.Value
		if v == nil {
			v = []byte{}
		}
		out = append(out, v)
	}
	return out, nil
}

// Close implements writers.Driver: it closes the data and the admin client.
func (d *Driver) Close() error {
	return errors.Join(d.client.Close(), d.admin.Close())
}

// manifest reads a manifest.
func (d *Driver) manifest(ctx context.Context, ns, version string) (*writers.Manifest, error) {
	data, err := d.readValue(ctx, btManifestKey(ns, version))
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

// putManifest writes a manifest that the driver changed itself (DeleteVersion).
func (d *Driver) putManifest(ctx context.Context, m *writers.Manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return d.setValue(ctx, btManifestKey(m.Namespace, m.Version), data)
}

// live reads the live pointer, "" when there is none.
func (d *Driver) live(ctx context.Context, ns string) (string, error) {
	v, err := d.readValue(ctx, btPointerKey(ns))
	if errors.Is(err, writers.ErrNotFound) {
		return "", nil
	}
	return string(v), err
}

// readValue reads the value cell of a row, ErrNotFound when the row has none.
func (d *Driver) readValue(ctx context.Context, row string) ([]byte, error) {
	r, err := d.tbl.ReadRow(ctx, row, btValueFilter())
	if err != nil {
		return nil, err
	}
	if len(r[btFamily]) == 0 {
		return nil, writers.ErrNotFound
	}
	return btValue(r), nil
}

// setValue writes the value cell of a row.
func (d *Driver) setValue(ctx context.Context, row string, value []byte) error {
	m := bt.NewMutation()
	m.Set(btFamily, btColValue, btCellTime, value)
	return d.tbl.Apply(ctx, row, m)
}

// btValueFilter reads the newest value cell of a row only.
func btValueFilter() bt.ReadOption {
	return bt.RowFilter(bt.ChainFilters(btColumnFilter(btColValue), bt.LatestNFilter(1)))
}

// btValue is the value cell of a row read with btValueFilter, never nil.
func btValue(r bt.Row) []byte {
	items := r[btFamily]
	if len(items) == 0 || items[0].Value == nil {
		return []byte{}
	}
	return items[0].Value
}

// btColumnFilter matches the cells of one column of the store's family.
func btColumnFilter(column string) bt.Filter {
	return bt.ChainFilters(
		bt.FamilyFilter("^"+btFamily+"$"),
		bt.ColumnFilter("^"+regexp.QuoteMeta(column)+"$"))
}

// btExactFilter matches the newest cell of column if its value is exactly value. Bigtable
// regular expressions are RE2 over bytes; value is always ASCII here (version ids, tokens).
func btExactFilter(column, value string) bt.Filter {
	return bt.ChainFilters(btColumnFilter(column), bt.LatestNFilter(1),
		bt.ValueFilter("^"+regexp.QuoteMeta(value)+"$"))
}

func btDataPrefix(ns, version string) string   { return "d#" + ns + "#" + version + "#" }
func btManifestPrefix(ns string) string        { return "m#" + ns + "#" }
func btManifestKey(ns, version string) string  { return btManifestPrefix(ns) + version }
func btPointerKey(ns string) string            { return "p#" + ns }
func btLeaseKey(ns string) string              { return "l#" + ns }
func btCommitPrefix(ns, version string) string { return "s#" + ns + "#" + version + "#" }
func btReleaseKey(ns string) string            { return "r#" + ns }

func btCounterKey(ns, release string, interval int64) string {
	return fmt.Sprintf("c#%s#%s#%020d", ns, release, interval)
}

func btSketchKey(ns, release, name string) string { return "k#" + ns + "#" + release + "#" + name }
