// Package writers holds the one store contract that every staticref store implements:
// the Store type that callers use, the Driver interface beneath it that each backend
// implements (writers/pebble, writers/redis, writers/bigtable, registered by URL scheme;
// writers/all links them all), the parsed store URL, and the catalog operations (flip,
// rollback, gc) over any Store. The conformance suite every driver passes unchanged is
// writers/storetest. This package links no store client: a package that only checks names
// and URLs (jobs) imports it without pulling in Redis, Bigtable or Pebble.
//
// A store keeps, per namespace, a catalog of versions (each with a Manifest), the rows of
// each version (key -> encoded prediction), and a live pointer that names the version
// lookups answer from. Rows are written only into a version that is being written; the
// live pointer changes only by compare-and-swap. Nothing here imports pipeline, lookup,
// scheduler or cmd: both pipeline and lookup consume this contract.
package writers

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors that drive control flow.
var (
	// ErrNotFound: the key, version or namespace does not exist.
	ErrNotFound = errors.New("writers: not found")
	// ErrConflict: a compare-and-swap found a live pointer other than the expected one.
	ErrConflict = errors.New("writers: live pointer changed concurrently")
	// ErrInvalid: a namespace, version id or key that no store can hold.
	ErrInvalid = errors.New("writers: invalid name")
	// ErrLeaseHeld: another writer holds the namespace's lease (see *LeaseHeldError).
	ErrLeaseHeld = errors.New("writers: lease held")
	// ErrLeaseLost: the lease expired and was taken by another writer, or was released.
	ErrLeaseLost = errors.New("writers: lease lost")
	// ErrNotComplete: a flip or swap named a version whose state is not complete.
	ErrNotComplete = errors.New("writers: only a complete version can be made live")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("writers: store closed")
)

// Lease is a held writer lease on a namespace. Token is unique per acquisition, so a
// holder that lost its lease can never renew or release its successor's.
type Lease struct {
	Namespace string    `json:"namespace"`
	Holder    string    `json:"holder"`
	Token     string    `json:"token"`
	Expires   time.Time `json:"expires"`
}

// LeaseHeldError says who holds a lease.
type LeaseHeldError struct {
	Namespace string
	Holder    string
	Expires   time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("namespace %s is being written by %s (lease expires %s); wait for it, or run with --wait",
		e.Namespace, e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

// Rows is one write batch: Keys[i] -> Values[i].
type Rows struct {
	Keys   [][]byte
	Values [][]byte
}

// Len is the number of rows.
func (r Rows) Len() int { return len(r.Keys) }

// State is a version's place in its lifecycle:
// writing -> complete -> live -> previous -> retired, and writing -> failed.
type State string

const (
	StateWriting  State = "writing"
	StateComplete State = "complete"
	StateLive     State = "live"
	StatePrevious State = "previous"
	StateRetired  State = "retired"
	StateFailed   State = "failed"
)

// Manifest describes one version. Stores persist it as JSON and never interpret it beyond
// Namespace, Version and State.
type Manifest struct {
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	Job       string `json:"job"`
	// State as stored: writing, complete, failed or retired. Live and previous are derived
	// from the live pointer by Catalog.
	State State `json:"state"`

	// The flip history, recorded by Flip and Rollback after each swap of the live pointer
	// (best effort: see Flip) and read by List, Rollback and GC, which order versions by
	// it rather than by id. Zero means never, or not recorded (manifests written before a
	// field existed lack it).
	//
	// LiveAt is when the version was first made live.
	LiveAt time.Time `json:"live_at,omitzero"`
	// FlippedAt is when a flip (not a rollback) last made it live: its place in the
	// history. A rollback steps back through the history without moving anything in it.
	FlippedAt time.Time `json:"flipped_at,omitzero"`
	// LeftLiveAt is when another version last replaced it as live.
	LeftLiveAt time.Time `json:"left_live_at,omitzero"`
	// RolledBackAt is when a rollback last replaced it as live. While that is its latest
	// event (no flip has made it live since), Rollback never returns to it.
	RolledBackAt time.Time `json:"rolled_back_at,omitzero"`

	// Mode is VersionFull (every key; "" in manifests written before increments) or
	// VersionIncremental: the version holds only its own rows (new values, new keys,
	// tombstones) and Base names the version its reads continue in when it lacks a key,
	// the version that was live when its run started. Depth is the length of its chain,
	// itself and its bases down to a full version: 1 for a full version (0 in manifests
	// written before increments), its base's plus one for an increment. See chain.go.
	Mode  string `json:"mode,omitempty"`
	Base  string `json:"base,omitempty"`
	Depth int    `json:"depth,omitempty"`

	Model    ModelInfo `json:"model"`
	Key      string    `json:"key"`      // source key column
	Features []string  `json:"features"` // source feature columns, in model-input order
	Encoding string    `json:"encoding"` // json | binary
	Outputs  []Output  `json:"outputs"`  // value layout, in order
	Sources  []Source  `json:"sources"`

	RowsRead    int64            `json:"rows_read"`
	RowsWritten int64            `json:"rows_written"`
	RowsSkipped int64            `json:"rows_skipped"`
	SkipReasons map[string]int64 `json:"skip_reasons,omitempty"`
	NullOutputs int64            `json:"null_outputs"` // rows with a NaN output
	// DuplicateKeys counts the rows written whose key an earlier row of the version had
	// (rows written - distinct keys; the unique_keys gate), and RepeatedKeys the distinct
	// keys that occur more than once.
	DuplicateKeys int64 `json:"duplicate_keys"`
	RepeatedKeys  int64 `json:"repeated_keys,omitempty"`

	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	Error       string    `json:"error,omitempty"` // why a failed version failed

	// ExpectedRows is how many rows the run that created the version expected to write:
	// the input's row count, which the Parquet footers give before any row is read (0:
	// unknown). A store that sizes its layout by it (LayoutChooser) reads it when the
	// version's first manifest is stored.
	ExpectedRows int64 `json:"expected_rows,omitempty"`
	// KeyPrefix is a prefix that, by the input's Parquet footers, every key of the
	// version has ("" for none). A hint a store may use to store keys shorter (Redis'
	// hash buckets drop it from their fields); never a promise: a key without it must
	// still be stored and read exactly.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Layout is how the store lays out the version's rows, chosen by the store when the
	// version's first manifest was stored and never changed after (see LayoutChooser).
	// Nil is the store's original layout: every manifest written before layouts existed,
	// and every version of a store that offers no choice.
	Layout *Layout `json:"layout,omitempty"`

	Commits []Commit     `json:"shards,omitempty"`
	Gates   []GateResult `json:"gates,omitempty"`
	// SampleKeys is the run's sample of the version's keys for the drift gates of the next
	// runs (up to release.gates.sample_keys keys: the smallest hashes, so a re-run of the
	// same input samples the same keys); recorded only when a drift gate samples keys.
	SampleKeys []string `json:"sample_keys,omitempty"`
	// Distributions of each output's values, computed by the run that wrote the version
	// (for the drift gates, shadow and canary PSI, and the status page).
	Distributions []Distribution `json:"distributions,omitempty"`
	Defaults      *Defaults      `json:"defaults,omitempty"`
	// Export lists the version's Parquet export (sink.export, or an export-only
	// parquet: store), nil when it has none.
	Export *ExportInfo `json:"export,omitempty"`
}

// ExportInfo is where a version's rows were exported as Parquet, and the files.
type ExportInfo struct {
	// URL is the export location as given, without its query or any userinfo.
	URL string `json:"url"`
	// Files are the parts, in order, their paths relative to URL
	// (NAMESPACE/VERSION/part-NNNNN.parquet).
	Files []ExportFile `json:"files"`
}

// ExportFile is one Parquet file of an export.
type ExportFile struct {
	Path  string `json:"path"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// Layout kinds and hashes (Layout).
const (
	// LayoutPlain is one store key per row (Redis: sr:NS:VERSION:KEY), the original
	// layout; a nil Layout means the same.
	LayoutPlain = "plain"
	// LayoutHashBuckets puts each row into one of Buckets small hashes, chosen by
	// Hash(key) mod Buckets, under the key itself as the hash field (Redis: HSET).
	LayoutHashBuckets = "hash-buckets"
	// HashFNV1a64 is 64-bit FNV-1a over the key's bytes (hash/fnv's New64a).
	HashFNV1a64 = "fnv1a64"
)

// Layout is how a store lays out one version's rows. A store records it in the version's
// manifest when the version is created, so that later code, however its defaults change,
// reads every version the way it was written.
type Layout struct {
	Kind    string `json:"kind"`              // LayoutPlain or LayoutHashBuckets
	Buckets int64  `json:"buckets,omitempty"` // hash-buckets: how many
	Hash    string `json:"hash,omitempty"`    // hash-buckets: HashFNV1a64
	// Strip (hash-buckets) is the prefix taken off every key that has it to make its
	// hash field; a key without it is stored as the byte 0xFF and the whole key. No
	// key begins with 0xFF (keys are UTF-8), and no key less a prefix of whole
	// characters does either, so two keys never share a field.
	Strip string `json:"strip,omitempty"`
	// Note says, for people reading the manifest, why the store chose this layout.
	Note string `json:"note,omitempty"`
}

// ModelInfo identifies the model a version was computed with.
type ModelInfo struct {
	Path    string   `json:"path"`
	SHA256  string   `json:"sha256"`
	Inputs  []Tensor `json:"inputs"`
	Outputs []Tensor `json:"outputs"`
}

// Tensor is a model input or output as declared by the model.
type Tensor struct {
	Name  string  `json:"name"`
	Type  string  `json:"type"`
	Shape []int64 `json:"shape"`
}

// Output is one named output of the stored value: Width float values per row.
type Output struct {
	Name  string `json:"name"`
	Width int    `json:"width"`
}

// Source is one input file.
type Source struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Rows  int64  `json:"rows"`
}

// Commit records one committed unit of work of a (possibly sharded, resumable) run: every
// row of one row group of one input file has been written. It carries its own counts, so a
// resumed or sharded run can total a version without reading its rows again. (Stored
// manifests call these "shards", and so does their JSON; in Go, a shard is one process of
// a sharded run, as in Kubernetes' Indexed Jobs.)
type Commit struct {
	ID          string           `json:"id"`
	Rows        int64            `json:"rows"` // rows read
	Written     int64            `json:"written,omitempty"`
	Skipped     map[string]int64 `json:"skipped,omitempty"` // by reason
	NullOutputs int64            `json:"null_outputs,omitempty"`
	// Sums are the per-output sums of the written rows, for mean defaults (nil: none).
	Sums *Sums `json:"sums,omitempty"`
	// Sketches are the state of each output's distribution sketch over the written rows
	// (writers/dist.Sketch), by output name, merged into the manifest's Distributions.
	Sketches map[string][]float64 `json:"sketches,omitempty"`
	// Export is the Parquet file holding this unit's rows, written before the commit
	// (nil: the run exports nothing).
	Export      *ExportFile `json:"export,omitempty"`
	CommittedAt time.Time   `json:"committed_at"`
}

// Sums are running sums of output values: over all rows, and per segment value.
type Sums struct {
	N        int64            `json:"n"`
	Sum      []float64        `json:"sum"`
	Segments map[string]*Sums `json:"segments,omitempty"`
}

// Distribution describes the values of one output over a version's rows (all Width values
// of each row, NaN excluded): count, mean, standard deviation, the quantiles p0, p5, ...,
// p100 (DistributionQuantiles of them) and a histogram of DistributionBins equal-width
// bins from p0 to p100 (Counts[i] counts values in [Edges[i], Edges[i+1]); the last bin
// includes p100).
type Distribution struct {
	Output    string    `json:"output"`
	Count     int64     `json:"count"`
	Mean      float64   `json:"mean"`
	Stddev    float64   `json:"stddev"`
	Quantiles []float64 `json:"quantiles"`
	Histogram Histogram `json:"histogram"`
}

// Histogram is a histogram's bin edges (one more than its counts) and counts.
type Histogram struct {
	Edges  []float64 `json:"edges"`
	Counts []int64   `json:"counts"`
}

// Shape of a Distribution.
const (
	DistributionQuantiles = 21 // p0..p100 in steps of 5
	DistributionBins      = 20
)

// GateResult is the outcome of one release gate.
type GateResult struct {
	Name   string  `json:"name"`
	Passed bool    `json:"passed"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail,omitempty"`
}

// Defaults are the cold-start answers a run computed: per output, Width values.
type Defaults struct {
	Method    string                          `json:"method"` // mean | median
	Global    map[string][]float64            `json:"global,omitempty"`
	SegmentBy string                          `json:"segment_by,omitempty"`
	Segments  map[string]map[string][]float64 `json:"segments,omitempty"`
}

// validName reports whether s is 1-63 bytes of a-z, 0-9, '_', '.', '-' (and A-Z when
// upper), starting with a letter or digit: ^[a-z0-9][a-z0-9_.-]{0,62}$ without a regexp,
// which every store read checks.
func validName(s string, upper bool) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case upper && 'A' <= c && c <= 'Z':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// MaxKeyLen is the longest key any store accepts, in bytes.
const MaxKeyLen = 1024

// ValidateNamespace reports whether ns can name a namespace in every store: 1 to 63
// characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit.
func ValidateNamespace(ns string) error {
	if !validName(ns, false) {
		return fmt.Errorf("%w: namespace %q: use 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit", ErrInvalid, ns)
	}
	return nil
}

// ValidateVersion reports whether v can name a version (same alphabet as namespaces, and
// uppercase letters, as in 20261127T020000Z-2).
func ValidateVersion(v string) error {
	if !validName(v, true) {
		return fmt.Errorf("%w: version %q: use 1-63 characters of A-Z, a-z, 0-9, '_', '.', '-'", ErrInvalid, v)
	}
	return nil
}

// ValidateKey reports whether key can be stored: non-empty, valid UTF-8, at most MaxKeyLen bytes.
func ValidateKey(key []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty key", ErrInvalid)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes (at most %d)", ErrInvalid, len(key), MaxKeyLen)
	case !utf8.Valid(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalid, key)
	}
	return nil
}

// EffectiveState is the state a user sees: live for the live version, previous for a
// complete version that was live before, else the stored state.
func EffectiveState(m *Manifest, live string) State {
	switch {
	case m.Version == live:
		return StateLive
	case m.State == StateComplete && !m.LiveAt.IsZero():
		return StatePrevious
	default:
		return m.State
	}
}

// SortManifests orders manifests by version id (VersionLess). An id says nothing reliable
// about age (see VersionLess): List orders versions by their flip history instead.
func SortManifests(ms []*Manifest) {
	sort.Slice(ms, func(i, j int) bool { return VersionLess(ms[i].Version, ms[j].Version) })
}

// VersionLess reports whether version id a sorts before b. Ids sort as strings, except
// that a numeric -N suffix (added by NewVersionID when an id is taken) sorts by number
// after the bare id: 20261127T020000Z < 20261127T020000Z-2 < 20261127T020000Z-10. Ids
// that NewVersionID makes sort by start time, but ids given with --version
// (churn-29400120) or named after a Kubernetes Job created by hand (churn-manual-fix)
// need not, so the catalog uses this order only to break ties in the flip history.
func VersionLess(a, b string) bool {
	ab, an := splitVersionSuffix(a)
	bb, bn := splitVersionSuffix(b)
	if ab != bb {
		return ab < bb
	}
	if an != bn {
		return an < bn
	}
	return a < b
}

// splitVersionSuffix splits "base-N" into base and N (N >= 2, no leading zero); an id
// without such a suffix is itself with N = 1.
func splitVersionSuffix(v string) (string, int) {
	i := strings.LastIndexByte(v, '-')
	if i <= 0 || i == len(v)-1 || v[i+1] == '0' || len(v)-i-1 > 9 {
		return v, 1
	}
	n := 0
	for _, c := range v[i+1:] {
		if c < '0' || c > '9' {
			return v, 1
		}
		n = n*10 + int(c-'0')
	}
	if n < 2 {
		return v, 1
	}
	return v[:i], n
}

// sortCommits orders commits by ID.
func sortCommits(cs []Commit) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
}
