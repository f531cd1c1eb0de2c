// The "limit" client for the benchmarks (issue 7): the same workloads as `wsbench`, in C on epoll with
// hand-written RFC 6455 framing (masked client frames, 8-bytes-at-a-time masking, batched writes).
// It does what the workload needs and no more: no UTF-8 validation, no extensions outside W5, minimal handshake check.
//
// With a wss:// URL, W1–W3 run over TLS (OpenSSL, on the same single thread; WSBENCH_CA_FILE, if set, is the CA that
// must have signed the server's certificate): writes leave as full TLS records (partial writes on), reads go on
// until OpenSSL wants more input, from a 64 KiB read-ahead buffer. W4 over wss runs on every core (see w4_tls).
//
// W5 (permessage-deflate, zlib; ws and wss) is the block right before main().
//
// Build: cc -O2 -o wsclient_c client.c -lssl -lcrypto -lz
// Run:   ./wsclient_c --workload w1|w2|w3|w4|w5|idle --url ws[s]://127.0.0.1:PORT/ [--w3-mib N]
//        [--w5-size BYTES --w5-count N (or --w5-mib N) --w5-window N --w5-nct 0|1]
//        [--connections N (w4, idle)] [--addresses A (idle: spread over 127.0.0.1 ... 127.0.0.A)]
//        [--procs N] [--resume 0|1]   (W4 over wss: processes, default one per online CPU; TLS session resumption)
// Prints one JSON line, same shape as wsbench's.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t *p;
    size_t len, cap, off;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off > 0 && (b->off == b->len || b->len + extra > b->cap)) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + extra > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + extra) nc *= 2;
        b->p = realloc(b->p, nc);
        if (!b->p) { perror("realloc"); exit(1); }
        b->cap = nc;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

// The process's CPU time so far (user + system, all threads) in ms.
static double cpu_ms(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

static uint32_t rng = 0x9E3779B9u;
static uint32_t next_key(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

// Appends one masked client frame (FIN set) to b.
static void append_frame(buf_t *b, uint8_t opcode, const uint8_t *payload, size_t len) {
    buf_reserve(b, 14 + len);
    uint8_t *h = b->p + b->len;
    size_t hl;
    h[0] = 0x80 | opcode;
    if (len < 126) { h[1] = 0x80 | (uint8_t)len; hl = 2; }
    else if (len <= 0xFFFF) { h[1] = 0x80 | 126; h[2] = (uint8_t)(len >> 8); h[3] = (uint8_t)len; hl = 4; }
    else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    uint32_t k32 = next_key();
    memcpy(h + hl, &k32, 4);
    uint8_t key[4];
    memcpy(key, &k32, 4);
    hl += 4;
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    uint8_t *d = h + hl;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, payload + i, 8);
        v ^= k64;
        memcpy(d + i, &v, 8);
    }
    for (; i < len; i++) d[i] = payload[i] ^ key[i & 3];
    b->len += hl + len;
}

// Consumes one complete server frame from b if present: returns 1 and sets *op / *plen, else 0.
static int take_frame(buf_t *b, uint8_t *op, size_t *plen) {
    uint8_t *p = b->p + b->off;
    size_t avail = b->len - b->off;
    if (avail < 2) return 0;
    uint64_t len = p[1] & 0x7F;
    size_t hl = 2;
    if (len == 126) {
        if (avail < 4) return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (avail < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
        hl = 10;
    }
    if (p[1] & 0x80) hl += 4;
    if (avail < hl + len) {
        buf_reserve(b, hl + len - avail);
        return 0;
    }
    *op = p[0] & 0x0F;
    *plen = (size_t)len;
    b->off += hl + len;
    if (b->off == b->len) b->off = b->len = 0;
    return 1;
}

static int port_from_url(const char *url, char *path, size_t pathcap) {
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *colon = strchr(p, ':');
    int port = colon ? atoi(colon + 1) : 80;
    const char *slash = strchr(p, '/');
    snprintf(path, pathcap, "%s", slash ? slash : "/");
    return port;
}

// wss: the one connection's TLS state (W1–W3 run one connection).
static SSL *tls;

// write(2)/read(2) or SSL_write/SSL_read: > 0 bytes, 0 end of stream, -1 would block (the socket or OpenSSL waits);
// exits on an error. A TLS retry after WANT_WRITE passes at least as many bytes (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
static ssize_t io(int fd, int writing, void *p, size_t n) {
    if (!tls) {
        for (;;) {
            ssize_t r = writing ? write(fd, p, n) : read(fd, p, n);
            if (r >= 0) return r;
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return -1;
            perror(writing ? "write" : "read");
            exit(1);
        }
    }
    int len = n > (1u << 30) ? 1 << 30 : (int)n;
    ERR_clear_error();
    int r = writing ? SSL_write(tls, p, len) : SSL_read(tls, p, len);
    if (r > 0) return r;
    int e = SSL_get_error(tls, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    fprintf(stderr, "TLS %s failed (SSL error %d)\n", writing ? "write" : "read", e);
    ERR_print_errors_fp(stderr);
    exit(1);
}

// Blocking TLS client handshake on fd (wss).
static void tls_connect(int fd) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 65536);
    const char *ca = getenv("WSBENCH_CA_FILE");
    if (ca && *ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) { ERR_print_errors_fp(stderr); exit(1); }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    tls = SSL_new(ctx);
    SSL_set_fd(tls, fd);
    if (ca && *ca) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls), "127.0.0.1");
    if (SSL_connect(tls) != 1) { fprintf(stderr, "TLS handshake failed\n"); ERR_print_errors_fp(stderr); exit(1); }
}

static const char *HANDSHAKE_FMT =
    "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

static int open_socket(int port, int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    return fd;
}

// Blocking connect (+ TLS handshake with wss) + upgrade, then switch to non-blocking. Leftover bytes stay in *in.
static int ws_connect(int port, const char *path, buf_t *in, int secure) {
    int fd = open_socket(port, 0);
    if (secure) tls_connect(fd);
    char req[512];
    int n = snprintf(req, sizeof(req), HANDSHAKE_FMT, path, port);
    if (io(fd, 1, req, (size_t)n) != n) { fprintf(stderr, "short handshake write\n"); exit(1); }
    for (;;) {
        buf_reserve(in, 4096);
        ssize_t r = io(fd, 0, in->p + in->len, in->cap - in->len - 1);
        if (r <= 0) { fprintf(stderr, "handshake read failed\n"); exit(1); }
        in->len += (size_t)r;
        in->p[in->len] = 0;
        char *end = strstr((char *)in->p, "\r\n\r\n");
        if (end) {
            if (strncmp((char *)in->p, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "no 101\n"); exit(1); }
            in->off = (size_t)((uint8_t *)end + 4 - in->p);
            if (in->off == in->len) in->off = in->len = 0;
            break;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int ep;
static int cur_events;

static void watch(int fd, int events) {
    if (events == cur_events) return;
    struct epoll_event ev = {.events = (uint32_t)events, .data.fd = fd};
    epoll_ctl(ep, cur_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
    cur_events = events;
}

// Blocks until fd is readable, or also writable while some of the workload is still to be sent.
static void wait_io(int fd, int all_out) {
    watch(fd, EPOLLIN | (all_out ? 0 : EPOLLOUT));
    struct epoll_event e;
    epoll_wait(ep, &e, 1, -1);
}

// Writes as much of out as the socket takes. Returns 1 if everything was written.
static int flush(int fd, buf_t *out) {
    while (out->off < out->len) {
        ssize_t n = io(fd, 1, out->p + out->off, out->len - out->off);
        if (n < 0) return 0;
        if (n == 0) { fprintf(stderr, "write returned 0\n"); exit(1); }
        out->off += (size_t)n;
    }
    out->off = out->len = 0;
    return 1;
}

// Reads what is available. Returns bytes read (0 on EAGAIN); exits on an error, and on EOF before any byte (the
// bytes before an EOF are returned: the close frame may precede it). Plain: stops at a short read (the
// socket is drained). TLS: goes on until OpenSSL wants more input (it may hold records the socket no longer signals).
static size_t fill(int fd, buf_t *in) {
    size_t total = 0;
    for (;;) {
        buf_reserve(in, 65536);
        size_t want = in->cap - in->len;
        ssize_t n = io(fd, 0, in->p + in->len, want);
        if (n < 0) return total;
        if (n == 0) {
            if (total > 0) return total;
            fprintf(stderr, "unexpected EOF\n");
            exit(1);
        }
        in->len += (size_t)n;
        total += (size_t)n;
        if (!tls && (size_t)n < want) return total;
    }
}

static void clean_close(int fd, buf_t *in, buf_t *out) {
    uint8_t code[2] = {0x03, 0xE8};
    append_frame(out, 0x8, code, 2);
    while (!flush(fd, out)) { watch(fd, EPOLLOUT); struct epoll_event e; epoll_wait(ep, &e, 1, -1); }
    uint8_t op;
    size_t pl;
    for (;;) {
        while (take_frame(in, &op, &pl))
            if (op == 0x8) { close(fd); return; }
        if (fill(fd, in) == 0) { watch(fd, EPOLLIN); struct epoll_event e; epoll_wait(ep, &e, 1, -1); }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void w1(int port, const char *path, int secure) {
    buf_t in = {0}, out = {0};
    int fd = ws_connect(port, path, &in, secure);
    ep = epoll_create1(0);
    uint8_t msg[32];
    memset(msg, 'a', sizeof(msg));
    const int warm = 1000, n = 20000;
    double *lat = malloc(sizeof(double) * n);
    double t_start = 0;
    for (int i = 0; i < warm + n; i++) {
        if (i == warm) t_start = now_s();
        double t0 = now_s();
        append_frame(&out, 0x1, msg, sizeof(msg));
        while (!flush(fd, &out)) { watch(fd, EPOLLOUT); struct epoll_event e; epoll_wait(ep, &e, 1, -1); }
        uint8_t op;
        size_t pl;
        while (!take_frame(&in, &op, &pl)) {
            if (fill(fd, &in) == 0) { watch(fd, EPOLLIN); struct epoll_event e; epoll_wait(ep, &e, 1, -1); }
        }
        if (i >= warm) lat[i - warm] = (now_s() - t0) * 1e6;
    }
    double el = now_s() - t_start;
    clean_close(fd, &in, &out);
    qsort(lat, n, sizeof(double), cmp_double);
    printf("{\"client\":\"c\",\"workload\":\"w1\",\"value\":%.1f,\"unit\":\"rt/s\",\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"seconds\":%.3f,\"peak_rss_mib\":%.1f,\"cpu_ms\":%.1f}\n",
           n / el, lat[n / 2], lat[(int)(n * 0.99)], el, peak_rss_kib() / 1024.0, cpu_ms());
}

// W2 / W3: count messages of size bytes, at most window unanswered.
static void stream(const char *name, int port, const char *path, long count, size_t size, long window, int secure) {
    buf_t in = {0}, out = {0};
    int fd = ws_connect(port, path, &in, secure);
    ep = epoll_create1(0);
    uint8_t *msg = malloc(size);
    for (size_t i = 0; i < size; i++) msg[i] = (uint8_t)i;
    long sent = 0, recvd = 0;
    double t0 = now_s();
    while (recvd < count) {
        while (sent < count && sent - recvd < window) { append_frame(&out, 0x2, msg, size); sent++; }
        int all_out = flush(fd, &out);
        size_t got = fill(fd, &in);
        uint8_t op;
        size_t pl;
        while (take_frame(&in, &op, &pl))
            if (op == 0x2) recvd++;
        if (got == 0 && (all_out || sent - recvd >= window)) wait_io(fd, all_out);
    }
    double el = now_s() - t0;
    clean_close(fd, &in, &out);
    if (size < 1024)
        printf("{\"client\":\"c\",\"workload\":\"%s\",\"value\":%.1f,\"unit\":\"msg/s\",\"seconds\":%.3f,"
               "\"peak_rss_mib\":%.1f,\"cpu_ms\":%.1f}\n",
               name, count / el, el, peak_rss_kib() / 1024.0, cpu_ms());
    else
        printf("{\"client\":\"c\",\"workload\":\"%s\",\"value\":%.1f,\"unit\":\"MB/s\",\"seconds\":%.3f,"
               "\"peak_rss_mib\":%.1f,\"cpu_ms\":%.1f}\n",
               name, (double)count * (double)size / el / 1e6, el, peak_rss_kib() / 1024.0, cpu_ms());
}

// W4: n concurrent connections, each: connect, upgrade, one 32-byte text echo, clean close.
typedef struct {
    int fd, state;  // 0 connecting, 1 awaiting 101, 2 awaiting echo, 3 awaiting close
    buf_t in, out;
} c4_t;

static void w4(int port, const char *path, int n) {
    ep = epoll_create1(0);
    c4_t *cs = calloc((size_t)n, sizeof(c4_t));
    uint8_t msg[32];
    memset(msg, 'b', sizeof(msg));
    char req[512];
    int rl = snprintf(req, sizeof(req), HANDSHAKE_FMT, path, port);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        cs[i].fd = open_socket(port, 1);
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    int done = 0;
    struct epoll_event evs[256];
    while (done < n) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int j = 0; j < k; j++) {
            c4_t *c = evs[j].data.ptr;
            if (c->state == 0) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { fprintf(stderr, "connect: %s\n", strerror(err)); exit(1); }
                if (write(c->fd, req, (size_t)rl) != rl) { perror("write"); exit(1); }
                c->state = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            buf_reserve(&c->in, 512);
            ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; fprintf(stderr, "w4 read failed\n"); exit(1); }
            c->in.len += (size_t)r;
            if (c->state == 1) {
                c->in.p[c->in.len] = 0;
                char *end = strstr((char *)c->in.p, "\r\n\r\n");
                if (!end) continue;
                c->in.off = (size_t)((uint8_t *)end + 4 - c->in.p);
                append_frame(&c->out, 0x1, msg, sizeof(msg));
                flush(c->fd, &c->out);  // 38 bytes into an empty socket buffer
                c->state = 2;
            }
            uint8_t op;
            size_t pl;
            while (c->state >= 2 && take_frame(&c->in, &op, &pl)) {
                if (c->state == 2 && op == 0x1) {
                    uint8_t code[2] = {0x03, 0xE8};
                    append_frame(&c->out, 0x8, code, 2);
                    flush(c->fd, &c->out);
                    c->state = 3;
                } else if (c->state == 3 && op == 0x8) {
                    close(c->fd);
                    free(c->in.p);
                    free(c->out.p);
                    c->state = 4;
                    done++;
                    break;
                }
            }
        }
    }
    double el = now_s() - t0;
    printf("{\"client\":\"c\",\"workload\":\"w4\",\"value\":%.1f,\"unit\":\"conn/s\",\"seconds\":%.3f,"
           "\"peak_rss_mib\":%.1f,\"cpu_ms\":%.1f}\n",
           n / el, el, peak_rss_kib() / 1024.0, cpu_ms());
}

// W4 over wss: the handshakes' crypto bounds it, so the limit runs on every core. The parent forks --procs processes
// (default: one per online CPU); each makes its own SSL_CTX (verifying the server against WSBENCH_CA_FILE like
// W1–W3), then waits at a barrier; the parent starts the clock and releases them together, and each opens its share
// of the n connections at once on its own epoll loop with non-blocking OpenSSL handshakes: connect, TLS handshake,
// upgrade, one 32-byte text echo, close handshake, close_notify. The wall time runs from the release to the last
// process's last close (CLOCK_MONOTONIC is one clock for all of them). peak_rss_mib is the SUM of every process's
// peak RSS (the parent's included; shared library pages are counted once per process, so it overstates a little),
// peak_rss_max_mib the largest single process's; cpu_ms is all processes' CPU (wait4).
// --resume 1: each process first makes one full handshake outside the clock, keeps its TLS 1.3 session (the
// server's ticket) and offers it on every timed connection (SSL_set_session): what session resumption saves.
typedef struct {
    int fd, state;  // 0 connecting, 1 TLS handshake, 2 awaiting 101, 3 awaiting echo, 4 awaiting close, 5 done
    uint32_t events;
    SSL *ssl;
    buf_t in, out;
} c4s_t;

typedef struct {
    double end;  // CLOCK_MONOTONIC when this process's last connection closed
    int resumed;  // connections whose handshake resumed the offered session
} w4s_result_t;

static void w4s_events(c4s_t *c, uint32_t events) {
    if (events == c->events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

// SSL_read / SSL_write on one W4 connection: > 0 bytes, 0 end of stream, -1 would block (*want: EPOLLIN or
// EPOLLOUT); exits on an error.
static ssize_t w4s_io(c4s_t *c, int writing, void *p, size_t n, uint32_t *want) {
    ERR_clear_error();
    int r = writing ? SSL_write(c->ssl, p, (int)n) : SSL_read(c->ssl, p, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { *want = EPOLLIN; return -1; }
    if (e == SSL_ERROR_WANT_WRITE) { *want = EPOLLOUT; return -1; }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    fprintf(stderr, "w4 TLS %s failed (SSL error %d, state %d)\n", writing ? "write" : "read", e, c->state);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static SSL_CTX *w4s_ctx(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const char *ca = getenv("WSBENCH_CA_FILE");
    if (ca && *ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) { ERR_print_errors_fp(stderr); exit(1); }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

static SSL *w4s_ssl(SSL_CTX *ctx, int fd, SSL_SESSION *sess) {
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    if (getenv("WSBENCH_CA_FILE") && *getenv("WSBENCH_CA_FILE"))
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), "127.0.0.1");
    if (sess) SSL_set_session(s, sess);
    SSL_set_connect_state(s);
    return s;
}

// --resume: one blocking connection with a full handshake and an upgrade; the TLS 1.3 tickets arrive with the 101.
static SSL_SESSION *w4s_session(SSL_CTX *ctx, int port, const char *path) {
    int fd = open_socket(port, 0);
    SSL *s = w4s_ssl(ctx, fd, NULL);
    if (SSL_connect(s) != 1) { fprintf(stderr, "TLS handshake failed\n"); ERR_print_errors_fp(stderr); exit(1); }
    char req[512];
    int n = snprintf(req, sizeof(req), HANDSHAKE_FMT, path, port);
    if (SSL_write(s, req, n) != n) { fprintf(stderr, "short handshake write\n"); exit(1); }
    char resp[4096];
    size_t got = 0;
    while (got < sizeof(resp) - 1) {
        int r = SSL_read(s, resp + got, (int)(sizeof(resp) - 1 - got));
        if (r <= 0) { fprintf(stderr, "handshake read failed\n"); exit(1); }
        got += (size_t)r;
        resp[got] = 0;
        if (strstr(resp, "\r\n\r\n")) break;
    }
    SSL_SESSION *sess = SSL_get1_session(s);
    if (!sess || !SSL_SESSION_is_resumable(sess)) { fprintf(stderr, "no resumable TLS session\n"); exit(1); }
    SSL_shutdown(s);
    SSL_free(s);
    close(fd);
    return sess;
}

// Drives one connection as far as it goes without blocking. Returns 1 when it has closed.
static int w4s_step(c4s_t *c, SSL_CTX *ctx, SSL_SESSION *sess, const char *req, int rl, int *resumed) {
    uint8_t msg[32];
    memset(msg, 'b', sizeof(msg));
    if (c->state == 0) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { fprintf(stderr, "connect: %s\n", strerror(err)); exit(1); }
        c->ssl = w4s_ssl(ctx, c->fd, sess);
        c->state = 1;
    }
    if (c->state == 1) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { w4s_events(c, EPOLLIN); return 0; }
            if (e == SSL_ERROR_WANT_WRITE) { w4s_events(c, EPOLLOUT); return 0; }
            fprintf(stderr, "w4 TLS handshake failed (SSL error %d)\n", e);
            ERR_print_errors_fp(stderr);
            exit(1);
        }
        if (SSL_session_reused(c->ssl)) (*resumed)++;
        buf_reserve(&c->out, (size_t)rl);
        memcpy(c->out.p + c->out.len, req, (size_t)rl);
        c->out.len += (size_t)rl;
        c->state = 2;
    }
    for (;;) {
        uint32_t want = 0;
        while (c->out.off < c->out.len) {
            ssize_t n = w4s_io(c, 1, c->out.p + c->out.off, c->out.len - c->out.off, &want);
            if (n <= 0) break;
            c->out.off += (size_t)n;
        }
        if (c->out.off == c->out.len) c->out.off = c->out.len = 0;
        if (want) { w4s_events(c, want); return 0; }
        int eof = 0;  // close_notify: the server sends it right after its close frame
        for (;;) {
            buf_reserve(&c->in, 4096);
            ssize_t n = w4s_io(c, 0, c->in.p + c->in.len, c->in.cap - c->in.len - 1, &want);
            if (n < 0) break;
            if (n == 0) { eof = 1; break; }
            c->in.len += (size_t)n;
        }
        size_t before = c->out.len;
        if (c->state == 2) {
            c->in.p[c->in.len] = 0;
            char *end = strstr((char *)c->in.p + c->in.off, "\r\n\r\n");
            if (end) {
                if (strncmp((char *)c->in.p + c->in.off, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "no 101\n"); exit(1); }
                c->in.off = (size_t)((uint8_t *)end + 4 - c->in.p);
                append_frame(&c->out, 0x1, msg, sizeof(msg));
                c->state = 3;
            }
        }
        uint8_t op;
        size_t pl;
        while (c->state >= 3 && c->state < 5 && take_frame(&c->in, &op, &pl)) {
            if (c->state == 3 && op == 0x1) {
                uint8_t code[2] = {0x03, 0xE8};
                append_frame(&c->out, 0x8, code, 2);
                c->state = 4;
            } else if (c->state == 4 && op == 0x8) {
                c->state = 5;
            }
        }
        if (c->state == 5) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);  // close_notify; the server has shut its side down already
            SSL_free(c->ssl);
            close(c->fd);
            free(c->in.p);
            free(c->out.p);
            return 1;
        }
        if (eof) { fprintf(stderr, "w4: end of stream in state %d\n", c->state); exit(1); }
        if (c->out.len == before) { w4s_events(c, want ? want : EPOLLIN); return 0; }
    }
}

static void w4s_worker(int port, const char *path, int n, SSL_CTX *ctx, SSL_SESSION *sess, w4s_result_t *res) {
    ep = epoll_create1(0);
    c4s_t *cs = calloc((size_t)n, sizeof(c4s_t));
    char req[512];
    int rl = snprintf(req, sizeof(req), HANDSHAKE_FMT, path, port);
    for (int i = 0; i < n; i++) {
        cs[i].fd = open_socket(port, 1);
        cs[i].events = EPOLLOUT;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    int done = 0;
    struct epoll_event evs[256];
    while (done < n) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int j = 0; j < k; j++) done += w4s_step(evs[j].data.ptr, ctx, sess, req, rl, &res->resumed);
    }
    res->end = now_s();
}

static void w4_tls(int port, const char *path, int n, int procs, int resume) {
    if (procs <= 0) procs = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (procs > n) procs = n;
    int ready[2], go[2], out[2];
    if (pipe(ready) || pipe(go) || pipe(out)) { perror("pipe"); exit(1); }
    fflush(stdout);
    pid_t *pids = calloc((size_t)procs, sizeof(pid_t));
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); exit(1); }
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            close(out[0]);
            SSL_CTX *ctx = w4s_ctx();
            SSL_SESSION *sess = resume ? w4s_session(ctx, port, path) : NULL;
            if (write(ready[1], "r", 1) != 1) _exit(1);
            char b;
            if (read(go[0], &b, 1) != 0) _exit(1);  // the parent closes go[1]: everyone starts at once
            w4s_result_t res = {0};
            w4s_worker(port, path, n / procs + (i < n % procs), ctx, sess, &res);
            if (write(out[1], &res, sizeof(res)) != sizeof(res)) _exit(1);
            _exit(0);
        }
        pids[i] = pid;
    }
    close(ready[1]);
    close(go[0]);
    close(out[1]);
    for (int i = 0; i < procs; i++) {
        char b;
        if (read(ready[0], &b, 1) != 1) { fprintf(stderr, "w4: a worker failed before the start\n"); exit(1); }
    }
    double t0 = now_s();
    close(go[1]);
    double end = t0;
    int resumed = 0;
    for (int i = 0; i < procs; i++) {
        w4s_result_t res;
        if (read(out[0], &res, sizeof(res)) != sizeof(res)) { fprintf(stderr, "w4: a worker failed\n"); exit(1); }
        if (res.end > end) end = res.end;
        resumed += res.resumed;
    }
    double el = end - t0;
    long sum_kib = peak_rss_kib(), max_kib = sum_kib;
    double cpu = cpu_ms();
    for (int i = 0; i < procs; i++) {
        int status;
        struct rusage u;
        if (wait4(pids[i], &status, 0, &u) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "w4: a worker failed\n");
            exit(1);
        }
        sum_kib += u.ru_maxrss;
        if (u.ru_maxrss > max_kib) max_kib = u.ru_maxrss;
        cpu += (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
    }
    printf("{\"client\":\"c\",\"workload\":\"w4\",\"value\":%.1f,\"unit\":\"conn/s\",\"seconds\":%.3f,"
           "\"peak_rss_mib\":%.1f,\"peak_rss_max_mib\":%.1f,\"processes\":%d,\"resumed\":%d,\"cpu_ms\":%.1f}\n",
           n / el, el, sum_kib / 1024.0, max_kib / 1024.0, procs, resumed, cpu);
}

// idle: n connections opened (TCP connect + upgrade, at most IDLE_WINDOW opening at once, like the Swift drivers'
// 500), spread over the destination addresses 127.0.0.1 ... 127.0.0.A (the echo server listens on each with
// WSBENCH_ADDRESSES=A; one address and port give a client at most ~28,000 ephemeral ports), then left idle. What
// an idle connection costs this client is what it must keep: its descriptor (an int) and its epoll registration
// (kernel memory, not RSS). Reports RSS after − before ÷ n (one connection opened and closed first, and the
// in-flight handshake slots touched, so epoll, stdio and those slots are in "before"), the time to open them, and
// with WSBENCH_SERVER_PID the echo server's RSS at the same two moments. The connections end with a reset
// (SO_LINGER 0): no TIME_WAIT left on this side's ports for the next client of the round.
#define IDLE_WINDOW 500

typedef struct {
    int fd, idx, state;  // state 0 connecting, 1 awaiting 101
    size_t len;
    char buf[512];
} idle_slot_t;

// The value in KiB of a /proc/PID/status field (VmRSS, VmHWM) of the process `pid` names ("self"), or -1.
static long status_kib(const char *pid, const char *field) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%s/status", pid);
    FILE *f = fopen(path, "r");
    char line[256];
    size_t fl = strlen(field);
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') v = strtol(line + fl + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

static int open_socket_at(int port, int address_index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)address_index);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) { perror("connect"); exit(1); }
    return fd;
}

static void idle_workload(int port, const char *path, int n, int addresses) {
    const uint64_t idle_tag = UINT64_MAX;  // epoll data of an open, idle connection
    const char *server = getenv("WSBENCH_SERVER_PID");
    if (server && !*server) server = NULL;
    ep = epoll_create1(0);
    buf_t in = {0};
    close(ws_connect(port, path, &in, 0));
    free(in.p);
    idle_slot_t *slots = malloc(sizeof(idle_slot_t) * IDLE_WINDOW);
    memset(slots, 0, sizeof(idle_slot_t) * IDLE_WINDOW);
    int free_slots[IDLE_WINDOW], nfree = IDLE_WINDOW;
    for (int i = 0; i < IDLE_WINDOW; i++) free_slots[i] = IDLE_WINDOW - 1 - i;
    char req[512];
    int rl = snprintf(req, sizeof(req), HANDSHAKE_FMT, path, port);
    struct epoll_event evs[256];
    long before = status_kib("self", "VmRSS"), server_before = server ? status_kib(server, "VmRSS") : -1;
    int *fds = malloc(sizeof(int) * (size_t)n);
    int started = 0, opened = 0;
    double t0 = now_s();
    while (opened < n) {
        while (started < n && nfree > 0) {
            idle_slot_t *sl = &slots[free_slots[--nfree]];
            sl->fd = open_socket_at(port, started % addresses);
            sl->idx = started++;
            sl->state = 0;
            sl->len = 0;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)(sl - slots)};
            epoll_ctl(ep, EPOLL_CTL_ADD, sl->fd, &ev);
        }
        int k = epoll_wait(ep, evs, 256, -1);
        for (int j = 0; j < k; j++) {
            if (evs[j].data.u64 == idle_tag) { fprintf(stderr, "idle: an open connection got data or closed\n"); exit(1); }
            idle_slot_t *sl = &slots[evs[j].data.u64];
            if (sl->state == 0) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { fprintf(stderr, "idle: connect %d: %s\n", sl->idx, strerror(err)); exit(1); }
                if (write(sl->fd, req, (size_t)rl) != rl) { perror("idle: write"); exit(1); }
                sl->state = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(sl - slots)};
                epoll_ctl(ep, EPOLL_CTL_MOD, sl->fd, &ev);
                continue;
            }
            ssize_t r = read(sl->fd, sl->buf + sl->len, sizeof(sl->buf) - 1 - sl->len);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { fprintf(stderr, "idle: handshake read failed on connection %d\n", sl->idx); exit(1); }
            sl->len += (size_t)r;
            sl->buf[sl->len] = 0;
            if (!strstr(sl->buf, "\r\n\r\n")) {
                if (sl->len == sizeof(sl->buf) - 1) { fprintf(stderr, "idle: response too long\n"); exit(1); }
                continue;
            }
            if (strncmp(sl->buf, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "idle: no 101\n"); exit(1); }
            fds[sl->idx] = sl->fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = idle_tag};
            epoll_ctl(ep, EPOLL_CTL_MOD, sl->fd, &ev);
            free_slots[nfree++] = (int)(sl - slots);
            opened++;
        }
    }
    double el = now_s() - t0;
    long after = status_kib("self", "VmRSS"), server_after = server ? status_kib(server, "VmRSS") : -1;
    long peak = peak_rss_kib();
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < n; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
        close(fds[i]);
    }
    printf("{\"client\":\"c\",\"workload\":\"idle\",\"value\":%.1f,\"unit\":\"MiB\",\"seconds\":%.3f,\"peak_rss_mib\":%.1f,"
           "\"cpu_ms\":%.1f,\"rss_before_mib\":%.1f,\"rss_after_mib\":%.1f,\"kib_per_connection\":%.3f,\"addresses\":%d",
           after / 1024.0, el, peak / 1024.0, cpu_ms(), before / 1024.0, after / 1024.0, (double)(after - before) / n,
           addresses);
    if (server_before >= 0 && server_after >= 0)
        printf(",\"server_rss_before_mib\":%.1f,\"server_rss_after_mib\":%.1f,\"server_kib_per_connection\":%.2f",
               server_before / 1024.0, server_after / 1024.0, (double)(server_after - server_before) / n);
    printf("}\n");
    free(fds);
    free(slots);
}

// ---- W5: permessage-deflate (RFC 7692) with zlib ----
// `count` text messages of `size` bytes from the same corpus as the Swift drivers (BenchSupport's textCorpus), at
// most `window` unanswered. Each message is compressed as our SDK compresses it (zlib level 6, memLevel 8, raw
// deflate with the window the server answered, a sync flush, the 00 00 ff ff tail removed) and sent as one masked
// frame with RSV1; each echo is inflated (tail put back) and compared byte for byte with the message sent. The offer
// is our SDK's: `permessage-deflate; client_max_window_bits`, plus both no_context_takeover parameters with --w5-nct 1
// (then the deflater is reset after every message, and the inflater too if the server said so).
#include <zlib.h>

// SplitMix64 with BenchSupport's seed: the same picks, in the same order, as textCorpus(count:size:).
static uint64_t corpus_state;
static uint64_t corpus_next(void) {
    corpus_state += 0x9E3779B97F4A7C15ull;
    uint64_t z = corpus_state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D49BB4633111EBull;
    return z ^ (z >> 31);
}
static int corpus_pick(int n) { return (int)(corpus_next() % (uint64_t)n); }

// The number of distinct W5 messages for a message size, as BenchSupport's w5DistinctMessages(size:).
static int w5_distinct(size_t size) {
    size_t n = (256 * 1024) / size;
    return n > 16 ? (int)n : 16;
}

// textCorpus(count:size:): `count` consecutive slices of `size` bytes of JSON log lines, as one buffer.
static uint8_t *text_corpus(int count, size_t size) {
    static const char *words[] = {
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on",
        "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
        "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
        "would", "who", "so", "no", "connection", "message", "server", "client", "request", "latency", "window",
        "buffer", "session", "timeout", "frame", "handshake", "compression", "socket", "event",
    };
    static const char *actions[] = {"login", "logout", "page_view", "search", "add_to_cart", "checkout", "upload",
                                    "comment"};
    static const char *levels[] = {"debug", "info", "info", "info", "warning", "error"};
    const int nw = (int)(sizeof(words) / sizeof(words[0]));
    corpus_state = 0x5EED000000000007ull;
    size_t total = (size_t)count * size, len = 0;
    uint8_t *text = malloc(total + 4096);
    char sentence[2048], line[3072];
    for (long seq = 0; len < total; seq++) {
        int a = corpus_pick(nw), b = corpus_pick(nw);  // word(): the lower of two picks
        const char *first = words[a < b ? a : b];
        int sl = snprintf(sentence, sizeof(sentence), "%s", first);
        if (sentence[0] >= 'a' && sentence[0] <= 'z') sentence[0] = (char)(sentence[0] - 'a' + 'A');
        int nwords = 5 + corpus_pick(12);
        for (int i = 0; i < nwords; i++) {
            a = corpus_pick(nw), b = corpus_pick(nw);
            sl += snprintf(sentence + sl, sizeof(sentence) - (size_t)sl, " %s", words[a < b ? a : b]);
        }
        // The fields in the order Swift evaluates the interpolations: left to right.
        long long ts = 1700000000000ll + seq * 37 + corpus_pick(30);
        const char *level = levels[corpus_pick(6)];
        int user = 1000 + corpus_pick(500);
        const char *action = actions[corpus_pick(8)];
        a = corpus_pick(nw), b = corpus_pick(nw);
        const char *pathword = words[a < b ? a : b];
        int pathnum = corpus_pick(10000);
        int ll = snprintf(line, sizeof(line),
                          "{\"seq\":%ld,\"ts\":%lld,\"level\":\"%s\",\"user\":\"user_%d\",\"action\":\"%s\","
                          "\"path\":\"/api/v1/%s/%d\",\"msg\":\"%s.\"}\n",
                          seq, ts, level, user, action, pathword, pathnum, sentence);
        if (len + (size_t)ll > total + 4096) break;
        memcpy(text + len, line, (size_t)ll);
        len += (size_t)ll;
    }
    return text;
}

// FNV-1a (64-bit) of the corpus: the drivers print the same, so a run shows that every client sent the same bytes.
static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// Connect + upgrade with a Sec-WebSocket-Extensions offer (as ws_connect); the server's extensions answer, or "" if
// none, goes to answer. Leftover bytes stay in *in.
static int ws_connect_offering(int port, const char *path, buf_t *in, int secure, const char *offer, char *answer,
                               size_t answer_cap) {
    int fd = open_socket(port, 0);
    if (secure) tls_connect(fd);
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Extensions: %s\r\n\r\n",
                     path, port, offer);
    if (io(fd, 1, req, (size_t)n) != n) { fprintf(stderr, "short handshake write\n"); exit(1); }
    answer[0] = 0;
    for (;;) {
        buf_reserve(in, 4096);
        ssize_t r = io(fd, 0, in->p + in->len, in->cap - in->len - 1);
        if (r <= 0) { fprintf(stderr, "handshake read failed\n"); exit(1); }
        in->len += (size_t)r;
        in->p[in->len] = 0;
        char *end = strstr((char *)in->p, "\r\n\r\n");
        if (!end) continue;
        if (strncmp((char *)in->p, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "no 101\n"); exit(1); }
        for (char *h = strstr((char *)in->p, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
            if (strncasecmp(h + 2, "Sec-WebSocket-Extensions:", 25) != 0) continue;
            const char *v = h + 2 + 25;
            while (*v == ' ') v++;
            const char *eol = strstr(v, "\r\n");
            snprintf(answer, answer_cap, "%.*s", (int)(eol - v), v);
        }
        in->off = (size_t)((uint8_t *)end + 4 - in->p);
        if (in->off == in->len) in->off = in->len = 0;
        break;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

// The value of window-bits parameter `name` in an extensions answer, or 15 if absent.
static int answer_bits(const char *answer, const char *name) {
    const char *p = strstr(answer, name);
    if (!p || p[strlen(name)] != '=') return 15;
    return atoi(p + strlen(name) + 1);
}

// Like take_frame, and also gives the first header byte and where the payload lies (valid until *b changes).
static int take_frame_payload(buf_t *b, uint8_t *b0, const uint8_t **payload, size_t *plen) {
    if (b->len - b->off < 2) return 0;
    size_t len_before = b->len;
    uint8_t first = b->p[b->off], op;
    if (!take_frame(b, &op, plen)) return 0;
    // take_frame consumed header + payload (and emptied the buffer if nothing follows): the payload is the frame's
    // last *plen bytes.
    size_t frame_end = b->off == 0 && b->len == 0 ? len_before : b->off;
    *payload = b->p + frame_end - *plen;
    *b0 = first;
    return 1;
}

static void w5(int port, const char *path, long count, size_t size, long window, int nct, int secure) {
    int distinct = w5_distinct(size);
    uint8_t *corpus = text_corpus(distinct, size);
    uint64_t corpus_hash = fnv1a(corpus, (size_t)distinct * size);
    buf_t in = {0}, out = {0};
    char answer[256];
    const char *offer = nct ? "permessage-deflate; client_no_context_takeover; server_no_context_takeover; "
                              "client_max_window_bits"
                            : "permessage-deflate; client_max_window_bits";
    int fd = ws_connect_offering(port, path, &in, secure, offer, answer, sizeof(answer));
    if (strncmp(answer, "permessage-deflate", 18) != 0) {
        fprintf(stderr, "the server did not accept permessage-deflate\n");
        exit(1);
    }
    int client_bits = answer_bits(answer, "client_max_window_bits");
    int server_bits = answer_bits(answer, "server_max_window_bits");
    int client_reset = nct || strstr(answer, "client_no_context_takeover") != NULL;
    int server_reset = strstr(answer, "server_no_context_takeover") != NULL;
    z_stream d = {0}, f = {0};
    // zlib cannot deflate with an 8-bit raw window; 9 is what our SDK uses then (RFC 7692 section 7.1.2.2 allows it
    // as long as no match reaches further than 256 bytes, which zlib's 9-bit deflater never does).
    if (deflateInit2(&d, 6, Z_DEFLATED, -(client_bits < 9 ? 9 : client_bits), 8, Z_DEFAULT_STRATEGY) != Z_OK ||
        inflateInit2(&f, -server_bits) != Z_OK) {
        fprintf(stderr, "zlib init failed\n");
        exit(1);
    }
    size_t zcap = deflateBound(&d, size) + 16;
    uint8_t *z = malloc(zcap);
    uint8_t *inflated = malloc(size + 64);
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    ep = epoll_create1(0);
    long sent = 0, recvd = 0;
    unsigned long long wire = 0;
    double t0 = now_s();
    while (recvd < count) {
        while (sent < count && sent - recvd < window) {
            d.next_in = corpus + (size_t)(sent % distinct) * size;
            d.avail_in = (uInt)size;
            d.next_out = z;
            d.avail_out = (uInt)zcap;
            if (deflate(&d, Z_SYNC_FLUSH) != Z_OK || d.avail_in != 0 || d.avail_out == 0) {
                fprintf(stderr, "deflate failed\n");
                exit(1);
            }
            size_t zl = zcap - d.avail_out;
            if (zl < 4 || memcmp(z + zl - 4, tail, 4) != 0) { fprintf(stderr, "no sync-flush tail\n"); exit(1); }
            zl -= 4;
            if (client_reset) deflateReset(&d);
            size_t at = out.len;
            append_frame(&out, 0x1, z, zl);
            out.p[at] |= 0x40;  // RSV1: compressed
            wire += zl;
            sent++;
        }
        int all_out = flush(fd, &out);
        size_t got = fill(fd, &in);
        uint8_t b0;
        const uint8_t *payload;
        size_t pl;
        while (take_frame_payload(&in, &b0, &payload, &pl)) {
            if ((b0 & 0x0F) != 0x1) continue;
            const uint8_t *expected = corpus + (size_t)(recvd % distinct) * size;
            size_t produced = pl;
            if (b0 & 0x40) {
                f.next_out = inflated;
                f.avail_out = (uInt)(size + 64);
                f.next_in = (Bytef *)payload;
                f.avail_in = (uInt)pl;
                int rc = inflate(&f, Z_SYNC_FLUSH);
                if (rc == Z_OK || rc == Z_BUF_ERROR) {
                    f.next_in = (Bytef *)tail;
                    f.avail_in = 4;
                    rc = inflate(&f, Z_SYNC_FLUSH);
                }
                if ((rc != Z_OK && rc != Z_BUF_ERROR) || f.avail_in != 0) {
                    fprintf(stderr, "inflate failed on echo %ld (%d)\n", recvd, rc);
                    exit(1);
                }
                produced = size + 64 - f.avail_out;
                if (server_reset) inflateReset(&f);
                payload = inflated;
            }
            if (produced != size || memcmp(payload, expected, size) != 0) {
                fprintf(stderr, "echo %ld differs from the message sent\n", recvd);
                exit(1);
            }
            recvd++;
        }
        if (got == 0 && (all_out || sent - recvd >= window)) wait_io(fd, all_out);
    }
    double el = now_s() - t0;
    clean_close(fd, &in, &out);
    printf("{\"client\":\"c\",\"workload\":\"w5\",\"value\":%.1f,\"unit\":\"MB/s\",\"seconds\":%.3f,"
           "\"peak_rss_mib\":%.1f,\"cpu_ms\":%.1f,\"extensions\":\"%s\",\"corpus\":\"%016llx\","
           "\"compressed\":%.3f}\n",
           (double)count * (double)size / el / 1e6, el, peak_rss_kib() / 1024.0, cpu_ms(), answer,
           (unsigned long long)corpus_hash, (double)wire / ((double)count * (double)size));
}

int main(int argc, char **argv) {
    const char *workload = "w1", *url = "ws://127.0.0.1:9001/";
    long w3_mib = 512;
    long w5_size = 65536, w5_count = -1, w5_window = 16, w5_mib = 64;
    int w5_nct = 0;
    int conns = 1000, addresses = 1, procs = 0, resume = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--workload")) workload = argv[i + 1];
        else if (!strcmp(argv[i], "--url")) url = argv[i + 1];
        else if (!strcmp(argv[i], "--w3-mib")) w3_mib = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--connections")) conns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--addresses")) addresses = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 1;
        else if (!strcmp(argv[i], "--w5-size")) w5_size = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--w5-count")) w5_count = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--w5-window")) w5_window = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--w5-mib")) w5_mib = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--w5-nct")) w5_nct = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--client")) {}  // accepted for symmetry with wsbench
        else if (!strcmp(argv[i], "--procs")) procs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--resume")) resume = atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0) { r.rlim_cur = r.rlim_max; setrlimit(RLIMIT_NOFILE, &r); }
    char path[256];
    int port = port_from_url(url, path, sizeof(path));
    int secure = !strncmp(url, "wss://", 6);
    if (!strcmp(workload, "w1")) w1(port, path, secure);
    else if (!strcmp(workload, "w2")) stream("w2", port, path, 200000, 128, 1000, secure);
    else if (!strcmp(workload, "w3")) stream("w3", port, path, w3_mib * 16, 65536, 16, secure);
    else if (!strcmp(workload, "w5"))
        w5(port, path, w5_count > 0 ? w5_count : w5_mib * 1048576 / w5_size, (size_t)w5_size, w5_window, w5_nct, secure);
    else if (secure && !strcmp(workload, "w4")) w4_tls(port, path, conns, procs, resume);
    else if (secure) { fprintf(stderr, "%s has no wss variant in the C client\n", workload); return 2; }
    else if (!strcmp(workload, "w4")) w4(port, path, conns);
    else if (!strcmp(workload, "idle")) idle_workload(port, path, conns, addresses);
    else { fprintf(stderr, "unknown workload %s\n", workload); return 2; }
    return 0;
}
