// Wire codecs of the cuda-ipc kernels, at the granularity the kernels use: one lane holds 8
// consecutive channels of a row, a warp 256. A row's last scale group may be partial (lanes past
// the row end pass zeros, which leave the amax alone). The bytes equal the CPU codec's (codec.h)
// for every input, NaN and +-Inf included. FP8: e4m3 with one fp32 scale per 128 channels (16
// lanes), scale = max(amax, 448 * 2^-126) / 448 as the CPU codec, values x * (448 / amax) rounded
// to nearest even with saturation. MXFP8 (OCP MX v1.0): e4m3 with one E8M0 scale per 32 channels
// (4 lanes), X = 2^(floor(log2 amax) - 8) clamped to [2^-127, 2^127], values x / X saturated. In
// both, amax is the largest finite |x| of the group and a NaN or +-Inf element is the e4m3 NaN code
// with the input's sign (wire_bits.h). BF16: round to nearest even, NaN quietened with its sign and
// payload kept. The host oracle of the GPU tests (gpu-tests/oracle.h) mirrors these operations bit
// for bit; gpu-tests/wire_test.cu compares the encoders' bytes with the CPU codec's.
#ifndef NATIVEEP_CUDA_WIRE_CUH_
#define NATIVEEP_CUDA_WIRE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "device_utils.cuh"
#include "wire_bits.h"

// FP8 scale amax / 448 by a multiply and one fma correction instead of an IEEE division (same bits;
// 4.5% faster FP8 dispatch at EP=2, 24 SMs). 0 restores the division.
#ifndef NEP_CUDA_FP8_SCALE_FMA
#define NEP_CUDA_FP8_SCALE_FMA 1
#endif

namespace nep {
namespace cuda {

constexpr int kLaneChannels = 8;
// Floor of an FP8 block's amax, 448 * 2^-126 (the CPU codec's kFp8AmaxFloorBits): keeps the scale
// amax / 448 a normal float, so an all-zero block gets scale 2^-126 and tiny gradients keep their
// bits instead of flushing to zero under a larger floor.
constexpr uint32_t kFp8AmaxFloorBits = 0x04E00000u;
constexpr int kWarpChannels = 32 * kLaneChannels;

// ---- bf16 <-> f32 -------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t pack_bf16x2(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);  // a in the low half
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ void unpack_bf16x8(uint4 u, float v[8]) {
  v[0] = bf16_lo(u.x);
  v[1] = bf16_hi(u.x);
  v[2] = bf16_lo(u.y);
  v[3] = bf16_hi(u.y);
  v[4] = bf16_lo(u.z);
  v[5] = bf16_hi(u.z);
  v[6] = bf16_lo(u.w);
  v[7] = bf16_hi(u.w);
}
// The CPU codec's bf16 bits of 8 floats. The hardware conversion rounds as the codec does except
// for NaN, which it makes canonical where the codec keeps the sign and payload: a lane whose 8
// values sum to NaN (one is NaN, or infinities of both signs meet) takes wire_bits.h's integer rule
// instead, so the common case stays at one conversion per pair.
__device__ __forceinline__ uint4 pack_bf16x8(const float v[8]) {
  const float sum = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  if (sum == sum) {
    return make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]), pack_bf16x2(v[4], v[5]),
                      pack_bf16x2(v[6], v[7]));
  }
  return make_uint4(wire_bits::bf16x2_bits(v[0], v[1]), wire_bits::bf16x2_bits(v[2], v[3]),
                    wire_bits::bf16x2_bits(v[4], v[5]), wire_bits::bf16x2_bits(v[6], v[7]));
}
__device__ __forceinline__ void unpack_f32x8(uint4 a, uint4 b, float v[8]) {
  v[0] = __uint_as_float(a.x);
  v[1] = __uint_as_float(a.y);
  v[2] = __uint_as_float(a.z);
  v[3] = __uint_as_float(a.w);
  v[4] = __uint_as_float(b.x);
  v[5] = __uint_as_float(b.y);
  v[6] = __uint_as_float(b.z);
  v[7] = __uint_as_float(b.w);
}

// Raw 8 channels of a tensor row (bf16: one 16-byte word, fp32: two).
struct Raw8 {
  uint4 a, b;
};

__device__ __forceinline__ Raw8 load_row8(const uint8_t* row, int dtype, long long ch) {
  Raw8 r;
  if (dtype == NEP_DTYPE_BF16) {
    r.a = ld_nc_v4(row + ch * 2);
    r.b = make_uint4(0, 0, 0, 0);
  } else {
    r.a = ld_nc_v4(row + ch * 4);
    r.b = ld_nc_v4(row + ch * 4 + 16);
  }
  return r;
}
__device__ __forceinline__ void raw_to_f32(const Raw8& r, int dtype, float v[8]) {
  if (dtype == NEP_DTYPE_BF16) unpack_bf16x8(r.a, v);
  else unpack_f32x8(r.a, r.b, v);
}
__device__ __forceinline__ void store_row8(uint8_t* row, int dtype, long long ch,
                                           const float v[8]) {
  if (dtype == NEP_DTYPE_BF16) {
    st_v4(row + ch * 2, pack_bf16x8(v));
  } else {
    st_v4(row + ch * 4, make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]),
                                   __float_as_uint(v[2]), __float_as_uint(v[3])));
    st_v4(row + ch * 4 + 16, make_uint4(__float_as_uint(v[4]), __float_as_uint(v[5]),
                                        __float_as_uint(v[6]), __float_as_uint(v[7])));
  }
}

// ---- e4m3 ---------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t f32x2_to_e4m3x2(float a, float b) {  // a in the low byte
  return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ float2 e4m3x2_to_f32x2(uint32_t u16) {
  __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)u16, __NV_E4M3);
  return __half22float2(*reinterpret_cast<__half2*>(&h));
}
// e4m3 codes of v[i] * mul (mul a positive finite float) as codec.h's e4m3_from_float writes them:
// a NaN or +-Inf v[i] gives the NaN code with v[i]'s sign (wire_bits.h), finite values round to
// nearest even with saturation at +-448.
__device__ __forceinline__ uint2 quantize_e4m3x8(const float v[8], float mul) {
  float p[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) p[i] = wire_bits::finite_or_nan(v[i]) * mul;
  uint2 q;
  q.x = f32x2_to_e4m3x2(p[0], p[1]) | (f32x2_to_e4m3x2(p[2], p[3]) << 16);
  q.y = f32x2_to_e4m3x2(p[4], p[5]) | (f32x2_to_e4m3x2(p[6], p[7]) << 16);
  q.x = wire_bits::e4m3x4_signed(
      q.x, wire_bits::top_bytes4(__float_as_uint(v[0]), __float_as_uint(v[1]),
                                 __float_as_uint(v[2]), __float_as_uint(v[3])));
  q.y = wire_bits::e4m3x4_signed(
      q.y, wire_bits::top_bytes4(__float_as_uint(v[4]), __float_as_uint(v[5]),
                                 __float_as_uint(v[6]), __float_as_uint(v[7])));
  return q;
}
__device__ __forceinline__ void dequantize_e4m3x8(uint2 q, float scale, float v[8]) {
  float2 p;
  p = e4m3x2_to_f32x2(q.x & 0xffffu);
  v[0] = p.x * scale;
  v[1] = p.y * scale;
  p = e4m3x2_to_f32x2(q.x >> 16);
  v[2] = p.x * scale;
  v[3] = p.y * scale;
  p = e4m3x2_to_f32x2(q.y & 0xffffu);
  v[4] = p.x * scale;
  v[5] = p.y * scale;
  p = e4m3x2_to_f32x2(q.y >> 16);
  v[6] = p.x * scale;
  v[7] = p.y * scale;
}

// The largest finite |v[i]| (0 when none): NaN and +-Inf leave a group's amax alone, as in the CPU
// codec's finite_amax_bits.
__device__ __forceinline__ float lane_amax8(const float v[8]) {
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) m = fmaxf(m, fabsf(wire_bits::finite_or_nan(v[i])));
  return m;
}

// E8M0 helpers (MXFP8). Biased exponent byte b encodes 2^(b - 127); 0 encodes 2^-127.
__device__ __forceinline__ int mx_shared_exp(float amax) {
  const int biased = (__float_as_uint(amax) >> 23) & 0xff;
  if (biased == 0) return -127;  // zero or subnormal amax: floor(log2) <= -127
  const int e = biased - 127 - 8;
  return e < -127 ? -127 : e;
}
__device__ __forceinline__ float e8m0_to_f32(uint32_t byte) {
  return byte == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(byte << 23);
}

// ---- Encoded lane -------------------------------------------------------------------------------

// One lane's 8 channels on the wire. FP8/MXFP8: q (8 bytes) and the group's scale.
struct Enc8 {
  uint4 a, b;      // BF16: a; FP32: a, b; FP8/MXFP8: a.x, a.y
  float scale;     // FP8: fp32 scale; MXFP8: 2^shared_exp as float
  uint32_t sbyte;  // MXFP8: the E8M0 byte
};

// All 32 lanes must call (shuffles); lanes past the row end pass zeros.
template <int WIRE>
__device__ __forceinline__ Enc8 encode8(const float v[8]) {
  Enc8 e;
  e.scale = 1.f;
  e.sbyte = 0;
  if constexpr (WIRE == NEP_WIRE_FP32) {
    e.a = make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                     __float_as_uint(v[3]));
    e.b = make_uint4(__float_as_uint(v[4]), __float_as_uint(v[5]), __float_as_uint(v[6]),
                     __float_as_uint(v[7]));
  } else if constexpr (WIRE == NEP_WIRE_BF16) {
    e.a = pack_bf16x8(v);
    e.b = make_uint4(0, 0, 0, 0);
  } else if constexpr (WIRE == NEP_WIRE_FP8) {
    float amax = lane_amax8(v);
#pragma unroll
    for (int m = 1; m < 16; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
    amax = fmaxf(amax, __uint_as_float(kFp8AmaxFloorBits));
#if NEP_CUDA_FP8_SCALE_FMA
    // amax / 448 without a division: q = amax * RN(1/448) refined once by an fma residual. Equal
    // bit for bit to the IEEE quotient for every finite amax >= 1e-4 (checked exhaustively on the
    // host); below that the residual may be subnormal, so the division serves (rare blocks). amax
    // is finite (lane_amax8 skips NaN and +-Inf).
    if (amax >= 1e-4f) {
      constexpr float kInv448 = 1.0f / 448.0f;
      const float q = amax * kInv448;
      e.scale = __fmaf_rn(__fmaf_rn(-448.f, q, amax), kInv448, q);
    } else {
      e.scale = __fdiv_rn(amax, 448.f);
    }
#else
    e.scale = __fdiv_rn(amax, 448.f);
#endif
    const uint2 q = quantize_e4m3x8(v, __fdiv_rn(448.f, amax));
    e.a = make_uint4(q.x, q.y, 0, 0);
    e.b = make_uint4(0, 0, 0, 0);
  } else {
    float amax = lane_amax8(v);
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    const int se = mx_shared_exp(amax);
    e.sbyte = (uint32_t)(se + 127);
    e.scale = e8m0_to_f32(e.sbyte);
    const float mul = __uint_as_float((uint32_t)(127 - se) << 23);  // 2^-se, se in [-127, 119]
    const uint2 q = quantize_e4m3x8(v, mul);
    e.a = make_uint4(q.x, q.y, 0, 0);
    e.b = make_uint4(0, 0, 0, 0);
  }
  return e;
}

// The low-latency FP8 wire with power-of-two scales (NEP_LL_ROUND_SCALE): scale =
// 2^ceil(log2(max(amax, 448 * 2^-126) / 448)), values x * 2^-e, amax and non-finite elements as in
// encode8 (the CPU codec's encode_row_ll, ll_codec.cpp).
// All 32 lanes call; a 16-lane group shares one scale.
__device__ __forceinline__ Enc8 encode8_fp8_pow2(const float v[8]) {
  float amax = lane_amax8(v);
#pragma unroll
  for (int m = 1; m < 16; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
  amax = fmaxf(amax, __uint_as_float(kFp8AmaxFloorBits));
  const uint32_t qb = __float_as_uint(__fdiv_rn(amax, 448.f));
  int e = int((qb >> 23) & 0xff) - 127;
  if ((qb & 0x7fffffu) != 0u) ++e;
  e = e < -126 ? -126 : (e > 126 ? 126 : e);
  Enc8 r;
  r.scale = __uint_as_float(uint32_t(127 + e) << 23);
  r.sbyte = 0;
  const uint2 q = quantize_e4m3x8(v, __uint_as_float(uint32_t(127 - e) << 23));
  r.a = make_uint4(q.x, q.y, 0, 0);
  r.b = make_uint4(0, 0, 0, 0);
  return r;
}

template <int WIRE>
__device__ __forceinline__ void decode8(const Enc8& e, float v[8]) {
  if constexpr (WIRE == NEP_WIRE_FP32) {
    unpack_f32x8(e.a, e.b, v);
  } else if constexpr (WIRE == NEP_WIRE_BF16) {
    unpack_bf16x8(e.a, v);
  } else {
    dequantize_e4m3x8(make_uint2(e.a.x, e.a.y), e.scale, v);
  }
}

// Stores a lane's encoded channels [ch, ch + 8) into a wire row at `row` (a peer's ring slot).
// `lane` picks the lane that writes the group's scale.
template <int WIRE>
__device__ __forceinline__ void store_wire8(uint8_t* row, long long hidden, long long ch, int lane,
                                            const Enc8& e) {
  if constexpr (WIRE == NEP_WIRE_FP32) {
    st_v4(row + ch * 4, e.a);
    st_v4(row + ch * 4 + 16, e.b);
  } else if constexpr (WIRE == NEP_WIRE_BF16) {
    st_v4(row + ch * 2, e.a);
  } else if constexpr (WIRE == NEP_WIRE_FP8) {
    st_v2(row + ch, make_uint2(e.a.x, e.a.y));
    if ((lane & 15) == 0)
      *reinterpret_cast<float*>(row + wire_scale_offset(WIRE, hidden) + (ch / 128) * 4) = e.scale;
  } else {
    st_v2(row + ch, make_uint2(e.a.x, e.a.y));
    if ((lane & 3) == 0) row[wire_scale_offset(WIRE, hidden) + ch / 32] = (uint8_t)e.sbyte;
  }
}

// Loads a lane's channels [ch, ch + 8) of a wire row written by a peer.
template <int WIRE>
__device__ __forceinline__ Enc8 load_wire8(const uint8_t* row, long long hidden, long long ch) {
  Enc8 e;
  e.scale = 1.f;
  e.sbyte = 0;
  e.b = make_uint4(0, 0, 0, 0);
  if constexpr (WIRE == NEP_WIRE_FP32) {
    e.a = ld_volatile_v4(row + ch * 4);
    e.b = ld_volatile_v4(row + ch * 4 + 16);
  } else if constexpr (WIRE == NEP_WIRE_BF16) {
    e.a = ld_volatile_v4(row + ch * 2);
  } else if constexpr (WIRE == NEP_WIRE_FP8) {
    const uint2 q = ld_volatile_v2(row + ch);
    e.a = make_uint4(q.x, q.y, 0, 0);
    e.scale = ld_volatile_f32(row + wire_scale_offset(WIRE, hidden) + (ch / 128) * 4);
  } else {
    const uint2 q = ld_volatile_v2(row + ch);
    e.a = make_uint4(q.x, q.y, 0, 0);
    e.sbyte = ld_volatile_u8(row + wire_scale_offset(WIRE, hidden) + ch / 32);
    e.scale = e8m0_to_f32(e.sbyte);
  }
  return e;
}

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_WIRE_CUH_
