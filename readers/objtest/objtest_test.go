package objtest_test

import (
	"context"
	"os"
	"testing"

	"gocloud.dev/blob"

	"github.com/staticref/staticref/readers/objtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	objtest.Stop()
	os.Exit(code)
}

func TestEachServerStoresAndReturnsAnObject(t *testing.T) {
	for _, tt := range []struct {
		name   string
		bucket func(testing.TB) string
	}{{"S3 on versitygw", objtest.S3}, {"GCS on fake-gcs-server", objtest.GCS}, {"Azure on Azurite", objtest.Azure}} {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.bucket(t)
			objtest.Put(t, u, "dt=2026-11-30/a.txt", []byte("hello"))
			ctx := context.Background()
			b, err := blob.OpenBucket(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			got, err := b.ReadAll(ctx, "dt=2026-11-30/a.txt")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello" {
				t.Fatalf("got %q, want hello", got)
			}
		})
	}
}
