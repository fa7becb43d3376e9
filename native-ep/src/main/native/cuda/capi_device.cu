// C ABI of the plug-in as a whole (include/nativeep/cuda_api.h): its version, the devices it sees,
// and device memory for callers without a CUDA runtime of their own (Java).
#include <algorithm>
#include <cstring>

#include "host_utils.h"
#include "nativeep/cuda_api.h"
#include "nativeep/export.h"

using namespace nep::cuda;

NEP_EXPORT int32_t nep_cuda_abi_version(void) { return 3; }

NEP_EXPORT int32_t nep_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

NEP_EXPORT int32_t nep_cuda_malloc(int32_t device, int64_t bytes, int64_t* address, char* err,
                                   int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (address == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "address is null");
    *address = 0;
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    DeviceGuard guard(device);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, (size_t)std::max<int64_t>(bytes, 1));
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail(e == cudaErrorMemoryAllocation ? NEP_ERR_CAPACITY : NEP_ERR_INTERNAL, "cudaMalloc of ",
           bytes, " bytes on device ", device, ": ", cudaGetErrorString(e));
    }
    *address = reinterpret_cast<int64_t>(p);
  });
}

NEP_EXPORT int32_t nep_cuda_free(int32_t device, int64_t address, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (address == 0) return;
    DeviceGuard guard(device);
    check_cuda(cudaFree(reinterpret_cast<void*>(address)), "cudaFree");
  });
}

NEP_EXPORT int32_t nep_cuda_memcpy(int32_t device, int64_t dst, int64_t src, int64_t bytes,
                                   char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    if (bytes == 0) return;
    if (dst == 0 || src == 0) fail(NEP_ERR_INVALID_ARGUMENT, "dst or src is null");
    DeviceGuard guard(device);
    check_cuda(cudaMemcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src),
                          (size_t)bytes, cudaMemcpyDefault),
               "cudaMemcpy");
  });
}

NEP_EXPORT int32_t nep_cuda_memset(int32_t device, int64_t address, int32_t value, int64_t bytes,
                                   char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    if (bytes == 0) return;
    if (address == 0) fail(NEP_ERR_INVALID_ARGUMENT, "address is null");
    DeviceGuard guard(device);
    check_cuda(cudaMemset(reinterpret_cast<void*>(address), value & 0xff, (size_t)bytes),
               "cudaMemset");
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  });
}

NEP_EXPORT int32_t nep_cuda_device_info(int32_t device, char* name, int64_t name_cap,
                                        int64_t* total_bytes, int64_t* free_bytes,
                                        int32_t* sm_count, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (name != nullptr && name_cap > 0) name[0] = '\0';
    const int n = nep_cuda_device_count();
    if (device < 0 || device >= n)
      fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", n,
           ") (CUDA devices visible)");
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    if (name != nullptr && name_cap > 0) {
      std::strncpy(name, prop.name, size_t(name_cap - 1));
      name[name_cap - 1] = '\0';
    }
    if (sm_count != nullptr) *sm_count = prop.multiProcessorCount;
    DeviceGuard guard(device);
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    if (total_bytes != nullptr) *total_bytes = (int64_t)total;
    if (free_bytes != nullptr) *free_bytes = (int64_t)free;
  });
}

// Version of the plug-in as a whole (its set of entry points).
NEP_EXPORT int32_t nep_cuda_plugin_abi_version() { return 1; }
