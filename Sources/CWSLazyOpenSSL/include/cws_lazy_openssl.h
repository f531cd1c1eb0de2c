// The system OpenSSL for the CIO engine, loaded on first use (dlopen) rather than linked: a process that only opens
// ws:// connections never maps libssl and libcrypto (≈ 1.7 MiB resident at start: their relocations, symbol tables
// and initialisers). The OpenSSL headers give the types and constants; every function the engine calls is reached
// through a `cwsl_` wrapper that calls the loaded library. `cwsl_openssl_load` must have succeeded before any other
// `cwsl_` function is called.
#ifndef CWS_LAZY_OPENSSL_H
#define CWS_LAZY_OPENSSL_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/bio.h>
#include <stdint.h>

/// Loads libssl (and with it libcrypto) once per process and resolves the functions the engine uses. Returns 1 when
/// they are available (every later call returns 1 at once), 0 when not, with `*error` (if not NULL) set to a static
/// description of why.
int cwsl_openssl_load(const char **error);

// Constants (macros Swift cannot import); no library call.
static inline unsigned long cwsl_ssl_op_no_compression(void) { return SSL_OP_NO_COMPRESSION; }
static inline int cwsl_tls1_2_version(void) { return TLS1_2_VERSION; }
static inline int cwsl_tls1_3_version(void) { return TLS1_3_VERSION; }
static inline long cwsl_ssl_mode_partial_write(void) {
    return SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
}
static inline long cwsl_ssl_mode_release_buffers(void) { return SSL_MODE_RELEASE_BUFFERS; }
static inline uint64_t cwsl_ssl_op_ignore_unexpected_eof(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
static inline uint64_t cwsl_ssl_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }

// Macros and compound calls (see lazy_openssl.c).
long cwsl_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version);
long cwsl_ssl_set_sni(SSL *ssl, const char *host);
long cwsl_ssl_ctx_set_mode(SSL_CTX *ctx, long mode);
void cwsl_ssl_ctx_set_read_ahead(SSL_CTX *ctx, int yes);
long cwsl_ssl_ctx_set_client_session_cache(SSL_CTX *ctx);
/// A new method table for a socket BIO that sends with MSG_NOSIGNAL (free with BIO_meth_free once no BIO uses it).
BIO_METHOD *cwsl_sockbio_method_new(void);
/// A BIO of `method` (from cwsl_sockbio_method_new) over `fd`; the caller keeps ownership of the fd.
BIO *cwsl_sockbio_new(BIO_METHOD *method, int fd);
/// Adds every certificate in the PEM text to the context's trust store: how many were added, or -1 on a failure.
int cwsl_ssl_ctx_add_trusted_pem(SSL_CTX *ctx, const char *data, int length);
/// Uses the PEM text (leaf first, then intermediates) as the context's certificate chain. Returns 1 on success.
int cwsl_ssl_ctx_use_certificate_chain_pem(SSL_CTX *ctx, const char *data, int length);
/// The PEM private key file at `path`, decrypted with `password` (may be NULL). Returns 1 on success.
int cwsl_ssl_ctx_use_private_key_file(SSL_CTX *ctx, const char *path, const char *password);
/// The PEM private key text, decrypted with `password` (may be NULL). Returns 1 on success.
int cwsl_ssl_ctx_use_private_key_pem(SSL_CTX *ctx, const char *data, int length, const char *password);
/// A filter BIO whose reads and writes are SSL_read/SSL_write on `outer` (TLS inside TLS); `outer` stays the caller's.
BIO *cwsl_bio_new_ssl_filter(SSL *outer);

// The library functions the engine calls, each forwarding to the loaded libssl/libcrypto.
void cwsl_BIO_clear_flags(BIO *b, int flags);
long cwsl_BIO_ctrl(BIO *bp, int cmd, long larg, void *parg);
const BIO_METHOD *cwsl_BIO_f_ssl(void);
int cwsl_BIO_free(BIO *a);
void *cwsl_BIO_get_data(BIO *a);
int cwsl_BIO_get_new_index(void);
void cwsl_BIO_meth_free(BIO_METHOD *biom);
BIO_METHOD *cwsl_BIO_meth_new(int type, const char *name);
int cwsl_BIO_meth_set_ctrl(BIO_METHOD *biom, long (*ctrl)(BIO *, int, long, void *));
int cwsl_BIO_meth_set_read(BIO_METHOD *biom, int (*read)(BIO *, char *, int));
int cwsl_BIO_meth_set_write(BIO_METHOD *biom, int (*write)(BIO *, const char *, int));
BIO *cwsl_BIO_new(const BIO_METHOD *type);
BIO *cwsl_BIO_new_file(const char *filename, const char *mode);
BIO *cwsl_BIO_new_mem_buf(const void *buf, int len);
void cwsl_BIO_set_data(BIO *a, void *ptr);
void cwsl_BIO_set_flags(BIO *b, int flags);
void cwsl_BIO_set_init(BIO *a, int init);
int cwsl_CRYPTO_get_ex_new_index(int class_index, long argl, void *argp,
    CRYPTO_EX_new *new_func, CRYPTO_EX_dup *dup_func, CRYPTO_EX_free *free_func);
void cwsl_ERR_clear_error(void);
void cwsl_ERR_error_string_n(unsigned long e, char *buf, size_t len);
unsigned long cwsl_ERR_get_error(void);
unsigned long cwsl_ERR_peek_last_error(void);
void cwsl_EVP_PKEY_free(EVP_PKEY *pkey);
int cwsl_OPENSSL_sk_num(const OPENSSL_STACK *);
void cwsl_OPENSSL_sk_pop_free(OPENSSL_STACK *st, void (*func)(void *));
void *cwsl_OPENSSL_sk_value(const OPENSSL_STACK *, int);
struct stack_st_X509_INFO *cwsl_PEM_X509_INFO_read_bio(BIO *bp, struct stack_st_X509_INFO *sk,
    pem_password_cb *cb, void *u);
EVP_PKEY *cwsl_PEM_read_bio_PrivateKey(BIO *out, EVP_PKEY **x, pem_password_cb *cb, void *u);
X509 *cwsl_PEM_read_bio_X509(BIO *out, X509 **x, pem_password_cb *cb, void *u);
X509 *cwsl_PEM_read_bio_X509_AUX(BIO *out, X509 **x, pem_password_cb *cb, void *u);
const char *cwsl_SSL_CIPHER_get_name(const SSL_CIPHER *c);
int cwsl_SSL_CTX_check_private_key(const SSL_CTX *ctx);
long cwsl_SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg);
void cwsl_SSL_CTX_free(SSL_CTX *);
X509_STORE *cwsl_SSL_CTX_get_cert_store(const SSL_CTX *);
int cwsl_SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *CAfile, const char *CApath);
SSL_CTX *cwsl_SSL_CTX_new(const SSL_METHOD *meth);
void cwsl_SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(struct ssl_st *ssl, SSL_SESSION *sess));
int cwsl_SSL_CTX_set_default_verify_paths(SSL_CTX *ctx);
uint64_t cwsl_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op);
void cwsl_SSL_CTX_set_verify(SSL_CTX *ctx, int mode, SSL_verify_cb callback);
int cwsl_SSL_CTX_use_PrivateKey(SSL_CTX *ctx, EVP_PKEY *pkey);
int cwsl_SSL_CTX_use_certificate(SSL_CTX *ctx, X509 *x);
int cwsl_SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file);
SSL_SESSION *cwsl_SSL_SESSION_dup(const SSL_SESSION *src);
void cwsl_SSL_SESSION_free(SSL_SESSION *ses);
int cwsl_SSL_SESSION_get_protocol_version(const SSL_SESSION *s);
long cwsl_SSL_SESSION_get_time(const SSL_SESSION *s);
long cwsl_SSL_SESSION_get_timeout(const SSL_SESSION *s);
int cwsl_SSL_SESSION_is_resumable(const SSL_SESSION *s);
long cwsl_SSL_ctrl(SSL *ssl, int cmd, long larg, void *parg);
int cwsl_SSL_do_handshake(SSL *s);
void cwsl_SSL_free(SSL *ssl);
void cwsl_SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *len);
X509_VERIFY_PARAM *cwsl_SSL_get0_param(SSL *ssl);
const SSL_CIPHER *cwsl_SSL_get_current_cipher(const SSL *s);
int cwsl_SSL_get_error(const SSL *s, int ret_code);
void *cwsl_SSL_get_ex_data(const SSL *ssl, int idx);
long cwsl_SSL_get_verify_result(const SSL *ssl);
const char *cwsl_SSL_get_version(const SSL *s);
int cwsl_SSL_has_pending(const SSL *s);
SSL *cwsl_SSL_new(SSL_CTX *ctx);
int cwsl_SSL_read(SSL *ssl, void *buf, int num);
int cwsl_SSL_session_reused(const SSL *s);
int cwsl_SSL_set1_host(SSL *s, const char *hostname);
int cwsl_SSL_set_alpn_protos(SSL *ssl, const unsigned char *protos, unsigned int protos_len);
void cwsl_SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio);
void cwsl_SSL_set_connect_state(SSL *s);
void cwsl_SSL_set_default_read_buffer_len(SSL *s, size_t len);
int cwsl_SSL_set_ex_data(SSL *ssl, int idx, void *data);
void cwsl_SSL_set_hostflags(SSL *s, unsigned int flags);
int cwsl_SSL_set_session(SSL *to, SSL_SESSION *session);
int cwsl_SSL_shutdown(SSL *s);
int cwsl_SSL_write(SSL *ssl, const void *buf, int num);
const SSL_METHOD *cwsl_TLS_client_method(void);
void cwsl_X509_INFO_free(X509_INFO *a);
int cwsl_X509_STORE_add_cert(X509_STORE *ctx, X509 *x);
int cwsl_X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM *param, const char *ipasc);
void cwsl_X509_free(X509 *a);
const char *cwsl_X509_verify_cert_error_string(long n);

#endif
