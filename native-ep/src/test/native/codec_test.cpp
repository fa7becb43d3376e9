// Wire codecs: scalar conversions (exhaustive e4m3, bf16 rounding), row formats against a float64
// reference, special values, partial blocks, and the C ABI entry points.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "codec.h"
#include "codec_kernels.h"
#include "nativeep/c_api.h"

using nep::Wire;

namespace {

// Value of an e4m3fn code by the spec's formula, in double (NaN for S.1111.111).
double e4m3_reference(uint8_t c) {
  const int sign = (c & 0x80) ? -1 : 1;
  const int exp = (c >> 3) & 0xF;
  const int man = c & 7;
  if ((c & 0x7F) == 0x7F) return std::nan("");
  if (exp == 0) return sign * man * std::ldexp(1.0, -9);
  return sign * (1.0 + man / 8.0) * std::ldexp(1.0, exp - 7);
}

// Spacing of e4m3 values at magnitude q (q <= 448).
double e4m3_ulp(double q) {
  if (q < std::ldexp(1.0, -6)) return std::ldexp(1.0, -9);
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(std::min(q, 448.0)))) - 3);
}

float read_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

// Rows whose blocks span many magnitudes: block b of 32 channels has values ~ 2^(e_b) with e_b in
// [-30, 30], random signs and mantissas, a few exact zeros.
std::vector<float> multi_scale_rows(std::mt19937_64& rng, int64_t rows, int64_t hidden) {
  std::uniform_int_distribution<int> exp_dist(-30, 30);
  std::uniform_real_distribution<double> mant(0.5, 1.0);
  std::bernoulli_distribution neg(0.5), zero(0.02);
  std::vector<float> x(static_cast<size_t>(rows * hidden));
  int e = 0;
  for (int64_t i = 0; i < rows * hidden; ++i) {
    if (i % 32 == 0) e = exp_dist(rng);
    const double v = std::ldexp(mant(rng) * (1 + (i % 7)), e);
    x[i] = zero(rng) ? 0.0f : static_cast<float>(neg(rng) ? -v : v);
  }
  return x;
}

std::vector<uint8_t> encode(Wire w, const std::vector<float>& x, int64_t rows, int64_t hidden) {
  const int64_t rb = nep::wire_row_bytes(w, hidden);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb), 0xAB);
  for (int64_t r = 0; r < rows; ++r)
    nep::encode_row(w, x.data() + r * hidden, hidden, out.data() + r * rb);
  return out;
}

std::vector<float> decode(Wire w, const std::vector<uint8_t>& in, int64_t rows, int64_t hidden) {
  const int64_t rb = nep::wire_row_bytes(w, hidden);
  std::vector<float> out(static_cast<size_t>(rows * hidden), std::nanf(""));
  for (int64_t r = 0; r < rows; ++r)
    nep::decode_row(w, in.data() + r * rb, hidden, out.data() + r * hidden);
  return out;
}

}  // namespace

TEST(E4m3, EveryCodeDecodesToTheSpecValueAndReencodesToItself) {
  int nan_codes = 0;
  for (int c = 0; c < 256; ++c) {
    const uint8_t code = static_cast<uint8_t>(c);
    const float v = nep::e4m3_to_float(code);
    const double ref = e4m3_reference(code);
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(v)) << "code " << c;
      EXPECT_EQ(nep::e4m3_from_float(v) & 0x7F, 0x7F) << "code " << c;
      ++nan_codes;
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), ref) << "code " << c;
    EXPECT_EQ(std::signbit(v), (c & 0x80) != 0) << "code " << c;
    EXPECT_EQ(nep::e4m3_from_float(v), code) << "code " << c;
  }
  EXPECT_EQ(nan_codes, 2);
  EXPECT_EQ(nep::e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(nep::e4m3_to_float(0x01), std::ldexp(1.0f, -9));
}

TEST(E4m3, RoundsToNearestEvenAtEveryMidpoint) {
  for (int c = 0; c < 0x7E; ++c) {
    const double lo = e4m3_reference(static_cast<uint8_t>(c));
    const double hi = e4m3_reference(static_cast<uint8_t>(c + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact in float
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(nep::e4m3_from_float(mid), even) << "midpoint above code " << c;
    EXPECT_EQ(nep::e4m3_from_float(std::nextafter(mid, 0.0f)), c) << "below midpoint " << c;
    EXPECT_EQ(nep::e4m3_from_float(std::nextafter(mid, 1000.0f)), c + 1) << "above midpoint " << c;
    EXPECT_EQ(nep::e4m3_from_float(-mid), 0x80 | even);
  }
}

TEST(E4m3, SaturatesFiniteAndMapsNonFiniteToNan) {
  EXPECT_EQ(nep::e4m3_from_float(448.0f), 0x7E);
  EXPECT_EQ(nep::e4m3_from_float(463.99f), 0x7E);
  EXPECT_EQ(nep::e4m3_from_float(464.0f), 0x7E);  // would round to 480 (NaN code) unsaturated
  EXPECT_EQ(nep::e4m3_from_float(1e30f), 0x7E);
  EXPECT_EQ(nep::e4m3_from_float(-1e30f), 0xFE);
  EXPECT_EQ(nep::e4m3_from_float(INFINITY) & 0x7F, 0x7F);
  EXPECT_EQ(nep::e4m3_from_float(-INFINITY) & 0x7F, 0x7F);
  EXPECT_EQ(nep::e4m3_from_float(std::nanf("")) & 0x7F, 0x7F);
  EXPECT_EQ(nep::e4m3_from_float(0.0f), 0x00);
  EXPECT_EQ(nep::e4m3_from_float(-0.0f), 0x80);
  EXPECT_EQ(nep::e4m3_from_float(std::ldexp(1.0f, -11)), 0x00);  // below half the smallest step
  EXPECT_EQ(nep::e4m3_from_float(1e-42f), 0x00);                 // float subnormal input
}

TEST(Bf16, RoundsToNearestEvenAgainstFloat64Reference) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F7FFFFFu);  // finite, non-negative
  for (int i = 0; i < 200000; ++i) {
    const float f = nep::bits_float(bits(rng) | (i % 2 ? 0x80000000u : 0u));
    const uint16_t h = nep::bf16_from_float(f);
    const uint32_t u = nep::float_bits(f);
    const double lo = nep::bf16_to_float(static_cast<uint16_t>(u >> 16));
    // The next bf16 up; past the largest finite bf16 that is 2^128 (which rounds to Inf).
    const uint16_t next = static_cast<uint16_t>((u >> 16) + 1);
    const double hi = (next & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128) : nep::bf16_to_float(next);
    const double df = f;
    const double dlo = std::fabs(df - lo), dhi = std::fabs(hi - df);
    uint16_t expect = static_cast<uint16_t>(u >> 16);
    if (dhi < dlo || (dhi == dlo && (expect & 1))) ++expect;
    ASSERT_EQ(h, expect) << "bits " << std::hex << u;
    const double back = nep::bf16_to_float(h);
    if (std::isfinite(back) && std::fabs(df) >= 1.2e-38) {
      ASSERT_LE(std::fabs(back - df), std::ldexp(std::fabs(df), -8)) << "bits " << std::hex << u;
    }
  }
}

TEST(Bf16, SpecialValues) {
  EXPECT_TRUE(std::isinf(nep::bf16_to_float(nep::bf16_from_float(INFINITY))));
  EXPECT_LT(nep::bf16_to_float(nep::bf16_from_float(-INFINITY)), 0.0f);
  // A signalling NaN whose payload sits in the low bits must stay NaN, not become Inf.
  EXPECT_TRUE(std::isnan(nep::bf16_to_float(nep::bf16_from_float(nep::bits_float(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(nep::bf16_to_float(nep::bf16_from_float(std::nanf("")))));
  EXPECT_TRUE(std::signbit(nep::bf16_to_float(nep::bf16_from_float(-0.0f))));
  EXPECT_TRUE(std::isinf(nep::bf16_to_float(nep::bf16_from_float(3.4e38f))));  // rounds past max
  EXPECT_EQ(nep::bf16_to_float(nep::bf16_from_float(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie
}

TEST(WireRowBytes, MatchesTheDocumentedLayout) {
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_FP32, 7168), 4 * 7168);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_BF16, 7168), 2 * 7168);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_FP8, 7168), 7168 + 4 * 56);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_FP8, 130), 130 + 4 * 2);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_MXFP8, 7168), 7168 + 224);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_MXFP8, 33), 33 + 2);
  EXPECT_EQ(nep_wire_row_bytes(NEP_WIRE_MXFP8, 0), -1);
  EXPECT_EQ(nep_wire_row_bytes(4, 128), -1);
  EXPECT_EQ(nep_wire_row_bytes(-1, 128), -1);
}

// FP8: every element within half an e4m3 step (at its scaled magnitude) of the input, scale =
// amax / 448, the block maximum lands exactly on code +-448; the partial last block has its own
// scale.
TEST(Fp8Rows, ErrorBoundScaleAndSaturation) {
  std::mt19937_64 rng(11);
  for (int64_t hidden : {128, 7168, 300, 1, 129}) {
    const int64_t rows = 16;
    const auto x = multi_scale_rows(rng, rows, hidden);
    const auto wire = encode(Wire::kFp8, x, rows, hidden);
    const auto y = decode(Wire::kFp8, wire, rows, hidden);
    const int64_t rb = nep::wire_row_bytes(Wire::kFp8, hidden);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b0 = 0, b = 0; b0 < hidden; b0 += 128, ++b) {
        const int64_t n = std::min<int64_t>(128, hidden - b0);
        double amax = 0;
        int64_t arg = b0;
        for (int64_t i = b0; i < b0 + n; ++i) {
          if (std::fabs(x[r * hidden + i]) > amax) {
            amax = std::fabs(x[r * hidden + i]);
            arg = i;
          }
        }
        const float scale = read_f32(wire.data() + r * rb + hidden + 4 * b);
        if (amax == 0) {
          for (int64_t i = b0; i < b0 + n; ++i) EXPECT_EQ(y[r * hidden + i], 0.0f);
          continue;
        }
        EXPECT_EQ(scale, static_cast<float>(amax) / 448.0f) << "row " << r << " block " << b;
        EXPECT_EQ(wire[r * rb + arg] & 0x7F, 0x7E) << "block max must saturate to 448";
        for (int64_t i = b0; i < b0 + n; ++i) {
          const double xv = x[r * hidden + i];
          const double q = std::fabs(xv) / scale;
          const double bound =
              0.5 * e4m3_ulp(q) * scale * (1 + 1e-6) + std::ldexp(std::fabs(xv), -22);
          ASSERT_LE(std::fabs(y[r * hidden + i] - xv), bound)
              << "hidden " << hidden << " row " << r << " channel " << i << " x " << xv;
        }
      }
    }
  }
}

// MXFP8: scale byte = floor(log2 amax) - 8 + 127; elements within half an e4m3 step times
// 2^shared_exp, or exactly +-448 * 2^shared_exp where x / 2^shared_exp exceeds 448.
TEST(Mxfp8Rows, ErrorBoundScaleAndClipping) {
  std::mt19937_64 rng(13);
  int clipped = 0;
  for (int64_t hidden : {32, 7168, 33, 100, 1}) {
    const int64_t rows = 16;
    auto x = multi_scale_rows(rng, rows, hidden);
    x[0] = 1.9f * 64.0f;  // block 0 of row 0: amax mantissa 1.9 makes x / 2^e = 486 > 448
    const auto wire = encode(Wire::kMxfp8, x, rows, hidden);
    const auto y = decode(Wire::kMxfp8, wire, rows, hidden);
    const int64_t rb = nep::wire_row_bytes(Wire::kMxfp8, hidden);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b0 = 0, b = 0; b0 < hidden; b0 += 32, ++b) {
        const int64_t n = std::min<int64_t>(32, hidden - b0);
        double amax = 0;
        for (int64_t i = b0; i < b0 + n; ++i)
          amax = std::max(amax, std::fabs(static_cast<double>(x[r * hidden + i])));
        const int scale_byte = wire[r * rb + hidden + b];
        if (amax == 0) {
          EXPECT_EQ(scale_byte, 0);
          for (int64_t i = b0; i < b0 + n; ++i) EXPECT_EQ(y[r * hidden + i], 0.0f);
          continue;
        }
        int e2;
        std::frexp(amax, &e2);  // amax = m * 2^e2, m in [0.5, 1): floor(log2 amax) = e2 - 1
        const int shared = std::clamp(e2 - 1 - 8, -127, 127);
        ASSERT_EQ(scale_byte, shared + 127) << "row " << r << " block " << b;
        const double s = std::ldexp(1.0, shared);
        for (int64_t i = b0; i < b0 + n; ++i) {
          const double xv = x[r * hidden + i];
          const double q = std::fabs(xv) / s;
          if (q > 448) {
            ASSERT_EQ(std::fabs(y[r * hidden + i]), 448.0 * s);
            ASSERT_EQ(std::signbit(y[r * hidden + i]), std::signbit(xv));
            ++clipped;
            continue;
          }
          ASSERT_LE(std::fabs(y[r * hidden + i] - xv), 0.5 * e4m3_ulp(q) * s)
              << "hidden " << hidden << " row " << r << " channel " << i << " x " << xv;
        }
      }
    }
  }
  EXPECT_GE(clipped, 1);
}

// NaN and +-Inf elements decode as NaN; amax ignores them, so every other element decodes
// exactly as it would with zeros in their place.
TEST(Fp8Rows, NonFiniteElementsBecomeNanAndSpareTheirBlock) {
  for (Wire w : {Wire::kFp8, Wire::kMxfp8}) {
    const int64_t hidden = 256;
    std::vector<float> x(hidden);
    for (int64_t i = 0; i < hidden; ++i) x[i] = 0.01f * static_cast<float>(i % 50) - 0.2f;
    std::vector<float> clean = x;
    for (int64_t i : {5, 7, 9, 200}) clean[i] = 0.0f;
    x[5] = std::nanf("");
    x[7] = INFINITY;
    x[9] = -INFINITY;
    x[200] = -std::nanf("");
    const auto y = decode(w, encode(w, x, 1, hidden), 1, hidden);
    const auto want = decode(w, encode(w, clean, 1, hidden), 1, hidden);
    for (int64_t i = 0; i < hidden; ++i) {
      if (i == 5 || i == 7 || i == 9 || i == 200) {
        EXPECT_TRUE(std::isnan(y[i])) << nep::wire_name(w) << " channel " << i;
      } else {
        EXPECT_EQ(y[i], want[i]) << nep::wire_name(w) << " channel " << i;
        EXPECT_NEAR(y[i], x[i], 0.04) << nep::wire_name(w) << " channel " << i;
      }
    }
  }
}

TEST(Fp8Rows, ZeroAndTinyBlocksDecodeExactlyOrClose) {
  for (Wire w : {Wire::kFp8, Wire::kMxfp8}) {
    const int64_t hidden = 160;
    std::vector<float> x(hidden, 0.0f);
    x[3] = -0.0f;
    for (int64_t i = 128; i < hidden; ++i)
      x[i] = 1e-40f * static_cast<float>(i - 127);  // subnormal
    const auto y = decode(w, encode(w, x, 1, hidden), 1, hidden);
    for (int64_t i = 0; i < 128; ++i) EXPECT_EQ(y[i], 0.0f) << nep::wire_name(w) << " " << i;
    for (int64_t i = 128; i < hidden; ++i) {
      ASSERT_TRUE(std::isfinite(y[i]));
      EXPECT_NEAR(y[i], x[i], 0.07 * std::fabs(x[i]) + std::ldexp(1.0, -136))
          << nep::wire_name(w) << " " << i;
    }
  }
}

TEST(Mxfp8Rows, NanScaleByteMakesTheBlockNan) {
  const int64_t hidden = 64;
  std::vector<float> x(hidden, 1.0f);
  auto wire = encode(Wire::kMxfp8, x, 1, hidden);
  wire[hidden + 1] = 0xFF;
  const auto y = decode(Wire::kMxfp8, wire, 1, hidden);
  for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(y[i], 1.0f);
  for (int64_t i = 32; i < 64; ++i) EXPECT_TRUE(std::isnan(y[i]));
}

TEST(WireRows, Fp32IsBitExactAndBf16ExactDataSurvivesBf16) {
  std::mt19937_64 rng(3);
  const int64_t hidden = 333;
  auto x = multi_scale_rows(rng, 4, hidden);
  x[1] = std::nanf("");
  const auto y32 = decode(Wire::kFp32, encode(Wire::kFp32, x, 4, hidden), 4, hidden);
  EXPECT_EQ(std::memcmp(x.data(), y32.data(), x.size() * 4), 0);
  for (float& v : x) v = nep::bf16_to_float(nep::bf16_from_float(v));
  const auto y16 = decode(Wire::kBf16, encode(Wire::kBf16, x, 4, hidden), 4, hidden);
  EXPECT_EQ(std::memcmp(x.data(), y16.data(), x.size() * 4), 0);
}

TEST(WireRows, DecodeAddAccumulates) {
  std::mt19937_64 rng(5);
  const int64_t hidden = 200;
  for (Wire w : {Wire::kFp32, Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
    const auto x = multi_scale_rows(rng, 1, hidden);
    const auto enc = encode(w, x, 1, hidden);
    const auto plain = decode(w, enc, 1, hidden);
    std::vector<float> acc(hidden);
    for (int64_t i = 0; i < hidden; ++i) acc[i] = static_cast<float>(i);
    nep::decode_add_row(w, enc.data(), hidden, acc.data());
    for (int64_t i = 0; i < hidden; ++i)
      ASSERT_EQ(acc[i], static_cast<float>(i) + plain[i]) << nep::wire_name(w);
  }
}

// The row loops (AVX2 on CPUs that have it, scalar otherwise) against the scalar conversions of
// codec.h applied element by element: bytes and float bits must be identical, for every e4m3
// code, special values, subnormals, rounding midpoints and partial blocks.
uint32_t bits_of(float f) { return nep::float_bits(f); }

TEST(WireRows, RowLoopsMatchTheScalarConversionsBitForBit) {
  std::mt19937_64 rng(11);
  for (int64_t hidden : {7168, 300, 129, 33, 7, 1}) {
    const int64_t rows = 3;
    auto x = multi_scale_rows(rng, rows, hidden);
    std::uniform_int_distribution<uint32_t> any_bits;
    for (int64_t i = 0; i < rows * hidden; ++i) {
      switch (i % 11) {
        case 3: x[i] = nep::bits_float(any_bits(rng)); break;  // anything, NaN included
        case 5: x[i] = nep::bits_float(any_bits(rng) & 0x807FFFFFu); break;  // subnormals
        case 9: x[i] = (i % 2) ? INFINITY : -0.0f; break;
        default: break;
      }
    }
    // Row 0: every 32-channel block starts with 448 (so both scales are exactly 1) and the rest
    // are exact midpoints between neighbouring e4m3 values, where round-to-nearest-even decides.
    for (int64_t i = 0; i < hidden; ++i) {
      if (i % 32 == 0) {
        x[i] = 448.0f;
        continue;
      }
      const uint8_t c = static_cast<uint8_t>(any_bits(rng) % 0x7E);
      const float mid = static_cast<float>(
          (e4m3_reference(c) + e4m3_reference(static_cast<uint8_t>(c + 1))) / 2.0);
      x[i] = (any_bits(rng) & 1) ? -mid : mid;
    }
    // Encode.
    for (Wire w : {Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
      const auto enc = encode(w, x, rows, hidden);
      const int64_t rb = nep::wire_row_bytes(w, hidden);
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x.data() + r * hidden;
        std::vector<uint8_t> ref(static_cast<size_t>(rb));
        if (w == Wire::kBf16) {
          for (int64_t i = 0; i < hidden; ++i) {
            const uint16_t h = nep::bf16_from_float(xr[i]);
            std::memcpy(&ref[2 * i], &h, 2);
          }
        } else {
          const int64_t block = w == Wire::kFp8 ? nep::kFp8BlockSize : nep::kMxBlockSize;
          for (int64_t b = 0, start = 0; start < hidden; ++b, start += block) {
            const int64_t n = std::min(block, hidden - start);
            uint32_t amax = 0;
            for (int64_t i = 0; i < n; ++i) {
              const uint32_t a = bits_of(xr[start + i]) & 0x7FFFFFFFu;
              if (a < 0x7F800000u) amax = std::max(amax, a);
            }
            if (w == Wire::kFp8) {
              const float am = nep::bits_float(std::max(amax, (9u << 23) | 0x600000u));
              const float inv = 448.0f / am, scale = am / 448.0f;
              for (int64_t i = 0; i < n; ++i)
                ref[start + i] = nep::e4m3_from_float(xr[start + i] * inv);
              std::memcpy(&ref[hidden + 4 * b], &scale, 4);
            } else {
              const int32_t e = std::clamp(static_cast<int32_t>(amax >> 23) - 135, -127, 127);
              const int32_t half = -e / 2;
              const float f1 = nep::pow2f(half), f2 = nep::pow2f(-e - half);
              for (int64_t i = 0; i < n; ++i)
                ref[start + i] = nep::e4m3_from_float(xr[start + i] * f1 * f2);
              ref[hidden + b] = static_cast<uint8_t>(e + 127);
            }
          }
        }
        ASSERT_EQ(std::memcmp(ref.data(), enc.data() + r * rb, static_cast<size_t>(rb)), 0)
            << nep::wire_name(w) << " hidden " << hidden << " row " << r;
      }
    }
    // Decode and decode-add of arbitrary wire bytes (every code; scales random, 0xFF included).
    for (Wire w : {Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
      const int64_t rb = nep::wire_row_bytes(w, hidden);
      std::vector<uint8_t> in(static_cast<size_t>(rb));
      for (int64_t i = 0; i < rb; ++i)
        in[i] = static_cast<uint8_t>((i * 37 + any_bits(rng)) & 0xFF);
      if (w == Wire::kFp8) {
        for (int64_t b = 0; hidden + 4 * b < rb; ++b) {
          const float s =
              std::ldexp(static_cast<float>(1 + b % 5) / 3.0f, static_cast<int>(b % 40) - 20);
          std::memcpy(&in[hidden + 4 * b], &s, 4);
        }
      }
      for (int add = 0; add < 2; ++add) {
        std::vector<float> got(static_cast<size_t>(hidden)), want(static_cast<size_t>(hidden));
        for (int64_t i = 0; i < hidden; ++i) got[i] = want[i] = add ? x[i] : 0.0f;
        if (add) {
          nep::decode_add_row(w, in.data(), hidden, got.data());
        } else {
          nep::decode_row(w, in.data(), hidden, got.data());
        }
        for (int64_t i = 0; i < hidden; ++i) {
          float v;
          if (w == Wire::kBf16) {
            uint16_t h;
            std::memcpy(&h, &in[2 * i], 2);
            v = nep::bf16_to_float(h);
          } else if (w == Wire::kFp8) {
            v = nep::e4m3_to_float(in[i]) * read_f32(&in[hidden + 4 * (i / 128)]);
          } else {
            const uint8_t sb = in[hidden + i / 32];
            const int32_t e = static_cast<int32_t>(sb) - 127, half = e / 2;
            const float f1 = sb == 0xFF ? nep::bits_float(0x7FC00000u) : nep::pow2f(half);
            v = nep::e4m3_to_float(in[i]) * f1 * nep::pow2f(e - half);
          }
          if (add) {
            want[i] += v;
          } else {
            want[i] = v;
          }
          ASSERT_EQ(bits_of(got[i]), bits_of(want[i]))
              << nep::wire_name(w) << (add ? " add" : "") << " hidden " << hidden << " i " << i;
        }
      }
    }
  }
}

// Every instruction set this CPU has (scalar, AVX2, AVX-512) against the scalar loops: the same
// bytes from every encoder and the same float bits from every decoder, on rows with special
// values, subnormals, rounding midpoints, NaN codes, 0xFF scale bytes and every partial-vector
// and partial-block length.
TEST(WireRows, EveryInstructionSetMatchesTheScalarLoopsBitForBit) {
  using nep::CodecIsa;
  std::vector<CodecIsa> sets;
  for (CodecIsa isa : {CodecIsa::kAvx2, CodecIsa::kAvx512}) {
    if (nep::codec_isa_supported(isa)) sets.push_back(isa);
  }
  std::printf("codec: row loops use %s; comparing %zu vector set(s) with the scalar loops\n",
              nep::codec_isa_name(nep::codec_isa()), sets.size());
  std::mt19937_64 rng(23);
  std::uniform_int_distribution<uint32_t> any_bits;
  // Rows with NaN and infinities, and rows without (the vector loops have faster paths for
  // blocks that are all finite).
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t hidden :
         {7168, 4096, 300, 160, 129, 128, 127, 100, 64, 48, 33, 32, 31, 17, 16, 15, 8, 7, 1}) {
      const bool finite = pass == 1;
      const int64_t rows = 4;
      auto x = multi_scale_rows(rng, rows, hidden);
      for (int64_t i = 0; i < rows * hidden; ++i) {
        switch (any_bits(rng) % (finite ? 29 : 13)) {
          case 0: {  // anything (NaN too, unless finite)
            uint32_t b = any_bits(rng);
            if (finite && (b & 0x7F800000u) == 0x7F800000u) b &= 0xFF7FFFFFu;
            x[i] = nep::bits_float(b);
            break;
          }
          case 1: x[i] = nep::bits_float(any_bits(rng) & 0x807FFFFFu); break;  // subnormal
          case 2:
            if (finite) {
              x[i] = (i % 2) ? -3.4e38f : 3.4e38f;  // near the float maximum
            } else {
              x[i] = (i % 2) ? -INFINITY : INFINITY;
            }
            break;
          case 3: x[i] = (i % 2) ? -0.0f : 0.0f; break;
          case 4: {  // e4m3 midpoints and bf16 ties at the block scale of 1
            const uint8_t c = static_cast<uint8_t>(any_bits(rng) % 0x7E);
            x[i] = static_cast<float>(
                (e4m3_reference(c) + e4m3_reference(static_cast<uint8_t>(c + 1))) / 2.0);
            break;
          }
          case 5: {  // bf16 tie
            uint32_t b = (any_bits(rng) & 0xFFFF0000u) | 0x8000u;
            if (finite && (b & 0x7F800000u) == 0x7F800000u) b &= 0xFF7FFFFFu;
            x[i] = nep::bits_float(b);
            break;
          }
          default: break;
        }
      }
      if (hidden >= 2) x[1] = 448.0f;  // row 0 keeps a block scale of exactly 1 in its first block
      for (Wire w : {Wire::kFp32, Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
        const int64_t rb = nep::wire_row_bytes(w, hidden);
        std::vector<uint8_t> want(static_cast<size_t>(rows * rb), 0xCD);
        for (int64_t r = 0; r < rows; ++r) {
          nep::encode_row_isa(CodecIsa::kScalar, w, x.data() + r * hidden, hidden,
                              want.data() + r * rb);
        }
        // Arbitrary wire bytes: every code, random fp32 scales (some non-finite), 0xFF E8M0 bytes.
        std::vector<uint8_t> wire_in(static_cast<size_t>(rows * rb));
        for (auto& b : wire_in) b = static_cast<uint8_t>(any_bits(rng));
        for (int64_t r = 0; r < rows && w == Wire::kFp8; ++r) {
          for (int64_t b = 0; hidden + 4 * b < rb; ++b) {
            // Some random bits (NaN, infinity, subnormal), some near the float maximum (scale * 2^8
            // would overflow: the vector loops must not fold 2^8 into such a scale), some tiny
            // (products below 2^-126), the rest ordinary.
            const float s = (b % 7 == 6)   ? nep::bits_float(any_bits(rng))
                            : (b % 7 == 5) ? std::ldexp(1.0f + static_cast<float>(b % 5) / 3.0f,
                                                        120 + static_cast<int>(b % 8))
                            : (b % 7 == 4) ? std::ldexp(1.0f + static_cast<float>(b % 5) / 3.0f,
                                                        -120 - static_cast<int>(b % 8))
                                           : std::ldexp(1.0f + static_cast<float>(b % 5) / 3.0f,
                                                        static_cast<int>(any_bits(rng) % 60) - 30);
            std::memcpy(&wire_in[r * rb + hidden + 4 * b], &s, 4);
          }
        }
        for (int64_t r = 0; r < rows && w == Wire::kMxfp8; ++r) {
          wire_in[r * rb + hidden] = 0xFF;
        }
        std::vector<float> dec_want(static_cast<size_t>(rows * hidden));
        std::vector<float> add_want(x);
        for (int64_t r = 0; r < rows; ++r) {
          nep::decode_row_isa(CodecIsa::kScalar, w, wire_in.data() + r * rb, hidden,
                              dec_want.data() + r * hidden);
          nep::decode_add_row_isa(CodecIsa::kScalar, w, wire_in.data() + r * rb, hidden,
                                  add_want.data() + r * hidden);
        }
        for (CodecIsa isa : sets) {
          const std::string what = std::string(nep::codec_isa_name(isa)) + " " + nep::wire_name(w) +
                                   " hidden " + std::to_string(hidden) + (finite ? " finite" : "");
          std::vector<uint8_t> got(static_cast<size_t>(rows * rb), 0xCD);
          for (int64_t r = 0; r < rows; ++r) {
            nep::encode_row_isa(isa, w, x.data() + r * hidden, hidden, got.data() + r * rb);
          }
          for (int64_t i = 0; i < rows * rb; ++i) {
            ASSERT_EQ(got[i], want[i]) << what << " encode byte " << i;
          }
          std::vector<float> dec(static_cast<size_t>(rows * hidden), std::nanf("7"));
          std::vector<float> add(x);
          for (int64_t r = 0; r < rows; ++r) {
            nep::decode_row_isa(isa, w, wire_in.data() + r * rb, hidden, dec.data() + r * hidden);
            nep::decode_add_row_isa(isa, w, wire_in.data() + r * rb, hidden,
                                    add.data() + r * hidden);
          }
          for (int64_t i = 0; i < rows * hidden; ++i) {
            ASSERT_EQ(bits_of(dec[i]), bits_of(dec_want[i])) << what << " decode element " << i;
            ASSERT_EQ(bits_of(add[i]), bits_of(add_want[i])) << what << " decode-add element " << i;
          }
          // Streaming stores: into a 64-byte-aligned buffer (full vectors stream) and one float
          // off alignment (every store takes the ordinary path).
          for (int64_t offset : {0, 1}) {
            std::vector<float> stream_out(static_cast<size_t>(rows * hidden + 48), std::nanf("9"));
            float* aligned = stream_out.data();
            while ((reinterpret_cast<uintptr_t>(aligned) & 63u) != 0) ++aligned;
            float* base = aligned + offset;
            for (int64_t r = 0; r < rows; ++r) {
              nep::decode_row_stream_isa(isa, w, wire_in.data() + r * rb, hidden,
                                         base + r * hidden);
            }
            for (int64_t i = 0; i < rows * hidden; ++i) {
              ASSERT_EQ(bits_of(base[i]), bits_of(dec_want[i]))
                  << what << " stream offset " << offset << " element " << i;
            }
            ASSERT_TRUE(std::isnan(base[rows * hidden])) << what << " wrote past the rows";
          }
        }
      }
    }
}

// Masked tails must not touch memory past the row: encode and decode into buffers whose next
// bytes are sentinels.
TEST(WireRows, RowLoopsWriteNothingPastTheRow) {
  std::mt19937_64 rng(5);
  for (int64_t hidden : {1, 7, 15, 17, 33, 129, 300}) {
    auto x = multi_scale_rows(rng, 1, hidden);
    for (Wire w : {Wire::kFp32, Wire::kBf16, Wire::kFp8, Wire::kMxfp8}) {
      const int64_t rb = nep::wire_row_bytes(w, hidden);
      std::vector<uint8_t> enc(static_cast<size_t>(rb + 64), 0x5A);
      nep::encode_row(w, x.data(), hidden, enc.data());
      for (int64_t i = rb; i < rb + 64; ++i)
        ASSERT_EQ(enc[i], 0x5A) << nep::wire_name(w) << " hidden " << hidden;
      std::vector<float> dec(static_cast<size_t>(hidden + 16), 123.0f);
      nep::decode_row(w, enc.data(), hidden, dec.data());
      nep::decode_add_row(w, enc.data(), hidden, dec.data());
      nep::decode_row_stream(w, enc.data(), hidden, dec.data());
      for (int64_t i = hidden; i < hidden + 16; ++i)
        ASSERT_EQ(dec[i], 123.0f) << nep::wire_name(w) << " hidden " << hidden;
    }
  }
}

TEST(WireRowsCApi, EncodeDecodeAndArgumentErrors) {
  const int64_t hidden = 256, rows = 3;
  std::vector<float> x(rows * hidden), y(rows * hidden, std::nanf(""));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) - 8.0f;
  std::vector<uint8_t> buf(rows * nep_wire_row_bytes(NEP_WIRE_BF16, hidden));
  char err[256];
  auto addr = [](const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); };
  ASSERT_EQ(nep_encode_rows(NEP_WIRE_BF16, addr(x.data()), rows, hidden, addr(buf.data()), err,
                            sizeof err),
            NEP_OK)
      << err;
  ASSERT_EQ(nep_decode_rows(NEP_WIRE_BF16, addr(buf.data()), rows, hidden, addr(y.data()), err,
                            sizeof err),
            NEP_OK)
      << err;
  EXPECT_EQ(x, y);

  EXPECT_EQ(nep_encode_rows(9, addr(x.data()), rows, hidden, addr(buf.data()), err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("wire = 9"), std::string::npos) << err;
  EXPECT_EQ(
      nep_encode_rows(NEP_WIRE_BF16, addr(x.data()), rows, 0, addr(buf.data()), err, sizeof err),
      NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("hidden = 0"), std::string::npos) << err;
  EXPECT_EQ(nep_encode_rows(NEP_WIRE_BF16, 0, rows, hidden, addr(buf.data()), err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "x is null");
  EXPECT_EQ(
      nep_decode_rows(NEP_WIRE_BF16, addr(buf.data()), -2, hidden, addr(y.data()), err, sizeof err),
      NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("rows = -2"), std::string::npos) << err;
  EXPECT_EQ(nep_decode_rows(NEP_WIRE_BF16, addr(buf.data()), rows, hidden, 0, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "out is null");
  // nothing to do
  EXPECT_EQ(nep_decode_rows(NEP_WIRE_BF16, 0, 0, hidden, 0, err, sizeof err), NEP_OK);
  // A short buffer truncates and stays NUL-terminated; a null buffer is fine.
  char tiny[6];
  EXPECT_EQ(nep_encode_rows(9, 0, 0, hidden, 0, tiny, sizeof tiny), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(tiny), "wire ");
  EXPECT_EQ(nep_encode_rows(9, 0, 0, hidden, 0, nullptr, 0), NEP_ERR_INVALID_ARGUMENT);
}
