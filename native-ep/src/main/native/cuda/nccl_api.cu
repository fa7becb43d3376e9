// dlopen of NCCL (see nccl_api.h).
#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "host_utils.h"
#include "nccl_api.h"

namespace nep {
namespace cuda {

namespace {

// The outcome of loading NCCL: the table on success, else why not. Built once, then read-only.
struct LoadedNccl {
  NcclApi api{};
  bool ok = false;
  std::string why;
};

template <class F>
bool sym(void* lib, const std::string& path, const char* name, F* out, std::string* why) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (*out == nullptr) {
    *why = cat("symbol ", name, " not found in ", path);
    return false;
  }
  return true;
}

LoadedNccl load() {
  LoadedNccl l;
  const char* env = std::getenv("NEP_NCCL_LIBRARY");
  NcclApi& a = l.api;
  a.path = (env != nullptr && *env != '\0') ? env : "libnccl.so.2";
  // The handle is never closed: the table's function pointers live as long as the process.
  void* lib = dlopen(a.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* e = dlerror();
    l.why = cat("NCCL could not be loaded (dlopen(\"", a.path, "\"): ", e ? e : "unknown error",
                "); install NCCL 2.x (e.g. the nvidia-nccl wheel) and put its lib folder on "
                "LD_LIBRARY_PATH, or set NEP_NCCL_LIBRARY");
    return l;
  }
  const std::string& p = a.path;
  std::string why;
  bool ok = sym(lib, p, "ncclGetVersion", &a.GetVersion, &why) &&
            sym(lib, p, "ncclGetUniqueId", &a.GetUniqueId, &why) &&
            sym(lib, p, "ncclCommInitRank", &a.CommInitRank, &why) &&
            sym(lib, p, "ncclCommDestroy", &a.CommDestroy, &why) &&
            sym(lib, p, "ncclCommAbort", &a.CommAbort, &why) &&
            sym(lib, p, "ncclCommGetAsyncError", &a.CommGetAsyncError, &why) &&
            sym(lib, p, "ncclGetErrorString", &a.GetErrorString, &why) &&
            sym(lib, p, "ncclGroupStart", &a.GroupStart, &why) &&
            sym(lib, p, "ncclGroupEnd", &a.GroupEnd, &why) &&
            sym(lib, p, "ncclSend", &a.Send, &why) && sym(lib, p, "ncclRecv", &a.Recv, &why) &&
            sym(lib, p, "ncclAllGather", &a.AllGather, &why) &&
            sym(lib, p, "ncclAllReduce", &a.AllReduce, &why);
  if (!ok) {
    l.why = why;
    return l;
  }
  a.GetLastError = reinterpret_cast<const char* (*)(ncclComm_t)>(dlsym(lib, "ncclGetLastError"));
  int v = 0;
  if (a.GetVersion(&v) != ncclSuccess) {
    l.why = cat("ncclGetVersion failed in ", a.path);
    return l;
  }
  if (v < 21000) {  // ncclBfloat16 and grouped send/recv to self need 2.10+
    l.why = cat(a.path, " is NCCL version code ", v, "; 2.10 or newer is needed");
    return l;
  }
  a.version = v;
  l.ok = true;
  return l;
}

// Loaded on first use (thread-safe initialisation of a local static), immutable afterwards.
const LoadedNccl& loaded() {
  static const LoadedNccl l = load();
  return l;
}

}  // namespace

const NcclApi* nccl_api(std::string* why) {
  const LoadedNccl& l = loaded();
  if (!l.ok && why != nullptr) *why = l.why;
  return l.ok ? &l.api : nullptr;
}

const NcclApi& nccl_or_throw() {
  std::string why;
  const NcclApi* api = nccl_api(&why);
  if (api == nullptr) fail(NEP_ERR_UNSUPPORTED, why);
  return *api;
}

void check_nccl(ncclResult_t r, const char* what, ncclComm_t comm) {
  if (r == ncclSuccess) return;
  const NcclApi* api = nccl_api(nullptr);
  std::string msg = cat(what, " failed: NCCL error ", r);
  if (api != nullptr) {
    msg += cat(" (", api->GetErrorString(r), ")");
    if (api->GetLastError != nullptr) {
      const char* last = api->GetLastError(comm);
      if (last != nullptr && *last != '\0') msg += cat(": ", last);
    }
  }
  fail(NEP_ERR_INTERNAL, msg);
}

}  // namespace cuda
}  // namespace nep
