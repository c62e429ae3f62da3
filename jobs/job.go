// Package jobs reads and validates staticref job files (YAML, see jobs/demo.yaml).
//
// Decoding is strict: an unknown field is an error, and Load reports every problem in a
// file at once, each with its file, line and dotted path. Relative paths in a job file
// (source.uri, model.path, a pebble: store) are resolved against the file's own directory,
// so a cron or a pod can run it from anywhere; values given with --set are resolved
// against the working directory, where the person who typed them stands.
//
// This package never runs anything: it only turns a file into a checked Job.
package jobs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/staticref/staticref/jobs/yamldecode"

	"github.com/staticref/staticref/writers"
)

// Job is one batch job: where features come from, which model scores them, where the
// predictions go, and how the new version is released.
type Job struct {
	Name     string `yaml:"name"`
	Schedule string `yaml:"schedule"`
	// CatchUp is what `staticref schedule` does about runs missed while it was down:
	// skip them, or run once at start.
	CatchUp  string   `yaml:"catch_up"`
	Source   Source   `yaml:"source"`
	Model    Model    `yaml:"model"`
	Sink     Sink     `yaml:"sink"`
	Defaults Defaults `yaml:"defaults"`
	Release  Release  `yaml:"release"`

	// File is the path the job was loaded from ("" when built in code).
	File string `yaml:"-"`
}

// Source is the feature shards.
type Source struct {
	URI      string   `yaml:"uri"`
	Key      string   `yaml:"key"`
	Features []string `yaml:"features"`
	Nulls    string   `yaml:"nulls"` // fail | skip | fill:<number>
}

// Model is the ONNX model and how it is run.
type Model struct {
	Path           string   `yaml:"path"`
	Input          string   `yaml:"input"`
	Outputs        []string `yaml:"outputs"`
	BatchSize      int      `yaml:"batch_size"`
	Workers        int      `yaml:"workers"`
	IntraOpThreads int      `yaml:"intra_op_threads"`
	Device         string   `yaml:"device"` // auto | cpu | cuda
}

// Sink is where predictions are written.
type Sink struct {
	Store     string `yaml:"store"`
	Namespace string `yaml:"namespace"`
	Encoding  string `yaml:"encoding"` // json | binary
	// MaxInFlight is how many batches are written to the store at once.
	MaxInFlight int `yaml:"max_in_flight"`
	// Export is where every row of the version is also written as Parquet (a local
	// folder, or an object-store prefix: s3://, gs://, azblob://, file://), as
	// EXPORT/NAMESPACE/VERSION/part-NNNNN.parquet; "" for none. An export-only parquet:
	// store exports to itself.
	Export string `yaml:"export"`
	// ExportRowGroupBytes is the export's row group target: a row group is cut when its
	// buffered, uncompressed rows reach it (default DefaultExportRowGroupBytes).
	ExportRowGroupBytes int `yaml:"export_row_group_bytes"`
	// Mode is full (the version holds every key) or incremental (it holds only this run's
	// rows on top of the live version: an hourly top-up, an ad-hoc backfill).
	Mode string `yaml:"mode"`
	// MaxChain is the deepest chain of incremental versions a run may make (default 8).
	MaxChain int `yaml:"max_chain"`
}

// DefaultExportRowGroupBytes is sink.export_row_group_bytes when left out: 64 MiB.
const DefaultExportRowGroupBytes = 64 << 20

// Incremental reports whether the job writes incremental versions.
func (s Sink) Incremental() bool { return s.Mode == "incremental" }

// Defaults are the cold-start answers computed by the run.
type Defaults struct {
	Global    string `yaml:"global"` // mean | median | none
	SegmentBy string `yaml:"segment_by"`
}

// Release says when and how a complete version becomes live.
type Release struct {
	// Flip is what a run does with a version whose gates pass: auto flips it live,
	// manual leaves it complete for `versions flip`, canary and shadow start a release of
	// it against the live version (DESIGN.md, "Release strategies on read") with the
	// settings of Canary or Shadow, and leave the flip to the release.
	Flip   string `yaml:"flip"` // auto | manual | canary | shadow
	Keep   *int   `yaml:"keep"`
	Gates  Gates  `yaml:"gates"`
	Canary Canary `yaml:"canary"`
	Shadow Shadow `yaml:"shadow"`
}

// Canary is how a release started with flip: canary steps and is judged. A field left
// out takes the store's default (writers.DefaultCanary); steps default to
// DefaultCanarySteps.
type Canary struct {
	// Steps are the candidate's weights in percent, rising, the last 100 (which flips
	// it live).
	Steps []float64 `yaml:"steps"`
	// Interval is how long each step is judged for.
	Interval            *Duration `yaml:"interval"`
	MinRequests         *int64    `yaml:"min_requests"`
	MaxNotFoundIncrease *float64  `yaml:"max_not_found_increase"`
	MaxErrorIncrease    *float64  `yaml:"max_error_increase"`
	MaxPSI              *float64  `yaml:"max_psi"`
	FailureLimit        *int      `yaml:"failure_limit"`
}

// Shadow is how a release started with flip: shadow samples requests.
type Shadow struct {
	// SamplePercent of requests also read the candidate (default
	// writers.DefaultShadowSamplePercent).
	SamplePercent *float64 `yaml:"sample_percent"`
}

// DefaultCanarySteps are a canary's weights when release.canary.steps is left out.
var DefaultCanarySteps = []float64{1, 10, 50, 100}

// CanarySteps is Steps with its default.
func (c Canary) CanarySteps() []float64 {
	if len(c.Steps) == 0 {
		return DefaultCanarySteps
	}
	return c.Steps
}

// Duration is a time.Duration written as "10m" or "90s" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration, as in 10m")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%s is not a duration (e.g. 10m)", yamldecode.Quote(n.Value))
	}
	*d = Duration(v)
	return nil
}

// Gates must all pass before a flip.
type Gates struct {
	MinRowsRatio    *float64 `yaml:"min_rows_ratio"`
	MaxNullFraction *float64 `yaml:"max_null_fraction"`
	// UniqueKeys fails a version in which two rows written share a key (an int64 42 and a
	// string "42" are one key), so that the version is complete but not live. On by
	// default; false writes such rows anyway: one of them wins, in no set order across
	// concurrent writers. Either way the manifest counts them (duplicate_keys). The count
	// comes from the rows themselves as they are written (pipeline/dupkeys: a hash per
	// key, memory bounded), never from a scan of the store.
	UniqueKeys *bool `yaml:"unique_keys"`

	// The drift gates compare the version with the live one; each is off unless set, and
	// passes when there is no live version. MaxPSI bounds each output's population
	// stability index against the live version's distribution over its deciles (from the
	// distributions both manifests record). MaxMeanAbsDiff bounds, per output, the mean
	// of |value - live value| over the sampled keys both versions hold, and MinKeyOverlap
	// is the share of the sampled keys that the live version holds. SampleKeys (default
	// DefaultSampleKeys) bounds the sample: keys of the version's own rows, the same ones
	// for the same input (the keys of smallest hash), each read from both versions.
	MaxPSI         *float64 `yaml:"max_psi"`
	MaxMeanAbsDiff *float64 `yaml:"max_mean_abs_diff"`
	MinKeyOverlap  *float64 `yaml:"min_key_overlap"`
	SampleKeys     *int     `yaml:"sample_keys"`
}

// Samples is SampleKeys with its default.
func (g Gates) Samples() int {
	if g.SampleKeys == nil {
		return DefaultSampleKeys
	}
	return *g.SampleKeys
}

// SamplesKeys reports whether a gate that reads sampled keys is set.
func (g Gates) SamplesKeys() bool { return g.MaxMeanAbsDiff != nil || g.MinKeyOverlap != nil }

// Defaults applied to fields a job file leaves out.
const (
	DefaultBatchSize       = 8192
	DefaultMaxInFlight     = 4
	DefaultMaxChain        = writers.DefaultMaxChain
	DefaultStore           = "pebble:.staticref/store"
	DefaultKeep            = 2
	DefaultMinRowsRatio    = 0.9
	DefaultMaxNullFraction = 0.0
	DefaultSampleKeys      = 10000
	// MaxSampleKeys bounds release.gates.sample_keys: the sample is held in memory.
	MaxSampleKeys = 1_000_000
)

// KeepVersions is Release.Keep with its default.
func (r Release) KeepVersions() int {
	if r.Keep == nil {
		return DefaultKeep
	}
	return *r.Keep
}

// MinRowsRatio is the gate with its default.
func (g Gates) MinRows() float64 {
	if g.MinRowsRatio == nil {
		return DefaultMinRowsRatio
	}
	return *g.MinRowsRatio
}

// MaxNulls is the gate with its default.
func (g Gates) MaxNulls() float64 {
	if g.MaxNullFraction == nil {
		return DefaultMaxNullFraction
	}
	return *g.MaxNullFraction
}

// Unique is the unique_keys gate with its default (off).
func (g Gates) Unique() bool { return g.UniqueKeys == nil || *g.UniqueKeys }

// NullFill reports whether nulls are filled, and with what.
func (s Source) NullFill() (float32, bool) {
	v, ok := strings.CutPrefix(s.Nulls, "fill:")
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 32)
	return float32(f), err == nil
}

// Error is every problem found in one job file.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	name := e.File
	if name == "" {
		name = "job"
	}
	if len(e.Problems) == 1 {
		return fmt.Sprintf("%s: %s", name, e.Problems[0])
	}
	return fmt.Sprintf("%s: %d problems:\n  %s", name, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// ErrInvalid is wrapped by every *Error.
var ErrInvalid = errors.New("jobs: invalid job")

func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads a job file, applies --set overrides ("a.b=value", Helm-style dotted paths,
// the value parsed as YAML), fills defaults, resolves relative paths and validates.
func Load(path string, sets []string) (*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read job: %w", err)
	}
	return Parse(data, path, sets)
}

// Parse is Load on bytes; path names the file in errors and anchors relative paths.
func Parse(data []byte, path string, sets []string) (*Job, error) {
	e := &Error{File: path}
	root, bad := yamldecode.Document(data, "a job file")
	if bad != nil {
		e.Problems = append(e.Problems, atLine(*bad))
		return nil, e
	}
	setPaths := map[string]bool{}
	for _, s := range sets {
		p, err := applySet(root, s)
		if err != nil {
			e.Problems = append(e.Problems, err.Error())
			continue
		}
		setPaths[p] = true
	}
	var j Job
	res := yamldecode.Decode(root, &j)
	for _, p := range res.Problems {
		e.Problems = append(e.Problems, atLine(p))
	}
	// These fields are left out for their defaults; a 0 written out is a mistake (it
	// would otherwise be taken for the default without a word).
	for _, f := range []struct {
		path string
		v    int
		use  string
	}{
		{"model.batch_size", j.Model.BatchSize, fmt.Sprintf("use 1 to %d, or leave it out for %d", 1<<20, DefaultBatchSize)},
		{"model.workers", j.Model.Workers, "use 1 to 256, or leave it out for one a CPU"},
		{"model.intra_op_threads", j.Model.IntraOpThreads, "use 1 to 256, or leave it out for 1"},
		{"sink.max_in_flight", j.Sink.MaxInFlight, fmt.Sprintf("use 1 to 64, or leave it out for %d", DefaultMaxInFlight)},
		{"sink.export_row_group_bytes", j.Sink.ExportRowGroupBytes, "use 1024 to 1073741824, or leave it out for 64 MiB"},
		{"sink.max_chain", j.Sink.MaxChain, fmt.Sprintf("use 1 to 64, or leave it out for %d", DefaultMaxChain)},
	} {
		if f.v == 0 && res.Given(f.path) {
			e.Problems = append(e.Problems, atLine(yamldecode.Problem{Line: res.Line(f.path), Path: f.path, Msg: "0: " + f.use}))
		}
	}
	if len(e.Problems) > 0 {
		return nil, e
	}
	j.File = path
	j.setDefaults()
	j.resolvePaths(filepath.Dir(path), setPaths)
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return &j, nil
}

func (j *Job) setDefaults() {
	if j.Source.Nulls == "" {
		j.Source.Nulls = "fail"
	}
	if j.Model.BatchSize == 0 {
		j.Model.BatchSize = DefaultBatchSize
	}
	if j.Model.Workers == 0 {
		j.Model.Workers = runtime.NumCPU()
	}
	if j.Model.IntraOpThreads == 0 {
		j.Model.IntraOpThreads = 1
	}
	if j.Model.Device == "" {
		j.Model.Device = "auto"
	}
	if j.Sink.Store == "" {
		j.Sink.Store = DefaultStore
	}
	if j.Sink.Namespace == "" {
		j.Sink.Namespace = j.Name
	}
	if j.Sink.Encoding == "" {
		j.Sink.Encoding = "json"
	}
	if j.Sink.MaxInFlight == 0 {
		j.Sink.MaxInFlight = DefaultMaxInFlight
	}
	if j.Sink.ExportRowGroupBytes == 0 {
		j.Sink.ExportRowGroupBytes = DefaultExportRowGroupBytes
	}
	if j.Sink.Mode == "" {
		j.Sink.Mode = "full"
	}
	if j.Sink.MaxChain == 0 {
		j.Sink.MaxChain = DefaultMaxChain
	}
	if j.Defaults.Global == "" {
		j.Defaults.Global = "mean"
	}
	if j.Release.Flip == "" {
		j.Release.Flip = "auto"
	}
}

// resolvePaths anchors relative paths: those from the file at its directory, those given
// with --set at the working directory (left as they are).
func (j *Job) resolvePaths(dir string, fromSet map[string]bool) {
	abs := func(field, p string) string {
		// A URL (s3://, gs://, azblob://, file://) is never relative.
		if p == "" || filepath.IsAbs(p) || fromSet[field] || strings.Contains(p, "://") {
			return p
		}
		return filepath.Join(dir, p)
	}
	j.Source.URI = abs("source.uri", j.Source.URI)
	j.Model.Path = abs("model.path", j.Model.Path)
	j.Sink.Export = abs("sink.export", j.Sink.Export)
	if !fromSet["sink.store"] {
		j.Sink.Store = writers.ResolveURL(j.Sink.Store, dir)
	}
}

// Validate returns every problem with the job at once, or nil.
func (j *Job) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	q := yamldecode.Quote // a value as a problem quotes it: clipped, never echoed whole
	if j.Name == "" {
		add("name: required")
	} else if err := writers.ValidateNamespace(j.Name); err != nil {
		add("name: %s: use 1-63 characters of a-z, 0-9, '_', '.', '-'", q(j.Name))
	}
	if j.Schedule != "" {
		if _, err := ParseSchedule(j.Schedule); err != nil {
			if len(j.Schedule) > yamldecode.MaxQuoted { // cron's message holds the spec whole
				add("schedule: %s is not a cron schedule, as in \"0 2 * * *\"", q(j.Schedule))
			} else {
				add("schedule: %v", err)
			}
		}
	}
	switch j.CatchUp {
	case "", "skip", "once":
	default:
		add("catch_up: %s: use skip or once", q(j.CatchUp))
	}
	if j.Source.URI == "" {
		add("source.uri: required (a glob of Parquet shards)")
	}
	if j.Source.Key == "" {
		add("source.key: required (the key column)")
	}
	if len(j.Source.Features) == 0 {
		add("source.features: required (numeric columns in model-input order, or one list column)")
	}
	seen := map[string]bool{}
	for i, f := range j.Source.Features {
		switch {
		case f == "":
			add("source.features[%d]: empty column name", i)
		case seen[f]:
			add("source.features[%d]: column %s listed twice", i, q(f))
		case f == j.Source.Key:
			add("source.features[%d]: %s is the key column", i, q(f))
		}
		seen[f] = true
	}
	switch n := j.Source.Nulls; {
	case n == "fail", n == "skip":
	case strings.HasPrefix(n, "fill:"):
		if v, err := strconv.ParseFloat(strings.TrimPrefix(n, "fill:"), 32); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			add("source.nulls: %s: fill needs a finite number, as in fill:0", q(n))
		}
	default:
		add("source.nulls: %s: use fail, skip or fill:<number>", q(n))
	}
	if j.Model.Path == "" {
		add("model.path: required (an .onnx file)")
	}
	if b := j.Model.BatchSize; b < 1 || b > 1<<20 {
		add("model.batch_size: %d: use 1 to %d", b, 1<<20)
	}
	if w := j.Model.Workers; w < 1 || w > 256 {
		add("model.workers: %d: use 1 to 256", w)
	}
	if t := j.Model.IntraOpThreads; t < 1 || t > 256 {
		add("model.intra_op_threads: %d: use 1 to 256", t)
	}
	switch j.Model.Device {
	case "auto", "cpu", "cuda":
	default:
		add("model.device: %s: use auto, cpu or cuda", q(j.Model.Device))
	}
	if err := writers.CheckURL(j.Sink.Store); err != nil {
		add("sink.store: %s", yamldecode.QuoteIn(err.Error(), writers.RedactURL(j.Sink.Store)))
	}
	if err := writers.ValidateNamespace(j.Sink.Namespace); err != nil && j.Sink.Namespace != j.Name {
		add("sink.namespace: %s: use 1-63 characters of a-z, 0-9, '_', '.', '-'", q(j.Sink.Namespace))
	}
	if n := j.Sink.MaxInFlight; n < 1 || n > 64 {
		add("sink.max_in_flight: %d: use 1 to 64", n)
	}
	if u, err := writers.ParseURL(j.Sink.Store); err == nil && u.ExportOnly() {
		// An export-only store has no live version and no rows to look up.
		if f := j.Release.Flip; f == "canary" || f == "shadow" {
			add("release.flip: %s needs a lookup store; the store %s is export-only (use auto)", f, u.Redacted())
		}
		if j.Release.Gates.SamplesKeys() {
			add("release.gates: min_key_overlap and max_mean_abs_diff look keys up, which the export-only store %s cannot; use max_psi", u.Redacted())
		}
		if j.Sink.Incremental() {
			add("sink.mode: incremental builds on a live version, which the export-only store %s has not: use full (an export holds every row it is given)", u.Redacted())
		}
	}
	if j.Sink.Export != "" {
		if err := writers.CheckExportURL(j.Sink.Export); err != nil {
			add("sink.export: %s", yamldecode.QuoteIn(err.Error(), writers.ExportName(j.Sink.Export)))
		} else if u, err := writers.ParseURL(j.Sink.Store); err == nil && u.ExportOnly() {
			add("sink.export: the store %s is export-only and exports to itself: leave sink.export out", u.Redacted())
		}
	}
	if n := j.Sink.ExportRowGroupBytes; n < 1024 || n > 1<<30 {
		add("sink.export_row_group_bytes: %d: use 1024 to 1073741824", n)
	}
	switch j.Sink.Encoding {
	case "json", "binary":
	default:
		add("sink.encoding: %s: use json or binary", q(j.Sink.Encoding))
	}
	switch j.Sink.Mode {
	case "full", "incremental":
	default:
		add("sink.mode: %s: use full or incremental", q(j.Sink.Mode))
	}
	if n := j.Sink.MaxChain; n < 1 || n > 64 {
		add("sink.max_chain: %d: use 1 to 64", n)
	}
	switch j.Defaults.Global {
	case "mean", "median", "none":
	default:
		add("defaults.global: %s: use mean, median or none", q(j.Defaults.Global))
	}
	if j.Defaults.SegmentBy != "" && j.Defaults.Global == "none" {
		add("defaults.segment_by: needs defaults.global mean or median")
	}
	if j.Defaults.SegmentBy != "" && seen[j.Defaults.SegmentBy] {
		add("defaults.segment_by: %s is a feature column; segment by a categorical column", q(j.Defaults.SegmentBy))
	}
	switch j.Release.Flip {
	case "auto", "manual", "canary", "shadow":
	default:
		add("release.flip: %s: use auto, manual, canary or shadow", q(j.Release.Flip))
	}
	if k := j.Release.KeepVersions(); k < 0 || k > 1000 {
		add("release.keep: %d: use 0 to 1000", k)
	}
	if r := j.Release.Gates.MinRows(); r < 0 || r > 10 || math.IsNaN(r) {
		add("release.gates.min_rows_ratio: %v: use a ratio from 0 to 10", r)
	}
	if r := j.Release.Gates.MaxNulls(); r < 0 || r > 1 || math.IsNaN(r) {
		add("release.gates.max_null_fraction: %v: use a fraction from 0 to 1", r)
	}
	p = append(p, j.Release.validateDrift()...)
	if len(p) > 0 {
		return &Error{File: j.File, Problems: p}
	}
	return nil
}

// scheduleParser accepts standard 5-field specs, an optional leading seconds field,
// descriptors (@daily, @every 1h) and a CRON_TZ=Zone prefix.
var scheduleParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a job's schedule.
func ParseSchedule(spec string) (cron.Schedule, error) {
	return scheduleParser.Parse(spec)
}

// atLine is a problem as "line N: path: msg" (without the line when it has none).
func atLine(p yamldecode.Problem) string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s", p.Line, p)
	}
	return p.String()
}

// applySet sets the field at a dotted path ("model.batch_size=4096") in the document,
// creating mappings on the way. The value is parsed as YAML, so lists work: a=[x,y].
func applySet(root *yaml.Node, set string) (string, error) {
	path, value, ok := strings.Cut(set, "=")
	if !ok || path == "" {
		return "", fmt.Errorf("--set %s: use FIELD=VALUE, as in source.uri=data/*.parquet", yamldecode.Quote(set))
	}
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(value), &v); err != nil {
		return "", fmt.Errorf("--set %s: %v", yamldecode.Clip(path), err)
	}
	val := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	if len(v.Content) == 1 {
		val = v.Content[0]
	}
	if p := yamldecode.Check(val); p != nil {
		return "", fmt.Errorf("--set %s: %s", yamldecode.Clip(path), p.Msg)
	}
	// A set names no line of the file, so its problems are checked here, against the
	// field's type, and said in terms of the --set itself.
	ft, err := yamldecode.FieldType(reflect.TypeFor[Job](), path)
	if err != nil {
		return "", fmt.Errorf("--set %s: %w", yamldecode.Clip(path), err)
	}
	if err := val.Decode(reflect.New(ft).Interface()); err != nil {
		return "", fmt.Errorf("--set %s: %s is not %s", path, yamldecode.Quote(value), yamldecode.Want(ft))
	}
	parts := strings.Split(path, ".")
	n := root
	for i, part := range parts {
		if n.Kind != yaml.MappingNode {
			return "", fmt.Errorf("--set %s: %s is not a mapping", path, strings.Join(parts[:i], "."))
		}
		var next *yaml.Node
		for k := 0; k+1 < len(n.Content); k += 2 {
			if n.Content[k].Value == part {
				next = n.Content[k+1]
				if i == len(parts)-1 {
					n.Content[k+1] = val
				}
				break
			}
		}
		if next == nil {
			key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part}
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if i == len(parts)-1 {
				next = val
			}
			n.Content = append(n.Content, key, next)
		}
		n = next
	}
	return path, nil
}
