// AVX2 (+F16C) row loops of the wire codecs (codec_kernels.h). Each lane computes exactly the
// scalar formulas of codec.h: the integer steps give the same codes, and every float result is
// the same single rounding of the same real number (no FMA; see each function), so bytes and
// floats are bit-identical to the scalar reference and to the AVX-512 loops. Tails that do not
// fill a vector, and the rare blocks a fast path does not cover, run the scalar formulas.
//
// Encoding is integer work per lane and bound by instruction count (bench_codec_rows: in cache
// about as slow as from memory), so the loops do per block what need not be done per lane: a
// block's largest and smallest |x| decide whether it can hold NaN or e4m3 subnormal codes, signs
// ride the byte packs, and MXFP8 blocks (32 lanes) are reduced eight at a time so their scale
// bytes and factors come out of vectors rather than a scalar round trip per block. Decoding widens
// e4m3 to fp16 with two integer operations and converts with F16C.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "codec_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define NEP_AVX2_TARGET "avx2,f16c"
#define NEP_AVX2 __attribute__((target(NEP_AVX2_TARGET), always_inline)) inline
#define NEP_AVX2_FN __attribute__((target(NEP_AVX2_TARGET)))

namespace nep {
namespace {

constexpr uint32_t kMaxFinite = 0x7F7FFFFFu;

NEP_AVX2 __m256i set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// ---- encode ---------------------------------------------------------------------------------

// e4m3_from_float on 8 lanes, without the sign -> 8 codes (one per 32-bit lane; the sign is
// added 32 lanes at a time by store_codes32). What the caller knows about its block drops work:
// kSub = false when no lane is below 2^-6 (no e4m3 subnormal code), kNonFinite = false when
// every lane is finite (no NaN code), kSat = false when no lane is above 448 * (1 + 2^-23) (rounds
// to 448 or below without saturating).
template <bool kSub, bool kNonFinite, bool kSat>
NEP_AVX2 __m256i e4m3_code8(__m256 v) {
  const __m256i mag = _mm256_and_si256(_mm256_castps_si256(v), set1(0x7FFFFFFFu));
  const __m256i sat = kSat ? _mm256_min_epu32(mag, set1(kE4m3MaxBits)) : mag;
  // ((sat + 0x7FFFF + odd) >> 20) - (120 << 3) with odd = bit 20 of sat, as a compare (all ones
  // when odd, subtracted) rather than a second shift, and the rebias folded into the addend:
  // exact for every lane on the normal path (sat >= 2^-6 keeps the sum above 960 << 20); the
  // other lanes take the subnormal code below.
  const __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(sat, set1(1u << 20)), set1(1u << 20));
  __m256i code = _mm256_srli_epi32(
      _mm256_sub_epi32(_mm256_add_epi32(sat, set1(0x7FFFFu - (960u << 20))), odd), 20);
  if constexpr (kSub) {
    const __m256i is_sub = _mm256_cmpgt_epi32(set1(kE4m3MinNormalBits), sat);
    const __m256i subnormal = _mm256_sub_epi32(
        _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(sat), _mm256_set1_ps(16384.0f))),
        set1(0x46800000u));
    code = _mm256_blendv_epi8(code, subnormal, is_sub);
  }
  if constexpr (kNonFinite) {
    code = _mm256_blendv_epi8(code, set1(kE4m3Nan), _mm256_cmpgt_epi32(mag, set1(kMaxFinite)));
  }
  return code;
}

// 32 codes without their signs (four vectors of 8 lanes, each lane < 128) and the 32 scaled
// values they encode -> 32 bytes in order, each code | 0x80 when its value's sign bit is set.
// Signed saturating packs keep the sign of each 32-bit lane down to its byte, so the signs ride
// the same packs and permutation as the codes.
NEP_AVX2 void store_codes32(uint8_t* out, const __m256i c[4], const __m256 v[4]) {
  const __m256i codes =
      _mm256_packus_epi16(_mm256_packus_epi32(c[0], c[1]), _mm256_packus_epi32(c[2], c[3]));
  const __m256i signs =
      _mm256_packs_epi16(_mm256_packs_epi32(_mm256_castps_si256(v[0]), _mm256_castps_si256(v[1])),
                         _mm256_packs_epi32(_mm256_castps_si256(v[2]), _mm256_castps_si256(v[3])));
  // bytes: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 -> a0-7 b0-7 c0-7 d0-7
  const __m256i bytes =
      _mm256_or_si256(codes, _mm256_and_si256(signs, _mm256_set1_epi8(static_cast<char>(0x80))));
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(out),
      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

// out[0, 32) = e4m3(x[i] * f).
template <bool kSub, bool kNonFinite, bool kSat>
NEP_AVX2 void e4m3_encode32(const float* x, __m256 f, uint8_t* out) {
  __m256 v[4];
  __m256i c[4];
  for (int j = 0; j < 4; ++j) {
    v[j] = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), f);
    c[j] = e4m3_code8<kSub, kNonFinite, kSat>(v[j]);
  }
  store_codes32(out, c, v);
}

// out[i] = e4m3(x[i] * f) for i < n: groups of 32 in vectors, the rest with the scalar formula.
template <bool kSub, bool kNonFinite, bool kSat>
NEP_AVX2 void e4m3_encode_run(const float* x, int64_t n, __m256 f, uint8_t* out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) e4m3_encode32<kSub, kNonFinite, kSat>(x + i, f, out + i);
  const float fs = _mm256_cvtss_f32(f);
  for (; i < n; ++i) out[i] = e4m3_from_float(x[i] * fs);
}

// Lane-wise maximum and minimum of |x| bits over the 8-lane groups x[0, 8 * groups); the caller
// reduces them.
NEP_AVX2 void abs_range8(const float* x, int64_t groups, __m256i* max, __m256i* min) {
  __m256i hi = _mm256_setzero_si256(), lo = set1(0xFFFFFFFFu);
  for (int64_t g = 0; g < groups; ++g) {
    prefetch_ahead(x + 8 * g);
    const __m256i a = _mm256_and_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 8 * g)), set1(0x7FFFFFFFu));
    hi = _mm256_max_epu32(hi, a);
    lo = _mm256_min_epu32(lo, a);
  }
  *max = hi;
  *min = lo;
}

// Reduces the 8 lanes with an unsigned max (kMax) or min.
template <bool kMax>
NEP_AVX2 __m128i fold(__m128i a, __m128i b) {
  return kMax ? _mm_max_epu32(a, b) : _mm_min_epu32(a, b);
}

template <bool kMax>
NEP_AVX2 uint32_t reduce8(__m256i m) {
  __m128i h = fold<kMax>(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  h = fold<kMax>(h, _mm_shuffle_epi32(h, 0x4E));
  h = fold<kMax>(h, _mm_shuffle_epi32(h, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(h));
}

// One FP8 block: amax of the finite lanes (floored), scale = amax / 448, codes of x * (448 / amax).
// A finite block needs no NaN code nor saturation (|x * (448 / amax)| <= 448 * (1 + 2^-23)), and
// subnormal codes only when its smallest |x| times the factor is below 2^-6 (the products are
// monotonic in |x|, so that one product decides).
NEP_AVX2 void encode_fp8_block(const float* x, int64_t n, uint8_t* out, uint8_t* scale_out) {
  __m256i hi, lo;
  abs_range8(x, n / 8, &hi, &lo);
  uint32_t all = reduce8<true>(hi), min = reduce8<false>(lo);
  for (int64_t i = n / 8 * 8; i < n; ++i) {
    const uint32_t a = float_bits(x[i]) & 0x7FFFFFFFu;
    all = std::max(all, a);
    min = std::min(min, a);
  }
  const bool finite = all <= kMaxFinite;  // then `all` is the finite amax too
  const float amax = bits_float(std::max(finite ? all : finite_amax_bits(x, n), kFp8AmaxFloorBits));
  const float scale = amax / 448.0f;
  const float factor = 448.0f / amax;
  const __m256 f = _mm256_set1_ps(factor);
  if (!finite) {
    e4m3_encode_run<true, true, true>(x, n, f, out);
  } else if (bits_float(min) * factor < bits_float(kE4m3MinNormalBits)) {
    e4m3_encode_run<true, false, false>(x, n, f, out);
  } else {
    e4m3_encode_run<false, false, false>(x, n, f, out);
  }
  std::memcpy(scale_out, &scale, sizeof scale);
}

NEP_AVX2_FN void encode_fp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    encode_fp8_block(x + start, std::min(kFp8BlockSize, hidden - start), out + start,
                     scales + 4 * b);
  }
}

// One MXFP8 block of n <= 32 lanes, with every case handled (tails, blocks with non-finite
// lanes). shared_exp = clamp(floor(log2(amax)) - 8, -127, 127); the codes are of x * 2^-shared_exp,
// one multiply: -shared_exp lies in [-119, 127] (amax < 2^128), so the factor is a normal float and
// the product is the same single rounding of x * 2^-shared_exp as the scalar loop's two
// power-of-two multiplies (whose first product is exact whenever the final one is at least 2^-126,
// and anything smaller encodes to a signed zero either way).
NEP_AVX2 void encode_mxfp8_block(const float* x, int64_t n, uint8_t* out, uint8_t* scale_out) {
  const int32_t shared_exp =
      std::clamp(static_cast<int32_t>(finite_amax_bits(x, n) >> 23) - 127 - 8, -127, 127);
  e4m3_encode_run<true, true, true>(x, n, _mm256_set1_ps(pow2f(-shared_exp)), out);
  *scale_out = static_cast<uint8_t>(shared_exp + 127);
}

// Lane j = the max (kMax) or min over the 8 lanes of v[j]: three rounds of interleave-and-fold.
template <bool kMax>
NEP_AVX2 __m256i fold8(__m256i a, __m256i b) {
  return kMax ? _mm256_max_epu32(a, b) : _mm256_min_epu32(a, b);
}

template <bool kMax>
NEP_AVX2 __m256i transpose_reduce8(const __m256i v[8]) {
  __m256i t[4], u[2];
  for (int j = 0; j < 4; ++j) {
    t[j] = fold8<kMax>(_mm256_unpacklo_epi32(v[2 * j], v[2 * j + 1]),
                       _mm256_unpackhi_epi32(v[2 * j], v[2 * j + 1]));
  }
  for (int j = 0; j < 2; ++j) {
    u[j] = fold8<kMax>(_mm256_unpacklo_epi64(t[2 * j], t[2 * j + 1]),
                       _mm256_unpackhi_epi64(t[2 * j], t[2 * j + 1]));
  }
  // u[0] = blocks 0-3 | 0-3 (one partial result per 128-bit half), u[1] = blocks 4-7 | 4-7
  return fold8<kMax>(_mm256_permute2x128_si256(u[0], u[1], 0x20),
                     _mm256_permute2x128_si256(u[0], u[1], 0x31));
}

// Eight MXFP8 blocks (256 lanes) at once; false (nothing written) when one of them has a
// non-finite lane, which the per-block path then takes. Finite blocks need no NaN code; a block
// needs subnormal codes only when its smallest |x| times its factor is below 2^-6.
NEP_AVX2 bool encode_mxfp8_8blocks(const float* x, uint8_t* out, uint8_t* scale_out) {
  __m256i hi[8], lo[8];
  for (int j = 0; j < 8; ++j) abs_range8(x + 32 * j, 4, &hi[j], &lo[j]);
  const __m256i amax = transpose_reduce8<true>(hi);  // lane j: block j, non-finite lanes included
  if (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(amax, set1(kMaxFinite)))) != 0)
    return false;
  // shared_exp = clamp((amax >> 23) - 135, -127, 127) (at most 119); factor 2^-shared_exp; E8M0
  // byte
  const __m256i se = _mm256_max_epi32(_mm256_sub_epi32(_mm256_srli_epi32(amax, 23), set1(135)),
                                      set1(static_cast<uint32_t>(-127)));
  const __m256 factor = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(set1(127), se), 23));
  const __m256i e8m0 = _mm256_add_epi32(se, set1(127));
  const __m128i w16 =
      _mm_packus_epi32(_mm256_castsi256_si128(e8m0), _mm256_extracti128_si256(e8m0, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(scale_out), _mm_packus_epi16(w16, w16));
  const __m256 smallest = _mm256_mul_ps(_mm256_castsi256_ps(transpose_reduce8<false>(lo)), factor);
  const int sub = _mm256_movemask_ps(
      _mm256_cmp_ps(smallest, _mm256_castsi256_ps(set1(kE4m3MinNormalBits)), _CMP_LT_OQ));
  for (int j = 0; j < 8; ++j) {
    const __m256 f = _mm256_permutevar8x32_ps(factor, _mm256_set1_epi32(j));
    if ((sub >> j) & 1) {
      e4m3_encode32<true, false, true>(x + 32 * j, f, out + 32 * j);
    } else {
      e4m3_encode32<false, false, true>(x + 32 * j, f, out + 32 * j);
    }
  }
  return true;
}

NEP_AVX2_FN void encode_mxfp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  int64_t b = 0;
  for (; (b + 8) * kMxBlockSize <= hidden; b += 8) {
    const int64_t start = b * kMxBlockSize;
    if (encode_mxfp8_8blocks(x + start, out + start, scales + b)) continue;
    for (int64_t j = b; j < b + 8; ++j) {
      encode_mxfp8_block(x + j * kMxBlockSize, kMxBlockSize, out + j * kMxBlockSize, scales + j);
    }
  }
  for (int64_t start = b * kMxBlockSize; start < hidden; ++b, start += kMxBlockSize) {
    encode_mxfp8_block(x + start, std::min(kMxBlockSize, hidden - start), out + start, scales + b);
  }
}

NEP_AVX2_FN void encode_bf16(const float* x, int64_t hidden, uint8_t* out) {
  int64_t i = 0;
  for (; i + 16 <= hidden; i += 16) {
    prefetch_ahead(x + i);
    __m256i r[2];
    for (int j = 0; j < 2; ++j) {
      const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8 * j));
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), set1(1));
      const __m256i rounded =
          _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, set1(0x7FFFu)), odd), 16);
      const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), set1(0x40));
      const __m256i is_nan =
          _mm256_cmpgt_epi32(_mm256_and_si256(u, set1(0x7FFFFFFFu)), set1(0x7F800000u));
      r[j] = _mm256_blendv_epi8(rounded, quiet, is_nan);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i),
                        _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8));
  }
  for (; i < hidden; ++i) {
    const uint16_t h = bf16_from_float(x[i]);
    std::memcpy(out + 2 * i, &h, sizeof h);
  }
}

// ---- decode ---------------------------------------------------------------------------------

enum Mode { kStore = 0, kAdd = 1, kStream = 2 };

// Writes 8 floats at p: stored, added to what is there (what is there first, as the scalar loop
// adds), or streamed (non-temporal; p must be 32-byte aligned: callers align their groups).
template <int kMode>
NEP_AVX2 void put8(float* p, __m256 v) {
  if constexpr (kMode == kAdd) {
    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v));
  } else if constexpr (kMode == kStream) {
    _mm256_stream_ps(p, v);
  } else {
    _mm256_storeu_ps(p, v);
  }
}

template <int kMode>
inline void put1(float* p, float v) {
  if constexpr (kMode == kAdd) {
    *p += v;
  } else {
    *p = v;
  }
}

// Floats before out reaches a 32-byte boundary when streaming (so every later group of 8 is
// aligned); 0 for the other modes.
template <int kMode>
NEP_AVX2 int64_t head_floats(const float* out, int64_t n) {
  if constexpr (kMode != kStream) return 0;
  return std::min<int64_t>(
      static_cast<int64_t>((32u - (reinterpret_cast<uintptr_t>(out) & 31u)) & 31u) / 4, n);
}

// Streaming stores are weakly ordered: a streaming row ends with a store fence, so the row is
// visible like ordinary stores by the time the decoder returns.
template <int kMode>
NEP_AVX2 void end_row() {
  if constexpr (kMode == kStream) _mm_sfence();
}

// 16 e4m3 codes -> 16 values times 2^-8, as two vectors of 8: the sign-extended byte shifted
// left by 7 and masked to 0bS0EEEEMMM0000000 is the fp16 whose value is the code's times 2^-8
// (e4m3 bias 7, fp16 bias 15; e4m3 subnormals land on fp16 subnormals, which F16C converts
// exactly). The NaN code (S.1111.111) is not handled: callers check for it.
NEP_AVX2 void e4m3_decode16_scaled(__m128i codes, __m256* lo, __m256* hi) {
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(codes), 7),
                                     _mm256_set1_epi16(static_cast<short>(0xBF80)));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

NEP_AVX2 bool has_nan_code(__m128i codes) {
  const __m128i mag = _mm_and_si128(codes, _mm_set1_epi8(0x7F));
  return _mm_movemask_epi8(_mm_cmpeq_epi8(mag, _mm_set1_epi8(0x7F))) != 0;
}

// out[i] (op)= e4m3_to_float(in[i]) * f1 [* f2 when kTwo] for i < n. The vectors compute
// (e4m3_to_float(in[i]) * 2^-8) * g1 [* g2 when kVecTwo], which callers choose to be the same
// real number as the scalar product with no rounding before the last multiply, so the same
// single rounding. Groups of 16 holding a NaN code, the streaming head and the tail run the
// scalar formula.
template <int kMode, bool kTwo, bool kVecTwo>
NEP_AVX2 void e4m3_decode_run(const uint8_t* in, int64_t n, float f1, float f2, float g1, float g2,
                              float* out) {
  auto scalar = [&](int64_t i) {
    const float v = kTwo ? e4m3_to_float(in[i]) * f1 * f2 : e4m3_to_float(in[i]) * f1;
    put1<kMode>(out + i, v);
  };
  const __m256 m1 = _mm256_set1_ps(g1), m2 = _mm256_set1_ps(g2);
  int64_t i = 0;
  for (const int64_t head = head_floats<kMode>(out, n); i < head; ++i) scalar(i);
  for (; i + 16 <= n; i += 16) {
    const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    if (has_nan_code(codes)) {
      for (int64_t j = i; j < i + 16; ++j) scalar(j);
      continue;
    }
    __m256 lo, hi;
    e4m3_decode16_scaled(codes, &lo, &hi);
    lo = _mm256_mul_ps(lo, m1);
    hi = _mm256_mul_ps(hi, m1);
    if constexpr (kVecTwo) {
      lo = _mm256_mul_ps(lo, m2);
      hi = _mm256_mul_ps(hi, m2);
    }
    put8<kMode>(out + i, lo);
    put8<kMode>(out + i + 8, hi);
  }
  for (; i < n; ++i) scalar(i);
}

// Exponent field of f: g = f * 2^8 is exact unless it overflows (field above 246; a NaN or an
// infinity stays itself, a subnormal or zero scales exactly).
inline bool times256_is_exact(float f) {
  const uint32_t e = (float_bits(f) >> 23) & 0xFFu;
  return e <= 246u || e == 255u;
}

template <int kMode>
NEP_AVX2_FN void decode_fp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    float scale;
    std::memcpy(&scale, scales + 4 * b, sizeof scale);
    if (times256_is_exact(scale)) {
      e4m3_decode_run<kMode, false, false>(in + start, n, scale, 1.0f, scale * 256.0f, 1.0f,
                                           out + start);
    } else {  // (v * 2^-8) * 2^8 is v exactly, then the scalar loop's one multiply
      e4m3_decode_run<kMode, false, true>(in + start, n, scale, 1.0f, 256.0f, scale, out + start);
    }
  }
  end_row<kMode>();
}

// The scalar loop computes v * 2^half * 2^(se - half) (se = byte - 127, half = se / 2): the first
// product is exact (v is 0 or in [2^-9, 448], |half| <= 63), so the result is one rounding of
// v * 2^se. Here: (v * 2^-8) * 2^(se + 8) when se + 8 <= 127 (one multiply; 2^(se+8) is normal for
// se >= -127), else (v * 2^-8) * 2^8 (exact) * 2^se. Byte 0xFF: NaN factor, as the scalar loop.
template <int kMode>
NEP_AVX2 void decode_mxfp8_block(const uint8_t* in, int64_t n, uint8_t byte, float* out) {
  const int32_t se = static_cast<int32_t>(byte) - 127;
  const int32_t half = se / 2;
  const float f2 = pow2f(se - half);
  const float f1 = byte == 0xFF ? bits_float(kNanBits) : pow2f(half);
  if (byte == 0xFF) {
    e4m3_decode_run<kMode, true, false>(in, n, f1, f2, f1, 1.0f, out);
  } else if (se + 8 <= 127) {
    e4m3_decode_run<kMode, true, false>(in, n, f1, f2, pow2f(se + 8), 1.0f, out);
  } else {
    e4m3_decode_run<kMode, true, true>(in, n, f1, f2, 256.0f, pow2f(se), out);
  }
}

// Eight blocks (256 codes) whose scale bytes are all at most 246 (so each factor 2^(se + 8) is a
// normal float), out 32-byte aligned when streaming: the factors in one vector, each block's 32
// codes checked for the NaN code at once (such a block runs the scalar formula).
template <int kMode>
NEP_AVX2 void decode_mxfp8_8blocks(const uint8_t* in, const uint8_t* bytes, float* out) {
  // 2^(se + 8) = 2^(byte - 119): exponent field byte + 8
  const __m256i b32 =
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
  const __m256 factor = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(b32, set1(8)), 23));
  for (int j = 0; j < 8; ++j) {
    const uint8_t* ib = in + 32 * j;
    float* ob = out + 32 * j;
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ib));
    const __m256i nan =
        _mm256_cmpeq_epi8(_mm256_and_si256(codes, _mm256_set1_epi8(0x7F)), _mm256_set1_epi8(0x7F));
    if (_mm256_movemask_epi8(nan) != 0) {
      decode_mxfp8_block<kMode>(ib, 32, bytes[j], ob);
      continue;
    }
    const __m256 f = _mm256_permutevar8x32_ps(factor, _mm256_set1_epi32(j));
    __m256 v[4];
    e4m3_decode16_scaled(_mm256_castsi256_si128(codes), &v[0], &v[1]);
    e4m3_decode16_scaled(_mm256_extracti128_si256(codes, 1), &v[2], &v[3]);
    for (int k = 0; k < 4; ++k) put8<kMode>(ob + 8 * k, _mm256_mul_ps(v[k], f));
  }
}

template <int kMode>
NEP_AVX2_FN void decode_mxfp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  const bool aligned = kMode != kStream || (reinterpret_cast<uintptr_t>(out) & 31u) == 0;
  int64_t b = 0;
  for (; aligned && (b + 8) * kMxBlockSize <= hidden; b += 8) {
    const __m128i eight = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + b));
    const __m128i limit = _mm_set1_epi8(static_cast<char>(246));
    const bool plain =
        (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(eight, limit), limit)) & 0xFF) == 0xFF;
    const int64_t start = b * kMxBlockSize;
    if (plain) {
      decode_mxfp8_8blocks<kMode>(in + start, scales + b, out + start);
    } else {
      for (int64_t j = b; j < b + 8; ++j) {
        decode_mxfp8_block<kMode>(in + j * kMxBlockSize, kMxBlockSize, scales[j],
                                  out + j * kMxBlockSize);
      }
    }
  }
  for (int64_t start = b * kMxBlockSize; start < hidden; ++b, start += kMxBlockSize) {
    decode_mxfp8_block<kMode>(in + start, std::min(kMxBlockSize, hidden - start), scales[b],
                              out + start);
  }
  end_row<kMode>();
}

template <int kMode>
NEP_AVX2_FN void decode_bf16(const uint8_t* in, int64_t hidden, float* out) {
  int64_t i = 0;
  auto scalar = [&](int64_t j) {
    uint16_t h;
    std::memcpy(&h, in + 2 * j, sizeof h);
    put1<kMode>(out + j, bf16_to_float(h));
  };
  for (const int64_t head = head_floats<kMode>(out, hidden); i < head; ++i) scalar(i);
  for (; i + 8 <= hidden; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    put8<kMode>(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  for (; i < hidden; ++i) scalar(i);
  end_row<kMode>();
}

NEP_AVX2_FN void decode_fp32_stream(const uint8_t* in, int64_t hidden, float* out) {
  const float* src = reinterpret_cast<const float*>(in);
  int64_t i = head_floats<kStream>(out, hidden);
  std::memcpy(out, src, static_cast<size_t>(i) * sizeof(float));
  for (; i + 8 <= hidden; i += 8) put8<kStream>(out + i, _mm256_loadu_ps(src + i));
  std::memcpy(out + i, src + i, static_cast<size_t>(hidden - i) * sizeof(float));
  end_row<kStream>();
}

template <int kMode>
bool decode_mode(Wire wire, const uint8_t* in, int64_t hidden, float* out) {
  switch (wire) {
    case Wire::kBf16: decode_bf16<kMode>(in, hidden, out); return true;
    case Wire::kFp8: decode_fp8<kMode>(in, hidden, out); return true;
    case Wire::kMxfp8: decode_mxfp8<kMode>(in, hidden, out); return true;
    case Wire::kFp32:
      if constexpr (kMode == kStream) {
        decode_fp32_stream(in, hidden, out);
        return true;
      }
      return false;
  }
  return false;
}

}  // namespace

bool encode_row_avx2(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kBf16: encode_bf16(x, hidden, out); return true;
    case Wire::kFp8: encode_fp8(x, hidden, out); return true;
    case Wire::kMxfp8: encode_mxfp8(x, hidden, out); return true;
    case Wire::kFp32: return false;
  }
  return false;
}

bool decode_row_avx2(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind) {
  switch (kind) {
    case DecodeKind::kStore: return decode_mode<kStore>(wire, in, hidden, out);
    case DecodeKind::kAdd: return decode_mode<kAdd>(wire, in, hidden, out);
    case DecodeKind::kStream: return decode_mode<kStream>(wire, in, hidden, out);
  }
  return false;
}

}  // namespace nep

#else  // not x86-64 with GCC or Clang: no AVX2 loops

namespace nep {
bool encode_row_avx2(Wire, const float*, int64_t, uint8_t*) { return false; }
bool decode_row_avx2(Wire, const uint8_t*, int64_t, float*, DecodeKind) { return false; }
}  // namespace nep

#endif
