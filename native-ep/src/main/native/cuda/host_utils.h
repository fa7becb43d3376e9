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

// Makes `device` current for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
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
