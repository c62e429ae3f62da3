//go:build cgo && linux

package pebble

/*
#include <malloc.h>

// Fixes glibc's mmap threshold (see trimCMalloc); returns 0 where the C library
// cannot (mallopt's own failure value), 1 otherwise.
static int staticref_fix_mmap_threshold(int bytes) {
#ifdef M_MMAP_THRESHOLD
	return mallopt(M_MMAP_THRESHOLD, bytes);
#else
	return 0;
#endif
}
*/
import "C"

import "sync"

// cMallocMmapThreshold is the allocation size from which C malloc maps memory of its
// own, which free gives back to the operating system at once.
const cMallocMmapThreshold = 256 << 10

var fixMalloc sync.Once

// fixCMalloc keeps C-allocated memory that Pebble frees from staying resident. Pebble
// allocates its memtables (256 KiB growing to memTableSize) and block cache with C
// malloc. glibc serves large allocations with their own mmap, but raises that threshold
// to the size of any such block freed (up to 32 MiB), so after the first 16 MiB memtable
// is flushed and freed, the next ones come from malloc's heaps, where freed memory stays
// in the process. Peak RSS then grew with the number of memtables a run cycled through,
// that is with data size: make bench --memcheck measured 4M rows at 1.21-1.26x the peak of
// 1M rows, and 1.05-1.09x with the threshold fixed. mallopt fixes the threshold (which also turns off
// glibc's dynamic adjustment) for the whole process.
func fixCMalloc() {
	fixMalloc.Do(func() { C.staticref_fix_mmap_threshold(C.int(cMallocMmapThreshold)) })
}
