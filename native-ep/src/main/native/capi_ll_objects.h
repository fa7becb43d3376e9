// What the opaque low-latency C ABI types hold. Shared by capi_ll.cpp and the tests.
#ifndef NATIVEEP_SRC_CAPI_LL_OBJECTS_H_
#define NATIVEEP_SRC_CAPI_LL_OBJECTS_H_

#include <memory>

#include "ll_buffer.h"

struct nep_ll_buffer {
  std::shared_ptr<nep::LlBuffer> impl;
};

struct nep_ll_op {
  std::shared_ptr<nep::LlBuffer> buffer;  // keeps the memory alive while the op exists
  nep::LlOp impl;
};

struct nep_ll_handle {
  nep::LlHandle impl;
};

#endif  // NATIVEEP_SRC_CAPI_LL_OBJECTS_H_
