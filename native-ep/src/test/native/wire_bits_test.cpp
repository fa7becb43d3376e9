// The GPU wire encoders' bit rules (src/main/native/cuda/wire_bits.h) against the CPU codec
// (codec.h), on the CPU: the e4m3 element rule (finite_or_nan, the conversion, e4m3x4_signed) and
// the bf16 rule over every float bit pattern, and whole FP8 / MXFP8 / BF16 rows built the way
// wire.cuh's encode8 builds them (8 channels a lane, group amax over 16 or 4 lanes) with NaN of
// either sign and any payload, +-Inf, huge, subnormal and zero inputs, byte for byte against
// encode_row. The GPU's e4m3 conversion is modelled as the PTX ISA specifies cvt.rn.satfinite:
// finite values rounded to nearest even and saturated at +-448, a NaN code for NaN, with either
// sign (the rule must not depend on it). gpu-tests/wire_test.cu runs the kernels themselves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "codec.h"
#include "codec_kernels.h"
#include "cuda/wire_bits.h"

namespace wb = nep::wire_bits;
using nep::Wire;

namespace {

// cvt.rn.satfinite.e4m3x2.f32 for one float: NaN -> nan_code, +-Inf and finite values beyond 448
// -> +-448, others rounded to nearest even (codec.h's e4m3_from_float on finite input).
uint8_t hw_e4m3(float p, uint8_t nan_code) {
  if (std::isnan(p)) return nan_code;
  if (std::isinf(p)) return p < 0 ? 0xFE : 0x7E;
  return nep::e4m3_from_float(p);
}

// wire.cuh's quantize_e4m3x8 for four values.
uint32_t gpu_e4m3x4(const float x[4], float mul, uint8_t nan_code) {
  uint32_t codes = 0;
  for (int i = 0; i < 4; ++i)
    codes |= uint32_t(hw_e4m3(wb::finite_or_nan(x[i]) * mul, nan_code)) << (8 * i);
  return wb::e4m3x4_signed(codes, wb::top_bytes4(wb::as_bits(x[0]), wb::as_bits(x[1]),
                                                 wb::as_bits(x[2]), wb::as_bits(x[3])));
}

// Runs body(first, last) over [0, 2^32) split among a few threads; returns the sum of the counts.
template <class Body>
uint64_t over_all_bits(Body body) {
  const unsigned n = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  std::vector<uint64_t> bad(n, 0);
  std::vector<std::thread> threads;
  const uint64_t total = uint64_t(1) << 32, step = total / n;
  for (unsigned t = 0; t < n; ++t) {
    const uint64_t first = t * step, last = t + 1 == n ? total : first + step;
    threads.emplace_back([&, t, first, last] { bad[t] = body(first, last); });
  }
  for (auto& th : threads) th.join();
  uint64_t sum = 0;
  for (uint64_t b : bad) sum += b;
  return sum;
}

// The conversion of finite_or_nan(x) * 1 for x = bits u, given the codec's byte of x (the
// conversion's on a finite value): NaN code 0x7F for NaN, the saturated code for +-Inf.
inline uint32_t hw_code_mul1(uint32_t u, uint8_t codec) {
  const float p = wb::finite_or_nan(wb::as_float(u)) * 1.0f;
  const uint32_t pb = wb::as_bits(p);
  const bool nan = (pb & 0x7FFFFFFFu) > 0x7F800000u, inf = (pb & 0x7FFFFFFFu) == 0x7F800000u;
  return nan ? 0x7Fu : inf ? ((pb >> 24) & 0x80u) | 0x7Eu : codec;
}

TEST(WireBits, E4m3ElementEqualsCodecForEveryFloat) {
  // Every bit pattern once, four consecutive patterns a lane quad (each in its own byte position,
  // beside neighbours of other signs and classes). The conversion of a finite value is the codec's
  // own byte (mul = 1), computed once for both sides.
  const uint64_t bad = over_all_bits([](uint64_t first, uint64_t last) {
    uint64_t n = 0;
    for (uint64_t u = first; u < last; u += 4) {
      const uint32_t b0 = uint32_t(u), b1 = b0 + 1, b2 = b0 + 2, b3 = b0 + 3;
      const uint8_t c0 = nep::e4m3_from_float(wb::as_float(b0)),
                    c1 = nep::e4m3_from_float(wb::as_float(b1)),
                    c2 = nep::e4m3_from_float(wb::as_float(b2)),
                    c3 = nep::e4m3_from_float(wb::as_float(b3));
      const uint32_t conv = hw_code_mul1(b0, c0) | (hw_code_mul1(b1, c1) << 8) |
                            (hw_code_mul1(b2, c2) << 16) | (hw_code_mul1(b3, c3) << 24);
      const uint32_t want =
          uint32_t(c0) | (uint32_t(c1) << 8) | (uint32_t(c2) << 16) | (uint32_t(c3) << 24);
      n += wb::e4m3x4_signed(conv, wb::top_bytes4(b0, b1, b2, b3)) != want;
    }
    return n;
  });
  EXPECT_EQ(bad, 0u);
  // The non-finite patterns again with a conversion that writes NaN as 0xFF.
  uint64_t bad_ff = 0;
  for (uint32_t m = 0; m < (1u << 23); ++m)
    for (const uint32_t s : {0u, 0x80000000u}) {
      const float x[4] = {wb::as_float(s | 0x7F800000u | m), 2.0f, -3.0f, 0.0f};
      bad_ff += uint8_t(gpu_e4m3x4(x, 1.0f, 0xFF)) != nep::e4m3_from_float(x[0]);
    }
  EXPECT_EQ(bad_ff, 0u);
}

TEST(WireBits, E4m3ElementWithScaleFactors) {
  // Non-finite inputs of every payload with the multipliers the encoders use (448 / amax, 2^-se):
  // always the NaN code with the input's sign; finite inputs up to the amax: the codec's byte.
  const float muls[] = {1.0f, 448.0f / 3.0f, 0x1p126f, 0x1p127f, 0x1p-119f, 448.0f / 1e30f, 0.5f};
  for (const float mul : muls) {
    uint64_t bad = 0;
    for (uint32_t m = 0; m < (1u << 23); ++m)
      for (const uint32_t s : {0u, 0x80000000u}) {
        const float x[4] = {wb::as_float(s | 0x7F800000u | m), 1.0f, -0.0f,
                            wb::as_float(s | 0x7F800000u | (m ^ 0x400000u))};
        const uint32_t got = gpu_e4m3x4(x, mul, 0x7F);
        for (int i = 0; i < 4; ++i)
          bad += uint8_t(got >> (8 * i)) != nep::e4m3_from_float(x[i] * mul);
      }
    std::mt19937 rng(7);
    for (int i = 0; i < 1 << 20; ++i) {
      const float amax = 448.0f / mul;
      const float x[4] = {wb::as_float(uint32_t(rng())),
                          std::ldexp(float(rng()) / 4294967296.0f, -int(rng() % 160)), -amax,
                          amax * (float(rng()) / 4294967296.0f)};
      const uint32_t got = gpu_e4m3x4(x, mul, 0x7F);
      for (int k = 0; k < 4; ++k) {
        if (std::isfinite(x[k]) && std::fabs(x[k]) > amax) continue;  // never below a real amax
        bad += uint8_t(got >> (8 * k)) != nep::e4m3_from_float(x[k] * mul);
      }
    }
    EXPECT_EQ(bad, 0u) << "mul " << mul;
  }
}

TEST(WireBits, Bf16EqualsCodecForEveryFloat) {
  const uint64_t bad = over_all_bits([](uint64_t first, uint64_t last) {
    uint64_t n = 0;
    for (uint64_t u = first; u < last; ++u) {
      const uint32_t b = uint32_t(u), c = b ^ 0x80010000u;
      const uint32_t got = wb::bf16x2_bits(wb::as_float(b), wb::as_float(c));
      n += uint16_t(got) != nep::bf16_from_float(wb::as_float(b));
      n += uint16_t(got >> 16) != nep::bf16_from_float(wb::as_float(c));
    }
    return n;
  });
  EXPECT_EQ(bad, 0u);
}

TEST(WireBits, FiniteOrNanAmaxIsTheCodecsFiniteAmax) {
  // fmaxf over |finite_or_nan(x)| (what lane_amax8 and the shuffles compute) equals the bits of
  // finite_amax_bits for every float alone and for random blocks of special values.
  uint64_t bad = 0;
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 4099) {
    const float x = wb::as_float(uint32_t(u));
    const float m = std::fmax(0.0f, std::fabs(wb::finite_or_nan(x)));
    bad += wb::as_bits(m) != nep::finite_amax_bits(&x, 1);
  }
  EXPECT_EQ(bad, 0u);
}

// ---- whole rows, modelled on wire.cuh's encode8 -------------------------------------------------

// encode8 + store_wire8 of every lane of a row: lanes of 8 channels (zeros past the row end), the
// group's amax reduced over its lanes, then the FP8 / MXFP8 scale rules of wire.cuh.
std::vector<uint8_t> gpu_row(Wire wire, const std::vector<float>& x) {
  const int64_t H = int64_t(x.size());
  std::vector<uint8_t> out(static_cast<size_t>(nep::wire_row_bytes(wire, H)));
  if (wire == Wire::kBf16) {
    for (int64_t c = 0; c < H; c += 2) {
      const uint32_t w = wb::bf16x2_bits(x[size_t(c)], c + 1 < H ? x[size_t(c + 1)] : 0.0f);
      std::memcpy(&out[size_t(2 * c)], &w, size_t(std::min<int64_t>(2, H - c) * 2));
    }
    return out;
  }
  const int64_t group = wire == Wire::kFp8 ? 128 : 32;
  for (int64_t g0 = 0; g0 < H; g0 += group) {
    float lanes[16][8] = {};
    float amax = 0.0f;
    for (int l = 0; l < group / 8; ++l) {
      for (int i = 0; i < 8; ++i) {
        const int64_t c = g0 + 8 * l + i;
        lanes[l][i] = c < H ? x[size_t(c)] : 0.0f;
        amax = std::fmax(amax, std::fabs(wb::finite_or_nan(lanes[l][i])));
      }
    }
    float mul;
    if (wire == Wire::kFp8) {
      amax = std::fmax(amax, wb::as_float(nep::kFp8AmaxFloorBits));
      const float scale = amax / 448.0f;
      mul = 448.0f / amax;
      std::memcpy(&out[size_t(H + 4 * (g0 / group))], &scale, 4);
    } else {  // mx_shared_exp
      const int biased = int((wb::as_bits(amax) >> 23) & 0xFF);
      const int se = biased == 0 ? -127 : std::max(biased - 127 - 8, -127);
      mul = wb::as_float(uint32_t(127 - se) << 23);
      out[size_t(H + g0 / group)] = uint8_t(se + 127);
    }
    for (int l = 0; l < group / 8; ++l) {
      const uint32_t lo = gpu_e4m3x4(lanes[l], mul, 0x7F), hi = gpu_e4m3x4(lanes[l] + 4, mul, 0x7F);
      for (int i = 0; i < 8; ++i) {
        const int64_t c = g0 + 8 * l + i;
        if (c < H) out[size_t(c)] = uint8_t((i < 4 ? lo : hi) >> (8 * (i & 3)));
      }
    }
  }
  return out;
}

TEST(WireBits, RowsWithNonFiniteValuesEqualTheCodec) {
  const uint32_t specials[] = {0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u,
                               0xFFBFFFFFu, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu,
                               0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00800000u, 0x00000000u,
                               0x80000000u, 0x43E00000u, 0x43E80000u, 0x3B000000u, 0x3A800000u};
  std::mt19937 rng(11);
  for (const Wire wire : {Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
    for (const int64_t H : {int64_t(8), int64_t(40), int64_t(256), int64_t(300), int64_t(1024)}) {
      for (int trial = 0; trial < 200; ++trial) {
        std::vector<float> x(static_cast<size_t>(H));
        const int scale_exp = int(rng() % 200) - 120;  // rows from 2^-120 to 2^80
        for (auto& v : x) v = std::ldexp(float(int(rng() % 2001) - 1000) / 1000.0f, scale_exp);
        // A few specials anywhere; sometimes a whole group of them.
        const int n_special = int(rng() % 6);
        for (int k = 0; k < n_special; ++k)
          x[rng() % size_t(H)] = wb::as_float(specials[rng() % (sizeof specials / 4)]);
        if (trial % 10 == 0)
          for (int64_t c = 0; c < std::min<int64_t>(H, 32); ++c)
            x[size_t(c)] = wb::as_float(specials[rng() % 8]);
        std::vector<uint8_t> want(static_cast<size_t>(nep::wire_row_bytes(wire, H)));
        nep::encode_row(wire, x.data(), H, want.data());
        const std::vector<uint8_t> got = gpu_row(wire, x);
        ASSERT_EQ(got, want) << nep::wire_name(wire) << " hidden " << H << " trial " << trial;
      }
    }
  }
}

}  // namespace
