// Row encoders and decoders for the wire formats described in codec.h. Every inner loop is
// branch-free over a block of channels so the compiler can vectorise it.
#include "codec.h"
#include "codec_kernels.h"

#include <algorithm>
#include <cstdlib>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NEP_CODEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NEP_CODEC_CLONES
#endif

namespace nep {
namespace {

// The row functions below are inlined into the *_dispatch functions at the end of this namespace,
// which are compiled twice (AVX2 and baseline) and picked at load time.
#define NEP_INLINE inline __attribute__((always_inline))

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t kFp8AmaxFloorBits = (9u << 23) | 0x600000u;  // 448 * 2^-126
constexpr uint32_t kNanBits = 0x7FC00000u;

// Bits of the largest finite |x[i]|, or 0 when none is finite and non-zero. For non-negative
// floats the bit patterns order like the values, so an integer max does the job.
NEP_INLINE uint32_t finite_amax_bits(const float* x, int64_t n) {
  // Read the float bits as integers (may_alias makes this well-defined) so the loop vectorises.
  typedef uint32_t __attribute__((may_alias)) AliasedBits;
  const AliasedBits* xb = reinterpret_cast<const AliasedBits*>(x);
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = xb[i] & kAbsMask;
    const uint32_t finite = a & (0u - static_cast<uint32_t>(a < kInfBits));  // mask, not select:
    m = m > finite ? m : finite;                                           // GCC 12 vectorises it
  }
  return m;
}

inline int64_t num_blocks(int64_t hidden, int64_t block) { return (hidden + block - 1) / block; }

NEP_INLINE void encode_fp32(const float* x, int64_t hidden, uint8_t* out) {
  std::memcpy(out, x, static_cast<size_t>(hidden) * sizeof(float));
}

template <bool kAdd>
NEP_INLINE void decode_fp32(const uint8_t* in, int64_t hidden, float* out) {
  if constexpr (!kAdd) {
    std::memcpy(out, in, static_cast<size_t>(hidden) * sizeof(float));
  } else {
    for (int64_t i = 0; i < hidden; ++i) {
      float v;
      std::memcpy(&v, in + 4 * i, sizeof v);
      out[i] += v;
    }
  }
}

NEP_INLINE void encode_bf16(const float* x, int64_t hidden, uint8_t* out) {
  for (int64_t i = 0; i < hidden; ++i) {
    uint16_t h = bf16_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, sizeof h);
  }
}

template <bool kAdd>
NEP_INLINE void decode_bf16(const uint8_t* in, int64_t hidden, float* out) {
  for (int64_t i = 0; i < hidden; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, sizeof h);
    float v = bf16_to_float(h);
    if constexpr (kAdd) {
      out[i] += v;
    } else {
      out[i] = v;
    }
  }
}

NEP_INLINE void encode_fp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    const float* xb = x + start;
    uint8_t* ob = out + start;
    const float amax = bits_float(std::max(finite_amax_bits(xb, n), kFp8AmaxFloorBits));
    const float scale = amax / 448.0f;
    const float inv_scale = 448.0f / amax;  // x * (448 / amax), as DeepEP's per-token cast does
    for (int64_t i = 0; i < n; ++i) ob[i] = e4m3_from_float(xb[i] * inv_scale);
    std::memcpy(scales + 4 * b, &scale, sizeof scale);
  }
}

template <bool kAdd>
NEP_INLINE void decode_fp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    float scale;
    std::memcpy(&scale, scales + 4 * b, sizeof scale);
    const uint8_t* ib = in + start;
    float* ob = out + start;
    for (int64_t i = 0; i < n; ++i) {
      float v = e4m3_to_float(ib[i]) * scale;
      if constexpr (kAdd) {
        ob[i] += v;
      } else {
        ob[i] = v;
      }
    }
  }
}

NEP_INLINE void encode_mxfp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const float* xb = x + start;
    uint8_t* ob = out + start;
    // floor(log2(amax)) is the unbiased exponent field (subnormal or zero amax clamp to -127).
    int32_t shared_exp = static_cast<int32_t>(finite_amax_bits(xb, n) >> 23) - 127 - 8;
    shared_exp = std::clamp(shared_exp, -127, 127);
    // x / 2^shared_exp as two exact power-of-two multiplies, each factor a normal float.
    const int32_t half = -shared_exp / 2;
    const float f1 = pow2f(half);
    const float f2 = pow2f(-shared_exp - half);
    for (int64_t i = 0; i < n; ++i) ob[i] = e4m3_from_float(xb[i] * f1 * f2);
    scales[b] = static_cast<uint8_t>(shared_exp + 127);
  }
}

template <bool kAdd>
NEP_INLINE void decode_mxfp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const int32_t shared_exp = static_cast<int32_t>(scales[b]) - 127;
    const int32_t half = shared_exp / 2;
    float f1 = pow2f(half);
    const float f2 = pow2f(shared_exp - half);
    if (scales[b] == 0xFF) f1 = bits_float(kNanBits);
    const uint8_t* ib = in + start;
    float* ob = out + start;
    for (int64_t i = 0; i < n; ++i) {
      float v = e4m3_to_float(ib[i]) * f1 * f2;
      if constexpr (kAdd) {
        ob[i] += v;
      } else {
        ob[i] = v;
      }
    }
  }
}

template <bool kAdd>
NEP_INLINE void decode_any(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  switch (wire) {
    case Wire::kFp32: return decode_fp32<kAdd>(in, hidden, out);
    case Wire::kBf16: return decode_bf16<kAdd>(in, hidden, out);
    case Wire::kFp8: return decode_fp8<kAdd>(in, hidden, out);
    case Wire::kMxfp8: return decode_mxfp8<kAdd>(in, hidden, out);
  }
  fail(NEP_ERR_INTERNAL, "decode: unknown wire format ", static_cast<int32_t>(wire));
}

// Compiled for AVX2 and for the baseline; the loader picks one (the symbols stay internal).
NEP_CODEC_CLONES void encode_row_dispatch(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kFp32: return encode_fp32(x, hidden, out);
    case Wire::kBf16: return encode_bf16(x, hidden, out);
    case Wire::kFp8: return encode_fp8(x, hidden, out);
    case Wire::kMxfp8: return encode_mxfp8(x, hidden, out);
  }
  fail(NEP_ERR_INTERNAL, "encode: unknown wire format ", static_cast<int32_t>(wire));
}

NEP_CODEC_CLONES void decode_row_dispatch(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  decode_any<false>(wire, in, hidden, out);
}

NEP_CODEC_CLONES void decode_add_row_dispatch(Wire wire, const uint8_t* in, int64_t hidden, float* acc) {
  decode_any<true>(wire, in, hidden, acc);
}

// ---- AVX2 row loops (explicit intrinsics; picked at run time when the CPU has AVX2) ----------
// Each computes, lane by lane, exactly the scalar formulas of codec.h (same integer tricks, the
// same float multiplies in the same order, no FMA), so the bytes and floats are bit-identical to
// the scalar loops, which still handle the tails that do not fill a vector.
#if defined(__x86_64__) && defined(__GNUC__)
#define NEP_HAVE_AVX2_PATH 1
#define NEP_AVX2 __attribute__((target("avx2"), always_inline)) inline

NEP_AVX2 __m256i e4m3_encode8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
  const __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i non_finite = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F7FFFFF));
  const __m256i sat = _mm256_min_epu32(mag, _mm256_set1_epi32(static_cast<int>(kE4m3MaxBits)));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(sat, 20), _mm256_set1_epi32(1));
  __m256i normal = _mm256_add_epi32(_mm256_add_epi32(sat, _mm256_set1_epi32(0x7FFFF)), odd);
  normal = _mm256_sub_epi32(_mm256_srli_epi32(normal, 20), _mm256_set1_epi32((127 - 7) << 3));
  const __m256i subnormal = _mm256_sub_epi32(
      _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(sat), _mm256_set1_ps(16384.0f))),
      _mm256_set1_epi32(0x46800000));
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(kE4m3MinNormalBits)), sat);
  __m256i code = _mm256_blendv_epi8(normal, subnormal, is_sub);
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(kE4m3Nan), non_finite);
  return _mm256_or_si256(code, sign);
}

// 32 codes (four vectors of 8 lanes, each lane < 256) -> 32 bytes in order.
NEP_AVX2 void store_codes32(uint8_t* out, __m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packus_epi32(a, b);  // a0-3 b0-3 | a4-7 b4-7
  const __m256i cd = _mm256_packus_epi32(c, d);
  const __m256i bytes = _mm256_packus_epi16(ab, cd);  // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  const __m256i fixed = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), fixed);
}

// n floats times f1 (then times f2 when kTwo) -> e4m3 codes; n a multiple of 32 handled here, the
// rest by the scalar code.
template <bool kTwo>
NEP_AVX2 int64_t e4m3_encode_run(const float* x, int64_t n, float f1, float f2, uint8_t* out) {
  const __m256 m1 = _mm256_set1_ps(f1), m2 = _mm256_set1_ps(f2);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 v[4];
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * j), m1);
      if constexpr (kTwo) v[j] = _mm256_mul_ps(v[j], m2);
    }
    store_codes32(out + i, e4m3_encode8(v[0]), e4m3_encode8(v[1]), e4m3_encode8(v[2]), e4m3_encode8(v[3]));
  }
  for (; i < n; ++i) out[i] = e4m3_from_float(kTwo ? x[i] * f1 * f2 : x[i] * f1);
  return n;
}

NEP_AVX2 uint32_t finite_amax_bits_avx2(const float* x, int64_t n) {
  __m256i m = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i a = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)),
                                       _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i finite = _mm256_and_si256(a, _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7F800000), a));
    m = _mm256_max_epu32(m, finite);
  }
  __m128i h = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0x4E));
  h = _mm_max_epu32(h, _mm_shuffle_epi32(h, 0xB1));
  uint32_t r = static_cast<uint32_t>(_mm_cvtsi128_si32(h));
  if (i < n) r = std::max(r, finite_amax_bits(x + i, n - i));
  return r;
}

// 8 e4m3 codes (the low 8 bytes of c8) -> 8 floats, the formula of e4m3_to_float.
NEP_AVX2 __m256 e4m3_decode8(__m128i c8) {
  const __m256i c = _mm256_cvtepu8_epi32(c8);
  const __m256i mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
  const __m256i exp = _mm256_srli_epi32(mag, 3);
  const __m256i exp_zero = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
  const __m256i sig = _mm256_or_si256(_mm256_and_si256(mag, _mm256_set1_epi32(7)),
                                      _mm256_andnot_si256(exp_zero, _mm256_set1_epi32(8)));
  const __m256i eff_exp = _mm256_blendv_epi8(exp, _mm256_set1_epi32(1), exp_zero);
  const __m256 pow = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(eff_exp, _mm256_set1_epi32(127 - 10)), 23));
  const __m256 value = _mm256_mul_ps(_mm256_cvtepi32_ps(sig), pow);
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24);
  __m256i bits = _mm256_or_si256(_mm256_castps_si256(value), sign);
  const __m256i is_nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(kE4m3Nan));
  bits = _mm256_blendv_epi8(bits, _mm256_or_si256(_mm256_set1_epi32(static_cast<int>(kNanBits)), sign), is_nan);
  return _mm256_castsi256_ps(bits);
}

template <bool kAdd, bool kTwo>
NEP_AVX2 void e4m3_decode_run(const uint8_t* in, int64_t n, float f1, float f2, float* out) {
  const __m256 m1 = _mm256_set1_ps(f1), m2 = _mm256_set1_ps(f2);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(e4m3_decode8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i))), m1);
    if constexpr (kTwo) v = _mm256_mul_ps(v, m2);
    if constexpr (kAdd) v = _mm256_add_ps(_mm256_loadu_ps(out + i), v);
    _mm256_storeu_ps(out + i, v);
  }
  for (; i < n; ++i) {
    float v = kTwo ? e4m3_to_float(in[i]) * f1 * f2 : e4m3_to_float(in[i]) * f1;
    if constexpr (kAdd) {
      out[i] += v;
    } else {
      out[i] = v;
    }
  }
}

__attribute__((target("avx2"))) void encode_bf16_avx2(const float* x, int64_t hidden, uint8_t* out) {
  int64_t i = 0;
  for (; i + 16 <= hidden; i += 16) {
    __m256i r[2];
    for (int j = 0; j < 2; ++j) {
      const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8 * j));
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd), 16);
      const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
      const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                                _mm256_set1_epi32(0x7F800000));
      r[j] = _mm256_blendv_epi8(rounded, quiet, is_nan);
    }
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i), packed);
  }
  for (; i < hidden; ++i) {
    uint16_t h = bf16_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, sizeof h);
  }
}

template <bool kAdd>
__attribute__((target("avx2"))) void decode_bf16_avx2(const uint8_t* in, int64_t hidden, float* out) {
  int64_t i = 0;
  for (; i + 8 <= hidden; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    if constexpr (kAdd) v = _mm256_add_ps(_mm256_loadu_ps(out + i), v);
    _mm256_storeu_ps(out + i, v);
  }
  for (; i < hidden; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, sizeof h);
    if constexpr (kAdd) {
      out[i] += bf16_to_float(h);
    } else {
      out[i] = bf16_to_float(h);
    }
  }
}

__attribute__((target("avx2"))) void encode_fp8_avx2(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    const float amax = bits_float(std::max(finite_amax_bits_avx2(x + start, n), kFp8AmaxFloorBits));
    const float scale = amax / 448.0f;
    const float inv_scale = 448.0f / amax;
    e4m3_encode_run<false>(x + start, n, inv_scale, 1.0f, out + start);
    std::memcpy(scales + 4 * b, &scale, sizeof scale);
  }
}

template <bool kAdd>
__attribute__((target("avx2"))) void decode_fp8_avx2(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    float scale;
    std::memcpy(&scale, scales + 4 * b, sizeof scale);
    e4m3_decode_run<kAdd, false>(in + start, n, scale, 1.0f, out + start);
  }
}

__attribute__((target("avx2"))) void encode_mxfp8_avx2(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    int32_t shared_exp = static_cast<int32_t>(finite_amax_bits_avx2(x + start, n) >> 23) - 127 - 8;
    shared_exp = std::clamp(shared_exp, -127, 127);
    const int32_t half = -shared_exp / 2;
    e4m3_encode_run<true>(x + start, n, pow2f(half), pow2f(-shared_exp - half), out + start);
    scales[b] = static_cast<uint8_t>(shared_exp + 127);
  }
}

template <bool kAdd>
__attribute__((target("avx2"))) void decode_mxfp8_avx2(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const int32_t shared_exp = static_cast<int32_t>(scales[b]) - 127;
    const int32_t half = shared_exp / 2;
    float f1 = pow2f(half);
    const float f2 = pow2f(shared_exp - half);
    if (scales[b] == 0xFF) f1 = bits_float(kNanBits);
    e4m3_decode_run<kAdd, true>(in + start, n, f1, f2, out + start);
  }
}

bool env_flag(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] != '\0' && env[0] != '0';
}

// The CPU's sets, probed once (the answer cannot change while the process runs).
struct CpuSets {
  bool avx2 = false;
  bool avx512 = false;
};

const CpuSets& cpu_sets() {
  static const CpuSets sets = [] {
    CpuSets s;
    __builtin_cpu_init();
    s.avx2 = __builtin_cpu_supports("avx2") != 0;
    s.avx512 = s.avx2 && __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
               __builtin_cpu_supports("avx512vl") != 0 && __builtin_cpu_supports("avx512dq") != 0;
    return s;
  }();
  return sets;
}

// True when the AVX2 loop took the row.
template <bool kAdd>
bool decode_avx2(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  switch (wire) {
    case Wire::kBf16: decode_bf16_avx2<kAdd>(in, hidden, out); return true;
    case Wire::kFp8: decode_fp8_avx2<kAdd>(in, hidden, out); return true;
    case Wire::kMxfp8: decode_mxfp8_avx2<kAdd>(in, hidden, out); return true;
    default: return false;
  }
}

bool encode_avx2(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kBf16: encode_bf16_avx2(x, hidden, out); return true;
    case Wire::kFp8: encode_fp8_avx2(x, hidden, out); return true;
    case Wire::kMxfp8: encode_mxfp8_avx2(x, hidden, out); return true;
    default: return false;
  }
}
#else
bool env_flag(const char*) { return false; }
template <bool kAdd>
bool decode_avx2(Wire, const uint8_t*, int64_t, float*) { return false; }
bool encode_avx2(Wire, const float*, int64_t, uint8_t*) { return false; }
#endif

template <bool kAdd>
void decode_with(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  if (isa == CodecIsa::kAvx512 &&
      decode_row_avx512(wire, in, hidden, out, kAdd ? DecodeKind::kAdd : DecodeKind::kStore)) {
    return;
  }
  if (isa != CodecIsa::kScalar && decode_avx2<kAdd>(wire, in, hidden, out)) return;
  if constexpr (kAdd) {
    decode_add_row_dispatch(wire, in, hidden, out);
  } else {
    decode_row_dispatch(wire, in, hidden, out);
  }
}

void require_supported(CodecIsa isa) {
  if (!codec_isa_supported(isa)) {
    fail(NEP_ERR_INTERNAL, "codec: instruction set ", codec_isa_name(isa), " is not available on this CPU");
  }
}

}  // namespace

bool wire_is_valid(int32_t wire) { return wire >= NEP_WIRE_FP32 && wire <= NEP_WIRE_MXFP8; }

const char* wire_name(Wire wire) {
  switch (wire) {
    case Wire::kFp32: return "fp32";
    case Wire::kBf16: return "bf16";
    case Wire::kFp8: return "fp8";
    case Wire::kMxfp8: return "mxfp8";
  }
  return "invalid";
}

int64_t wire_row_bytes(Wire wire, int64_t hidden) {
  switch (wire) {
    case Wire::kFp32: return 4 * hidden;
    case Wire::kBf16: return 2 * hidden;
    case Wire::kFp8: return hidden + 4 * num_blocks(hidden, kFp8BlockSize);
    case Wire::kMxfp8: return hidden + num_blocks(hidden, kMxBlockSize);
  }
  fail(NEP_ERR_INTERNAL, "row bytes: unknown wire format ", static_cast<int32_t>(wire));
}

bool codec_isa_supported(CodecIsa isa) {
  switch (isa) {
    case CodecIsa::kScalar: return true;
#ifdef NEP_HAVE_AVX2_PATH
    case CodecIsa::kAvx2: return cpu_sets().avx2;
    case CodecIsa::kAvx512: return cpu_sets().avx512;
#else
    case CodecIsa::kAvx2: return false;
    case CodecIsa::kAvx512: return false;
#endif
  }
  return false;
}

CodecIsa codec_isa() {
  static const CodecIsa chosen = [] {
    if (env_flag("NEP_CODEC_NO_AVX2")) return CodecIsa::kScalar;
    if (codec_isa_supported(CodecIsa::kAvx512) && !env_flag("NEP_CODEC_NO_AVX512")) return CodecIsa::kAvx512;
    if (codec_isa_supported(CodecIsa::kAvx2)) return CodecIsa::kAvx2;
    return CodecIsa::kScalar;
  }();
  return chosen;
}

const char* codec_isa_name(CodecIsa isa) {
  switch (isa) {
    case CodecIsa::kScalar: return "scalar";
    case CodecIsa::kAvx2: return "avx2";
    case CodecIsa::kAvx512: return "avx512";
  }
  return "invalid";
}

void encode_row_isa(CodecIsa isa, Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  require_supported(isa);
  if (isa == CodecIsa::kAvx512 && encode_row_avx512(wire, x, hidden, out)) return;
  if (isa != CodecIsa::kScalar && encode_avx2(wire, x, hidden, out)) return;
  encode_row_dispatch(wire, x, hidden, out);
}

void decode_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  require_supported(isa);
  decode_with<false>(isa, wire, in, hidden, out);
}

void decode_add_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* acc) {
  require_supported(isa);
  decode_with<true>(isa, wire, in, hidden, acc);
}

void decode_row_stream_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  require_supported(isa);
  if (isa == CodecIsa::kAvx512 && decode_row_avx512(wire, in, hidden, out, DecodeKind::kStream)) return;
  decode_with<false>(isa, wire, in, hidden, out);
}

void encode_row(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512 && encode_row_avx512(wire, x, hidden, out)) return;
  if (isa != CodecIsa::kScalar && encode_avx2(wire, x, hidden, out)) return;
  encode_row_dispatch(wire, x, hidden, out);
}

void decode_row(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  decode_with<false>(codec_isa(), wire, in, hidden, out);
}

void decode_add_row(Wire wire, const uint8_t* in, int64_t hidden, float* acc) {
  decode_with<true>(codec_isa(), wire, in, hidden, acc);
}

void decode_row_stream(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  const CodecIsa isa = codec_isa();
  if (isa == CodecIsa::kAvx512 && decode_row_avx512(wire, in, hidden, out, DecodeKind::kStream)) return;
  decode_with<false>(isa, wire, in, hidden, out);
}

}  // namespace nep
