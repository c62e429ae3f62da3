package lookup

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/staticref/staticref/jobs/yamldecode"
	"github.com/staticref/staticref/writers"
)

// ErrConfig marks a bad service config file (exit code 2 in cmd).
var ErrConfig = errors.New("lookup: invalid config")

// Defaults of the service config.
const (
	DefaultAddr          = ":8080"
	DefaultCacheBytes    = 64 << 20
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
	// CacheBytes bounds the in-process cache of answers by (namespace, version, key), one
	// for all namespaces (cache.go); 0 means DefaultCacheBytes, a negative value (or
	// "off") turns the cache off. The least is 32 MiB: a smaller bound is that.
	CacheBytes ByteSize `yaml:"cache_bytes"`
	// CacheEntries is deprecated: the cache is bounded in bytes. A positive value without
	// cache_bytes sets cache_bytes to CacheEntries × bytesPerEntry, with a warning; a
	// negative one turns the cache off, as it did.
	CacheEntries int `yaml:"cache_entries"`
	// GRPCAddr serves the lookup API over gRPC too (grpc.go, staticref.v1.Lookup) on this
	// address; "" (the default) serves no gRPC.
	GRPCAddr     string   `yaml:"grpc_addr"`
	MaxBatch     int      `yaml:"max_batch"`
	MaxBodyBytes int64    `yaml:"max_body_bytes"`
	StoreTimeout Duration `yaml:"store_timeout"`
	PollInterval Duration `yaml:"poll_interval"`
	// UI serves the read-only status page at /ui/ (lookup/ui, docs/lookup.md); absent
	// means on, false turns it off.
	UI *bool `yaml:"ui"`

	Namespaces map[string]*NamespaceConfig `yaml:"namespaces"`

	// Warnings are what Validate found deprecated but still accepted; New logs them.
	Warnings []string `yaml:"-"`
}

// bytesPerEntry is what a deprecated cache_entries counts an entry as: a typical
// answer's head with the cache's own overhead.
const bytesPerEntry = 512

// ByteSize is a number of bytes, written in YAML as a whole number or with a unit:
// 64MiB, 1GiB, 500KB ("off" is -1).
type ByteSize int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a size, as in 256MiB")
	}
	v, err := parseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// parseByteSize reads 123, 64MiB, 1GiB, 500KB, 2MB, 1G or off.
func parseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "off" {
		return -1, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v > math.MaxInt64/mult || v < math.MinInt64/mult {
		return 0, fmt.Errorf("%s is not a size (e.g. 256MiB, 1GiB, or off)", yamldecode.Quote(s))
	}
	return ByteSize(v * mult), nil
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
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration, as in 36h")
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%s is not a duration (e.g. 36h)", yamldecode.Quote(s))
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
	root, bad := yamldecode.Document(data, "a service config")
	if bad != nil {
		return nil, configError(path, []yamldecode.Problem{*bad})
	}
	var c Config
	res := yamldecode.Decode(root, &c)
	problems := res.Problems
	if res.Refused() {
		return nil, configError(path, problems)
	}

	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.AdminTokenFile = abs(c.AdminTokenFile)
	unexpanded := map[string]bool{} // store fields missing a variable: told once, not checked
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
			problems = append(problems, yamldecode.Problem{Line: res.Line(p), Path: p,
				Msg: fmt.Sprintf("environment variable %s is %s (the URL %s names it)", yamldecode.Clip(v), what, yamldecode.Quote(n.Store))})
			unexpanded[p] = true
		}
		n.Store = writers.ResolveURL(store, base)
		n.Model = abs(n.Model)
	}

	// Validate fills defaults even where a field had a problem; a problem it finds in or
	// under a field that could not be read would only repeat that one.
	for _, p := range c.validate() {
		if res.Failed(p.Path) || unexpanded[p.Path] {
			continue
		}
		p.Line = res.Line(p.Path)
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return nil, configError(path, problems)
	}
	return &c, nil
}

// Validate fills defaults and returns every problem at once, as a *ConfigError.
func (c *Config) Validate() error {
	if ps := c.validate(); len(ps) > 0 {
		return configError("", ps)
	}
	return nil
}

// configError is problems as a *ConfigError, in file order, each as FILE:LINE: path: msg.
func configError(file string, ps []yamldecode.Problem) *ConfigError {
	yamldecode.Sort(ps)
	e := &ConfigError{File: file}
	for _, p := range ps {
		switch {
		case file != "" && p.Line > 0:
			e.Problems = append(e.Problems, fmt.Sprintf("%s:%d: %s", file, p.Line, p))
		case file != "":
			e.Problems = append(e.Problems, fmt.Sprintf("%s: %s", file, p))
		default:
			e.Problems = append(e.Problems, p.String())
		}
	}
	return e
}

func (c *Config) validate() []yamldecode.Problem {
	var ps []yamldecode.Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, yamldecode.Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	switch {
	case c.CacheEntries > 0 && c.CacheBytes != 0:
		add("cache_entries", "is deprecated and cache_bytes is set: remove cache_entries")
	case c.CacheEntries > 0:
		c.CacheBytes = ByteSize(int64(c.CacheEntries) * bytesPerEntry)
		c.Warnings = append(c.Warnings, fmt.Sprintf("cache_entries is deprecated: the cache is bounded in bytes; "+
			"cache_entries: %d is read as cache_bytes: %d (at least 32 MiB); write cache_bytes instead", c.CacheEntries, c.CacheBytes))
	case c.CacheEntries < 0:
		c.CacheBytes = -1
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.GRPCAddr != "" && c.GRPCAddr == c.Addr {
		add("grpc_addr", "%s is addr too: serve gRPC on a port of its own", yamldecode.Quote(c.GRPCAddr))
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
	if c.UI == nil {
		on := true
		c.UI = &on
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
			add(p, "%s", yamldecode.QuoteIn(err.Error(), name))
		}
		if n == nil {
			add(p, "store is required")
			continue
		}
		if n.Store == "" {
			add(p+".store", "is required, e.g. redis://localhost:6379/0")
		} else if err := writers.CheckURL(n.Store); err != nil {
			add(p+".store", "%s", yamldecode.QuoteIn(err.Error(), writers.RedactURL(n.Store))) // writers never shows a password
		}
		switch n.OnStale {
		case "":
			n.OnStale = OnStaleServe
		case OnStaleServe, OnStaleFallback, OnStaleError:
		default:
			add(p+".on_stale", "%s: use serve, fallback or error", yamldecode.Quote(n.OnStale))
		}
		if n.MaxStaleness < 0 {
			add(p+".max_staleness", "negative")
		}
		switch n.Device {
		case "":
			n.Device = "cpu"
		case "cpu", "auto", "cuda":
		default:
			add(p+".device", "%s: use cpu, auto or cuda", yamldecode.Quote(n.Device))
		}
		if err := n.Fallback.parse(); err != nil {
			add(p+".fallback.default", "%v", err)
		}
	}
	return ps
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
	// A value that lands in the URL's user:password@ part is percent-encoded: a
	// password may hold / or @, which would otherwise end the userinfo early.
	userinfoEnd := -1
	if scheme := strings.Index(s, "://"); scheme >= 0 {
		head := s
		if q := strings.IndexByte(s, '?'); q >= 0 {
			head = s[:q]
		}
		userinfoEnd = strings.LastIndexByte(head, '@')
	}
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
		if i < userinfoEnd {
			v = escapeUserinfo(v)
		}
		b.WriteString(v)
		i += 2 + end
	}
	return b.String(), missing
}

// escapeUserinfo percent-encodes v for a URL's user:password@ part (/, @, : and the
// like), as url.Parse, and so go-redis, decodes it back.
func escapeUserinfo(v string) string {
	return strings.TrimPrefix(url.UserPassword("", v).String(), ":")
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// warnReadable logs a warning when the admin token file may be read by every user of
// the machine: anyone who can read the token can flip the live version.
func warnReadable(log *slog.Logger, path string) {
	st, err := os.Stat(path) // through a symlink, as Kubernetes mounts a Secret
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return
	}
	log.Warn("admin_token_file is readable by every user of the machine: chmod 600 it (on Kubernetes, give the Secret volume defaultMode: 0400)",
		"file", path, "mode", st.Mode().Perm().String())
}

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
			return fmt.Errorf("%s: use computed, none, a number or an object {output: number|[numbers]}", yamldecode.Quote(n.Value))
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
				return fmt.Errorf("output %s: want a number or a list of numbers", yamldecode.Quote(out))
			}
			f.static[out] = many
		}
		f.kind = "static"
		return nil
	}
	return errors.New("use computed, none, a number or an object {output: number|[numbers]}")
}
