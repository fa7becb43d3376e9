// CUDA-side helpers shared by the GPU drivers: RAII device memory and events, the buffer set-up
// through an Exchange, and status checks of the C ABI.
#ifndef NATIVEEP_GPU_TESTS_GPU_COMMON_H_
#define NATIVEEP_GPU_TESTS_GPU_COMMON_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "nativeep/cuda_api.h"

namespace nepgpu {

// Writes a benchmark's JSON report to path and says so; throws when it cannot.
inline void write_report(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  std::printf("wrote %s\n", path.c_str());
}

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

class DevMem {
 public:
  DevMem() = default;
  explicit DevMem(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) cuda_ok(cudaMalloc(&p_, bytes), "cudaMalloc");
  }
  ~DevMem() {
    if (p_) cudaFree(p_);
  }
  DevMem(DevMem&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(o.bytes_) {}
  DevMem& operator=(DevMem&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  void* get() const { return p_; }
  int64_t addr() const { return reinterpret_cast<int64_t>(p_); }
  size_t bytes() const { return bytes_; }
  // upload, download and poison are complete, for every stream of the device, when they return.
  // cudaMemcpy from pageable memory returns before its last DMA ends and cudaMemset before it runs,
  // both on the legacy stream, which the drivers' non-blocking streams do not wait for: without
  // the synchronisation a kernel launched next could read half-copied or half-poisoned memory.
  void upload(const void* h, size_t n) {
    if (n == 0) return;
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize before H2D");
    cuda_ok(cudaMemcpy(p_, h, n, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after H2D");
  }
  void download(void* h, size_t n) const {
    if (n == 0) return;
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize before D2H");
    cuda_ok(cudaMemcpy(h, p_, n, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }
  void poison(int byte) {
    if (bytes_ == 0) return;
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize before memset");
    cuda_ok(cudaMemset(p_, byte, bytes_), "cudaMemset");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after memset");
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class TimingEvent {
 public:
  TimingEvent() { cuda_ok(cudaEventCreate(&e_), "cudaEventCreate"); }
  ~TimingEvent() {
    if (e_) cudaEventDestroy(e_);
  }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
  TimingEvent(TimingEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class CudaStream {
 public:
  CudaStream() {
    cuda_ok(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaStream() {
    if (s_) cudaStreamDestroy(s_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

struct BufferDeleter {
  void operator()(nep_cuda_buffer* b) const { nep_cuda_buffer_destroy(b); }
};
struct HandleDeleter {
  void operator()(nep_cuda_handle* h) const { nep_cuda_handle_destroy(h); }
};
using BufferPtr = std::unique_ptr<nep_cuda_buffer, BufferDeleter>;
using HandlePtr = std::unique_ptr<nep_cuda_handle, HandleDeleter>;

struct Err {
  char msg[1024] = {0};
};

// GPU of a rank: rank % device_count, so W ranks may share one GPU (forked processes on one device
// still open each other's IPC handles; their kernels then time-slice).
inline int device_of_rank(int rank) {
  int n = 0;
  cuda_ok(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n < 1) throw std::runtime_error("no CUDA device");
  return rank % n;
}

// Exit status of a driver that finds no GPU (CTest's SKIP_RETURN_CODE for the `gpu` label).
constexpr int kSkipNoGpu = 77;

// Number of CUDA devices, asked in a forked child so that the calling process (the drivers' parent,
// which forks the ranks) never initialises CUDA. 0 when there is no driver or no device.
inline int probe_device_count() {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    _exit(n > 100 ? 100 : n);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 0;
  return WEXITSTATUS(status);
}

// For a driver's main: true when a GPU is present; otherwise prints why the driver skips.
inline bool gpu_present(const char* driver) {
  if (probe_device_count() > 0) return true;
  std::printf("%s: no CUDA device visible (no GPU or no driver): skipped\n", driver);
  return false;
}

inline void nep_ok(int32_t st, const Err& e, const char* what) {
  if (st != NEP_OK)
    throw std::runtime_error(std::string(what) + " returned " + std::to_string(st) + ": " + e.msg);
}

// Which transport the drivers connect with: "ipc", "nccl", or "auto" (nccl when LOCAL_WORLD_SIZE is
// set and smaller than the world, i.e. when the ranks are taken to span several hosts).
inline int parse_transport(const char* s, int world) {
  const std::string t = s == nullptr ? "ipc" : s;
  if (t == "nccl") return NEP_CUDA_TRANSPORT_NCCL;
  if (t == "auto") {
    const char* lws = std::getenv("LOCAL_WORLD_SIZE");
    return (lws != nullptr && std::atoi(lws) > 0 && std::atoi(lws) < world)
               ? NEP_CUDA_TRANSPORT_NCCL
               : NEP_CUDA_TRANSPORT_IPC;
  }
  if (t != "ipc") throw std::runtime_error("--transport " + t + " is not ipc, nccl or auto");
  return NEP_CUDA_TRANSPORT_IPC;
}
inline const char* transport_name(int t) {
  return t == NEP_CUDA_TRANSPORT_NCCL ? "nccl" : "cuda-ipc";
}

// Creates this rank's buffer on GPU device_of_rank(rank) and connects it to the others through the
// exchange: CUDA IPC handles, or (nccl) the NCCL unique id of rank 0.
inline BufferPtr make_buffer(Exchange& ex, int64_t bytes, int64_t timeout_ms,
                             int transport = NEP_CUDA_TRANSPORT_IPC) {
  Err e;
  nep_cuda_buffer* raw = nullptr;
  const int dev = device_of_rank(ex.rank());
  cuda_ok(cudaSetDevice(dev), "cudaSetDevice");
  nep_ok(nep_cuda_buffer_create(ex.rank(), ex.world(), dev, bytes, timeout_ms, &raw, e.msg,
                                sizeof(e.msg)),
         e, "nep_cuda_buffer_create");
  BufferPtr buf(raw);
  if (transport == NEP_CUDA_TRANSPORT_NCCL) {
    std::vector<uint8_t> id(NEP_CUDA_NCCL_ID_BYTES, 0),
        all(size_t(NEP_CUDA_NCCL_ID_BYTES) * ex.world());
    if (ex.rank() == 0)
      nep_ok(nep_cuda_nccl_unique_id(id.data(), (int64_t)id.size(), e.msg, sizeof(e.msg)), e,
             "nep_cuda_nccl_unique_id");
    ex.allgather(id.data(), id.size(), all.data());
    nep_ok(nep_cuda_buffer_connect_nccl(buf.get(), all.data(), NEP_CUDA_NCCL_ID_BYTES, e.msg,
                                        sizeof(e.msg)),
           e, "nep_cuda_buffer_connect_nccl");
    ex.barrier();
    return buf;
  }
  std::vector<uint8_t> mine(NEP_CUDA_EXPORT_BYTES), all(size_t(NEP_CUDA_EXPORT_BYTES) * ex.world());
  nep_ok(nep_cuda_buffer_export(buf.get(), mine.data(), (int64_t)mine.size(), e.msg, sizeof(e.msg)),
         e, "nep_cuda_buffer_export");
  ex.allgather(mine.data(), mine.size(), all.data());
  nep_ok(nep_cuda_buffer_connect(buf.get(), all.data(), (int64_t)all.size(), e.msg, sizeof(e.msg)),
         e, "nep_cuda_buffer_connect");
  ex.barrier();
  return buf;
}

inline uint64_t fnv1a(const void* p, size_t n, uint64_t h = 1469598103934665603ull) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}

}  // namespace nepgpu

#endif  // NATIVEEP_GPU_TESTS_GPU_COMMON_H_
