package pipeline

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/staticref/staticref/readers/objstore"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/export"
)

// The Parquet export (sink.export, or an export-only parquet: store).
//
// Every row of the version is also written as Parquet, one part file per unit of work:
// the row group of an input file that one writers.Commit records. Part n is the n-th
// row group of the version (r.tasks order, the same in every process of a sharded or
// resumed run, since a resume insists on the same files), so its name,
// NAMESPACE/VERSION/part-NNNNN.parquet, is a pure function of the unit.
//
// A unit's file is opened at its first chunk, takes each chunk's rows after the store has
// taken them (in the accountant, the one goroutine that sees chunks in order), and is
// closed when the unit's last row arrives, before the unit's commit is queued: an object
// appears only when its writer closes cleanly, so a committed unit always has its file,
// and the commit records the file (rows, bytes). A resumed run skips committed units, and
// with them their files; a unit that was redone (its commit never recorded, though its
// file may have been closed) rewrites the same name whole. So however often a run is
// killed and resumed, the export holds every row exactly once. A run that fails aborts
// its open files (their contexts are the run's, cancelled), so no half-written object
// is ever left, and the version is failed as for any other error.
//
// The manifest's list of files is built from the commit records at completion.

// exporter writes the part files of this run's units.
type exporter struct {
	target  *export.Target
	url     string // as recorded: no query, no secret
	outputs []writers.Output
	part    map[unit]int
	open    map[unit]*export.File
}

// exportURL is where the version is exported, "" for nowhere.
func (r *run) exportURL() string {
	if u := r.store.URL(); u.ExportOnly() {
		return u.Export
	}
	return r.job.Sink.Export
}

// exportOnly reports whether the run's store is an export-only parquet: store.
func (r *run) exportOnly() bool { return r.store.URL().ExportOnly() }

// newestExport is, for an export-only store, the version the gates compare with in place
// of a live one: the complete version that completed last (none: "", nil).
func (r *run) newestExport(ctx context.Context) (string, *writers.Manifest, error) {
	ms, err := r.store.Manifests(ctx, r.ns)
	if err != nil {
		return "", nil, fmt.Errorf("list the exports of %s: %w", r.ns, err)
	}
	var newest *writers.Manifest
	for _, m := range ms {
		if m.State == writers.StateComplete && m.Version != r.m.Version && (newest == nil || m.CompletedAt.After(newest.CompletedAt)) {
			newest = m
		}
	}
	if newest == nil {
		return "", nil, nil
	}
	return newest.Version, newest, nil
}

// exportInfo is the manifest's export record for a new version (nil: no export).
func (r *run) exportInfo() *writers.ExportInfo {
	if r.exportURL() == "" {
		return nil
	}
	return &writers.ExportInfo{URL: writers.ExportName(r.exportURL())}
}

// exportProblems says why a version cannot be resumed with this run's export.
func (r *run) exportProblems(old *writers.Manifest) []string {
	was, now := "no export", "no export"
	if old.Export != nil {
		was = "export to " + old.Export.URL
	}
	if e := r.exportInfo(); e != nil {
		now = "export to " + e.URL
	}
	if was != now {
		return []string{fmt.Sprintf("%s, now %s", was, now)}
	}
	return nil
}

// openExport opens the export location (nil when the job exports nothing) and checks
// that it can be written to: a bucket that does not exist fails the run before any row
// is read.
func (r *run) openExport(ctx context.Context, all []task) (*exporter, error) {
	raw := r.exportURL()
	if raw == "" {
		return nil, nil
	}
	if _, err := export.Schema(r.model.Outputs); err != nil {
		return nil, fmt.Errorf("sink.export: %w", err)
	}
	t, err := export.Open(ctx, raw, export.Options{RowGroupBytes: int64(r.job.Sink.ExportRowGroupBytes)})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, objstore.CallTimeout)
	ok, err := t.Bucket().IsAccessible(cctx)
	cancel()
	if err == nil && !ok {
		err = fmt.Errorf("the bucket does not exist")
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("export %s: %w", t.Name(), err)
	}
	e := &exporter{target: t, url: t.Name(), outputs: r.model.Outputs, part: map[unit]int{}, open: map[unit]*export.File{}}
	for n, tk := range all {
		e.part[unit{tk.file, tk.rg}] = n
	}
	return e, nil
}

// add writes the rows the store has taken from c into its unit's file.
func (e *exporter) add(ctx context.Context, r *run, c *chunk) error {
	if e == nil {
		return nil
	}
	u := unit{c.file, c.rowGroup}
	f := e.open[u]
	if f == nil {
		var err error
		if f, err = e.target.Create(ctx, r.ns, r.m.Version, e.part[u], e.outputs); err != nil {
			return err
		}
		e.open[u] = f
	}
	for j, key := range c.rows.Keys {
		if err := f.Add(key, c.outs, j); err != nil {
			return err
		}
	}
	return nil
}

// done closes the unit's file and records it in its commit.
func (e *exporter) done(u unit, commit *writers.Commit) error {
	if e == nil {
		return nil
	}
	f := e.open[u]
	delete(e.open, u)
	if f == nil {
		return fmt.Errorf("export of shard %s row group %d: no rows reached it", u.file, u.rg)
	}
	info, err := f.Close()
	if err != nil {
		return fmt.Errorf("shard %s row group %d: %w", u.file, u.rg, err)
	}
	if info.Rows != commit.Written {
		return fmt.Errorf("export %s: %d rows, the row group wrote %d", f.Name(), info.Rows, commit.Written)
	}
	commit.Export = &info
	return nil
}

// close abandons the files still open (a failed run) and closes the location.
func (e *exporter) close() {
	if e == nil {
		return
	}
	for _, f := range e.open {
		f.Abort()
	}
	e.target.Close()
}

// publishExport writes the complete manifest beside the export's files (an export-only
// store does so itself), before the store's manifest says complete: a failure fails the
// version, which is never flipped.
func (r *run) publishExport(ctx context.Context) error {
	if r.m.Export == nil || r.exportOnly() {
		return nil
	}
	err := func() error {
		data, err := json.Marshal(r.m)
		if err != nil {
			return err
		}
		t, err := export.Open(ctx, r.exportURL(), export.Options{})
		if err != nil {
			return err
		}
		defer t.Close()
		return t.Publish(ctx, r.ns, r.m.Version, data)
	}()
	if err != nil {
		err = fmt.Errorf("publish the export's manifest: %w", err)
		r.fail(err)
	}
	return err
}

// exportFiles lists the version's files from its commits, in part order, for the
// manifest; every unit must have one.
func exportFiles(m *writers.Manifest, commits []writers.Commit) error {
	if m.Export == nil {
		return nil
	}
	m.Export.Files = m.Export.Files[:0]
	for i := range commits {
		c := &commits[i]
		if c.Export == nil {
			return fmt.Errorf("shard %s was committed without its export to %s", c.ID, m.Export.URL)
		}
		m.Export.Files = append(m.Export.Files, *c.Export)
		c.Export = nil // listed once, in m.Export
	}
	return nil
}
