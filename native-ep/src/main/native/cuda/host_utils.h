// Host-side helpers of the CUDA plug-in: check_cuda and RAII owners of CUDA resources. Errors and
// the C ABI boundary are the core's own (../error.h, ../api_guard.h, header-only), so the
// plug-in's entry points report as the core's do without linking the core.
#ifndef NATIVEEP_CUDA_HOST_UTILS_H_
#define NATIVEEP_CUDA_HOST_UTILS_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "api_guard.h"
#include "error.h"
#include "nativeep/c_api.h"

namespace nep {
namespace cuda {

using nep::cat;
using nep::Error;
using nep::fail;
using nep::guarded;

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    fail(NEP_ERR_INTERNAL, what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

// The driver's cuCtxGetCurrent / cuCtxSetCurrent (CUresult (CUcontext*), CUresult (CUcontext)),
// resolved once per process without linking libcuda and immutable afterwards; null where the
// driver lacks them (DeviceGuard then restores the device instead).
struct CtxCurrentFns {
  using Get = int (*)(void** ctx);
  using Set = int (*)(void* ctx);
  Get get = nullptr;
  Set set = nullptr;
};
inline const CtxCurrentFns& ctx_current_fns() {
  static const CtxCurrentFns fns = [] {
    CtxCurrentFns f;
    void* get = nullptr;
    void* set = nullptr;
    cudaDriverEntryPointQueryResult qg = cudaDriverEntryPointSymbolNotFound, qs = qg;
    if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get, 12000, cudaEnableDefault, &qg) ==
            cudaSuccess &&
        cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &set, 12000, cudaEnableDefault, &qs) ==
            cudaSuccess &&
        qg == cudaDriverEntryPointSuccess && qs == cudaDriverEntryPointSuccess) {
      f.get = reinterpret_cast<CtxCurrentFns::Get>(get);
      f.set = reinterpret_cast<CtxCurrentFns::Set>(set);
    } else {
      cudaGetLastError();
    }
    return f;
  }();
  return fns;
}

// Makes `device` current for the scope and gives the calling thread back the exact context that
// was current before (by the driver's cuCtxGetCurrent / cuCtxSetCurrent), not a device: a thread
// that had no current context has none again afterwards, and no context is created on a device the
// scope did not use. (Restoring by cudaSetDevice(previous) would, since CUDA 12, initialise the
// previous device's primary context: a rank on GPU 3 called from a thread still on the default
// device 0 would leave a context of some 500 MiB on GPU 0.) When `device` is already the runtime's
// current device, nothing is switched (the work runs in the current context, as before). The
// runtime's remembered device of a thread with no current context reads `device` afterwards, which
// creates nothing by itself. The destructor throws nothing and ignores failures. Where the driver
// lacks the two entry points, the previous device is restored instead.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    const CtxCurrentFns& fns = ctx_current_fns();
    if (fns.get != nullptr) {
      // CUDA_ERROR_NOT_INITIALIZED (3): the driver has no context anywhere yet, so none is current.
      const int r = fns.get(&prev_ctx_);
      if (r == 3) prev_ctx_ = nullptr;
      saved_ctx_ = r == 0 || r == 3;
    }
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (saved_ctx_) {
      void* cur = nullptr;
      const CtxCurrentFns& fns = ctx_current_fns();
      if (fns.get(&cur) != 0 || cur != prev_ctx_) fns.set(prev_ctx_);
      return;
    }
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  void* prev_ctx_ = nullptr;
  bool saved_ctx_ = false;
  int prev_ = 0;
};

class DeviceMemory {  // cudaMalloc / cudaFree
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~DeviceMemory() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceMemory(DeviceMemory&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  DeviceMemory& operator=(DeviceMemory&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class StreamMemory {  // cudaMallocAsync / cudaFreeAsync on the stream of its last use
 public:
  StreamMemory() = default;
  StreamMemory(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) check_cuda(cudaMallocAsync(&ptr_, bytes, stream), "cudaMallocAsync");
  }
  ~StreamMemory() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  StreamMemory(StreamMemory&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), stream_(o.stream_) {}
  StreamMemory& operator=(StreamMemory&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(stream_, o.stream_);
    return *this;
  }
  void* get() const { return ptr_; }
  void set_stream(cudaStream_t s) { stream_ = s; }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

template <class T>
class MappedHost {  // pinned host memory the GPU writes through a device pointer
 public:
  MappedHost() {
    check_cuda(cudaHostAlloc(reinterpret_cast<void**>(&host_), sizeof(T), cudaHostAllocMapped),
               "cudaHostAlloc");
    std::memset(static_cast<void*>(host_), 0, sizeof(T));
    cudaError_t e = cudaHostGetDevicePointer(reinterpret_cast<void**>(&dev_), host_, 0);
    if (e != cudaSuccess) {
      cudaFreeHost(host_);
      host_ = nullptr;
      check_cuda(e, "cudaHostGetDevicePointer");
    }
  }
  ~MappedHost() {
    if (host_ != nullptr) cudaFreeHost(host_);
  }
  MappedHost(const MappedHost&) = delete;
  MappedHost& operator=(const MappedHost&) = delete;
  volatile T* host() const { return host_; }
  T* device() const { return dev_; }

 private:
  T* host_ = nullptr;
  T* dev_ = nullptr;
};

class IpcMapping {  // a peer's buffer opened from its IPC handle
 public:
  IpcMapping() = default;
  explicit IpcMapping(const cudaIpcMemHandle_t& h, const char* what) {
    check_cuda(cudaIpcOpenMemHandle(&ptr_, h, cudaIpcMemLazyEnablePeerAccess), what);
  }
  ~IpcMapping() {
    if (ptr_ != nullptr) cudaIpcCloseMemHandle(ptr_);
  }
  IpcMapping(IpcMapping&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)) {}
  IpcMapping& operator=(IpcMapping&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    return *this;
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

class Event {
 public:
  Event() { check_cuda(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() {
    if (e_ != nullptr) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_HOST_UTILS_H_
