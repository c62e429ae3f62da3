package lookup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/staticref/staticref/writers"
)

// codeTable is the one table from API error codes to what each protocol answers: the
// HTTP status (http.go) and the gRPC status code (grpc.go). A code missing from it is
// answered as internal.
var codeTable = map[string]apiCode{
	CodeInvalid:         {http.StatusBadRequest, codes.InvalidArgument},
	CodeUnauthenticated: {http.StatusUnauthorized, codes.Unauthenticated},
	CodeForbidden:       {http.StatusForbidden, codes.PermissionDenied},
	CodeNotFound:        {http.StatusNotFound, codes.NotFound},
	CodeMethod:          {http.StatusMethodNotAllowed, codes.Unimplemented},
	CodeConflict:        {http.StatusConflict, codes.Aborted},
	CodeTooLarge:        {http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	CodeStale:           {http.StatusServiceUnavailable, codes.Unavailable},
	CodeUnavailable:     {http.StatusServiceUnavailable, codes.Unavailable},
	CodeInternal:        {http.StatusInternalServerError, codes.Internal},
}

// apiCode is one row of codeTable.
type apiCode struct {
	http int
	grpc codes.Code
}

// codeOf is code's row of codeTable (internal's for a code not in it).
func codeOf(code string) apiCode {
	if c, ok := codeTable[code]; ok {
		return c
	}
	return codeTable[CodeInternal]
}

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
// through codeTable): the catalog's sentinels become conflict or not_found with a message
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
	case errors.Is(err, writers.ErrReleaseRunning):
		return errorf(CodeConflict, "a release of %s is running or paused: promote or abort it before starting another (GET /v1/%s:release)", ns, ns)
	case errors.Is(err, writers.ErrNoReleases):
		return errorf(CodeInvalid, "the store of %s keeps no release records: releases need a store whose driver keeps them (pebble: or redis://)", ns)
	case errors.Is(err, writers.ErrInvalid):
		// What was invalid is in the request (a mode, a weight, steps): say what, without
		// the sentinel's words.
		msg := err.Error()
		if _, after, ok := strings.Cut(msg, writers.ErrInvalid.Error()+": "); ok {
			msg = after
		}
		return errorf(CodeInvalid, "%s", msg)
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
