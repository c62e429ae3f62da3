// Package ui is the status page of `staticref serve` (GET /ui/, docs/lookup.md "Status
// page"): every namespace with its live version and staleness, its versions with their
// gates and timings, each output's distribution drawn against live's, and the running
// release (weight over time, per-arm counts, judgements), as server-rendered HTML with
// inline SVG and one embedded stylesheet.
//
// It must never change anything (no admin actions: its only POSTs sign a person in and
// out), never load anything from outside the service (no scripts, fonts or CDNs; a
// Content-Security-Policy says so to the browser), and never mark as safe anything that
// came from a manifest, a key or a release record: html/template escapes all of it, in
// SVG text and attributes as well.
package ui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/staticref/staticref/writers"
)

// Source is what the page reads; *lookup.Service satisfies it.
type Source interface {
	// StatusNamespaces is every served namespace, sorted by name.
	StatusNamespaces() []Namespace
	// StatusRelease is the namespace's release (running or ended), nil when it has none.
	StatusRelease(ctx context.Context, ns string) (*Release, error)
	// AdminTokenHash is the SHA-256 of the admin token, nil when none is configured.
	AdminTokenHash() *[sha256.Size]byte
}

// Namespace is one served namespace as the page shows it.
type Namespace struct {
	Name         string
	StoreURL     string // redacted (writers.RedactURL): never a password
	MaxStaleness time.Duration
	Ready        bool
	Reason       string            // why it is not ready
	Live         *writers.Manifest // nil: no live version loaded
	Stale        bool
	Store        *writers.Store // the live version's store, for the listing; nil without one
}

// Release is a namespace's release with the counts of every replica.
type Release struct {
	ID, Mode, Live, Candidate string
	WeightPercent             float64
	State, Reason             string
	StartedAt, UpdatedAt      time.Time
	Canary                    *writers.CanaryConfig // nil unless a canary
	Step                      int
	Judged                    int64
	Failures                  int
	History                   []writers.Judgement
	Arms                      [2]Arm  // live, candidate
	Shadow                    *Shadow // nil unless a shadow
	SRMPValue                 *float64
}

// Arm is one arm's counts summed over the release so far.
type Arm struct{ Requests, NotFound, Errors int64 }

// Shadow is a shadow's comparison so far.
type Shadow struct {
	Sampled, Compared, Missing, Dropped int64
	MeanAbsDiff, PSI                    *float64
}

// Refresh is how often a page reloads itself, in seconds.
const Refresh = 10

// storeTimeout bounds the store reads of one page.
const storeTimeout = 5 * time.Second

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/ui.css
var css []byte

//go:embed static/favicon.svg
var favicon []byte

var pages = template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html"))

// handler serves the page.
type handler struct {
	src Source
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the status page's handler, for the path /ui/ and below.
func New(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &handler{src: src, log: log, mux: http.NewServeMux()}
	// "_" cannot begin a namespace name, so these never hide a namespace's page.
	h.mux.HandleFunc("GET /ui/_static/ui.css", asset("text/css; charset=utf-8", css))
	h.mux.HandleFunc("GET /ui/_static/favicon.svg", asset("image/svg+xml", favicon))
	h.mux.HandleFunc("GET /ui/_login", h.loginForm)
	h.mux.HandleFunc("POST /ui/_login", h.login)
	h.mux.HandleFunc("POST /ui/_logout", h.logout)
	h.mux.HandleFunc("GET /ui/{$}", h.index)
	h.mux.HandleFunc("GET /ui/{ns}", h.namespace)
	h.mux.HandleFunc("GET /ui/{ns}/{version}", h.version)
	h.mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "Not found", Message: "There is no such page: start from the list of namespaces."})
	})
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// No script, no frame, nothing from elsewhere: only this service's stylesheet.
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	h.mux.ServeHTTP(w, r)
}

func asset(contentType string, b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(b)
	}
}

// page is what every template gets.
type page struct {
	Title   string
	Crumbs  []crumb
	Refresh int // seconds; 0: none
	Admin   bool
	Login   bool // a login exists (an admin token is configured)
	Message string
	Now     time.Time
	Data    any
}

type crumb struct{ Name, URL string }

func (h *handler) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Login = h.src.AdminTokenHash() != nil
	p.Admin = h.admin(r)
	if p.Now.IsZero() {
		p.Now = time.Now().UTC()
	}
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, p); err != nil {
		h.log.Error("status page: render", "page", name, "err", err)
		http.Error(w, "the status page could not be rendered: see the service log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

func (h *handler) find(name string) (Namespace, bool) {
	for _, n := range h.src.StatusNamespaces() {
		if n.Name == name {
			return n, true
		}
	}
	return Namespace{}, false
}

// Index: every namespace.

type indexRow struct {
	Namespace
	Age     time.Duration
	Badge   badge
	Release *Release
}

type badge struct{ Class, Text string }

func freshness(n Namespace, now time.Time) badge {
	switch {
	case n.Live == nil && !n.Ready:
		return badge{"bad", "not ready"}
	case n.Live == nil:
		return badge{"warn", "no live version"}
	case n.Stale:
		return badge{"bad", "stale"}
	case !n.Ready:
		return badge{"warn", "not ready"}
	case n.MaxStaleness > 0 && now.Sub(n.Live.CompletedAt) > n.MaxStaleness*3/4:
		return badge{"warn", "ageing"}
	}
	return badge{"ok", "fresh"}
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	now := time.Now().UTC()
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	var rows []indexRow
	for _, n := range h.src.StatusNamespaces() {
		row := indexRow{Namespace: n, Badge: freshness(n, now)}
		if n.Live != nil {
			row.Age = now.Sub(n.Live.CompletedAt)
		}
		if rel, err := h.src.StatusRelease(ctx, n.Name); err == nil && rel != nil && active(rel) {
			row.Release = rel
		}
		rows = append(rows, row)
	}
	h.render(w, r, http.StatusOK, "index.html", page{Title: "Namespaces", Refresh: Refresh, Now: now, Data: rows})
}

func active(r *Release) bool {
	return r.State == writers.ReleaseRunning || r.State == writers.ReleasePaused
}

// Namespace: its release and versions.

type nsPage struct {
	NS         Namespace
	Age        time.Duration
	Badge      badge
	Versions   []versionRow
	ListError  string
	Release    *releaseView
	RelError   string
	Dists      []histChart
	DistsLabel string
}

type versionRow struct {
	*writers.Manifest
	Effective writers.State
	Took      time.Duration
}

func (h *handler) namespace(w http.ResponseWriter, r *http.Request) {
	n, ok := h.find(r.PathValue("ns"))
	if !ok {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "Not found", Message: "This namespace is not served here."})
		return
	}
	now := time.Now().UTC()
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	p := nsPage{NS: n, Badge: freshness(n, now)}
	if n.Live != nil {
		p.Age = now.Sub(n.Live.CompletedAt)
	}
	versions, err := h.versions(ctx, n)
	if err != nil {
		h.log.Warn("status page: list versions", "namespace", n.Name, "err", err)
		p.ListError = "The versions could not be listed (see the service log)."
	}
	for _, v := range versions {
		p.Versions = append(p.Versions, versionRow{Manifest: v.Manifest, Effective: v.Effective, Took: took(v.Manifest)})
	}
	rel, err := h.src.StatusRelease(ctx, n.Name)
	if err != nil {
		h.log.Warn("status page: release", "namespace", n.Name, "err", err)
		p.RelError = "The release could not be read (see the service log)."
	}
	if rel != nil {
		p.Release = newReleaseView(rel, now)
	}
	// Live against the candidate of a running release, else against the previous version.
	if n.Live != nil {
		other, label := (*writers.Manifest)(nil), ""
		if rel != nil && active(rel) {
			other, label = manifestOf(versions, rel.Candidate), "candidate "+rel.Candidate
		}
		if other == nil {
			if prev := previousOf(versions); prev != nil {
				other, label = prev, "previous "+prev.Version
			}
		}
		p.Dists = histCharts(n.Live, other, "live "+n.Live.Version, label)
		p.DistsLabel = label
	}
	h.render(w, r, http.StatusOK, "namespace.html", page{Title: n.Name, Refresh: Refresh, Now: now, Data: p,
		Crumbs: []crumb{{n.Name, ""}}})
}

func (h *handler) versions(ctx context.Context, n Namespace) ([]writers.Version, error) {
	if n.Store == nil {
		return nil, nil
	}
	_, vs, err := writers.List(ctx, n.Store, n.Name)
	// Newest first, as people read a history.
	for i, j := 0, len(vs)-1; i < j; i, j = i+1, j-1 {
		vs[i], vs[j] = vs[j], vs[i]
	}
	return vs, err
}

func manifestOf(vs []writers.Version, version string) *writers.Manifest {
	for _, v := range vs {
		if v.Version == version {
			return v.Manifest
		}
	}
	return nil
}

func previousOf(vs []writers.Version) *writers.Manifest {
	for _, v := range vs { // newest first
		if v.Effective == writers.StatePrevious {
			return v.Manifest
		}
	}
	return nil
}

func took(m *writers.Manifest) time.Duration {
	if m.CompletedAt.IsZero() || m.StartedAt.IsZero() {
		return 0
	}
	return m.CompletedAt.Sub(m.StartedAt)
}

// Version: one manifest.

type versionPage struct {
	NS        Namespace
	M         *writers.Manifest
	Effective writers.State
	Took      time.Duration
	Dists     []histChart
	Against   string
	Segments  []segmentRow
	Full      string // the manifest as JSON, for an admin only
}

type segmentRow struct {
	Segment string
	Values  []outputValues
}

type outputValues struct {
	Output string
	Values []float64
}

func (h *handler) version(w http.ResponseWriter, r *http.Request) {
	n, ok := h.find(r.PathValue("ns"))
	if !ok {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "Not found", Message: "This namespace is not served here."})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	versions, err := h.versions(ctx, n)
	if err != nil {
		h.log.Warn("status page: list versions", "namespace", n.Name, "err", err)
		h.render(w, r, http.StatusServiceUnavailable, "error.html", page{Title: "Unavailable", Message: "The versions could not be listed (see the service log)."})
		return
	}
	var p versionPage
	p.NS = n
	for _, v := range versions {
		if v.Version == r.PathValue("version") {
			p.M, p.Effective = v.Manifest, v.Effective
		}
	}
	if p.M == nil {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "Not found", Message: "This namespace has no such version.",
			Crumbs: []crumb{{n.Name, "/ui/" + url.PathEscape(n.Name)}}})
		return
	}
	p.Took = took(p.M)
	// Against live; live itself against the previous version.
	against := n.Live
	if against == nil || against.Version == p.M.Version {
		against = previousOf(versions)
	}
	if against != nil && against.Version != p.M.Version {
		isLive := n.Live != nil && against.Version == n.Live.Version
		name := "previous " + against.Version
		if isLive {
			name = "live " + against.Version
		}
		p.Against = name
		// PSI is always of the later against the live (or earlier) version's deciles.
		p.Dists = histCharts(against, p.M, name, "version "+p.M.Version)
	} else {
		p.Dists = histCharts(p.M, nil, "version "+p.M.Version, "")
	}
	if d := p.M.Defaults; d != nil {
		for _, seg := range sortedKeys(d.Segments) {
			p.Segments = append(p.Segments, segmentRow{Segment: seg, Values: outputsOf(d.Segments[seg])})
		}
	}
	if h.admin(r) {
		b, _ := json.MarshalIndent(p.M, "", "  ")
		p.Full = string(b)
	}
	h.render(w, r, http.StatusOK, "version.html", page{Title: p.M.Version + " · " + n.Name, Refresh: Refresh, Data: p,
		Crumbs: []crumb{{n.Name, "/ui/" + url.PathEscape(n.Name)}, {p.M.Version, ""}}})
}

func outputsOf(m map[string][]float64) []outputValues {
	var out []outputValues
	for _, k := range sortedKeys(m) {
		out = append(out, outputValues{Output: k, Values: m[k]})
	}
	return out
}

// Login. The session cookie is an HMAC, keyed by the admin token's hash, of a fixed
// label: it proves the token was given without holding it, is the same on every replica,
// and stops working when the token changes. It is HttpOnly and SameSite=Strict, so a
// script cannot read it and another site cannot send it; the token itself only ever
// travels in a POST body, never in a URL.

const cookieName = "staticref_ui_session"

func session(hash *[sha256.Size]byte) string {
	m := hmac.New(sha256.New, hash[:])
	m.Write([]byte("staticref status page session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func (h *handler) admin(r *http.Request) bool {
	hash := h.src.AdminTokenHash()
	if hash == nil {
		return false
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(c.Value), []byte(session(hash))) == 1
}

func (h *handler) loginForm(w http.ResponseWriter, r *http.Request) {
	if h.src.AdminTokenHash() == nil {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "No login", Message: "There is no login: the service has no admin_token_file."})
		return
	}
	h.render(w, r, http.StatusOK, "login.html", page{Title: "Sign in", Data: localPath(r.URL.Query().Get("next"))})
}

func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	hash := h.src.AdminTokenHash()
	if hash == nil {
		h.render(w, r, http.StatusNotFound, "error.html", page{Title: "No login", Message: "There is no login: the service has no admin_token_file."})
		return
	}
	if !sameOrigin(r) {
		h.render(w, r, http.StatusForbidden, "error.html", page{Title: "Forbidden", Message: "Sign in from this service's own page."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		h.render(w, r, http.StatusBadRequest, "error.html", page{Title: "Bad request", Message: "The form could not be read."})
		return
	}
	next := localPath(r.PostForm.Get("next"))
	sum := sha256.Sum256([]byte(strings.TrimSpace(r.PostForm.Get("token"))))
	if subtle.ConstantTimeCompare(sum[:], hash[:]) != 1 {
		h.log.Warn("status page: a sign-in with a wrong token", "remote", r.RemoteAddr)
		h.render(w, r, http.StatusUnauthorized, "login.html", page{Title: "Sign in", Data: next, Message: "That is not the admin token."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: session(hash), Path: "/ui/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 12 * 3600})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *handler) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		h.render(w, r, http.StatusForbidden, "error.html", page{Title: "Forbidden", Message: "Sign out from this service's own page."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/ui/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: -1})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// sameOrigin refuses a form another site posted: a browser sends Origin with a POST.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// localPath is p when it is a path of this page, else /ui/: a sign-in never redirects
// elsewhere.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/ui/") || strings.ContainsAny(p, "\\\r\n") || strings.HasPrefix(p, "//") {
		return "/ui/"
	}
	return p
}
