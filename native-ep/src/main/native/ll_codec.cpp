#include "ll_codec.h"

#include "codec_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEP_LL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NEP_LL_CLONES
#endif

namespace nep {
namespace {

// ceil(log2(q)) for a positive normal float q, from its bits (exact, no libm).
inline int32_t ceil_log2(float q) {
  const uint32_t b = float_bits(q);
  int32_t e = static_cast<int32_t>(b >> 23) - 127;
  if ((b & 0x7FFFFFu) != 0) ++e;
  return e;
}

NEP_LL_CLONES void encode_fp8_pow2_impl(const float* x, int64_t hidden, uint8_t* out) {
  encode_fp8_blocks(x, hidden, out, [](float amax, float& scale, float& inv_scale) {
    // amax >= 448 * 2^-126, so q >= 2^-126 and e in [-126, 120]: both 2^e and 2^-e are normal.
    const int32_t e = ceil_log2(amax / 448.0f);
    scale = pow2f(e);
    inv_scale = pow2f(-e);
  });
}

NEP_LL_CLONES void scale_store(const float* v, int64_t n, float w, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = w * v[i];
}

NEP_LL_CLONES void scale_add(const float* v, int64_t n, float w, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] += w * v[i];
}

}  // namespace

void encode_row_fp8_pow2(const float* x, int64_t hidden, uint8_t* out) {
  encode_fp8_pow2_impl(x, hidden, out);
}

void encode_row_ll(Wire wire, bool pow2_scales, const float* x, int64_t hidden, uint8_t* out) {
  if (pow2_scales && wire == Wire::kFp8) {
    encode_fp8_pow2_impl(x, hidden, out);
  } else {
    encode_row(wire, x, hidden, out);
  }
}

void scale_row(const float* v, int64_t n, float w, float* out, bool accumulate) {
  if (accumulate) {
    scale_add(v, n, w, out);
  } else {
    scale_store(v, n, w, out);
  }
}

}  // namespace nep
