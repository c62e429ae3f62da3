package lookup

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseConfigReportsEveryProblemWithItsLineAndPath(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // the problems, in order
	}{
		{
			name: "a misspelt field and a bad duration are both reported",
			yaml: "namespaces:\n  churn:\n    store: redis://localhost:6379/0\n    max_staleness: fast\ncache_entry: 5\n",
			want: []string{
				`serve.yaml:4: namespaces.churn.max_staleness: "fast" is not a duration (e.g. 36h)`,
				`serve.yaml:5: cache_entry: unknown field (did you mean cache_entries?)`,
			},
		},
		{
			name: "values of the wrong kind and validation problems come together",
			yaml: "max_batch: lots\nnamespaces:\n  churn:\n    store: mysql://x\n    on_stale: maybe\n    fallback: [1]\n    modle: m.onnx\n",
			want: []string{
				`serve.yaml:1: max_batch: "lots" is not a whole number`,
				`serve.yaml:4: namespaces.churn.store: store URL "mysql://x": unknown store scheme "mysql"`,
				`serve.yaml:5: namespaces.churn.on_stale: "maybe": use serve, fallback or error`,
				`serve.yaml:6: namespaces.churn.fallback: want a mapping, got a list`,
				`serve.yaml:7: namespaces.churn.modle: unknown field (did you mean model?)`,
			},
		},
		{
			name: "a missing store is reported at its namespace",
			yaml: "addr: :9090\nnamespaces:\n  churn:\n    max_staleness: 1h\n",
			want: []string{`serve.yaml:3: namespaces.churn.store: is required`},
		},
		{
			name: "a field given twice is reported",
			yaml: "namespaces:\n  churn:\n    store: redis://a:6379/0\n    store: redis://b:6379/0\n",
			want: []string{`serve.yaml:4: namespaces.churn.store: given twice (first on line 3)`},
		},
		{
			name: "a syntax error has its line",
			yaml: "namespaces:\n  churn:\n    store: [\n",
			want: []string{`serve.yaml:3: did not find expected node content`},
		},
		{
			name: "an empty file serves nothing",
			yaml: "",
			want: []string{`serve.yaml: namespaces: serve at least one namespace`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), "serve.yaml")
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want an error wrapping ErrConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %T, want *ConfigError", err)
			}
			if len(ce.Problems) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%v", len(ce.Problems), len(tc.want), err)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(ce.Problems[i], want) {
					t.Errorf("problem %d: got %q, want it to begin %q", i, ce.Problems[i], want)
				}
			}
			if !strings.HasPrefix(err.Error(), "lookup: invalid config: ") {
				t.Errorf("got %q, want it to begin with lookup: invalid config:", err)
			}
		})
	}
}

func TestParseConfigReadsAGoodFile(t *testing.T) {
	yaml := `addr: ":9090"
namespaces:
  churn: &base
    store: pebble:store
    max_staleness: 36h
    on_stale: fallback
    fallback: {segment_param: country, default: {score: 0.5}}
    model: models/churn.onnx
  ltv:
    <<: *base
    store: redis://localhost:6379/1
    on_stale: error
`
	c, err := ParseConfig([]byte(yaml), "/etc/staticref/serve.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Namespaces["churn"]
	if c.Addr != ":9090" || n.Store != "pebble:/etc/staticref/store" || n.Model != "/etc/staticref/models/churn.onnx" {
		t.Errorf("got addr %q store %q model %q, want paths relative to the file", c.Addr, n.Store, n.Model)
	}
	if n.Fallback.kind != "static" || n.Fallback.static["score"][0] != 0.5 || n.Fallback.SegmentParam != "country" {
		t.Errorf("fallback: got %+v", n.Fallback)
	}
	l := c.Namespaces["ltv"]
	if time.Duration(l.MaxStaleness) != 36*time.Hour || l.OnStale != OnStaleError || l.Store != "redis://localhost:6379/1" {
		t.Errorf("merged: got max_staleness %v on_stale %q store %q, want 36h from the merge, and error and redis written beside it",
			time.Duration(l.MaxStaleness), l.OnStale, l.Store)
	}
	if c.MaxBatch != DefaultMaxBatch || n.Device != "cpu" {
		t.Errorf("defaults: got max_batch %d device %q", c.MaxBatch, n.Device)
	}
}

func TestParseConfigExpandsEnvironmentVariablesInStoreURLs(t *testing.T) {
	t.Setenv("REDIS_PASSWORD", "hunter2")
	t.Setenv("REDIS_HOST", "redis.prod")
	t.Setenv("EMPTY", "")
	t.Setenv("SLASHY", "s3cr/et+Z@z")
	dir := t.TempDir()
	file := filepath.Join(dir, "serve.yaml")

	t.Run("${VAR} and $(VAR) are replaced by their values", func(t *testing.T) {
		for written, want := range map[string]string{
			"redis://:$(REDIS_PASSWORD)@redis:6379/0":         "redis://:hunter2@redis:6379/0",
			"redis://:${REDIS_PASSWORD}@${REDIS_HOST}:6379/0": "redis://:hunter2@redis.prod:6379/0",
			"redis://:pa$$word@redis:6379/0":                  "redis://:pa$$word@redis:6379/0",
			"redis://:pa$$(X)@redis:6379/0":                   "redis://:pa$(X)@redis:6379/0",
			"redis://:a$b@redis:6379/0":                       "redis://:a$b@redis:6379/0",
		} {
			c, err := ParseConfig([]byte("namespaces:\n  churn:\n    store: '"+written+"'\n"), file)
			if err != nil {
				t.Errorf("%s: %v", written, err)
				continue
			}
			if got := c.Namespaces["churn"].Store; got != want {
				t.Errorf("%s: got %q, want %q", written, got, want)
			}
		}
	})

	t.Run("a password with / and @ reaches the client whole", func(t *testing.T) {
		c, err := ParseConfig([]byte("namespaces:\n  churn:\n    store: 'redis://:${SLASHY}@redis:6379/0'\n"), file)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(c.Namespaces["churn"].Store)
		if err != nil {
			t.Fatal(err)
		}
		if pw, _ := u.User.Password(); pw != "s3cr/et+Z@z" || u.Host != "redis:6379" {
			t.Errorf("parsed back: password %q, host %q; want s3cr/et+Z@z at redis:6379", pw, u.Host)
		}
	})

	t.Run("an unset or empty variable is an error naming the field and the variable", func(t *testing.T) {
		_, err := ParseConfig([]byte("namespaces:\n  churn:\n    store: redis://:$(NO_SUCH_PASSWORD)@redis:6379/0\n  ltv:\n    store: redis://:${EMPTY}@redis:6379/0\n"), file)
		for _, want := range []string{
			file + ":3: namespaces.churn.store: environment variable NO_SUCH_PASSWORD is not set",
			file + ":5: namespaces.ltv.store: environment variable EMPTY is empty",
		} {
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v, want %q", err, want)
			}
		}
		var ce *ConfigError
		if errors.As(err, &ce) && len(ce.Problems) != 2 {
			t.Errorf("got %d problems, want one per missing variable: %v", len(ce.Problems), err)
		}
	})

	t.Run("an error about an expanded URL never shows the password", func(t *testing.T) {
		for _, store := range []string{"redis://:${REDIS_PASSWORD}@", "redis://:${SLASHY}@a,b/0"} {
			_, err := ParseConfig([]byte("namespaces:\n  churn:\n    store: "+store+"\n"), file)
			if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cr") || !strings.Contains(err.Error(), "xxxxx") {
				t.Errorf("%s: got %v, want an error with the password shown as xxxxx", store, err)
			}
		}
	})
}

func TestValidateOfAConfigBuiltInCode(t *testing.T) {
	c := &Config{MaxBatch: -1, Namespaces: map[string]*NamespaceConfig{"churn": {Store: "redis://localhost:6379/0", Device: "tpu"}}}
	err := c.Validate()
	want := "lookup: invalid config: 2 problems:\n  max_batch: -1 is negative\n  namespaces.churn.device: \"tpu\": use cpu, auto or cuda"
	if err == nil || err.Error() != want || !errors.Is(err, ErrConfig) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestAConfigWhoseAliasesStandForBillionsIsRefusedAtOnce(t *testing.T) {
	path := filepath.Join("testdata", "alias-bomb.bad.yaml")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan error, 1)
	go func() {
		_, err := LoadConfig(path)
		done <- err
	}()
	select {
	case err := <-done:
		runtime.ReadMemStats(&after)
		want := path + ":"
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "expand to more than 1000000 nodes") {
			t.Errorf("got %v, want a config error naming %s and saying the aliases expand to too much", err, path)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
			t.Errorf("loading allocated %d MiB, want under 64", got>>20)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("loading did not return within 2s")
	}
}

func TestLongValuesAreClippedInConfigErrors(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	doc := "namespaces:\n  churn:\n    store: \"mysql://" + long + "\"\n    on_stale: " + long + "\n    max_staleness: " + long +
		"\n    device: " + long + "\n    fallback: {default: " + long + "}\n  " + long[:1000] + ":\n    store: redis://:$(NOPE_" + long + ")@r:6379/0\n"
	_, err := ParseConfig([]byte(doc), "serve.yaml")
	if err == nil {
		t.Fatal("got no error")
	}
	if len(err.Error()) > 3000 {
		t.Errorf("error is %d bytes, want the values clipped: %.300s", len(err.Error()), err)
	}
	clipped := `"` + strings.Repeat("x", 80) + `…"`
	for _, want := range []string{
		`namespaces.churn.store: store URL "mysql://` + strings.Repeat("x", 72) + `…"`,
		"namespaces.churn.on_stale: " + clipped + ": use serve, fallback or error",
		"namespaces.churn.max_staleness: " + clipped + " is not a duration",
		"namespaces.churn.device: " + clipped + ": use cpu, auto or cuda",
		"namespaces.churn.fallback.default: " + clipped + ": use computed",
		"namespaces." + strings.Repeat("x", 80) + "…: writers: invalid name: namespace " + clipped,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%.3000s", want, err)
		}
	}
}

// FuzzParseConfig: no serve config crashes ParseConfig or takes it long, every error is
// a config error, and what it accepts validates. The seeds are the files in testdata and
// deploy/lookup.yaml (make fuzz runs it).
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	seeds = append(seeds, "../deploy/lookup.yaml")
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "fuzz/serve.yaml")
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
			return
		}
		if verr := c.Validate(); verr != nil {
			t.Fatalf("ParseConfig accepted a config that Validate rejects: %v", verr)
		}
	})
}

func TestTheCacheIsBoundedInBytes(t *testing.T) {
	ns := "namespaces:\n  churn:\n    store: pebble:store\n"
	for _, tc := range []struct {
		name, yaml string
		bytes      ByteSize
		warned     bool
		problem    string
	}{
		{"absent is the default", ns, DefaultCacheBytes, false, ""},
		{"a size with a unit", "cache_bytes: 256MiB\n" + ns, 256 << 20, false, ""},
		{"a whole number of bytes", "cache_bytes: 100000000\n" + ns, 100000000, false, ""},
		{"decimal units", "cache_bytes: 2GB\n" + ns, 2e9, false, ""},
		{"off", "cache_bytes: off\n" + ns, -1, false, ""},
		{"cache_entries still works, with a warning", "cache_entries: 1000\n" + ns, 1000 * bytesPerEntry, true, ""},
		{"a negative cache_entries turns it off", "cache_entries: -1\n" + ns, -1, false, ""},
		{"not a size", "cache_bytes: lots\n" + ns, 0, false, `serve.yaml:1: cache_bytes: "lots" is not a size (e.g. 256MiB, 1GiB, or off)`},
		{"both", "cache_bytes: 1GiB\ncache_entries: 5\n" + ns, 0, false, `serve.yaml:2: cache_entries: is deprecated and cache_bytes is set: remove cache_entries`},
		{"gRPC on the HTTP address", "addr: :8080\ngrpc_addr: :8080\n" + ns, 0, false, `serve.yaml:2: grpc_addr: ":8080" is addr too: serve gRPC on a port of its own`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml), "serve.yaml")
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("got %v, want %s", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.CacheBytes != tc.bytes || (len(c.Warnings) > 0) != tc.warned {
				t.Errorf("got cache_bytes %d, warnings %q; want %d, warned %v", c.CacheBytes, c.Warnings, tc.bytes, tc.warned)
			}
		})
	}
}
