package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGoodFilesLoadWithDefaultsAndResolvedPaths(t *testing.T) {
	dir, _ := filepath.Abs("testdata")

	t.Run("every field set is kept as written and relative paths anchor at the file", func(t *testing.T) {
		j, err := Load(filepath.Join(dir, "full.good.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"source.uri", j.Source.URI, filepath.Join(dir, "data/features/*.parquet")},
			{"model.path", j.Model.Path, filepath.Join(dir, "models/churn.onnx")},
			{"sink.store", j.Sink.Store, "pebble:" + filepath.Join(dir, "store")},
			{"sink.namespace", j.Sink.Namespace, "churn-scores"},
			{"sink.encoding", j.Sink.Encoding, "binary"},
			{"sink.export", j.Sink.Export, filepath.Join(dir, "exports")},
			{"sink.export_row_group_bytes", j.Sink.ExportRowGroupBytes, 1 << 20},
			{"sink.mode", j.Sink.Mode, "incremental"},
			{"sink.max_chain", j.Sink.MaxChain, 4},
			{"model.batch_size", j.Model.BatchSize, 4096},
			{"model.device", j.Model.Device, "cpu"},
			{"defaults.global", j.Defaults.Global, "median"},
			{"defaults.segment_by", j.Defaults.SegmentBy, "country"},
			{"release.flip", j.Release.Flip, "manual"},
			{"release.keep", j.Release.KeepVersions(), 3},
			{"min_rows_ratio", j.Release.Gates.MinRows(), 0.5},
			{"max_null_fraction", j.Release.Gates.MaxNulls(), 0.01},
			{"unique_keys", j.Release.Gates.Unique(), true},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		if f, ok := j.Source.NullFill(); !ok || f != 0 {
			t.Errorf("nulls fill: got %v %v, want 0 true", f, ok)
		}
	})

	t.Run("a minimal file gets the documented defaults", func(t *testing.T) {
		j, err := Load(filepath.Join(dir, "minimal.good.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"source.uri stays absolute", j.Source.URI, "/abs/data/*.parquet"},
			{"source.nulls", j.Source.Nulls, "fail"},
			{"model.batch_size", j.Model.BatchSize, DefaultBatchSize},
			{"model.workers", j.Model.Workers, runtime.NumCPU()},
			{"model.device", j.Model.Device, "auto"},
			{"sink.store", j.Sink.Store, "pebble:" + filepath.Join(dir, ".staticref/store")},
			{"sink.namespace defaults to name", j.Sink.Namespace, "churn"},
			{"sink.encoding", j.Sink.Encoding, "json"},
			{"sink.export is off", j.Sink.Export, ""},
			{"sink.export_row_group_bytes", j.Sink.ExportRowGroupBytes, DefaultExportRowGroupBytes},
			{"defaults.global", j.Defaults.Global, "mean"},
			{"release.flip", j.Release.Flip, "auto"},
			{"release.keep", j.Release.KeepVersions(), DefaultKeep},
			{"min_rows_ratio", j.Release.Gates.MinRows(), DefaultMinRowsRatio},
			{"max_null_fraction", j.Release.Gates.MaxNulls(), DefaultMaxNullFraction},
			{"unique_keys", j.Release.Gates.Unique(), true},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
	})
}

func TestBadFilesReportEveryProblemWithItsPath(t *testing.T) {
	tests := []struct {
		file string
		want []string // each must appear in the error
	}{
		{"unknown-field.bad.yaml", []string{
			"line 6: source.feature: unknown field",
			"line 9: model.batchsize: unknown field (did you mean batch_size?)",
			"line 10: sinks: unknown field",
		}},
		{"many-problems.bad.yaml", []string{
			`name: "Churn!"`,
			"schedule: ",
			"source.uri: required",
			`source.features[1]: column "f0" listed twice`,
			`source.features[2]: "user_id" is the key column`,
			`source.nulls: "zero"`,
			"model.path: required",
			"model.batch_size: -5",
			"model.workers: -1",
			`model.device: "tpu"`,
			`sink.store: `,
			`sink.encoding: "xml"`,
			`sink.mode: "partial": use full or incremental`,
			"sink.max_chain: 65: use 1 to 64",
			`defaults.global: "mode"`,
			`release.flip: "sometimes"`,
			"release.keep: -1",
			"release.gates.min_rows_ratio: -0.1",
			"release.gates.max_null_fraction: 2",
		}},
		{"wrong-type.bad.yaml", []string{
			`line 5: source.features: want a list of strings, as in [a, b], got "f0"`,
			`line 8: model.batch_size: "lots" is not a whole number`,
		}},
		{"not-a-mapping.bad.yaml", []string{"a job file is a mapping of fields"}},
		{"zero.bad.yaml", []string{
			"line 5: model.batch_size: 0: use 1 to 1048576, or leave it out for 8192",
			"line 6: model.workers: 0: use 1 to 256, or leave it out for one a CPU",
			"line 7: model.intra_op_threads: 0: use 1 to 256, or leave it out for 1",
			"line 9: sink.max_in_flight: 0: use 1 to 64, or leave it out for 4",
		}},
		{"alias-bomb.bad.yaml", []string{"merge keys (<<) expand to more than 1000000 nodes or 10000 aliases"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			_, err := Load(path, nil)
			if err == nil {
				t.Fatal("got no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got %T, want an error wrapping ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": ") {
				t.Errorf("error does not start with the file name: %s", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			var je *Error
			if errors.As(err, &je) && len(je.Problems) < len(tt.want) {
				t.Errorf("got %d problems, want at least %d:\n%s", len(je.Problems), len(tt.want), msg)
			}
		})
	}
}

func TestSetOverridesAnyFieldAndIsValidatedLikeTheFile(t *testing.T) {
	path := filepath.Join("testdata", "full.good.yaml")
	t.Run("scalars, lists and new fields are set; set paths stay relative to the working directory", func(t *testing.T) {
		j, err := Load(path, []string{
			"source.uri=data/dt=2026-11-01/*.parquet",
			"model.batch_size=128",
			"source.features=[a, b]",
			"sink.store=pebble:other",
			"defaults.segment_by=region",
		})
		if err != nil {
			t.Fatal(err)
		}
		if j.Source.URI != "data/dt=2026-11-01/*.parquet" {
			t.Errorf("source.uri: got %q", j.Source.URI)
		}
		if j.Sink.Store != "pebble:other" {
			t.Errorf("sink.store: got %q", j.Sink.Store)
		}
		if j.Model.BatchSize != 128 {
			t.Errorf("batch_size: got %d, want 128", j.Model.BatchSize)
		}
		if !slices.Equal(j.Source.Features, []string{"a", "b"}) {
			t.Errorf("features: got %v", j.Source.Features)
		}
		if j.Defaults.SegmentBy != "region" {
			t.Errorf("segment_by: got %q", j.Defaults.SegmentBy)
		}
	})
	tests := []struct {
		name string
		set  string
		want string
	}{
		{"an unknown field", "model.threads=4", "--set model.threads: unknown field"},
		{"an unknown field under a new mapping", "modle.batch_size=4", "--set modle.batch_size: unknown field"},
		{"a bad value", "model.device=tpu", `model.device: "tpu"`},
		{"a value of the wrong type", "model.workers=many", `--set model.workers: "many" is not a whole number`},
		{"a number where a list goes", "source.features=3", `--set source.features: "3" is not a list`},
		{"a word where a number goes", "release.gates.min_rows_ratio=most", `--set release.gates.min_rows_ratio: "most" is not a number`},
		{"no equals sign", "model.workers", "use FIELD=VALUE"},
		{"a path through a scalar", "name.first=x", "--set name.first: name is not a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is an error", func(t *testing.T) {
			_, err := Load(path, []string{tt.set})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "line ") || strings.Contains(err.Error(), "\n")) {
				t.Errorf("a --set names no line of the file, and is one problem: %v", err)
			}
		})
	}
}

// TestAFileWhoseAliasesStandForBillionsIsRefusedAtOnce: alias-bomb.bad.yaml is 700
// bytes standing for 10^8 mappings; decoding every copy took 24 GB.
func TestAFileWhoseAliasesStandForBillionsIsRefusedAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		load func() error
	}{
		{"in the file", func() error {
			_, err := Load(filepath.Join("testdata", "alias-bomb.bad.yaml"), nil)
			return err
		}},
		{"in a --set", func() error {
			v := "&a0 [x, x, x, x, x, x, x, x, x, x]"
			for l := 1; l <= 8; l++ {
				v = fmt.Sprintf("&a%d [%s%s]", l, v, strings.Repeat(fmt.Sprintf(", *a%d", l-1), 9))
			}
			_, err := Load(filepath.Join("testdata", "full.good.yaml"), []string{"source.features=" + v})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() { done <- tc.load() }()
			select {
			case err := <-done:
				runtime.ReadMemStats(&after)
				if err == nil || !strings.Contains(err.Error(), "expand to more than") {
					t.Errorf("got %v, want an error saying the aliases expand to too much", err)
				}
				if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
					t.Errorf("loading allocated %d MiB, want under 64", got>>20)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("loading did not return within 2s")
			}
		})
	}
}

func TestLongValuesAreClippedInErrors(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	job := "name: churn\nsource: {uri: x/*.parquet, key: user_id, features: [f0]}\nmodel: {path: m.onnx, device: " + long +
		", batch_size: " + long + "}\nsink: {store: \"mysql://" + long + "\", encoding: " + long + "}\nschedule: " + long + "\n"
	_, err := Parse([]byte(job), "long.yaml", []string{"model.workers=" + long})
	if err == nil {
		t.Fatal("got no error")
	}
	if len(err.Error()) > 2000 {
		t.Errorf("error is %d bytes, want the values clipped: %.300s", len(err.Error()), err)
	}
	clipped := `"` + strings.Repeat("x", 80) + `…"`
	for _, want := range []string{
		"--set model.workers: " + clipped + " is not a whole number",
		"model.batch_size: " + clipped + " is not a whole number",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%.2000s", want, err)
		}
	}
	// Without the --set and the unreadable batch_size, Validate's own checks quote too.
	job = strings.Replace(job, ", batch_size: "+long, "", 1)
	_, err = Parse([]byte(job), "long.yaml", nil)
	if err == nil || len(err.Error()) > 2000 {
		t.Fatalf("got %d bytes of error, want under 2000: %.300v", len(fmt.Sprint(err)), err)
	}
	for _, want := range []string{
		"model.device: " + clipped + ": use auto, cpu or cuda",
		`sink.store: store URL "mysql://` + strings.Repeat("x", 72) + `…"`,
		"sink.encoding: " + clipped + ": use json or binary",
		"schedule: " + clipped + " is not a cron schedule",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestAbsentOrNullCountFieldsGetDefaultsAndZeroIsRefused(t *testing.T) {
	base := "name: churn\nsource: {uri: x/*.parquet, key: user_id, features: [f0]}\nmodel:\n  path: m.onnx\n  batch_size: ~\n  workers:\n"
	j, err := Parse([]byte(base), "j.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Model.BatchSize != DefaultBatchSize || j.Model.Workers != runtime.NumCPU() {
		t.Errorf("null batch_size and workers: got %d and %d, want the defaults", j.Model.BatchSize, j.Model.Workers)
	}
	_, err = Parse([]byte(base), "j.yaml", []string{"model.batch_size=0"})
	if err == nil || !strings.Contains(err.Error(), "model.batch_size: 0: use 1 to") {
		t.Errorf("--set model.batch_size=0: got %v, want it refused", err)
	}
}

func TestDemoJobIsValid(t *testing.T) {
	j, err := Load("demo.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(j.Model.Path); err != nil {
		t.Errorf("demo model: %v", err)
	}
}

// FuzzParse: no job file or --set crashes Parse, or takes it long; what it accepts is
// valid. The seeds are every job file here, good and bad (make fuzz runs it).
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	seeds = append(seeds, "demo.yaml", "churn.yaml")
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "model.workers=3")
	}
	f.Fuzz(func(t *testing.T, data []byte, set string) {
		j, err := Parse(data, "fuzz.yaml", []string{set})
		if err == nil {
			if verr := j.Validate(); verr != nil {
				t.Fatalf("Parse accepted a job that Validate rejects: %v", verr)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
	})
}

func TestSinkExportIsValidatedLikeEveryField(t *testing.T) {
	full := filepath.Join("testdata", "full.good.yaml")
	for _, tt := range []struct {
		name string
		sets []string
		want string // "" for no error
	}{
		{"an s3 prefix with options is good", []string{"sink.export=s3://exports/churn?endpoint=http://127.0.0.1:9000&use_path_style=true&region=us-east-1"}, ""},
		{"a gs prefix is good", []string{"sink.export=gs://exports/churn"}, ""},
		{"an azblob prefix is good", []string{"sink.export=azblob://exports"}, ""},
		{"a relative folder from --set stays relative", []string{"sink.export=out/exports"}, ""},
		{"an unknown scheme names the field", []string{"sink.export=ftp://host/x"}, `sink.export: scheme "ftp"`},
		{"an s3 URL without bucket names the field", []string{"sink.export=s3:///x"}, "sink.export: s3:///x: no bucket"},
		{"credentials in the URL are refused without echoing them", []string{"sink.export=s3://AKIA:hunter22@bucket/x"}, "credentials do not go in the URL"},
		{"an export-only store needs no sink.export", []string{"sink.store=parquet:out", "sink.export=elsewhere"}, "sink.export: the store parquet:out is export-only"},
		{"an export-only store takes no increments", []string{"sink.store=parquet:out", "sink.mode=incremental"}, "sink.mode: incremental builds on a live version, which the export-only store parquet:out has not"},
		{"a tiny row group target names the field", []string{"sink.export_row_group_bytes=10"}, "sink.export_row_group_bytes: 10: use 1024"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Load(full, tt.sets)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "hunter22"):
				t.Fatalf("the error shows the secret: %v", err)
			}
			if tt.name == "a relative folder from --set stays relative" && j.Sink.Export != "out/exports" {
				t.Errorf("sink.export: got %q, want out/exports", j.Sink.Export)
			}
		})
	}
}
