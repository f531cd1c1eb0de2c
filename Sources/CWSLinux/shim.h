// Linux headers the Swift Glibc module map does not cover (epoll, eventfd, TCP options, getaddrinfo, thread names),
// for WSPosix and the engines. Nothing here links a library: every declaration is in glibc.
#ifndef CWS_LINUX_SHIM_H
#define CWS_LINUX_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <pthread.h>

/// Names a thread (at most 15 characters); pthread_setname_np is a GNU extension the Glibc module map hides.
static inline int cws_pthread_setname(pthread_t thread, const char *name) {
    extern int pthread_setname_np(pthread_t, const char *);
    return pthread_setname_np(thread, name);
}

#endif
