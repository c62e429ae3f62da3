package bigtable_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bt "cloud.google.com/go/bigtable"
	"cloud.google.com/go/bigtable/bttest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/bigtable"
	"github.com/staticref/staticref/writers/storetest"
)

// startEmulator starts an in-process Bigtable emulator for the test and points the client
// library at it through BIGTABLE_EMULATOR_HOST, as a user would.
func startEmulator(tb testing.TB, opts ...grpc.ServerOption) {
	tb.Helper()
	srv, err := bttest.NewServer("127.0.0.1:0", opts...)
	if err != nil {
		tb.Fatalf("start bigtable emulator: %v", err)
	}
	tb.Cleanup(srv.Close)
	tb.Setenv("BIGTABLE_EMULATOR_HOST", srv.Addr)
}

var btTables atomic.Int64

// openBigtable opens a store on a fresh table of the running emulator.
func openBigtable(tb testing.TB) *writers.Store {
	tb.Helper()
	url := fmt.Sprintf("bigtable://proj/inst/t%d", btTables.Add(1))
	s, err := bigtable.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("bigtable.Open(%s): %v", url, err)
	}
	return s
}

// driver is the Bigtable driver beneath s, for its tuning fields.
func driver(tb testing.TB, s *writers.Store) *bigtable.Driver {
	tb.Helper()
	d, ok := s.Driver().(*bigtable.Driver)
	if !ok {
		tb.Fatalf("driver is %T, want *bigtable.Driver", s.Driver())
	}
	return d
}

func TestBigtableConformance(t *testing.T) {
	startEmulator(t)
	storetest.Run(t, func(t *testing.T) *writers.Store {
		// Through Open, so the URL scheme is wired as users reach it.
		url := fmt.Sprintf("bigtable://proj/inst/conformance%d", btTables.Add(1))
		s, err := writers.Open(context.Background(), url)
		if err != nil {
			t.Fatalf("Open(%s): %v", url, err)
		}
		return s
	})
}

func TestBigtableURLNamesTheMissingPart(t *testing.T) {
	tests := []struct {
		url, want string
	}{
		{"bigtable://", "missing PROJECT"},
		{"bigtable:///inst/table", "missing PROJECT"},
		{"bigtable://proj", "missing INSTANCE"},
		{"bigtable://proj//table", "missing INSTANCE"},
		{"bigtable://proj/inst", "missing TABLE"},
		{"bigtable://proj/inst/", "missing TABLE"},
		{"bigtable://proj/inst/table/extra", "too many path parts"},
		{"bigtable://user:pw@proj/inst", "missing TABLE"},
		{"bigtable://user:pw@/inst/table", "missing PROJECT"},
		{"bigtable://a,b/inst/table", "several projects"},
		{"redis://proj/inst/table", "want bigtable://PROJECT/INSTANCE/TABLE"},
	}
	for _, tc := range tests {
		t.Run(tc.url+" is refused", func(t *testing.T) {
			s, err := bigtable.Open(context.Background(), tc.url)
			if err == nil {
				s.Close()
				t.Fatal("bigtable.Open succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("bigtable.Open error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestBigtableURLsNeverShowTheirPassword(t *testing.T) {
	// Bigtable takes no password from its URL, but a URL may carry one by mistake (or be
	// a redis URL pasted into the wrong flag): no message may show it.
	const secret = "s3cr3t-pw"
	opens := []struct {
		name string
		open func(ctx context.Context, url string) (*writers.Store, error)
	}{
		{"bigtable.Open", func(ctx context.Context, url string) (*writers.Store, error) { return bigtable.Open(ctx, url) }},
		{"writers.Open", writers.Open},
		{"writers.OpenExisting", writers.OpenExisting},
	}
	bad := []struct{ url, want string }{
		{"bigtable://user:" + secret + "@proj/inst", "bigtable://user:xxxxx@proj/inst"},
		{"bigtable://user:" + secret + "@/inst/table", "bigtable://user:xxxxx@/inst/table"},
		{"bigtable://user:" + secret + "@proj//table", "bigtable://user:xxxxx@proj//table"},
		{"bigtable://user:" + secret + "@proj/inst/table/extra", "bigtable://user:xxxxx@proj/inst/table/extra"},
		{"bigtable://user:" + secret + "@a,b/inst/table", "bigtable://user:xxxxx@a,b/inst/table"},
	}
	for _, o := range opens {
		for _, tc := range bad {
			t.Run(o.name+" of "+strings.ReplaceAll(tc.url, secret, "SECRET")+" names it without the password", func(t *testing.T) {
				s, err := o.open(context.Background(), tc.url)
				if err == nil {
					s.Close()
					t.Fatal("open succeeded, want an error")
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error = %q shows the password", err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error = %q, want it to contain %q", err, tc.want)
				}
			})
		}
	}

	t.Run("a store that does not answer is named without the password", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		t.Setenv("BIGTABLE_EMULATOR_HOST", addr)
		const url = "bigtable://user:" + secret + "@proj/inst/table"
		for _, o := range opens {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s, err := o.open(ctx, url)
			cancel()
			if err == nil {
				s.Close()
				t.Fatalf("%s(%s) succeeded with nothing listening, want an error", o.name, addr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s error = %q shows the password", o.name, err)
			}
			if want := "bigtable://user:xxxxx@proj/inst/table"; !strings.Contains(err.Error(), want) {
				t.Errorf("%s error = %q, want it to name %s", o.name, err, want)
			}
		}
	})

	t.Run("an open store is described without the password", func(t *testing.T) {
		startEmulator(t)
		s, err := bigtable.Open(context.Background(), "bigtable://user:"+secret+"@proj/inst/described")
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, got := range []string{s.String(), fmt.Sprint(s.URL())} {
			if strings.Contains(got, secret) {
				t.Errorf("store shows as %q, with the password", got)
			}
		}
	})
}

func TestBigtableDescribesItsTable(t *testing.T) {
	startEmulator(t)
	s, err := writers.Open(context.Background(), "bigtable://proj/inst/mytable")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := s.String(), "bigtable proj/inst/mytable"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := driver(t, s).Table(); got != "mytable" {
		t.Errorf("Table() = %q, want mytable", got)
	}
}

func TestBigtableCreatesTableAndFamily(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	admin, err := bt.NewAdminClient(ctx, "proj", "inst")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.CreateTable(ctx, "nofamily"); err != nil {
		t.Fatal(err)
	}
	if err := admin.CreateTableFromConf(ctx, &bt.TableConf{
		TableID:        "ready",
		ColumnFamilies: map[string]bt.Family{"p": {GCPolicy: bt.MaxVersionsPolicy(1)}},
	}); err != nil {
		t.Fatal(err)
	}

	for _, table := range []string{"missing", "nofamily", "ready"} {
		t.Run("a table that is "+table+" ends up with family p keeping one version", func(t *testing.T) {
			s, err := bigtable.Open(ctx, "bigtable://proj/inst/"+table)
			if err != nil {
				t.Fatalf("bigtable.Open: %v", err)
			}
			defer s.Close()
			info, err := admin.TableInfo(ctx, table)
			if err != nil {
				t.Fatalf("TableInfo: %v", err)
			}
			var got []string
			for _, f := range info.FamilyInfos {
				got = append(got, f.Name+" "+f.GCPolicy)
			}
			if want := "p versions() > 1"; len(got) != 1 || got[0] != want {
				t.Errorf("families = %q, want [%q]", got, want)
			}
			// And it is usable.
			m := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}
			if err := s.PutManifest(ctx, m); err != nil {
				t.Fatalf("PutManifest: %v", err)
			}
			// Opening it again finds everything in place.
			s2, err := bigtable.Open(ctx, "bigtable://proj/inst/"+table)
			if err != nil {
				t.Fatalf("second bigtable.Open: %v", err)
			}
			s2.Close()
		})
	}
}

func TestBigtableSaysWhatToCreateWhenCreationIsRefused(t *testing.T) {
	const hint = "cbt -project proj -instance inst createtable t families=p:maxversions=1"
	tests := []struct {
		name    string
		setup   *bt.TableConf // created before the admin calls are refused
		refused []string
		want    string // in the error; "" for no error
	}{
		{"a missing table that may not be created is an error that says what to create",
			nil, []string{"CreateTable"}, hint},
		{"a missing table that may not even be inspected is an error that says what to create",
			nil, []string{"GetTable", "CreateTable"}, hint},
		{"a table without family p that may not be changed is an error that says what to create",
			&bt.TableConf{TableID: "t"}, []string{"ModifyColumnFamilies"}, "createfamily t p"},
		{"an existing table opens with data-only credentials",
			&bt.TableConf{TableID: "t", ColumnFamilies: map[string]bt.Family{"p": {GCPolicy: bt.MaxVersionsPolicy(1)}}},
			[]string{"GetTable", "CreateTable", "ModifyColumnFamilies"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The emulator checks no credentials: an interceptor refuses the admin
			// calls named, once refusing is switched on.
			var refusing atomic.Bool
			startEmulator(t, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				for _, m := range tc.refused {
					if refusing.Load() && strings.HasSuffix(info.FullMethod, "/"+m) {
						return nil, status.Error(codes.PermissionDenied, "caller lacks the right to "+m)
					}
				}
				return h(ctx, req)
			}))
			ctx := context.Background()
			if tc.setup != nil {
				admin, err := bt.NewAdminClient(ctx, "proj", "inst")
				if err != nil {
					t.Fatal(err)
				}
				defer admin.Close()
				if err := admin.CreateTableFromConf(ctx, tc.setup); err != nil {
					t.Fatal(err)
				}
			}
			refusing.Store(true)
			s, err := bigtable.Open(ctx, "bigtable://proj/inst/t")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("bigtable.Open: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("bigtable.Open succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("bigtable.Open error = %q, want it to contain %q", err, tc.want)
			}
			t.Logf("bigtable.Open: %v", err)
		})
	}
}

func rowsOf(n int, prefix string) writers.Rows {
	var r writers.Rows
	for i := range n {
		r.Keys = append(r.Keys, fmt.Appendf(nil, "%s%06d", prefix, i))
		r.Values = append(r.Values, fmt.Appendf(nil, "value-%d", i))
	}
	return r
}

func mustCount(t *testing.T, s *writers.Store, ns, version string, want int64) {
	t.Helper()
	got, err := s.CountKeys(context.Background(), ns, version)
	if err != nil {
		t.Fatalf("CountKeys(%s/%s): %v", ns, version, err)
	}
	if got != want {
		t.Errorf("CountKeys(%s/%s) = %d, want %d", ns, version, got, want)
	}
}

func TestBigtableDeleteVersionOf20kRows(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	d := driver(t, s)
	d.MutationsPerRequest = 1500 // 14 requests, at most 4 at once
	d.MaxInFlight = 4

	cells := []struct {
		ns, version string
		rows        int
	}{{"big", "v1", 20000}, {"big", "v10", 300}, {"big", "v2", 200}, {"bigger", "v1", 100}}
	for _, c := range cells {
		if err := s.PutManifest(ctx, &writers.Manifest{Namespace: c.ns, Version: c.version, State: writers.StateWriting}); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteRows(ctx, c.ns, c.version, rowsOf(c.rows, "k")); err != nil {
			t.Fatalf("WriteRows(%s/%s): %v", c.ns, c.version, err)
		}
		if err := s.CommitWork(ctx, c.ns, c.version, writers.Commit{ID: "0", Rows: int64(c.rows)}); err != nil {
			t.Fatal(err)
		}
		mustCount(t, s, c.ns, c.version, int64(c.rows))
	}

	if err := s.DeleteVersion(ctx, "big", "v1"); err != nil {
		t.Fatalf("DeleteVersion(big/v1): %v", err)
	}
	mustCount(t, s, "big", "v1", 0)
	if sh, err := s.Commits(ctx, "big", "v1"); err != nil || len(sh) != 0 {
		t.Errorf("Commits(big/v1) after delete = %v, %v; want none", sh, err)
	}
	if m, err := s.Manifest(ctx, "big", "v1"); err != nil || m.State != writers.StateRetired {
		t.Errorf("Manifest(big/v1) = %v, %v; want state retired", m, err)
	}
	for _, c := range cells[1:] {
		mustCount(t, s, c.ns, c.version, int64(c.rows))
		if v, err := s.Get(ctx, c.ns, c.version, []byte("k000099")); err != nil || string(v) != "value-99" {
			t.Errorf("Get(%s/%s, k000099) = %q, %v; want value-99", c.ns, c.version, v, err)
		}
		if sh, err := s.Commits(ctx, c.ns, c.version); err != nil || len(sh) != 1 {
			t.Errorf("Commits(%s/%s) = %v, %v; want one", c.ns, c.version, sh, err)
		}
	}
}

func TestBigtableWriteRowsInManyRequests(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	d := driver(t, s)
	d.MutationsPerRequest = 7
	d.MaxInFlight = 3

	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}); err != nil {
		t.Fatal(err)
	}
	rows := rowsOf(100, "k")
	// The same key at both ends of the batch, in different requests: the last one wins.
	rows.Keys = append(rows.Keys, []byte("k000000"))
	rows.Values = append(rows.Values, []byte("last"))
	if err := s.WriteRows(ctx, "ns", "v1", rows); err != nil {
		t.Fatalf("WriteRows: %v", err)
	}
	mustCount(t, s, "ns", "v1", 100)
	if v, err := s.Get(ctx, "ns", "v1", []byte("k000000")); err != nil || string(v) != "last" {
		t.Errorf("Get(k000000) = %q, %v; want last", v, err)
	}

	t.Run("a bad key is named and nothing is written", func(t *testing.T) {
		bad := rowsOf(20, "x")
		bad.Keys[13] = []byte{'k', 0xff}
		err := s.WriteRows(ctx, "ns", "v1", bad)
		if !errors.Is(err, writers.ErrInvalid) || !strings.Contains(err.Error(), `row 13`) || !strings.Contains(err.Error(), `"k\xff"`) {
			t.Errorf("WriteRows error = %v, want ErrInvalid naming row 13 and its key", err)
		}
		mustCount(t, s, "ns", "v1", 100)
	})

	t.Run("a cancelled context stops the write", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.WriteRows(cctx, "ns", "v1", rowsOf(10, "c")); !errors.Is(err, context.Canceled) {
			t.Errorf("WriteRows error = %v, want context.Canceled", err)
		}
	})
}

func TestBigtableLease(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()

	a, err := s.AcquireLease(ctx, "ns", "run-a", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease(a): %v", err)
	}
	if a.Holder != "run-a" || a.Token == "" || time.Until(a.Expires) < 50*time.Second {
		t.Errorf("lease = %+v, want holder run-a, a token, expiry in a minute", a)
	}

	_, err = s.AcquireLease(ctx, "ns", "run-b", time.Minute)
	var held *writers.LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, writers.ErrLeaseHeld) || held.Holder != "run-a" || !held.Expires.Equal(a.Expires) {
		t.Fatalf("AcquireLease(b) while a holds it: error = %v, want a LeaseHeldError naming run-a until %s", err, a.Expires)
	}
	if _, err := s.AcquireLease(ctx, "other", "run-b", time.Minute); err != nil {
		t.Errorf("AcquireLease(other namespace): %v", err)
	}

	a2, err := s.RenewLease(ctx, a, 2*time.Minute)
	if err != nil || a2.Token != a.Token || !a2.Expires.After(a.Expires) {
		t.Errorf("RenewLease(a) = %+v, %v; want the same token and a later expiry", a2, err)
	}

	if err := s.ReleaseLease(ctx, a2); err != nil {
		t.Fatalf("ReleaseLease(a): %v", err)
	}
	if _, err := s.RenewLease(ctx, a2, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease after release: error = %v, want ErrLeaseLost", err)
	}

	// A short lease expires; it can no longer be renewed and is taken over.
	c, err := s.AcquireLease(ctx, "ns", "run-c", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("AcquireLease(c) after release: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.RenewLease(ctx, c, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
		t.Errorf("RenewLease of an expired lease: error = %v, want ErrLeaseLost", err)
	}
	d, err := s.AcquireLease(ctx, "ns", "run-d", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease(d) over an expired lease: %v", err)
	}
	if err := s.ReleaseLease(ctx, c); err != nil {
		t.Errorf("ReleaseLease of a lost lease: %v, want nil", err)
	}
	if _, err := s.RenewLease(ctx, d, time.Minute); err != nil {
		t.Errorf("RenewLease(d) after the old holder released: %v, want the successor's lease intact", err)
	}

	for _, bad := range []struct {
		holder string
		ttl    time.Duration
	}{{"", time.Minute}, {"run-e", 0}} {
		if _, err := s.AcquireLease(ctx, "bad", bad.holder, bad.ttl); !errors.Is(err, writers.ErrInvalid) {
			t.Errorf("AcquireLease(%q, %s) error = %v, want ErrInvalid", bad.holder, bad.ttl, err)
		}
	}
}

func TestBigtableExpiredLeaseHasOneTaker(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	if _, err := s.AcquireLease(ctx, "ns", "old", 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	const n = 16
	var wg sync.WaitGroup
	var won atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := s.AcquireLease(ctx, "ns", fmt.Sprintf("taker-%d", i), time.Minute)
			switch {
			case err == nil:
				won.Add(1)
			case !errors.Is(err, writers.ErrLeaseHeld):
				t.Errorf("AcquireLease(taker-%d) error = %v, want nil or ErrLeaseHeld", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := won.Load(); got != 1 {
		t.Errorf("takers that won = %d, want exactly 1", got)
	}
}

func TestBigtableCommits(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()

	ids := []string{"b#2", "a/1", "c:3", "a", "ü"}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := s.CommitWork(ctx, "ns", "v1", writers.Commit{ID: id, Rows: 1}); err != nil {
				t.Errorf("CommitWork(%s): %v", id, err)
			}
		})
	}
	wg.Wait()
	if err := s.CommitWork(ctx, "ns", "v1", writers.Commit{ID: "a", Rows: 42}); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitWork(ctx, "ns", "v10", writers.Commit{ID: "z", Rows: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Commits(ctx, "ns", "v1")
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, sh := range got {
		gotIDs = append(gotIDs, fmt.Sprintf("%s=%d", sh.ID, sh.Rows))
	}
	if want := "a=42 a/1=1 b#2=1 c:3=1 ü=1"; strings.Join(gotIDs, " ") != want {
		t.Errorf("Commits = %s, want %s", strings.Join(gotIDs, " "), want)
	}
	if err := s.CommitWork(ctx, "ns", "v1", writers.Commit{}); !errors.Is(err, writers.ErrInvalid) {
		t.Errorf("CommitWork(empty id) error = %v, want ErrInvalid", err)
	}
}

// BenchmarkBigtableWriteRows writes 10,000-row batches of 64-byte values into the
// in-process emulator, with one and with the default four ApplyBulk requests in flight; it
// measures the client side (batching, parallel requests) more than Bigtable itself.
func BenchmarkBigtableWriteRows(b *testing.B) {
	startEmulator(b)
	ctx := context.Background()
	const batch = 10000
	rows := writers.Rows{Keys: make([][]byte, batch), Values: make([][]byte, batch)}
	val := []byte(strings.Repeat("x", 64))
	for i := range batch {
		rows.Keys[i] = fmt.Appendf(nil, "user-%08d", i)
		rows.Values[i] = val
	}
	for _, inFlight := range []int{1, bigtable.DefaultMaxInFlight} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			s := openBigtable(b)
			defer s.Close()
			d := driver(b, s)
			d.MaxInFlight = inFlight
			d.MutationsPerRequest = 2500 // four requests per batch
			if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "bench", Version: "v1", State: writers.StateWriting}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := s.WriteRows(ctx, "bench", "v1", rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// countingReadRows starts an emulator that counts the ReadRows requests it receives:
// what reaches the server, retries included, is what a round trip costs.
func countingReadRows(t *testing.T) *atomic.Int64 {
	t.Helper()
	reads := new(atomic.Int64)
	startEmulator(t, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/ReadRows") {
			reads.Add(1)
		}
		return h(srv, ss)
	}))
	return reads
}

func TestBigtableGetManyIsOneReadRows(t *testing.T) {
	reads := countingReadRows(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRows(ctx, "ns", "v1", rowsOf(60, "k")); err != nil {
		t.Fatal(err)
	}

	// 100 keys: k000000..k000059 are stored, k000060..k000089 are not, and the last ten
	// ask again for keys already asked.
	var keys [][]byte
	for i := range 90 {
		keys = append(keys, fmt.Appendf(nil, "k%06d", i))
	}
	for i := range 10 {
		keys = append(keys, fmt.Appendf(nil, "k%06d", i*9))
	}
	reads.Store(0)
	got, err := s.GetMany(ctx, "ns", "v1", keys)
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("GetMany of %d keys sent %d ReadRows requests, want 1", len(keys), n)
	}
	if len(got) != len(keys) {
		t.Fatalf("GetMany answered %d values for %d keys", len(got), len(keys))
	}
	for i, k := range keys {
		var n int
		fmt.Sscanf(string(k), "k%06d", &n)
		want := []byte(nil)
		if n < 60 {
			want = fmt.Appendf(nil, "value-%d", n)
		}
		if string(got[i]) != string(want) || (got[i] == nil) != (want == nil) {
			t.Errorf("GetMany[%d] (%s) = %q, want %q", i, k, got[i], want)
		}
	}
	// A key asked twice gets two slices: changing one leaves the other alone.
	if got[0][0] = 'X'; got[90][0] != 'v' {
		t.Errorf("the two answers for %s share their bytes", keys[0])
	}
}

// rawRow reads a row of the store's table as it is stored, newest cell per column.
func rawRow(t *testing.T, table, row string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	c, err := bt.NewClient(ctx, "proj", "inst")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Open(table).ReadRow(ctx, row, bt.RowFilter(bt.LatestNFilter(1)))
	if err != nil {
		t.Fatalf("ReadRow(%q): %v", row, err)
	}
	out := map[string][]byte{}
	for _, it := range r["p"] {
		out[strings.TrimPrefix(it.Column, "p:")] = it.Value
	}
	return out
}

func TestBigtableReleaseRowsAreAsDocumented(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	table := driver(t, s).Table()

	rel := &writers.Release{ID: "r1", Namespace: "ns", Mode: writers.ModeCanary, Live: "v1", Candidate: "v2", State: writers.ReleaseRunning}
	for range 2 {
		if err := s.SwapRelease(ctx, rel); err != nil {
			t.Fatalf("SwapRelease: %v", err)
		}
	}
	row := rawRow(t, table, "r#ns")
	if string(row["rev"]) != "2" || !strings.Contains(string(row["release"]), `"revision":2`) {
		t.Errorf("row r#ns = rev %q, release %s; want rev 2 and the record at revision 2", row["rev"], row["release"])
	}

	if err := s.AddCounts(ctx, "ns", "r1", 3, map[string]int64{"live.requests": 258, "candidate.errors": -1}); err != nil {
		t.Fatal(err)
	}
	row = rawRow(t, table, "c#ns#r1#00000000000000000003")
	if got := fmt.Sprintf("%x %x", row["live.requests"], row["candidate.errors"]); got != "0000000000000102 ffffffffffffffff" {
		t.Errorf("counter cells = %s, want 8-byte big-endian 258 and -1", got)
	}

	if err := s.PutSketch(ctx, "ns", "r1", "units#live", "replica-a", []byte("hll")); err != nil {
		t.Fatal(err)
	}
	if row := rawRow(t, table, "k#ns#r1#units#live"); string(row["replica-a"]) != "hll" || len(row) != 1 {
		t.Errorf("row k#ns#r1#units#live = %q, want replica-a: hll alone", row)
	}
}

func TestBigtableReleaseRowsNeverOverlap(t *testing.T) {
	startEmulator(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()

	// Intervals that are prefixes of each other, releases that extend each other.
	cells := []struct {
		release  string
		interval int64
	}{{"r1", 1}, {"r1", 10}, {"r1", 100}, {"r10", 1}, {"r1", -1}, {"r1", 0}}
	for i, c := range cells {
		if err := s.AddCounts(ctx, "ns", c.release, c.interval, map[string]int64{"n": int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cells {
		if got, err := s.Counts(ctx, "ns", c.release, c.interval); err != nil || got["n"] != int64(i+1) || len(got) != 1 {
			t.Errorf("Counts(%s, %d) = %v, %v; want n %d alone", c.release, c.interval, got, err, i+1)
		}
	}

	// Sketch names are free-form, '#' included: each is its own row.
	names := []string{"units", "units#", "units#live", "units.live", "#"}
	for _, name := range names {
		if err := s.PutSketch(ctx, "ns", "r1", name, "replica#a", []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		got, err := s.Sketches(ctx, "ns", "r1", name)
		if err != nil || len(got) != 1 || string(got[0]) != name {
			t.Errorf("Sketches(%q) = %q, %v; want [%q]", name, got, err, name)
		}
	}
	if got, err := s.Sketches(ctx, "ns", "r10", "units"); err != nil || len(got) != 0 {
		t.Errorf("Sketches of release r10 = %q, %v; want none", got, err)
	}
}

func TestBigtableReleaseSwapsFromTwoProcessesHaveOneWinner(t *testing.T) {
	// Two stores on one table are two clients with their own connections, as two
	// replicas are: the compare-and-swap is the server's, not an in-process lock.
	startEmulator(t)
	ctx := context.Background()
	url := fmt.Sprintf("bigtable://proj/inst/t%d", btTables.Add(1))
	var stores []*writers.Store
	for range 2 {
		s, err := bigtable.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	base := &writers.Release{ID: "r1", Namespace: "ns", Mode: writers.ModeAB, Live: "v1", Candidate: "v2", State: writers.ReleaseRunning}
	if err := stores[0].SwapRelease(ctx, base); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		cur, err := stores[1].Release(ctx, "ns")
		if err != nil || cur == nil {
			t.Fatalf("Release = %+v, %v", cur, err)
		}
		var wg sync.WaitGroup
		var won atomic.Int32
		for i := range 8 {
			wg.Go(func() {
				r := *cur
				r.Reason = fmt.Sprint("writer ", i)
				switch err := stores[i%2].SwapRelease(ctx, &r); {
				case err == nil:
					won.Add(1)
				case !errors.Is(err, writers.ErrConflict):
					t.Errorf("round %d: swap %d: %v, want nil or ErrConflict", round, i, err)
				}
			})
		}
		wg.Wait()
		if got := won.Load(); got != 1 {
			t.Errorf("round %d: %d swaps from revision %d won, want exactly 1", round, got, cur.Revision)
		}
	}
	if cur, err := stores[0].Release(ctx, "ns"); err != nil || cur.Revision != 6 {
		t.Errorf("after five rounds: %+v, %v; want revision 6", cur, err)
	}
}

func TestBigtableGetChainIsOneReadRows(t *testing.T) {
	reads := countingReadRows(t)
	ctx := context.Background()
	s := openBigtable(t)
	defer s.Close()
	for i, v := range []string{"v1", "v2", "v3"} {
		m := &writers.Manifest{Namespace: "ns", Version: v, State: writers.StateWriting}
		if i > 0 {
			m.Mode, m.Base, m.Depth = writers.VersionIncremental, []string{"v1", "v2"}[i-1], i+1
		}
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		rows := rowsOf(60, "k")
		if i > 0 {
			rows = writers.Rows{Keys: [][]byte{fmt.Appendf(nil, "k%06d", i)}, Values: [][]byte{[]byte(v)}}
		}
		if err := s.WriteRows(ctx, "ns", v, rows); err != nil {
			t.Fatal(err)
		}
	}
	keys := [][]byte{[]byte("k000000"), []byte("k000001"), []byte("k000002"), []byte("k000099")}
	reads.Store(0)
	vals, from, err := s.GetChain(ctx, "ns", []string{"v3", "v2", "v1"}, keys)
	if err != nil {
		t.Fatal(err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("GetChain of 3 levels sent %d ReadRows requests, want 1", n)
	}
	if want := []int{2, 1, 0, -1}; !reflect.DeepEqual(from, want) || string(vals[1]) != "v2" || string(vals[2]) != "v3" || vals[3] != nil {
		t.Errorf("GetChain = %q from %v, want levels %v", vals, from, want)
	}
}
