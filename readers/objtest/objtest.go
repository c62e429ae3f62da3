// Package objtest starts real object-store servers for tests: versitygw (S3),
// fake-gcs-server (GCS) and Azurite (Azure Blob), each on a free 127.0.0.1 port, once per
// test binary and shared by its tests; S3, GCS and Azure return the URL of a new, empty
// bucket on it, for gocloud.dev/blob. Call Stop from TestMain after m.Run to stop them
// (they are also killed when the test binary dies). It is for tests only and must never
// be imported by production code.
//
// The servers are found through STATICREF_VERSITYGW, STATICREF_FAKE_GCS and
// STATICREF_AZURITE, else on PATH, else under ~/.cache/staticref-tools (where .ci/run
// installs them). A missing server skips the test, except when CI is "true", where it
// fails it: CI must not go green by testing nothing.
//
// The helpers set the process's environment for the clients (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, STORAGE_EMULATOR_HOST, AZURE_STORAGE_ACCOUNT,
// AZURE_STORAGE_KEY) when a server starts; gcsblob reads STORAGE_EMULATOR_HOST once, at
// the first open, so GCS must be called before any gs:// bucket is opened.
package objtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/s3blob"
)

// Credentials the servers are started with.
const (
	AccessKey = "staticrefaccess"
	SecretKey = "staticref-secret-0123456789"
	// AzureAccount and AzureKey are Azurite's well-known development account.
	AzureAccount = "devstoreaccount1"
	AzureKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

const startTimeout = 15 * time.Second

type server struct {
	once sync.Once
	cmd  *exec.Cmd
	addr string
	dir  string // versitygw's root
	err  error
	skip string // why it cannot run here
}

var (
	s3srv, gcssrv, azsrv server
	buckets              atomic.Int64
)

// Stop stops every server this binary started.
func Stop() {
	for _, s := range []*server{&s3srv, &gcssrv, &azsrv} {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	}
}

// S3 returns s3://BUCKET?endpoint=http://127.0.0.1:P&use_path_style=true&region=us-east-1&response_checksum_validation=when_required
// (an S3-compatible server sends no checksums: without the last, the SDK logs a warning
// per read)
// for a new bucket on a shared versitygw.
func S3(t testing.TB) string {
	t.Helper()
	s := start(t, &s3srv, "versitygw", "STATICREF_VERSITYGW", "bin/versitygw", func(bin string, port int, s *server) []string {
		dir, err := os.MkdirTemp("", "staticref-versitygw-")
		if err != nil {
			s.err = err
			return nil
		}
		s.dir = dir
		os.Setenv("ROOT_ACCESS_KEY_ID", AccessKey)
		os.Setenv("ROOT_SECRET_ACCESS_KEY", SecretKey)
		return []string{bin, "--port", "127.0.0.1:" + strconv.Itoa(port), "--quiet", "posix", dir}
	})
	os.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	name := bucketName()
	if err := os.Mkdir(filepath.Join(s.dir, name), 0o755); err != nil {
		t.Fatalf("objtest: create bucket: %v", err)
	}
	return "s3://" + name + "?" + S3Query(s.addr)
}

// S3Query is the query for an S3 bucket URL served at addr (host:port).
func S3Query(addr string) string {
	return "endpoint=http://" + addr + "&use_path_style=true&region=us-east-1&response_checksum_validation=when_required"
}

// GCS returns gs://BUCKET for a new bucket on a shared fake-gcs-server, with
// STORAGE_EMULATOR_HOST set to it.
func GCS(t testing.TB) string {
	t.Helper()
	s := start(t, &gcssrv, "fake-gcs-server", "STATICREF_FAKE_GCS", "bin/fake-gcs-server", func(bin string, port int, s *server) []string {
		a := "127.0.0.1:" + strconv.Itoa(port)
		return []string{bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-public-host", a, "-external-url", "http://" + a, "-backend", "memory", "-log-level", "error"}
	})
	os.Setenv("STORAGE_EMULATOR_HOST", s.addr)
	name := bucketName()
	body := bytes.NewBufferString(`{"name":"` + name + `"}`)
	resp, err := http.Post("http://"+s.addr+"/storage/v1/b?project=staticref", "application/json", body)
	if err != nil {
		t.Fatalf("objtest: create GCS bucket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("objtest: create GCS bucket: %s", resp.Status)
	}
	return "gs://" + name
}

// Azure returns azblob://CONTAINER?protocol=http&domain=127.0.0.1:P&localemu=true for a
// new container on a shared Azurite, with Azurite's development account in
// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY.
func Azure(t testing.TB) string {
	t.Helper()
	s := start(t, &azsrv, "azurite", "STATICREF_AZURITE", "azurite/node_modules/.bin/azurite", func(bin string, port int, s *server) []string {
		// Blob only would do, but azurite starts all three services: give each a free
		// port, so that nothing collides with a developer's own Azurite.
		return []string{bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
			"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(freePort(t)),
			"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(freePort(t)),
			"--disableTelemetry", "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose"}
	})
	os.Setenv("AZURE_STORAGE_ACCOUNT", AzureAccount)
	os.Setenv("AZURE_STORAGE_KEY", AzureKey)
	u := "azblob://" + bucketName() + "?protocol=http&domain=" + s.addr + "&localemu=true"
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	b, err := blob.OpenBucket(ctx, u)
	if err != nil {
		t.Fatalf("objtest: open Azure container: %v", err)
	}
	defer b.Close()
	var c *container.Client
	if !b.As(&c) {
		t.Fatal("objtest: the azblob bucket gives no *container.Client")
	}
	if _, err := c.Create(ctx, nil); err != nil {
		t.Fatalf("objtest: create Azure container: %v", err)
	}
	return u
}

// Put writes data to key in the bucket at bucketURL.
func Put(t testing.TB, bucketURL, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	b, err := blob.OpenBucket(ctx, bucketURL)
	if err != nil {
		t.Fatalf("objtest: open %s: %v", bucketURL, err)
	}
	defer b.Close()
	if err := b.WriteAll(ctx, key, data, nil); err != nil {
		t.Fatalf("objtest: put %s: %v", key, err)
	}
}

// PutFile copies the local file at path to key.
func PutFile(t testing.TB, bucketURL, key, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	Put(t, bucketURL, key, data)
}

// ObjectURL is the URL of key in the bucket at bucketURL (the bucket's query kept).
func ObjectURL(bucketURL, key string) string {
	base, q := bucketURL, ""
	if i := bytes.IndexByte([]byte(bucketURL), '?'); i >= 0 {
		base, q = bucketURL[:i], bucketURL[i:]
	}
	return base + "/" + key + q
}

func bucketName() string {
	return fmt.Sprintf("staticref%d-%d", os.Getpid(), buckets.Add(1))
}

func start(t testing.TB, s *server, name, env, cached string, argv func(bin string, port int, s *server) []string) *server {
	t.Helper()
	s.once.Do(func() {
		bin := find(name, env, cached)
		if bin == "" {
			s.skip = fmt.Sprintf("%s not found: set %s, put it on PATH or run scripts/test-servers.sh (make test does) to install it", name, env)
			if name == "azurite" {
				if _, err := exec.LookPath("npm"); err != nil {
					s.skip += "; it needs npm: apt-get install npm"
				}
			}
			return
		}
		port := freePort(t)
		args := argv(bin, port, s)
		if s.err != nil {
			return
		}
		s.addr = "127.0.0.1:" + strconv.Itoa(port)
		s.cmd = exec.Command(args[0], args[1:]...)
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := s.cmd.Start(); err != nil {
			s.err = fmt.Errorf("start %s: %w", name, err)
			return
		}
		deadline := time.Now().Add(startTimeout)
		for {
			c, err := net.DialTimeout("tcp", s.addr, time.Second)
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				s.err = fmt.Errorf("%s not listening on %s after %s", name, s.addr, startTimeout)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	if s.skip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("objtest: %s (CI=true: a missing server fails)", s.skip)
		}
		t.Skipf("objtest: %s", s.skip)
	}
	if s.err != nil {
		t.Fatalf("objtest: %v", s.err)
	}
	return s
}

func find(name, env, cached string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if dir, err := os.UserCacheDir(); err == nil {
		p := filepath.Join(dir, "staticref-tools", cached)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("objtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Unreachable returns a loopback host:port on which nothing listens (a port just freed).
func Unreachable(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}
