// Internal to the codec: the row loops per instruction set. encode_row / decode_row /
// decode_add_row (codec.h) use the best set the CPU has; tests call every supported set and
// require bit-identical bytes and floats (each set computes the scalar formulas of codec.h lane by
// lane, with the same float operations in the same order).
//
// Environment (read once per process): NEP_CODEC_NO_AVX512=1 keeps the row loops off AVX-512,
// NEP_CODEC_NO_AVX2=1 keeps them off every vector set (the scalar reference runs).
#ifndef NATIVEEP_SRC_CODEC_KERNELS_H_
#define NATIVEEP_SRC_CODEC_KERNELS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "codec.h"

namespace nep {

// ---- shared by the row loops of every instruction set --------------------------------------

// Floor of an FP8 block's amax (448 * 2^-126): keeps its scale amax / 448 a normal float.
constexpr uint32_t kFp8AmaxFloorBits = (9u << 23) | 0x600000u;
// The quiet NaN the decoders write (the E8M0 NaN byte's factor).
constexpr uint32_t kNanBits = 0x7FC00000u;
// Encoders read x[T, H] once, from memory: prefetching this far ahead of the loads measured 20-40%
// faster encodes of 28 KB rows than the hardware prefetcher alone (AVX-512 and AVX2 loops).
constexpr int64_t kPrefetchBytes = 4096;

__attribute__((always_inline)) inline void prefetch_ahead(const float* p) {
  __builtin_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, 0, 3);
}

// Bits of the largest finite |x[i]|, or 0 when none is finite and non-zero. For non-negative
// floats the bit patterns order like the values, so an integer max does the job. Always inlined,
// so it vectorises for the instruction set of the loop that calls it.
__attribute__((always_inline)) inline uint32_t finite_amax_bits(const float* x, int64_t n) {
  // Read the float bits as integers (may_alias makes this well-defined) so the loop vectorises.
  typedef uint32_t __attribute__((may_alias)) AliasedBits;
  const AliasedBits* xb = reinterpret_cast<const AliasedBits*>(x);
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t a = xb[i] & 0x7FFFFFFFu;
    const uint32_t finite = a & (0u - static_cast<uint32_t>(a < 0x7F800000u));  // mask, not select:
    m = m > finite ? m : finite;  // GCC 12 vectorises it
  }
  return m;
}

// The compiled FP8 row encoder (codec.h layout: e4m3 values, then one fp32 scale per block of
// kFp8BlockSize channels). scales(amax, scale, inv_scale) picks a block's scale from its amax,
// floored at kFp8AmaxFloorBits; the values are x * inv_scale. Always inlined, so it vectorises for
// the instruction set of the function that calls it.
template <typename Scales>
__attribute__((always_inline)) inline void encode_fp8_blocks(const float* x, int64_t hidden,
                                                             uint8_t* out, Scales scales) {
  uint8_t* scale_bytes = out + hidden;
  for (int64_t b = 0, start = 0; start < hidden; ++b, start += kFp8BlockSize) {
    const int64_t n = std::min(kFp8BlockSize, hidden - start);
    const float* xb = x + start;
    uint8_t* ob = out + start;
    const float amax = bits_float(std::max(finite_amax_bits(xb, n), kFp8AmaxFloorBits));
    float scale, inv_scale;
    scales(amax, scale, inv_scale);
    for (int64_t i = 0; i < n; ++i) ob[i] = e4m3_from_float(xb[i] * inv_scale);
    std::memcpy(scale_bytes + 4 * b, &scale, sizeof scale);
  }
}

enum class CodecIsa : int32_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// True when this CPU (and OS) can run the set; kScalar always.
bool codec_isa_supported(CodecIsa isa);
// The set encode_row and the decoders use (best supported, minus what the environment disables).
CodecIsa codec_isa();
const char* codec_isa_name(CodecIsa isa);

// The row functions of codec.h on a given set; isa must be supported.
void encode_row_isa(CodecIsa isa, Wire wire, const float* x, int64_t hidden, uint8_t* out);
void decode_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out);
void decode_add_row_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* acc);
void decode_row_stream_isa(CodecIsa isa, Wire wire, const uint8_t* in, int64_t hidden, float* out);

enum class DecodeKind : int32_t { kStore = 0, kAdd = 1, kStream = 2 };

// AVX2 (+F16C) loops in codec_avx2.cpp; false when the wire has none there (fp32 stores and adds
// are a memcpy and a compiler loop). Callers check codec_isa_supported(kAvx2) first.
bool encode_row_avx2(Wire wire, const float* x, int64_t hidden, uint8_t* out);
bool decode_row_avx2(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind);

// AVX-512 (F, BW, VL, DQ) loops in codec_avx512.cpp: bf16 and FP8 encode, streaming fp32 and
// bf16 decode; false for the rest, which the AVX2 loops (measured faster for them on Intel and
// AMD cores; native-ep/bench/RESULTS.md) or the compiled loops take. Callers check
// codec_isa_supported(kAvx512) first.
bool encode_row_avx512(Wire wire, const float* x, int64_t hidden, uint8_t* out);
bool decode_row_avx512(Wire wire, const uint8_t* in, int64_t hidden, float* out, DecodeKind kind);

}  // namespace nep

#endif  // NATIVEEP_SRC_CODEC_KERNELS_H_
