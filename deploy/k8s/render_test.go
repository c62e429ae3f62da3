package k8s

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/staticref/staticref/jobs"
)

// rfc1035 is what a Service name must be.
var rfc1035 = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

func TestNamesAreValidAndUniquePerJob(t *testing.T) {
	long := strings.Repeat("a", 52)
	for _, tc := range []struct{ job, want string }{
		{"churn", "churn"},
		{"a-b", "a-b"},
		{"a_b", "a-b-648fa9"},
		{"a.b", "a-b-2e7336"},
		{"9abc", "job-9abc-e7c517"},
		{long, long},
		{long + "x", strings.Repeat("a", 45) + "-" + hash6(long+"x")},
		{long + "y", strings.Repeat("a", 45) + "-" + hash6(long+"y")},
		{"-", "job-" + hash6("-")},
	} {
		t.Run(tc.job, func(t *testing.T) {
			got := Name(tc.job)
			if got != tc.want {
				t.Errorf("Name(%q): got %q, want %q", tc.job, got, tc.want)
			}
			if len(got) > MaxName || !rfc1035.MatchString(got) {
				t.Errorf("Name(%q) = %q: want an RFC 1035 label of at most %d characters", tc.job, got, MaxName)
			}
		})
	}
	if a, b := Name(long+"x"), Name(long+"y"); a == b {
		t.Errorf("two names that differ past the cut: both %q", a)
	}
}

// hash6 is the suffix a changed name gets: six hex digits of the job name's SHA-256.
func hash6(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:3])
}

func TestRenderRefusesALiteralPasswordInAStoreURL(t *testing.T) {
	job := func(store string) *jobs.Job {
		return &jobs.Job{Name: "churn", Schedule: "@daily", Sink: jobs.Sink{Store: store, Namespace: "churn"}}
	}
	for _, tc := range []struct {
		name       string
		sink, flag string
		want       string // "" for a render
	}{
		{"a password in --store", "redis://redis:6379/0", "redis://:hunter2@redis:6379/0",
			"--store redis://:xxxxx@redis:6379/0: the manifests would show it"},
		{"a password in sink.store", "rediss://app:hunter2@redis:6380/1", "",
			"sink.store rediss://app:xxxxx@redis:6380/1: the manifests would show it"},
		{"a password in sink.store beside a --store reference", "redis://:hunter2@redis:6379/0", "redis://:$(REDIS_PASSWORD)@redis:6379/0",
			"leave the password out of sink.store and pass --store 'redis://:$(REDIS_PASSWORD)@redis:6379/0'"},
		{"a password partly a reference", "redis://redis:6379/0", "redis://:pre$(PW)@redis:6379/0", "--store redis://:xxxxx@"},
		{"$(VAR) in --store", "redis://redis:6379/0", "redis://:$(REDIS_PASSWORD)@redis:6379/0", ""},
		{"${VAR} in sink.store", "redis://u:${REDIS_PASSWORD}@redis:6379/0", "", ""},
		{"a user without a password", "redis://app@redis:6379/0", "", ""},
		{"no userinfo", "bigtable://p/i/t", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Render(&out, Options{Job: job(tc.sink), Store: tc.flag})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a render", err)
				}
				return
			}
			if !errors.Is(err, ErrLiteralPassword) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrLiteralPassword saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") || out.Len() > 0 {
				t.Errorf("the error shows the password or something was rendered: %v", err)
			}
			if !strings.Contains(err.Error(), "kubectl create secret generic churn-store") {
				t.Errorf("got %v, want it to say how to make the Secret", err)
			}
		})
	}
}
