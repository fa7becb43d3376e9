// AVX-512 row loops of the wire codecs (codec_kernels.h): the bf16 and FP8 encoders and the
// streaming fp32 and bf16 decoders, where 512-bit vectors measured faster than the AVX2 loops
// (codec_avx2.cpp takes every other row on AVX-512 CPUs: the e4m3 decoders through F16C and the
// MXFP8 encoder measured faster there, on Intel and AMD alike). Each lane computes exactly the
// scalar formulas of codec.h (the same integer steps and float multiplies, no FMA), so bytes and
// floats are bit-identical to the scalar reference and to the AVX2 loops. Partial vectors at the
// end of a block or row use masked loads and stores (masked-off lanes are neither read nor
// written), so there is no separate scalar tail.
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

NEP_AVX512 __mmask16 lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Largest finite |x| bits over x[0, n) (0 when none): an unsigned max of the magnitude bits of the
// finite lanes, as finite_amax_bits in codec_kernels.h.
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
    m = _mm512_max_epu32(m,
                         _mm512_and_si512(_mm512_maskz_loadu_epi32(lanes(n - i), x + i), abs_mask));
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
      _mm512_add_epi32(
          _mm512_add_epi32(sat, _mm512_set1_epi32(static_cast<int>(0x7FFFFu - (960u << 20)))), odd),
      20);
  const __mmask16 is_sub =
      _mm512_cmplt_epu32_mask(sat, _mm512_set1_epi32(static_cast<int>(kE4m3MinNormalBits)));
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

// out[i] = e4m3(x[i] * f) for i < n.
template <bool kNonFinite>
NEP_AVX512 void e4m3_encode_run(const float* x, int64_t n, float f, uint8_t* out) {
  const __m512 m = _mm512_set1_ps(f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     e4m3_encode16<kNonFinite>(_mm512_mul_ps(_mm512_loadu_ps(x + i), m)));
  }
  if (i < n) {
    const __mmask16 k = lanes(n - i);
    _mm_mask_storeu_epi8(
        out + i, k, e4m3_encode16<kNonFinite>(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), m)));
  }
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
  const int64_t head =
      static_cast<int64_t>((64u - (reinterpret_cast<uintptr_t>(out) & 63u)) & 63u) / 4;
  return std::min(head, n);
}

// Streaming stores are weakly ordered: each streaming row ends with a store fence, so the row is
// visible like ordinary stores by the time the decoder returns.
template <int kMode>
NEP_AVX512 void end_row() {
  if constexpr (kMode == kStream) _mm_sfence();
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
  for (; i < hidden; i += 16)
    copy_group_stream(src + i, std::min<int64_t>(16, hidden - i), out + i);
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
  for (; i < hidden; i += 16)
    bf16_group_stream(in + 2 * i, std::min<int64_t>(16, hidden - i), out + i);
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
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, round), _mm512_and_si512(hi, one)), 16);
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
    const float amax = bits_float(std::max(amax_bits, kFp8AmaxFloorBits));
    const float scale = amax / 448.0f;
    const float inv_scale = 448.0f / amax;  // |x| * inv_scale <= 448 (1 ulp over at most): finite
    if (non_finite) {
      e4m3_encode_run<true>(x + start, n, inv_scale, out + start);
    } else {
      e4m3_encode_run<false>(x + start, n, inv_scale, out + start);
    }
    std::memcpy(scales + 4 * b, &scale, sizeof scale);
  }
}

}  // namespace

bool encode_row_avx512(Wire wire, const float* x, int64_t hidden, uint8_t* out) {
  switch (wire) {
    case Wire::kBf16: encode_bf16(x, hidden, out); return true;
    case Wire::kFp8: encode_fp8(x, hidden, out); return true;
    default: return false;  // fp32: memcpy; mxfp8: the AVX2 loop
  }
}

bool decode_row_avx512(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind) {
  if (kind != DecodeKind::kStream) return false;  // memcpy, the compiler's add loop, the AVX2 loops
  switch (wire) {
    case Wire::kFp32: decode_fp32_stream(in, hidden, out); return true;
    case Wire::kBf16: decode_bf16_stream(in, hidden, out); return true;
    default: return false;  // fp8, mxfp8: the AVX2 loops
  }
}

}  // namespace nep

#else  // not x86-64 GCC/Clang: no AVX-512 loops (codec_isa_supported(kAvx512) is false)

namespace nep {
bool encode_row_avx512(Wire, const float*, int64_t, uint8_t*) { return false; }
bool decode_row_avx512(Wire, const uint8_t*, int64_t, float*, DecodeKind) { return false; }
}  // namespace nep

#endif
