package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/deploy/k8s"
	"github.com/staticref/staticref/jobs"
)

func newK8sCmd() *cobra.Command {
	c := group(&cobra.Command{
		Use:   "k8s",
		Short: "Kubernetes manifests for a job",
	})
	c.AddCommand(newK8sRenderCmd())
	return c
}

func newK8sRenderCmd() *cobra.Command {
	var (
		jobFile string
		o       k8s.Options
	)
	c := &cobra.Command{
		Use:   "render --job FILE",
		Short: "Print a CronJob (Indexed Jobs, one shard a pod) and a lookup Deployment as YAML",
		Long: `render prints, as one YAML stream for kubectl apply -f -:
  - a ConfigMap NAME-job holding the job file, mounted at ` + k8s.JobFile + `;
  - a CronJob NAME on the job's schedule (concurrencyPolicy Forbid; a CRON_TZ= prefix
    becomes spec.timeZone) whose Jobs are Indexed: --completions shards, --parallelism
    pods at once, each shard retried --backoff-limit-per-index times. Every pod of one
    Job writes the same version, named after the Job;
  - a ConfigMap NAME-serve, a Deployment NAME-serve running staticref serve with
    /readyz and /healthz probes, and a Service NAME on port 80.
Store credentials come from the Secret --secret (default NAME-store) as environment
variables of every pod; --store may refer to them, as in
redis://:$(REDIS_PASSWORD)@redis:6379/0: Kubernetes expands them in the CronJob's
arguments, and serve expands them in the store URL of its config. A literal password in
--store or in the job's sink.store is refused: the manifests would carry it in plain text.
NAME is the job name when it is a valid Kubernetes name of at most 52 characters;
otherwise it is made one and gets six hex digits of a hash of the job name, so that jobs
a_b, a.b and a-b keep apart.
Object storage needs no volume: with source.uri, model.path (and sink.export) on s3://,
gs:// or azblob://, the pods mount nothing but their ConfigMap. They read the bucket with
keys from the Secret (AWS_ACCESS_KEY_ID…, AZURE_STORAGE_KEY) or, better, by workload
identity: --service-account names the pods' ServiceAccount, and
--service-account-annotation renders it, tied to a cloud identity (EKS IRSA, GKE Workload
Identity); Azure Workload Identity also wants --pod-label azure.workload.identity/use=true.
Schedules with seconds cannot run as a CronJob. Paths in the job file that are local to
this machine, and a pebble: store, draw a warning: the pods do not have them.`,
		Example: `  staticref k8s render --job jobs/churn.yaml --image registry.example.com/staticref:1.4 \
      --completions 8 --parallelism 4 --cpu 2 --memory 4Gi \
      --store 'redis://:$(REDIS_PASSWORD)@redis:6379/0' | kubectl apply -f -

  # shards and model in S3, read by IRSA: no volume, no keys
  staticref k8s render --job deploy/k8s/churn-s3.yaml --image registry.example.com/staticref:1.4 \
      --store 'redis://:$(REDIS_PASSWORD)@redis:6379/0' \
      --service-account-annotation eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/churn`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := requireFlags(c, "job"); err != nil {
				return err
			}
			job, err := jobs.Load(jobFile, nil)
			if err != nil {
				return usageError{err} // as with run: a job file that cannot be read is bad usage
			}
			if o.JobYAML, err = os.ReadFile(jobFile); err != nil {
				return err
			}
			o.Job = job
			if err := o.Validate(); err != nil {
				return usageError{err}
			}
			for _, w := range o.Warnings() {
				fmt.Fprintf(c.ErrOrStderr(), "staticref: warning: %s\n", w)
			}
			if err := k8s.Render(c.OutOrStdout(), o); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&jobFile, "job", "", "job file (YAML)")
	f.StringVar(&o.Image, "image", k8s.DefaultImage, "container image (see deploy/Dockerfile)")
	f.StringVarP(&o.Namespace, "namespace", "n", "", "Kubernetes namespace of the objects")
	f.Int32Var(&o.Parallelism, "parallelism", 1, "pods of one run at once")
	f.Int32Var(&o.Completions, "completions", 1, "shards of one run (one pod each)")
	f.Int32Var(&o.BackoffLimitPerIndex, "backoff-limit-per-index", 3, "retries of one shard")
	f.StringVar(&o.CPU, "cpu", "", "CPU request per pod (2, 500m)")
	f.StringVar(&o.Memory, "memory", "", "memory request and limit per pod (4Gi)")
	f.StringVar(&o.Store, "store", "", "store URL for the pods, overriding sink.store; may use $(VAR) from the secret")
	f.StringVar(&o.Secret, "secret", "", "Secret with store credentials, as environment variables (default NAME-store)")
	f.Int32Var(&o.ServeReplicas, "serve-replicas", 2, "replicas of the lookup Deployment")
	f.StringVar(&o.ServiceAccount, "service-account", "", "service account of every pod, for workload identity (default NAME with --service-account-annotation)")
	f.StringToStringVar(&o.ServiceAccountAnnotations, "service-account-annotation", nil,
		"render the ServiceAccount with this annotation, KEY=VALUE, repeatable (eks.amazonaws.com/role-arn=…, iam.gke.io/gcp-service-account=…)")
	f.StringToStringVar(&o.PodLabels, "pod-label", nil, "label every pod, KEY=VALUE, repeatable (azure.workload.identity/use=true)")
	return c
}
