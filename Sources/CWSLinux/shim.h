// Linux headers the Swift Glibc module map does not cover (epoll, eventfd, TCP options, getaddrinfo, thread names, CPU affinity,
// getrandom), for WSPosix, the engines and WSCore's masking keys. Nothing here links a library: every declaration is in glibc.
#ifndef CWS_LINUX_SHIM_H
#define CWS_LINUX_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/random.h>

/// Names a thread (at most 15 characters); pthread_setname_np is a GNU extension the Glibc module map hides.
static inline int cws_pthread_setname(pthread_t thread, const char *name) {
    extern int pthread_setname_np(pthread_t, const char *);
    return pthread_setname_np(thread, name);
}

/// The number of processors in this thread's CPU affinity mask (0 if it cannot be read); CPU_COUNT and
/// sched_getaffinity are GNU extensions the Glibc module map hides.
static inline int cws_affinity_processor_count(void) {
    extern int sched_getaffinity(int, unsigned long, void *);
    unsigned long mask[16] = {0};  // 1,024 processors
    if (sched_getaffinity(0, sizeof mask, mask) != 0) return 0;
    int count = 0;
    for (int i = 0; i < 16; i++) count += __builtin_popcountl(mask[i]);
    return count;
}

#endif
