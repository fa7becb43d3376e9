// AVX-512 row loops of the wire codecs (codec_kernels.h). Each lane computes exactly the scalar
// formulas of codec.h (the same integer steps, the same float multiplies and additions in the
// same order, no FMA: see e4m3_decode_group), so bytes and floats are bit-identical to the scalar
// reference and to the AVX2 loops. Partial vectors at the end of a block or row use masked loads
// and stores (masked-off lanes are neither read nor written), so there is no separate scalar
// tail. Decoders can also write with streaming stores (Mode kStream, codec.h decode_row_stream).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "codec_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's AVX-512 intrinsics start from a self-initialised placeholder vector, which
// -Wmaybe-uninitialized reports at every inlined use; the placeholder is never read (full masks).
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define NEP_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq"
#define NEP_AVX512 __attribute__((target(NEP_AVX512_TARGET), always_inline)) inline
#define NEP_AVX512_FN __attribute__((target(NEP_AVX512_TARGET)))

namespace nep {
namespace {

constexpr uint32_t kFp8AmaxFloor = (9u << 23) | 0x600000u;  // 448 * 2^-126, as in codec.cpp
constexpr uint32_t kNan = 0x7FC00000u;
// Encoders read x[T, H] once, from memory: prefetching this far ahead of the loads measured
// 20-40% faster encodes of 28 KB rows than the hardware prefetcher alone (bench: no-peer line).
constexpr int64_t kPrefetchBytes = 4096;

NEP_AVX512 void prefetch_ahead(const float* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
}

NEP_AVX512 __mmask16 lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Largest finite |x| bits over x[0, n) (0 when none): an unsigned max of the magnitude bits of the
// finite lanes, as finite_amax_bits in codec.cpp.
NEP_AVX512 uint32_t finite_amax_bits16(const float* x, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf = _mm512_set1_epi32(0x7F800000);
  __m512i m = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 16) {
    prefetch_ahead(x + i);
    const __m512i a = _mm512_and_si512(_mm512_maskz_loadu_epi32(lanes(n - i), x + i), abs_mask);
    m = _mm512_mask_max_epu32(m, _mm512_cmplt_epu32_mask(a, inf), m, a);
  }
  return static_cast<uint32_t>(_mm512_reduce_max_epu32(m));
}

// Largest |x| bits over x[0, n), non-finite lanes included (>= 0x7F800000 when there is one).
NEP_AVX512 uint32_t abs_max_bits16(const float* x, int64_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i m = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 16) {
    prefetch_ahead(x + i);
    m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_maskz_loadu_epi32(lanes(n - i), x + i), abs_mask));
  }
  return static_cast<uint32_t>(_mm512_reduce_max_epu32(m));
}

// e4m3_from_float on 16 lanes -> 16 codes (one byte each). kNonFinite = false when the caller
// knows every lane is finite (its block had no NaN or infinity, and scaling cannot overflow):
// the NaN code is then never needed. Lanes below 2^-6 (e4m3 subnormals, zeros) are rare in real
// rows (2^15 below their block's largest element), so their code is computed only when present.
template <bool kNonFinite>
NEP_AVX512 __m128i e4m3_encode16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  const __m512i sat = _mm512_min_epu32(mag, _mm512_set1_epi32(static_cast<int>(kE4m3MaxBits)));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(sat, 20), _mm512_set1_epi32(1));
  // ((sat + 0x7FFFF + odd) >> 20) - (120 << 3), with the rebias folded into the addend: exact for
  // every lane on the normal path (sat >= 2^-6 keeps the sum above (120 << 3) << 20); the other
  // lanes take the subnormal code below.
  __m512i code = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(sat, _mm512_set1_epi32(static_cast<int>(0x7FFFFu - (960u << 20)))), odd), 20);
  const __mmask16 is_sub = _mm512_cmplt_epu32_mask(sat, _mm512_set1_epi32(static_cast<int>(kE4m3MinNormalBits)));
  if (is_sub != 0) {
    const __m512i subnormal = _mm512_sub_epi32(
        _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(sat), _mm512_set1_ps(16384.0f))),
        _mm512_set1_epi32(0x46800000));
    code = _mm512_mask_mov_epi32(code, is_sub, subnormal);
  }
  if constexpr (kNonFinite) {
    const __mmask16 non_finite = _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F7FFFFF));
    code = _mm512_mask_mov_epi32(code, non_finite, _mm512_set1_epi32(kE4m3Nan));
  }
  // code | (u >> 24 & 0x80): ternary-logic table 0xF8 is A | (B & C)
  code = _mm512_ternarylogic_epi32(code, _mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80), 0xF8);
  return _mm512_cvtepi32_epi8(code);
}

// out[i] = e4m3(x[i] * f1 [* f2]) for i < n.
template <bool kTwo, bool kNonFinite>
NEP_AVX512 void e4m3_encode_run(const float* x, int64_t n, float f1, float f2, uint8_t* out) {
  const __m512 m1 = _mm512_set1_ps(f1), m2 = _mm512_set1_ps(f2);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), m1);
    if constexpr (kTwo) v = _mm512_mul_ps(v, m2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), e4m3_encode16<kNonFinite>(v));
  }
  if (i < n) {
    const __mmask16 k = lanes(n - i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), m1);
    if constexpr (kTwo) v = _mm512_mul_ps(v, m2);
    _mm_mask_storeu_epi8(out + i, k, e4m3_encode16<kNonFinite>(v));
  }
}

// e4m3_to_float on 16 codes (bytes) -> 16 floats: normal codes by placing the bits into a float
// and rebiasing the exponent (exact), subnormal codes as the integer times 2^-9 (exact, no
// subnormal float involved), S.1111.111 as NaN, then the sign.
NEP_AVX512 __m512 e4m3_decode16(__m128i bytes) {
  const __m512i c = _mm512_cvtepu8_epi32(bytes);
  const __m512i mag = _mm512_and_si512(c, _mm512_set1_epi32(0x7F));
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23));
  const __mmask16 is_sub = _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(8));
  __m512 v = _mm512_mask_mul_ps(_mm512_castsi512_ps(normal), is_sub, _mm512_cvtepi32_ps(mag),
                                _mm512_set1_ps(1.0f / 512.0f));
  const __mmask16 is_nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(kE4m3Nan));
  __m512i bits = _mm512_mask_mov_epi32(_mm512_castps_si512(v), is_nan, _mm512_set1_epi32(static_cast<int>(kNan)));
  // bits | (c << 24 & 0x80000000)
  bits = _mm512_ternarylogic_epi32(bits, _mm512_slli_epi32(c, 24), _mm512_set1_epi32(static_cast<int>(0x80000000u)), 0xF8);
  return _mm512_castsi512_ps(bits);
}

// How a decoder writes: store, add to what is there (combine), or store with non-temporal
// (streaming) stores that bypass the caches, for outputs too large to stay in them.
enum Mode { kStore = 0, kAdd = 1, kStream = 2 };

// Writes 16 lanes (those in k). Streaming needs a full, 64-byte-aligned vector; anything else
// (a tail, an unaligned row) takes the ordinary masked store.
template <int kMode>
NEP_AVX512 void put16(float* p, __mmask16 k, __m512 v) {
  if constexpr (kMode == kStream) {
    if (k == 0xFFFF && (reinterpret_cast<uintptr_t>(p) & 63u) == 0) {
      _mm512_stream_ps(p, v);
      return;
    }
  }
  _mm512_mask_storeu_ps(p, k, v);
}

// Floats before out reaches a 64-byte boundary (the first group of a streaming loop stops there,
// so every later full group is aligned); 0 for the other modes.
template <int kMode>
NEP_AVX512 int64_t head_floats(const float* out, int64_t n) {
  if constexpr (kMode != kStream) return 0;
  const int64_t head = static_cast<int64_t>((64u - (reinterpret_cast<uintptr_t>(out) & 63u)) & 63u) / 4;
  return std::min(head, n);
}

// Streaming stores are weakly ordered: each streaming row ends with a store fence, so the row is
// visible like ordinary stores by the time the decoder returns.
template <int kMode>
NEP_AVX512 void end_row() {
  if constexpr (kMode == kStream) _mm_sfence();
}

// Decodes count (<= 16) codes into out.
template <int kMode, bool kTwo>
NEP_AVX512 void e4m3_decode_group(const uint8_t* in, int64_t count, __m512 m1, __m512 m2, float* out) {
  const __mmask16 k = lanes(count);
  __m512 v = _mm512_mul_ps(e4m3_decode16(_mm_maskz_loadu_epi8(k, in)), m1);
  if constexpr (kTwo) v = _mm512_mul_ps(v, m2);
  // The add goes through the rounding-mode builtin (current mode, i.e. the plain add) so the
  // compiler cannot contract the multiply and the add into an FMA (AVX-512F includes FMA),
  // which would round once instead of twice and differ from the scalar loop. The decoded value
  // is the first operand, as in the compiled scalar and AVX2 loops: when both are NaN, x86
  // returns the first operand's NaN.
  if constexpr (kMode == kAdd) v = _mm512_add_round_ps(v, _mm512_maskz_loadu_ps(k, out), _MM_FROUND_CUR_DIRECTION);
  put16<kMode>(out, k, v);
}

// Groups of at most 16; when streaming, the first group ends where out is 64-byte aligned, so
// every later full group streams.
template <int kMode, bool kTwo>
NEP_AVX512 void e4m3_decode_run(const uint8_t* in, int64_t n, float f1, float f2, float* out) {
  const __m512 m1 = _mm512_set1_ps(f1), m2 = _mm512_set1_ps(f2);
  int64_t i = head_floats<kMode>(out, n);
  if (i > 0) e4m3_decode_group<kMode, kTwo>(in, i, m1, m2, out);
  for (; i < n; i += 16) e4m3_decode_group<kMode, kTwo>(in + i, std::min<int64_t>(16, n - i), m1, m2, out + i);
}

// fp32 and bf16 rows, streaming only (the ordinary store and add loops are memcpy, the AVX2 bf16
// loop and the compiler's loops).
NEP_AVX512 void copy_group_stream(const float* src, int64_t count, float* out) {
  const __mmask16 k = lanes(count);
  put16<kStream>(out, k, _mm512_maskz_loadu_ps(k, src));
}

NEP_AVX512_FN void decode_fp32_stream(const uint8_t* in, int64_t hidden, float* out) {
  const float* src = reinterpret_cast<const float*>(in);
  int64_t i = head_floats<kStream>(out, hidden);
  if (i > 0) copy_group_stream(src, i, out);
  for (; i < hidden; i += 16) copy_group_stream(src + i, std::min<int64_t>(16, hidden - i), out + i);
  end_row<kStream>();
}

NEP_AVX512 void bf16_group_stream(const uint8_t* in, int64_t count, float* out) {
  const __mmask16 k = lanes(count);
  const __m256i h = _mm256_maskz_loadu_epi16(k, in);
  put16<kStream>(out, k, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
}

NEP_AVX512_FN void decode_bf16_stream(const uint8_t* in, int64_t hidden, float* out) {
  int64_t i = head_floats<kStream>(out, hidden);
  if (i > 0) bf16_group_stream(in, i, out);
  for (; i < hidden; i += 16) bf16_group_stream(in + 2 * i, std::min<int64_t>(16, hidden - i), out + i);
  end_row<kStream>();
}

NEP_AVX512_FN void encode_bf16(const float* x, int64_t hidden, uint8_t* out) {
  const __m512i one = _mm512_set1_epi32(1), round = _mm512_set1_epi32(0x7FFF);
  const __m512i quiet_bit = _mm512_set1_epi32(0x40), abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf = _mm512_set1_epi32(0x7F800000);
  for (int64_t i = 0; i < hidden; i += 16) {
    const __mmask16 k = lanes(hidden - i);
    prefetch_ahead(x + i);
    const __m512i u = _mm512_maskz_loadu_epi32(k, x + i);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, round), _mm512_and_si512(hi, one)), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i r = _mm512_mask_or_epi32(rounded, is_nan, hi, quiet_bit);
    _mm256_mask_storeu_epi16(out + 2 * i, k, _mm512_cvtepi32_epi16(r));
  }
}

NEP_AVX512_FN void encode_fp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    // Without a NaN or infinity in the block, the largest |x| is the largest finite one.
    uint32_t amax_bits = abs_max_bits16(x + start, n);
    const bool non_finite = amax_bits >= 0x7F800000u;
    if (non_finite) amax_bits = finite_amax_bits16(x + start, n);
    const float amax = bits_float(std::max(amax_bits, kFp8AmaxFloor));
    const float scale = amax / 448.0f;
    const float inv_scale = 448.0f / amax;  // |x| * inv_scale <= 448 (1 ulp over at most): finite
    if (non_finite) {
      e4m3_encode_run<false, true>(x + start, n, inv_scale, 1.0f, out + start);
    } else {
      e4m3_encode_run<false, false>(x + start, n, inv_scale, 1.0f, out + start);
    }
    std::memcpy(scales + 4 * b, &scale, sizeof scale);
  }
}

template <int kMode>
NEP_AVX512_FN void decode_fp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    float scale;
    std::memcpy(&scale, scales + 4 * b, sizeof scale);
    e4m3_decode_run<kMode, false>(in + start, n, scale, 1.0f, out + start);
  }
  end_row<kMode>();
}

// One block of up to 32 channels, any content.
NEP_AVX512 void encode_mx_block(const float* x, int64_t n, uint8_t* out, uint8_t* scale_byte) {
  int32_t shared_exp = static_cast<int32_t>(finite_amax_bits16(x, n) >> 23) - 127 - 8;
  shared_exp = std::clamp(shared_exp, -127, 127);
  const int32_t half = -shared_exp / 2;
  e4m3_encode_run<true, true>(x, n, pow2f(half), pow2f(-shared_exp - half), out);
  *scale_byte = static_cast<uint8_t>(shared_exp + 127);
}

// Four full blocks (128 channels): the four block maxima are reduced together and the scales
// computed in one vector, as encode_mx_block does lane by lane. False (nothing written) when a
// block holds a NaN or infinity; encode_mx_block then takes the blocks one by one.
NEP_AVX512 bool encode_mx_4blocks(const float* x, uint8_t* out, uint8_t* scales) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512 v[8];
  __m512i bm[4];
  for (int j = 0; j < 8; ++j) {
    prefetch_ahead(x + 16 * j);
    v[j] = _mm512_loadu_ps(x + 16 * j);
  }
  for (int b = 0; b < 4; ++b) {
    bm[b] = _mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(v[2 * b]), abs_mask),
                             _mm512_and_si512(_mm512_castps_si512(v[2 * b + 1]), abs_mask));
  }
  // 128-bit lane j of u ends up holding block j's maximum in all four elements.
  const __m512i t01 = _mm512_max_epu32(_mm512_shuffle_i32x4(bm[0], bm[1], 0x44), _mm512_shuffle_i32x4(bm[0], bm[1], 0xEE));
  const __m512i t23 = _mm512_max_epu32(_mm512_shuffle_i32x4(bm[2], bm[3], 0x44), _mm512_shuffle_i32x4(bm[2], bm[3], 0xEE));
  __m512i u = _mm512_max_epu32(_mm512_shuffle_i32x4(t01, t23, 0x88), _mm512_shuffle_i32x4(t01, t23, 0xDD));
  u = _mm512_max_epu32(u, _mm512_shuffle_epi32(u, _MM_PERM_BADC));
  u = _mm512_max_epu32(u, _mm512_shuffle_epi32(u, _MM_PERM_CDAB));
  if (_mm512_cmpge_epu32_mask(u, _mm512_set1_epi32(0x7F800000)) != 0) return false;
  // shared_exp = clamp((amax >> 23) - 135, -127, 127); half = -shared_exp / 2 (toward zero);
  // factors 2^half and 2^(-shared_exp - half); scale byte shared_exp + 127.
  __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(135));
  e = _mm512_min_epi32(_mm512_max_epi32(e, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
  const __m512i ne = _mm512_sub_epi32(_mm512_setzero_si512(), e);
  const __m512i half = _mm512_srai_epi32(_mm512_add_epi32(ne, _mm512_srli_epi32(ne, 31)), 1);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 f1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(half, bias), 23));
  const __m512 f2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ne, half), bias), 23));
  alignas(16) uint8_t bytes[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(bytes), _mm512_cvtepi32_epi8(_mm512_add_epi32(e, bias)));
  for (int b = 0; b < 4; ++b) {
    // Broadcast lane b (all four elements equal) to the whole vector.
    const __m512i lane = _mm512_set1_epi32(4 * b);
    const __m512 m1 = _mm512_permutexvar_ps(lane, f1);
    const __m512 m2 = _mm512_permutexvar_ps(lane, f2);
    for (int h = 0; h < 2; ++h) {
      const __m512 y = _mm512_mul_ps(_mm512_mul_ps(v[2 * b + h], m1), m2);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * b + 16 * h), e4m3_encode16<false>(y));
    }
    scales[b] = bytes[4 * b];
  }
  return true;
}

NEP_AVX512_FN void encode_mxfp8(const float* x, int64_t hidden, uint8_t* out) {
  uint8_t* scales = out + hidden;
  int64_t b = 0, start = 0;
  for (; start + 4 * kMxBlockSize <= hidden; b += 4, start += 4 * kMxBlockSize) {
    if (encode_mx_4blocks(x + start, out + start, scales + b)) continue;
    for (int64_t j = 0; j < 4; ++j) {
      encode_mx_block(x + start + j * kMxBlockSize, kMxBlockSize, out + start + j * kMxBlockSize, scales + b + j);
    }
  }
  for (; start < hidden; ++b, start += kMxBlockSize) {
    encode_mx_block(x + start, std::min(kMxBlockSize, hidden - start), out + start, scales + b);
  }
}

template <int kMode>
NEP_AVX512_FN void decode_mxfp8(const uint8_t* in, int64_t hidden, float* out) {
  const uint8_t* scales = in + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kMxBlockSize) {
    const int64_t n = std::min(kMxBlockSize, hidden - start);
    const int32_t shared_exp = static_cast<int32_t>(scales[b]) - 127;
    const int32_t half = shared_exp / 2;
    float f1 = pow2f(half);
    const float f2 = pow2f(shared_exp - half);
    if (scales[b] == 0xFF) f1 = bits_float(kNan);
    e4m3_decode_run<kMode, true>(in + start, n, f1, f2, out + start);
  }
  end_row<kMode>();
}

}  // namespace

bool encode_row_avx512(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kBf16: encode_bf16(x, hidden, out); return true;
    case Wire::kFp8: encode_fp8(x, hidden, out); return true;
    case Wire::kMxfp8: encode_mxfp8(x, hidden, out); return true;
    default: return false;
  }
}

bool decode_row_avx512(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind) {
  switch (wire) {
    case Wire::kFp32:
      if (kind != DecodeKind::kStream) return false;  // memcpy and the compiler's add loop
      decode_fp32_stream(in, hidden, out);
      return true;
    case Wire::kBf16:
      // Store and add: the AVX2 loop (a shift per element) measured faster than a 512-bit one.
      if (kind != DecodeKind::kStream) return false;
      decode_bf16_stream(in, hidden, out);
      return true;
    case Wire::kFp8:
      switch (kind) {
        case DecodeKind::kStore: decode_fp8<kStore>(in, hidden, out); return true;
        case DecodeKind::kAdd: decode_fp8<kAdd>(in, hidden, out); return true;
        case DecodeKind::kStream: decode_fp8<kStream>(in, hidden, out); return true;
      }
      return false;
    case Wire::kMxfp8:
      switch (kind) {
        case DecodeKind::kStore: decode_mxfp8<kStore>(in, hidden, out); return true;
        case DecodeKind::kAdd: decode_mxfp8<kAdd>(in, hidden, out); return true;
        case DecodeKind::kStream: decode_mxfp8<kStream>(in, hidden, out); return true;
      }
      return false;
  }
  return false;
}

}  // namespace nep

#else  // not x86-64 GCC/Clang: no AVX-512 loops (codec_isa_supported(kAvx512) is false)

namespace nep {
bool encode_row_avx512(Wire, const float*, int64_t, uint8_t*) { return false; }
bool decode_row_avx512(Wire, const uint8_t*, int64_t, float*, DecodeKind) { return false; }
}  // namespace nep

#endif
