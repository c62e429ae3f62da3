package lookup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/bigtable/bttest"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/readers/shardgen"
	_ "github.com/staticref/staticref/writers/bigtable" // bigtable:// stores under test
	"github.com/staticref/staticref/writers/redis"
	"github.com/staticref/staticref/writers/redistest"
)

// roundTrips counts what a go-redis client sends: one per command sent alone, one per
// pipeline, and the commands inside them; a new connection's handshake is not counted.
type roundTrips struct {
	trips, cmds atomic.Int64
	mu          sync.Mutex
	seen        []string // the first command of each round trip
}

func (r *roundTrips) saw(cmds []goredis.Cmder) {
	switch fmt.Sprint(cmds[0].Args()[0]) {
	case "hello", "client", "auth", "select": // a new connection's handshake: not the batch's
		return
	}
	r.trips.Add(1)
	r.cmds.Add(int64(len(cmds)))
	r.mu.Lock()
	r.seen = append(r.seen, fmt.Sprintf("%v(%d)", cmds[0].Args()[0], len(cmds)))
	r.mu.Unlock()
}

func (r *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (r *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		r.saw([]goredis.Cmder{cmd})
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		r.saw(cmds)
		return next(ctx, cmds)
	}
}

// hundredKeys are 100 keys for one batchGet: 90 the version holds, 10 it lacks.
func hundredKeys() (keys []string, body string) {
	for i := range 90 {
		keys = append(keys, shardgen.RowAt(spec, int64(i*17)).Key)
	}
	for i := range 10 {
		keys = append(keys, fmt.Sprintf("nobody-%d", i))
	}
	return keys, `{"keys":["` + strings.Join(keys, `","`) + `"]}`
}

// checkBatch asks a batchGet of the 100 keys and checks every answer.
func checkBatch(t *testing.T, base, body string, keys []string) {
	t.Helper()
	r := call(t, "POST", base+"/v1/churn:batchGet", body)
	answers, _ := r.body["answers"].([]any)
	if r.status != 200 || len(answers) != len(keys) {
		t.Fatalf("got %d %.300s, want 200 with %d answers", r.status, r.raw, len(keys))
	}
	for i, a := range answers {
		a := a.(map[string]any)
		_, hasErr := a["error"]
		if a["key"] != keys[i] || hasErr != (i >= 90) {
			t.Errorf("answer %d: %v, want key %s (an error: %v)", i, a, keys[i], i >= 90)
		}
	}
}

// The service polls its store only every hour here: the one round trip counted is the
// batch's.
const noPolls = "poll_interval: 1h\n"

func TestABatchOfAHundredKeysIsOneRoundTripToRedis(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"standalone", redistest.Standalone},
		{"cluster", redistest.Cluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.url(t)
			publish(t, openStore(t, url), false)
			svc, base := service(t, noPolls+"namespaces:\n  churn:\n    store: "+url+"\n")
			client := lookup.StoreOf(svc, "churn").Driver().(*redis.Driver).Client()
			var top, nodes roundTrips
			client.AddHook(&top)
			masters := 1
			if cc, ok := client.(*goredis.ClusterClient); ok {
				var n atomic.Int64 // ForEachMaster calls its func concurrently
				cc.ForEachMaster(context.Background(), func(_ context.Context, c *goredis.Client) error {
					n.Add(1)
					c.AddHook(&nodes)
					return nil
				})
				masters = int(n.Load())
			}
			keys, body := hundredKeys()
			checkBatch(t, base, body, keys)
			if got := top.trips.Load(); got != 1 {
				t.Errorf("a batchGet of 100 keys the cache lacks: %d round trips (%d commands) from the client, want 1", got, top.cmds.Load())
			}
			if masters > 1 {
				if got := nodes.trips.Load(); got < 1 || got > int64(masters) {
					t.Errorf("cluster: %d pipelines to the masters, want one to each master that holds a key (at most %d)", got, masters)
				}
			}
			t.Logf("%d round trip(s) %v, %d commands; %d pipelines to %d masters %v", top.trips.Load(), top.seen, top.cmds.Load(), nodes.trips.Load(), masters, nodes.seen)
			top.trips.Store(0)
			checkBatch(t, base, body, keys)
			if got := top.trips.Load(); got != 0 {
				t.Errorf("the same batch again: %d round trips, want 0 (every answer cached, misses too)", got)
			}
		})
	}
}

func TestABatchOfAHundredKeysIsOneReadRowsOnBigtable(t *testing.T) {
	var reads atomic.Int64
	count := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/ReadRows") {
			reads.Add(1)
		}
		return handler(srv, ss)
	}
	srv, err := bttest.NewServer("127.0.0.1:0", grpc.StreamInterceptor(count))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Setenv("BIGTABLE_EMULATOR_HOST", srv.Addr)
	url := "bigtable://proj/inst/predictions"
	publish(t, openStore(t, url), false)
	_, base := service(t, noPolls+"namespaces:\n  churn:\n    store: "+url+"\n")
	keys, body := hundredKeys()
	before := reads.Load()
	checkBatch(t, base, body, keys)
	if got := reads.Load() - before; got != 1 {
		t.Errorf("a batchGet of 100 keys the cache lacks: %d ReadRows calls, want 1", got)
	}
}

// TestConcurrentMissesAreAnsweredRightWhenCoalesced: with the cache off, many clients
// asking at once share the coalescer's GetManys; every answer must still be its own
// key's stored value, and a missing key a 404, whichever batch it rode in.
func TestConcurrentMissesAreAnsweredRightWhenCoalesced(t *testing.T) {
	url := redistest.Standalone(t)
	store := openStore(t, url)
	m := publish(t, store, false)
	svc, base := service(t, noPolls+"cache_bytes: off\nnamespaces:\n  churn:\n    store: "+url+"\n")
	var top roundTrips
	lookup.StoreOf(svc, "churn").Driver().(*redis.Driver).Client().AddHook(&top)
	const clients, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan string, clients*each)
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				n := c*each + i
				key := shardgen.RowAt(spec, int64(n%spec.Rows)).Key
				if n%10 == 9 {
					key = fmt.Sprintf("nobody-%d", n)
				}
				resp, err := http.Get(base + "/v1/churn/" + key)
				if err != nil {
					errs <- err.Error()
					continue
				}
				var a struct {
					Key     string          `json:"key"`
					Value   json.RawMessage `json:"value"`
					Version string          `json:"version"`
				}
				json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				want, err := store.Get(context.Background(), "churn", m.Version, []byte(key))
				switch {
				case n%10 == 9 && resp.StatusCode != 404:
					errs <- fmt.Sprintf("%s: got %d, want 404", key, resp.StatusCode)
				case n%10 != 9 && (err != nil || resp.StatusCode != 200 || a.Key != key || string(a.Value) != string(want) || a.Version != m.Version):
					errs <- fmt.Sprintf("%s: got %d %s %s, want %s of %s", key, resp.StatusCode, a.Key, a.Value, want, m.Version)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("%d lookups the cache lacked: %d store round trips", clients*each, top.trips.Load())
}
