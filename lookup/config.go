package lookup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/staticref/staticref/writers"
)

// ErrConfig marks a bad service config file (exit code 2 in cmd).
var ErrConfig = errors.New("lookup: invalid config")

// Defaults of the service config.
const (
	DefaultAddr          = ":8080"
	DefaultCacheEntries  = 100_000
	DefaultMaxBatch      = 1000
	DefaultStoreTimeout  = time.Second
	DefaultPollInterval  = 500 * time.Millisecond
	DefaultMaxBodyBytes  = 1 << 20
	DefaultShutdownGrace = 10 * time.Second
)

// On-stale policies.
const (
	OnStaleServe    = "serve"
	OnStaleFallback = "fallback"
	OnStaleError    = "error"
)

// Config is the file `staticref serve --config FILE` reads (see docs/lookup.md).
type Config struct {
	Addr           string `yaml:"addr"`
	AdminTokenFile string `yaml:"admin_token_file"`
	// CacheEntries bounds the in-process cache of answers by (namespace, version, key);
	// 0 means DefaultCacheEntries, a negative value turns the cache off.
	CacheEntries int      `yaml:"cache_entries"`
	MaxBatch     int      `yaml:"max_batch"`
	MaxBodyBytes int64    `yaml:"max_body_bytes"`
	StoreTimeout Duration `yaml:"store_timeout"`
	PollInterval Duration `yaml:"poll_interval"`

	Namespaces map[string]*NamespaceConfig `yaml:"namespaces"`
}

// NamespaceConfig is one served namespace.
type NamespaceConfig struct {
	// Store is the store URL; ParseConfig replaces ${VAR} and $(VAR) in it by the
	// environment variable's value.
	Store        string   `yaml:"store"`
	MaxStaleness Duration `yaml:"max_staleness"` // 0: never stale
	OnStale      string   `yaml:"on_stale"`      // serve (default) | fallback | error
	Fallback     Fallback `yaml:"fallback"`
	Model        string   `yaml:"model"` // optional ONNX model for online answers
	// Device runs the online model: cpu (default), auto or cuda.
	Device string `yaml:"device"`

	written string // Store as written, when it names environment variables
}

// Fallback says how a key the live version lacks is answered.
type Fallback struct {
	SegmentParam string `yaml:"segment_param"`
	// Default is "computed" (the version's global default), "none" or absent, a number
	// (every output value), or an object {output: number|[numbers]}.
	Default yaml.Node `yaml:"default"`

	kind   string               // "", computed, static
	static map[string][]float64 // per output; "*" holds a number for every output
}

// Duration is a time.Duration written as "36h" or "500ms" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 36h)", s)
	}
	*d = Duration(v)
	return nil
}

// ConfigError is every problem found in a service config, each with its file, line and
// field path ("serve.yaml:4: namespaces.churn.max_staleness: ..."). It wraps ErrConfig.
type ConfigError struct {
	File     string   // "" for a Config built in code
	Problems []string // in file order
}

func (e *ConfigError) Error() string {
	if len(e.Problems) == 1 {
		return fmt.Sprintf("%v: %s", ErrConfig, e.Problems[0])
	}
	return fmt.Sprintf("%v: %d problems:\n  %s", ErrConfig, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func (e *ConfigError) Unwrap() error { return ErrConfig }

// problem is one thing wrong with a config: at a field path ("" for the file as a whole)
// and, once known, a line.
type problem struct {
	line      int
	path, msg string
}

// LoadConfig reads and validates a config file. Relative paths in it (a pebble: store,
// the model, the admin token file) are resolved against the file's directory, and
// ${VAR} or $(VAR) in a store URL is replaced by the environment variable's value.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseConfig(data, path)
}

// ParseConfig is LoadConfig on bytes; path names the file in errors and anchors paths.
// It reports every problem at once, as a *ConfigError.
func ParseConfig(data []byte, path string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &ConfigError{File: path, Problems: []string{yamlSyntax(path, err)}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == 0 { // empty file
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	var c Config
	d := decoder{lines: map[string]int{}, bad: map[string]bool{}}
	if root.Kind != yaml.MappingNode {
		d.add(root.Line, "", "a service config is a mapping of fields (addr, namespaces, ...)")
	} else {
		d.decode(root, reflect.ValueOf(&c).Elem(), "")
	}

	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.AdminTokenFile = abs(c.AdminTokenFile)
	for name, n := range c.Namespaces {
		if n == nil {
			continue
		}
		p := "namespaces." + name + ".store"
		store, missing := expandEnv(n.Store)
		for _, v := range missing {
			what := "not set"
			if _, ok := os.LookupEnv(v); ok {
				what = "empty"
			}
			d.add(d.lines[p], p, "environment variable %s is %s (the URL %q names it)", v, what, n.Store)
		}
		if store != n.Store {
			n.written = n.Store
		}
		n.Store = writers.ResolveURL(store, base)
		n.Model = abs(n.Model)
	}

	// Validate fills defaults even where a field had a problem; a problem it finds in or
	// under a field that could not be read would only repeat that one.
	for _, p := range c.validate() {
		if d.isBad(p.path) {
			continue
		}
		p.line = d.line(p.path)
		d.problems = append(d.problems, p)
	}
	if len(d.problems) > 0 {
		return nil, d.err(path)
	}
	return &c, nil
}

// Validate fills defaults and returns every problem at once, as a *ConfigError.
func (c *Config) Validate() error {
	if ps := c.validate(); len(ps) > 0 {
		d := decoder{problems: ps}
		return d.err("")
	}
	return nil
}

func (c *Config) validate() []problem {
	var ps []problem
	add := func(path, format string, args ...any) {
		ps = append(ps, problem{path: path, msg: fmt.Sprintf(format, args...)})
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = DefaultCacheEntries
	}
	switch {
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 0:
		add("max_batch", "%d is negative", c.MaxBatch)
	}
	switch {
	case c.MaxBodyBytes == 0:
		c.MaxBodyBytes = DefaultMaxBodyBytes
	case c.MaxBodyBytes < 0:
		add("max_body_bytes", "%d is negative", c.MaxBodyBytes)
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = Duration(DefaultStoreTimeout)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = Duration(DefaultPollInterval)
	}
	if len(c.Namespaces) == 0 {
		add("namespaces", "serve at least one namespace")
	}
	names := make([]string, 0, len(c.Namespaces))
	for name := range c.Namespaces {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n := c.Namespaces[name]
		p := "namespaces." + name
		if err := writers.ValidateNamespace(name); err != nil {
			add(p, "%v", err)
		}
		if n == nil {
			add(p, "store is required")
			continue
		}
		if n.Store == "" {
			add(p+".store", "is required, e.g. redis://localhost:6379/0")
		} else if err := writers.CheckURL(n.Store); err != nil {
			add(p+".store", "%s", n.redact(err.Error()))
		} else if strings.HasPrefix(strings.ToLower(n.Store), "parquet:") {
			add(p+".store", "parquet: is an export, not a lookup store")
		}
		switch n.OnStale {
		case "":
			n.OnStale = OnStaleServe
		case OnStaleServe, OnStaleFallback, OnStaleError:
		default:
			add(p+".on_stale", "%q: use serve, fallback or error", n.OnStale)
		}
		if n.MaxStaleness < 0 {
			add(p+".max_staleness", "negative")
		}
		switch n.Device {
		case "":
			n.Device = "cpu"
		case "cpu", "auto", "cuda":
		default:
			add(p+".device", "%q: use cpu, auto or cuda", n.Device)
		}
		if err := n.Fallback.parse(); err != nil {
			add(p+".fallback.default", "%v", err)
		}
	}
	return ps
}

// redact puts the store URL as written, with its ${VAR}s, back into a message about the
// expanded one, so that a password from the environment is never shown.
func (n *NamespaceConfig) redact(msg string) string {
	if n.written == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, strconv.Quote(n.Store), strconv.Quote(n.written))
	return strings.ReplaceAll(msg, n.Store, n.written)
}

// expandEnv replaces ${VAR} and $(VAR) in s by the environment variable's value, and
// $${ and $$( by a literal ${ and $(; any other $ stays as it is. It returns the names of
// the variables that are unset or empty: a store URL is never quietly missing a part.
func expandEnv(s string) (string, []string) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var (
		b       strings.Builder
		missing []string
	)
	for i := 0; i < len(s); i++ {
		open := byte(0)
		if i+1 < len(s) {
			open = s[i+1]
		}
		if s[i] != '$' || (open != '{' && open != '(' && open != '$') {
			b.WriteByte(s[i])
			continue
		}
		if open == '$' { // $${ or $$( is a literal ${ or $(
			b.WriteByte('$')
			if i+2 < len(s) && (s[i+2] == '{' || s[i+2] == '(') {
				i++
			}
			continue
		}
		close := byte('}')
		if open == '(' {
			close = ')'
		}
		end := strings.IndexByte(s[i+2:], close)
		if end < 0 || !envName.MatchString(s[i+2:i+2+end]) {
			b.WriteByte('$')
			continue
		}
		name := s[i+2 : i+2+end]
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			missing = append(missing, name)
		}
		b.WriteString(v)
		i += 2 + end
	}
	return b.String(), missing
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// decoder reads a config document field by field, so that one bad value hides no other,
// and keeps the line of every field for the problems Validate finds later.
type decoder struct {
	problems []problem
	lines    map[string]int  // field path -> line of its key
	bad      map[string]bool // field paths that could not be read
}

func (d *decoder) add(line int, path, format string, args ...any) {
	d.problems = append(d.problems, problem{line: line, path: path, msg: fmt.Sprintf(format, args...)})
	if d.bad != nil {
		d.bad[path] = true
	}
}

// line is the line of path, or of the nearest field above it that the file has.
func (d *decoder) line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// isBad reports whether path, or a field above it, could not be read.
func (d *decoder) isBad(path string) bool {
	for p := range d.bad {
		if path == p || strings.HasPrefix(path, p+".") {
			return true
		}
	}
	return false
}

// err is the problems as a *ConfigError, in file order (those without a line last).
func (d *decoder) err(file string) error {
	sort.SliceStable(d.problems, func(i, j int) bool {
		a, b := d.problems[i].line, d.problems[j].line
		return a != 0 && (b == 0 || a < b)
	})
	e := &ConfigError{File: file}
	for _, p := range d.problems {
		var s strings.Builder
		switch {
		case file != "" && p.line > 0:
			fmt.Fprintf(&s, "%s:%d: ", file, p.line)
		case file != "":
			fmt.Fprintf(&s, "%s: ", file)
		}
		if p.path != "" {
			s.WriteString(p.path + ": ")
		}
		s.WriteString(p.msg)
		e.Problems = append(e.Problems, s.String())
	}
	return e
}

var (
	durationType = reflect.TypeFor[Duration]()
	nodeType     = reflect.TypeFor[yaml.Node]()
)

// decode sets v from n, field by field, adding a problem for every unknown field and
// every value of the wrong kind.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	t := v.Type()
	switch {
	case t == nodeType:
		v.Set(reflect.ValueOf(*n))
		return
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return // absent: the zero value, as if not written
	case t.Kind() == reflect.Pointer:
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
		return
	case t == durationType, t.Kind() != reflect.Struct && t.Kind() != reflect.Map:
		d.scalar(n, v, path)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, "want a mapping, got %s", describe(n))
		return
	}
	fields := map[string]int{}
	if t.Kind() == reflect.Struct {
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name != "" && name != "-" && t.Field(i).IsExported() {
				fields[name] = i
			}
		}
	} else if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	// Merged mappings (<<: *base) first, so that the fields written beside them win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Tag == "!!merge" {
			for _, m := range mergeSources(n.Content[i+1]) {
				d.decode(m, v, path)
			}
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if first, ok := seen[k.Value]; ok {
			d.add(k.Line, p, "given twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.lines[p] = k.Line
		if t.Kind() == reflect.Map {
			e := reflect.New(t.Elem()).Elem()
			d.decode(val, e, p)
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			msg := "unknown field"
			if s := suggest(k.Value, fields); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			d.add(k.Line, p, "%s", msg)
			continue
		}
		d.decode(val, v.Field(f), p)
	}
}

// scalar sets a single value: a string, a number or a Duration.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.add(n.Line, path, "want %s, got %s", want(v.Type()), describe(n))
		return
	}
	err := n.Decode(v.Addr().Interface())
	var te *yaml.TypeError
	switch {
	case err == nil:
	case errors.As(err, &te):
		d.add(n.Line, path, "%q is not %s", n.Value, want(v.Type()))
	default: // Duration's own message
		d.add(n.Line, path, "%v", err)
	}
}

func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t == durationType {
			return "a duration (e.g. 36h)"
		}
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	}
	return "a " + t.Kind().String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func mergeSources(n *yaml.Node) []*yaml.Node {
	if n.Kind == yaml.SequenceNode {
		return n.Content
	}
	return []*yaml.Node{n}
}

// suggest is the known field closest to a misspelt one, or "".
func suggest(name string, fields map[string]int) string {
	best, bestDist := "", max(2, len(name)/3)+1 // further apart is no suggestion
	for f := range fields {
		if dist := editDistance(name, f); dist < bestDist || (dist == bestDist && f < best) {
			best, bestDist = f, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// yamlSyntax turns "yaml: line 3: did not find expected key" into "FILE:3: did not find
// expected key".
func yamlSyntax(file string, err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return file + ":" + m[1] + ": " + m[2]
	}
	return file + ": " + msg
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// parse reads Default: computed, none, a number, or an object of outputs.
func (f *Fallback) parse() error {
	n := &f.Default
	f.kind, f.static = "", nil
	switch n.Kind {
	case 0:
		return nil
	case yaml.ScalarNode:
		switch n.Value {
		case "", "none":
			return nil
		case "computed":
			f.kind = "computed"
			return nil
		}
		var v float64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("%q: use computed, none, a number or an object {output: number|[numbers]}", n.Value)
		}
		f.kind, f.static = "static", map[string][]float64{"*": {v}}
		return nil
	case yaml.MappingNode:
		var raw map[string]yaml.Node
		if err := n.Decode(&raw); err != nil {
			return err
		}
		f.static = map[string][]float64{}
		for out, v := range raw {
			var one float64
			if v.Decode(&one) == nil && v.Kind == yaml.ScalarNode {
				f.static[out] = []float64{one}
				continue
			}
			var many []float64
			if err := v.Decode(&many); err != nil || len(many) == 0 {
				return fmt.Errorf("output %q: want a number or a list of numbers", out)
			}
			f.static[out] = many
		}
		f.kind = "static"
		return nil
	}
	return errors.New("use computed, none, a number or an object {output: number|[numbers]}")
}
