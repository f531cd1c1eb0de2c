// Neutral WebSocket echo server for the benchmarks (issue 7): single-threaded, epoll, non-blocking.
// Accepts RFC 6455 upgrades on 127.0.0.1:PORT, echoes every data frame back unmasked exactly as received
// (text / binary / continuation, FIN and RSV bits kept), answers ping with pong, ignores pong, echoes close
// and then closes the connection after flushing. No validation beyond what framing needs: it is a load
// generator's mirror, not a conformance peer.
//
// permessage-deflate (RFC 7692): when the upgrade offers it, the server accepts the first offer it can echo and
// answers with the parameters the client asked for (see negotiate_deflate). It never inflates: a compressed frame
// goes back exactly as it came, RSV1 kept, like every other frame.
//
// With a certificate and key it serves wss:// instead (TLS through OpenSSL on the same single thread: each
// batch of echoes leaves as full TLS records, partial writes on, reads until OpenSSL wants more input).
//
// Build: cc -O2 -o echo_server echo_server.c -lssl -lcrypto
// Run:   [WSBENCH_ADDRESSES=N] ./echo_server PORT [CERT.pem KEY.pem]   (N: also listen on 127.0.0.2 ... 127.0.0.N)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <malloc.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
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
    SSL *ssl;          // wss: the TLS connection (NULL on ws)
    buf_t in, out;
} conn_t;

static int ep;
static SSL_CTX *tls_ctx;  // wss only

// read(2)/write(2) or SSL_read/SSL_write: > 0 bytes, 0 end of stream, -1 would block (errno EAGAIN), -2 failed.
// A TLS call that needs the socket writable registers EPOLLOUT (conn_t.want_out) through *wants_out.
static ssize_t conn_io(conn_t *c, int writing, void *p, size_t n, int *wants_out) {
    if (!c->ssl) {
        for (;;) {
            ssize_t r = writing ? write(c->fd, p, n) : read(c->fd, p, n);
            if (r >= 0) return r;
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
        }
    }
    ERR_clear_error();
    int r = writing ? SSL_write(c->ssl, p, (int)(n > 1 << 30 ? 1 << 30 : n)) : SSL_read(c->ssl, p, (int)(n > 1 << 30 ? 1 << 30 : n));
    if (r > 0) return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_WRITE: if (wants_out) *wants_out = 1; /* fall through */
    case SSL_ERROR_WANT_READ: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: return -2;
    }
}

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

// Open connections. When the last one closes, the freed buffers go back to the system (malloc_trim), so that the
// idle workload's figure for this server's RSS per connection starts from the same point in every run.
static long live_connections;

static void conn_free(conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
    if (--live_connections == 0) malloc_trim(0);
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
        // TLS: a retry after WANT_WRITE passes at least as many bytes (the buffer may have moved:
        // SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
        ssize_t n = conn_io(c, 1, c->out.p + c->out.off, c->out.len - c->out.off, NULL);
        if (n > 0) { c->out.off += (size_t)n; continue; }
        if (n == -1) { set_events(c, 1); return 0; }
        return -1;
    }
    c->out.off = c->out.len = 0;
    set_events(c, 0);
    if (c->closing) {
        if (c->ssl) SSL_shutdown(c->ssl);
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

// permessage-deflate (RFC 7692) for an echo that never inflates. Echoing a compressed message verbatim is a valid
// server message because the client's inflater then sees exactly the byte sequence its own deflater produced, in
// the same order:
// - context takeover: message k was compressed against the client's history of messages 1..k-1; the echoes arrive
//   in the same order, so when the client inflates echo k its window holds the same messages 1..k-1 (uncompressed
//   messages, RSV1 clear, enter neither history, on either side);
// - window: the client compresses with client_max_window_bits (15 if not answered) and inflates with
//   server_max_window_bits (15 if not answered); the answer keeps the first no larger than the second, so no echo
//   refers further back than the client's inflater keeps;
// - no_context_takeover: a client that may reset its inflater after each message (server_no_context_takeover
//   answered) also resets its deflater after each one (client_no_context_takeover answered with it), so no echo
//   refers to an earlier message. client_no_context_takeover alone is fine: independently compressed messages
//   inflate with or without the previous window.
// The answer repeats what the offer asked for: server_no_context_takeover, server_max_window_bits=N,
// client_max_window_bits=N, client_no_context_takeover. It adds client_no_context_takeover when only the server's was
// asked for, and lowers client_max_window_bits to N (which the offer allows whenever it has that parameter) when
// server_max_window_bits=N asks for a smaller window than the client's. An offer it cannot echo (server_max_window_bits below
// the client's window with no way to lower that, or an unknown or malformed parameter) is skipped; without one it
// can accept, the upgrade carries no extension.

// The value of a window-bits parameter (8..15, optionally quoted), or -1.
static int window_value(const char *v, size_t n) {
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') { v++; n -= 2; }
    if (n == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + v[1] - '0';
    return -1;
}

// One offer (the text between commas): writes the answer into out and returns 1 if the server can echo it.
static int deflate_offer(const char *p, const char *end, char *out, size_t cap) {
    int server_nct = 0, client_nct = 0, server_bits = 0, client_bits = 0, client_bits_offered = 0, first = 1;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end;
        while (p < e && (*p == ' ' || *p == '\t')) p++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t')) te--;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ne = eq ? eq : te;
        while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
        const char *v = eq ? eq + 1 : NULL;
        while (v && v < te && (*v == ' ' || *v == '\t')) v++;
        size_t nl = (size_t)(ne - p), vl = v ? (size_t)(te - v) : 0;
#define IS(name) (nl == strlen(name) && strncasecmp(p, name, nl) == 0)
        if (first) {
            if (!IS("permessage-deflate") || v) return 0;
            first = 0;
        } else if (IS("server_no_context_takeover") && !v && !server_nct) server_nct = 1;
        else if (IS("client_no_context_takeover") && !v && !client_nct) client_nct = 1;
        else if (IS("server_max_window_bits") && v && !server_bits) {
            if ((server_bits = window_value(v, vl)) < 0) return 0;
        } else if (IS("client_max_window_bits") && !client_bits_offered) {
            client_bits_offered = 1;
            if (v && (client_bits = window_value(v, vl)) < 0) return 0;
        } else return 0;  // unknown, repeated or malformed parameter: decline this offer
#undef IS
        p = semi ? semi + 1 : end;
    }
    if (first) return 0;
    int ws = server_bits ? server_bits : 15;  // the client's inflater window
    if (client_bits_offered && (client_bits ? client_bits : 15) > ws) client_bits = ws;  // the offer allows lowering it
    if ((client_bits ? client_bits : 15) > ws) return 0;  // echoes would reach further back than the client keeps
    if (server_nct) client_nct = 1;
    size_t n = (size_t)snprintf(out, cap, "Sec-WebSocket-Extensions: permessage-deflate");
    if (server_nct) n += (size_t)snprintf(out + n, cap - n, "; server_no_context_takeover");
    if (client_nct) n += (size_t)snprintf(out + n, cap - n, "; client_no_context_takeover");
    if (server_bits) n += (size_t)snprintf(out + n, cap - n, "; server_max_window_bits=%d", server_bits);
    if (client_bits) n += (size_t)snprintf(out + n, cap - n, "; client_max_window_bits=%d", client_bits);
    snprintf(out + n, cap - n, "\r\n");
    return 1;
}

// A Sec-WebSocket-Extensions value: the answer to the first permessage-deflate offer the server can echo, if any.
static int negotiate_deflate(const char *value, const char *end, char *out, size_t cap) {
    while (value < end) {
        const char *comma = memchr(value, ',', (size_t)(end - value));
        const char *e = comma ? comma : end;
        if (deflate_offer(value, e, out, cap)) return 1;
        value = comma ? comma + 1 : end;
    }
    return 0;
}

static int handle_handshake(conn_t *c) {
    c->in.p[c->in.len] = 0;  // buf always has a spare byte (see on_readable)
    char *req = (char *)c->in.p + c->in.off;
    char *end = strstr(req, "\r\n\r\n");
    if (!end) return c->in.len > 65536 ? -1 : 0;
    size_t reqlen = (size_t)(end + 4 - req);
    char key[128] = {0};
    char extensions[256] = "";
    for (char *line = strstr(req, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Sec-WebSocket-Key:", 18) == 0) {
            h += 18;
            while (*h == ' ' || *h == '\t') h++;
            size_t n = 0;
            while (h[n] && h[n] != '\r' && h[n] != ' ' && n < sizeof(key) - 40) n++;
            memcpy(key, h, n);
            key[n] = 0;
        } else if (strncasecmp(h, "Sec-WebSocket-Extensions:", 25) == 0 && !extensions[0]) {
            char *eol = strstr(h, "\r\n");
            negotiate_deflate(h + 25, eol ? eol : end, extensions, sizeof(extensions));
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
    char resp[512];
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                      accept, extensions);
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
        int wants_out = 0;
        ssize_t n = conn_io(c, 0, c->in.p + c->in.len, c->in.cap - c->in.len - 1, &wants_out);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (!c->upgraded && handle_handshake(c) < 0) return -1;
            if (c->upgraded && !c->closing && process_frames(c) < 0) return -1;
            if (c->closing) break;
            // Plain: likely drained; level-triggered epoll will call again. TLS: OpenSSL may hold decrypted
            // records the socket no longer signals, so read until it wants more input.
            if (!c->ssl && (size_t)n < 65536) break;
            continue;
        }
        if (n == 0) return -1;
        if (n == -1) {
            if (wants_out) set_events(c, 1);
            break;
        }
        return -1;
    }
    return flush_out(c);
}

// Listening sockets: 127.0.0.1, and with WSBENCH_ADDRESSES=N also 127.0.0.2 ... 127.0.0.N (all on loopback). A
// client has at most ~28,000 ephemeral ports (ip_local_port_range) per destination address and port, so the idle
// workload spreads 100,000 connections over several destination addresses. Each listener is registered in epoll
// with its index + 1 as data.ptr (never a conn_t address).
#define MAX_LISTENERS 64
static int listeners[MAX_LISTENERS];
static int listener_count;

static int listen_on_addresses(int port) {
    const char *env = getenv("WSBENCH_ADDRESSES");
    int n = env ? atoi(env) : 1;
    if (n < 1) n = 1;
    if (n > MAX_LISTENERS) { fprintf(stderr, "WSBENCH_ADDRESSES: at most %d\n", MAX_LISTENERS); return -1; }
    int one = 1;
    for (int i = 0; i < n; i++) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)i);
        if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind"); return -1; }
        if (listen(lfd, 4096) < 0) { perror("listen"); return -1; }
        struct epoll_event lev = {.events = EPOLLIN, .data.ptr = (void *)(uintptr_t)(i + 1)};
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
        listeners[i] = lfd;
    }
    listener_count = n;
    return 0;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9001;
    signal(SIGPIPE, SIG_IGN);
    if (argc > 3) {
        tls_ctx = SSL_CTX_new(TLS_server_method());
        if (!tls_ctx || SSL_CTX_use_certificate_chain_file(tls_ctx, argv[2]) != 1 ||
            SSL_CTX_use_PrivateKey_file(tls_ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_read_ahead(tls_ctx, 1);
        SSL_CTX_set_default_read_buffer_len(tls_ctx, 65536);
        SSL_CTX_set_options(tls_ctx, SSL_OP_NO_RENEGOTIATION);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }

    int one = 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (listen_on_addresses(port) < 0) return 1;
    fprintf(stderr, "echo_server listening on %s://127.0.0.1:%d (%d address(es) from 127.0.0.1)\n",
            tls_ctx ? "wss" : "ws", port, listener_count);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if ((uintptr_t)c <= MAX_LISTENERS) {  // a listener (see listen_on_addresses)
                int lfd = listeners[(uintptr_t)c - 1];
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conn_t *nc = calloc(1, sizeof(conn_t));
                    nc->fd = fd;
                    live_connections++;
                    if (tls_ctx) {
                        nc->ssl = SSL_new(tls_ctx);
                        SSL_set_fd(nc->ssl, fd);
                        SSL_set_accept_state(nc->ssl);  // the handshake runs inside the first SSL_reads
                    }
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int rc = 0;
            if (evs[i].events & (EPOLLERR)) rc = -1;
            if (rc == 0 && (evs[i].events & EPOLLOUT)) rc = flush_out(c);
            // TLS: a read (or the handshake inside it) may have waited for EPOLLOUT.
            if (rc == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP) || (c->ssl && (evs[i].events & EPOLLOUT)))) {
                if (c->closing) {
                    // Drain and discard whatever follows the close frame.
                    char tmp[4096];
                    ssize_t r = conn_io(c, 0, tmp, sizeof(tmp), NULL);
                    if (r == 0 || r == -2) rc = -1;
                } else {
                    rc = on_readable(c);
                }
            }
            if (rc < 0) conn_free(c);
        }
    }
}
