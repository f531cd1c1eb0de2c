// Thin shim over the system libcurl (libcurl4-openssl-dev): the variadic setopt/getinfo calls and the
// WebSocket API, which older libcurl builds (before 7.86, or built without it) do not declare.
#ifndef CWS_CURL_SHIM_H
#define CWS_CURL_SHIM_H
#include <curl/curl.h>

static inline CURLcode cws_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_setopt_str(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_setopt_ptr(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cws_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cws_curl_getinfo_socket(CURL *h, curl_socket_t *v) { return curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, v); }
static inline curl_version_info_data *cws_curl_version_info(void) { return curl_version_info(CURLVERSION_NOW); }
#endif
