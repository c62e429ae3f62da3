//go:build !cgo || !linux

package pebble

// fixCMalloc does nothing where Pebble's memory comes from the Go heap (no cgo) or the
// C library is not known to keep freed blocks (see malloc_cgo.go).
func fixCMalloc() {}
