// Bit rules of the GPU wire encoders (wire.cuh) where the GPU's own arithmetic differs from the CPU
// codec (codec.h) and the encoders must still write the codec's bytes:
//   - FP8 / MXFP8 blocks: the amax is the largest finite |x| (codec.h's finite_amax_bits), and a
//     non-finite element is the e4m3 NaN code with the input's sign (0x7F or 0xFF). fmaxf skips NaN
//     but not +-Inf, cvt.rn.satfinite saturates +-Inf to +-448, and the GPU's NaN arithmetic and
//     conversions drop a NaN's sign.
//   - bf16: a NaN is quietened with its sign and payload kept ((bits >> 16) | 0x40), where the
//     hardware conversion writes the canonical NaN.
// Plain C++17 (host compilers include it as well as nvcc); src/test/native/wire_bits_test.cpp
// checks these functions against codec.h over every float bit pattern and whole rows.
#ifndef NATIVEEP_CUDA_WIRE_BITS_H_
#define NATIVEEP_CUDA_WIRE_BITS_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NEP_WIRE_HD __host__ __device__ __forceinline__
#else
#define NEP_WIRE_HD inline
#endif

namespace nep {
namespace wire_bits {

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t kNanBits = 0x7FFFFFFFu;  // the NaN finite_or_nan returns (the GPU's canonical)

NEP_WIRE_HD uint32_t as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

NEP_WIRE_HD float as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// ---- FP8 / MXFP8 ------------------------------------------------------------------------------

// An FP8 / MXFP8 element as the encoders feed it to the amax and the scaling: x when finite, else
// NaN. fmaxf skips NaN, so the fmaxf of |finite_or_nan(x)| over a block is its largest finite |x|
// (0 when none); x * mul stays NaN for every non-finite x (mul is a positive finite float), and the
// conversion writes a NaN code, whose sign e4m3x4_signed then sets. One compare and one select.
NEP_WIRE_HD float finite_or_nan(float x) {
  return fabsf(x) < as_float(kInfBits) ? x : as_float(kNanBits);
}

// The top byte of each of four words, a's in the lowest byte: for float bits, each byte's bit 7 is
// that float's sign.
NEP_WIRE_HD uint32_t top_bytes4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(__byte_perm(a, b, 0x0073u), __byte_perm(c, d, 0x0073u), 0x5410u);
#else
  return (a >> 24) | ((b >> 16) & 0xFF00u) | ((c >> 8) & 0xFF0000u) | (d & 0xFF000000u);
#endif
}

// Four e4m3 codes, the conversions of finite_or_nan(x_i) * mul, with each byte's sign bit taken
// from x_i (tops = top_bytes4 of the x_i bits). A finite x_i's code already has x_i's sign (mul > 0
// and the conversion keeps the sign of zeros and underflows), so only the NaN codes change: to 0x7F
// with x_i's sign, as codec.h's e4m3_from_float writes them. One LOP3 for four elements.
NEP_WIRE_HD uint32_t e4m3x4_signed(uint32_t codes, uint32_t tops) {
  return (codes & 0x7F7F7F7Fu) | (tops & 0x80808080u);
}

// ---- bf16 ---------------------------------------------------------------------------------------

// A word whose top half is codec.h's bf16_from_float of the float bits u: round to nearest even, a
// NaN quietened with its sign and payload kept.
NEP_WIRE_HD uint32_t bf16_word(uint32_t u) {
  const bool nan = (u & kAbsMask) > kInfBits;
  return nan ? (u | 0x00400000u) : u + 0x7FFFu + ((u >> 16) & 1u);
}

// Two floats as codec.h's bf16 bits, lo in the low half.
NEP_WIRE_HD uint32_t bf16x2_bits(float lo, float hi) {
  const uint32_t a = bf16_word(as_bits(lo)), b = bf16_word(as_bits(hi));
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, 0x7632u);
#else
  return (a >> 16) | (b & 0xFFFF0000u);
#endif
}

}  // namespace wire_bits
}  // namespace nep

#endif  // NATIVEEP_CUDA_WIRE_BITS_H_
