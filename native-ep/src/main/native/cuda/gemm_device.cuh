// Device side of the grouped FP8 GEMMs (include/nativeep/gemm_api.h): the quantisers' element and
// scale rules, mirroring the CPU wire codec (codec.h) operation for operation so both give the
// same bytes, and the promotion step of the accumulation, the same float operations as the CPU
// path (gemm_grouped.cpp), rounded one by one (no contraction into an fma).
#ifndef NATIVEEP_CUDA_GEMM_DEVICE_CUH_
#define NATIVEEP_CUDA_GEMM_DEVICE_CUH_

#include <cstdint>

#include "wire.cuh"

namespace nep {
namespace cuda {
namespace gemm {

// The floor of an FP8 block's amax, 448 * 2^-126: the wire's (wire.cuh), as the CPU codec's.
constexpr uint32_t kAmaxFloorBits = kFp8AmaxFloorBits;

// |x| bits when x is finite, else 0 (the CPU codec's finite_amax_bits, one element).
__device__ __forceinline__ uint32_t finite_abs_bits(float x) {
  const uint32_t a = __float_as_uint(x) & 0x7FFFFFFFu;
  return a < 0x7F800000u ? a : 0u;
}

__device__ __forceinline__ uint32_t warp_max_u32(uint32_t v, unsigned mask = 0xffffffffu) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) v = max(v, __shfl_xor_sync(mask, v, m));
  return v;
}

// float -> e4m3fn as codec.h's e4m3_from_float: finite values through the hardware conversion
// (round to nearest even, saturating at 448), NaN and +-Inf to the NaN code with the sign kept.
__device__ __forceinline__ uint8_t e4m3_encode(float v) {
  const uint32_t u = __float_as_uint(v);
  if ((u & 0x7FFFFFFFu) >= 0x7F800000u) return (uint8_t)(0x7Fu | ((u >> 24) & 0x80u));
  return (uint8_t)(f32x2_to_e4m3x2(v, 0.0f) & 0xFFu);
}

// FP8_BLOCK: the block's scale and the multiplier of its elements from its finite amax bits.
struct Fp8Scale {
  float scale, inv;
};
__device__ __forceinline__ Fp8Scale fp8_scale(uint32_t amax_bits) {
  const float amax = __uint_as_float(max(amax_bits, kAmaxFloorBits));
  return {__fdiv_rn(amax, 448.0f), __fdiv_rn(448.0f, amax)};
}
// The element x scaled by a positive finite factor, encoded as codec.h does (x * factor on the
// CPU): a non-finite x gives the NaN code with x's own sign, which the GPU's product would drop
// (its NaN results are canonical, sign clear).
__device__ __forceinline__ uint8_t e4m3_encode_scaled(float x, float scaled) {
  const uint32_t u = __float_as_uint(x);
  if ((u & 0x7FFFFFFFu) >= 0x7F800000u) return (uint8_t)(0x7Fu | ((u >> 24) & 0x80u));
  return e4m3_encode(scaled);
}
__device__ __forceinline__ uint8_t fp8_element(float x, const Fp8Scale& s) {
  return e4m3_encode_scaled(x, __fmul_rn(x, s.inv));
}

// MXFP8: the shared exponent from the finite amax bits (wire.cuh's rule) and the two exact
// power-of-two factors the CPU codec multiplies by, in its order.
struct MxScale {
  int shared_exp;
  float f1, f2;
};
__device__ __forceinline__ float pow2f(int e) { return __uint_as_float((uint32_t)(e + 127) << 23); }
__device__ __forceinline__ MxScale mx_scale(uint32_t amax_bits) {
  MxScale s;
  s.shared_exp = mx_shared_exp(__uint_as_float(amax_bits));
  const int half = -s.shared_exp / 2;
  s.f1 = pow2f(half);
  s.f2 = pow2f(-s.shared_exp - half);
  return s;
}
__device__ __forceinline__ uint8_t mx_element(float x, const MxScale& s) {
  return e4m3_encode_scaled(x, __fmul_rn(__fmul_rn(x, s.f1), s.f2));
}

// One promotion of a block's partial sum p into the accumulator (gemm_api.h, "Numerics").
__device__ __forceinline__ float promote_fp8(float acc, float p, float sa, float sb) {
  return __fadd_rn(acc, __fmul_rn(p, __fmul_rn(sa, sb)));
}
// p * 2^e is ldexp(p, e) (both round once, correctly) whenever 2^e is a normal float, the usual
// case, and costs one multiply; ldexpf takes the rest.
__device__ __forceinline__ float promote_mx(float acc, float p, uint32_t ea, uint32_t eb) {
  if (ea == 0xFFu || eb == 0xFFu) return __uint_as_float(0x7FC00000u);
  const int e = (int)ea + (int)eb - 254;
  const float scaled = (e >= -126 && e <= 127)
                           ? __fmul_rn(p, __uint_as_float((uint32_t)(e + 127) << 23))
                           : ldexpf(p, e);
  return __fadd_rn(acc, scaled);
}

// silu(g) * u as gemm_api.h specifies it: g / (1 + exp(-g)), then the product, in float32.
__device__ __forceinline__ float swiglu(float g, float u) {
  const float e = expf(-g);
  const float silu = __fdiv_rn(g, __fadd_rn(1.0f, e));
  return __fmul_rn(silu, u);
}

// dgate and dup of silu(g) * u for the incoming gradient dh, gemm_api.h's float operations.
__device__ __forceinline__ void dswiglu(float g, float u, float dh, float& dgate, float& dup) {
  const float e = expf(-g);
  const float d = __fadd_rn(1.0f, e);
  const float sig = __fdiv_rn(1.0f, d);
  const float silu = __fdiv_rn(g, d);
  const float dsilu = __fmul_rn(sig, __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, sig))));
  dgate = __fmul_rn(__fmul_rn(dh, u), dsilu);
  dup = __fmul_rn(dh, silu);
}

// float -> bf16 bits as codec.h's bf16_from_float (round to nearest even, NaN quietened).
__device__ __forceinline__ uint16_t bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_GEMM_DEVICE_CUH_
