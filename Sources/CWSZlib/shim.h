// Thin shim over the system zlib (zlib1g-dev): the init macros Swift cannot import.
#ifndef CWS_ZLIB_SHIM_H
#define CWS_ZLIB_SHIM_H
#include <zlib.h>

static inline int cws_deflateInit2(z_streamp strm, int level, int windowBits, int memLevel) {
    return deflateInit2(strm, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}
static inline int cws_inflateInit2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
#endif
