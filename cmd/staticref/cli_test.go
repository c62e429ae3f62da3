package main

// What a new user meets first: read-only commands on a store that is not there, -o values,
// exit codes, one line per error, and examples and shipped files that work as written.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
)

// repoRoot is the module root, where README.md, jobs/ and deploy/ are.
const repoRoot = "../.."

func TestReadOnlyCommandsOnAMissingPebbleDirectoryFailAndCreateNothing(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "nosuch")
	dir := filepath.Join(parent, "store")
	for form, url := range map[string]string{"pebble:DIR": "pebble:" + dir, "pebble:///DIR": "pebble://" + dir} {
		tests := [][]string{
			{"get", "--store", url, "--namespace", "demo", "u000000042"},
			{"versions", "list", "--store", url, "--namespace", "demo"},
			{"versions", "list", "--store", url, "--namespace", "demo", "-o", "json"},
			{"versions", "show", "--store", url, "--namespace", "demo"},
			{"versions", "flip", "--store", url, "--namespace", "demo", "20261127T020000Z"},
			{"versions", "rollback", "--store", url, "--namespace", "demo"},
			{"versions", "gc", "--store", url, "--namespace", "demo"},
		}
		for _, args := range tests {
			t.Run(strings.Join(args[:2], " ")+" "+form+" "+strings.Join(args[len(args)-2:], " "), func(t *testing.T) {
				code, out, stderr := staticref(t, args...)
				want := "store directory " + dir + " does not exist"
				if code != 1 || !strings.Contains(stderr, want) || out != "" {
					t.Errorf("got exit %d, stdout %q, stderr %q; want exit 1, no output, stderr containing %q", code, out, stderr, want)
				}
				if _, err := os.Stat(parent); !os.IsNotExist(err) {
					t.Errorf("%s exists after the command (stat: %v), want nothing created", parent, err)
				}
			})
		}
	}
}

// TestReadOnlyCommandsOnADirectoryThatIsNotAStore: a typo such as pebble:. names a
// directory that exists but holds no store; nothing is written into it.
func TestReadOnlyCommandsOnADirectoryThatIsNotAStore(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	for _, args := range [][]string{
		{"get", "--store", "pebble:" + dir, "--namespace", "demo", "k"},
		{"versions", "list", "--store", "pebble:" + dir, "--namespace", "demo"},
	} {
		code, _, stderr := staticref(t, args...)
		if want := dir + " is not a store"; code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("%s: got exit %d, stderr %q; want exit 1 saying %q", args[0], code, stderr, want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("%s wrote into the directory: %v", args[0], ents)
		}
	}
}

func TestVersionsListOfANamespaceWithNoVersions(t *testing.T) {
	_, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}

	t.Run("the table form says so on stderr; an empty list is not a failure", func(t *testing.T) {
		code, _, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "nobody")
		want := "namespace nobody has no versions in " + store
		if code != 0 || !strings.Contains(stderr, want) {
			t.Errorf("got exit %d, stderr %q; want exit 0, stderr containing %q", code, stderr, want)
		}
	})
	t.Run("-o json prints an empty array and exits 0", func(t *testing.T) {
		code, out, stderr := staticref(t, "versions", "list", "--store", store, "--namespace", "nobody", "-o", "json")
		var vs []any
		if code != 0 || json.Unmarshal([]byte(out), &vs) != nil || vs == nil || len(vs) != 0 {
			t.Errorf("got exit %d, stdout %q, stderr %q; want exit 0 and []", code, out, stderr)
		}
	})
}

func TestAnInvalidOutputFormatIsBadUsageBeforeAnyWork(t *testing.T) {
	dir, job, _ := workspace(t, 1000, "")
	fresh := filepath.Join(t.TempDir(), "store")
	tests := []struct {
		name  string
		args  []string
		value string
	}{
		{"versions list -o yaml", []string{"versions", "list", "--store", "pebble:" + fresh, "--namespace", "churn", "-o", "yaml"}, "yaml"},
		{"inspect -o xml", []string{"inspect", filepath.Join(dir, "models", "logistic.onnx"), "-o", "xml"}, "xml"},
		{"run -o yaml runs nothing", []string{"run", "--job", job, "--store", "pebble:" + fresh, "-o", "yaml"}, "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := staticref(t, tt.args...)
			want := "-o " + tt.value + ": use text or json"
			if code != 2 || out != "" || !strings.Contains(stderr, want) {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit 2, no output, stderr containing %q", code, out, stderr, want)
			}
			if _, err := os.Stat(fresh); !os.IsNotExist(err) {
				t.Errorf("the store %s exists (stat: %v): work was done before -o was checked", fresh, err)
			}
		})
	}
}

func TestAFailedRunPrintsItsErrorOnce(t *testing.T) {
	dir, job, _ := workspace(t, 2000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, stderr)
	}
	tests := []struct {
		name string
		sets []string
		code int
		err  string // the error, which stderr must hold exactly once
	}{
		{"a failed gate", []string{"source.uri=" + filepath.Join(dir, "features", "part-00000.parquet")}, 1, "release gate failed"},
		{"a job that does not fit its data", []string{"source.features=[f0, f9]"}, 2, `column "f9" not found`},
		{"a missing shard glob", []string{"source.uri=" + filepath.Join(dir, "none", "*.parquet")}, 1, "no files match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"run", "--job", job}
			for _, s := range tt.sets {
				args = append(args, "--set", s)
			}
			code, _, stderr := staticref(t, args...)
			if code != tt.code {
				t.Errorf("exit: got %d, want %d\n%s", code, tt.code, stderr)
			}
			if n := strings.Count(stderr, tt.err); n != 1 {
				t.Errorf("stderr holds %q %d times, want once:\n%s", tt.err, n, stderr)
			}
			if !strings.Contains(stderr, "staticref: ") || strings.Contains(stderr, "level=ERROR") {
				t.Errorf("stderr: got %q, want the error as one staticref: line and no ERROR log line", stderr)
			}
		})
	}
}

// TestAFailedRunOnATerminalPrintsItsErrorOnce runs the real binary under script(1): the
// bar's last line does not repeat the error.
func TestAFailedRunOnATerminalPrintsItsErrorOnce(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) from util-linux is not installed")
	}
	dir, job, _ := workspace(t, 2000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, stderr)
	}
	run := binary(t) + " run --job " + job + " --set source.uri=" + filepath.Join(dir, "features", "part-00000.parquet")
	out, err := exec.Command(script, "-qfec", run, "/dev/null").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1:\n%s", err, out)
	}
	if n := strings.Count(string(out), "release gate failed"); n != 1 {
		t.Errorf("the error is printed %d times, want once:\n%q", n, out)
	}
}

func TestVersionsGCWithNothingToRemoveSaysSo(t *testing.T) {
	_, job, store := workspace(t, 1000, "")
	if code, _, stderr := staticref(t, "run", "--job", job); code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	code, out, stderr := staticref(t, "versions", "gc", "--store", store, "--namespace", "churn")
	if code != 0 || out != "" || !strings.Contains(stderr, "nothing to remove") {
		t.Errorf("got exit %d, stdout %q, stderr %q; want exit 0 and \"nothing to remove\" on stderr", code, out, stderr)
	}
}

func TestScheduleWarnsWhenNoJobHasASchedule(t *testing.T) {
	dir, _, _ := workspace(t, 100, "") // job.yaml has no schedule
	log := scheduleUntil(t, dir, "scheduler started")
	if !regexp.MustCompile(`level=WARN msg="no job in the directory has a schedule.*dir=`).MatchString(log) {
		t.Errorf("got no warning that nothing is scheduled:\n%s", log)
	}
}

func TestShippedJobAndLookupConfigFilesAreValid(t *testing.T) {
	t.Run("jobs/churn.yaml is a scheduled job", func(t *testing.T) {
		job, err := jobs.Load(filepath.Join(repoRoot, "jobs", "churn.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if job.Name != "churn" || job.Sink.Namespace != "churn" {
			t.Errorf("name and namespace: got %q, %q, want churn", job.Name, job.Sink.Namespace)
		}
		if _, err := jobs.ParseSchedule(job.Schedule); job.Schedule == "" || err != nil {
			t.Errorf("schedule %q: %v, want a valid schedule", job.Schedule, err)
		}
	})
	t.Run("jobs/churn.yaml runs over the data testdata generate made", func(t *testing.T) {
		store := "pebble:" + filepath.Join(t.TempDir(), "store")
		code, out, stderr := staticref(t, "run", "--job", filepath.Join(repoRoot, "jobs", "churn.yaml"), "--store", store, "--set", "model.device=cpu")
		if code != 0 || !strings.Contains(out, "rows read 2000, written 2000, skipped 0") {
			t.Fatalf("run: exit %d\n%s%s", code, out, stderr)
		}
	})
	t.Run("jobs/churn-hourly.yaml is an hourly increment of namespace churn on top of the nightly run", func(t *testing.T) {
		job, err := jobs.Load(filepath.Join(repoRoot, "jobs", "churn-hourly.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if job.Sink.Namespace != "churn" || !job.Sink.Incremental() || job.Schedule == "" {
			t.Errorf("got namespace %q mode %q schedule %q, want an incremental scheduled job of churn", job.Sink.Namespace, job.Sink.Mode, job.Schedule)
		}
		store := "pebble:" + filepath.Join(t.TempDir(), "store")
		for _, f := range []string{"churn.yaml", "churn-hourly.yaml"} {
			code, out, stderr := staticref(t, "run", "--job", filepath.Join(repoRoot, "jobs", f), "--store", store, "--set", "model.device=cpu")
			if code != 0 {
				t.Fatalf("run %s: exit %d\n%s%s", f, code, out, stderr)
			}
			if f == "churn-hourly.yaml" && (!strings.Contains(out, "rows read 1000, written 1000") || !strings.Contains(out, "(chain depth 2)")) {
				t.Errorf("run %s: want an increment of the 1000 rows of its shard:\n%s", f, out)
			}
		}
	})
	t.Run("deploy/lookup.yaml serves namespace churn from the repository's store", func(t *testing.T) {
		cfg, err := lookup.LoadConfig(filepath.Join(repoRoot, "deploy", "lookup.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		n := cfg.Namespaces["churn"]
		want := "pebble:" + filepath.Join(repoRoot, ".staticref", "store")
		if n == nil || n.Store != want {
			t.Errorf("namespace churn: got %+v, want store %s", n, want)
		}
	})
}

// TestExamplesNameFilesThatExist checks every --job, --jobs and --config in the help
// examples and the README: an example must work when pasted in the repository.
func TestExamplesNameFilesThatExist(t *testing.T) {
	re := regexp.MustCompile(`--(?:job|jobs|config)[ =]([^\s'"]+)`)
	var texts []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		texts = append(texts, c.Example)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(nil, nil))
	for _, doc := range []string{"README.md", "docs/operations.md"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, doc))
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b))
	}
	for _, text := range texts {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			path := m[1]
			if filepath.IsAbs(path) || strings.ContainsAny(path, "$`") || strings.ToUpper(path) == path {
				continue // a path inside a pod, a variable or a placeholder such as FILE
			}
			if _, err := os.Stat(filepath.Join(repoRoot, path)); err != nil {
				t.Errorf("%s names %s: %v", m[0], path, err)
			}
		}
	}
}

// TestQuickstartRowsMatchMakeDemo: the README quickstart and the root example run after
// `make demo`; fewer rows than it made live would fail the min_rows_ratio gate.
func TestQuickstartRowsMatchMakeDemo(t *testing.T) {
	rows := regexp.MustCompile(`testdata generate --out \S+ --rows (\d+)`)
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	demo := regexp.MustCompile(`(?m)^demo:[\s\S]*?testdata generate --out \S+ --rows (\d+)`).FindSubmatch(makefile)
	if demo == nil {
		t.Fatal("Makefile: no testdata generate --rows in the demo target")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	quick := regexp.MustCompile(`(?s)## Quickstart.*?` + "```sh(.*?)```").FindSubmatch(readme)
	if quick == nil {
		t.Fatal("README.md: no Quickstart block")
	}
	for name, text := range map[string]string{"README quickstart": string(quick[1]), "staticref --help": newRoot(nil, nil).Example} {
		m := rows.FindStringSubmatch(text)
		if m == nil || m[1] != string(demo[1]) {
			t.Errorf("%s generates %v rows, want make demo's %s", name, m, demo[1])
		}
	}
}

// TestFlagUsagesShowTheirType: pflag takes a `quoted` word in a usage string as the
// flag's value name ("--no-flip versions flip").
func TestFlagUsagesShowTheirType(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: usage %q has a backquote", c.CommandPath(), f.Name, f.Usage)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(nil, nil))
}

// storeWithoutVersions makes an empty Pebble store, for commands that need one to exist.
func storeWithoutVersions(t *testing.T, url string) {
	t.Helper()
	s, err := writers.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestVersionFlag: --version answers without ONNX Runtime or a store, naming the build.
func TestVersionFlag(t *testing.T) {
	code, out, stderr := exe(t, []string{"STATICREF_ORT_LIB=/nonexistent"}, "--version")
	if code != 0 || !strings.HasPrefix(out, "staticref version ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("got exit %d, stdout %q, stderr %q; want exit 0 and the version with the Go toolchain", code, out, stderr)
	}
}
