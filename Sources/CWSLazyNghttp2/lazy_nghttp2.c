// libnghttp2 loaded on first use: see include/cws_lazy_nghttp2.h.
#include "cws_lazy_nghttp2.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define CWSN_SONAME "libnghttp2.so.14"

/// Every nghttp2 function the engine calls, once: the table below has a pointer for each, typed by nghttp2's own
/// declaration, and the loader resolves each by name.
#define CWSN_FUNCTIONS(X) \
    X(nghttp2_http2_strerror) X(nghttp2_option_del) X(nghttp2_option_new) X(nghttp2_option_set_max_continuations) \
    X(nghttp2_option_set_no_auto_window_update) X(nghttp2_session_callbacks_del) X(nghttp2_session_callbacks_new) \
    X(nghttp2_session_callbacks_set_on_begin_frame_callback) \
    X(nghttp2_session_callbacks_set_on_data_chunk_recv_callback) \
    X(nghttp2_session_callbacks_set_on_frame_recv_callback) \
    X(nghttp2_session_callbacks_set_on_frame_send_callback) X(nghttp2_session_callbacks_set_on_header_callback) \
    X(nghttp2_session_callbacks_set_on_stream_close_callback) X(nghttp2_session_client_new2) \
    X(nghttp2_session_consume_connection) X(nghttp2_session_consume_stream) X(nghttp2_session_del) \
    X(nghttp2_session_get_remote_settings) X(nghttp2_session_mem_recv) X(nghttp2_session_mem_send) \
    X(nghttp2_session_resume_data) X(nghttp2_session_set_local_window_size) X(nghttp2_session_want_read) \
    X(nghttp2_session_want_write) X(nghttp2_strerror) X(nghttp2_submit_goaway) X(nghttp2_submit_request) \
    X(nghttp2_submit_rst_stream) X(nghttp2_submit_settings) X(nghttp2_version)

/// The loaded functions; written once, under `cwsn_once`, before `cwsn_loaded` is set.
static struct {
#define CWSN_FIELD(name) __typeof__(&name) name;
    CWSN_FUNCTIONS(CWSN_FIELD)
#undef CWSN_FIELD
} cwsn_table;

static pthread_once_t cwsn_once = PTHREAD_ONCE_INIT;
static int cwsn_loaded = 0;
static char cwsn_error[512];

static void cwsn_load_once(void) {
    // RTLD_LOCAL: the symbols are reached through this table only. A process that already links libnghttp2 (libcurl
    // does) gets that same library.
    void *handle = dlopen(CWSN_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *reason = dlerror();
        snprintf(cwsn_error, sizeof cwsn_error, "libnghttp2 (%s) could not be loaded: %s", CWSN_SONAME,
                 reason != NULL ? reason : "unknown error");
        return;
    }
#define CWSN_LOAD(name)                                                                                       \
    cwsn_table.name = (__typeof__(cwsn_table.name))dlsym(handle, #name);                                      \
    if (cwsn_table.name == NULL) {                                                                            \
        snprintf(cwsn_error, sizeof cwsn_error, "libnghttp2 (%s) has no %s", CWSN_SONAME, #name);            \
        return;                                                                                               \
    }
    CWSN_FUNCTIONS(CWSN_LOAD)
#undef CWSN_LOAD
    cwsn_loaded = 1;
}

int cwsn_nghttp2_load(const char **error) {
    pthread_once(&cwsn_once, cwsn_load_once);
    if (!cwsn_loaded && error != NULL) *error = cwsn_error;
    return cwsn_loaded;
}

int cws_h2_runtime_version_num(void) {
    if (!cwsn_nghttp2_load(NULL)) return 0;
    nghttp2_info *info = cwsn_table.nghttp2_version(0);
    return info == NULL ? 0 : info->version_num;
}

const char *cws_h2_runtime_version(void) {
    if (!cwsn_nghttp2_load(NULL)) return "unavailable";
    nghttp2_info *info = cwsn_table.nghttp2_version(0);
    return info == NULL ? "unknown" : info->version_str;
}

int32_t cws_h2_submit_request(
    nghttp2_session *session, const nghttp2_nv *nva, size_t count, nghttp2_data_source_read_callback read) {
    nghttp2_data_provider provider;
    provider.source.ptr = NULL;
    provider.read_callback = read;
    return cwsn_table.nghttp2_submit_request(session, NULL, nva, count, &provider, NULL);
}

// Each wrapper's prototype is the header's, which must match nghttp2's (the compiler checks the table's types).
const char *cwsn_nghttp2_http2_strerror(uint32_t error_code) { return cwsn_table.nghttp2_http2_strerror(error_code); }
void cwsn_nghttp2_option_del(nghttp2_option *option) { cwsn_table.nghttp2_option_del(option); }
int cwsn_nghttp2_option_new(nghttp2_option **option_ptr) { return cwsn_table.nghttp2_option_new(option_ptr); }
void cwsn_nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val) {
    cwsn_table.nghttp2_option_set_max_continuations(option, val);
}
void cwsn_nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val) {
    cwsn_table.nghttp2_option_set_no_auto_window_update(option, val);
}
void cwsn_nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks) {
    cwsn_table.nghttp2_session_callbacks_del(callbacks);
}
int cwsn_nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr) {
    return cwsn_table.nghttp2_session_callbacks_new(callbacks_ptr);
}
void cwsn_nghttp2_session_callbacks_set_on_begin_frame_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_begin_frame_callback on_begin_frame_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame_callback);
}
void cwsn_nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_data_chunk_recv_callback on_data_chunk_recv_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv_callback);
}
void cwsn_nghttp2_session_callbacks_set_on_frame_recv_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_frame_recv_callback on_frame_recv_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_callback);
}
void cwsn_nghttp2_session_callbacks_set_on_frame_send_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_frame_send_callback on_frame_send_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send_callback);
}
void cwsn_nghttp2_session_callbacks_set_on_header_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_header_callback on_header_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_callback);
}
void cwsn_nghttp2_session_callbacks_set_on_stream_close_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_stream_close_callback on_stream_close_callback) {
    cwsn_table.nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_callback);
}
int cwsn_nghttp2_session_client_new2(
    nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data, const nghttp2_option
    *option) {
    return cwsn_table.nghttp2_session_client_new2(session_ptr, callbacks, user_data, option);
}
int cwsn_nghttp2_session_consume_connection(nghttp2_session *session, size_t size) {
    return cwsn_table.nghttp2_session_consume_connection(session, size);
}
int cwsn_nghttp2_session_consume_stream(nghttp2_session *session, int32_t stream_id, size_t size) {
    return cwsn_table.nghttp2_session_consume_stream(session, stream_id, size);
}
void cwsn_nghttp2_session_del(nghttp2_session *session) { cwsn_table.nghttp2_session_del(session); }
uint32_t cwsn_nghttp2_session_get_remote_settings(nghttp2_session *session, nghttp2_settings_id id) {
    return cwsn_table.nghttp2_session_get_remote_settings(session, id);
}
ssize_t cwsn_nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *in, size_t inlen) {
    return cwsn_table.nghttp2_session_mem_recv(session, in, inlen);
}
ssize_t cwsn_nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr) {
    return cwsn_table.nghttp2_session_mem_send(session, data_ptr);
}
int cwsn_nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id) {
    return cwsn_table.nghttp2_session_resume_data(session, stream_id);
}
int cwsn_nghttp2_session_set_local_window_size(
    nghttp2_session *session, uint8_t flags, int32_t stream_id, int32_t window_size) {
    return cwsn_table.nghttp2_session_set_local_window_size(session, flags, stream_id, window_size);
}
int cwsn_nghttp2_session_want_read(nghttp2_session *session) { return cwsn_table.nghttp2_session_want_read(session); }
int cwsn_nghttp2_session_want_write(nghttp2_session *session) { return cwsn_table.nghttp2_session_want_write(session); }
const char *cwsn_nghttp2_strerror(int lib_error_code) { return cwsn_table.nghttp2_strerror(lib_error_code); }
int cwsn_nghttp2_submit_goaway(
    nghttp2_session *session, uint8_t flags, int32_t last_stream_id, uint32_t error_code, const uint8_t
    *opaque_data, size_t opaque_data_len) {
    return cwsn_table.nghttp2_submit_goaway(session, flags, last_stream_id, error_code, opaque_data, opaque_data_len);
}
int32_t cwsn_nghttp2_submit_request(
    nghttp2_session *session, const nghttp2_priority_spec *pri_spec, const nghttp2_nv *nva, size_t nvlen,
    const nghttp2_data_provider *data_prd, void *stream_user_data) {
    return cwsn_table.nghttp2_submit_request(session, pri_spec, nva, nvlen, data_prd, stream_user_data);
}
int cwsn_nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code) {
    return cwsn_table.nghttp2_submit_rst_stream(session, flags, stream_id, error_code);
}
int cwsn_nghttp2_submit_settings(
    nghttp2_session *session, uint8_t flags, const nghttp2_settings_entry *iv, size_t niv) {
    return cwsn_table.nghttp2_submit_settings(session, flags, iv, niv);
}
nghttp2_info *cwsn_nghttp2_version(int least_version) { return cwsn_table.nghttp2_version(least_version); }
