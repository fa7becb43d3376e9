// NCCL, loaded at run time with dlopen so that the plug-in builds and loads without it (no nccl.h
// here: the few types and functions used are declared below, as NCCL 2.x defines them).
#ifndef NATIVEEP_CUDA_NCCL_API_H_
#define NATIVEEP_CUDA_NCCL_API_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace nep {
namespace cuda {

typedef struct ncclComm* ncclComm_t;
struct ncclUniqueId {
  char internal[128];
};
typedef int ncclResult_t;  // ncclSuccess = 0, ncclInProgress = 7
enum : int { ncclSuccess = 0, ncclInProgress = 7 };
typedef int ncclDataType_t;
enum : int { ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclFloat32 = 7, ncclBfloat16 = 9 };
typedef int ncclRedOp_t;
enum : int { ncclSum = 0 };

struct NcclApi {
  ncclResult_t (*GetVersion)(int*);
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*);
  const char* (*GetErrorString)(ncclResult_t);
  const char* (*GetLastError)(ncclComm_t);  // may be null (NCCL < 2.13)
  ncclResult_t (*GroupStart)();
  ncclResult_t (*GroupEnd)();
  ncclResult_t (*Send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*Recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*AllGather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*AllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                            cudaStream_t);
  int version;
  std::string path;
};

// The loaded library, or null with *why set (NEP_NCCL_LIBRARY, else "libnccl.so.2"). Loads once.
const NcclApi* nccl_api(std::string* why);

// Throws nep::cuda::Error (NEP_ERR_UNSUPPORTED) when NCCL cannot be loaded.
const NcclApi& nccl_or_throw();

// Throws nep::cuda::Error(NEP_ERR_INTERNAL) naming `what` and NCCL's message when r != ncclSuccess.
void check_nccl(ncclResult_t r, const char* what, ncclComm_t comm = nullptr);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_NCCL_API_H_
