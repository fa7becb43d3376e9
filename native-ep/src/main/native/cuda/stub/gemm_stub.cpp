// Stand-in for the plug-in's grouped FP8 GEMM entry points (include/nativeep/gemm_api.h) in builds
// made without nvcc: each fails with NEP_ERR_UNSUPPORTED, as nativeep_cuda_stub.cpp's do.
#include <cstring>

#include "nativeep/gemm_api.h"

namespace {

int32_t unsupported(char* err, int64_t cap) {
  static const char kMsg[] =
      "native-ep was built without its CUDA plug-in (no CUDA compiler at build time): the GPU "
      "grouped FP8 GEMMs need a rebuild with nvcc on the PATH (-Dnep.cuda=ON)";
  if (err != nullptr && cap > 0) {
    std::strncpy(err, kMsg, size_t(cap - 1));
    err[cap - 1] = '\0';
  }
  return NEP_ERR_UNSUPPORTED;
}

}  // namespace

#define NEP_STUB extern "C" __attribute__((visibility("default")))

NEP_STUB int32_t nep_cuda_gemm_quantize_rows(int32_t, int32_t, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_quantize_weights(int32_t, int32_t, int64_t, int64_t, int64_t,
                                                int64_t, int32_t, int64_t, int64_t, int64_t,
                                                char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_quantize_rows_t_grouped(int32_t, int32_t, int64_t, int64_t, int64_t,
                                                       int32_t, const int64_t*, int64_t, int64_t,
                                                       int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_swiglu_quantize_rows(int32_t, int32_t, int64_t, int64_t, int64_t,
                                                    int64_t, int64_t, int64_t, int64_t, char* err,
                                                    int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_dswiglu_quantize_rows(int32_t, int32_t, int64_t, int64_t, int64_t,
                                                     int64_t, int64_t, int64_t, int64_t, int64_t,
                                                     char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_grouped_m(int32_t, int32_t, int32_t, int64_t, int64_t, int64_t,
                                         const int64_t*, int64_t, int64_t, int64_t, int64_t,
                                         int64_t, int64_t, int64_t, int32_t, int64_t, char* err,
                                         int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_grouped_k(int32_t, int32_t, int32_t, int64_t, int64_t,
                                         const int64_t*, int64_t, int64_t, int64_t, int64_t,
                                         int64_t, int64_t, char* err, int64_t cap) {
  return unsupported(err, cap);
}
NEP_STUB int32_t nep_cuda_gemm_last_tier(void) { return NEP_GEMM_TIER_NONE; }
