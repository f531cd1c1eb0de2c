// Thin shim over the system zlib (zlib1g-dev): the init macros Swift cannot import, and the few constants and
// checks WSExtensions needs under names of its own (every shim symbol is prefixed cws_).
#ifndef CWS_ZLIB_SHIM_H
#define CWS_ZLIB_SHIM_H
#include <zlib.h>

static inline int cws_deflateInit2(z_streamp strm, int level, int windowBits, int memLevel) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}
static inline int cws_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}

/// The largest value zlib's 32-bit avail_in / avail_out counters hold.
static inline unsigned long cws_zlib_max_chunk(void) {
    return (unsigned long)(uInt)~(uInt)0;
}

/// The version of the zlib loaded at run time (zlibVersion()), e.g. "1.2.13".
static inline const char *cws_zlib_runtime_version(void) {
    return zlibVersion();
}

/// The version of the zlib headers WSExtensions was compiled against (ZLIB_VERSION).
static inline const char *cws_zlib_header_version(void) {
    return ZLIB_VERSION;
}
#endif
