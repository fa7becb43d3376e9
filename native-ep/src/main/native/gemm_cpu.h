// The CPU path of the grouped FP8 GEMMs (include/nativeep/gemm_api.h): quantisers built on the
// wire codecs (codec.h) and the grouped GEMMs, written plainly as the oracle of the GPU kernels.
// Arguments are checked by the callers (gemm_args.h); these functions trust them.
#ifndef NATIVEEP_SRC_GEMM_CPU_H_
#define NATIVEEP_SRC_GEMM_CPU_H_

#include <cmath>
#include <cstdint>

#include "gemm_args.h"
#include "gemm_parallel.h"

namespace nep {
namespace gemm {

// x [m, k] -> q [m, k], s [m, row_scale_bytes]: the wire row of each x row, split.
void quantize_rows(Format f, const float* x, int64_t m, int64_t k, uint8_t* q, uint8_t* s);

// w [groups, n, k] -> q, s as nep_gemm_quantize_weights describes.
void quantize_weights(Format f, const float* w, int64_t groups, int64_t n, int64_t k,
                      bool transpose, uint8_t* q, uint8_t* s);

// x [m, c] -> q [c, Mp], s [c, Mp / block]: each group's padded column quantised as one row.
void quantize_rows_t_grouped(Format f, const float* x, int64_t c, const Groups& groups, uint8_t* q,
                             uint8_t* s);

// y [m, 2 inter] -> h = silu(gate) * up [m, inter] (into h_out unless null) and its wire rows.
void swiglu_quantize_rows(Format f, const float* y, int64_t m, int64_t inter, float* h_out,
                          uint8_t* q, uint8_t* s);

// silu(g) * u as gemm_api.h specifies it (float32, g / (1 + exp(-g)), then the product).
inline float swiglu(float g, float u) {
  const float e = std::exp(-g);
  const float silu = g / (1.0f + e);
  return silu * u;
}

// y [m, 2 inter], dh [m, inter] -> dy = [dgate, dup] [m, 2 inter] (into dy_out unless null) and
// its wire rows.
void dswiglu_quantize_rows(Format f, const float* y, const float* dh, int64_t m, int64_t inter,
                           float* dy_out, uint8_t* q, uint8_t* s);

// dgate and dup of silu(g) * u for the incoming gradient dh (gemm_api.h's float operations).
inline void dswiglu(float g, float u, float dh, float& dgate, float& dup) {
  const float e = std::exp(-g);
  const float d = 1.0f + e;
  const float sig = 1.0f / d;
  const float silu = g / d;
  const float dsilu = sig * (1.0f + g * (1.0f - sig));
  dgate = (dh * u) * dsilu;
  dup = dh * silu;
}

// The grouped GEMMs of gemm_api.h.
void grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa, const uint8_t* b,
               const uint8_t* sb, void* c);
void grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa, const uint8_t* b,
               const uint8_t* sb, float* c);

// One promotion step of the accumulation (gemm_api.h, "Numerics"), shared by the CPU path and the
// tests: acc + p * (sa * sb) for FP8_BLOCK, acc + p * 2^(ea + eb - 254) for MXFP8.
float promote_fp8(float acc, float p, float sa, float sb);
float promote_mx(float acc, float p, uint8_t ea, uint8_t eb);

}  // namespace gemm
}  // namespace nep

#endif  // NATIVEEP_SRC_GEMM_CPU_H_
