package main

import (
	"context"
	"reflect"
	"testing"

	"github.com/staticref/staticref/writers"
)

// TestRunsGCAndRollbackOfANamespaceLeaveItsNeighboursAlone: demo2 and demo.x extend the
// name demo, so a store whose key prefixes do not end where a name ends reads or
// deletes their records when it works on demo. Runs (each with its own gc), a rollback
// and a gc --keep 0 of demo leave everything a user sees of the neighbours as it was.
func TestRunsGCAndRollbackOfANamespaceLeaveItsNeighboursAlone(t *testing.T) {
	_, job, store := workspace(t, 1000, "")
	ns := func(name string) []string { return []string{"run", "--job", job, "--set", "sink.namespace=" + name} }
	for _, n := range []string{"demo2", "demo.x"} {
		for range 2 {
			if code, _, stderr := staticref(t, ns(n)...); code != 0 {
				t.Fatalf("run %s: exit %d: %s", n, code, stderr)
			}
		}
	}
	before := neighbourState(t, store)

	for range 3 {
		if code, _, stderr := staticref(t, ns("demo")...); code != 0 {
			t.Fatalf("run demo: exit %d: %s", code, stderr)
		}
	}
	for _, args := range [][]string{
		{"versions", "rollback", "--store", store, "--namespace", "demo"},
		{"versions", "gc", "--store", store, "--namespace", "demo", "--keep", "0"},
	} {
		if code, _, stderr := staticref(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
	}
	if after := neighbourState(t, store); !reflect.DeepEqual(after, before) {
		t.Errorf("the neighbours changed:\n got %v\nwant %v", after, before)
	}
}

// neighbourState is what a user sees of demo2 and demo.x: live pointers, every
// manifest's state and row count, and every version's stored keys.
func neighbourState(t *testing.T, url string) map[string]any {
	t.Helper()
	ctx := context.Background()
	s, err := writers.OpenExisting(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[string]any{}
	for _, n := range []string{"demo2", "demo.x"} {
		live, versions, err := writers.List(ctx, s, n)
		if err != nil {
			t.Fatal(err)
		}
		out[n+" live"] = live
		for _, v := range versions {
			keys, err := s.CountKeys(ctx, n, v.Version)
			if err != nil {
				t.Fatal(err)
			}
			out[n+"/"+v.Version] = []any{v.Effective, v.RowsWritten, keys}
		}
	}
	if len(out) != 6 {
		t.Fatalf("neighbours: got %v, want two namespaces of two versions", out)
	}
	return out
}
