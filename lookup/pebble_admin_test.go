package lookup_test

import (
	"context"
	"testing"

	"github.com/staticref/staticref/writers"
)

// TestAdminFlipsOnPebbleWhileARunWrites: admin flips and rollbacks through serve work on a
// pebble: store while another handle (a run, as `staticref run` would hold it) writes a
// new version into the same directory; they answered 503 while a run held the store's
// lock before versions became files of their own.
func TestAdminFlipsOnPebbleWhileARunWrites(t *testing.T) {
	ctx := context.Background()
	s, url := pebbleStore(t)
	v1 := publish(t, s, false)
	v2 := publish(t, s, true) // complete, not live
	// A run in progress: a version in state writing with rows in it, its handle open.
	if err := s.PutManifest(ctx, &writers.Manifest{Namespace: "churn", Version: "v-writing", State: writers.StateWriting, StartedAt: v1.StartedAt}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRows(ctx, "churn", "v-writing", writers.Rows{Keys: [][]byte{[]byte("u000000001")}, Values: [][]byte{[]byte(`{"score":0.5}`)}}); err != nil {
		t.Fatal(err)
	}

	_, base := service(t, "admin_token_file: token\nnamespaces:\n  churn:\n    store: "+url+"\n")
	auth := []string{"Authorization", "Bearer s3cret-admin-token-0123456789"}
	version := func() any { return call(t, "GET", base+"/v1/churn/u000000001", "").body["version"] }
	if v := version(); v != v1.Version {
		t.Fatalf("live: got %v, want %s", v, v1.Version)
	}
	r := call(t, "POST", base+"/v1/churn:flip", `{"version":"`+v2.Version+`"}`, auth...)
	if r.status != 200 || version() != v2.Version {
		t.Fatalf("flip while a run writes: got %d %s, then answering %v; want 200 and %s", r.status, r.raw, version(), v2.Version)
	}
	r = call(t, "POST", base+"/v1/churn:rollback", "", auth...)
	if r.status != 200 || version() != v1.Version {
		t.Fatalf("rollback while a run writes: got %d %s, then answering %v; want 200 and %s", r.status, r.raw, version(), v1.Version)
	}
	// The run goes on writing and completes its version afterwards.
	if err := s.WriteRows(ctx, "churn", "v-writing", writers.Rows{Keys: [][]byte{[]byte("u000000002")}, Values: [][]byte{[]byte(`{"score":0.25}`)}}); err != nil {
		t.Errorf("the run's next write after the admin flips: %v", err)
	}
}
