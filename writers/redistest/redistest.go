// Package redistest starts real redis-server processes for tests: a standalone server
// or a three-master Redis Cluster on free loopback ports, each in its own t.TempDir(),
// stopped by t.Cleanup. It is for tests only and must never be imported by production
// code.
//
// When redis-server is not on PATH the helpers skip the test, except in CI (the
// environment variable CI is "true"), where a missing server fails it: CI must not go
// green by testing nothing.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 10 * time.Second

// Server is one redis-server process on a loopback port. Kill and Restart let fault
// tests take it away and bring it back on the same port and directory.
type Server struct {
	t    testing.TB
	port int
	dir  string
	args []string

	mu   sync.Mutex
	proc *os.Process   // nil while stopped
	done chan struct{} // closed when proc has exited
}

// Standalone starts a standalone redis-server without persistence and returns its URL,
// redis://127.0.0.1:PORT/0.
func Standalone(t testing.TB) string {
	t.Helper()
	return start(t, "--save", "", "--appendonly", "no").URL()
}

// StartStandalone starts a standalone redis-server for fault tests and returns its
// handle. It keeps an append-only file (fsync always) in its directory, so data written
// before Kill is still there after Restart, as with a production server that restarts.
func StartStandalone(t testing.TB) *Server {
	t.Helper()
	return start(t, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
}

// Cluster starts a Redis Cluster of three masters and no replicas and returns its URL,
// redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3, once every node reports
// cluster_state:ok.
func Cluster(t testing.TB) string {
	t.Helper()
	cli := lookPath(t, "redis-cli")
	var servers []*Server
	var addrs []string
	for range 3 {
		s := start(t, "--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")
		servers = append(servers, s)
		addrs = append(addrs, s.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range servers {
		for {
			info, err := command(s.Addr(), "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok after %s: %v\n%s", s.Addr(), startTimeout, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return "redis+cluster://" + strings.Join(addrs, ",")
}

// URL is redis://127.0.0.1:PORT/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr is 127.0.0.1:PORT.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Kill stops the server with SIGKILL and waits for it to exit. Killing a stopped server
// does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.done
	s.proc, s.done = nil, nil
}

// Restart starts the server again on the same port and directory (killing it first if
// it runs) and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.launch(); err != nil {
		s.t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr(), err)
	}
}

// start launches redis-server with extra args on a free port, in a new temporary
// directory. Test packages run in parallel and each starts servers, so another process
// may take the port between freePort's probe and the bind: then it tries a fresh port,
// up to three times.
func start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin := lookPath(t, "redis-server")
	var err error
	for range 3 {
		port := freePort(t)
		s := &Server{t: t, port: port, dir: t.TempDir()}
		s.args = append([]string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", s.dir,
			"--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no"}, extra...)
		if err = s.launch(); err == nil {
			t.Cleanup(s.Kill)
			return s
		}
		t.Logf("redistest: redis-server on %s did not start, trying another port: %v", s.Addr(), err)
	}
	t.Fatalf("redistest: start redis-server: %v", err)
	return nil
}

// launch starts the process and waits until it answers PING. A goroutine waits for
// the process, so an early exit (a taken port, a bad flag) is noticed at once.
func (s *Server) launch() error {
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		reply, err := command(s.Addr(), "PING")
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited: %s\n%s", out.Bytes(), log)
		default:
		}
		if err == nil && reply == "PONG" && s.answeredBy(cmd.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("no answer after %s: %v\n%s%s", startTimeout, err, out.Bytes(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.proc, s.done = cmd.Process, done
	s.mu.Unlock()
	return nil
}

// answeredBy says whether the server on s's port is the process pid, not another test
// process's server that took the port first (ours then exits, maybe only after a PONG).
func (s *Server) answeredBy(pid int) bool {
	info, err := command(s.Addr(), "INFO", "server")
	return err == nil && strings.Contains(info, "process_id:"+strconv.Itoa(pid)+"\r\n")
}

// command sends one inline command and returns its reply's first line (a status or
// error) or, for a bulk string, its body.
func command(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s", line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad reply %q", line)
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	default:
		return line, nil
	}
}

var (
	portMu sync.Mutex
	used   = map[int]bool{}
)

// freePort picks a port P that is free on loopback, and whose cluster bus port P+10000
// is free too, from 20000-22767: both lie below the kernel's usual ephemeral range
// (32768-60999), so an outgoing connection does not take either in the meantime. Ports
// handed out in this process are never handed out again; another test process may
// take the same port first, which launch notices (answeredBy).
func freePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(2768)
		if used[p] || !portFree(p) || !portFree(p+10000) {
			continue
		}
		used[p] = true
		return p
	}
	t.Fatal("redistest: no free loopback port found")
	return 0
}

func portFree(p int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// lookPath finds a redis binary, skipping the test without it (failing in CI).
func lookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("redistest: %s not found on PATH (CI=true, so this fails instead of skipping): install redis-server", name)
	}
	t.Skipf("redistest: %s not found on PATH: apt-get install redis-server to run this test", name)
	return ""
}
