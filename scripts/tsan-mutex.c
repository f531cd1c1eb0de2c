// Teaches ThreadSanitizer about Synchronization.Mutex on Linux (scripts/sanitizers.sh, Docs/Sanitizers-and-Soak.md).
//
// Why: on Linux, Mutex.withLock is inlined into our (instrumented) code. Its fast paths are atomic compare-and-swaps
// on the lock word (0 -> tid with acquire ordering to lock, tid -> 0 with release ordering to unlock), and TSan sees
// those. When the lock is contended, both sides go to the slow paths in libswiftSynchronization.so, which is not
// instrumented: `_lockSlow` waits in FUTEX_LOCK_PI and returns owning the lock (the kernel wrote the lock word), and
// `_unlockSlow` hands the lock over with FUTEX_UNLOCK_PI. No instrumented atomic runs on that path, so TSan sees no
// happens-before edge from the previous owner's critical section to the next one and reports a data race between
// two accesses that were both made under the lock (verified: both stacks of every such report end in a closure
// passed to Mutex.withLock; see the doc).
//
// A suppression cannot say "both accesses were under the same lock": TSan suppresses a report when any frame of
// either access, of the allocation of the memory or of the creation of either thread matches, and our event-loop
// threads are created inside a withLock closure, so a name-based suppression wide enough to cover the Mutex would
// also hide every real race on those threads. Instead this library, LD_PRELOADed into the sanitized test process,
// interposes the two slow paths (the test binary calls them through the PLT) and adds the missing edge on the lock
// word's address, the same address the fast-path atomics use:
//
//   _lockSlow:   call the real one, then __tsan_acquire(lock word)
//   _unlockSlow: __tsan_release(lock word), then call the real one
//   _tryLockSlow: call the real one, then __tsan_acquire(lock word) if it took the lock
//
// Nothing else changes: a race on state that is not guarded by the same Mutex is still reported.
// The functions use Swift's calling convention; `self` (the _MutexHandle, whose first word is the lock word) is the
// swift_context (swiftself, %r13) parameter. __tsan_acquire/__tsan_release are weak: in a process without TSan
// (swift-build, when the variable leaks into it) the shim only forwards.
//
// Build: clang -shared -fPIC -O2 -o libtsan-mutex.so tsan-mutex.c -ldl   (the toolchain's clang; swiftcall)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SWIFTCC __attribute__((swiftcall))
#define SWIFT_SELF __attribute__((swift_context))

#define LOCK_SLOW "$s15Synchronization12_MutexHandleV9_lockSlowyys6UInt32VF"
#define UNLOCK_SLOW "$s15Synchronization12_MutexHandleV11_unlockSlowyyF"
#define TRY_LOCK_SLOW "$s15Synchronization12_MutexHandleV12_tryLockSlowSbyF"

extern void __tsan_acquire(void *addr) __attribute__((weak));
extern void __tsan_release(void *addr) __attribute__((weak));

typedef SWIFTCC void (*lock_slow_fn)(uint32_t tid, void *SWIFT_SELF self);
typedef SWIFTCC void (*unlock_slow_fn)(void *SWIFT_SELF self);
typedef SWIFTCC bool (*try_lock_slow_fn)(void *SWIFT_SELF self);

static _Atomic(void *) real_lock_slow, real_unlock_slow, real_try_lock_slow;

static void *real(_Atomic(void *) *cache, const char *name) {
    void *fn = atomic_load_explicit(cache, memory_order_acquire);
    if (fn == NULL) {
        fn = dlsym(RTLD_NEXT, name);
        if (fn == NULL) {
            fprintf(stderr, "tsan-mutex: cannot find %s: %s\n", name, dlerror());
            abort();
        }
        atomic_store_explicit(cache, fn, memory_order_release);
    }
    return fn;
}

SWIFTCC void tsan_mutex_lock_slow(uint32_t tid, void *SWIFT_SELF self) __asm__(LOCK_SLOW);
SWIFTCC void tsan_mutex_lock_slow(uint32_t tid, void *SWIFT_SELF self) {
    ((lock_slow_fn)real(&real_lock_slow, LOCK_SLOW))(tid, self);
    if (__tsan_acquire) __tsan_acquire(self);
}

SWIFTCC void tsan_mutex_unlock_slow(void *SWIFT_SELF self) __asm__(UNLOCK_SLOW);
SWIFTCC void tsan_mutex_unlock_slow(void *SWIFT_SELF self) {
    if (__tsan_release) __tsan_release(self);
    ((unlock_slow_fn)real(&real_unlock_slow, UNLOCK_SLOW))(self);
}

SWIFTCC bool tsan_mutex_try_lock_slow(void *SWIFT_SELF self) __asm__(TRY_LOCK_SLOW);
SWIFTCC bool tsan_mutex_try_lock_slow(void *SWIFT_SELF self) {
    bool locked = ((try_lock_slow_fn)real(&real_try_lock_slow, TRY_LOCK_SLOW))(self);
    if (locked && __tsan_acquire) __tsan_acquire(self);
    return locked;
}
