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

#endif
