// Allocation counters for the codec micro-benchmark (Sources/wsbench-codec); not part of any product.
//
// counter.c defines malloc, calloc, realloc, free, posix_memalign, aligned_alloc and memalign. Linked into an
// executable, those definitions interpose glibc's for the whole process (the Swift runtime and every shared
// library included): each one counts, then forwards to glibc's allocator through its __libc_* entry point. Link
// this target only into benchmark executables; glibc only (it relies on glibc's __libc_malloc family).
#ifndef CMALLOC_COUNTER_H
#define CMALLOC_COUNTER_H

#include <stdint.h>

/// The number of allocations made in this process so far: successful calls of malloc, calloc, posix_memalign,
/// aligned_alloc and memalign, and of realloc with a non-zero size (a realloc counts once, moved or not).
uint64_t ws_malloc_count(void);

/// The number of bytes requested by the allocations that ws_malloc_count() counts (the new size, for realloc).
uint64_t ws_malloc_bytes(void);

/// The number of calls of free with a non-null pointer (and of realloc with a non-null pointer and size zero).
uint64_t ws_free_count(void);

#endif
