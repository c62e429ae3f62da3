package lookup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
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
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: use e.g. 36h, 15m or 500ms", s)
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads and validates a config file. Relative paths in it (a pebble: store,
// the model, the admin token file) are resolved against the file's directory.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseConfig(data, path)
}

// ParseConfig is LoadConfig on bytes; path names the file in errors and anchors paths.
func ParseConfig(data []byte, path string) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.AdminTokenFile = abs(c.AdminTokenFile)
	for _, n := range c.Namespaces {
		if n == nil {
			continue
		}
		n.Store = writers.ResolveURL(n.Store, base)
		n.Model = abs(n.Model)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Validate fills defaults and returns every problem at once.
func (c *Config) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
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
		add("max_batch: %d is negative", c.MaxBatch)
	}
	switch {
	case c.MaxBodyBytes == 0:
		c.MaxBodyBytes = DefaultMaxBodyBytes
	case c.MaxBodyBytes < 0:
		add("max_body_bytes: %d is negative", c.MaxBodyBytes)
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = Duration(DefaultStoreTimeout)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = Duration(DefaultPollInterval)
	}
	if len(c.Namespaces) == 0 {
		add("namespaces: serve at least one namespace")
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
			add("%s: %v", p, err)
		}
		if n == nil {
			add("%s: store is required", p)
			continue
		}
		if n.Store == "" {
			add("%s.store: is required, e.g. redis://localhost:6379/0", p)
		} else if err := writers.CheckURL(n.Store); err != nil {
			add("%s.store: %v", p, err)
		} else if strings.HasPrefix(strings.ToLower(n.Store), "parquet:") {
			add("%s.store: parquet: is an export, not a lookup store", p)
		}
		switch n.OnStale {
		case "":
			n.OnStale = OnStaleServe
		case OnStaleServe, OnStaleFallback, OnStaleError:
		default:
			add("%s.on_stale: %q: use serve, fallback or error", p, n.OnStale)
		}
		if n.MaxStaleness < 0 {
			add("%s.max_staleness: negative", p)
		}
		switch n.Device {
		case "":
			n.Device = "cpu"
		case "cpu", "auto", "cuda":
		default:
			add("%s.device: %q: use cpu, auto or cuda", p, n.Device)
		}
		if err := n.Fallback.parse(); err != nil {
			add("%s.fallback.default: %v", p, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrConfig, strings.Join(errs, "\n  "))
	}
	return nil
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
