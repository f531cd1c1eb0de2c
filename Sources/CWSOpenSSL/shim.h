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
// Trust roots from PEM text in memory (the Curl engine and WSTesting; the CIO engine has its own copy in
// CWSLazyOpenSSL, which loads OpenSSL on first use).
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

#endif
