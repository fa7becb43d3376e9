// Quantisers of the grouped FP8 GEMMs (nep_gemm_quantize_*): byte-equal to the wire codec where
// the formats coincide, each element the nearest e4m3 value of x / scale (saturated), scales by
// the formats' rules, transposes, the K-grouped layout's padding, and refused arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gemm_test_util.h"
#include "nativeep/c_api.h"
#include "nativeep/gemm_api.h"

using namespace gemmtest;

namespace {

const int32_t kFormats[] = {NEP_GEMM_FP8_BLOCK, NEP_GEMM_MXFP8};

int32_t wire_of(int32_t format) {
  return format == NEP_GEMM_FP8_BLOCK ? NEP_WIRE_FP8 : NEP_WIRE_MXFP8;
}

struct Quantised {
  std::vector<uint8_t> q, s;
};

Quantised quantize_rows(int32_t format, const std::vector<float>& x, int64_t m, int64_t k) {
  Quantised out;
  out.q.assign(static_cast<size_t>(m * k), 0xEE);
  out.s.assign(static_cast<size_t>(m * nep_gemm_row_scale_bytes(format, k)), 0xEE);
  char err[256];
  EXPECT_EQ(NEP_OK, nep_gemm_quantize_rows(format, addr(x.data()), m, k, addr(out.q.data()),
                                           addr(out.s.data()), err, sizeof err))
      << err;
  return out;
}

// Each element within half an e4m3 step of x / scale (saturated at 448), scale by the format.
void expect_nearest(int32_t format, const float* x, const uint8_t* q, int64_t count, double scale,
                    const std::string& where) {
  for (int64_t i = 0; i < count; ++i) {
    const double v = std::clamp(double(x[i]) / scale, -448.0, 448.0);
    const double d = e4m3_value(q[i]);
    const double a = std::fabs(v);
    const double step = a < std::ldexp(1.0, -6)
                            ? std::ldexp(1.0, -9)
                            : std::ldexp(1.0, int(std::floor(std::log2(a))) - 3);
    // x * (448 / amax) differs from x / scale by one float rounding before the e4m3 rounding.
    ASSERT_LE(std::fabs(d - v), step / 2 * (1 + 1e-6) + 1e-30)
        << where << " element " << i << " x=" << x[i] << " code=" << int(q[i])
        << " format=" << format;
  }
}

// The scale the format's rule gives for a block of amax (finite, |x| max).
double expected_scale(int32_t format, float amax) {
  if (format == NEP_GEMM_FP8_BLOCK) return std::max(amax, 448.0f * std::ldexp(1.0f, -126)) / 448.0f;
  int e = amax == 0.0f ? -127 : std::ilogb(amax) - 8;
  if (!(amax >= std::ldexp(1.0f, -126))) e = -127;  // zero or subnormal amax
  return std::ldexp(1.0, std::clamp(e, -127, 127));
}

TEST(GemmQuantize, RowsAreTheWireBytes) {
  for (int32_t format : kFormats) {
    for (int64_t k : {1, 5, 31, 32, 33, 127, 128, 129, 200, 300, 2048}) {
      const int64_t m = 7;
      auto x = random_rows(m, k, uint32_t(k * 31 + format), 0.2);
      if (k > 3) x[3] = std::nanf(""), x[k + 1] = INFINITY, x[2 * k + 2] = -INFINITY;
      const Quantised got = quantize_rows(format, x, m, k);
      const int64_t row_bytes = nep_wire_row_bytes(wire_of(format), k);
      std::vector<uint8_t> wire(static_cast<size_t>(m * row_bytes));
      char err[256];
      ASSERT_EQ(NEP_OK, nep_encode_rows(wire_of(format), addr(x.data()), m, k, addr(wire.data()),
                                        err, sizeof err));
      const int64_t sb = nep_gemm_row_scale_bytes(format, k);
      ASSERT_EQ(row_bytes, k + sb);
      for (int64_t r = 0; r < m; ++r) {
        ASSERT_EQ(0, std::memcmp(got.q.data() + r * k, wire.data() + r * row_bytes, k))
            << "k=" << k;
        ASSERT_EQ(0, std::memcmp(got.s.data() + r * sb, wire.data() + r * row_bytes + k, sb))
            << "k=" << k;
      }
    }
  }
}

TEST(GemmQuantize, RowsFollowTheScaleRuleAndRoundToNearest) {
  for (int32_t format : kFormats) {
    const int64_t m = 9, k = 300, blk = block_of(format);
    const auto x = random_rows(m, k, 7u + format, 0.2);
    const Quantised got = quantize_rows(format, x, m, k);
    const int64_t sb = nep_gemm_row_scale_bytes(format, k);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t b = 0; b * blk < k; ++b) {
        const int64_t len = std::min(blk, k - b * blk);
        float amax = 0;
        for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[r * k + b * blk + i]));
        const double scale = row_scale(format, got.s.data() + r * sb, b);
        ASSERT_EQ(expected_scale(format, amax), scale) << "row " << r << " block " << b;
        expect_nearest(format, x.data() + r * k + b * blk, got.q.data() + r * k + b * blk, len,
                       scale, "row " + std::to_string(r));
      }
  }
}

TEST(GemmQuantize, ZeroBlocksDecodeToZeroAndNonFiniteToNan) {
  for (int32_t format : kFormats) {
    std::vector<float> x(256, 0.0f);
    x[200] = std::nanf("");
    x[201] = -INFINITY;
    x[202] = 3.0f;
    const Quantised got = quantize_rows(format, x, 1, 256);
    for (int i = 0; i < 128; ++i) EXPECT_EQ(0, got.q[i]) << i;
    EXPECT_EQ(0x7F, got.q[200] & 0x7F);
    EXPECT_EQ(0xFF, got.q[201]);  // sign kept
    const auto deq = dequant_rows(format, got.q.data(), 256, got.s.data(), 0, 1, 256);
    EXPECT_EQ(0.0, deq[5]);
    EXPECT_NEAR(3.0, deq[202], 3.0 / 16);
  }
}

// Weights whose every 1 x 128 row segment holds the block's amax quantise like rows (FP8_BLOCK),
// and MXFP8 weights are rows: the weight quantiser shares the wire's bytes.
TEST(GemmQuantize, WeightsShareTheWireBytes) {
  for (int32_t format : kFormats) {
    const int64_t g = 2, n = 150, k = 260;
    auto w = random_rows(g * n, k, 11u + format);
    for (float& v : w) v = std::clamp(v, -5.0f, 5.0f);
    for (int64_t r = 0; r < g * n; ++r)
      for (int64_t k0 = 0; k0 < k; k0 += 128) w[r * k + k0] = ((r + k0) % 3 == 0 ? -5.5f : 5.5f);
    std::vector<uint8_t> q(static_cast<size_t>(g * n * k));
    std::vector<uint8_t> s(static_cast<size_t>(nep_gemm_weight_scale_bytes(format, g, n, k, 0)));
    char err[256];
    ASSERT_EQ(NEP_OK, nep_gemm_quantize_weights(format, addr(w.data()), g, n, k, 0, addr(q.data()),
                                                addr(s.data()), err, sizeof err))
        << err;
    const Quantised rows = quantize_rows(format, w, g * n, k);
    if (format == NEP_GEMM_FP8_BLOCK) {
      // Every 5.5 amax in every segment keeps the block scale equal to the row scales.
      EXPECT_EQ(rows.q, q);
      const auto dw = dequant_weight(format, q.data(), s.data() + 0, n, k);
      for (int64_t i = 0; i < n * k; ++i) {
        const float f = w[i];
        ASSERT_NEAR(f, dw[i], std::fabs(f) / 15 + 5.5 / 448 / 64) << i;
      }
    } else {
      EXPECT_EQ(rows.q, q);
      EXPECT_EQ(rows.s, s);
    }
  }
}

TEST(GemmQuantize, WeightBlocksFollowTheScaleRule) {
  const int64_t g = 3, n = 200, k = 130;
  auto w = random_rows(g * n, k, 5u);
  std::fill(w.begin() + n * k, w.begin() + 2 * n * k, 0.0f);  // group 1 all zeros
  std::vector<uint8_t> q(static_cast<size_t>(g * n * k));
  std::vector<uint8_t> s(
      static_cast<size_t>(nep_gemm_weight_scale_bytes(NEP_GEMM_FP8_BLOCK, g, n, k, 0)));
  ASSERT_EQ(static_cast<size_t>(g * 2 * 2 * 4), s.size());
  char err[256];
  ASSERT_EQ(NEP_OK, nep_gemm_quantize_weights(NEP_GEMM_FP8_BLOCK, addr(w.data()), g, n, k, 0,
                                              addr(q.data()), addr(s.data()), err, sizeof err));
  for (int64_t gi = 0; gi < g; ++gi)
    for (int64_t bn = 0; bn < 2; ++bn)
      for (int64_t bk = 0; bk < 2; ++bk) {
        float amax = 0;
        for (int64_t r = bn * 128; r < std::min(n, bn * 128 + 128); ++r)
          for (int64_t i = bk * 128; i < std::min(k, bk * 128 + 128); ++i)
            amax = std::max(amax, std::fabs(w[(gi * n + r) * k + i]));
        float scale;
        std::memcpy(&scale, s.data() + 4 * ((gi * 2 + bn) * 2 + bk), 4);
        ASSERT_EQ(expected_scale(NEP_GEMM_FP8_BLOCK, amax), scale) << gi << " " << bn << " " << bk;
        for (int64_t r = bn * 128; r < std::min(n, bn * 128 + 128); ++r) {
          const int64_t i0 = bk * 128, len = std::min<int64_t>(128, k - i0);
          expect_nearest(NEP_GEMM_FP8_BLOCK, w.data() + (gi * n + r) * k + i0,
                         q.data() + (gi * n + r) * k + i0, len, scale, "weight row");
        }
      }
}

TEST(GemmQuantize, TransposedWeights) {
  for (int32_t format : kFormats) {
    const int64_t g = 2, n = 150, k = 70;
    const auto w = random_rows(g * n, k, 21u + format);
    char err[256];
    std::vector<uint8_t> q(static_cast<size_t>(g * n * k)), qt(q.size());
    std::vector<uint8_t> s(static_cast<size_t>(nep_gemm_weight_scale_bytes(format, g, n, k, 0)));
    std::vector<uint8_t> st(static_cast<size_t>(nep_gemm_weight_scale_bytes(format, g, n, k, 1)));
    ASSERT_EQ(NEP_OK, nep_gemm_quantize_weights(format, addr(w.data()), g, n, k, 0, addr(q.data()),
                                                addr(s.data()), err, sizeof err));
    ASSERT_EQ(NEP_OK, nep_gemm_quantize_weights(format, addr(w.data()), g, n, k, 1, addr(qt.data()),
                                                addr(st.data()), err, sizeof err));
    if (format == NEP_GEMM_FP8_BLOCK) {
      for (int64_t gi = 0; gi < g; ++gi)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < k; ++j)
            ASSERT_EQ(q[(gi * n + i) * k + j], qt[(gi * k + j) * n + i]);
      // [G, 2, 1] block scales become [G, 1, 2].
      ASSERT_EQ(s.size(), st.size());
      for (int64_t gi = 0; gi < g; ++gi)
        for (int64_t bn = 0; bn < 2; ++bn)
          EXPECT_EQ(0, std::memcmp(s.data() + 4 * (gi * 2 + bn), st.data() + 4 * (gi * 2 + bn), 4));
    } else {
      // MXFP8 transposed: 1x32 along n, i.e. the rows of w_g^T.
      std::vector<float> wt(w.size());
      for (int64_t gi = 0; gi < g; ++gi)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < k; ++j) wt[(gi * k + j) * n + i] = w[(gi * n + i) * k + j];
      const Quantised rows = quantize_rows(format, wt, g * k, n);
      EXPECT_EQ(rows.q, qt);
      EXPECT_EQ(rows.s, st);
    }
  }
}

TEST(GemmQuantize, TransposedGroupedRowsArePaddedColumns) {
  for (int32_t format : kFormats) {
    const int64_t c = 45, m = 420;
    const std::vector<int64_t> offsets = {3, 3, 4, 260, 260, 400};  // empty, one row, 256, 140
    const int32_t groups = int32_t(offsets.size() - 1);
    const auto x = random_rows(m, c, 31u + format);
    int64_t mp = 0;
    std::vector<int64_t> padded(offsets.size());
    char err[256];
    ASSERT_EQ(NEP_OK,
              nep_gemm_padded_rows(groups, offsets.data(), &mp, padded.data(), err, sizeof err));
    ASSERT_EQ(0 + 128 + 256 + 0 + 256, mp);
    EXPECT_EQ((std::vector<int64_t>{0, 0, 128, 384, 384, 640}), padded);
    const int64_t blk = block_of(format), ss = format == NEP_GEMM_FP8_BLOCK ? 4 : 1;
    std::vector<uint8_t> q(static_cast<size_t>(c * mp), 0xEE),
        s(static_cast<size_t>(c * mp / blk * ss), 0xEE);
    ASSERT_EQ(NEP_OK,
              nep_gemm_quantize_rows_t_grouped(format, addr(x.data()), m, c, groups, offsets.data(),
                                               addr(q.data()), addr(s.data()), err, sizeof err))
        << err;
    for (int32_t g = 0; g < groups; ++g) {
      const int64_t rows = offsets[g + 1] - offsets[g], len = padded[g + 1] - padded[g];
      if (len == 0) continue;
      std::vector<float> cols(static_cast<size_t>(c * len), 0.0f);  // the padded columns as rows
      for (int64_t col = 0; col < c; ++col)
        for (int64_t r = 0; r < rows; ++r) cols[col * len + r] = x[(offsets[g] + r) * c + col];
      const Quantised want = quantize_rows(format, cols, c, len);
      for (int64_t col = 0; col < c; ++col) {
        ASSERT_EQ(0, std::memcmp(q.data() + col * mp + padded[g], want.q.data() + col * len, len));
        for (int64_t r = rows; r < len; ++r) ASSERT_EQ(0, q[col * mp + padded[g] + r]) << "padding";
        ASSERT_EQ(0, std::memcmp(s.data() + (col * mp + padded[g]) / blk * ss,
                                 want.s.data() + col * len / blk * ss, len / blk * ss));
      }
    }
  }
}

// The fused SwiGLU quantiser: h is silu(gate) * up by the specified float operations, and its
// bytes are nep_gemm_quantize_rows's for that h.
TEST(GemmQuantize, SwigluRowsAreTheRowsOfH) {
  for (int32_t format : kFormats) {
    const int64_t m = 9, inter = 200;
    const auto y = random_rows(m, 2 * inter, 61u + format);
    std::vector<float> h_ref(static_cast<size_t>(m * inter));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < inter; ++i) {
        const float g = y[r * 2 * inter + i], u = y[r * 2 * inter + inter + i];
        volatile float e = std::exp(-g);
        volatile float silu = g / (1.0f + e);
        h_ref[r * inter + i] = silu * u;
      }
    const Quantised want = quantize_rows(format, h_ref, m, inter);
    std::vector<float> h(h_ref.size(), -1.0f);
    std::vector<uint8_t> q(want.q.size(), 0xEE), s(want.s.size(), 0xEE);
    char err[256];
    ASSERT_EQ(NEP_OK,
              nep_gemm_swiglu_quantize_rows(format, addr(y.data()), m, inter, addr(h.data()),
                                            addr(q.data()), addr(s.data()), err, sizeof err))
        << err;
    EXPECT_EQ(0, std::memcmp(h.data(), h_ref.data(), h.size() * 4));
    EXPECT_EQ(want.q, q);
    EXPECT_EQ(want.s, s);
    std::fill(q.begin(), q.end(), 0xEE);
    ASSERT_EQ(NEP_OK,
              nep_gemm_swiglu_quantize_rows(format, addr(y.data()), m, inter, 0, addr(q.data()),
                                            addr(s.data()), err, sizeof err))
        << err;
    EXPECT_EQ(want.q, q);
    EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
              nep_gemm_swiglu_quantize_rows(format, addr(y.data()), m, 0, 0, addr(q.data()),
                                            addr(s.data()), err, sizeof err));
    EXPECT_NE(nullptr, std::strstr(err, "inter=0")) << err;
    EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
              nep_gemm_swiglu_quantize_rows(format, addr(y.data()), m, inter, addr(h.data()) + 2,
                                            addr(q.data()), addr(s.data()), err, sizeof err));
    EXPECT_NE(nullptr, std::strstr(err, "h_out=")) << err;
  }
}

// The fused SwiGLU backward quantiser: dy = [dgate, dup] by the specified float operations, and
// its bytes are nep_gemm_quantize_rows's for that dy (rows of 2I, blocks across the boundary).
TEST(GemmQuantize, DswigluRowsAreTheRowsOfDy) {
  for (int32_t format : kFormats) {
    const int64_t m = 7, inter = 100;
    auto y = random_rows(m, 2 * inter, 81u + format);
    y[0] = -100.0f;  // exp overflows: dgate 0, dup -0
    y[1] = 30.0f;
    const auto dh = random_rows(m, inter, 83u + format);
    std::vector<float> dy_ref(static_cast<size_t>(m * 2 * inter));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < inter; ++i) {
        const float g = y[r * 2 * inter + i], u = y[r * 2 * inter + inter + i],
                    d_h = dh[r * inter + i];
        volatile float e = std::exp(-g);
        volatile float d = 1.0f + e;
        volatile float sig = 1.0f / d;
        volatile float silu = g / d;
        volatile float t = 1.0f - sig;
        volatile float gt = g * t;
        volatile float one_gt = 1.0f + gt;
        volatile float dsilu = sig * one_gt;
        volatile float dhu = d_h * u;
        dy_ref[r * 2 * inter + i] = dhu * dsilu;
        dy_ref[r * 2 * inter + inter + i] = d_h * silu;
      }
    const Quantised want = quantize_rows(format, dy_ref, m, 2 * inter);
    std::vector<float> dy(dy_ref.size(), -1.0f);
    std::vector<uint8_t> q(want.q.size(), 0xEE), s(want.s.size(), 0xEE);
    char err[256];
    ASSERT_EQ(NEP_OK, nep_gemm_dswiglu_quantize_rows(format, addr(y.data()), addr(dh.data()), m,
                                                     inter, addr(dy.data()), addr(q.data()),
                                                     addr(s.data()), err, sizeof err))
        << err;
    EXPECT_EQ(0, std::memcmp(dy.data(), dy_ref.data(), dy.size() * 4));
    EXPECT_EQ(0.0f, dy[0]);
    EXPECT_EQ(want.q, q);
    EXPECT_EQ(want.s, s);
    EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
              nep_gemm_dswiglu_quantize_rows(format, addr(y.data()), 0, m, inter, 0, addr(q.data()),
                                             addr(s.data()), err, sizeof err));
    EXPECT_NE(nullptr, std::strstr(err, "dh is null")) << err;
    EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
              nep_gemm_dswiglu_quantize_rows(format, addr(y.data()), addr(dh.data()), m, inter,
                                             addr(dy.data()) + 1, addr(q.data()), addr(s.data()),
                                             err, sizeof err));
    EXPECT_NE(nullptr, std::strstr(err, "dy_out=")) << err;
  }
}

TEST(GemmQuantize, RefusesBadArguments) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> q(64), s(64);
  char err[256];
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows(NEP_WIRE_BF16, addr(x.data()), 1, 64, addr(q.data()),
                                   addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "format=1")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows(NEP_GEMM_MXFP8, addr(x.data()), 1, 0, addr(q.data()),
                                   addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "k=0")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows(NEP_GEMM_MXFP8, addr(x.data()), -1, 64, addr(q.data()),
                                   addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "m=-1")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows(NEP_GEMM_MXFP8, 0, 1, 64, addr(q.data()), addr(s.data()), err,
                                   sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "x is null")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows(NEP_GEMM_FP8_BLOCK, addr(x.data()), 1, 64, addr(q.data()),
                                   addr(s.data()) + 1, err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "4-byte aligned")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_weights(NEP_GEMM_MXFP8, addr(x.data()), 1, 8, 8, 2, addr(q.data()),
                                      addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "transpose=2")) << err;
  EXPECT_EQ(NEP_ERR_CAPACITY,
            nep_gemm_quantize_weights(NEP_GEMM_MXFP8, addr(x.data()), 1 << 20, 1 << 20, 1 << 20, 0,
                                      addr(q.data()), addr(s.data()), err, sizeof err));
  const int64_t bad_offsets[] = {0, 5, 4};
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows_t_grouped(NEP_GEMM_MXFP8, addr(x.data()), 8, 8, 2, bad_offsets,
                                             addr(q.data()), addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "group_offsets[2]=4")) << err;
  const int64_t long_offsets[] = {0, 9};
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows_t_grouped(NEP_GEMM_MXFP8, addr(x.data()), 8, 8, 1, long_offsets,
                                             addr(q.data()), addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "exceeds m=8")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT,
            nep_gemm_quantize_rows_t_grouped(NEP_GEMM_MXFP8, addr(x.data()), 8, 8, 0, long_offsets,
                                             addr(q.data()), addr(s.data()), err, sizeof err));
  EXPECT_NE(nullptr, std::strstr(err, "num_groups=0")) << err;
  EXPECT_EQ(-1, nep_gemm_row_scale_bytes(NEP_WIRE_FP32, 64));
  EXPECT_EQ(8, nep_gemm_row_scale_bytes(NEP_GEMM_FP8_BLOCK, 129));
  EXPECT_EQ(5, nep_gemm_row_scale_bytes(NEP_GEMM_MXFP8, 129));
  EXPECT_EQ(2 * 2 * 1 * 4, nep_gemm_weight_scale_bytes(NEP_GEMM_FP8_BLOCK, 2, 129, 100, 0));
  EXPECT_EQ(2 * 100 * 5, nep_gemm_weight_scale_bytes(NEP_GEMM_MXFP8, 2, 129, 100, 1));
}

}  // namespace
