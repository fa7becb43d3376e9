// dlopen of NCCL (see nccl_api.h).
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "host_utils.h"
#include "nccl_api.h"

namespace nep {
namespace cuda {

namespace {

std::once_flag g_once;
NcclApi g_api;
bool g_ok = false;
std::string g_why;

template <class F>
bool sym(void* lib, const char* name, F* out, std::string* why) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (*out == nullptr) {
    *why = cat("symbol ", name, " not found in ", g_api.path);
    return false;
  }
  return true;
}

void load() {
  const char* env = std::getenv("NEP_NCCL_LIBRARY");
  g_api.path = (env != nullptr && *env != '\0') ? env : "libnccl.so.2";
  void* lib = dlopen(g_api.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* e = dlerror();
    g_why = cat("NCCL could not be loaded (dlopen(\"", g_api.path, "\"): ", e ? e : "unknown error",
                "); install NCCL 2.x (e.g. the nvidia-nccl wheel) and put its lib folder on LD_LIBRARY_PATH, or set NEP_NCCL_LIBRARY");
    return;
  }
  std::string why;
  bool ok = sym(lib, "ncclGetVersion", &g_api.GetVersion, &why) && sym(lib, "ncclGetUniqueId", &g_api.GetUniqueId, &why) &&
            sym(lib, "ncclCommInitRank", &g_api.CommInitRank, &why) && sym(lib, "ncclCommDestroy", &g_api.CommDestroy, &why) &&
            sym(lib, "ncclCommAbort", &g_api.CommAbort, &why) && sym(lib, "ncclCommGetAsyncError", &g_api.CommGetAsyncError, &why) &&
            sym(lib, "ncclGetErrorString", &g_api.GetErrorString, &why) && sym(lib, "ncclGroupStart", &g_api.GroupStart, &why) &&
            sym(lib, "ncclGroupEnd", &g_api.GroupEnd, &why) && sym(lib, "ncclSend", &g_api.Send, &why) &&
            sym(lib, "ncclRecv", &g_api.Recv, &why) && sym(lib, "ncclAllGather", &g_api.AllGather, &why) &&
            sym(lib, "ncclAllReduce", &g_api.AllReduce, &why);
  if (!ok) {
    g_why = why;
    return;
  }
  g_api.GetLastError = reinterpret_cast<const char* (*)(ncclComm_t)>(dlsym(lib, "ncclGetLastError"));
  int v = 0;
  if (g_api.GetVersion(&v) != ncclSuccess) {
    g_why = cat("ncclGetVersion failed in ", g_api.path);
    return;
  }
  if (v < 21000) {  // ncclBfloat16 and grouped send/recv to self need 2.10+
    g_why = cat(g_api.path, " is NCCL version code ", v, "; 2.10 or newer is needed");
    return;
  }
  g_api.version = v;
  g_ok = true;
}

}  // namespace

const NcclApi* nccl_api(std::string* why) {
  std::call_once(g_once, load);
  if (!g_ok && why != nullptr) *why = g_why;
  return g_ok ? &g_api : nullptr;
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
