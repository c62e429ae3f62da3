package main

// Incremental versions end to end, through the real binary, on every store (Pebble,
// Redis, Redis Cluster, the Bigtable emulator): a full version of 50,000 keys, an
// incremental run of 5,000 rows (3,000 existing keys with new values, 2,000 new keys),
// rollback and flip back, gc, deletions, max_chain and compaction. Every expectation is computed independently: shardgen.RowAt gives each
// row's features, onnxgen's float64 reference the model's answer.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

const (
	incrFullRows  = 50_000
	incrFirst     = 47_000 // the increment's first row: rows 47,000..49,999 exist, 50,000..51,999 are new
	incrRows      = 5_000
	incrSeed      = 2
	incrNamespace = "churn"
)

// chainCase is the data of the test: the full data set and the increment's.
type chainCase struct {
	full, incr *bigData
	incrURI    string
	ref        *onnxgen.Model
}

func newChainCase(t *testing.T) *chainCase {
	t.Helper()
	dir := t.TempDir()
	c := &chainCase{ref: onnxgen.Logistic(4, modelSeed)}
	c.full = genData(t, filepath.Join(dir, "full"), shardgen.Spec{Rows: incrFullRows, Shards: 2, RowGroupRows: 10_000, Seed: dataSeed})
	c.incr = &bigData{dir: filepath.Join(dir, "incr"), spec: shardgen.Spec{Rows: incrRows, Shards: 2, RowGroupRows: 1000, Seed: incrSeed, FirstRow: incrFirst}}
	if _, err := shardgen.Generate(filepath.Join(c.incr.dir, "features"), c.incr.spec); err != nil {
		t.Fatal(err)
	}
	c.incrURI = "source.uri=" + filepath.Join(c.incr.dir, "features", "*.parquet")
	return c
}

// expect is what a key of row r answers: the row it was computed from (nil: not found).
type expect func(r int64) *shardgen.Row

// wantGet runs `staticref get` for rows and checks every answer against want, and the
// row_version and computed_at of each against the manifests of rowVersion(r).
func (c *chainCase) wantGet(t *testing.T, env []string, url string, rows []int64, want expect, rowVersion func(r int64) string) {
	t.Helper()
	s := openFromEnv(t, env, url)
	manifests := map[string]*writers.Manifest{}
	ms, err := s.Manifests(context.Background(), incrNamespace)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		manifests[m.Version] = m
	}
	live, _ := s.Live(context.Background(), incrNamespace)
	s.Close()

	args := []string{"get", "--store", url, "--namespace", incrNamespace, "--"}
	anyMissing := false
	for _, r := range rows {
		args = append(args, shardgen.RowAt(c.full.spec, r).Key)
		anyMissing = anyMissing || want(r) == nil
	}
	code, out, stderr := exe(t, env, args...)
	if wantCode := map[bool]int{false: 0, true: 1}[anyMissing]; code != wantCode {
		t.Fatalf("get of %d keys: exit %d, want %d: %s", len(rows), code, wantCode, stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	i, bad := 0, 0
	for ; sc.Scan(); i++ {
		r := rows[i]
		var a lookup.Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		if problem := c.check(a, r, want(r), live, rowVersion(r), manifests); problem != "" {
			if bad++; bad <= 5 {
				t.Errorf("key %s (row %d): %s: %s", a.Key, r, problem, sc.Bytes())
			}
		}
	}
	if i != len(rows) {
		t.Fatalf("get answered %d of %d keys", i, len(rows))
	}
	if bad > 0 {
		t.Fatalf("%d of %d answers wrong", bad, len(rows))
	}
}

// check compares one answer with its expectation; "" when right.
func (c *chainCase) check(a lookup.Answer, r int64, row *shardgen.Row, live, rowVersion string, ms map[string]*writers.Manifest) string {
	if row == nil {
		if a.Error == nil || a.Error.Code != lookup.CodeNotFound {
			return "want not_found"
		}
		return ""
	}
	if a.Error != nil || a.Version != live {
		return "want a value from live " + live
	}
	var v map[string]float64
	if err := json.Unmarshal(a.Value, &v); err != nil {
		return err.Error()
	}
	exp := c.ref.Predict(row.F[:])
	if math.Abs(v["score"]-exp["score"][0]) > 1e-5 || math.Abs(v["logit"]-exp["logit"][0]) > 1e-5 {
		return fmt.Sprintf("want score %v logit %v", exp["score"][0], exp["logit"][0])
	}
	if a.RowVersion != rowVersion {
		return "want row_version " + rowVersion
	}
	if m := ms[rowVersion]; m == nil || a.ComputedAt == nil || !a.ComputedAt.Equal(m.CompletedAt) {
		return "want computed_at of " + rowVersion
	}
	return ""
}

func rowsBetween(lo, hi, step int64) []int64 {
	var out []int64
	for r := lo; r < hi; r += step {
		out = append(out, r)
	}
	return out
}

func (c *chainCase) fullRow(r int64) *shardgen.Row {
	if r < 0 || r >= incrFullRows {
		return nil
	}
	row := shardgen.RowAt(c.full.spec, r)
	return &row
}

func (c *chainCase) incrRow(r int64) *shardgen.Row {
	if r >= incrFirst && r < incrFirst+incrRows {
		row := shardgen.RowAt(c.incr.spec, r)
		return &row
	}
	return c.fullRow(r)
}

func liveVersion(t *testing.T, env []string, url string) string {
	t.Helper()
	s := openFromEnv(t, env, url)
	defer s.Close()
	v, err := s.Live(context.Background(), incrNamespace)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustExe(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out, stderr := exe(t, env, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", strings.Join(args[:min(2, len(args))], " "), code, out, stderr)
	}
	return out + stderr
}

func TestIncrementalVersionsOnEveryStore(t *testing.T) {
	c := newChainCase(t)
	stores := append([]storeServer{
		{"pebble", func(t *testing.T) (string, []string) { return "pebble:" + filepath.Join(t.TempDir(), "store"), nil }},
	}, productionStores...)
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			url, env := st.start(t)
			c.lifecycle(t, url, env)
		})
	}
}

func (c *chainCase) lifecycle(t *testing.T, url string, env []string) {
	job := c.full.writeJob(t, incrNamespace)
	run := func(extra ...string) (int, string, string) {
		return exe(t, env, append([]string{"run", "--job", job, "--store", url}, extra...)...)
	}
	store := []string{"--store", url, "--namespace", incrNamespace}

	// A full version of 50,000 keys, then an increment of 5,000 rows on top.
	if code, out, stderr := run(); code != 0 {
		t.Fatalf("full run: exit %d\n%s%s", code, out, stderr)
	}
	full := liveVersion(t, env, url)
	code, out, stderr := run("--set", c.incrURI, "--set", "sink.mode=incremental")
	if code != 0 {
		t.Fatalf("incremental run: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"rows read 5000, written 5000", "incremental on base " + full + " (chain depth 2)",
		"gate min_rows_ratio: pass (skipped: incremental version", "gate base_live: pass"} {
		if !strings.Contains(out, want) {
			t.Errorf("incremental run's summary lacks %q:\n%s", want, out)
		}
	}
	incr := liveVersion(t, env, url)
	if incr == full {
		t.Fatal("the incremental run did not flip")
	}
	s := openFromEnv(t, env, url)
	if n, err := s.CountKeys(context.Background(), incrNamespace, incr); err != nil || n != incrRows {
		t.Errorf("keys under the increment: %d, %v; want %d (only its own rows)", n, err, incrRows)
	}
	s.Close()

	incrKeys := rowsBetween(incrFirst, incrFirst+incrRows, 1)
	sample := rowsBetween(0, incrFirst, 97)
	onIncr := func(r int64) string {
		if r >= incrFirst {
			return incr
		}
		return full
	}
	onFull := func(int64) string { return full }
	t.Run("every key of the increment and a sample of the rest answer their newest value", func(t *testing.T) {
		c.wantGet(t, env, url, append(incrKeys, sample...), c.incrRow, onIncr)
	})

	t.Run("rollback restores the base exactly and the new keys disappear", func(t *testing.T) {
		out := mustExe(t, env, append([]string{"versions", "rollback"}, store...)...)
		if !strings.Contains(out, fmt.Sprintf("live %s (was %s)", full, incr)) {
			t.Fatalf("rollback: %s", out)
		}
		c.wantGet(t, env, url, append(incrKeys, sample[:50]...), c.fullRow, onFull)
	})

	t.Run("flipping back restores the increment", func(t *testing.T) {
		mustExe(t, env, append([]string{"versions", "flip"}, append(store, incr)...)...)
		c.wantGet(t, env, url, incrKeys, c.incrRow, onIncr)
	})

	t.Run("gc keeps the base the live increment builds on", func(t *testing.T) {
		out := mustExe(t, env, append([]string{"versions", "gc", "--keep", "0"}, store...)...)
		if strings.Contains(out, "removed "+full) {
			t.Fatalf("gc removed the base:\n%s", out)
		}
		s := openFromEnv(t, env, url)
		defer s.Close()
		if n, err := s.CountKeys(context.Background(), incrNamespace, full); err != nil || n != incrFullRows {
			t.Fatalf("keys under the base after gc: %d, %v; want %d", n, err, incrFullRows)
		}
		c.wantGet(t, env, url, sample[:50], c.incrRow, onIncr)
	})

	t.Run("versions list shows mode, base and depth", func(t *testing.T) {
		out := mustExe(t, env, append([]string{"versions", "list", "-o", "json"}, store...)...)
		var rows []versionRow
		if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &rows); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := map[string]versionRow{}
		for _, r := range rows {
			got[r.Version] = r
		}
		if f, i := got[full], got[incr]; f.Mode != "full" || f.Depth != 1 || f.Base != "" || i.Mode != "incremental" || i.Depth != 2 || i.Base != full {
			t.Errorf("list: full %+v, increment %+v", f, i)
		}
	})

	deleted := []int64{100, 48_000, 51_000} // of the base only, overwritten, new
	var deleteVersion string
	t.Run("a deleted key answers from the cold-start chain", func(t *testing.T) {
		args := append([]string{"delete"}, store...)
		for _, r := range deleted {
			args = append(args, shardgen.RowAt(c.full.spec, r).Key)
		}
		out := mustExe(t, env, args...)
		if !strings.Contains(out, "incremental on base "+incr+" (chain depth 3)") || !strings.Contains(out, "gate max_null_fraction: pass (skipped") {
			t.Errorf("delete's summary:\n%s", out)
		}
		deleteVersion = liveVersion(t, env, url)
		gone := func(r int64) *shardgen.Row {
			for _, d := range deleted {
				if r == d {
					return nil
				}
			}
			return c.incrRow(r)
		}
		c.wantGet(t, env, url, append(deleted, 101, 48_001, 51_001), gone, onIncr)
		c.wantService(t, env, url, deleted, full, incr)
	})

	t.Run("a chain at max_chain refuses another increment", func(t *testing.T) {
		code, out, stderr := run("--set", c.incrURI, "--set", "sink.mode=incremental", "--set", "sink.max_chain=3")
		if code != 1 || !strings.Contains(stderr, "versions compact") || !strings.Contains(stderr, "max_chain is 3") {
			t.Fatalf("an increment on a chain 3 deep with max_chain 3: exit %d, want 1 saying to compact\n%s%s", code, out, stderr)
		}
		if live := liveVersion(t, env, url); live != deleteVersion {
			t.Fatalf("live after the refusal: %s, want %s untouched", live, deleteVersion)
		}
	})

	t.Run("compact gives a full version whose every key equals the chain's answer", func(t *testing.T) {
		out := mustExe(t, env, append([]string{"versions", "compact"}, store...)...)
		if !strings.Contains(out, "gate min_rows_ratio: pass") {
			t.Errorf("compact's summary:\n%s", out)
		}
		compacted := liveVersion(t, env, url)
		ctx := context.Background()
		s := openFromEnv(t, env, url)
		defer s.Close()
		m, err := s.Manifest(ctx, incrNamespace, compacted)
		if err != nil || m.Incremental() || m.ChainDepth() != 1 {
			t.Fatalf("compacted manifest: %+v, %v; want a full version", m, err)
		}
		total := int64(incrFirst + incrRows)
		if want := total - int64(len(deleted)); m.RowsWritten != want {
			t.Errorf("compacted rows written %d, want %d", m.RowsWritten, want)
		}
		chain := []string{deleteVersion, incr, full}
		for lo := int64(0); lo < total; lo += 1000 {
			var keys [][]byte
			for r := lo; r < min(lo+1000, total); r++ {
				keys = append(keys, []byte(shardgen.RowAt(c.full.spec, r).Key))
			}
			want, _, err := s.GetChain(ctx, incrNamespace, chain, keys)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.GetMany(ctx, incrNamespace, compacted, keys)
			if err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				if !bytes.Equal(got[i], want[i]) || (got[i] == nil) != (want[i] == nil) {
					t.Fatalf("key %s: compacted %q, the chain answers %q", keys[i], got[i], want[i])
				}
			}
		}
		c.wantGet(t, env, url, append(rowsBetween(incrFirst+1, incrFirst+incrRows, 7), sample[:50]...), c.incrRow,
			func(int64) string { return compacted })
	})
}

// wantService starts the lookup service on the store and checks, over HTTP, that the
// deleted keys take the cold-start chain (the computed default of the chain's full
// version) and that a batch answers the others with their row_version.
func (c *chainCase) wantService(t *testing.T, env []string, url string, deleted []int64, full, incr string) {
	t.Helper()
	s := openFromEnv(t, env, url) // sets env for the in-process service too
	fm, err := s.Manifest(context.Background(), incrNamespace, full)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	def, err := writers.DefaultJSON(fm.Outputs, fm.Defaults.Global)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "serve.yaml")
	yaml := "namespaces:\n  " + incrNamespace + ":\n    store: " + url + "\n    fallback: {default: computed}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := lookup.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	for deadline := time.Now().Add(10 * time.Second); !svc.Ready(); {
		if time.Now().After(deadline) {
			t.Fatal("lookup service not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := "http://" + ln.Addr().String()
	var keys []string
	for _, r := range deleted {
		keys = append(keys, shardgen.RowAt(c.full.spec, r).Key)
	}
	kept := []int64{5, 48_002, 51_002}
	for _, r := range kept {
		keys = append(keys, shardgen.RowAt(c.full.spec, r).Key)
	}
	body, _ := json.Marshal(map[string]any{"keys": keys})
	resp := httpPost(t, base+"/v1/"+incrNamespace+":batchGet", body)
	var ba lookup.BatchAnswer
	if err := json.Unmarshal(resp, &ba); err != nil {
		t.Fatalf("%v: %s", err, resp)
	}
	if len(ba.Answers) != len(keys) {
		t.Fatalf("batch answered %d of %d keys: %s", len(ba.Answers), len(keys), resp)
	}
	for i, a := range ba.Answers {
		if i < len(deleted) {
			if a.Source != lookup.SourceFallbackDefault || !bytes.Equal(a.Value, def) || a.RowVersion != "" {
				t.Errorf("deleted key %s: got %s %s row_version %q, want %s %s", a.Key, a.Source, a.Value, a.RowVersion, lookup.SourceFallbackDefault, def)
			}
			continue
		}
		r := kept[i-len(deleted)]
		rv := full
		if r >= incrFirst {
			rv = incr
		}
		if a.Source != lookup.SourcePrecomputed || a.RowVersion != rv {
			t.Errorf("key %s: got %s row_version %q, want precomputed from %s", a.Key, a.Source, a.RowVersion, rv)
		}
		var v map[string]float64
		json.Unmarshal(a.Value, &v)
		if exp := c.ref.Predict(c.incrRow(r).F[:]); math.Abs(v["score"]-exp["score"][0]) > 1e-5 {
			t.Errorf("key %s: score %v, want %v", a.Key, v["score"], exp["score"][0])
		}
	}
}

func httpPost(t *testing.T, url string, body []byte) []byte {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestDeleteAndCompactUsage(t *testing.T) {
	_, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("u000000001\n\n"+strings.Repeat("x", writers.MaxKeyLen+1)+"\n"), 0o644)
	good := filepath.Join(dir, "good.txt")
	os.WriteFile(good, []byte("u000000001\r\n\nu000000002\n"), 0o644)
	ns := []string{"--store", store, "--namespace", "churn"}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no keys is bad usage", append([]string{"delete"}, ns...), 2, "no keys to delete"},
		{"a keys file that does not exist is bad usage", append([]string{"delete", "--keys-file", filepath.Join(dir, "nope")}, ns...), 2, "--keys-file"},
		{"a bad key in the keys file names its line", append([]string{"delete", "--keys-file", bad}, ns...), 2, "line 3"},
		{"a missing namespace flag is bad usage", []string{"delete", "--store", store, "k"}, 2, "namespace"},
		{"compacting a full version does nothing and says so", append([]string{"versions", "compact"}, ns...), 0, "nothing to compact"},
		{"keys from a file and the command line are deleted", append([]string{"delete", "--keys-file", good, "u000000003"}, ns...), 0, "rows read 3, written 3"},
		{"a deleted key is not found", append([]string{"get"}, append(ns, "u000000002")...), 1, "not_found"},
		{"compacting the chain flips a full version", append([]string{"versions", "compact"}, ns...), 0, "rows read 997, written 997"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := staticref(t, tt.args...)
			if code != tt.code || !strings.Contains(out+stderr, tt.want) {
				t.Errorf("got exit %d\n%s%s\nwant exit %d saying %q", code, out, stderr, tt.code, tt.want)
			}
		})
	}
}
