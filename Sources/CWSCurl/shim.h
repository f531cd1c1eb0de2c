// Thin shim over the system libcurl (libcurl4-openssl-dev): the variadic setopt/getinfo/multi_setopt calls, the
// macros Swift cannot import, and version differences, each as a prefixed static inline function with an explicit
// return type. WSEngineCurl uses libcurl only as a connector (CONNECT_ONLY + curl_easy_send/recv), so nothing here
// needs the WebSocket API (curl_ws_*, CURLWS_*): the shim compiles against libcurl headers from 7.x onwards.
#ifndef CWS_CURL_SHIM_H
#define CWS_CURL_SHIM_H
#include <curl/curl.h>
#include <string.h>
#include <sys/socket.h>

static inline CURLcode cws_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cws_curl_getinfo_socket(CURL *h, curl_socket_t *v) { return curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, v); }
/// CURLINFO_USED_PROXY (libcurl 8.7.0+; CURLE_UNKNOWN_OPTION before), by value so older headers compile too.
static inline CURLcode cws_curl_getinfo_used_proxy(CURL *h, long *v) { return curl_easy_getinfo(h, (CURLINFO)(CURLINFO_LONG + 66), v); }
static inline curl_version_info_data *cws_curl_version_info(void) { return curl_version_info(CURLVERSION_NOW); }

// ---------------------------------------------------------------------------------------------------------------
// WSEngineCurl

/// curl_global_init(CURL_GLOBAL_DEFAULT): the flags are macros.
static inline CURLcode cws_curl_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT); }

/// CURLOPT_DEBUGFUNCTION takes a function pointer through the variadic setopt.
static inline CURLcode cws_curl_setopt_debugfunction(CURL *h, curl_debug_callback f) {
    return curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, f);
}

/// CURLOPT_CLOSESOCKETFUNCTION and CURLOPT_CLOSESOCKETDATA together (libcurl 7.21.7+): libcurl calls `f` instead of
/// close(2) for every socket it opened for the easy handle's connections.
static inline CURLcode cws_curl_setopt_closesocket(CURL *h, curl_closesocket_callback f, void *data) {
    CURLcode code = curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, f);
    return code != CURLE_OK ? code : curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, data);
}

/// CURLMOPT_SOCKETFUNCTION; NULL turns the callback off.
static inline CURLMcode cws_curl_multi_set_socketfunction(CURLM *m, curl_socket_callback f) {
    return curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, f);
}
/// CURLMOPT_TIMERFUNCTION; NULL turns the callback off.
static inline CURLMcode cws_curl_multi_set_timerfunction(CURLM *m, curl_multi_timer_callback f) {
    return curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, f);
}
/// CURLMOPT_SOCKETDATA and CURLMOPT_TIMERDATA together.
static inline void cws_curl_multi_set_userdata(CURLM *m, void *userdata) {
    (void)curl_multi_setopt(m, CURLMOPT_SOCKETDATA, userdata);
    (void)curl_multi_setopt(m, CURLMOPT_TIMERDATA, userdata);
}

/// CURL_SOCKET_TIMEOUT (a macro of a macro).
static inline curl_socket_t cws_curl_socket_timeout(void) { return CURL_SOCKET_TIMEOUT; }
/// CURL_SOCKET_BAD.
static inline curl_socket_t cws_curl_socket_bad(void) { return CURL_SOCKET_BAD; }
/// CURL_ERROR_SIZE, the size CURLOPT_ERRORBUFFER needs.
static inline size_t cws_curl_error_size(void) { return CURL_ERROR_SIZE; }
/// CURL_SSLVERSION_TLSv1_2 / _TLSv1_3 (anonymous enum values; TLSv1_3 needs 7.52).
static inline long cws_curl_sslversion_tls12(void) { return CURL_SSLVERSION_TLSv1_2; }
static inline long cws_curl_sslversion_tls13(void) { return CURL_SSLVERSION_TLSv1_3; }
/// CURL_HTTP_VERSION_1_1: only "http/1.1" is offered in ALPN, never h2 (the upgrade is an HTTP/1.1 request).
static inline long cws_curl_http_version_1_1(void) { return CURL_HTTP_VERSION_1_1; }

/// The loaded libcurl's version as 0xXXYYZZ (curl_version_info()->version_num), e.g. 0x080e01 for 8.14.1.
static inline unsigned int cws_curl_version_num(void) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    return info != NULL ? info->version_num : 0;
}

/// Which in-memory PEM option cws_curl_setopt_pem sets.
#define CWS_CURL_PEM_CAINFO 0
#define CWS_CURL_PEM_SSLCERT 1
#define CWS_CURL_PEM_SSLKEY 2
#define CWS_CURL_PEM_PROXY_CAINFO 3
#define CWS_CURL_PEM_PROXY_SSLCERT 4
#define CWS_CURL_PEM_PROXY_SSLKEY 5

/// CURLOPT_CAINFO_BLOB (7.77+), CURLOPT_SSLCERT_BLOB or CURLOPT_SSLKEY_BLOB (7.71+), or their CURLOPT_PROXY_*
/// forms (the same versions), with a copy of `data`
/// (CURL_BLOB_COPY). Headers older than those versions compile too: the call then reports CURLE_UNKNOWN_OPTION.
static inline CURLcode cws_curl_setopt_pem(CURL *h, int which, const char *data, size_t length) {
#if LIBCURL_VERSION_NUM >= 0x074D00
    struct curl_blob blob;
    blob.data = (void *)data;
    blob.len = length;
    blob.flags = CURL_BLOB_COPY;
    switch(which) {
    case CWS_CURL_PEM_CAINFO: return curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    case CWS_CURL_PEM_SSLCERT: return curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
    case CWS_CURL_PEM_SSLKEY: return curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &blob);
    case CWS_CURL_PEM_PROXY_CAINFO: return curl_easy_setopt(h, CURLOPT_PROXY_CAINFO_BLOB, &blob);
    case CWS_CURL_PEM_PROXY_SSLCERT: return curl_easy_setopt(h, CURLOPT_PROXY_SSLCERT_BLOB, &blob);
    case CWS_CURL_PEM_PROXY_SSLKEY: return curl_easy_setopt(h, CURLOPT_PROXY_SSLKEY_BLOB, &blob);
    default: return CURLE_BAD_FUNCTION_ARGUMENT;
    }
#else
    (void)h; (void)which; (void)data; (void)length;
    return CURLE_UNKNOWN_OPTION;
#endif
}

/// CURLOPT_CONNECT_TO with a one-entry list `entry` (7.49+); returns the list, which must outlive the handle's use
/// of it (free it with curl_slist_free_all after curl_easy_cleanup), or NULL with `*code` set.
static inline struct curl_slist *cws_curl_set_connect_to(CURL *h, const char *entry, CURLcode *code) {
    struct curl_slist *list = curl_slist_append(NULL, entry);
    if(list == NULL) { *code = CURLE_OUT_OF_MEMORY; return NULL; }
    *code = curl_easy_setopt(h, CURLOPT_CONNECT_TO, list);
    if(*code != CURLE_OK) { curl_slist_free_all(list); return NULL; }
    return list;
}

/// Reads the next CURLMSG_DONE message of `m`: 1 with the handle and its result, 0 when none is left.
static inline int cws_curl_multi_next_done(CURLM *m, CURL **easy, CURLcode *result) {
    int left = 0;
    CURLMsg *message;
    while((message = curl_multi_info_read(m, &left)) != NULL) {
        if(message->msg == CURLMSG_DONE) {
            *easy = message->easy_handle;
            *result = message->data.result;
            return 1;
        }
    }
    return 0;
}

/// Whether the loaded libcurl lists `name` (e.g. "ws") in curl_version_info()->protocols.
static inline int cws_curl_has_protocol(const char *name) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    if(info == NULL || info->protocols == NULL) return 0;
    for(const char * const *protocol = info->protocols; *protocol != NULL; protocol++) {
        if(strcmp(*protocol, name) == 0) return 1;
    }
    return 0;
}

/// The loaded libcurl's version text, e.g. "8.14.1".
static inline const char *cws_curl_version_text(void) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    return info != NULL && info->version != NULL ? info->version : "unknown";
}
/// The loaded libcurl's TLS backend, e.g. "OpenSSL/3.0.17", or "" when built without TLS.
static inline const char *cws_curl_ssl_version_text(void) {
    curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    return info != NULL && info->ssl_version != NULL ? info->ssl_version : "";
}

/// How WSEngineCurl classifies a CURLcode (see `cws_curl_error_class`).
#define CWS_CURL_ERROR_OTHER 0
#define CWS_CURL_ERROR_DNS 1
#define CWS_CURL_ERROR_CONNECT 2
#define CWS_CURL_ERROR_TIMEOUT 3
#define CWS_CURL_ERROR_TLS 4

/// Classifies `code`; TLS codes that only newer headers declare are guarded by LIBCURL_VERSION_NUM.
static inline int cws_curl_error_class(CURLcode code) {
    switch(code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return CWS_CURL_ERROR_DNS;
    case CURLE_COULDNT_CONNECT:
        return CWS_CURL_ERROR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return CWS_CURL_ERROR_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION: /* 60, also CURLE_SSL_CACERT in current headers */
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_USE_SSL_FAILED:
#if LIBCURL_VERSION_NUM >= 0x072700
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
#endif
#if LIBCURL_VERSION_NUM >= 0x072900
    case CURLE_SSL_INVALIDCERTSTATUS:
#endif
#if LIBCURL_VERSION_NUM >= 0x074D00
    case CURLE_SSL_CLIENTCERT:
#endif
        return CWS_CURL_ERROR_TLS;
    default:
        return CWS_CURL_ERROR_OTHER;
    }
}


// ---------------------------------------------------------------------------------------------------------------
// One share handle per CurlEngine: libcurl (8.12+) keeps its TLS session cache in the multi handle, or in a share
// handle with CURL_LOCK_DATA_SSL_SESSION; every connection has its own multi handle, so only a share can carry
// sessions from one connection to the next. Connects run on several loop threads: each lock data kind has its own
// mutex (libcurl may lock CURL_LOCK_DATA_SHARE and CURL_LOCK_DATA_SSL_SESSION at once).
#include <pthread.h>
#include <stdlib.h>

/// A share handle and its locks.
typedef struct cws_curl_share {
    CURLSH *handle;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
} cws_curl_share;

static void cws_curl_share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userptr) {
    (void)h; (void)access;
    cws_curl_share *share = (cws_curl_share *)userptr;
    if((int)data >= 0 && data < CURL_LOCK_DATA_LAST) pthread_mutex_lock(&share->locks[data]);
}

static void cws_curl_share_unlock(CURL *h, curl_lock_data data, void *userptr) {
    (void)h;
    cws_curl_share *share = (cws_curl_share *)userptr;
    if((int)data >= 0 && data < CURL_LOCK_DATA_LAST) pthread_mutex_unlock(&share->locks[data]);
}

/// A share handle that shares TLS sessions (CURL_LOCK_DATA_SSL_SESSION), or NULL when libcurl refuses (`*code`
/// says why). Free it with cws_curl_share_free once no easy handle uses it.
static inline cws_curl_share *cws_curl_share_new(CURLSHcode *code) {
    cws_curl_share *share = (cws_curl_share *)calloc(1, sizeof(cws_curl_share));
    if(share == NULL) { *code = CURLSHE_NOMEM; return NULL; }
    for(int index = 0; index < CURL_LOCK_DATA_LAST; index++) pthread_mutex_init(&share->locks[index], NULL);
    share->handle = curl_share_init();
    *code = share->handle == NULL ? CURLSHE_NOMEM : CURLSHE_OK;
    if(*code == CURLSHE_OK) *code = curl_share_setopt(share->handle, CURLSHOPT_LOCKFUNC, cws_curl_share_lock);
    if(*code == CURLSHE_OK) *code = curl_share_setopt(share->handle, CURLSHOPT_UNLOCKFUNC, cws_curl_share_unlock);
    if(*code == CURLSHE_OK) *code = curl_share_setopt(share->handle, CURLSHOPT_USERDATA, (void *)share);
    if(*code == CURLSHE_OK) *code = curl_share_setopt(share->handle, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if(*code != CURLSHE_OK) {
        if(share->handle != NULL) curl_share_cleanup(share->handle);
        for(int index = 0; index < CURL_LOCK_DATA_LAST; index++) pthread_mutex_destroy(&share->locks[index]);
        free(share);
        return NULL;
    }
    return share;
}

/// Cleans the share handle up and frees it; returns curl_share_cleanup's code. CURLSHE_IN_USE (an easy handle
/// still uses it) leaves everything allocated: leaking is safe, freeing the locks under libcurl is not.
static inline CURLSHcode cws_curl_share_free(cws_curl_share *share) {
    CURLSHcode code = curl_share_cleanup(share->handle);
    if(code != CURLSHE_OK) return code;
    for(int index = 0; index < CURL_LOCK_DATA_LAST; index++) pthread_mutex_destroy(&share->locks[index]);
    free(share);
    return CURLSHE_OK;
}

/// CURLOPT_SHARE with the share's handle.
static inline CURLcode cws_curl_setopt_share(CURL *h, cws_curl_share *share) {
    return curl_easy_setopt(h, CURLOPT_SHARE, share->handle);
}

/// CURLOPT_SSL_CTX_FUNCTION and CURLOPT_SSL_CTX_DATA (OpenSSL backend: `ssl_ctx` is the connection's SSL_CTX).
static inline CURLcode cws_curl_setopt_ssl_ctx_function(CURL *h, curl_ssl_ctx_callback function, void *data) {
    CURLcode code = curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, function);
    if(code == CURLE_OK) code = curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, data);
    return code;
}

/// libcurl's built-in CA bundle (CURLINFO_CAINFO, 7.84+) or CA directory (CURLINFO_CAPATH), or NULL when it has
/// none or is too old to say. The text is libcurl's and stays valid until the process ends.
static inline const char *cws_curl_default_ca(int directory) {
#if LIBCURL_VERSION_NUM >= 0x075400
    char *value = NULL;
    CURL *h = curl_easy_init();
    if(h == NULL) return NULL;
    CURLcode code = curl_easy_getinfo(h, directory ? CURLINFO_CAPATH : CURLINFO_CAINFO, &value);
    curl_easy_cleanup(h);
    return code == CURLE_OK ? value : NULL;
#else
    (void)directory;
    return NULL;
#endif
}

#endif
