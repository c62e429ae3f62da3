package lookup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
)

// chainAnswer is one answer of :batchGet with the fields an increment adds.
type chainAnswer struct {
	Key        string             `json:"key"`
	Version    string             `json:"version"`
	RowVersion string             `json:"row_version"`
	ComputedAt time.Time          `json:"computed_at"`
	Arm        string             `json:"arm"`
	Source     string             `json:"source"`
	Value      map[string]float64 `json:"value"`
	Error      *lookup.Error      `json:"error"`
}

func chainBatch(t *testing.T, base string, keys []string) []chainAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"keys": keys})
	r := call(t, "POST", base+"/v1/churn:batchGet", string(body))
	if r.status != 200 {
		t.Fatalf("batchGet: %d %s", r.status, r.raw)
	}
	var b struct {
		Answers []chainAnswer `json:"answers"`
	}
	if err := json.Unmarshal([]byte(r.raw), &b); err != nil {
		t.Fatal(err)
	}
	return b.Answers
}

// putIncrement writes an incremental version on base: new values for keys 0..99, ten new
// keys new0..new9, and a tombstone for key 500.
func putIncrement(t *testing.T, s *writers.Store, base *writers.Manifest, version string, keys []string) *writers.Manifest {
	t.Helper()
	ctx := context.Background()
	m := &writers.Manifest{Namespace: "churn", Version: version, Job: "churn", State: writers.StateWriting, Encoding: "json",
		Outputs: base.Outputs, StartedAt: time.Now().UTC(), Mode: writers.VersionIncremental, Base: base.Version, Depth: 2,
		Defaults: base.Defaults, Distributions: base.Distributions}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	var rows writers.Rows
	for i := range 100 {
		v, _ := candValue(i)
		rows.Keys = append(rows.Keys, []byte(keys[i]))
		rows.Values = append(rows.Values, []byte(`{"score":`+strconv.FormatFloat(v, 'g', -1, 64)+`}`))
	}
	for i := range 10 {
		rows.Keys = append(rows.Keys, fmt.Appendf(nil, "new%d", i))
		rows.Values = append(rows.Values, fmt.Appendf(nil, `{"score":%d}`, i))
	}
	rows.Keys, rows.Values = append(rows.Keys, []byte(keys[500])), append(rows.Values, writers.Tombstone)
	if err := s.WriteRows(ctx, "churn", version, rows); err != nil {
		t.Fatal(err)
	}
	m.State, m.CompletedAt = writers.StateComplete, base.CompletedAt.Add(time.Second) // a computed_at of its own
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantChainAnswer checks one answer of the chain v2 (increment) on v1 for key i of keys
// (i < 0: new key -i-1).
func wantChainAnswer(t *testing.T, a chainAnswer, i int, v1, v2 *writers.Manifest) {
	t.Helper()
	switch {
	case i == 500:
		if a.Error == nil || a.Error.Code != lookup.CodeNotFound || a.RowVersion != "" {
			t.Errorf("deleted key %s: got %+v, want not_found", a.Key, a)
		}
	case i < 0:
		if a.Value["score"] != float64(-i-1) || a.RowVersion != v2.Version || !a.ComputedAt.Equal(v2.CompletedAt) {
			t.Errorf("new key %s: got %+v, want score %d from %s", a.Key, a, -i-1, v2.Version)
		}
	case i < 100:
		if want, _ := candValue(i); a.Value["score"] != want || a.RowVersion != v2.Version || !a.ComputedAt.Equal(v2.CompletedAt) {
			t.Errorf("key %s: got %+v, want %v from %s", a.Key, a, want, v2.Version)
		}
	default:
		if want, _ := liveValue(i); a.Value["score"] != want || a.RowVersion != v1.Version || !a.ComputedAt.Equal(v1.CompletedAt) {
			t.Errorf("key %s: got %+v, want %v from %s computed at %s", a.Key, a, want, v1.Version, v1.CompletedAt)
		}
	}
}

func TestAnIncrementAnswersDownItsChain(t *testing.T) {
	s, url := pebbleStore(t)
	ctx := context.Background()
	keys := keysOf(1000)
	v1 := putVersion(t, s, "churn", "v1", keys, liveValue)
	v2 := putIncrement(t, s, v1, "v2", keys)
	if _, err := writers.Flip(ctx, s, "churn", "v2"); err != nil {
		t.Fatal(err)
	}
	_, base := service(t, "namespaces:\n  churn:\n    store: "+url+"\n")
	ask := []string{keys[0], keys[99], keys[100], keys[999], keys[500], "new0", "new9"}
	idx := []int{0, 99, 100, 999, 500, -1, -10}
	for round := range 2 { // the second answers from the cache
		for j, a := range chainBatch(t, base, ask) {
			if a.Version != "v2" {
				t.Errorf("round %d key %s: version %s, want the head v2", round, a.Key, a.Version)
			}
			wantChainAnswer(t, a, idx[j], v1, v2)
		}
	}
	r := call(t, "GET", base+"/v1/churn/"+keys[300], "")
	if r.status != 200 || r.body["row_version"] != "v1" || r.body["version"] != "v2" {
		t.Errorf("GET of a key only the base holds: %d %s", r.status, r.raw)
	}
	sn, err := lookup.Resolve(ctx, s, "churn")
	if err != nil {
		t.Fatal(err)
	}
	if a, err := sn.Get(ctx, s, "new3", time.Now()); err != nil || a.RowVersion != "v2" || a.Error != nil {
		t.Errorf("Snapshot.Get of a new key: %+v, %v", a, err)
	}
}

func TestACanaryOfAnIncrementReadsTheCandidatesChain(t *testing.T) {
	s, url := pebbleStore(t)
	ctx := context.Background()
	keys := keysOf(1000)
	v1 := putVersion(t, s, "churn", "v1", keys, liveValue)
	v2 := putIncrement(t, s, v1, "v2", keys)
	if _, err := writers.Flip(ctx, s, "churn", "v1"); err != nil {
		t.Fatal(err)
	}
	_, base := releaseService(t, storeConfig(url), 100*time.Millisecond, 300*time.Millisecond)
	rel := releaseAction(t, base, `{"action":"start","mode":"canary","candidate":"v2","weight_percent":50}`)
	var cand, live int
	for j, a := range chainBatch(t, base, keys) {
		if a.Arm == "candidate" {
			cand++
			wantChainAnswer(t, a, j, v1, v2)
			continue
		}
		live++
		if want, _ := liveValue(j); a.Value["score"] != want || a.RowVersion != "v1" {
			t.Errorf("live arm key %s: %+v", a.Key, a)
		}
	}
	if cand == 0 || live == 0 {
		t.Errorf("release %s routed %d keys to the candidate and %d to live, want some of each", rel.ID, cand, live)
	}
}
