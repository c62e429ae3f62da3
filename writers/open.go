package writers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// schemes are the store URL schemes Open recognises, in the order the docs list them.
var schemes = []string{"pebble", "redis", "rediss", "redis+cluster", "bigtable"}

// Open opens the store a URL names (see "Store URLs" in the design):
//
//	pebble:DIR, pebble:///abs/dir                 embedded Pebble
//	redis://[user:pass@]host:port/db, rediss://…  Redis
//	redis+cluster://host:port[,host:port…]        Redis Cluster
//	bigtable://PROJECT/INSTANCE/TABLE             Bigtable
//
// parquet:DIR, the Parquet export of DESIGN, is not built yet: CheckURL says so.
// A relative pebble:DIR is relative to the working directory; job files resolve it
// against their own directory first with ResolveURL.
func Open(ctx context.Context, url string) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", url, err)
	}
	u, err := parseURL(url)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	switch u.scheme {
	case "pebble":
		return OpenPebble(u.dir)
	case "redis", "rediss", "redis+cluster":
		return OpenRedis(ctx, url)
	case "bigtable":
		s, err := OpenBigtable(ctx, url)
		if err != nil {
			return nil, err // not a non-nil Store holding a nil *Bigtable
		}
		return s, nil
	default:
		return nil, fmt.Errorf("open store %s: store scheme %s is not built yet", url, u.scheme)
	}
}

// OpenExisting is Open for tools that read or manage what runs wrote (get, versions): a
// pebble: directory that does not exist, or holds no Pebble database, is an error
// wrapping fs.ErrNotExist, where Open would create a store there (writing its files into
// whatever directory a typo named) and answer as if it were an empty one.
func OpenExisting(ctx context.Context, url string) (Store, error) {
	u, err := parseURL(url)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if u.scheme == "pebble" {
		desc, err := pebble.Peek(u.dir, vfs.Default)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("open store: store directory %s does not exist (check the path, or run a job into it first): %w", u.dir, err)
		case err != nil:
			return nil, fmt.Errorf("open store %s: %w", u.dir, err)
		case !desc.Exists:
			return nil, fmt.Errorf("open store: %s is not a store: it holds no Pebble database (check the path, or run a job into it first): %w", u.dir, fs.ErrNotExist)
		}
	}
	return Open(ctx, url)
}

// CheckURL reports whether url is a well-formed store URL of a known scheme, without
// opening anything (for config validation).
func CheckURL(url string) error {
	_, err := parseURL(url)
	return err
}

// storeURL is a parsed store URL.
type storeURL struct {
	scheme string // lowercase
	dir    string // pebble, parquet
	hosts  []string
	path   string // redis: db; bigtable: PROJECT/INSTANCE/TABLE
}

// parseURL checks the syntax of every scheme in the table above; Open then decides which
// ones it can open. A new store adds its case here and in Open.
func parseURL(raw string) (storeURL, error) {
	shown := RedactURL(raw) // messages never show a password
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok || scheme == "" {
		return storeURL{}, fmt.Errorf("store URL %q: missing scheme: use one of %s, e.g. pebble:.staticref/store", shown, schemeList())
	}
	u := storeURL{scheme: strings.ToLower(scheme)}
	switch u.scheme {
	case "pebble", "parquet":
		dir, err := localDir(shown, u.scheme, rest)
		if err != nil {
			return storeURL{}, err
		}
		if u.scheme == "parquet" {
			return storeURL{}, fmt.Errorf("store URL %q: the parquet: export is not available yet: use one of %s", shown, schemeList())
		}
		u.dir = dir
	case "redis", "rediss", "redis+cluster", "bigtable":
		if !strings.HasPrefix(rest, "//") {
			return storeURL{}, fmt.Errorf("store URL %q: want %s://…", shown, u.scheme)
		}
		userinfo, hostpath, _ := splitUserinfo(rest[2:])
		if strings.ContainsAny(userinfo, "/#") {
			return storeURL{}, fmt.Errorf("store URL %q: the user or password holds / or #, which a URL cannot: percent-encode them (/ is %%2F)", shown)
		}
		authority, path, _ := strings.Cut(hostpath, "/")
		if authority == "" {
			return storeURL{}, fmt.Errorf("store URL %q: missing host", shown)
		}
		u.hosts = strings.Split(authority, ",")
		u.path = path
		switch u.scheme {
		case "redis", "rediss":
			if len(u.hosts) > 1 {
				return storeURL{}, fmt.Errorf("store URL %q: several hosts: use redis+cluster://host:port,host:port", shown)
			}
		case "bigtable":
			parts := strings.Split(path, "/")
			if len(u.hosts) > 1 || len(parts) != 2 || parts[0] == "" || parts[1] == "" {
				return storeURL{}, fmt.Errorf("store URL %q: want bigtable://PROJECT/INSTANCE/TABLE", shown)
			}
		}
	default:
		return storeURL{}, fmt.Errorf("store URL %q: unknown store scheme %q: use one of %s", shown, scheme, schemeList())
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

// ResolveURL makes the directory of a relative pebble:DIR URL relative to baseDir (a job
// file's directory) and returns every other URL, and absolute ones, unchanged.
func ResolveURL(url, baseDir string) string {
	scheme, rest, ok := strings.Cut(url, ":")
	if !ok || !strings.EqualFold(scheme, "pebble") || baseDir == "" ||
		rest == "" || strings.HasPrefix(rest, "//") || filepath.IsAbs(rest) {
		return url
	}
	return scheme + ":" + filepath.Join(baseDir, rest)
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
