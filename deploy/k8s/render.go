// Package k8s renders Kubernetes manifests for a staticref job: a CronJob whose Jobs are
// Indexed (one shard of the run per completion index), the ConfigMap holding the job
// file, and a Deployment and Service for the lookup service.
//
// It only produces YAML from a job file and options; it never talks to a cluster.
//
// # One version per Job
//
// All pods of one Job must write the same version, or each shard would start its own.
// Pods share nothing but the Job's name, so the version id comes from it: the downward
// API puts the pod's batch.kubernetes.io/job-name label in STATICREF_JOB_NAME, and the
// container runs `staticref run --k8s-job $(STATICREF_JOB_NAME)`. A CronJob names its
// Jobs NAME-<scheduled minutes since the epoch>; VersionID turns that into the id of
// the scheduled time (20261127T020000Z), so versions sort by time like any other run's,
// and a retried pod resumes the same version. The shard comes from
// JOB_COMPLETION_INDEX (set by Kubernetes for Indexed Jobs) and STATICREF_SHARD_COUNT.
package k8s

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/writers"
)

// Paths and names inside the image and the pods.
const (
	// ORTLib is where deploy/Dockerfile puts libonnxruntime.so.
	ORTLib = "/usr/local/lib/staticref/libonnxruntime.so"
	// ConfigDir is where the job file and the serve config are mounted.
	ConfigDir = "/etc/staticref"
	// JobFile is the job file's path in a batch pod.
	JobFile = ConfigDir + "/job.yaml"
	// ServeConfig is the lookup service config's path in a serve pod.
	ServeConfig = ConfigDir + "/serve.yaml"
	// JobNameLabel is the label Kubernetes puts on a Job's pods.
	JobNameLabel = "batch.kubernetes.io/job-name"

	servePort = 8080
	uid       = 10001 // the image's non-root user
)

// Options are what a render needs besides the job.
type Options struct {
	Job     *jobs.Job // loaded with jobs.Load; its name, schedule, namespace and store are used
	JobYAML []byte    // the job file as written, for the ConfigMap

	Image       string // default DefaultImage
	Namespace   string // Kubernetes namespace; "" leaves it to kubectl
	Parallelism int32  // pods at once (default 1)
	Completions int32  // shards (default 1)
	// BackoffLimitPerIndex is how often one shard is retried (default 3).
	BackoffLimitPerIndex int32
	CPU, Memory          string // per pod requests (memory is also the limit); "" for none
	// Store, when set, is passed as --store: it may name variables from the secret, as in
	// redis://:$(REDIS_PASSWORD)@redis:6379/0, which Kubernetes expands.
	Store string
	// Secret is the Secret every container takes its environment from (store
	// credentials); default NAME-store. It is optional: a missing Secret is no error.
	Secret        string
	ServeReplicas int32 // default 2
	// ServiceAccount is the Kubernetes service account of every pod: the way a pod reads
	// S3, GCS or Azure without keys in a Secret (workload identity). "" leaves the
	// namespace's default, or NAME when ServiceAccountAnnotations is set.
	ServiceAccount string
	// ServiceAccountAnnotations, when set, renders the ServiceAccount with them: the
	// annotation is what ties it to a cloud identity, e.g.
	// eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/churn (EKS IRSA) or
	// iam.gke.io/gcp-service-account=churn@PROJECT.iam.gserviceaccount.com (GKE Workload
	// Identity). Without them an existing ServiceAccount is only referred to.
	ServiceAccountAnnotations map[string]string
	// PodLabels are added to every pod, e.g. azure.workload.identity/use=true, which
	// Azure Workload Identity needs on the pod besides the annotated ServiceAccount.
	PodLabels map[string]string
}

// DefaultImage is the image used without --image.
const DefaultImage = "ghcr.io/staticref/staticref:latest"

// ErrSchedule is wrapped by errors about a schedule Kubernetes cannot run.
var ErrSchedule = errors.New("k8s: schedule not supported by CronJob")

// ErrNoSchedule is the error of a job without a schedule. It wraps ErrSchedule.
var ErrNoSchedule error = noSchedule{}

type noSchedule struct{}

func (noSchedule) Error() string {
	return `k8s: the job has no "schedule" field: a CronJob needs one (add schedule: "0 2 * * *" to the job file)`
}

func (noSchedule) Unwrap() error { return ErrSchedule }

var dnsUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// MaxName is the longest Name: a CronJob's Jobs are named NAME-<11 digits>, which must
// fit in 63 characters.
const MaxName = 52

// Name is the Kubernetes name of a job's objects: the job name as an RFC 1035 label
// (what a Service name must be: a-z, 0-9 and '-', starting with a letter), at most
// MaxName characters. A job name that is one already is its own name. Any other is made
// one ('_' and '.' become '-', a "job-" prefix goes before a digit, the end is cut) and
// gets "-" and six hex digits of the SHA-256 of the job name: jobs a_b, a.b and a-b, or
// two long names that differ only past the cut, would otherwise share their objects.
func Name(job string) string {
	n := strings.Trim(dnsUnsafe.ReplaceAllString(strings.ToLower(job), "-"), "-")
	if n != "" && n[0] >= '0' && n[0] <= '9' {
		n = "job-" + n
	}
	if n == job && len(n) <= MaxName {
		return n
	}
	sum := sha256.Sum256([]byte(job))
	suffix := "-" + hex.EncodeToString(sum[:3])
	if n == "" {
		n = "job"
	}
	if len(n) > MaxName-len(suffix) {
		n = strings.TrimRight(n[:MaxName-len(suffix)], "-")
	}
	return n + suffix
}

// ErrLiteralPassword is wrapped by the error of a render whose store URL holds a
// password: the manifests would carry it in plain text, in a ConfigMap and in the
// CronJob's arguments, for anyone who may read them.
var ErrLiteralPassword = errors.New("k8s: a literal password in a store URL")

// checkSecrets refuses a store URL that would put a password into the manifests: the
// job file's sink.store (the job ConfigMap holds the file as written, and serve's
// ConfigMap the URL) and --store (the CronJob's arguments, serve's ConfigMap). A
// password made only of $(VAR) or ${VAR} references is no secret: the pods expand it
// from the Secret.
func (o *Options) checkSecrets(secret string) error {
	var errs []error
	for _, u := range []struct{ field, url, fix string }{
		{"--store", o.Store, "pass --store '%s' instead"},
		{"sink.store", o.Job.Sink.Store, "leave the password out of sink.store and pass --store '%s'"},
	} {
		if !literalPassword(u.url) {
			continue
		}
		errs = append(errs, fmt.Errorf("%w: %s %s: the manifests would show it to anyone who can read the ConfigMaps or the CronJob; "+
			"put it in the Secret %s (kubectl create secret generic %s --from-literal=REDIS_PASSWORD=…), "+u.fix+
			": Kubernetes expands $(VAR) in the CronJob's arguments, and serve expands $(VAR) and ${VAR} in its config",
			ErrLiteralPassword, u.field, writers.RedactURL(u.url), secret, secret, withReference(u.url)))
	}
	return errors.Join(errs...)
}

// envRef is a $(VAR) or ${VAR} reference, as serve's config and Kubernetes expand them.
var envRef = regexp.MustCompile(`\$\([A-Za-z_][A-Za-z0-9_.-]*\)|\$\{[A-Za-z_][A-Za-z0-9_.-]*\}`)

// literalPassword reports whether a store URL's user:password@ part has a password with
// anything in it besides environment variable references.
func literalPassword(url string) bool {
	_, pw, ok := password(url)
	return ok && envRef.ReplaceAllString(pw, "") != ""
}

// password splits SCHEME://user:password@host… at the userinfo's last '@' before any
// query, as writers reads it; ok is false without a password.
func password(url string) (head, pw string, ok bool) {
	scheme, rest, found := strings.Cut(url, "://")
	if !found {
		return "", "", false
	}
	h := rest
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		h = rest[:q]
	}
	at := strings.LastIndexByte(h, '@')
	if at < 0 {
		return "", "", false
	}
	user, pw, found := strings.Cut(rest[:at], ":")
	if !found || pw == "" {
		return "", "", false
	}
	return scheme + "://" + user + ":", pw, true
}

// withReference is url with its password replaced by $(REDIS_PASSWORD), the form the
// error suggests.
func withReference(url string) string {
	head, pw, ok := password(url)
	if !ok {
		return url
	}
	return head + "$(REDIS_PASSWORD)" + strings.TrimPrefix(url, head+pw)
}

// Schedule turns a job schedule into a CronJob's schedule and timeZone. CronJob takes
// five fields or a descriptor, and its time zone in a field of its own.
func Schedule(spec string) (schedule string, timeZone *string, err error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return "", nil, ErrNoSchedule
	}
	for _, prefix := range []string{"CRON_TZ=", "TZ="} {
		if rest, ok := strings.CutPrefix(spec, prefix); ok {
			tz, s, _ := strings.Cut(rest, " ")
			timeZone, spec = &tz, strings.TrimSpace(s)
			break
		}
	}
	if strings.HasPrefix(spec, "@") {
		switch spec {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
			return spec, timeZone, nil
		}
		return "", nil, fmt.Errorf("%w: %q: use five cron fields or @yearly, @monthly, @weekly, @daily or @hourly", ErrSchedule, spec)
	}
	if n := len(strings.Fields(spec)); n != 5 {
		return "", nil, fmt.Errorf("%w: %q has %d fields: CronJob takes five (minute hour day month weekday), no seconds", ErrSchedule, spec, n)
	}
	return spec, timeZone, nil
}

// Render writes the manifests as one YAML stream: ConfigMaps, the CronJob, the
// Deployment and the Service.
func Render(w io.Writer, o Options) error {
	if o.Job == nil {
		return errors.New("k8s: no job")
	}
	schedule, tz, err := Schedule(o.Job.Schedule)
	if err != nil {
		return err
	}
	o.defaults()
	if err := o.checkSecrets(o.Secret); err != nil {
		return err
	}
	name := Name(o.Job.Name)
	var objs []any
	if len(o.ServiceAccountAnnotations) > 0 {
		objs = append(objs, o.serviceAccount())
	}
	objs = append(objs,
		o.jobConfigMap(name),
		o.cronJob(name, schedule, tz),
		o.serveConfigMap(name),
		o.deployment(name),
		o.service(name),
	)
	var buf bytes.Buffer
	for i, obj := range objs {
		data, err := yaml.Marshal(obj)
		if err != nil {
			return fmt.Errorf("render: %w", err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(data)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// Warnings are what a render cannot check but a pod will trip on: paths in the job file
// that are local to the machine rendering it, and an embedded pebble: store, which a pod
// has on its own disk only. Each names the field and what to do; none stops a render.
func (o *Options) Warnings() []string {
	if o.Job == nil {
		return nil
	}
	// The job file as written: the loaded job's relative paths are already this
	// machine's, and the pods get the file as written.
	var written struct {
		Source struct {
			URI string `json:"uri"`
		} `json:"source"`
		Model struct {
			Path string `json:"path"`
		} `json:"model"`
		Sink struct {
			Export string `json:"export"`
		} `json:"sink"`
	}
	_ = yaml.Unmarshal(o.JobYAML, &written) // jobs.Load has read it already
	var w []string
	for _, f := range []struct{ field, path string }{
		{"source.uri", written.Source.URI},
		{"model.path", written.Model.Path},
		{"sink.export", written.Sink.Export},
	} {
		switch {
		case f.path == "" || strings.Contains(f.path, "://"):
		case path.IsAbs(f.path):
			w = append(w, fmt.Sprintf("%s %s is a local path: the pods have it only if a volume is mounted there", f.field, f.path))
		default:
			w = append(w, fmt.Sprintf("%s %s is relative to the job file: in the pods that is %s, where only the job file is mounted; use a path on a mounted volume",
				f.field, f.path, path.Join(ConfigDir, f.path)))
		}
	}
	store, field := o.Store, "--store"
	if store == "" {
		store, field = o.Job.Sink.Store, "sink.store"
	}
	switch s, _, _ := strings.Cut(store, ":"); {
	case strings.EqualFold(s, "pebble"):
		w = append(w, fmt.Sprintf("%s %s is an embedded store on local disk: each pod would write and serve its own, lost with the pod; pass --store redis://… or bigtable://…",
			field, store))
	case strings.EqualFold(s, "parquet"):
		w = append(w, fmt.Sprintf("%s %s is an export on local disk: each pod would write its own, lost with the pod; pass --store parquet+s3://…, parquet+gs://… or parquet+azblob://…",
			field, store))
	}
	return w
}

func (o *Options) defaults() {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Parallelism < 1 {
		o.Parallelism = 1
	}
	if o.Completions < 1 {
		o.Completions = 1
	}
	if o.BackoffLimitPerIndex < 1 {
		o.BackoffLimitPerIndex = 3
	}
	if o.Secret == "" {
		o.Secret = Name(o.Job.Name) + "-store"
	}
	if o.ServeReplicas < 1 {
		o.ServeReplicas = 2
	}
	if o.ServiceAccount == "" && len(o.ServiceAccountAnnotations) > 0 {
		o.ServiceAccount = Name(o.Job.Name)
	}
}

// podLabels are the labels of a pod of component: the objects' own, then PodLabels.
func (o *Options) podLabels(component string) map[string]string {
	l := o.labels(component)
	for k, v := range o.PodLabels {
		if _, own := l[k]; !own {
			l[k] = v
		}
	}
	return l
}

func (o *Options) serviceAccount() *corev1.ServiceAccount {
	meta := o.meta(o.ServiceAccount, "identity")
	meta.Annotations = o.ServiceAccountAnnotations
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: meta,
	}
}

func (o *Options) meta(name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: o.labels(component)}
}

func (o *Options) labels(component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "staticref",
		"app.kubernetes.io/instance":  Name(o.Job.Name),
		"app.kubernetes.io/component": component,
	}
}

func (o *Options) jobConfigMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: o.meta(name+"-job", "batch"),
		Data:       map[string]string{"job.yaml": string(o.JobYAML)},
	}
}

func (o *Options) serveConfigMap(name string) *corev1.ConfigMap {
	ns := o.Job.Sink.Namespace
	if ns == "" {
		ns = o.Job.Name
	}
	store := o.Store
	if store == "" {
		store = o.Job.Sink.Store
	}
	cfg := fmt.Sprintf("addr: \":%d\"\nnamespaces:\n  %s:\n    store: %q\n", servePort, ns, store)
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: o.meta(name+"-serve", "serve"),
		Data:       map[string]string{"serve.yaml": cfg},
	}
}

func (o *Options) resources() corev1.ResourceRequirements {
	var r corev1.ResourceRequirements
	if o.CPU == "" && o.Memory == "" {
		return r
	}
	r.Requests = corev1.ResourceList{}
	if o.CPU != "" {
		r.Requests[corev1.ResourceCPU] = resource.MustParse(o.CPU)
	}
	if o.Memory != "" {
		m := resource.MustParse(o.Memory)
		r.Requests[corev1.ResourceMemory] = m
		r.Limits = corev1.ResourceList{corev1.ResourceMemory: m}
	}
	return r
}

// Validate checks the options a user types (quantities), all at once.
func (o *Options) Validate() error {
	var errs []error
	for flag, q := range map[string]string{"cpu": o.CPU, "memory": o.Memory} {
		if q == "" {
			continue
		}
		if _, err := resource.ParseQuantity(q); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: use a Kubernetes quantity such as 2, 500m or 4Gi", flag, q))
		}
	}
	if o.Parallelism < 0 || o.Completions < 0 {
		errs = append(errs, errors.New("--parallelism and --completions must be positive"))
	}
	if o.Parallelism > o.Completions && o.Completions > 0 {
		errs = append(errs, fmt.Errorf("--parallelism %d exceeds --completions %d: the extra pods would have no shard", o.Parallelism, o.Completions))
	}
	if o.ServiceAccount != "" {
		for _, msg := range validation.IsDNS1123Subdomain(o.ServiceAccount) {
			errs = append(errs, fmt.Errorf("--service-account %q: %s", o.ServiceAccount, msg))
		}
	}
	for _, m := range []struct {
		flag  string
		kv    map[string]string
		label bool
	}{{"--service-account-annotation", o.ServiceAccountAnnotations, false}, {"--pod-label", o.PodLabels, true}} {
		for _, k := range slices.Sorted(maps.Keys(m.kv)) {
			for _, msg := range validation.IsQualifiedName(k) {
				errs = append(errs, fmt.Errorf("%s %q: the key %s", m.flag, k, msg))
			}
			if m.label {
				for _, msg := range validation.IsValidLabelValue(m.kv[k]) {
					errs = append(errs, fmt.Errorf("%s %s=%q: the value %s", m.flag, k, m.kv[k], msg))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (o *Options) envFrom() []corev1.EnvFromSource {
	return []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: o.Secret},
		Optional:             ptr(true),
	}}}
}

func securityContext() (*corev1.PodSecurityContext, *corev1.SecurityContext) {
	return &corev1.PodSecurityContext{
			RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(uid)), RunAsGroup: ptr(int64(uid)), FSGroup: ptr(int64(uid)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}, &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
}

func configVolume(configMap string) corev1.Volume {
	return corev1.Volume{Name: "config", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap}},
	}}
}

var configMount = corev1.VolumeMount{Name: "config", MountPath: ConfigDir, ReadOnly: true}

func (o *Options) cronJob(name, schedule string, tz *string) *batchv1.CronJob {
	args := []string{"run", "--job", JobFile, "--k8s-job", "$(STATICREF_JOB_NAME)"}
	if o.Store != "" {
		args = append(args, "--store", o.Store)
	}
	podSec, sec := securityContext()
	labels := o.labels("batch")
	return &batchv1.CronJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
		ObjectMeta: o.meta(name, "batch"),
		Spec: batchv1.CronJobSpec{
			Schedule:          schedule,
			TimeZone:          tz,
			ConcurrencyPolicy: batchv1.ForbidConcurrent,
			// A run missed by up to an hour (controller down) still starts, once.
			StartingDeadlineSeconds:    ptr(int64(3600)),
			SuccessfulJobsHistoryLimit: ptr(int32(3)),
			FailedJobsHistoryLimit:     ptr(int32(3)),
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: batchv1.JobSpec{
					CompletionMode:       ptr(batchv1.IndexedCompletion),
					Completions:          ptr(o.Completions),
					Parallelism:          ptr(o.Parallelism),
					BackoffLimitPerIndex: ptr(o.BackoffLimitPerIndex),
					PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
						// Exit 2 is bad usage or config: retrying cannot help.
						{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
							ContainerName: ptr("staticref"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{2},
						}},
						// A pod evicted or preempted is not the job's fault.
						{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
							{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue},
						}},
					}},
					TTLSecondsAfterFinished: ptr(int32(7 * 24 * 3600)),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: o.podLabels("batch")},
						Spec: corev1.PodSpec{
							RestartPolicy:      corev1.RestartPolicyNever,
							ServiceAccountName: o.ServiceAccount,
							SecurityContext:    podSec,
							Containers: []corev1.Container{{
								Name:  "staticref",
								Image: o.Image,
								Args:  args,
								Env: []corev1.EnvVar{
									{Name: "STATICREF_JOB_NAME", ValueFrom: &corev1.EnvVarSource{
										FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['" + JobNameLabel + "']"},
									}},
									{Name: "STATICREF_SHARD_COUNT", Value: fmt.Sprint(o.Completions)},
									{Name: "STATICREF_ORT_LIB", Value: ORTLib},
								},
								EnvFrom:         o.envFrom(),
								Resources:       o.resources(),
								VolumeMounts:    []corev1.VolumeMount{configMount},
								SecurityContext: sec,
							}},
							Volumes: []corev1.Volume{configVolume(name + "-job")},
						},
					},
				},
			},
		},
	}
}

func (o *Options) deployment(name string) *appsv1.Deployment {
	podSec, sec := securityContext()
	labels := o.labels("serve")
	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds: period, FailureThreshold: 3,
		}
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: o.meta(name+"-serve", "serve"),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(o.ServeReplicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: o.podLabels("serve"), Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": fmt.Sprint(servePort), "prometheus.io/path": "/metrics",
				}},
				Spec: corev1.PodSpec{
					ServiceAccountName: o.ServiceAccount,
					SecurityContext:    podSec,
					Containers: []corev1.Container{{
						Name:            "staticref",
						Image:           o.Image,
						Args:            []string{"serve", "--config", ServeConfig, "--addr", fmt.Sprintf(":%d", servePort)},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: servePort, Protocol: corev1.ProtocolTCP}},
						Env:             []corev1.EnvVar{{Name: "STATICREF_ORT_LIB", Value: ORTLib}},
						EnvFrom:         o.envFrom(),
						ReadinessProbe:  probe("/readyz", 5),
						LivenessProbe:   probe("/healthz", 10),
						VolumeMounts:    []corev1.VolumeMount{configMount},
						SecurityContext: sec,
					}},
					Volumes: []corev1.Volume{configVolume(name + "-serve")},
				},
			},
		},
	}
}

func (o *Options) service(name string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: o.meta(name, "serve"),
		Spec: corev1.ServiceSpec{
			Selector: o.labels("serve"),
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// VersionID is the version a Kubernetes Job's pods write. A Job a CronJob created is
// named NAME-N, N its scheduled time in minutes since the epoch: the version is that
// time as a version id (20261127T020000Z), so it sorts with every other run's. Any other
// Job name (a Job created by hand) is the version id as it is.
func VersionID(job string) string {
	if i := strings.LastIndexByte(job, '-'); i > 0 {
		if n, err := strconv.ParseInt(job[i+1:], 10, 64); err == nil && n > 0 && n < 1<<40 {
			return time.Unix(n*60, 0).UTC().Format(writers.VersionIDLayout)
		}
	}
	return job
}
