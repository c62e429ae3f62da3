// Package objstore is staticref's one way into object storage: it parses object URLs
// (s3://, gs://, azblob://, file://), opens their buckets through gocloud.dev/blob, and
// wraps every store call in a deadline and a bounded retry with backoff. It gives the
// Parquet reader an io.ReaderAt made of ranged reads and the pipeline a capped download
// of a model.
//
// Every call it makes has a deadline (CallTimeout, or the caller's context when sooner):
// the GCS client retries a refused connection forever without one. Errors name the
// object as scheme://bucket/key, never a query parameter's value or a credential.
//
// It must never import pipeline, readers, lookup, scheduler or cmd, and never download a
// whole Parquet file: readers asks it for byte ranges.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file:// buckets (tests, local mirrors)
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"
)

// CallTimeout bounds one store call (a list page, an attributes lookup, one range
// read) and its retries' attempts each; a caller's context deadline may end it sooner.
var CallTimeout = 30 * time.Second

// Attempts is how many times a call is tried on a transient error (a refused or reset
// connection, a timeout of one attempt, a throttled or internal server error).
const Attempts = 4

// ErrNotFound is matched by the error for an object or bucket that does not exist.
var ErrNotFound = errors.New("objstore: not found")

// schemes are the URL schemes served through gocloud.dev/blob.
var schemes = map[string]bool{"s3": true, "gs": true, "azblob": true}

// IsURL reports whether s names an object (s3://, gs://, azblob://) rather than a local
// path. file:// URLs are not objects: FilePath turns them into local paths, so that local
// files keep their checks (regular files only).
func IsURL(s string) bool {
	i := strings.Index(s, "://")
	return i > 0 && schemes[s[:i]]
}

// FilePath returns the local path of a file:// URL, and ok false for anything else.
func FilePath(s string) (string, bool) {
	if !strings.HasPrefix(s, "file://") {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Host != "" && u.Host != "localhost") {
		return strings.TrimPrefix(s, "file://"), true
	}
	return u.Path, true
}

// Object is a parsed object URL: SCHEME://BUCKET/KEY?QUERY.
type Object struct {
	Scheme, Bucket, Key string
	Query               string // the bucket's options, as gocloud.dev/blob reads them
}

// Parse parses an object URL. The key may be a glob pattern.
func Parse(s string) (Object, error) {
	if !IsURL(s) {
		return Object{}, fmt.Errorf("%q: not an object URL (s3://, gs://, azblob://)", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		// A glob's [ ] can upset url.Parse: split by hand.
		u = nil
	}
	var o Object
	if u != nil {
		o = Object{Scheme: u.Scheme, Bucket: u.Host, Key: strings.TrimPrefix(u.Path, "/"), Query: u.RawQuery}
	} else {
		rest := s[strings.Index(s, "://")+3:]
		o.Scheme = s[:strings.Index(s, "://")]
		if i := strings.IndexByte(rest, '?'); i >= 0 {
			rest, o.Query = rest[:i], rest[i+1:]
		}
		o.Bucket, o.Key, _ = strings.Cut(rest, "/")
	}
	if o.Bucket == "" {
		return Object{}, fmt.Errorf("%s: no bucket in the URL", o.Scheme+"://")
	}
	return o, nil
}

// Name is SCHEME://BUCKET/KEY, the object's name in messages: no query, so no option
// value (an endpoint, say) is repeated in every error.
func (o Object) Name() string { return o.Scheme + "://" + o.Bucket + "/" + o.Key }

// URL is the full URL, query included, from which the object can be opened again.
func (o Object) URL() string {
	s := o.Name()
	if o.Query != "" {
		s += "?" + o.Query
	}
	return s
}

// BucketURL is the URL gocloud.dev/blob opens the bucket with.
func (o Object) BucketURL() string {
	s := o.Scheme + "://" + o.Bucket
	if o.Query != "" {
		s += "?" + o.Query
	}
	return s
}

// OpenBucket opens the object's bucket.
func OpenBucket(ctx context.Context, o Object) (*blob.Bucket, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	b, err := blob.OpenBucket(ctx, o.BucketURL())
	if err != nil {
		return nil, fmt.Errorf("bucket %s://%s: %w", o.Scheme, o.Bucket, scrub(err, o))
	}
	return b, nil
}

// Glob lists the objects whose keys match pattern's key, a path.Match pattern applied to
// the whole key (so * and [...] match within one path segment; Hive partition folders
// such as dt=2026-11-30/ are ordinary segments), over a recursive listing of the prefix
// before the first wildcard. It returns their URLs sorted. No match is an empty list.
func Glob(ctx context.Context, pattern string) ([]string, error) {
	o, err := Parse(pattern)
	if err != nil {
		return nil, err
	}
	if _, err := path.Match(o.Key, ""); err != nil {
		return nil, fmt.Errorf("glob %s: %w", o.Name(), err)
	}
	b, err := OpenBucket(ctx, o)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	prefix := o.Key
	if i := strings.IndexAny(prefix, `*?[\`); i >= 0 {
		prefix = prefix[:strings.LastIndexByte(prefix[:i], '/')+1]
	}
	var keys []string
	token := blob.FirstPageToken
	for {
		var (
			page []*blob.ListObject
			next []byte
		)
		// A failed try must leave token alone: ListPage answers a nil token with io.EOF
		// ("no more pages"), which would end the listing early, as a success.
		err := Retry(ctx, func(ctx context.Context) error {
			var err error
			page, next, err = b.ListPage(ctx, token, 1000, &blob.ListOptions{Prefix: prefix})
			return err
		})
		token = next
		if err != nil {
			return nil, fmt.Errorf("list %s://%s/%s: %w", o.Scheme, o.Bucket, prefix, scrub(err, o))
		}
		for _, obj := range page {
			if obj.IsDir {
				continue
			}
			if ok, _ := path.Match(o.Key, obj.Key); ok {
				keys = append(keys, obj.Key)
			}
		}
		if len(token) == 0 {
			break
		}
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = Object{Scheme: o.Scheme, Bucket: o.Bucket, Key: k, Query: o.Query}.URL()
	}
	return out, nil
}

// Reader reads one object by ranges. It is safe for concurrent ReadAt calls.
type Reader struct {
	obj    Object
	bucket *blob.Bucket
	size   int64
	ctx    context.Context
	pos    int64 // for Seek, which Arrow's Parquet reader uses only to learn the size
}

// ReadError is the error of a range read that failed on its way (the server died, hung
// past the deadline, or the caller gave up), after its retries: it says nothing about
// what the object holds, so a reader must not call the object corrupt for it.
type ReadError struct{ err error }

func (e *ReadError) Error() string { return e.err.Error() }
func (e *ReadError) Unwrap() error { return e.err }

// Open opens the object at u for ranged reads: its size comes from its attributes.
// ctx bounds the open and every later read (each also under CallTimeout).
func Open(ctx context.Context, u string) (*Reader, error) {
	o, err := Parse(u)
	if err != nil {
		return nil, err
	}
	b, err := OpenBucket(ctx, o)
	if err != nil {
		return nil, err
	}
	var attrs *blob.Attributes
	err = Retry(ctx, func(ctx context.Context) error {
		var err error
		attrs, err = b.Attributes(ctx, o.Key)
		return err
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("%s: %w", o.Name(), scrub(err, o))
	}
	return &Reader{obj: o, bucket: b, size: attrs.Size, ctx: ctx}, nil
}

// Name is the object's SCHEME://BUCKET/KEY.
func (r *Reader) Name() string { return r.obj.Name() }

// Size is the object's size from its attributes.
func (r *Reader) Size() int64 { return r.size }

// ReadAt reads len(p) bytes at off with one range read (retried as a whole on a
// transient error).
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", r.obj.Name(), off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.size-off))
	err := Retry(r.ctx, func(ctx context.Context) error {
		rr, err := r.bucket.NewRangeReader(ctx, r.obj.Key, off, int64(n), nil)
		if err != nil {
			return err
		}
		defer rr.Close()
		_, err = io.ReadFull(rr, p[:n])
		return err
	})
	if err != nil {
		return 0, &ReadError{fmt.Errorf("%s: read %d bytes at %d: %w", r.obj.Name(), n, off, scrub(err, r.obj))}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek moves the offset Read would use; Arrow calls Seek(0, io.SeekEnd) for the size.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("%s: seek: bad whence %d", r.obj.Name(), whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("%s: seek to %d", r.obj.Name(), offset)
	}
	r.pos = offset
	return offset, nil
}

// Close closes the bucket.
func (r *Reader) Close() error { return r.bucket.Close() }

// Download copies the object at u into a new temporary file (in os.TempDir, named by
// pattern as os.CreateTemp does) under ctx, refusing an object over maxBytes, and
// returns the file's path; the caller removes it.
func Download(ctx context.Context, u, pattern string, maxBytes int64) (string, error) {
	r, err := Open(ctx, u)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if r.size > maxBytes {
		return "", fmt.Errorf("%s: %d bytes, over %d", r.Name(), r.size, maxBytes)
	}
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", r.Name(), err)
	}
	done := false
	defer func() {
		f.Close()
		if !done {
			os.Remove(f.Name())
		}
	}()
	const chunk = 8 << 20
	buf := make([]byte, chunk)
	for off := int64(0); off < r.size; off += chunk {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("download %s: %w", r.Name(), err)
		}
		n, err := r.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return "", fmt.Errorf("download %s: %w", r.Name(), err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("download %s: %w", r.Name(), err)
	}
	done = true
	return f.Name(), nil
}

// Retry runs call until it succeeds, fails with an error that is not transient, or has
// been tried Attempts times, waiting 100 ms, 200 ms, 400 ms between tries; each try runs
// under CallTimeout, all of them under ctx.
func Retry(ctx context.Context, call func(ctx context.Context) error) error {
	backoff := 100 * time.Millisecond
	var err error
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		err = call(cctx)
		cancel()
		if err == nil || attempt == Attempts || ctx.Err() != nil || !transient(err) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff *= 2
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

func transient(err error) bool {
	switch gcerrors.Code(err) {
	case gcerrors.NotFound, gcerrors.PermissionDenied, gcerrors.InvalidArgument,
		gcerrors.FailedPrecondition, gcerrors.Unimplemented, gcerrors.AlreadyExists, gcerrors.Canceled:
		return false
	case gcerrors.Internal, gcerrors.ResourceExhausted, gcerrors.DeadlineExceeded:
		return true
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne)
}

// scrub marks a not-found error with ErrNotFound and drops anything in err's message
// that repeats the URL's query values or a credential from the environment.
func scrub(err error, o Object) error {
	msg := err.Error()
	for _, env := range []string{"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"} {
		if v := os.Getenv(env); len(v) >= 8 && strings.Contains(msg, v) {
			return &scrubbed{msg: strings.ReplaceAll(msg, v, "[redacted]"), err: err, notFound: gcerrors.Code(err) == gcerrors.NotFound}
		}
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &scrubbed{msg: msg, err: err, notFound: true}
	}
	return err
}

// scrubbed is an error whose message has had secrets removed; it matches ErrNotFound
// for a missing object and keeps the original for errors.Is on context errors.
type scrubbed struct {
	msg      string
	err      error
	notFound bool
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Is(target error) bool {
	return (e.notFound && target == ErrNotFound) || errors.Is(e.err, target)
}
