// libnghttp2 for the CIO engine's WebSockets over HTTP/2, loaded on first use (dlopen) rather than linked: a process
// that never opens an HTTP/2 connection does not map it (≈ 0.1 MiB resident at start: its relocations and symbol
// tables). The nghttp2 headers give the types and constants; every function the engine calls is reached through a
// `cwsn_` wrapper that calls the loaded library. `cwsn_nghttp2_load` must have succeeded before any other `cwsn_`
// function is called (`cws_h2_runtime_version` and `cws_h2_runtime_version_num` load it themselves).
#ifndef CWS_LAZY_NGHTTP2_H
#define CWS_LAZY_NGHTTP2_H
#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

/// Loads libnghttp2 once per process and resolves the functions the engine uses. Returns 1 when they are available
/// (every later call returns 1 at once), 0 when not, with `*error` (if not NULL) set to a static description of why.
int cwsn_nghttp2_load(const char **error);

/// The version of the libnghttp2 loaded at run time, e.g. 0x013400 for 1.52.0; 0 if it cannot be loaded.
int cws_h2_runtime_version_num(void);
/// The version string of the libnghttp2 loaded at run time, e.g. "1.52.0"; "unavailable" if it cannot be loaded.
const char *cws_h2_runtime_version(void);

// The frame union's fields through accessors, so Swift code never pokes at C unions (no library call).
static inline uint8_t cws_h2_frame_type(const nghttp2_frame *frame) { return frame->hd.type; }
static inline uint8_t cws_h2_frame_flags(const nghttp2_frame *frame) { return frame->hd.flags; }
static inline int32_t cws_h2_frame_stream_id(const nghttp2_frame *frame) { return frame->hd.stream_id; }
static inline size_t cws_h2_frame_length(const nghttp2_frame *frame) { return frame->hd.length; }
static inline int cws_h2_headers_category(const nghttp2_frame *frame) { return (int)frame->headers.cat; }
static inline uint32_t cws_h2_rst_error_code(const nghttp2_frame *frame) { return frame->rst_stream.error_code; }
static inline uint32_t cws_h2_goaway_error_code(const nghttp2_frame *frame) { return frame->goaway.error_code; }
static inline int32_t cws_h2_goaway_last_stream_id(const nghttp2_frame *frame) {
    return frame->goaway.last_stream_id;
}

static inline uint8_t cws_h2_hd_type(const nghttp2_frame_hd *hd) { return hd->type; }
static inline uint8_t cws_h2_hd_flags(const nghttp2_frame_hd *hd) { return hd->flags; }
static inline int32_t cws_h2_hd_stream_id(const nghttp2_frame_hd *hd) { return hd->stream_id; }
static inline size_t cws_h2_hd_length(const nghttp2_frame_hd *hd) { return hd->length; }

/// Submits a request whose body comes from `read` (deferred until data is written): the extended CONNECT of a
/// WebSocket stream. Returns the stream id, or a negative nghttp2 error.
int32_t cws_h2_submit_request(
    nghttp2_session *session, const nghttp2_nv *nva, size_t count, nghttp2_data_source_read_callback read);

// The library functions the engine calls, each forwarding to the loaded libnghttp2.
const char *cwsn_nghttp2_http2_strerror(uint32_t error_code);
void cwsn_nghttp2_option_del(nghttp2_option *option);
int cwsn_nghttp2_option_new(nghttp2_option **option_ptr);
void cwsn_nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val);
void cwsn_nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val);
void cwsn_nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks);
int cwsn_nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr);
void cwsn_nghttp2_session_callbacks_set_on_begin_frame_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_begin_frame_callback on_begin_frame_callback);
void cwsn_nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_data_chunk_recv_callback on_data_chunk_recv_callback);
void cwsn_nghttp2_session_callbacks_set_on_frame_recv_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_frame_recv_callback on_frame_recv_callback);
void cwsn_nghttp2_session_callbacks_set_on_frame_send_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_frame_send_callback on_frame_send_callback);
void cwsn_nghttp2_session_callbacks_set_on_header_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_header_callback on_header_callback);
void cwsn_nghttp2_session_callbacks_set_on_stream_close_callback(
    nghttp2_session_callbacks *cbs, nghttp2_on_stream_close_callback on_stream_close_callback);
int cwsn_nghttp2_session_client_new2(
    nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data, const nghttp2_option
    *option);
int cwsn_nghttp2_session_consume_connection(nghttp2_session *session, size_t size);
int cwsn_nghttp2_session_consume_stream(nghttp2_session *session, int32_t stream_id, size_t size);
void cwsn_nghttp2_session_del(nghttp2_session *session);
uint32_t cwsn_nghttp2_session_get_remote_settings(nghttp2_session *session, nghttp2_settings_id id);
ssize_t cwsn_nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *in, size_t inlen);
ssize_t cwsn_nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr);
int cwsn_nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id);
int cwsn_nghttp2_session_set_local_window_size(
    nghttp2_session *session, uint8_t flags, int32_t stream_id, int32_t window_size);
int cwsn_nghttp2_session_want_read(nghttp2_session *session);
int cwsn_nghttp2_session_want_write(nghttp2_session *session);
const char *cwsn_nghttp2_strerror(int lib_error_code);
int cwsn_nghttp2_submit_goaway(
    nghttp2_session *session, uint8_t flags, int32_t last_stream_id, uint32_t error_code, const uint8_t
    *opaque_data, size_t opaque_data_len);
int32_t cwsn_nghttp2_submit_request(
    nghttp2_session *session, const nghttp2_priority_spec *pri_spec, const nghttp2_nv *nva, size_t nvlen,
    const nghttp2_data_provider *data_prd, void *stream_user_data);
int cwsn_nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code);
int cwsn_nghttp2_submit_settings(nghttp2_session *session, uint8_t flags, const nghttp2_settings_entry *iv, size_t niv);
nghttp2_info *cwsn_nghttp2_version(int least_version);
#endif
