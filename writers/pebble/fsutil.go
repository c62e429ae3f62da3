package pebble

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// writeFileAtomic replaces path with data: a temporary file in the same directory,
// synced, renamed over path, and the directory synced, so that a reader (in any process)
// sees the old contents or the new, never a torn file, and a crash leaves one of the two.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// readFile reads path; a file that is not there is (nil, false, nil).
func readFile(path string) ([]byte, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return data, true, nil
}

// isTemp reports whether a directory entry is a temporary file of writeFileAtomic.
func isTemp(name string) bool { return strings.HasPrefix(name, ".") }

// flock is an advisory lock (flock(2)) on a file. flock locks belong to the open file,
// so two opens of one file conflict even within one process: the same lock orders the
// goroutines of this process and every other process on the machine.
type flock struct{ f *os.File }

// lockFile takes an exclusive (or, with shared, a shared) lock on path, creating it,
// and waits for it.
func lockFile(path string, shared bool) (*flock, error) {
	return takeLock(path, shared, false)
}

// tryLockFile is lockFile that fails at once with errLocked when another holder has a
// conflicting lock.
func tryLockFile(path string, shared bool) (*flock, error) {
	return takeLock(path, shared, true)
}

var errLocked = errors.New("pebble: locked by another reader or writer")

func takeLock(path string, shared, nonBlocking bool) (*flock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if shared {
		how = syscall.LOCK_SH
	}
	if nonBlocking {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &flock{f: f}, nil
}

// unlock releases the lock (closing the file releases it).
func (l *flock) unlock() error { return l.f.Close() }

// randomHex is n random bytes, hex-encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
