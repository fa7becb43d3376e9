// Codec pieces that only the low-latency mode uses (the wire formats themselves are in codec.h):
//   * FP8 with power-of-two scales (DeepEP's `round_scale`): the same wire layout as Wire::kFp8
//     (hidden e4m3 bytes, then one fp32 scale per 128-channel block), but each scale is rounded
//     up to a power of two, scale = 2^ceil(log2(amax / 448)), so decode_row(Wire::kFp8, ...)
//     reads it unchanged and every element times its scale is exact in fp32.
//   * weighted accumulation of decoded rows, the source-side reduce of low-latency combine.
#ifndef NATIVEEP_SRC_LL_CODEC_H_
#define NATIVEEP_SRC_LL_CODEC_H_

#include <cstdint>

#include "codec.h"

namespace nep {

// x[hidden] float32 -> out[wire_row_bytes(Wire::kFp8, hidden)] with power-of-two scales.
// amax is the largest finite |x| of the block, floored at 448 * 2^-126 like Wire::kFp8;
// non-finite elements become the e4m3 NaN code.
void encode_row_fp8_pow2(const float* x, int64_t hidden, uint8_t* out);

// Encodes with the chosen wire and, for Wire::kFp8 with pow2_scales, the rounded scales.
void encode_row_ll(Wire wire, bool pow2_scales, const float* x, int64_t hidden, uint8_t* out);

// out[i] = w * v[i] (accumulate false) or out[i] += w * v[i] (accumulate true), fp32.
void scale_row(const float* v, int64_t n, float w, float* out, bool accumulate);

}  // namespace nep

#endif  // NATIVEEP_SRC_LL_CODEC_H_
