package lookup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/staticref/staticref/lookup/grpcapi/staticref/v1"
)

// The lookup API over gRPC: staticref.v1.Lookup (lookup/grpcapi/staticref/v1/lookup.proto),
// served on grpc_addr beside HTTP. Get and BatchGet parse their request into what the
// HTTP handlers parse theirs into and call the same lookupOne and lookupBatch
// (query.go); only the writing differs, and the Answer it writes from is the one the
// JSON renderer writes from (render.go). An error is a gRPC status whose code is the
// API code's row of codeTable, with the API code itself (not_found, stale, ...) in a
// google.rpc.ErrorInfo detail, so that a client can tell stale from unavailable as
// HTTP's JSON body tells it. Server reflection is on, so grpcurl and other generic
// clients need no .proto.

// ErrorDomain is the domain of the ErrorInfo detail of the gRPC API's errors.
const ErrorDomain = "staticref"

// GRPCServer returns a gRPC server of the lookup API, with reflection. Serve runs it on
// its gRPC listener; tests and embedders may run it themselves.
func (s *Service) GRPCServer() *grpc.Server {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(s.grpcMetrics))
	pb.RegisterLookupServer(srv, grpcLookup{s: s})
	reflection.Register(srv)
	return srv
}

// grpcMetrics counts each call by method and status code.
func (s *Service) grpcMetrics(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	s.met.grpcCalls.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

type grpcLookup struct {
	pb.UnimplementedLookupServer
	s *Service
}

// Get implements staticref.v1.Lookup.
func (g grpcLookup) Get(ctx context.Context, req *pb.GetRequest) (*pb.Answer, error) {
	s := g.s
	start := time.Now()
	n, aerr := s.findNamespace(req.GetNamespace())
	if aerr != nil {
		return nil, s.grpcError(aerr)
	}
	key := req.GetKey()
	if aerr := checkKey(key); aerr != nil {
		return nil, s.grpcError(aerr)
	}
	r := request{segment: segmentOf(n, req.GetSegment())}
	if f := req.GetFeatures(); len(f) > 0 {
		r.features = f
	}
	sc := getScratch()
	defer putScratch(sc)
	o, aerr := s.lookupOne(ctx, n, key, req.GetUnit(), r, sc)
	if aerr != nil {
		n.met.observe("error", start)
		return nil, s.grpcError(aerr)
	}
	a, err := s.protoAnswer(n, &o.Answer)
	if err != nil {
		return nil, err
	}
	n.met.observe(o.Source, start)
	s.shadow(n, &o)
	return a, nil
}

// BatchGet implements staticref.v1.Lookup.
func (g grpcLookup) BatchGet(ctx context.Context, req *pb.BatchGetRequest) (*pb.BatchGetResponse, error) {
	s := g.s
	start := time.Now()
	n, aerr := s.findNamespace(req.GetNamespace())
	if aerr != nil {
		return nil, s.grpcError(aerr)
	}
	var features map[string]map[string]float64
	if fs := req.GetFeatures(); len(fs) > 0 {
		features = make(map[string]map[string]float64, len(fs))
		for k, f := range fs {
			features[k] = f.GetValues()
			if features[k] == nil {
				features[k] = map[string]float64{} // {} as JSON sends it: its features are missing
			}
		}
	}
	b, aerr := s.lookupBatch(ctx, n, req.GetKeys(), req.GetUnit(), request{segment: segmentOf(n, req.GetSegment())}, features)
	if aerr != nil {
		n.met.observe("error", start)
		return nil, s.grpcError(aerr)
	}
	out := &pb.BatchGetResponse{Namespace: n.name, Version: b.sn.Manifest.Version, Stale: b.stale, Answers: make([]*pb.Answer, len(b.answers))}
	for i := range b.answers {
		a, err := s.protoAnswer(n, &b.answers[i])
		if err != nil {
			return nil, err
		}
		out.Answers[i] = a
	}
	n.met.observe("batch", start)
	s.shadowBatch(n, &b)
	return out, nil
}

// protoAnswer is a as the gRPC API answers it.
func (s *Service) protoAnswer(n *namespace, a *Answer) (*pb.Answer, error) {
	p := &pb.Answer{Namespace: a.Namespace, Key: a.Key, Version: a.Version, RowVersion: a.RowVersion, Arm: a.Arm, Source: a.Source}
	if a.Value != nil {
		v, err := protoValue(a.Value)
		if err != nil {
			s.log.Error("a value the gRPC answer cannot hold", "namespace", n.name, "version", a.Version, "err", err)
			return nil, s.grpcError(errorf(CodeInternal, "the stored value of this key cannot be decoded"))
		}
		p.Value = v
	}
	if a.ComputedAt != nil {
		p.ComputedAt = timestamppb.New(*a.ComputedAt)
	}
	if a.AgeSeconds != nil {
		p.AgeSeconds = *a.AgeSeconds
	}
	if a.Stale != nil {
		p.Stale = *a.Stale
	}
	if a.Error != nil {
		p.Error = &pb.Error{Code: a.Error.Code, Message: a.Error.Message}
	}
	return p, nil
}

// grpcError is e as a gRPC status: its code from codeTable, e's message, and e's API
// code in an ErrorInfo detail. It counts staticref_errors_total as HTTP's writeError.
func (s *Service) grpcError(e *apiError) error {
	s.met.errors.WithLabelValues(e.code).Inc()
	st := status.New(codeOf(e.code).grpc, e.message)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: e.code, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// APICodeOf is the API error code (not_found, stale, ...) of an error of the gRPC API,
// from its ErrorInfo detail, else "".
func APICodeOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// protoValue reads a value object as the API answers it, {"score":0.47,"logits":[0.1,
// -2]}, into per-output values: a number is one value, a list its values, null none
// (and a null in a list NaN). It scans the JSON without decoding it into maps: this is
// every gRPC answer's cost.
func protoValue(v []byte) (map[string]*pb.Values, error) {
	out := make(map[string]*pb.Values, 2)
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return nil, errors.New("a value is not a JSON object")
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == '}' {
		return out, nil
	}
	for {
		name, next, err := scanString(v, i)
		if err != nil {
			return nil, err
		}
		i = skipSpace(v, next)
		if i >= len(v) || v[i] != ':' {
			return nil, fmt.Errorf("output %q: no ':'", name)
		}
		i = skipSpace(v, i+1)
		vals := &pb.Values{}
		switch {
		case i < len(v) && v[i] == '[':
			i = skipSpace(v, i+1)
			for i < len(v) && v[i] != ']' {
				var x float32
				if x, i, err = scanNumber(v, i); err != nil {
					return nil, fmt.Errorf("output %q: %w", name, err)
				}
				vals.Values = append(vals.Values, x)
				i = skipSpace(v, i)
				if i < len(v) && v[i] == ',' {
					i = skipSpace(v, i+1)
				}
			}
			if i >= len(v) {
				return nil, fmt.Errorf("output %q: the list does not end", name)
			}
			i++
		case bytes.HasPrefix(v[i:], []byte("null")):
			i += 4
		default:
			var x float32
			if x, i, err = scanNumber(v, i); err != nil {
				return nil, fmt.Errorf("output %q: %w", name, err)
			}
			vals.Values = []float32{x}
		}
		out[name] = vals
		i = skipSpace(v, i)
		switch {
		case i < len(v) && v[i] == ',':
			i = skipSpace(v, i+1)
		case i < len(v) && v[i] == '}':
			return out, nil
		default:
			return nil, errors.New("a value object does not end")
		}
	}
}

// scanString reads the JSON string at v[i:] and returns it and the index after it.
func scanString(v []byte, i int) (string, int, error) {
	if i >= len(v) || v[i] != '"' {
		return "", i, errors.New("want an output name")
	}
	escaped := false
	for j := i + 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			if !escaped {
				return string(v[i+1 : j]), j + 1, nil
			}
			var s string
			if err := json.Unmarshal(v[i:j+1], &s); err != nil {
				return "", i, err
			}
			return s, j + 1, nil
		}
	}
	return "", i, errors.New("an output name does not end")
}

// scanNumber reads the number (or null: NaN) at v[i:] as a float32.
func scanNumber(v []byte, i int) (float32, int, error) {
	if bytes.HasPrefix(v[i:], []byte("null")) {
		return float32(math.NaN()), i + 4, nil
	}
	j := i
	for j < len(v) && (v[j] >= '0' && v[j] <= '9' || v[j] == '-' || v[j] == '+' || v[j] == '.' || v[j] == 'e' || v[j] == 'E') {
		j++
	}
	x, err := strconv.ParseFloat(string(v[i:j]), 32)
	if err != nil {
		return 0, i, fmt.Errorf("not a number: %q", v[i:j])
	}
	return float32(x), j, nil
}

// grpcShutdown stops srv once ctx is done: gracefully, for at most grace, then at once.
func grpcShutdown(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		srv.Stop()
		<-done
	}
}
