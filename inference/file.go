package inference

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxModelBytes is the largest model file Load and Inspect read: 2 GiB, protobuf's
// limit on one message, so the largest ONNX model that keeps its weights inside the
// file (staticref loads models from memory, without external data files). It is not
// configurable: ONNX Runtime could not parse a larger file anyway.
const MaxModelBytes = 2 << 30

// readChunk is how much readModel reads between looks at its context.
const readChunk = 4 << 20

// readModel reads the model file at path, refusing anything but a regular file of at
// most MaxModelBytes, under ctx. A device such as /dev/zero would be read until memory
// runs out, and a FIFO would block the open until a writer came: both are refused by a
// Stat before the open, and again by a Stat of what was opened (the path may have been
// replaced in between), which is opened without blocking. The read stops at
// MaxModelBytes even if the file grows, and between chunks when ctx is done.
func readModel(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, misfit{fmt.Errorf("model %s: %w", path, err)}
		}
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if err := checkModelFile(path, st); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if err := checkModelFile(path, st); err != nil {
		return nil, err
	}
	data := make([]byte, 0, st.Size())
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("model %s: %w", path, err)
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)] // the file grew since the Stat
		}
		n, err := f.Read(data[len(data):min(cap(data), len(data)+readChunk)])
		data = data[:len(data)+n]
		if len(data) > MaxModelBytes {
			return nil, misfit{fmt.Errorf("model %s: over %d bytes (MaxModelBytes); staticref reads models of at most 2 GiB", path, MaxModelBytes)}
		}
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", path, err)
		}
	}
}

// checkModelFile refuses what readModel must not read.
func checkModelFile(path string, st fs.FileInfo) error {
	m := st.Mode()
	if !m.IsRegular() {
		what := "not a regular file"
		switch {
		case m.IsDir():
			what = "a directory"
		case m&fs.ModeNamedPipe != 0:
			what = "a named pipe (FIFO)"
		case m&fs.ModeCharDevice != 0:
			what = "a character device"
		case m&fs.ModeDevice != 0:
			what = "a device"
		case m&fs.ModeSocket != 0:
			what = "a socket"
		}
		return misfit{fmt.Errorf("model %s: %s, not a regular file: model.path names an .onnx file", path, what)}
	}
	if st.Size() > MaxModelBytes {
		return misfit{fmt.Errorf("model %s: %d bytes, over %d (MaxModelBytes); staticref reads models of at most 2 GiB", path, st.Size(), MaxModelBytes)}
	}
	return nil
}
