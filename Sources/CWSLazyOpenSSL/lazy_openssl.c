// OpenSSL loaded on first use: see include/cws_lazy_openssl.h.
#include "cws_lazy_openssl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#if OPENSSL_VERSION_MAJOR >= 3
#define CWSL_SONAME "libssl.so." OPENSSL_MSTR(OPENSSL_VERSION_MAJOR)
#else
#define CWSL_SONAME "libssl.so.1.1"
#endif

/// Every OpenSSL function the engine calls, once: the table below has a pointer for each, typed by OpenSSL's own
/// declaration, and the loader resolves each by name.
#define CWSL_FUNCTIONS(X) X(BIO_clear_flags) X(BIO_ctrl) X(BIO_f_ssl) X(BIO_free) X(BIO_get_data) \
    X(BIO_get_new_index) X(BIO_meth_free) X(BIO_meth_new) X(BIO_meth_set_ctrl) X(BIO_meth_set_read) \
    X(BIO_meth_set_write) X(BIO_new) X(BIO_new_file) X(BIO_new_mem_buf) X(BIO_set_data) X(BIO_set_flags) \
    X(BIO_set_init) X(CRYPTO_get_ex_new_index) X(ERR_clear_error) X(ERR_error_string_n) X(ERR_get_error) \
    X(ERR_peek_last_error) X(EVP_PKEY_free) X(OPENSSL_sk_num) X(OPENSSL_sk_pop_free) X(OPENSSL_sk_value) \
    X(PEM_X509_INFO_read_bio) X(PEM_read_bio_PrivateKey) X(PEM_read_bio_X509) X(PEM_read_bio_X509_AUX) \
    X(SSL_CIPHER_get_name) X(SSL_CTX_check_private_key) X(SSL_CTX_ctrl) X(SSL_CTX_free) X(SSL_CTX_get_cert_store) \
    X(SSL_CTX_load_verify_locations) X(SSL_CTX_new) X(SSL_CTX_sess_set_new_cb) X(SSL_CTX_set_default_verify_paths) \
    X(SSL_CTX_set_options) X(SSL_CTX_set_verify) X(SSL_CTX_use_PrivateKey) X(SSL_CTX_use_certificate) \
    X(SSL_CTX_use_certificate_chain_file) X(SSL_SESSION_dup) X(SSL_SESSION_free) X(SSL_SESSION_get_protocol_version) \
    X(SSL_SESSION_get_time) X(SSL_SESSION_get_timeout) X(SSL_SESSION_is_resumable) X(SSL_ctrl) X(SSL_do_handshake) \
    X(SSL_free) X(SSL_get0_alpn_selected) X(SSL_get0_param) X(SSL_get_current_cipher) X(SSL_get_error) \
    X(SSL_get_ex_data) X(SSL_get_verify_result) X(SSL_get_version) X(SSL_has_pending) X(SSL_new) X(SSL_read) \
    X(SSL_session_reused) X(SSL_set1_host) X(SSL_set_alpn_protos) X(SSL_set_bio) X(SSL_set_connect_state) \
    X(SSL_set_default_read_buffer_len) X(SSL_set_ex_data) X(SSL_set_hostflags) X(SSL_set_session) X(SSL_shutdown) \
    X(SSL_write) X(TLS_client_method) X(X509_INFO_free) X(X509_STORE_add_cert) X(X509_VERIFY_PARAM_set1_ip_asc) \
    X(X509_free) X(X509_verify_cert_error_string)

/// The loaded functions; written once, under `cwsl_once`, before `cwsl_loaded` is set.
static struct {
#define CWSL_FIELD(name) __typeof__(&name) name;
    CWSL_FUNCTIONS(CWSL_FIELD)
#undef CWSL_FIELD
} cwsl_table;

static pthread_once_t cwsl_once = PTHREAD_ONCE_INIT;
static int cwsl_loaded = 0;
static char cwsl_error[512];

static void cwsl_load_once(void) {
    // RTLD_LOCAL: the symbols are reached through this table only, and the library's own do not join the global
    // scope. A process that already links OpenSSL (libcurl, an application's own TLS) gets that same library.
    void *handle = dlopen(CWSL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *reason = dlerror();
        snprintf(cwsl_error, sizeof cwsl_error, "OpenSSL (%s) could not be loaded: %s", CWSL_SONAME,
                 reason != NULL ? reason : "unknown error");
        return;
    }
#define CWSL_LOAD(name)                                                                                       \
    cwsl_table.name = (__typeof__(cwsl_table.name))dlsym(handle, #name);                                      \
    if (cwsl_table.name == NULL) {                                                                            \
        snprintf(cwsl_error, sizeof cwsl_error, "OpenSSL (%s) has no %s", CWSL_SONAME, #name);                \
        return;                                                                                               \
    }
    CWSL_FUNCTIONS(CWSL_LOAD)
#undef CWSL_LOAD
    cwsl_loaded = 1;
}

int cwsl_openssl_load(const char **error) {
    pthread_once(&cwsl_once, cwsl_load_once);
    if (!cwsl_loaded && error != NULL) *error = cwsl_error;
    return cwsl_loaded;
}

// Each wrapper's prototype is the header's, which must match OpenSSL's (the compiler checks the table's types).
void cwsl_BIO_clear_flags(BIO *b, int flags) { cwsl_table.BIO_clear_flags(b, flags); }
long cwsl_BIO_ctrl(BIO *bp, int cmd, long larg, void *parg) { return cwsl_table.BIO_ctrl(bp, cmd, larg, parg); }
const BIO_METHOD *cwsl_BIO_f_ssl(void) { return cwsl_table.BIO_f_ssl(); }
int cwsl_BIO_free(BIO *a) { return cwsl_table.BIO_free(a); }
void *cwsl_BIO_get_data(BIO *a) { return cwsl_table.BIO_get_data(a); }
int cwsl_BIO_get_new_index(void) { return cwsl_table.BIO_get_new_index(); }
void cwsl_BIO_meth_free(BIO_METHOD *biom) { cwsl_table.BIO_meth_free(biom); }
BIO_METHOD *cwsl_BIO_meth_new(int type, const char *name) { return cwsl_table.BIO_meth_new(type, name); }
int cwsl_BIO_meth_set_ctrl(BIO_METHOD *biom, long (*ctrl)(BIO *, int, long, void *)) {
    return cwsl_table.BIO_meth_set_ctrl(biom, ctrl);
}
int cwsl_BIO_meth_set_read(BIO_METHOD *biom, int (*read)(BIO *, char *, int)) {
    return cwsl_table.BIO_meth_set_read(biom, read);
}
int cwsl_BIO_meth_set_write(BIO_METHOD *biom, int (*write)(BIO *, const char *, int)) {
    return cwsl_table.BIO_meth_set_write(biom, write);
}
BIO *cwsl_BIO_new(const BIO_METHOD *type) { return cwsl_table.BIO_new(type); }
BIO *cwsl_BIO_new_file(const char *filename, const char *mode) { return cwsl_table.BIO_new_file(filename, mode); }
BIO *cwsl_BIO_new_mem_buf(const void *buf, int len) { return cwsl_table.BIO_new_mem_buf(buf, len); }
void cwsl_BIO_set_data(BIO *a, void *ptr) { cwsl_table.BIO_set_data(a, ptr); }
void cwsl_BIO_set_flags(BIO *b, int flags) { cwsl_table.BIO_set_flags(b, flags); }
void cwsl_BIO_set_init(BIO *a, int init) { cwsl_table.BIO_set_init(a, init); }
int cwsl_CRYPTO_get_ex_new_index(int class_index, long argl, void *argp,
    CRYPTO_EX_new *new_func, CRYPTO_EX_dup *dup_func, CRYPTO_EX_free *free_func) {
    return cwsl_table.CRYPTO_get_ex_new_index(class_index, argl, argp, new_func, dup_func, free_func);
}
void cwsl_ERR_clear_error(void) { cwsl_table.ERR_clear_error(); }
void cwsl_ERR_error_string_n(unsigned long e, char *buf, size_t len) { cwsl_table.ERR_error_string_n(e, buf, len); }
unsigned long cwsl_ERR_get_error(void) { return cwsl_table.ERR_get_error(); }
unsigned long cwsl_ERR_peek_last_error(void) { return cwsl_table.ERR_peek_last_error(); }
void cwsl_EVP_PKEY_free(EVP_PKEY *pkey) { cwsl_table.EVP_PKEY_free(pkey); }
int cwsl_OPENSSL_sk_num(const OPENSSL_STACK * a0) { return cwsl_table.OPENSSL_sk_num(a0); }
void cwsl_OPENSSL_sk_pop_free(OPENSSL_STACK *st, void (*func)(void *)) { cwsl_table.OPENSSL_sk_pop_free(st, func); }
void *cwsl_OPENSSL_sk_value(const OPENSSL_STACK * a0, int a1) { return cwsl_table.OPENSSL_sk_value(a0, a1); }
struct stack_st_X509_INFO *cwsl_PEM_X509_INFO_read_bio(BIO *bp, struct stack_st_X509_INFO *sk,
    pem_password_cb *cb, void *u) {
    return cwsl_table.PEM_X509_INFO_read_bio(bp, sk, cb, u);
}
EVP_PKEY *cwsl_PEM_read_bio_PrivateKey(BIO *out, EVP_PKEY **x, pem_password_cb *cb, void *u) {
    return cwsl_table.PEM_read_bio_PrivateKey(out, x, cb, u);
}
X509 *cwsl_PEM_read_bio_X509(BIO *out, X509 **x, pem_password_cb *cb, void *u) {
    return cwsl_table.PEM_read_bio_X509(out, x, cb, u);
}
X509 *cwsl_PEM_read_bio_X509_AUX(BIO *out, X509 **x, pem_password_cb *cb, void *u) {
    return cwsl_table.PEM_read_bio_X509_AUX(out, x, cb, u);
}
const char *cwsl_SSL_CIPHER_get_name(const SSL_CIPHER *c) { return cwsl_table.SSL_CIPHER_get_name(c); }
int cwsl_SSL_CTX_check_private_key(const SSL_CTX *ctx) { return cwsl_table.SSL_CTX_check_private_key(ctx); }
long cwsl_SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg) {
    return cwsl_table.SSL_CTX_ctrl(ctx, cmd, larg, parg);
}
void cwsl_SSL_CTX_free(SSL_CTX * a0) { cwsl_table.SSL_CTX_free(a0); }
X509_STORE *cwsl_SSL_CTX_get_cert_store(const SSL_CTX * a0) { return cwsl_table.SSL_CTX_get_cert_store(a0); }
int cwsl_SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *CAfile, const char *CApath) {
    return cwsl_table.SSL_CTX_load_verify_locations(ctx, CAfile, CApath);
}
SSL_CTX *cwsl_SSL_CTX_new(const SSL_METHOD *meth) { return cwsl_table.SSL_CTX_new(meth); }
void cwsl_SSL_CTX_sess_set_new_cb(SSL_CTX *ctx, int (*new_session_cb)(struct ssl_st *ssl, SSL_SESSION *sess)) {
    cwsl_table.SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
}
int cwsl_SSL_CTX_set_default_verify_paths(SSL_CTX *ctx) { return cwsl_table.SSL_CTX_set_default_verify_paths(ctx); }
uint64_t cwsl_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t op) { return cwsl_table.SSL_CTX_set_options(ctx, op); }
void cwsl_SSL_CTX_set_verify(SSL_CTX *ctx, int mode, SSL_verify_cb callback) {
    cwsl_table.SSL_CTX_set_verify(ctx, mode, callback);
}
int cwsl_SSL_CTX_use_PrivateKey(SSL_CTX *ctx, EVP_PKEY *pkey) { return cwsl_table.SSL_CTX_use_PrivateKey(ctx, pkey); }
int cwsl_SSL_CTX_use_certificate(SSL_CTX *ctx, X509 *x) { return cwsl_table.SSL_CTX_use_certificate(ctx, x); }
int cwsl_SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file) {
    return cwsl_table.SSL_CTX_use_certificate_chain_file(ctx, file);
}
SSL_SESSION *cwsl_SSL_SESSION_dup(const SSL_SESSION *src) { return cwsl_table.SSL_SESSION_dup(src); }
void cwsl_SSL_SESSION_free(SSL_SESSION *ses) { cwsl_table.SSL_SESSION_free(ses); }
int cwsl_SSL_SESSION_get_protocol_version(const SSL_SESSION *s) {
    return cwsl_table.SSL_SESSION_get_protocol_version(s);
}
long cwsl_SSL_SESSION_get_time(const SSL_SESSION *s) { return cwsl_table.SSL_SESSION_get_time(s); }
long cwsl_SSL_SESSION_get_timeout(const SSL_SESSION *s) { return cwsl_table.SSL_SESSION_get_timeout(s); }
int cwsl_SSL_SESSION_is_resumable(const SSL_SESSION *s) { return cwsl_table.SSL_SESSION_is_resumable(s); }
long cwsl_SSL_ctrl(SSL *ssl, int cmd, long larg, void *parg) { return cwsl_table.SSL_ctrl(ssl, cmd, larg, parg); }
int cwsl_SSL_do_handshake(SSL *s) { return cwsl_table.SSL_do_handshake(s); }
void cwsl_SSL_free(SSL *ssl) { cwsl_table.SSL_free(ssl); }
void cwsl_SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *len) {
    cwsl_table.SSL_get0_alpn_selected(ssl, data, len);
}
X509_VERIFY_PARAM *cwsl_SSL_get0_param(SSL *ssl) { return cwsl_table.SSL_get0_param(ssl); }
const SSL_CIPHER *cwsl_SSL_get_current_cipher(const SSL *s) { return cwsl_table.SSL_get_current_cipher(s); }
int cwsl_SSL_get_error(const SSL *s, int ret_code) { return cwsl_table.SSL_get_error(s, ret_code); }
void *cwsl_SSL_get_ex_data(const SSL *ssl, int idx) { return cwsl_table.SSL_get_ex_data(ssl, idx); }
long cwsl_SSL_get_verify_result(const SSL *ssl) { return cwsl_table.SSL_get_verify_result(ssl); }
const char *cwsl_SSL_get_version(const SSL *s) { return cwsl_table.SSL_get_version(s); }
int cwsl_SSL_has_pending(const SSL *s) { return cwsl_table.SSL_has_pending(s); }
SSL *cwsl_SSL_new(SSL_CTX *ctx) { return cwsl_table.SSL_new(ctx); }
int cwsl_SSL_read(SSL *ssl, void *buf, int num) { return cwsl_table.SSL_read(ssl, buf, num); }
int cwsl_SSL_session_reused(const SSL *s) { return cwsl_table.SSL_session_reused(s); }
int cwsl_SSL_set1_host(SSL *s, const char *hostname) { return cwsl_table.SSL_set1_host(s, hostname); }
int cwsl_SSL_set_alpn_protos(SSL *ssl, const unsigned char *protos, unsigned int protos_len) {
    return cwsl_table.SSL_set_alpn_protos(ssl, protos, protos_len);
}
void cwsl_SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio) { cwsl_table.SSL_set_bio(s, rbio, wbio); }
void cwsl_SSL_set_connect_state(SSL *s) { cwsl_table.SSL_set_connect_state(s); }
void cwsl_SSL_set_default_read_buffer_len(SSL *s, size_t len) { cwsl_table.SSL_set_default_read_buffer_len(s, len); }
int cwsl_SSL_set_ex_data(SSL *ssl, int idx, void *data) { return cwsl_table.SSL_set_ex_data(ssl, idx, data); }
void cwsl_SSL_set_hostflags(SSL *s, unsigned int flags) { cwsl_table.SSL_set_hostflags(s, flags); }
int cwsl_SSL_set_session(SSL *to, SSL_SESSION *session) { return cwsl_table.SSL_set_session(to, session); }
int cwsl_SSL_shutdown(SSL *s) { return cwsl_table.SSL_shutdown(s); }
int cwsl_SSL_write(SSL *ssl, const void *buf, int num) { return cwsl_table.SSL_write(ssl, buf, num); }
const SSL_METHOD *cwsl_TLS_client_method(void) { return cwsl_table.TLS_client_method(); }
void cwsl_X509_INFO_free(X509_INFO *a) { cwsl_table.X509_INFO_free(a); }
int cwsl_X509_STORE_add_cert(X509_STORE *ctx, X509 *x) { return cwsl_table.X509_STORE_add_cert(ctx, x); }
int cwsl_X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM *param, const char *ipasc) {
    return cwsl_table.X509_VERIFY_PARAM_set1_ip_asc(param, ipasc);
}
void cwsl_X509_free(X509 *a) { cwsl_table.X509_free(a); }
const char *cwsl_X509_verify_cert_error_string(long n) { return cwsl_table.X509_verify_cert_error_string(n); }

// From here on the OpenSSL names (also those the headers' macros expand to) are the wrappers.
#define BIO_clear_flags cwsl_BIO_clear_flags
#define BIO_ctrl cwsl_BIO_ctrl
#define BIO_f_ssl cwsl_BIO_f_ssl
#define BIO_free cwsl_BIO_free
#define BIO_get_data cwsl_BIO_get_data
#define BIO_get_new_index cwsl_BIO_get_new_index
#define BIO_meth_free cwsl_BIO_meth_free
#define BIO_meth_new cwsl_BIO_meth_new
#define BIO_meth_set_ctrl cwsl_BIO_meth_set_ctrl
#define BIO_meth_set_read cwsl_BIO_meth_set_read
#define BIO_meth_set_write cwsl_BIO_meth_set_write
#define BIO_new cwsl_BIO_new
#define BIO_new_file cwsl_BIO_new_file
#define BIO_new_mem_buf cwsl_BIO_new_mem_buf
#define BIO_set_data cwsl_BIO_set_data
#define BIO_set_flags cwsl_BIO_set_flags
#define BIO_set_init cwsl_BIO_set_init
#define CRYPTO_get_ex_new_index cwsl_CRYPTO_get_ex_new_index
#define ERR_clear_error cwsl_ERR_clear_error
#define ERR_error_string_n cwsl_ERR_error_string_n
#define ERR_get_error cwsl_ERR_get_error
#define ERR_peek_last_error cwsl_ERR_peek_last_error
#define EVP_PKEY_free cwsl_EVP_PKEY_free
#define OPENSSL_sk_num cwsl_OPENSSL_sk_num
#define OPENSSL_sk_pop_free cwsl_OPENSSL_sk_pop_free
#define OPENSSL_sk_value cwsl_OPENSSL_sk_value
#define PEM_X509_INFO_read_bio cwsl_PEM_X509_INFO_read_bio
#define PEM_read_bio_PrivateKey cwsl_PEM_read_bio_PrivateKey
#define PEM_read_bio_X509 cwsl_PEM_read_bio_X509
#define PEM_read_bio_X509_AUX cwsl_PEM_read_bio_X509_AUX
#define SSL_CIPHER_get_name cwsl_SSL_CIPHER_get_name
#define SSL_CTX_check_private_key cwsl_SSL_CTX_check_private_key
#define SSL_CTX_ctrl cwsl_SSL_CTX_ctrl
#define SSL_CTX_free cwsl_SSL_CTX_free
#define SSL_CTX_get_cert_store cwsl_SSL_CTX_get_cert_store
#define SSL_CTX_load_verify_locations cwsl_SSL_CTX_load_verify_locations
#define SSL_CTX_new cwsl_SSL_CTX_new
#define SSL_CTX_sess_set_new_cb cwsl_SSL_CTX_sess_set_new_cb
#define SSL_CTX_set_default_verify_paths cwsl_SSL_CTX_set_default_verify_paths
#define SSL_CTX_set_options cwsl_SSL_CTX_set_options
#define SSL_CTX_set_verify cwsl_SSL_CTX_set_verify
#define SSL_CTX_use_PrivateKey cwsl_SSL_CTX_use_PrivateKey
#define SSL_CTX_use_certificate cwsl_SSL_CTX_use_certificate
#define SSL_CTX_use_certificate_chain_file cwsl_SSL_CTX_use_certificate_chain_file
#define SSL_SESSION_dup cwsl_SSL_SESSION_dup
#define SSL_SESSION_free cwsl_SSL_SESSION_free
#define SSL_SESSION_get_protocol_version cwsl_SSL_SESSION_get_protocol_version
#define SSL_SESSION_get_time cwsl_SSL_SESSION_get_time
#define SSL_SESSION_get_timeout cwsl_SSL_SESSION_get_timeout
#define SSL_SESSION_is_resumable cwsl_SSL_SESSION_is_resumable
#define SSL_ctrl cwsl_SSL_ctrl
#define SSL_do_handshake cwsl_SSL_do_handshake
#define SSL_free cwsl_SSL_free
#define SSL_get0_alpn_selected cwsl_SSL_get0_alpn_selected
#define SSL_get0_param cwsl_SSL_get0_param
#define SSL_get_current_cipher cwsl_SSL_get_current_cipher
#define SSL_get_error cwsl_SSL_get_error
#define SSL_get_ex_data cwsl_SSL_get_ex_data
#define SSL_get_verify_result cwsl_SSL_get_verify_result
#define SSL_get_version cwsl_SSL_get_version
#define SSL_has_pending cwsl_SSL_has_pending
#define SSL_new cwsl_SSL_new
#define SSL_read cwsl_SSL_read
#define SSL_session_reused cwsl_SSL_session_reused
#define SSL_set1_host cwsl_SSL_set1_host
#define SSL_set_alpn_protos cwsl_SSL_set_alpn_protos
#define SSL_set_bio cwsl_SSL_set_bio
#define SSL_set_connect_state cwsl_SSL_set_connect_state
#define SSL_set_default_read_buffer_len cwsl_SSL_set_default_read_buffer_len
#define SSL_set_ex_data cwsl_SSL_set_ex_data
#define SSL_set_hostflags cwsl_SSL_set_hostflags
#define SSL_set_session cwsl_SSL_set_session
#define SSL_shutdown cwsl_SSL_shutdown
#define SSL_write cwsl_SSL_write
#define TLS_client_method cwsl_TLS_client_method
#define X509_INFO_free cwsl_X509_INFO_free
#define X509_STORE_add_cert cwsl_X509_STORE_add_cert
#define X509_VERIFY_PARAM_set1_ip_asc cwsl_X509_VERIFY_PARAM_set1_ip_asc
#define X509_free cwsl_X509_free
#define X509_verify_cert_error_string cwsl_X509_verify_cert_error_string

long cwsl_ssl_ctx_set_min_proto(SSL_CTX *ctx, int version) { return SSL_CTX_set_min_proto_version(ctx, version); }
long cwsl_ssl_set_sni(SSL *ssl, const char *host) { return SSL_set_tlsext_host_name(ssl, host); }
long cwsl_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
void cwsl_ssl_ctx_set_read_ahead(SSL_CTX *ctx, int yes) { SSL_CTX_set_read_ahead(ctx, yes); }

// Client-side session caching with OpenSSL's internal store off: every new session goes to the new-session
// callback, and the engine keeps it.
long cwsl_ssl_ctx_set_client_session_cache(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

// A socket BIO that never raises SIGPIPE. OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a
// reset connection. This BIO does the socket I/O itself with send(MSG_NOSIGNAL) / recv, so no process-wide signal
// disposition has to change and no memory-BIO copy is needed. The fd is stored in the BIO's data pointer; the BIO
// never closes it.
static int cwsl_sockbio_write(BIO *bio, const char *buffer, int length) {
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
static int cwsl_sockbio_read(BIO *bio, char *buffer, int length) {
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
static long cwsl_sockbio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)bio; (void)number; (void)pointer;
    switch (command) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_DUP: return 1;
    default: return 0;
    }
}
BIO_METHOD *cwsl_sockbio_method_new(void) {
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cws nosigpipe socket");
    if (method == NULL) return NULL;
    if (!BIO_meth_set_write(method, cwsl_sockbio_write) || !BIO_meth_set_read(method, cwsl_sockbio_read)
        || !BIO_meth_set_ctrl(method, cwsl_sockbio_ctrl)) {
        BIO_meth_free(method);
        return NULL;
    }
    return method;
}
BIO *cwsl_sockbio_new(BIO_METHOD *method, int fd) {
    BIO *bio = BIO_new(method);
    if (bio == NULL) return NULL;
    BIO_set_data(bio, (void *)(intptr_t)fd);
    BIO_set_init(bio, 1);
    return bio;
}

/// The PEM password callback: the password passed as `userdata`, or a failure when there is none (OpenSSL's
/// default callback would prompt on the terminal instead).
static int cwsl_pem_password(char *buffer, int size, int rwflag, void *userdata) {
    (void)rwflag;
    if (userdata == NULL || size <= 0) return -1;
    size_t length = strlen((const char *)userdata);
    if (length > (size_t)size) length = (size_t)size;
    memcpy(buffer, userdata, length);
    return (int)length;
}

int cwsl_ssl_ctx_add_trusted_pem(SSL_CTX *ctx, const char *data, int length) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return -1;
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, cwsl_pem_password, NULL);
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

int cwsl_ssl_ctx_use_certificate_chain_pem(SSL_CTX *ctx, const char *data, int length) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return 0;
    X509 *leaf = PEM_read_bio_X509_AUX(bio, NULL, cwsl_pem_password, NULL);
    int ok = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    if (ok && SSL_CTX_clear_chain_certs(ctx) != 1) ok = 0;
    while (ok) {
        X509 *intermediate = PEM_read_bio_X509(bio, NULL, cwsl_pem_password, NULL);
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
static int cwsl_ssl_ctx_use_private_key_bio(SSL_CTX *ctx, BIO *bio, const char *password) {
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, cwsl_pem_password, (void *)password);
    if (key == NULL) return 0;
    int ok = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    return ok == 1;
}
int cwsl_ssl_ctx_use_private_key_file(SSL_CTX *ctx, const char *path, const char *password) {
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) return 0;
    int ok = cwsl_ssl_ctx_use_private_key_bio(ctx, bio, password);
    BIO_free(bio);
    return ok;
}
int cwsl_ssl_ctx_use_private_key_pem(SSL_CTX *ctx, const char *data, int length, const char *password) {
    BIO *bio = BIO_new_mem_buf(data, length);
    if (bio == NULL) return 0;
    int ok = cwsl_ssl_ctx_use_private_key_bio(ctx, bio, password);
    BIO_free(bio);
    return ok;
}

BIO *cwsl_bio_new_ssl_filter(SSL *outer) {
    BIO *bio = BIO_new(BIO_f_ssl());
    if (bio == NULL) return NULL;
    BIO_set_ssl(bio, outer, BIO_NOCLOSE);
    return bio;
}
