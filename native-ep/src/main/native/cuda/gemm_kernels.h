// Host launchers of the grouped FP8 GEMM kernels (gemm_quantize.cu, gemm_quantize_weights.cu,
// gemm_mma.cu, sm90a/gemm_wgmma.cu), called by the C ABI (gemm_capi.cu) after it has checked every
// argument (../gemm_args.h). Each launches asynchronously on `stream` and throws nep::Error when a
// launch fails.
#ifndef NATIVEEP_CUDA_GEMM_KERNELS_H_
#define NATIVEEP_CUDA_GEMM_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "gemm_args.h"

namespace nep {
namespace cuda {
namespace gemm {

using nep::gemm::Format;
using nep::gemm::GroupedK;
using nep::gemm::GroupedM;
using nep::gemm::Groups;

// Group offsets as a kernel parameter (no device copy, no synchronisation): raw and padded
// offsets, and the prefix of M-tiles for the M-grouped kernels.
struct GroupTable {
  int32_t count;
  int64_t offsets[NEP_GEMM_MAX_GROUPS + 1];
  int64_t padded[NEP_GEMM_MAX_GROUPS + 1];
  int32_t tile_prefix[NEP_GEMM_MAX_GROUPS + 1];  // M-tiles of groups [0, g) for a tile height
};

// The table of `groups` with M-tiles of `tile_rows` rows (0: no tile prefix).
GroupTable make_group_table(const Groups& groups, int64_t tile_rows);

// x [rows, k] -> q [rows, k], s [rows, row scale bytes] (wire rows, split).
void launch_quantize_rows(Format f, const float* x, int64_t rows, int64_t k, uint8_t* q, uint8_t* s,
                          cudaStream_t stream);

// y [rows, 2 inter] -> h = silu(gate) * up (into h_out unless null) and its wire rows.
void launch_swiglu_quantize_rows(Format f, const float* y, int64_t rows, int64_t inter,
                                 float* h_out, uint8_t* q, uint8_t* s, cudaStream_t stream);

// y [rows, 2 inter], dh [rows, inter] -> dy = [dgate, dup] (into dy_out unless null) and its
// wire rows (2 inter channels).
void launch_dswiglu_quantize_rows(Format f, const float* y, const float* dh, int64_t rows,
                                  int64_t inter, float* dy_out, uint8_t* q, uint8_t* s,
                                  cudaStream_t stream);

// Weights w [groups, n, k] -> q, s as nep_gemm_quantize_weights gives them: q [G, n, k], or with
// transpose q [G, k, n] = w_g^T; FP8_BLOCK 128x128 block scales, MXFP8 1x32 along q's rows.
void launch_quantize_weights(Format f, const float* w, int64_t groups, int64_t n, int64_t k,
                             bool transpose, uint8_t* q, uint8_t* s, cudaStream_t stream);

// x [m, c] -> the K-grouped operand q [c, Mp], s [c, Mp / block].
void launch_quantize_rows_t_grouped(Format f, const float* x, int64_t c, const Groups& groups,
                                    uint8_t* q, uint8_t* s, cudaStream_t stream);

// Portable tier (mma.sync m16n8k32 e4m3).
void launch_mma_grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa,
                          const uint8_t* b, const uint8_t* sb, void* c, cudaStream_t stream);
void launch_mma_grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa,
                          const uint8_t* b, const uint8_t* sb, float* c, cudaStream_t stream);

// Hopper tier (wgmma + TMA, sm90a/gemm_wgmma.cu; sm_90 devices only). The refusals return null
// when the tier can take the call, else the reason it cannot.
const char* wgmma_refusal_m(const GroupedM& args, const void* a, const void* b);
const char* wgmma_refusal_k(const GroupedK& args, const void* a, const void* b);
void launch_wgmma_grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa,
                            const uint8_t* b, const uint8_t* sb, void* c, cudaStream_t stream);
void launch_wgmma_grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa,
                            const uint8_t* b, const uint8_t* sb, float* c, cudaStream_t stream);

}  // namespace gemm
}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_GEMM_KERNELS_H_
