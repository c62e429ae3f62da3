package ui_test

import (
	"context"
	"crypto/sha256"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup/ui"
	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/pebble"
)

// source is a ui.Source of one namespace on a store, with no release.
type source struct{ ns ui.Namespace }

func (s source) StatusNamespaces() []ui.Namespace { return []ui.Namespace{s.ns} }
func (source) StatusRelease(context.Context, string) (*ui.Release, error) {
	return nil, nil
}
func (source) AdminTokenHash() *[sha256.Size]byte { return nil }

// An increment's row says what it builds on, and its page says what that means; a
// version exported as Parquet says where.
func TestIncrementalVersionsShowTheirBaseAndExportsTheirFiles(t *testing.T) {
	ctx := context.Background()
	s, err := pebble.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC().Truncate(time.Second)
	full := manifest(t, s, now.Add(-2*time.Hour), 0)
	if _, err := writers.Flip(ctx, s, "churn", full.Version); err != nil {
		t.Fatal(err)
	}
	id, err := writers.NewVersionID(ctx, s, "churn", now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	inc := &writers.Manifest{Namespace: "churn", Version: id, Job: "churn-hourly", State: writers.StateWriting, Encoding: "json",
		Outputs: full.Outputs, Key: "user_id", Mode: writers.VersionIncremental, Base: full.Version, Depth: 2,
		RowsRead: 3, RowsWritten: 3, StartedAt: now.Add(-time.Hour), CompletedAt: now.Add(-time.Hour + time.Second),
		Export: &writers.ExportInfo{URL: "s3://warehouse/preds", Files: []writers.ExportFile{{Path: "churn/" + id + "/part-00000.parquet", Rows: 3}}}}
	if err := s.PutManifest(ctx, inc); err != nil {
		t.Fatal(err)
	}
	inc.State = writers.StateComplete
	if err := s.PutManifest(ctx, inc); err != nil {
		t.Fatal(err)
	}
	if _, err := writers.Flip(ctx, s, "churn", inc.Version); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ui.New(source{ui.Namespace{Name: "churn", Ready: true, Live: inc, Store: s}}, quiet))
	defer srv.Close()

	r := get(t, nil, srv.URL+"/ui/churn")
	row := r.body[strings.Index(r.body, `data-version="`+inc.Version+`"`):]
	row = row[:strings.Index(row, "</tr>")]
	if want := `<a href="/ui/churn/` + full.Version + `">` + full.Version + `</a> <small>depth 2</small>`; !strings.Contains(row, want) {
		t.Errorf("the increment's row lacks its base %s:\n%s", want, row)
	}
	frow := r.body[strings.Index(r.body, `data-version="`+full.Version+`"`):]
	if frow = frow[:strings.Index(frow, "</tr>")]; !strings.Contains(frow, `<td class="base">full</td>`) {
		t.Errorf("the full version's row does not say full:\n%s", frow)
	}
	r = get(t, nil, srv.URL+"/ui/churn/"+inc.Version)
	for _, want := range []string{
		`incremental on <a href="/ui/churn/` + full.Version + `">` + full.Version + `</a> (chain depth 2)`,
		`<code class="wrap">s3://warehouse/preds</code><br><small>files: 1</small>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("the increment's page lacks %q", want)
		}
	}
	if r = get(t, nil, srv.URL+"/ui/churn/"+full.Version); !strings.Contains(r.body, `<dd class="mode">full</dd>`) || strings.Contains(r.body, "Parquet export") {
		t.Errorf("the full version's page: want mode full and no export")
	}
}
