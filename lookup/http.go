package lookup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/staticref/staticref/lookup/ui"
	"github.com/staticref/staticref/writers"
)

// StaleHeader is set to "true" on answers from a version older than max_staleness.
const StaleHeader = "Staticref-Stale"

// Handler returns the HTTP API (docs/lookup.md).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		// Not an error answer: a probe reads the status, a person the detail.
		r := s.Readiness()
		status := http.StatusOK
		if !r.Ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, r)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	if s.cfg.UI == nil || *s.cfg.UI {
		mux.Handle("/ui/", ui.New(s, s.log)) // read-only; GET and its own login POST
	}
	mux.HandleFunc("GET /v1/{namespace}", s.handleStatus)
	mux.HandleFunc("POST /v1/{target}", s.handleAction)
	mux.HandleFunc("GET /v1/{namespace}/{key...}", s.handleGet)
	mux.HandleFunc("POST /v1/{namespace}/{key...}", s.handleGet)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, errorf(CodeMethod, "method %s is not allowed on %s: use %s (see docs/lookup.md)",
				r.Method, r.URL.Path, strings.Join(allow, " or ")))
			return
		}
		s.writeError(w, errorf(CodeNotFound, "no such endpoint: %s %s (see docs/lookup.md)", r.Method, r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ns, key, ok := fastGet(r); ok {
			s.serveGet(w, r, ns, key)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// fastGet routes the one request that must be cheap, GET /v1/{namespace}/{key...},
// without the ServeMux, whose wildcard matching allocates several objects a request. It
// takes only what the mux would route to handleGet with the same values: a GET of a
// clean path (the mux redirects others) whose escaping is the default (RawPath empty: no
// %2F in a segment), a namespace segment without ':' (the actions). Anything else goes
// to the mux.
func fastGet(r *http.Request) (ns, key string, ok bool) {
	if r.Method != http.MethodGet || r.URL.RawPath != "" {
		return "", "", false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		return "", "", false
	}
	ns, key, ok = strings.Cut(rest, "/")
	if !ok || ns == "" || strings.IndexByte(ns, ':') >= 0 {
		return "", "", false
	}
	if p := r.URL.Path; path.Clean(p) != p && path.Clean(p)+"/" != p {
		return "", "", false
	}
	return ns, key, true
}

// allowedMethods lists the methods that have a route for r's path, when r's own method
// has none: the catch-all "/" would otherwise turn a wrong method into a 404.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead) // net/http serves HEAD with GET's handler
			}
		}
	}
	return allow
}

// namespace finds a served namespace, or answers 404.
func (s *Service) namespace(w http.ResponseWriter, name string) *namespace {
	n, aerr := s.findNamespace(name)
	if aerr != nil {
		s.writeError(w, aerr)
	}
	return n
}

// snapshot loads the namespace's snapshot, once per request, or answers 503.
func (s *Service) snapshot(w http.ResponseWriter, n *namespace) *Snapshot {
	sn, aerr := s.snapshotOf(n)
	if aerr != nil {
		s.writeError(w, aerr)
	}
	return sn
}

// Header values set on every answer, shared (net/http only reads them).
var (
	jsonContentType = []string{"application/json"}
	trueHeader      = []string{"true"}
)

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	s.serveGet(w, r, r.PathValue("namespace"), r.PathValue("key"))
}

// serveGet answers GET and POST /v1/{namespace}/{key...}.
func (s *Service) serveGet(w http.ResponseWriter, r *http.Request, ns, key string) {
	start := time.Now()
	n := s.namespace(w, ns)
	if n == nil {
		return
	}
	if err := checkKey(key); err != nil {
		s.writeError(w, err)
		return
	}
	req := request{}
	if p := n.cfg.Fallback.SegmentParam; p != "" {
		req.segment, _ = queryValue(r.URL.RawQuery, p)
	}
	if r.Method == http.MethodPost {
		var body struct {
			Features map[string]float64 `json:"features"`
		}
		if !s.decode(w, r, &body) {
			return
		}
		if body.Features == nil {
			s.writeError(w, errorf(CodeInvalid, `body: want {"features": {"f0": 1.5, ...}}`))
			return
		}
		req.features = body.Features
	}
	sc := getScratch()
	defer putScratch(sc)
	o, aerr := s.lookupOne(r.Context(), n, key, unitOf(r, key), req, sc)
	h := w.Header()
	if o.sn != nil {
		h[VersionHeader] = o.sn.header()
	}
	if o.arm >= 0 {
		h[ArmHeader] = armHeaders[o.arm]
	}
	if aerr != nil {
		s.writeError(w, aerr)
		n.met.observe("error", start)
		return
	}
	if o.Stale != nil && *o.Stale {
		h[StaleHeader] = trueHeader
	}
	h["Content-Type"] = jsonContentType
	sc.out = appendAnswer(sc.out[:0], &o.Answer)
	sc.out = append(sc.out, '\n')
	w.WriteHeader(http.StatusOK)
	w.Write(sc.out)
	n.met.observe(o.Source, start)
	s.shadow(n, &o)
}

// armHeaders are the Staticref-Arm header values, by arm.
var armHeaders = [2][]string{{writers.ArmLive}, {writers.ArmCandidate}}

// precomputedValue is a's value when the version held it (what the release histograms
// count), else nil.
func precomputedValue(a *Answer) json.RawMessage {
	if a.Source == SourcePrecomputed {
		return a.Value
	}
	return nil
}

// BatchAnswer is the answer of :batchGet: every key answered from Version. The service
// writes it with appendBatch (render.go); this is its shape for clients.
type BatchAnswer struct {
	Namespace string   `json:"namespace"`
	Version   string   `json:"version"`
	Stale     bool     `json:"stale"`
	Answers   []Answer `json:"answers"`
}

func (s *Service) handleAction(w http.ResponseWriter, r *http.Request) {
	name, action, ok := strings.Cut(r.PathValue("target"), ":")
	if !ok {
		s.writeError(w, errorf(CodeNotFound, "no such endpoint: POST %s: use /v1/NS:batchGet, :flip, :rollback or :release", r.URL.Path))
		return
	}
	n := s.namespace(w, name)
	if n == nil {
		return
	}
	switch action {
	case "batchGet":
		s.handleBatch(w, r, n)
	case "release":
		if !s.authorized(w, r) {
			return
		}
		s.handleRelease(w, r, n)
	case "flip", "rollback":
		if !s.authorized(w, r) {
			return
		}
		s.handleFlip(w, r, n, action)
	default:
		s.writeError(w, errorf(CodeNotFound, "no such action %q: use batchGet, flip, rollback or release", action))
	}
}

func (s *Service) handleBatch(w http.ResponseWriter, r *http.Request, n *namespace) {
	start := time.Now()
	var body struct {
		Keys []string `json:"keys"`
		// Features are, per key, the features an online prediction of that key uses when
		// the version lacks it (as a single lookup's body sends them).
		Features map[string]map[string]float64 `json:"features"`
	}
	raw, ok := s.decodeRaw(w, r, &body)
	if !ok {
		return
	}
	if err := s.checkBatchSize(len(body.Keys)); err != nil {
		s.writeError(w, err)
		return
	}
	if i := invalidUTF8Key(raw, body.Keys); i >= 0 {
		s.writeError(w, errorf(CodeInvalid, "keys[%d]: not valid UTF-8: a key is text, and JSON would read the bad bytes as U+FFFD, another key", i))
		return
	}
	req := request{}
	if p := n.cfg.Fallback.SegmentParam; p != "" {
		req.segment, _ = queryValue(r.URL.RawQuery, p)
	}
	unit, _ := queryValue(r.URL.RawQuery, "unit")
	if unit == "" {
		unit = r.Header.Get(UnitHeader)
	}
	b, aerr := s.lookupBatch(r.Context(), n, body.Keys, unit, req, body.Features)
	if aerr != nil {
		s.writeError(w, aerr)
		n.met.observe("error", start)
		return
	}
	h := w.Header()
	if b.stale {
		h[StaleHeader] = trueHeader
	}
	h["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	w.Write(appendBatch(nil, n.name, b.sn.Manifest.Version, b.stale, b.answers))
	n.met.observe("batch", start)
	s.shadowBatch(n, &b)
}

// routedBatch answers a batch while a release routes: each key goes to the arm of its
// unit (the request's unit for every key, else the key itself), each arm's keys are
// answered from its version, concurrently, and each answer names its version and arm.
// An arm that fails fails the batch.
func (s *Service) routedBatch(ctx context.Context, n *namespace, sn *Snapshot, rel *releaseView, keys []string, unit string, req request, features map[string]map[string]float64) ([]Answer, *apiError) {
	var idx [2][]int
	var snaps [2]*Snapshot
	for i, k := range keys {
		u := unit
		if u == "" {
			u = k
		}
		asn, arm, h := rel.route(sn, u)
		snaps[arm] = asn
		idx[arm] = append(idx[arm], i)
		if rel.ab {
			rel.c.units[arm].insert(h)
		}
	}
	out := make([]Answer, len(keys))
	var errs [2]*apiError
	var wg sync.WaitGroup
	for arm := range idx {
		if len(idx[arm]) == 0 {
			continue
		}
		wg.Go(func() {
			sub := make([]string, len(idx[arm]))
			for j, i := range idx[arm] {
				sub[j] = keys[i]
			}
			answers, missing, err := s.batch(ctx, n, snaps[arm], sub, req, features)
			if err != nil {
				for range sub {
					rel.count(arm, false, failedCode(err.code), nil)
				}
				errs[arm] = err
				return
			}
			for j, i := range idx[arm] {
				a := &answers[j]
				a.Arm = armNames[arm]
				failed := a.Error != nil && failedCode(a.Error.Code)
				rel.count(arm, missing[j], failed, precomputedValue(a))
				out[i] = *a
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Status is the answer of GET /v1/{namespace}.
type Status struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	// Manifest is the live version's *ManifestSummary, or, to a request with the admin
	// token, its whole *writers.Manifest.
	Manifest            any      `json:"manifest"`
	Previous            []string `json:"previous"`
	AgeSeconds          float64  `json:"age_seconds"`
	Stale               bool     `json:"stale"`
	MaxStalenessSeconds float64  `json:"max_staleness_seconds,omitempty"`
}

// ManifestSummary is what anyone may read of a version's manifest: its fields of the
// same names, less what tells of the machines that made it (the paths of the model and
// the source files, the shards, the error).
type ManifestSummary struct {
	Version     string           `json:"version"`
	State       writers.State    `json:"state"`
	RowsRead    int64            `json:"rows_read"`
	RowsWritten int64            `json:"rows_written"`
	RowsSkipped int64            `json:"rows_skipped"`
	StartedAt   time.Time        `json:"started_at"`
	CompletedAt time.Time        `json:"completed_at,omitzero"`
	LiveAt      time.Time        `json:"live_at,omitzero"`
	Outputs     []writers.Output `json:"outputs"`
	Encoding    string           `json:"encoding"`
}

// summarize is the ManifestSummary of m.
func summarize(m *writers.Manifest) *ManifestSummary {
	return &ManifestSummary{Version: m.Version, State: m.State, RowsRead: m.RowsRead, RowsWritten: m.RowsWritten,
		RowsSkipped: m.RowsSkipped, StartedAt: m.StartedAt, CompletedAt: m.CompletedAt, LiveAt: m.LiveAt,
		Outputs: m.Outputs, Encoding: m.Encoding}
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutSuffix(r.PathValue("namespace"), ":release"); ok {
		if n := s.namespace(w, name); n != nil {
			s.handleReleaseStatus(w, r, n)
		}
		return
	}
	n := s.namespace(w, r.PathValue("namespace"))
	if n == nil {
		return
	}
	// Without an Authorization header, the summary; with one, it must be the admin
	// token, for the whole manifest.
	admin := r.Header.Get("Authorization") != ""
	if admin && !s.authorized(w, r) {
		return
	}
	sn := s.snapshot(w, n)
	if sn == nil {
		return
	}
	ctx, cancel := s.storeCtx(r.Context())
	defer cancel()
	_, versions, err := writers.List(ctx, sn.Store, n.name)
	if err != nil {
		s.writeError(w, s.apiErrorOf(n.name, err))
		return
	}
	now, stale := s.stale(n, sn)
	var man any = summarize(sn.Manifest)
	if admin {
		man = sn.Manifest
	}
	st := Status{Namespace: n.name, Version: sn.Manifest.Version, Manifest: man, Previous: []string{},
		AgeSeconds: roundSeconds(now.Sub(sn.Manifest.CompletedAt)), Stale: stale,
		MaxStalenessSeconds: time.Duration(n.cfg.MaxStaleness).Seconds()}
	for i := len(versions) - 1; i >= 0; i-- {
		v := versions[i]
		if writers.EffectiveState(v.Manifest, sn.Manifest.Version) == writers.StatePrevious {
			st.Previous = append(st.Previous, v.Version)
		}
	}
	if stale {
		w.Header().Set(StaleHeader, "true")
	}
	writeJSON(w, http.StatusOK, st)
}

// authorized checks the bearer token in constant time. The token is never logged. The
// scheme is matched whatever its case ("bearer" is "Bearer", RFC 7235 2.1).
func (s *Service) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.token == nil {
		s.writeError(w, errorf(CodeForbidden, "admin endpoints are off: set admin_token_file in the service config"))
		return false
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimLeft(tok, " ")
	ok := strings.EqualFold(scheme, "Bearer")
	sum := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="staticref"`)
		s.writeError(w, errorf(CodeUnauthenticated, "admin endpoints need Authorization: Bearer <token from admin_token_file>"))
		return false
	}
	return true
}

// FlipAnswer is the answer of :flip and :rollback.
type FlipAnswer struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	Previous  string `json:"previous"`
}

func (s *Service) handleFlip(w http.ResponseWriter, r *http.Request, n *namespace, action string) {
	var body struct {
		Version string `json:"version"`
	}
	if action == "flip" {
		if !s.decode(w, r, &body) {
			return
		}
		if err := writers.ValidateVersion(body.Version); err != nil {
			s.writeError(w, errorf(CodeInvalid, `body: want {"version": "20261127T020000Z"}: %v`, trimInvalid(err)))
			return
		}
	}
	src := n.src.Load()
	if src == nil {
		s.writeError(w, errorf(CodeUnavailable, "the store of %s is unavailable: connecting to it", n.name))
		return
	}
	// Each store call below has its own store_timeout.
	cctx, cancel := context.WithTimeout(r.Context(), 4*time.Duration(s.cfg.StoreTimeout))
	defer cancel()
	store, release, err := src.catalog(cctx)
	if err != nil {
		s.writeError(w, s.apiErrorOf(n.name, err))
		return
	}
	var ans FlipAnswer
	if action == "flip" {
		ctx, cancel := s.storeCtx(r.Context())
		_, err := store.Manifest(ctx, n.name, body.Version)
		cancel()
		switch {
		case errors.Is(err, writers.ErrNotFound):
			release()
			s.writeError(w, errorf(CodeNotFound, "version %s of %s does not exist", body.Version, n.name))
			return
		case err != nil:
			release()
			s.writeError(w, s.apiErrorOf(n.name, err))
			return
		}
		ctx, cancel = s.storeCtx(r.Context())
		prev, err := writers.Flip(ctx, store, n.name, body.Version)
		cancel()
		ans = FlipAnswer{Namespace: n.name, Version: body.Version, Previous: prev}
		if err != nil {
			release()
			s.writeError(w, s.apiErrorOf(n.name, err))
			return
		}
	} else {
		ctx, cancel := s.storeCtx(r.Context())
		from, to, err := writers.Rollback(ctx, store, n.name)
		cancel()
		if err != nil {
			release()
			if errors.Is(err, writers.ErrNotFound) && !errors.As(err, new(*writers.NoRollbackError)) {
				err = errorf(CodeNotFound, "%s: nothing to roll back to", n.name) // no live version
			}
			s.writeError(w, s.apiErrorOf(n.name, err))
			return
		}
		ans = FlipAnswer{Namespace: n.name, Version: to, Previous: from}
	}
	release()
	s.log.Info("admin "+action, "namespace", n.name, "version", ans.Version, "previous", ans.Previous, "remote", r.RemoteAddr)
	s.refresh(r.Context(), n)
	writeJSON(w, http.StatusOK, ans)
}

// decode reads a JSON body of at most max_body_bytes into v, answering 4xx itself.
func (s *Service) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	_, ok := s.decodeRaw(w, r, v)
	return ok
}

// decodeRaw is decode that also returns the body as sent.
func (s *Service) decodeRaw(w http.ResponseWriter, r *http.Request, v any) ([]byte, bool) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err = dec.Decode(v); err == nil && dec.More() {
			err = errors.New("trailing data after the JSON object")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return raw, true
	case errors.As(err, &tooBig):
		s.writeError(w, errorf(CodeTooLarge, "body over %d bytes (max_body_bytes)", tooBig.Limit))
	case errors.Is(err, io.EOF):
		s.writeError(w, errorf(CodeInvalid, "body: empty; want a JSON object"))
	default:
		s.writeError(w, errorf(CodeInvalid, "body: %s", jsonProblem(err)))
	}
	return nil, false
}

// invalidUTF8Key is the index of the first key that the body sent as invalid UTF-8 (or
// as an unpaired surrogate escape, \ud800), or -1: encoding/json reads either as
// U+FFFD without a word, so the key looked up would not be the one sent. keys are the
// decoded keys; the body is read again only when one of them holds U+FFFD.
func invalidUTF8Key(body []byte, keys []string) int {
	if !slices.ContainsFunc(keys, func(k string) bool { return strings.ContainsRune(k, utf8.RuneError) }) {
		return -1
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if json.Unmarshal(body, &raw) != nil {
		return -1
	}
	for i, k := range raw.Keys {
		if !utf8JSONString(k) {
			return i
		}
	}
	return -1
}

// utf8JSONString reports whether a JSON string, as sent, is valid UTF-8 with every
// \u escape of a surrogate in a pair.
func utf8JSONString(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	hex4 := func(i int) (rune, bool) { // the 4 hex digits at b[i:]
		if i+4 > len(b) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(b[i:i+4]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		i++
		if i >= len(b) || b[i] != 'u' {
			continue // \" \\ \n ...: one character, skipped
		}
		r, ok := hex4(i + 1)
		i += 4
		switch {
		case !ok:
			return false
		case r >= 0xDC00 && r <= 0xDFFF: // a low surrogate first
			return false
		case r >= 0xD800 && r <= 0xDBFF: // a high surrogate: a low one must follow
			if i+2 >= len(b) || b[i+1] != '\\' || b[i+2] != 'u' {
				return false
			}
			if lo, ok := hex4(i + 3); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 6
		}
	}
	return true
}

// jsonProblem says what is wrong with a request body in terms of its JSON, not of the
// Go types it decodes into.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "the body"
		}
		return fmt.Sprintf("%s: got a JSON %s, want %s", field, te.Value, jsonKind(te.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON: it ends before the object does"
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the JSON that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Map:
		return "an object of " + jsonPlural(t.Elem()) + " by name"
	case reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array of " + jsonPlural(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64:
		return "a number"
	}
	return t.String()
}

// jsonPlural names many JSON values that decode into t: "numbers", "objects".
func jsonPlural(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "objects"
	case reflect.Slice, reflect.Array:
		return "arrays"
	case reflect.String:
		return "strings"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64:
		return "numbers"
	}
	return t.String() + "s"
}

func trimInvalid(err error) string {
	return strings.TrimPrefix(err.Error(), writers.ErrInvalid.Error()+": ")
}

func (s *Service) writeError(w http.ResponseWriter, e *apiError) {
	status := codeOf(e.code).http
	s.met.errors.WithLabelValues(e.code).Inc()
	writeJSON(w, status, map[string]*Error{"error": {Code: e.code, Message: e.message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // ends the answer with a newline
	enc.SetEscapeHTML(false)   // a JSON API, not HTML: "<" stays "<"
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		b.WriteString(`{"error":{"code":"internal","message":"encoding the answer failed"}}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// The status page (lookup/ui) reads the service through these three methods.

// StatusNamespaces is every served namespace as the status page shows it, sorted.
func (s *Service) StatusNamespaces() []ui.Namespace {
	now := s.now()
	out := make([]ui.Namespace, 0, len(s.names))
	for _, name := range s.names {
		n := s.ns[name]
		r := s.namespaceReadiness(n, now)
		v := ui.Namespace{Name: name, StoreURL: writers.RedactURL(n.cfg.Store), MaxStaleness: time.Duration(n.cfg.MaxStaleness),
			Ready: r.Ready, Reason: r.Reason}
		if sn := n.snap.Load(); sn != nil {
			v.Live, v.Store = sn.Manifest, sn.Store
			_, v.Stale = s.stale(n, sn)
		}
		out = append(out, v)
	}
	return out
}

// StatusRelease is ns's release with the counts of every replica; nil when it has none.
func (s *Service) StatusRelease(ctx context.Context, ns string) (*ui.Release, error) {
	n, ok := s.ns[ns]
	if !ok {
		return nil, nil
	}
	store, done, aerr := s.releaseStore(ctx, n)
	if aerr != nil {
		return nil, aerr
	}
	defer done()
	st, err := s.currentRelease(ctx, store, n)
	if st == nil || errors.Is(err, writers.ErrNoReleases) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r := &ui.Release{ID: st.ID, Mode: st.Mode, Live: st.Live, Candidate: st.Candidate, WeightPercent: st.WeightPercent,
		State: st.State, Reason: st.Reason, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt, Canary: st.Canary,
		Step: st.Step, Judged: st.Judged, Failures: st.Failures, History: st.History, SRMPValue: st.SRMPValue,
		Arms: [2]ui.Arm{
			{Requests: st.Arms.Live.Requests, NotFound: st.Arms.Live.NotFound, Errors: st.Arms.Live.Errors},
			{Requests: st.Arms.Candidate.Requests, NotFound: st.Arms.Candidate.NotFound, Errors: st.Arms.Candidate.Errors}}}
	if sh := st.Shadow; sh != nil {
		r.Shadow = &ui.Shadow{Sampled: sh.Sampled, Compared: sh.Compared, Missing: sh.Missing, Dropped: sh.Dropped,
			MeanAbsDiff: sh.MeanAbsDiff, PSI: sh.PSI}
	}
	return r, nil
}

// AdminTokenHash is the SHA-256 of the admin token, nil without one: the page's login
// checks a token against it and derives its session cookie from it.
func (s *Service) AdminTokenHash() *[sha256.Size]byte { return s.token }
