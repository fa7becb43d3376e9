// One warp's 128-element unit of the grouped GEMMs' quantisers (gemm_quantize.cu,
// gemm_quantize_weights.cu): one FP8_BLOCK scale block or four MXFP8 ones, in either of two lane
// layouts. Elements and scales follow the CPU codec's rule (gemm_device.cuh).
#ifndef NATIVEEP_CUDA_GEMM_QUANTIZE_CUH_
#define NATIVEEP_CUDA_GEMM_QUANTIZE_CUH_

#include <cstdint>

#include "gemm_args.h"
#include "gemm_device.cuh"

namespace nep {
namespace cuda {
namespace gemm {

using nep::gemm::Format;

constexpr int kUnit = 128;  // elements a warp quantises at once: one FP8 block or four MX blocks

// Quantises the 128 elements v[j] = element lane + 32 j of a unit (zeros past the row end) and
// writes elements (where i < len) and scales. FP8: one scale; MXFP8: one per 32.
template <Format F>
__device__ __forceinline__ void quantize_unit(const float v[4], int lane, int64_t len, uint8_t* q,
                                              uint8_t* s) {
  if constexpr (F == Format::kFp8Block) {
    uint32_t amax = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) amax = max(amax, finite_abs_bits(v[j]));
    const Fp8Scale sc = fp8_scale(warp_max_u32(amax));
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (lane + 32 * j < len) q[lane + 32 * j] = fp8_element(v[j], sc);
    if (lane == 0) *reinterpret_cast<float*>(s) = sc.scale;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (32 * j >= len) break;  // warp-uniform
      const MxScale sc = mx_scale(warp_max_u32(finite_abs_bits(v[j])));
      if (lane + 32 * j < len) q[lane + 32 * j] = mx_element(v[j], sc);
      if (lane == 0) s[j] = (uint8_t)(sc.shared_exp + 127);
    }
  }
}

// Four e4m3 bytes as one little-endian word: b0 at the lowest address.
__device__ __forceinline__ uint32_t pack4(uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3) {
  return (uint32_t)b0 | ((uint32_t)b1 << 8) | ((uint32_t)b2 << 16) | ((uint32_t)b3 << 24);
}

// The same unit with the lane's elements 4 lane .. 4 lane + 3 in x (zeros past the row end), len a
// multiple of 4 and q 4-byte aligned: the lane stores its four bytes as one word. MXFP8's block b
// is lanes 8 b .. 8 b + 7.
template <Format F>
__device__ __forceinline__ void quantize_unit4(const float4& x, int lane, int64_t len, uint8_t* q,
                                               uint8_t* s) {
  uint32_t amax = max(max(finite_abs_bits(x.x), finite_abs_bits(x.y)),
                      max(finite_abs_bits(x.z), finite_abs_bits(x.w)));
  uint32_t word;
  if constexpr (F == Format::kFp8Block) {
    const Fp8Scale sc = fp8_scale(warp_max_u32(amax));
    word = pack4(fp8_element(x.x, sc), fp8_element(x.y, sc), fp8_element(x.z, sc),
                 fp8_element(x.w, sc));
    if (lane == 0) *reinterpret_cast<float*>(s) = sc.scale;
  } else {
#pragma unroll
    for (int m = 4; m >= 1; m >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, m));
    const MxScale sc = mx_scale(amax);
    word =
        pack4(mx_element(x.x, sc), mx_element(x.y, sc), mx_element(x.z, sc), mx_element(x.w, sc));
    if ((lane & 7) == 0 && 4 * lane < len) s[lane / 8] = (uint8_t)(sc.shared_exp + 127);
  }
  if (4 * lane < len) *reinterpret_cast<uint32_t*>(q + 4 * lane) = word;
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_GEMM_QUANTIZE_CUH_
