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
static inline long cws_ssl_mode_release_buffers(void) { return SSL_MODE_RELEASE_BUFFERS; }

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

// ---------------------------------------------------------------------------------------------------------------
// WSEngineCIO: trust roots and client identities from PEM text in memory, and private keys with a password.
#include <openssl/pem.h>
#include <string.h>

/// The PEM password callback: the password passed as `userdata`, or a failure when there is none (OpenSSL's
/// default callback would prompt on the terminal instead).
static inline int cws_pem_password(char *buffer, int size, int rwflag, void *userdata) {
    (void)rwflag;
    if (userdata == NULL || size <= 0) return -1;
    size_t length = strlen((const char *)userdata);
    if (length > (size_t)size) length = (size_t)size;
    memcpy(buffer, userdata, length);
    return (int)length;
}

/// Adds every certificate in the PEM text to the context's trust store. Returns how many were added (0: none was
/// found), or -1 on a failure (the OpenSSL error queue says which).
static inline int cws_ssl_ctx_add_trusted_pem(SSL_CTX *ctx, const char *data, int length) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return -1;
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, cws_pem_password, NULL);
    BIO_free(bio);
    if (infos == NULL) return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int added = 0;
    for (int index = 0; index < sk_X509_INFO_num(infos); index++) {
        X509_INFO *info = sk_X509_INFO_value(infos, index);
        if (info->x509 == NULL) continue;
        if (X509_STORE_add_cert(store, info->x509) != 1) { added = -1; break; }
        added++;
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    return added;
}

/// Uses the PEM text (the leaf first, then any intermediates) as the context's certificate chain, as
/// SSL_CTX_use_certificate_chain_file does with a file. Returns 1 on success.
static inline int cws_ssl_ctx_use_certificate_chain_pem(SSL_CTX *ctx, const char *data, int length) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return 0;
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, cws_pem_password, NULL);
    int ok = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    if (ok && SSL_CTX_clear_chain_certs(ctx) != 1) ok = 0;
    while (ok) {
        X509 *intermediate = PEM_read_bio_X509(bio, NULL, cws_pem_password, NULL);
        if (intermediate == NULL) {
            // The end of the text reads as "no start line": not an error.
            unsigned long error = ERR_peek_last_error();
            if (ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE) ERR_clear_error();
            else ok = 0;
            break;
        }
        if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) { X509_free(intermediate); ok = 0; }
    }
    BIO_free(bio);
    return ok;
}

/// Reads a PEM private key from `bio` (decrypted with `password`, which may be NULL) and makes it the context's.
static inline int cws_ssl_ctx_use_private_key_bio(SSL_CTX *ctx, BIO *bio, const char *password) {
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, cws_pem_password, (void *)password);
    if (key == NULL) return 0;
    int ok = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    return ok == 1;
}
/// The PEM private key file at `path`, decrypted with `password` (may be NULL). Returns 1 on success.
static inline int cws_ssl_ctx_use_private_key_file(SSL_CTX *ctx, const char *path, const char *password) {
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) return 0;
    int ok = cws_ssl_ctx_use_private_key_bio(ctx, bio, password);
    BIO_free(bio);
    return ok;
}
/// The PEM private key text, decrypted with `password` (may be NULL). Returns 1 on success.
static inline int cws_ssl_ctx_use_private_key_pem(SSL_CTX *ctx, const char *data, int length, const char *password) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return 0;
    int ok = cws_ssl_ctx_use_private_key_bio(ctx, bio, password);
    BIO_free(bio);
    return ok;
}

/// TLS inside TLS (wss through an https:// proxy): a filter BIO whose reads and writes are SSL_read/SSL_write on
/// `outer`, the connection to the proxy, with its want-read/want-write mapped to BIO retries. `outer` stays owned
/// by the caller (BIO_NOCLOSE); it must outlive the BIO.
static inline BIO *cws_bio_new_ssl_filter(SSL *outer) {
    BIO *bio = BIO_new(BIO_f_ssl());
    if (bio == NULL) return NULL;
    BIO_set_ssl(bio, outer, BIO_NOCLOSE);
    return bio;
}

// ---------------------------------------------------------------------------------------------------------------
// WSEngineCIO: client TLS session resumption (TLSSessionCache.swift). Client-side caching with OpenSSL's internal
// store off: every new session goes to the new-session callback, and the engine keeps it.
static inline long cws_ssl_ctx_set_client_session_cache(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

#endif
