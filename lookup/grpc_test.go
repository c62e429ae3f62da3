package lookup_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/staticref/staticref/lookup"
	pb "github.com/staticref/staticref/lookup/grpcapi/staticref/v1"
	"github.com/staticref/staticref/readers/shardgen"
	"github.com/staticref/staticref/writers"
)

// grpcService starts the service with both HTTP and gRPC on loopback listeners, its
// clock fixed at now (so that both protocols answer the same age), waits until it is
// ready and returns its base URL and a gRPC client.
func grpcService(t testing.TB, cfgYAML string, now time.Time) (*lookup.Service, string, pb.LookupClient, *grpc.ClientConn) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(path, []byte(cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := lookup.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := lookup.New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	lookup.SetClock(svc, func() time.Time { return now })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, ln, gln) }()
	conn, err := grpc.NewClient(gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		svc.Close()
	})
	eventually(t, 10*time.Second, "the service is ready", svc.Ready)
	return svc, "http://" + ln.Addr().String(), pb.NewLookupClient(conn), conn
}

// same is an answer as either protocol gave it, in one form: what the test compares.
type same struct {
	Namespace, Key, Version, RowVersion, Arm, Source, ComputedAt string
	Age                                                          float64
	Stale                                                        bool
	Value                                                        map[string][]float32
	Err                                                          string // code: message
}

// fromJSON reads an answer of the HTTP API.
func fromJSON(t testing.TB, a map[string]any) same {
	t.Helper()
	s := same{}
	s.Namespace, _ = a["namespace"].(string)
	s.Key, _ = a["key"].(string)
	s.Version, _ = a["version"].(string)
	s.RowVersion, _ = a["row_version"].(string)
	s.Arm, _ = a["arm"].(string)
	s.Source, _ = a["source"].(string)
	if c, ok := a["computed_at"].(string); ok {
		at, err := time.Parse(time.RFC3339Nano, c)
		if err != nil {
			t.Fatal(err)
		}
		s.ComputedAt = at.UTC().Format(time.RFC3339Nano)
	}
	s.Age, _ = a["age_seconds"].(float64)
	s.Stale, _ = a["stale"].(bool)
	if v, ok := a["value"].(map[string]any); ok {
		s.Value = map[string][]float32{}
		for out, x := range v {
			switch x := x.(type) {
			case float64:
				s.Value[out] = []float32{float32(x)}
			case []any:
				s.Value[out] = []float32{}
				for _, y := range x {
					s.Value[out] = append(s.Value[out], float32(y.(float64)))
				}
			}
		}
	}
	if e, ok := a["error"].(map[string]any); ok {
		s.Err = fmt.Sprintf("%v: %v", e["code"], e["message"])
	}
	return s
}

// fromProto reads an answer of the gRPC API.
func fromProto(a *pb.Answer) same {
	s := same{Namespace: a.Namespace, Key: a.Key, Version: a.Version, RowVersion: a.RowVersion, Arm: a.Arm, Source: a.Source, Age: a.AgeSeconds, Stale: a.Stale}
	if a.ComputedAt != nil {
		s.ComputedAt = a.ComputedAt.AsTime().UTC().Format(time.RFC3339Nano)
	}
	if a.Value != nil {
		s.Value = map[string][]float32{}
		for out, v := range a.Value {
			s.Value[out] = append([]float32{}, v.Values...)
		}
	}
	if a.Error != nil {
		s.Err = a.Error.Code + ": " + a.Error.Message
	}
	return s
}

// errorOf is an error answer of either protocol as "code: message", with the HTTP
// status or gRPC code it came with.
func httpError(r response) (string, int) {
	e, _ := r.body["error"].(map[string]any)
	return fmt.Sprintf("%v: %v", e["code"], e["message"]), r.status
}

func grpcError(err error) (string, codes.Code) {
	st, _ := status.FromError(err)
	return lookup.APICodeOf(err) + ": " + st.Message(), st.Code()
}

// wantCode is the gRPC code the one table gives an HTTP status in these tests.
var wantCode = map[int]codes.Code{400: codes.InvalidArgument, 404: codes.NotFound, 503: codes.Unavailable, 413: codes.ResourceExhausted}

func TestGRPCAndHTTPGiveTheSameAnswers(t *testing.T) {
	s, url := pebbleStore(t)
	m := publish(t, s, false)
	s.Close()
	now := m.CompletedAt.Add(90*time.Second + 250*time.Millisecond)
	cfg := func(extra string) string {
		return "max_batch: 5\nnamespaces:\n  churn:\n    store: " + url + "\n" + extra
	}
	_, base, client, _ := grpcService(t, cfg("    fallback: {segment_param: country, default: computed}\n    model: "+filepath.Join(dataDir, "logistic.onnx")+"\n"), now)
	_, noDefault, noDefaultClient, _ := grpcService(t, cfg("    fallback: {segment_param: country}\n"), now)
	_, staleServe, staleServeClient, _ := grpcService(t, cfg("    max_staleness: 1m\n    fallback: {default: computed}\n"), now)
	_, staleError, staleErrorClient, _ := grpcService(t, cfg("    max_staleness: 1m\n    on_stale: error\n"), now)
	country := shardgen.RowAt(spec, 7).Country
	feats := map[string]float64{"f0": 1.5, "f1": -0.25, "f2": 3, "f3": 10}
	featsJSON := `{"features": {"f0": 1.5, "f1": -0.25, "f2": 3, "f3": 10}}`
	ctx := context.Background()

	gets := []struct {
		name    string
		base    string
		client  pb.LookupClient
		method  string
		path    string
		body    string
		req     *pb.GetRequest
		status  int
		source  string
		wantErr bool
	}{
		{"a stored key", base, client, "GET", "/v1/churn/u000000007", "", &pb.GetRequest{Namespace: "churn", Key: "u000000007"}, 200, lookup.SourcePrecomputed, false},
		{"a stored key with a segment", base, client, "GET", "/v1/churn/u000000007?country=" + country, "", &pb.GetRequest{Namespace: "churn", Key: "u000000007", Segment: country}, 200, lookup.SourcePrecomputed, false},
		{"a segment fallback", base, client, "GET", "/v1/churn/nobody?country=" + country, "", &pb.GetRequest{Namespace: "churn", Key: "nobody", Segment: country}, 200, lookup.SourceFallbackSegment, false},
		{"the default fallback", base, client, "GET", "/v1/churn/nobody?country=XX", "", &pb.GetRequest{Namespace: "churn", Key: "nobody", Segment: "XX"}, 200, lookup.SourceFallbackDefault, false},
		{"an online prediction", base, client, "POST", "/v1/churn/nobody?country=XX", featsJSON, &pb.GetRequest{Namespace: "churn", Key: "nobody", Segment: "XX", Features: feats}, 200, lookup.SourceOnline, false},
		{"features the model cannot use", base, client, "POST", "/v1/churn/nobody", `{"features":{"f0":1}}`, &pb.GetRequest{Namespace: "churn", Key: "nobody", Features: map[string]float64{"f0": 1}}, 400, "", true},
		{"a key nothing answers", noDefault, noDefaultClient, "GET", "/v1/churn/nobody?country=XX", "", &pb.GetRequest{Namespace: "churn", Key: "nobody", Segment: "XX"}, 404, "", true},
		{"a key over the length limit", base, client, "GET", "/v1/churn/" + strings.Repeat("k", writers.MaxKeyLen+1), "", &pb.GetRequest{Namespace: "churn", Key: strings.Repeat("k", writers.MaxKeyLen+1)}, 400, "", true},
		{"an empty key", base, client, "", "", "", &pb.GetRequest{Namespace: "churn", Key: ""}, 400, "", true},
		{"an unknown namespace", base, client, "GET", "/v1/other/k", "", &pb.GetRequest{Namespace: "other", Key: "k"}, 404, "", true},
		{"an invalid namespace", base, client, "GET", "/v1/Bad%20NS/k", "", &pb.GetRequest{Namespace: "Bad NS", Key: "k"}, 404, "", true},
		{"a stale version served", staleServe, staleServeClient, "GET", "/v1/churn/u000000001", "", &pb.GetRequest{Namespace: "churn", Key: "u000000001"}, 200, lookup.SourcePrecomputed, false},
		{"a stale version's fallback", staleServe, staleServeClient, "GET", "/v1/churn/nobody", "", &pb.GetRequest{Namespace: "churn", Key: "nobody"}, 200, lookup.SourceFallbackDefault, false},
		{"a stale version refused", staleError, staleErrorClient, "GET", "/v1/churn/u000000001", "", &pb.GetRequest{Namespace: "churn", Key: "u000000001"}, 503, "", true},
	}
	for _, tt := range gets {
		t.Run("Get: "+tt.name, func(t *testing.T) {
			ga, gerr := tt.client.Get(ctx, tt.req)
			if tt.method == "" { // not a request HTTP can make: the gRPC side alone
				if code := status.Code(gerr); code != wantCode[tt.status] {
					t.Fatalf("gRPC: got %v, want %v", gerr, wantCode[tt.status])
				}
				return
			}
			r := call(t, tt.method, tt.base+tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("HTTP: got %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.wantErr {
				hmsg, hstatus := httpError(r)
				gmsg, gcode := grpcError(gerr)
				if gerr == nil || gmsg != hmsg || gcode != wantCode[hstatus] {
					t.Errorf("gRPC: got %v (%s), want code %v and %q as HTTP's %d", gcode, gmsg, wantCode[hstatus], hmsg, hstatus)
				}
				return
			}
			if gerr != nil {
				t.Fatalf("gRPC: %v; HTTP answered %s", gerr, r.raw)
			}
			h, g := fromJSON(t, r.body), fromProto(ga)
			if h.Source != tt.source || h.Version != m.Version {
				t.Errorf("HTTP: got %s, want source %s of version %s", r.raw, tt.source, m.Version)
			}
			if !reflect.DeepEqual(h, g) {
				t.Errorf("gRPC answered\n  %+v\nHTTP answered\n  %+v", g, h)
			}
		})
	}

	batches := []struct {
		name   string
		base   string
		client pb.LookupClient
		query  string
		body   string
		req    *pb.BatchGetRequest
		status int
	}{
		{"stored keys, a segment fallback and a default", base, client, "?country=" + country, `{"keys":["u000000001","nobody","u000000002"]}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"u000000001", "nobody", "u000000002"}, Segment: country}, 200},
		{"an online prediction from its key's features", base, client, "?country=XX", `{"keys":["u000000001","nobody","stranger"],"features":{"nobody":{"f0":1.5,"f1":-0.25,"f2":3,"f3":10}}}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"u000000001", "nobody", "stranger"}, Segment: "XX",
				Features: map[string]*pb.Features{"nobody": {Values: feats}}}, 200},
		{"keys nothing answers, in place", noDefault, noDefaultClient, "", `{"keys":["u000000003","nobody"]}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"u000000003", "nobody"}}, 200},
		{"a stale version", staleServe, staleServeClient, "", `{"keys":["u000000003","nobody"]}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"u000000003", "nobody"}}, 200},
		{"a stale version refused", staleError, staleErrorClient, "", `{"keys":["u000000003"]}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"u000000003"}}, 503},
		{"no keys", base, client, "", `{"keys":[]}`, &pb.BatchGetRequest{Namespace: "churn"}, 400},
		{"more keys than max_batch", base, client, "", `{"keys":["a","b","c","d","e","f"]}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"a", "b", "c", "d", "e", "f"}}, 400},
		{"an invalid key", base, client, "", `{"keys":["a",""]}`, &pb.BatchGetRequest{Namespace: "churn", Keys: []string{"a", ""}}, 400},
		{"features of a key not asked", base, client, "", `{"keys":["a"],"features":{"b":{"f0":1}}}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"a"}, Features: map[string]*pb.Features{"b": {Values: map[string]float64{"f0": 1}}}}, 400},
		{"features the model cannot use", base, client, "", `{"keys":["nobody"],"features":{"nobody":{}}}`,
			&pb.BatchGetRequest{Namespace: "churn", Keys: []string{"nobody"}, Features: map[string]*pb.Features{"nobody": {}}}, 400},
		{"an unknown namespace", base, client, "", "", &pb.BatchGetRequest{Namespace: "other", Keys: []string{"a"}}, 404},
	}
	for _, tt := range batches {
		t.Run("BatchGet: "+tt.name, func(t *testing.T) {
			ns := tt.req.Namespace
			r := call(t, "POST", tt.base+"/v1/"+ns+":batchGet"+tt.query, tt.body)
			gb, gerr := tt.client.BatchGet(ctx, tt.req)
			if r.status != tt.status {
				t.Fatalf("HTTP: got %d %s, want %d", r.status, r.raw, tt.status)
			}
			if tt.status != 200 {
				hmsg, hstatus := httpError(r)
				gmsg, gcode := grpcError(gerr)
				if gerr == nil || gmsg != hmsg || gcode != wantCode[hstatus] {
					t.Errorf("gRPC: got %v (%s), want code %v and %q as HTTP's %d", gcode, gmsg, wantCode[hstatus], hmsg, hstatus)
				}
				return
			}
			if gerr != nil {
				t.Fatalf("gRPC: %v; HTTP answered %s", gerr, r.raw)
			}
			if gb.Namespace != r.body["namespace"] || gb.Version != r.body["version"] || gb.Stale != r.body["stale"] || gb.Version != m.Version {
				t.Errorf("gRPC batch: %s %s stale %v; HTTP %s", gb.Namespace, gb.Version, gb.Stale, r.raw)
			}
			answers, _ := r.body["answers"].([]any)
			if len(answers) != len(gb.Answers) || len(answers) != len(tt.req.Keys) {
				t.Fatalf("gRPC: %d answers, HTTP %d, for %d keys", len(gb.Answers), len(answers), len(tt.req.Keys))
			}
			for i := range answers {
				h, g := fromJSON(t, answers[i].(map[string]any)), fromProto(gb.Answers[i])
				if !reflect.DeepEqual(h, g) {
					t.Errorf("answer %d: gRPC answered\n  %+v\nHTTP answered\n  %+v", i, g, h)
				}
			}
		})
	}

	t.Run("the online prediction is the model's", func(t *testing.T) {
		a, err := client.Get(ctx, &pb.GetRequest{Namespace: "churn", Key: "nobody", Features: feats})
		want := model.Predict([]float64{1.5, -0.25, 3, 10})["score"][0]
		if err != nil || math.Abs(float64(a.Value["score"].Values[0])-want) > 1e-5 {
			t.Errorf("got %v %v, want score %v", a, err, want)
		}
	})

	t.Run("metrics count gRPC calls and their answers", func(t *testing.T) {
		r := call(t, "GET", base+"/metrics", "")
		for _, want := range []string{
			`staticref_grpc_requests_total{code="OK",method="/staticref.v1.Lookup/Get"}`,
			`staticref_grpc_requests_total{code="InvalidArgument",method="/staticref.v1.Lookup/BatchGet"}`,
			`staticref_request_duration_seconds_bucket{namespace="churn",source="online"`,
			`staticref_errors_total{code="invalid_argument"}`,
		} {
			if !strings.Contains(r.raw, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestGRPCReflectionListsTheLookupService(t *testing.T) {
	s, url := pebbleStore(t)
	m := publish(t, s, false)
	s.Close()
	_, _, _, conn := grpcService(t, "namespaces:\n  churn:\n    store: "+url+"\n", m.CompletedAt)
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sv := range resp.GetListServicesResponse().GetService() {
		names = append(names, sv.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), "staticref.v1.Lookup") {
		t.Fatalf("reflection lists %v, want staticref.v1.Lookup among them", names)
	}
	// A generic client also needs the descriptors: ask for the service's file.
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "staticref.v1.Lookup"}}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("the file of staticref.v1.Lookup: %v %v", resp, err)
	}
}
