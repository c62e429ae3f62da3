//go:build unix

package bytecache

import "syscall"

// allocate maps n bytes of anonymous memory: outside the Go heap, taken from the system
// page by page as it is first written (MAP_NORESERVE: a large cache_bytes is not
// refused up front for memory it may never use).
func allocate(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		return make([]byte, n) // no mapping to be had: the heap will do
	}
	return b
}

// release unmaps what allocate mapped; a heap slice is the GC's.
func release(b []byte) {
	syscall.Munmap(b) // an error is a heap slice's: nothing to do
}
