// Host-side check of a caller's device address before any kernel touches it. The C ABI receives
// bare addresses with shapes; the kernels trust those shapes. So every entry point asks CUDA, for
// each address, which device holds it and where its allocation ends, and refuses a span
// [addr, addr + bytes) that is host memory, on another GPU, or runs past its allocation: bad input
// becomes an error naming the argument, the bytes needed and the bytes there, never an
// out-of-bounds access (which would end the process and poison the GPU context).
//
// The extent comes from the driver (cuMemGetAddressRange, reached through the runtime's driver
// entry point, so nothing links libcuda). A span that crosses several mappings laid end to end (a
// caching allocator's expandable segments map memory in pieces) is followed piece by piece. Memory
// from a sub-allocator is checked against the allocator's block, not the tensor: the Java side
// checks tensor shapes; this is the last line for the C ABI.
//
// While `stream` is being captured into a CUDA graph the checks are skipped: the queries are not
// capture-safe in every capture mode, and a graph replays the addresses of an eager call that
// passed them.
#ifndef NATIVEEP_CUDA_DEVICE_SPAN_H_
#define NATIVEEP_CUDA_DEVICE_SPAN_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <ios>

#include "host_utils.h"
#include "nativeep/cuda_api.h"

namespace nep {
namespace cuda {

// Bytes of one element of a NEP_DTYPE_* array (the spans' unit).
inline long long dtype_bytes(int32_t dtype) { return dtype == NEP_DTYPE_BF16 ? 2 : 4; }

// cuMemGetAddressRange_v2 (CUresult, CUdeviceptr* base, size_t* size, CUdeviceptr ptr).
using AddressRangeFn = int (*)(unsigned long long* base, size_t* size, unsigned long long ptr);

// Resolved once per process; immutable afterwards (null where the driver lacks it: then only the
// device and memory type are checked).
inline AddressRangeFn address_range_fn() {
  static const AddressRangeFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return AddressRangeFn(nullptr);
    }
    return reinterpret_cast<AddressRangeFn>(p);
  }();
  return fn;
}

// True while `stream` (or, for the legacy stream, any capture that forbids it) is being captured.
inline bool stream_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &st) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  return st != cudaStreamCaptureStatusNone;
}

// Bytes of mapped memory from addr onwards (following mappings laid end to end until `need` is
// covered), or -1 when the driver knows no allocation there.
inline long long bytes_mapped_from(unsigned long long addr, long long need) {
  const AddressRangeFn fn = address_range_fn();
  if (fn == nullptr) return -1;
  unsigned long long base = 0;
  size_t size = 0;
  if (fn(&base, &size, addr) != 0) return -1;
  unsigned long long end = base + size;
  for (int pieces = 1; end < addr + (unsigned long long)need && pieces < 4096; ++pieces) {
    // Only ask the driver about memory the runtime knows (no API error for a plain gap).
    cudaPointerAttributes next{};
    if (cudaPointerGetAttributes(&next, reinterpret_cast<const void*>(end)) != cudaSuccess) {
      cudaGetLastError();
      break;
    }
    if (next.type == cudaMemoryTypeUnregistered) break;
    unsigned long long nb = 0;
    size_t ns = 0;
    if (fn(&nb, &ns, end) != 0 || nb != end || ns == 0) break;
    end = nb + ns;
  }
  return (long long)(end - addr);
}

// Throws NEP_ERR_INVALID_ARGUMENT unless [addr, addr + bytes) is memory that kernels on `device`
// may access: device memory of that GPU (or managed / mapped pinned host memory) inside one
// allocation. A null address or an empty span passes (callers check which arguments are required).
inline void check_device_span(const char* name, int64_t addr, long long bytes, int device,
                              bool skip) {
  if (skip || addr == 0 || bytes <= 0) return;
  cudaPointerAttributes at{};
  const cudaError_t e = cudaPointerGetAttributes(&at, reinterpret_cast<const void*>(addr));
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec,
         " is not an address CUDA can query (", cudaGetErrorName(e), "); ", bytes, " bytes of GPU ",
         device, " memory were expected");
  }
  if (at.type == cudaMemoryTypeUnregistered)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec,
         " is host memory unknown to CUDA; ", bytes, " bytes of GPU ", device,
         " memory were expected");
  if (at.type == cudaMemoryTypeDevice && at.device != device)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec, " is memory of GPU ",
         at.device, " but this buffer is on GPU ", device,
         " (every array of a call must be on the buffer's GPU)");
  const long long have = bytes_mapped_from((unsigned long long)addr, bytes);
  if (have >= 0 && have < bytes)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec, " needs ", bytes,
         " bytes for the shape given, but its allocation ends ", have, " bytes after it");
}

// The same checks, as one object per call: skips everything while its stream is being captured.
class SpanChecker {
 public:
  SpanChecker(int device, cudaStream_t stream) : device_(device), skip_(stream_capturing(stream)) {}
  void operator()(const char* name, int64_t addr, long long bytes) const {
    check_device_span(name, addr, bytes, device_, skip_);
  }

 private:
  int device_;
  bool skip_;
};

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_DEVICE_SPAN_H_
