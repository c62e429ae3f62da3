package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/staticref/staticref/deploy/k8s"
	"github.com/staticref/staticref/lookup"
)

const k8sJob = `name: churn_daily
schedule: "CRON_TZ=Europe/Berlin 0 2 * * *"
source: {uri: features/*.parquet, key: user_id, features: [f0, f1]}
model: {path: models/churn.onnx}
sink: {store: "redis://redis:6379/0", namespace: churn}
`

// renderK8s runs k8s render and decodes its four kinds of object strictly.
func renderK8s(t *testing.T, job string, flags ...string) (cj batchv1.CronJob, dep appsv1.Deployment, svc corev1.Service, cms map[string]corev1.ConfigMap) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "churn.yaml")
	if err := os.WriteFile(file, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := staticref(t, append([]string{"k8s", "render", "--job", file}, flags...)...)
	if code != 0 {
		t.Fatalf("k8s render: exit %d: %s", code, stderr)
	}
	cms = map[string]corev1.ConfigMap{}
	for _, doc := range strings.Split(out, "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document: %v\n%s", err, doc)
		}
		var err error
		switch meta.Kind {
		case "CronJob":
			err = yaml.UnmarshalStrict([]byte(doc), &cj)
		case "Deployment":
			err = yaml.UnmarshalStrict([]byte(doc), &dep)
		case "Service":
			err = yaml.UnmarshalStrict([]byte(doc), &svc)
		case "ConfigMap":
			var cm corev1.ConfigMap
			err = yaml.UnmarshalStrict([]byte(doc), &cm)
			cms[cm.Name] = cm
		default:
			t.Fatalf("unexpected kind %q", meta.Kind)
		}
		if err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", meta.Kind, err, doc)
		}
	}
	return cj, dep, svc, cms
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func TestK8sRenderPrintsACronJobOfIndexedJobsAndALookupDeployment(t *testing.T) {
	cj, dep, svc, cms := renderK8s(t, k8sJob, "--image", "reg.example/staticref:1.4", "--completions", "8", "--parallelism", "4",
		"--cpu", "2", "--memory", "4Gi", "--store", "redis://:$(REDIS_PASSWORD)@redis:6379/0")

	t.Run("the CronJob runs on the job's schedule, in its time zone, never overlapping", func(t *testing.T) {
		s := cj.Spec
		// churn_daily is no Kubernetes name: made one, it gets a hash of the job name, so
		// that a job churn-daily would not share its objects.
		if cj.Name != "churn-daily-cf9b2a" || s.Schedule != "0 2 * * *" || s.TimeZone == nil || *s.TimeZone != "Europe/Berlin" {
			t.Errorf("got name %q schedule %q tz %v, want churn-daily-cf9b2a, 0 2 * * *, Europe/Berlin", cj.Name, s.Schedule, s.TimeZone)
		}
		if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			t.Errorf("concurrencyPolicy: got %q, want Forbid", s.ConcurrencyPolicy)
		}
	})

	job := cj.Spec.JobTemplate.Spec
	pod := job.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("containers: got %d, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	t.Run("its Jobs are Indexed, one shard a completion", func(t *testing.T) {
		if job.CompletionMode == nil || *job.CompletionMode != batchv1.IndexedCompletion {
			t.Errorf("completionMode: got %v, want Indexed", job.CompletionMode)
		}
		if *job.Completions != 8 || *job.Parallelism != 4 || job.BackoffLimitPerIndex == nil || *job.BackoffLimitPerIndex != 3 {
			t.Errorf("completions/parallelism/backoffLimitPerIndex: got %d/%d/%v, want 8/4/3", *job.Completions, *job.Parallelism, job.BackoffLimitPerIndex)
		}
		if pod.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("restartPolicy: got %q, want Never (backoffLimitPerIndex needs it)", pod.RestartPolicy)
		}
		if e := env(c, "STATICREF_SHARD_COUNT"); e == nil || e.Value != "8" {
			t.Errorf("STATICREF_SHARD_COUNT: got %v, want 8", e)
		}
	})

	t.Run("every pod of a Job writes the version named after the Job", func(t *testing.T) {
		want := []string{"run", "--job", "/etc/staticref/job.yaml", "--k8s-job", "$(STATICREF_JOB_NAME)", "--store", "redis://:$(REDIS_PASSWORD)@redis:6379/0"}
		if !slices.Equal(c.Args, want) {
			t.Errorf("args: got %q, want %q", c.Args, want)
		}
		e := env(c, "STATICREF_JOB_NAME")
		if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.labels['batch.kubernetes.io/job-name']" {
			t.Errorf("STATICREF_JOB_NAME: got %+v, want the job-name label through the downward API", e)
		}
		for job, want := range map[string]string{
			"churn-29407680":        "20251130T000000Z", // a CronJob's Job: minute 29407680 of the epoch (date -u -d @1764460800)
			"churn-manual-x7":       "churn-manual-x7",  // a Job made by hand: its name
			"churn-scores-29407681": "20251130T000100Z",
		} {
			if got := k8s.VersionID(job); got != want {
				t.Errorf("VersionID(%q): got %q, want %q", job, got, want)
			}
		}
	})

	t.Run("the pod has resources, the ONNX Runtime library, secrets by reference and the job file", func(t *testing.T) {
		if got := c.Resources.Requests.Cpu().String(); got != "2" {
			t.Errorf("cpu request: got %s, want 2", got)
		}
		if got := c.Resources.Limits.Memory().String(); got != "4Gi" {
			t.Errorf("memory limit: got %s, want 4Gi", got)
		}
		if e := env(c, "STATICREF_ORT_LIB"); e == nil || !strings.HasSuffix(e.Value, "libonnxruntime.so") {
			t.Errorf("STATICREF_ORT_LIB: got %v", e)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "churn-daily-cf9b2a-store" {
			t.Errorf("envFrom: got %+v, want secretRef churn-daily-cf9b2a-store", c.EnvFrom)
		}
		if c.Image != "reg.example/staticref:1.4" {
			t.Errorf("image: got %q", c.Image)
		}
		if len(pod.Volumes) != 1 || pod.Volumes[0].ConfigMap == nil || pod.Volumes[0].ConfigMap.Name != "churn-daily-cf9b2a-job" {
			t.Fatalf("volumes: got %+v, want the job ConfigMap", pod.Volumes)
		}
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/staticref" {
			t.Errorf("mounts: got %+v", c.VolumeMounts)
		}
		if got := cms["churn-daily-cf9b2a-job"].Data["job.yaml"]; got != k8sJob {
			t.Errorf("job ConfigMap: got %q, want the file as written", got)
		}
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("pod security context: got %+v, want runAsNonRoot", sc)
		}
	})

	t.Run("the lookup Deployment has probes and a Service in front", func(t *testing.T) {
		if *dep.Spec.Replicas != 2 || len(dep.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("deployment: got %+v", dep.Spec)
		}
		sc := dep.Spec.Template.Spec.Containers[0]
		if sc.Args[0] != "serve" || sc.ReadinessProbe.HTTPGet.Path != "/readyz" || sc.LivenessProbe.HTTPGet.Path != "/healthz" {
			t.Errorf("serve container: args %q readiness %s liveness %s", sc.Args, sc.ReadinessProbe.HTTPGet.Path, sc.LivenessProbe.HTTPGet.Path)
		}
		for k, v := range dep.Spec.Selector.MatchLabels {
			if dep.Spec.Template.Labels[k] != v || svc.Spec.Selector[k] != v {
				t.Errorf("label %s=%s: not on the pods or the Service selector", k, v)
			}
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "http" {
			t.Errorf("service ports: got %+v", svc.Spec.Ports)
		}
		serve := cms["churn-daily-cf9b2a-serve"].Data["serve.yaml"]
		if !strings.Contains(serve, "churn:") || !strings.Contains(serve, "$(REDIS_PASSWORD)") {
			t.Errorf("serve config: got %q, want namespace churn on the --store URL", serve)
		}
	})

	t.Run("the lookup pods get the store's Secret as the batch pods do, and serve expands it", func(t *testing.T) {
		sc := dep.Spec.Template.Spec.Containers[0]
		if !reflect.DeepEqual(sc.EnvFrom, c.EnvFrom) {
			t.Errorf("envFrom: got %+v, want the CronJob's %+v", sc.EnvFrom, c.EnvFrom)
		}
		t.Setenv("REDIS_PASSWORD", "hunter2")
		cfg, err := lookup.ParseConfig([]byte(cms["churn-daily-cf9b2a-serve"].Data["serve.yaml"]), k8s.ServeConfig)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cfg.Namespaces["churn"].Store, "redis://:hunter2@redis:6379/0"; got != want {
			t.Errorf("store: got %q, want %q", got, want)
		}
	})
}

func TestK8sRenderWarnsOfWhatThePodsDoNotHave(t *testing.T) {
	for _, tc := range []struct {
		name, source, model, sink string
		flags                     []string
		want                      []string // warnings, in order
	}{
		{
			name: "paths relative to the job file and a pebble sink", source: "features/*.parquet", model: "models/churn.onnx", sink: "pebble:store",
			want: []string{
				"source.uri features/*.parquet is relative to the job file: in the pods that is /etc/staticref/features/*.parquet",
				"model.path models/churn.onnx is relative to the job file: in the pods that is /etc/staticref/models/churn.onnx",
				"sink.store pebble:",
			},
		},
		{
			name: "absolute paths and a pebble --store", source: "/data/features/*.parquet", model: "/models/churn.onnx", sink: "redis://redis:6379/0",
			flags: []string{"--store", "pebble:///var/lib/staticref"},
			want: []string{
				"source.uri /data/features/*.parquet is a local path: the pods have it only if a volume is mounted there",
				"model.path /models/churn.onnx is a local path",
				"--store pebble:///var/lib/staticref is an embedded store on local disk",
			},
		},
		{
			name: "a local export", source: "s3://b/features/*.parquet", model: "s3://b/m.onnx", sink: "redis://redis:6379/0\", export: \"exports",
			want: []string{"sink.export exports is relative to the job file"},
		},
		{
			name: "a local parquet store", source: "s3://b/features/*.parquet", model: "s3://b/m.onnx", sink: "parquet:out",
			want: []string{"sink.store parquet:/"},
		},
		{
			name: "a pebble sink replaced by --store redis", source: "gs://bucket/features/*.parquet", model: "/models/churn.onnx", sink: "pebble:store",
			flags: []string{"--store", "redis://redis:6379/0"},
			want:  []string{"model.path /models/churn.onnx is a local path"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := "name: churn\nschedule: \"@daily\"\nsource: {uri: \"" + tc.source + "\", key: user_id, features: [f0]}\nmodel: {path: " + tc.model + "}\nsink: {store: \"" + tc.sink + "\"}\n"
			file := filepath.Join(t.TempDir(), "churn.yaml")
			os.WriteFile(file, []byte(job), 0o644)
			code, out, stderr := staticref(t, append([]string{"k8s", "render", "--job", file}, tc.flags...)...)
			if code != 0 || !strings.Contains(out, "kind: CronJob") {
				t.Fatalf("got exit %d, %s; want the manifests despite warnings", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(lines), len(tc.want), stderr)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(lines[i], "staticref: warning: "+want) {
					t.Errorf("warning %d: got %q, want it to begin %q", i, lines[i], want)
				}
			}
		})
	}
}

func TestK8sRenderRefusesWhatACronJobCannotRun(t *testing.T) {
	for _, tc := range []struct{ name, schedule, flag, want string }{
		{"a schedule with seconds", `"*/30 * * * * *"`, "", "no seconds"},
		{"an @every schedule", `"@every 1h"`, "", "@every"},
		{"no schedule", `""`, "", `the job has no "schedule" field: a CronJob needs one (add schedule: "0 2 * * *"`},
		{"a bad quantity", `"@daily"`, "--memory=lots", "--memory"},
		{"a literal password in --store", `"@daily"`, "--store=redis://:hunter2@redis:6379/0",
			"--store redis://:xxxxx@redis:6379/0: the manifests would show it to anyone who can read the ConfigMaps or the CronJob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "j.yaml")
			job := strings.Replace(k8sJob, `"CRON_TZ=Europe/Berlin 0 2 * * *"`, tc.schedule, 1)
			os.WriteFile(file, []byte(job), 0o644)
			a := []string{"k8s", "render", "--job", file}
			if tc.flag != "" {
				a = append(a, tc.flag)
			}
			code, _, stderr := staticref(t, a...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("got exit %d %q, want 2 mentioning %q", code, stderr, tc.want)
			}
		})
	}
}

// A job whose shards and model sit in a bucket needs no volume: its pods mount only their
// ConfigMap and read the bucket by workload identity, through the ServiceAccount.
func TestK8sRenderOfAnObjectStoreJobNeedsNoVolume(t *testing.T) {
	const job = `name: churn
schedule: "0 2 * * *"
source: {uri: "s3://lake/features/churn/dt=2026-11-*/*.parquet?region=eu-west-1", key: user_id, features: [f0, f1]}
model: {path: "s3://lake/models/churn.onnx?region=eu-west-1"}
sink: {store: "redis://redis:6379/0", namespace: churn}
`
	file := filepath.Join(t.TempDir(), "churn.yaml")
	if err := os.WriteFile(file, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	const role = "arn:aws:iam::123456789012:role/churn"
	code, out, stderr := staticref(t, "k8s", "render", "--job", file,
		"--service-account-annotation", "eks.amazonaws.com/role-arn="+role,
		"--pod-label", "azure.workload.identity/use=true")
	if code != 0 {
		t.Fatalf("k8s render: exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("want no warnings for a job on object storage, got:\n%s", stderr)
	}
	var (
		sa  corev1.ServiceAccount
		cj  batchv1.CronJob
		dep appsv1.Deployment
	)
	kinds := map[string]int{}
	for _, doc := range strings.Split(out, "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		kinds[meta.Kind]++
		var err error
		switch meta.Kind {
		case "ServiceAccount":
			err = yaml.UnmarshalStrict([]byte(doc), &sa)
		case "CronJob":
			err = yaml.UnmarshalStrict([]byte(doc), &cj)
		case "Deployment":
			err = yaml.UnmarshalStrict([]byte(doc), &dep)
		}
		if err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
	if want := map[string]int{"ServiceAccount": 1, "ConfigMap": 2, "CronJob": 1, "Deployment": 1, "Service": 1}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("kinds: got %v, want %v", kinds, want)
	}
	if sa.Name != "churn" || sa.Annotations["eks.amazonaws.com/role-arn"] != role {
		t.Errorf("ServiceAccount: got %s %v, want churn annotated with the role", sa.Name, sa.Annotations)
	}
	for _, pod := range []struct {
		what string
		spec corev1.PodSpec
		meta map[string]string
	}{
		{"batch pod", cj.Spec.JobTemplate.Spec.Template.Spec, cj.Spec.JobTemplate.Spec.Template.Labels},
		{"serve pod", dep.Spec.Template.Spec, dep.Spec.Template.Labels},
	} {
		if pod.spec.ServiceAccountName != "churn" {
			t.Errorf("%s: serviceAccountName %q, want churn", pod.what, pod.spec.ServiceAccountName)
		}
		if len(pod.spec.Volumes) != 1 || pod.spec.Volumes[0].ConfigMap == nil {
			t.Errorf("%s: volumes %+v, want only its ConfigMap", pod.what, pod.spec.Volumes)
		}
		if mounts := pod.spec.Containers[0].VolumeMounts; len(mounts) != 1 || mounts[0].MountPath != k8s.ConfigDir {
			t.Errorf("%s: mounts %+v, want only %s", pod.what, mounts, k8s.ConfigDir)
		}
		if pod.meta["azure.workload.identity/use"] != "true" || pod.meta["app.kubernetes.io/name"] != "staticref" {
			t.Errorf("%s: labels %v, want the pod label beside the own ones", pod.what, pod.meta)
		}
	}
	if cj.Spec.JobTemplate.Spec.Selector != nil {
		t.Errorf("the Job's selector is Kubernetes' to set")
	}

	t.Run("an existing ServiceAccount is referred to, not rendered", func(t *testing.T) {
		code, out, stderr := staticref(t, "k8s", "render", "--job", file, "--service-account", "lake-reader")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if strings.Contains(out, "kind: ServiceAccount") || strings.Count(out, "serviceAccountName: lake-reader") != 2 {
			t.Errorf("want both pods on lake-reader and no ServiceAccount object:\n%s", out)
		}
	})
	t.Run("a bad name or label is bad usage naming the flag", func(t *testing.T) {
		for _, tc := range []struct{ flag, want string }{
			{"--service-account=Lake_Reader", `--service-account "Lake_Reader"`},
			{"--pod-label=team=a b", `--pod-label team="a b": the value`},
			{"--service-account-annotation=bad key=1", `--service-account-annotation "bad key"`},
		} {
			code, _, stderr := staticref(t, "k8s", "render", "--job", file, tc.flag)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("%s: got exit %d, %q; want 2 naming %s", tc.flag, code, stderr, tc.want)
			}
		}
	})
}
