package parquet_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/staticref/staticref/readers/objtest"
	"github.com/staticref/staticref/writers"
	_ "github.com/staticref/staticref/writers/parquet"
)

func TestMain(m *testing.M) {
	code := m.Run()
	objtest.Stop()
	os.Exit(code)
}

// TestTheCatalogAndLeaseWorkOnEveryBackend: manifests, commits and the writer lease of
// the export-only store, on a local folder and the three object-store servers.
func TestTheCatalogAndLeaseWorkOnEveryBackend(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"a local folder", func(t *testing.T) string { return "parquet:" + t.TempDir() }},
		{"S3 (versitygw)", func(t *testing.T) string { return "parquet+" + objtest.ObjectURL(objtest.S3(t), "exports") }},
		{"GCS (fake-gcs-server)", func(t *testing.T) string { return "parquet+" + objtest.ObjectURL(objtest.GCS(t), "exports") }},
		{"Azure Blob (Azurite)", func(t *testing.T) string { return "parquet+" + objtest.ObjectURL(objtest.Azure(t), "exports") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := writers.Open(ctx, tt.url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()

			l, err := s.AcquireLease(ctx, "ns", "a", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var held *writers.LeaseHeldError
			if _, err := s.AcquireLease(ctx, "ns", "b", time.Minute); !errors.As(err, &held) || held.Holder != "a" {
				t.Fatalf("a second writer: got %v, want the lease held by a", err)
			}
			if l, err = s.RenewLease(ctx, l, time.Minute); err != nil {
				t.Fatalf("renew: %v", err)
			}
			if err := s.ReleaseLease(ctx, l); err != nil {
				t.Fatal(err)
			}
			short, err := s.AcquireLease(ctx, "ns", "b", time.Millisecond)
			if err != nil {
				t.Fatalf("after release: %v", err)
			}
			for deadline := time.Now().Add(time.Second); time.Now().Before(short.Expires) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			c, err := s.AcquireLease(ctx, "ns", "c", time.Minute)
			if err != nil {
				t.Fatalf("an expired lease is not taken over: %v", err)
			}
			if _, err := s.RenewLease(ctx, short, time.Minute); !errors.Is(err, writers.ErrLeaseLost) {
				t.Errorf("renewing a lease taken over: got %v, want ErrLeaseLost", err)
			}
			s.ReleaseLease(ctx, c)

			m := &writers.Manifest{Namespace: "ns", Version: "v1", State: writers.StateWriting}
			if err := s.PutManifest(ctx, m); err != nil {
				t.Fatal(err)
			}
			if err := s.WriteRows(ctx, "ns", "v1", writers.Rows{Keys: [][]byte{[]byte("k")}, Values: [][]byte{[]byte("{}")}}); err != nil {
				t.Errorf("rows into a writing version: %v", err)
			}
			for _, id := range []string{"s3://b/features/dt=2026-11-30/part-0.parquet#0", "file#1"} {
				if err := s.CommitWork(ctx, "ns", "v1", writers.Commit{ID: id, Rows: 3}); err != nil {
					t.Fatal(err)
				}
			}
			cs, err := s.Commits(ctx, "ns", "v1")
			if err != nil || len(cs) != 2 {
				t.Fatalf("commits: got %v (%v), want 2", cs, err)
			}
			m.State = writers.StateComplete
			if err := s.PutManifest(ctx, m); err != nil {
				t.Fatal(err)
			}
			if err := s.WriteRows(ctx, "ns", "v1", writers.Rows{Keys: [][]byte{[]byte("k")}, Values: [][]byte{[]byte("{}")}}); err == nil {
				t.Error("rows into a complete version were accepted")
			}
			ms, err := s.Manifests(ctx, "ns")
			if err != nil || len(ms) != 1 || ms[0].State != writers.StateComplete {
				t.Fatalf("manifests: got %v (%v), want v1 complete", ms, err)
			}
			if _, err := writers.Flip(ctx, s, "ns", "v1"); !errors.Is(err, writers.ErrExportOnly) {
				t.Errorf("flip: got %v, want ErrExportOnly", err)
			}
		})
	}
}
