// Thin shim over the system OpenSSL (libssl-dev): macros and variadic calls Swift cannot import,
// each wrapped as a prefixed static inline function with an explicit return type.
#ifndef CWS_OPENSSL_SHIM_H
#define CWS_OPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/bio.h>

static inline long cws_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long cws_ssl_set_sni(SSL *ssl, const char *host) {
    return SSL_set_tlsext_host_name(ssl, host);
}
static inline long cws_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long cws_bio_get_mem_data(BIO *bio, char **pp) {
    return BIO_get_mem_data(bio, pp);
}
static inline unsigned long cws_ssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
static inline int cws_tls1_2_version(void) { return TLS1_2_VERSION; }
static inline int cws_tls1_3_version(void) { return TLS1_3_VERSION; }
static inline long cws_ssl_mode_partial_write(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }

// ---------------------------------------------------------------------------------------------------------------
// WSEngineCIO: a socket BIO that never raises SIGPIPE.
// OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a reset connection. This BIO does the
// socket I/O itself with send(MSG_NOSIGNAL) / recv, so no process-wide signal disposition has to change and no
// memory-BIO copy is needed. The fd is stored in the BIO's data pointer; the BIO never closes it.
#include <sys/socket.h>
#include <errno.h>
#include <stdint.h>

static inline int cws_sockbio_write(BIO *bio, const char *buffer, int length) {
    int fd = (int)(intptr_t)BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t written = send(fd, buffer, (size_t)length, MSG_NOSIGNAL);
        if (written >= 0) return (int)written;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
        return -1;
    }
}
static inline int cws_sockbio_read(BIO *bio, char *buffer, int length) {
    int fd = (int)(intptr_t)BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t received = recv(fd, buffer, (size_t)length, 0);
        if (received >= 0) return (int)received;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
        return -1;
    }
}
static inline long cws_sockbio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio; (void)number; (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_DUP: return 1;
    default: return 0;
    }
}
/// A new method table for the no-SIGPIPE socket BIO (free with BIO_meth_free once no BIO uses it).
static inline BIO_METHOD *cws_sockbio_method_new(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cws nosigpipe socket");
    if (method == NULL) return NULL;
    if (!BIO_meth_set_write(method, cws_sockbio_write) || !BIO_meth_set_read(method, cws_sockbio_read)
        || !BIO_meth_set_ctrl(method, cws_sockbio_ctrl)) {
        BIO_meth_free(method);
        return NULL;
    }
    return method;
}
/// A BIO of `method` (from cws_sockbio_method_new) over `fd`; the caller keeps ownership of the fd.
static inline BIO *cws_sockbio_new(BIO_METHOD *method, int fd) {
    BIO *bio = BIO_new(method);
    if (bio == NULL) return NULL;
    BIO_set_data(bio, (void *)(intptr_t)fd);
    BIO_set_init(bio, 1);
    return bio;
}
static inline uint64_t cws_ssl_op_ignore_unexpected_eof(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
static inline uint64_t cws_ssl_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline int cws_ssl_filetype_pem(void) { return SSL_FILETYPE_PEM; }
static inline void cws_ssl_ctx_set_read_ahead(SSL_CTX *ctx, int yes) { SSL_CTX_set_read_ahead(ctx, yes); }

/// TLS inside TLS (wss through an https:// proxy): a filter BIO whose reads and writes are SSL_read/SSL_write on
/// `outer`, the connection to the proxy, with its want-read/want-write mapped to BIO retries. `outer` stays owned
/// by the caller (BIO_NOCLOSE); it must outlive the BIO.
static inline BIO *cws_bio_new_ssl_filter(SSL *outer) {
    BIO *bio = BIO_new(BIO_f_ssl());
    if (bio == NULL) return NULL;
    BIO_set_ssl(bio, outer, BIO_NOCLOSE);
    return bio;
}

#endif
