// Thin shim over the system libnghttp2 (libnghttp2-dev): the frame union's fields and the data provider struct
// through prefixed accessors, so Swift code never pokes at C unions (every shim symbol is prefixed cws_).
#ifndef CWS_NGHTTP2_SHIM_H
#define CWS_NGHTTP2_SHIM_H
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stddef.h>

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
static inline int32_t cws_h2_submit_request(
    nghttp2_session *session, const nghttp2_nv *nva, size_t count, nghttp2_data_source_read_callback read) {
    nghttp2_data_provider provider;
    provider.source.ptr = NULL;
    provider.read_callback = read;
    return nghttp2_submit_request(session, NULL, nva, count, &provider, NULL);
}

/// The version of the libnghttp2 loaded at run time, e.g. 0x013400 for 1.52.0.
static inline int cws_h2_runtime_version_num(void) {
    nghttp2_info *info = nghttp2_version(0);
    return info == NULL ? 0 : info->version_num;
}
/// The version string of the libnghttp2 loaded at run time, e.g. "1.52.0".
static inline const char *cws_h2_runtime_version(void) {
    nghttp2_info *info = nghttp2_version(0);
    return info == NULL ? "unknown" : info->version_str;
}
#endif
