package writers

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// schemes are the store URL schemes the design defines, in the order the docs list them.
var schemes = []string{"pebble", "redis", "rediss", "redis+cluster", "bigtable", "parquet"}

// URL is a parsed store URL: the one parse of a --store flag, a job's sink.store or a serve
// config's store, used by Open, CheckURL, ResolveURL, redaction and the drivers.
//
//	pebble:DIR, pebble:///abs/dir                 embedded Pebble
//	redis://[user:pass@]host:port/db, rediss://…  Redis
//	redis+cluster://host:port[,host:port…]        Redis Cluster
//	bigtable://PROJECT/INSTANCE/TABLE             Bigtable
//	parquet:DIR, parquet:///abs/dir,              export only: Parquet files per version,
//	parquet+s3://BUCKET/PREFIX?…, parquet+gs://…,  no lookup store (see ExportOnly)
//	parquet+azblob://…, parquet+file:///abs/dir
type URL struct {
	// Raw is the URL as given. It may hold a password: print Redacted, never Raw.
	Raw string
	// Scheme is lowercase.
	Scheme string
	// Dir is the directory of a pebble: URL, cleaned; relative to the working directory
	// unless absolute (job files resolve it against their own directory with ResolveURL).
	Dir string
	// Hosts are the host:port authorities of redis, rediss and redis+cluster URLs, and
	// the PROJECT of a bigtable URL.
	Hosts []string
	// Path is what follows the authority: the db of a redis URL, INSTANCE/TABLE of a
	// bigtable URL (query included, as given).
	Path string
	// Export is the export location of an export-only parquet store: the folder of
	// parquet:DIR, or the object URL after "parquet+" (s3://BUCKET/PREFIX?…).
	Export string
}

// ExportOnly reports whether the URL names an export-only Parquet store (parquet:DIR,
// parquet+s3://…): runs write Parquet files and a catalog there, but it holds no rows to
// look up, and has no live pointer.
func (u URL) ExportOnly() bool {
	return u.Scheme == "parquet" || strings.HasPrefix(u.Scheme, "parquet+")
}

// ErrExportOnly is wrapped by what an export-only store answers to a lookup or a flip.
var ErrExportOnly = errors.New("writers: export-only store")

// Redacted is the URL with its password, if any, replaced by xxxxx: the form in which a
// URL may be printed or logged.
func (u URL) Redacted() string { return RedactURL(u.Raw) }

// String is Redacted, so that a URL formatted with %s or %v never shows a password.
func (u URL) String() string { return u.Redacted() }

// Open opens the store a URL names, with the driver registered for its scheme (see
// Register; a binary imports the drivers it links, writers/all imports them all).
func Open(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, OpenOptions{})
}

// OpenExisting is Open for tools that read or manage what runs wrote (get, versions): a
// pebble: directory that does not exist, or holds no store, is an error wrapping
// fs.ErrNotExist, where Open would create a store there (writing its files into whatever
// directory a typo named) and answer as if it were an empty one.
func OpenExisting(ctx context.Context, url string) (*Store, error) {
	return open(ctx, url, OpenOptions{MustExist: true})
}

func open(ctx context.Context, raw string, opts OpenOptions) (*Store, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", u, err)
	}
	openDriver, ok := opener(u.Scheme)
	if !ok {
		return nil, fmt.Errorf("open store %s: store scheme %s is not built into this program (import github.com/staticref/staticref/writers/all)", u, u.Scheme)
	}
	d, err := openDriver(ctx, u, opts)
	if err != nil {
		return nil, err
	}
	return NewStore(d, u), nil
}

// CheckURL reports whether url is a well-formed store URL of a known scheme, without
// opening anything (for config validation).
func CheckURL(url string) error {
	_, err := ParseURL(url)
	return err
}

// ErrBadURL marks a store URL that does not parse.
var ErrBadURL = errors.New("writers: bad store URL")

// ParseURL checks the syntax of every scheme in the table above; Open then decides which
// ones it can open. A new store adds its case here and registers its driver. Errors wrap
// ErrBadURL and never show a password.
func ParseURL(raw string) (URL, error) {
	u, err := parseURL(raw)
	if err != nil {
		return URL{}, badURL{err}
	}
	return u, nil
}

// badURL wraps a parse error so that it matches ErrBadURL while reading as itself.
type badURL struct{ error }

func (b badURL) Is(target error) bool { return target == ErrBadURL }
func (b badURL) Unwrap() error        { return b.error }

func parseURL(raw string) (URL, error) {
	shown := RedactURL(raw) // messages never show a password
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok || scheme == "" {
		return URL{}, fmt.Errorf("store URL %q: missing scheme: use one of %s, e.g. pebble:.staticref/store", shown, schemeList())
	}
	u := URL{Raw: raw, Scheme: strings.ToLower(scheme)}
	switch u.Scheme {
	case "pebble", "parquet":
		dir, err := localDir(shown, u.Scheme, rest)
		if err != nil {
			return URL{}, err
		}
		u.Dir = dir
		if u.Scheme == "parquet" {
			u.Export = dir
		}
	case "parquet+s3", "parquet+gs", "parquet+azblob", "parquet+file":
		inner := raw[len("parquet+"):]
		if err := CheckExportURL(inner); err != nil {
			return URL{}, fmt.Errorf("store URL %q: %w", shown, err)
		}
		u.Export = inner
	case "redis", "rediss", "redis+cluster", "bigtable":
		if !strings.HasPrefix(rest, "//") {
			return URL{}, fmt.Errorf("store URL %q: want %s://…", shown, u.Scheme)
		}
		userinfo, hostpath, _ := splitUserinfo(rest[2:])
		if strings.ContainsAny(userinfo, "/#") {
			return URL{}, fmt.Errorf("store URL %q: the user or password holds / or #, which a URL cannot: percent-encode them (/ is %%2F)", shown)
		}
		authority, path, _ := strings.Cut(hostpath, "/")
		if authority == "" {
			return URL{}, fmt.Errorf("store URL %q: missing host", shown)
		}
		u.Hosts = strings.Split(authority, ",")
		u.Path = path
		switch u.Scheme {
		case "redis", "rediss":
			if len(u.Hosts) > 1 {
				return URL{}, fmt.Errorf("store URL %q: several hosts: use redis+cluster://host:port,host:port", shown)
			}
		case "bigtable":
			parts := strings.Split(path, "/")
			if len(u.Hosts) > 1 || len(parts) != 2 || parts[0] == "" || parts[1] == "" {
				return URL{}, fmt.Errorf("store URL %q: want bigtable://PROJECT/INSTANCE/TABLE", shown)
			}
		}
	default:
		return URL{}, fmt.Errorf("store URL %q: unknown store scheme %q: use one of %s", shown, scheme, schemeList())
	}
	return u, nil
}

// splitUserinfo splits "user:pass@host/path" at its userinfo's '@': the last one before
// any query, so that a password holding '/' or '@' is never taken for the host. ok is
// false when there is no userinfo.
func splitUserinfo(s string) (userinfo, rest string, ok bool) {
	head := s
	if i := strings.IndexByte(s, '?'); i >= 0 {
		head = s[:i]
	}
	i := strings.LastIndexByte(head, '@')
	if i < 0 {
		return "", s, false
	}
	return s[:i], s[i+1:], true
}

// RedactURL is a store URL with its password, if any, replaced by xxxxx: the form in
// which a URL may be printed or logged.
func RedactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	userinfo, hostpath, ok := splitUserinfo(rest)
	if !ok {
		return raw
	}
	user, _, _ := strings.Cut(userinfo, ":")
	return scheme + "://" + user + ":xxxxx@" + hostpath
}

// URLPassword returns the password in a URL's userinfo, as written (percent-encoded, if
// it was), for code that must scrub it from messages it did not write.
func URLPassword(raw string) (string, bool) {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", false
	}
	userinfo, _, ok := splitUserinfo(rest)
	if !ok {
		return "", false
	}
	_, pw, ok := strings.Cut(userinfo, ":")
	return pw, ok
}

// ResolveURL makes the directory of a relative pebble:DIR or parquet:DIR URL relative to
// baseDir (a job file's directory) and returns every other URL, and absolute ones,
// unchanged.
func ResolveURL(url, baseDir string) string {
	u, err := ParseURL(url)
	if err != nil || (u.Scheme != "pebble" && u.Scheme != "parquet") || baseDir == "" || filepath.IsAbs(u.Dir) {
		return url
	}
	return url[:len(u.Scheme)] + ":" + filepath.Join(baseDir, u.Dir)
}

// exportSchemes are the object URL schemes an export may be written to.
var exportSchemes = map[string]bool{"s3": true, "gs": true, "azblob": true, "file": true}

// CheckExportURL reports whether raw can name an export location (sink.export, or what
// follows "parquet+" in a store URL), without opening anything: a local folder, or
// file://, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, azblob://CONTAINER/PREFIX with the
// bucket's options in the query.
func CheckExportURL(raw string) error {
	if raw == "" {
		return errors.New("empty: use a local folder or an object-store prefix (s3://, gs://, azblob://, file://)")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if strings.ContainsAny(raw, "?*[") {
			return fmt.Errorf("folder %q: a folder name must not hold ?, * or [", raw)
		}
		return nil // a local folder
	}
	if !exportSchemes[scheme] {
		return fmt.Errorf("scheme %q: use a local folder, or file://, s3://, gs:// or azblob://", scheme)
	}
	path, _, _ := strings.Cut(rest, "?")
	bucket, _, _ := strings.Cut(path, "/")
	if scheme == "file" {
		if path == "" || (bucket != "" && bucket != "localhost") {
			return fmt.Errorf("%s://%s: use file:///abs/dir", scheme, path)
		}
		return nil
	}
	if bucket == "" {
		return fmt.Errorf("%s://%s: no bucket: use %s://BUCKET/PREFIX", scheme, path, scheme)
	}
	if strings.Contains(bucket, "@") {
		return fmt.Errorf("%s://…: credentials do not go in the URL: use the cloud's standard credentials (environment, workload identity)", scheme)
	}
	return nil
}

// ExportName is an export location as messages and manifests show it: without its query
// (endpoints, options) or userinfo, so no secret is ever recorded.
func ExportName(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	rest, _, _ = strings.Cut(rest, "?")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 && (strings.IndexByte(rest, '/') < 0 || i < strings.IndexByte(rest, '/')) {
		rest = rest[i+1:]
	}
	return scheme + "://" + strings.TrimSuffix(rest, "/")
}

// localDir extracts the directory from SCHEME:DIR or SCHEME:///abs/dir.
func localDir(raw, scheme, rest string) (string, error) {
	if strings.HasPrefix(rest, "//") {
		host, path, _ := strings.Cut(rest[2:], "/")
		if host != "" && host != "localhost" {
			return "", fmt.Errorf("store URL %q names host %q: use %s:DIR or %s:///abs/dir", raw, host, scheme, scheme)
		}
		if path == "" {
			return "", fmt.Errorf("store URL %q has no directory: use %s:DIR or %s:///abs/dir", raw, scheme, scheme)
		}
		rest = "/" + path
	}
	if rest == "" {
		return "", fmt.Errorf("store URL %q has no directory: use %s:DIR or %s:///abs/dir", raw, scheme, scheme)
	}
	return filepath.Clean(rest), nil
}

func schemeList() string {
	s := make([]string, len(schemes))
	for i, sc := range schemes {
		s[i] = sc + ":"
	}
	return strings.Join(s, ", ")
}
