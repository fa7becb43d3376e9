// Wire codecs: how one row of `hidden` float32 channels is packed for the trip between ranks.
//
// Formats (NEP_WIRE_* in c_api.h); a row on the wire is its elements, then its scales, unpadded:
//   FP32   hidden * 4 bytes, bit-exact copy.
//   BF16   hidden * 2 bytes; round to nearest even; NaN stays NaN (quietened, sign kept), +-Inf
//          stays +-Inf, finite values above the bf16 range round to +-Inf as IEEE rounding says.
//   FP8    hidden bytes of OCP e4m3fn, then ceil(hidden / 128) little-endian fp32 scales.
//          Block b covers channels [128 b, min(128 (b + 1), hidden)): a hidden size that is not a
//          multiple of 128 gets a shorter last block with its own scale (nothing is padded).
//          scale = max(amax, 448 * 2^-126) / 448, amax = the largest finite |x| in the block; the
//          floor keeps the scale a normal float, so an all-zero block gets scale 2^-126 and
//          decodes to exact zeros. Element = sat448(x * (448 / amax)) rounded to nearest even
//          (the reciprocal form DeepEP's per-token cast uses; it differs from x / scale by at
//          most one float rounding before the e4m3 rounding). Decode: element * scale.
//   MXFP8  hidden bytes of e4m3fn, then ceil(hidden / 32) E8M0 scale bytes (OCP MX v1.0), block
//          b covering channels [32 b, min(32 (b + 1), hidden)) the same way.
//          shared_exp = floor(log2(amax)) - 8 clamped to [-127, 127], scale byte = shared_exp + 127
//          (amax as above; an all-zero block gets shared_exp -127 and decodes to exact zeros).
//          Element = sat448(x / 2^shared_exp) rounded to nearest even, so the top of the block may
//          clip at 448 * 2^shared_exp as the spec's floor rule implies. Scale byte 0xFF (never
//          written by the encoder) decodes its whole block as NaN.
// Non-finite input in FP8 and MXFP8: e4m3fn has no infinity, so NaN and +-Inf elements are
// written as the e4m3 NaN code (S.1111.111) and decode as NaN; amax ignores them, so the other
// elements of the block keep their precision.
#ifndef NATIVEEP_SRC_CODEC_H_
#define NATIVEEP_SRC_CODEC_H_

#include <cstdint>
#include <cstring>

namespace nep {

enum class Wire : int32_t { kFp32 = 0, kBf16 = 1, kFp8 = 2, kMxfp8 = 3 };

constexpr int64_t kFp8BlockSize = 128;
constexpr int64_t kMxBlockSize = 32;

// True for the four NEP_WIRE_* codes.
bool wire_is_valid(int32_t wire);
// "fp32", "bf16", "fp8", "mxfp8" (or "invalid").
const char* wire_name(Wire wire);
// Bytes of one row of `hidden` channels; hidden must be > 0.
int64_t wire_row_bytes(Wire wire, int64_t hidden);

// One row: x[hidden] float32 -> out[wire_row_bytes] bytes, and back. decode_add_row adds the
// decoded values to acc instead of storing them (combine's fp32 accumulation).
void encode_row(Wire wire, const float* x, int64_t hidden, uint8_t* out);
void decode_row(Wire wire, const uint8_t* in, int64_t hidden, float* out);
void decode_add_row(Wire wire, const uint8_t* in, int64_t hidden, float* acc);
// decode_row with non-temporal stores where the CPU path has them (AVX-512, 64-byte-aligned full
// vectors), for outputs far larger than the caches: the stores skip reading the destination lines
// first and do not evict the cache. Same values; the row is fenced (visible) on return.
void decode_row_stream(Wire wire, const uint8_t* in, int64_t hidden, float* out);

// ---- Scalar conversions (inline: the row loops above are built from them) -------------------

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// 2^e for e in [-126, 127] (a normal float, built from bits, no libm).
inline float pow2f(int32_t e) { return bits_float(static_cast<uint32_t>(e + 127) << 23); }

inline uint16_t bf16_from_float(float f) {
  uint32_t u = float_bits(f);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t quiet_nan = (u >> 16) | 0x0040u;
  bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? quiet_nan : rounded);
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

constexpr uint32_t kE4m3MaxBits = 0x43E00000u;        // 448.0f
constexpr uint32_t kE4m3MinNormalBits = 0x3C800000u;  // 2^-6
constexpr uint8_t kE4m3Nan = 0x7F;

// float -> e4m3fn: saturates finite values at +-448, rounds to nearest even (subnormals
// included), maps NaN and +-Inf to NaN (0x7F with the input's sign bit).
inline uint8_t e4m3_from_float(float v) {
  uint32_t u = float_bits(v);
  uint32_t sign = (u >> 24) & 0x80u;
  uint32_t mag = u & 0x7FFFFFFFu;
  bool non_finite = mag >= 0x7F800000u;
  uint32_t sat = mag < kE4m3MaxBits ? mag : kE4m3MaxBits;
  // Normal range [2^-6, 448]: round the float mantissa to 3 bits at bit 20, rebias 127 -> 7.
  uint32_t normal = ((sat + 0x7FFFFu + ((sat >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
  // Below 2^-6: adding 2^14 (whose ulp is 2^-9, the e4m3 subnormal step) rounds to nearest even.
  uint32_t subnormal = float_bits(bits_float(sat) + 16384.0f) - 0x46800000u;
  uint32_t code = sat < kE4m3MinNormalBits ? subnormal : normal;
  code = non_finite ? kE4m3Nan : code;
  return static_cast<uint8_t>(code | sign);
}

// e4m3fn -> float, exact; S.1111.111 -> NaN. Integer arithmetic plus one int->float conversion,
// so no subnormal floats are touched (flush-to-zero modes cannot change the result).
inline float e4m3_to_float(uint8_t c) {
  uint32_t mag = c & 0x7Fu;
  uint32_t exp = mag >> 3;
  uint32_t sig = (mag & 7u) | (exp != 0 ? 8u : 0u);
  uint32_t eff_exp = exp != 0 ? exp : 1u;
  float value =
      static_cast<float>(static_cast<int32_t>(sig)) * bits_float((eff_exp + 127u - 10u) << 23);
  uint32_t bits = float_bits(value) | (static_cast<uint32_t>(c & 0x80u) << 24);
  bits = mag == kE4m3Nan ? (0x7FC00000u | (static_cast<uint32_t>(c & 0x80u) << 24)) : bits;
  return bits_float(bits);
}

}  // namespace nep

#endif  // NATIVEEP_SRC_CODEC_H_
