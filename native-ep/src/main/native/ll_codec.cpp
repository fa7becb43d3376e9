#include "ll_codec.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEP_LL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NEP_LL_CLONES
#endif

namespace nep {
namespace {

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t kAmaxFloorBits = (9u << 23) | 0x600000u;  // 448 * 2^-126, as Wire::kFp8

inline __attribute__((always_inline)) uint32_t finite_amax_bits(const float* x, int64_t n) {
  typedef uint32_t __attribute__((may_alias)) AliasedBits;
  const AliasedBits* xb = reinterpret_cast<const AliasedBits*>(x);
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = xb[i] & kAbsMask;
    const uint32_t finite = a & (0u - static_cast<uint32_t>(a < kInfBits));
    m = m > finite ? m : finite;
  }
  return m;
}

// ceil(log2(q)) for a positive normal float q, from its bits (exact, no libm).
inline int32_t ceil_log2(float q) {
  const uint32_t b = float_bits(q);
  int32_t e = static_cast<int32_t>(b >> 23) - 127;
  if ((b & 0x7FFFFFu) != 0) ++e;
  return e;
}

NEP_LL_CLONES void encode_fp8_pow2_impl(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    const float* xb = x + start;
    uint8_t* ob = out + start;
    const float amax = bits_float(std::max(finite_amax_bits(xb, n), kAmaxFloorBits));
    // amax >= 448 * 2^-126, so q >= 2^-126 and e in [-126, 120]: both 2^e and 2^-e are normal.
    const int32_t e = ceil_log2(amax / 448.0f);
    const float scale = pow2f(e);
    const float inv_scale = pow2f(-e);
    for (int64_t i = 0; i < n; ++i) ob[i] = e4m3_from_float(xb[i] * inv_scale);
    std::memcpy(scales + 4 * b, &scale, sizeof scale);
  }
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
