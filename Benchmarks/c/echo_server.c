// Neutral WebSocket echo server for the benchmarks (issue 7): single-threaded, epoll, non-blocking.
// Accepts RFC 6455 upgrades on 127.0.0.1:PORT, echoes every data frame back unmasked exactly as received
// (text / binary / continuation, FIN and RSV bits kept), answers ping with pong, ignores pong, echoes close
// and then closes the connection after flushing. No validation beyond what framing needs: it is a load
// generator's mirror, not a conformance peer.
//
// Build: cc -O2 -o echo_server echo_server.c -lcrypto
// Run:   ./echo_server PORT
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    uint8_t *p;
    size_t len, cap, off;  // off: consumed prefix
} buf_t;

typedef struct {
    int fd;
    int upgraded;
    int closing;       // close echoed: shut down once the output is flushed
    int want_out;      // EPOLLOUT registered
    buf_t in, out;
} conn_t;

static int ep;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->off > 0 && (b->off == b->len || b->len + extra > b->cap)) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + extra > b->cap) {
        size_t nc = b->cap ? b->cap : 16384;
        while (nc < b->len + extra) nc *= 2;
        b->p = realloc(b->p, nc);
        if (!b->p) { perror("realloc"); exit(1); }
        b->cap = nc;
    }
}

static void conn_free(conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
}

static void set_events(conn_t *c, int want_out) {
    if (want_out == c->want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

// Returns -1 on a fatal error (connection freed by the caller), 0 otherwise.
static int flush_out(conn_t *c) {
    while (c->out.off < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
        if (n > 0) { c->out.off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { set_events(c, 1); return 0; }
        return -1;
    }
    c->out.off = c->out.len = 0;
    set_events(c, 0);
    if (c->closing) {
        shutdown(c->fd, SHUT_WR);
        return -1;  // done with this connection
    }
    return 0;
}

static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4]) {
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

static size_t put_header(uint8_t *h, uint8_t b0, uint64_t len) {
    h[0] = b0;
    if (len < 126) { h[1] = (uint8_t)len; return 2; }
    if (len <= 0xFFFF) { h[1] = 126; h[2] = (uint8_t)(len >> 8); h[3] = (uint8_t)len; return 4; }
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

// Parse as many complete frames as the input holds; echo each. Returns -1 to drop the connection.
static int process_frames(conn_t *c) {
    for (;;) {
        uint8_t *p = c->in.p + c->in.off;
        size_t avail = c->in.len - c->in.off;
        if (avail < 2) break;
        uint8_t b0 = p[0], b1 = p[1];
        int masked = b1 & 0x80;
        uint64_t len = b1 & 0x7F;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            hl = 10;
        }
        if (masked) hl += 4;
        if (avail < hl + len) {
            buf_reserve(&c->in, hl + len - avail);  // make room for the whole frame
            break;
        }
        const uint8_t *key = p + hl - 4;
        const uint8_t *payload = p + hl;
        uint8_t op = b0 & 0x0F;
        uint8_t out0 = b0;
        if (op == 0xA) {  // pong: ignore
            c->in.off += hl + len;
            continue;
        }
        if (op == 0x9) out0 = (uint8_t)((b0 & 0xF0) | 0xA);  // ping -> pong
        buf_reserve(&c->out, 10 + len);
        p = c->in.p + c->in.off;  // buf_reserve on out does not move in, but keep pointers honest
        key = p + hl - 4;
        payload = p + hl;
        uint8_t *o = c->out.p + c->out.len;
        size_t oh = put_header(o, out0, len);
        if (masked) unmask_copy(o + oh, payload, len, key);
        else memcpy(o + oh, payload, len);
        c->out.len += oh + len;
        c->in.off += hl + len;
        if (op == 0x8) {
            c->closing = 1;
            break;
        }
    }
    if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
    return 0;
}

static int handle_handshake(conn_t *c) {
    c->in.p[c->in.len] = 0;  // buf always has a spare byte (see on_readable)
    char *req = (char *)c->in.p + c->in.off;
    char *end = strstr(req, "\r\n\r\n");
    if (!end) return c->in.len > 65536 ? -1 : 0;
    size_t reqlen = (size_t)(end + 4 - req);
    char key[128] = {0};
    for (char *line = strstr(req, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Sec-WebSocket-Key:", 18) == 0) {
            h += 18;
            while (*h == ' ' || *h == '\t') h++;
            size_t n = 0;
            while (h[n] && h[n] != '\r' && h[n] != ' ' && n < sizeof(key) - 40) n++;
            memcpy(key, h, n);
            key[n] = 0;
        }
    }
    if (!key[0]) {
        const char *bad = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        buf_reserve(&c->out, strlen(bad));
        memcpy(c->out.p + c->out.len, bad, strlen(bad));
        c->out.len += strlen(bad);
        c->closing = 1;
        c->in.off = c->in.len = 0;
        return 0;
    }
    strcat(key, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)key, strlen(key), digest);
    unsigned char accept[64];
    EVP_EncodeBlock(accept, digest, SHA_DIGEST_LENGTH);
    char resp[256];
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n",
                      accept);
    buf_reserve(&c->out, (size_t)rl);
    memcpy(c->out.p + c->out.len, resp, (size_t)rl);
    c->out.len += (size_t)rl;
    c->in.off += reqlen;
    c->upgraded = 1;
    return 0;
}

static int on_readable(conn_t *c) {
    for (;;) {
        buf_reserve(&c->in, 65536 + 1);
        ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (!c->upgraded && handle_handshake(c) < 0) return -1;
            if (c->upgraded && !c->closing && process_frames(c) < 0) return -1;
            if (c->closing) break;
            if ((size_t)n < 65536) break;  // likely drained; level-triggered epoll will call again
            continue;
        }
        if (n == 0) return -1;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return -1;
    }
    return flush_out(c);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9001;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind"); return 1; }
    if (listen(lfd, 4096) < 0) { perror("listen"); return 1; }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "echo_server listening on 127.0.0.1:%d\n", port);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conn_t *nc = calloc(1, sizeof(conn_t));
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int rc = 0;
            if (evs[i].events & (EPOLLERR)) rc = -1;
            if (rc == 0 && (evs[i].events & EPOLLOUT)) rc = flush_out(c);
            if (rc == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP))) {
                if (c->closing) {
                    // Drain and discard whatever follows the close frame.
                    char tmp[4096];
                    ssize_t r = read(c->fd, tmp, sizeof(tmp));
                    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) rc = -1;
                } else {
                    rc = on_readable(c);
                }
            }
            if (rc < 0) conn_free(c);
        }
    }
}
