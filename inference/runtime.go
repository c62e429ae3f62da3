// Package inference runs ONNX models over batches of feature rows with ONNX
// Runtime, one session per worker.
//
// Load checks a model against what a job will feed it before any data is
// read; a Session then runs packed batches through reused buffers with no
// per-row allocation. The package returns concrete types and must never
// import pipeline, lookup, scheduler or cmd: those packages define the
// interfaces they need and adapt to these types.
package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ErrRuntimeMissing reports that the ONNX Runtime shared library is not
// where LibraryPath looked.
var ErrRuntimeMissing = errors.New("inference: ONNX Runtime library not found")

// EnvLibrary names the environment variable that overrides LibraryPath.
const EnvLibrary = "STATICREF_ORT_LIB"

// defaultLibrary is where `make ort` puts the runtime, relative to the
// repository or install root.
const defaultLibrary = "lib/libonnxruntime.so"

// LibraryPath returns the ONNX Runtime library to load: $STATICREF_ORT_LIB
// when set, else the first existing lib/libonnxruntime.so relative to the
// working directory, to the executable's directory and its parent, and to
// the nearest directory above the working directory holding a go.mod (so
// tests and `go run` in a checkout find it). When none exists it returns the
// default relative path, lib/libonnxruntime.so.
func LibraryPath() string {
	if p := os.Getenv(EnvLibrary); p != "" {
		return p
	}
	var candidates []string
	candidates = append(candidates, defaultLibrary)
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		candidates = append(candidates,
			filepath.Join(dir, defaultLibrary),
			filepath.Join(filepath.Dir(dir), defaultLibrary))
	}
	if root := moduleRoot(); root != "" {
		candidates = append(candidates, filepath.Join(root, defaultLibrary))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	return defaultLibrary
}

// moduleRoot walks up from the working directory to the first directory
// holding a go.mod, or returns "".
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// runtimeMissingError is the one-line, actionable error for a missing
// library; it matches ErrRuntimeMissing with errors.Is.
type runtimeMissingError struct{ path string }

func (e *runtimeMissingError) Error() string {
	return fmt.Sprintf("ONNX Runtime library not found at %s: run \"make ort\" or set %s", e.path, EnvLibrary)
}

func (e *runtimeMissingError) Unwrap() error { return ErrRuntimeMissing }

var (
	initOnce sync.Once
	initErr  error
	loaded   string // the library Init loaded
)

// Init loads the ONNX Runtime library and creates its environment, once per
// process; later calls return the first call's result. A missing library is
// an error wrapping ErrRuntimeMissing.
func Init() error {
	initOnce.Do(func() {
		path := LibraryPath()
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			initErr = &runtimeMissingError{path: path}
			return
		}
		ort.SetSharedLibraryPath(path)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("load ONNX Runtime %s: %w", path, err)
			return
		}
		loaded = path
	})
	return initErr
}
