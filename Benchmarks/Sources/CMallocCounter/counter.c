// Counting wrappers around glibc's allocator; see include/CMallocCounter.h.
//
// Why this works from a static target, with no linker flag: SwiftPM links this file's object straight into the
// executable (not through an archive, so nothing has to reference it), and the linker (gold, swiftc's default on
// Linux) puts a symbol that the executable defines and a shared library on the link line also defines (libc.so.6
// defines malloc) in the executable's dynamic symbol table, which also makes it a root for --gc-sections. The
// executable comes first in the dynamic linker's lookup order, so every malloc call in the process — from Swift
// code, libswiftCore's swift_slowAlloc, or libc itself (strdup, stdio) — binds to these definitions. They forward
// to glibc's allocator through its exported __libc_* entry points (not dlsym, which can itself allocate), so
// memory from either side can be freed by the other. `used` is belt and braces for linkers that would not export.
// Check: `nm -D .build-codec/release/wsbench-codec | grep malloc` lists `T malloc`; wsbench-codec also verifies at
// start-up that a Swift array allocation raises the count.
#include "CMallocCounter.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void __libc_free(void *pointer);
extern void *__libc_memalign(size_t alignment, size_t size);

/// Allocations, bytes requested and frees; relaxed: they are totals, read before and after a measured loop.
static _Atomic uint64_t allocations;
static _Atomic uint64_t allocatedBytes;
static _Atomic uint64_t frees;

/// Counts one allocation of `size` bytes.
static inline void countAllocation(size_t size) {
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&allocatedBytes, (uint64_t)size, memory_order_relaxed);
}

/// Counts one free.
static inline void countFree(void) {
    atomic_fetch_add_explicit(&frees, 1, memory_order_relaxed);
}

uint64_t ws_malloc_count(void) { return atomic_load_explicit(&allocations, memory_order_relaxed); }

uint64_t ws_malloc_bytes(void) { return atomic_load_explicit(&allocatedBytes, memory_order_relaxed); }

uint64_t ws_free_count(void) { return atomic_load_explicit(&frees, memory_order_relaxed); }

/// malloc(3), counted.
__attribute__((used, visibility("default"))) void *malloc(size_t size) {
    void *pointer = __libc_malloc(size);
    if (pointer) countAllocation(size);
    return pointer;
}

/// calloc(3), counted (count × size bytes).
__attribute__((used, visibility("default"))) void *calloc(size_t count, size_t size) {
    void *pointer = __libc_calloc(count, size);
    if (pointer) countAllocation(count * size);  // No overflow: glibc returned null if it overflowed.
    return pointer;
}

/// realloc(3), counted as one allocation of the new size; realloc(p, 0) frees p (glibc) and counts as a free.
__attribute__((used, visibility("default"))) void *realloc(void *pointer, size_t size) {
    void *result = __libc_realloc(pointer, size);
    if (result) {
        countAllocation(size);
    } else if (pointer && size == 0) {
        countFree();
    }
    return result;
}

/// free(3), counted when the pointer is not null.
__attribute__((used, visibility("default"))) void free(void *pointer) {
    if (pointer) countFree();
    __libc_free(pointer);
}

/// memalign(3), counted.
__attribute__((used, visibility("default"))) void *memalign(size_t alignment, size_t size) {
    void *pointer = __libc_memalign(alignment, size);
    if (pointer) countAllocation(size);
    return pointer;
}

/// aligned_alloc(3), counted; glibc 2.36 implements it as memalign.
__attribute__((used, visibility("default"))) void *aligned_alloc(size_t alignment, size_t size) {
    void *pointer = __libc_memalign(alignment, size);
    if (pointer) countAllocation(size);
    return pointer;
}

/// posix_memalign(3), counted: EINVAL unless `alignment` is a power of two multiple of sizeof(void *).
__attribute__((used, visibility("default"))) int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer) return ENOMEM;
    countAllocation(size);
    *result = pointer;
    return 0;
}
