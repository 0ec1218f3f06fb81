/* A stand-in for an onnxruntime release older than the `ort` crate's API (it needs 1.17 or newer). PyPI's
 * onnxruntime wheels of those releases carry no libonnxruntime.so (the C API is linked into the Python module), so
 * no real old library can be fetched here. It exports what a loader looks at first, `OrtGetApiBase`, and reports
 * version 1.9.0; `GetApi` answers NULL, as a real old release does for an API version it does not know.
 * Built with `-DNOT_ORT` it exports nothing of the kind: a shared library that is not onnxruntime. */
#include <stddef.h>
#include <stdint.h>

typedef struct {
  const void *(*GetApi)(uint32_t version);
  const char *(*GetVersionString)(void);
} OrtApiBase;

static const void *get_api(uint32_t version) { (void)version; return NULL; }
static const char *version_string(void) { return "1.9.0"; }
static const OrtApiBase base = { get_api, version_string };

#ifndef NOT_ORT
const OrtApiBase *OrtGetApiBase(void) { return &base; }
#else
const OrtApiBase *SomethingElse(void) { return &base; }
#endif
