package lookup

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/staticref/staticref/writers"
)

// apiError is an error answer: a code from the status table and a message for the
// client. Internal causes are logged, never put in message.
type apiError struct {
	code, message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(code, format string, args ...any) *apiError {
	return &apiError{code: code, message: fmt.Sprintf(format, args...)}
}

// apiErrorOf is the one place where an error becomes an API error (and so an HTTP status
// through statusOf): the catalog's sentinels become conflict or not_found with a message
// for the client; a store that is busy, slow or failing becomes unavailable, with its
// cause logged, never echoed.
func (s *Service) apiErrorOf(ns string, err error) *apiError {
	var (
		ae *apiError
		nc *writers.NotCompleteError
		nr *writers.NoRollbackError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &nc):
		return errorf(CodeConflict, "version %s of %s is %s: only a complete version can be made live", nc.Version, ns, nc.State)
	case errors.Is(err, writers.ErrNotComplete):
		return errorf(CodeConflict, "%s: only a complete version can be made live", ns)
	case errors.Is(err, writers.ErrConflict):
		return errorf(CodeConflict, "the live version of %s changed concurrently; read it and retry", ns)
	case errors.As(err, &nr):
		return errorf(CodeNotFound, "%v", nr)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded): // a read past store_timeout
		s.log.Warn("store call timed out", "namespace", ns, "err", err)
		return errorf(CodeUnavailable, "the store of %s did not answer in time", ns)
	case errors.Is(err, context.Canceled):
		return errorf(CodeUnavailable, "request cancelled")
	}
	s.log.Error("store call failed", "namespace", ns, "err", err)
	return errorf(CodeUnavailable, "the store of %s is unavailable", ns)
}
