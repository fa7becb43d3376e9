// What the opaque C ABI types hold. Shared by the C ABI source files (and the tests).
#ifndef NATIVEEP_SRC_CAPI_OBJECTS_H_
#define NATIVEEP_SRC_CAPI_OBJECTS_H_

#include <memory>

#include "dispatch_handle.h"
#include "transport.h"

struct nep_comm {
  std::unique_ptr<nep::Transport> transport;
};

struct nep_handle {
  nep::DispatchHandle impl;
};

#endif  // NATIVEEP_SRC_CAPI_OBJECTS_H_
