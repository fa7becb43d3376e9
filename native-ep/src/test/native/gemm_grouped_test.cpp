// Grouped FP8 GEMMs on the CPU (nep_gemm_grouped_m, nep_gemm_grouped_k) against a float64
// reference of the same dequantised inputs (tight bound) and against float32 of the unquantised
// inputs (loose bound), on odd shapes, empty groups, one token, a hot group, unaligned group
// starts, NaN-poisoned outputs (unwritten rows keep the poison), wire rows fed as they are, and
// refused arguments.
//
// Bounds. S[m, n] = sum over k of |a_mk * b_nk| (dequantised). The CPU path rounds each block's
// exact partial sum once and then does two roundings per promotion plus the accumulation, so
// |C - ref| <= (blocks + 3) * 2^-24 * S; the test allows (blocks + 4) * 2^-23 * S. Against the
// unquantised float inputs each e4m3 element is within 2^-4 relative (plus the subnormal step),
// so a product within about 2^-3: the test allows 0.14 * S_float for FP8_BLOCK; MXFP8's
// power-of-two scale clips the top of a block at 448 * 2^shared_exp (up to 1/8 of an element, so
// about 1/4 of a product), so 0.25 * S_float there. The relative Frobenius error against the
// float32 product must stay under 6%.
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

double loose_bound(int32_t format) { return format == NEP_GEMM_FP8_BLOCK ? 0.14 : 0.25; }

struct MCase {
  std::string name;
  int64_t n, k, m;
  std::vector<int64_t> offsets;
};

std::vector<MCase> m_cases() {
  return {
      {"small aligned", 128, 128, 256, {0, 128, 256}},
      {"odd shapes", 72, 200, 37, {0, 5, 17, 37}},
      {"empty groups and one token", 130, 96, 9, {0, 0, 1, 1, 9, 9}},
      {"hot group, unaligned starts", 64, 300, 300, {3, 4, 280, 290, 297}},
      {"k below one block", 33, 17, 20, {0, 20}},
  };
}

struct MInputs {
  std::vector<float> x, w;
  std::vector<uint8_t> qa, sa, qb, sb;
};

MInputs make_m_inputs(int32_t format, const MCase& c, int32_t groups, uint32_t seed) {
  MInputs in;
  in.x = random_rows(c.m, c.k, seed, 0.1);
  in.w = random_rows(groups * c.n, c.k, seed + 1);
  for (float& v : in.w) v *= 0.05f;
  in.qa.resize(static_cast<size_t>(c.m * c.k));
  in.sa.resize(static_cast<size_t>(c.m * nep_gemm_row_scale_bytes(format, c.k)));
  in.qb.resize(static_cast<size_t>(groups * c.n * c.k));
  in.sb.resize(static_cast<size_t>(nep_gemm_weight_scale_bytes(format, groups, c.n, c.k, 0)));
  char err[256];
  EXPECT_EQ(NEP_OK, nep_gemm_quantize_rows(format, addr(in.x.data()), c.m, c.k, addr(in.qa.data()),
                                           addr(in.sa.data()), err, sizeof err))
      << err;
  EXPECT_EQ(NEP_OK,
            nep_gemm_quantize_weights(format, addr(in.w.data()), groups, c.n, c.k, 0,
                                      addr(in.qb.data()), addr(in.sb.data()), err, sizeof err))
      << err;
  return in;
}

std::vector<float> run_m(int32_t format, const MCase& c, int32_t groups, const MInputs& in) {
  std::vector<float> out(static_cast<size_t>(c.m * c.n), poison());
  char err[256];
  EXPECT_EQ(NEP_OK,
            nep_gemm_grouped_m(format, groups, c.n, c.k, c.m, c.offsets.data(), addr(in.qa.data()),
                               0, addr(in.sa.data()), 0, addr(in.qb.data()), addr(in.sb.data()),
                               addr(out.data()), NEP_GEMM_OUT_FP32, err, sizeof err))
      << err;
  return out;
}

TEST(GemmGroupedM, MatchesReferences) {
  for (int32_t format : kFormats) {
    for (const MCase& c : m_cases()) {
      const int32_t groups = int32_t(c.offsets.size() - 1);
      const MInputs in = make_m_inputs(format, c, groups, 100u + uint32_t(c.k));
      const std::vector<float> out = run_m(format, c, groups, in);
      const auto da = dequant_rows(format, in.qa.data(), c.k, in.sa.data(),
                                   nep_gemm_row_scale_bytes(format, c.k), c.m, c.k);
      const int64_t blocks = cdiv(c.k, block_of(format));
      const int64_t sbg = nep_gemm_weight_scale_bytes(format, 1, c.n, c.k, 0);
      std::vector<std::vector<double>> dbs;
      for (int32_t g = 0; g < groups; ++g)
        dbs.push_back(
            dequant_weight(format, in.qb.data() + g * c.n * c.k, in.sb.data() + g * sbg, c.n, c.k));
      double err2 = 0, ref2 = 0;
      for (int64_t r = 0; r < c.m; ++r) {
        int32_t g = -1;
        for (int32_t i = 0; i < groups; ++i)
          if (r >= c.offsets[i] && r < c.offsets[i + 1]) g = i;
        for (int64_t j = 0; j < c.n; ++j) {
          const float got = out[r * c.n + j];
          if (g < 0) {
            ASSERT_TRUE(is_poison(got))
                << c.name << ": row " << r << " outside every group was written";
            continue;
          }
          const std::vector<double>& db = dbs[g];
          double ref = 0, s = 0, reff = 0, sf = 0;
          for (int64_t i = 0; i < c.k; ++i) {
            const double p = da[r * c.k + i] * db[j * c.k + i];
            ref += p;
            s += std::fabs(p);
            const double pf = double(in.x[r * c.k + i]) * in.w[(g * c.n + j) * c.k + i];
            reff += pf;
            sf += std::fabs(pf);
          }
          ASSERT_LE(std::fabs(got - ref), (blocks + 4) * std::ldexp(s, -23) + 1e-30)
              << c.name << " format " << format << " row " << r << " col " << j;
          ASSERT_LE(std::fabs(got - reff), loose_bound(format) * sf + 1e-7)
              << c.name << " format " << format << " row " << r << " col " << j;
          err2 += (got - reff) * (got - reff);
          ref2 += reff * reff;
        }
      }
      if (ref2 > 0) EXPECT_LT(std::sqrt(err2 / ref2), 0.06) << c.name << " format " << format;
    }
  }
}

TEST(GemmGroupedM, Bf16OutputIsTheRoundedFp32) {
  for (int32_t format : kFormats) {
    const MCase c = m_cases()[1];
    const int32_t groups = int32_t(c.offsets.size() - 1);
    const MInputs in = make_m_inputs(format, c, groups, 7u);
    const std::vector<float> f32 = run_m(format, c, groups, in);
    std::vector<uint16_t> bf(static_cast<size_t>(c.m * c.n), 0xFFFF);
    char err[256];
    ASSERT_EQ(NEP_OK, nep_gemm_grouped_m(format, groups, c.n, c.k, c.m, c.offsets.data(),
                                         addr(in.qa.data()), 0, addr(in.sa.data()), 0,
                                         addr(in.qb.data()), addr(in.sb.data()), addr(bf.data()),
                                         NEP_GEMM_OUT_BF16, err, sizeof err))
        << err;
    for (size_t i = 0; i < bf.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &f32[i], 4);
      const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
      ASSERT_EQ(rounded, bf[i]) << i;
    }
  }
}

// Rows as the dispatch delivers them on the FP8 / MXFP8 wire (elements then scales, one row after
// another) feed the GEMM through the row strides and give the same result as split arrays.
TEST(GemmGroupedM, WireRowsFeedTheGemm) {
  for (int32_t format : kFormats) {
    const MCase c = m_cases()[3];
    const int32_t groups = int32_t(c.offsets.size() - 1);
    const MInputs in = make_m_inputs(format, c, groups, 9u);
    const std::vector<float> want = run_m(format, c, groups, in);
    const int32_t wire = format == NEP_GEMM_FP8_BLOCK ? NEP_WIRE_FP8 : NEP_WIRE_MXFP8;
    const int64_t row_bytes = nep_wire_row_bytes(wire, c.k);
    std::vector<uint8_t> rows(static_cast<size_t>(c.m * row_bytes + 4));
    char err[256];
    ASSERT_EQ(NEP_OK, nep_encode_rows(wire, addr(in.x.data()), c.m, c.k, addr(rows.data()), err,
                                      sizeof err));
    std::vector<float> got(want.size(), poison());
    ASSERT_EQ(NEP_OK, nep_gemm_grouped_m(format, groups, c.n, c.k, c.m, c.offsets.data(),
                                         addr(rows.data()), row_bytes, addr(rows.data()) + c.k,
                                         row_bytes, addr(in.qb.data()), addr(in.sb.data()),
                                         addr(got.data()), NEP_GEMM_OUT_FP32, err, sizeof err))
        << err;
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
  }
}

TEST(GemmGroupedM, NanScalesAndElementsReachTheOutput) {
  const MCase c{"nan", 8, 64, 2, {0, 2}};
  MInputs in = make_m_inputs(NEP_GEMM_MXFP8, c, 1, 3u);
  in.sa[0] = 0xFF;        // row 0, first block: the E8M0 NaN
  in.qa[c.k + 5] = 0x7F;  // row 1: an e4m3 NaN element
  const std::vector<float> out = run_m(NEP_GEMM_MXFP8, c, 1, in);
  for (int64_t j = 0; j < c.n; ++j) {
    EXPECT_TRUE(std::isnan(out[j]) && !is_poison(out[j]));
    EXPECT_TRUE(std::isnan(out[c.n + j]) && !is_poison(out[c.n + j]));
  }
}

struct KCase {
  std::string name;
  int64_t n, k;
  std::vector<int64_t> offsets;
};

TEST(GemmGroupedK, MatchesReferences) {
  const std::vector<KCase> cases = {
      {"aligned", 64, 96, {0, 128, 256}},
      {"odd shapes, partial tiles", 37, 70, {0, 5, 150, 151}},
      {"empty groups, one token, hot group, unaligned start", 20, 33, {2, 2, 3, 300, 300, 310}},
  };
  for (int32_t format : kFormats) {
    for (const KCase& c : cases) {
      const int32_t groups = int32_t(c.offsets.size() - 1);
      const int64_t m = c.offsets.back() + 1;
      const auto dy = random_rows(m, c.n, 200u + uint32_t(c.n), 0.1);
      const auto x = random_rows(m, c.k, 300u + uint32_t(c.k), 0.1);
      int64_t mp = 0;
      char err[256];
      ASSERT_EQ(NEP_OK,
                nep_gemm_padded_rows(groups, c.offsets.data(), &mp, nullptr, err, sizeof err));
      const int64_t blk = block_of(format), ss = format == NEP_GEMM_FP8_BLOCK ? 4 : 1;
      std::vector<uint8_t> qa(c.n * mp), sa(c.n * mp / blk * ss), qb(c.k * mp),
          sb(c.k * mp / blk * ss);
      ASSERT_EQ(NEP_OK, nep_gemm_quantize_rows_t_grouped(format, addr(dy.data()), m, c.n, groups,
                                                         c.offsets.data(), addr(qa.data()),
                                                         addr(sa.data()), err, sizeof err));
      ASSERT_EQ(NEP_OK, nep_gemm_quantize_rows_t_grouped(format, addr(x.data()), m, c.k, groups,
                                                         c.offsets.data(), addr(qb.data()),
                                                         addr(sb.data()), err, sizeof err));
      std::vector<float> out(static_cast<size_t>(groups * c.n * c.k), poison());
      ASSERT_EQ(NEP_OK, nep_gemm_grouped_k(format, groups, c.n, c.k, c.offsets.data(),
                                           addr(qa.data()), addr(sa.data()), addr(qb.data()),
                                           addr(sb.data()), addr(out.data()), err, sizeof err))
          << err;
      const auto da = dequant_rows(format, qa.data(), mp, sa.data(), mp / blk * ss, c.n, mp);
      const auto db = dequant_rows(format, qb.data(), mp, sb.data(), mp / blk * ss, c.k, mp);
      std::vector<int64_t> padded(c.offsets.size());
      ASSERT_EQ(NEP_OK, nep_gemm_padded_rows(groups, c.offsets.data(), &mp, padded.data(), err,
                                             sizeof err));
      for (int32_t g = 0; g < groups; ++g) {
        const int64_t rows = c.offsets[g + 1] - c.offsets[g];
        const int64_t blocks = (padded[g + 1] - padded[g]) / blk;
        for (int64_t i = 0; i < c.n; ++i)
          for (int64_t j = 0; j < c.k; ++j) {
            const float got = out[(g * c.n + i) * c.k + j];
            ASSERT_FALSE(is_poison(got)) << c.name << " group " << g;
            double ref = 0, s = 0, reff = 0, sf = 0;
            for (int64_t t = 0; t < rows; ++t) {
              const double p = da[i * mp + padded[g] + t] * db[j * mp + padded[g] + t];
              ref += p;
              s += std::fabs(p);
              const double pf =
                  double(dy[(c.offsets[g] + t) * c.n + i]) * x[(c.offsets[g] + t) * c.k + j];
              reff += pf;
              sf += std::fabs(pf);
            }
            ASSERT_LE(std::fabs(got - ref), (blocks + 4) * std::ldexp(s, -23) + 1e-30)
                << c.name << " format " << format << " group " << g << " (" << i << ", " << j
                << ")";
            ASSERT_LE(std::fabs(got - reff), loose_bound(format) * sf + 1e-7)
                << c.name << " format " << format << " group " << g << " (" << i << ", " << j
                << ")";
            if (rows == 0) ASSERT_EQ(0.0f, got);
          }
      }
    }
  }
}

TEST(GemmGroupedArgs, RefusesBadArguments) {
  std::vector<uint8_t> buf(1 << 12);
  std::vector<float> out(1 << 10);
  const int64_t p = addr(buf.data()), o = addr(out.data());
  const int64_t offsets[] = {0, 4, 8};
  const int64_t falling[] = {0, 5, 4};
  char err[256];
  auto m_call = [&](int32_t format, int32_t groups, int64_t n, int64_t k, int64_t m,
                    const int64_t* offs, int64_t lda, int64_t ldsa, int64_t c, int32_t dtype) {
    return nep_gemm_grouped_m(format, groups, n, k, m, offs, p, lda, p, ldsa, p, p, c, dtype, err,
                              sizeof err);
  };
  struct Want {
    int32_t status;
    const char* text;
  };
  const std::pair<int32_t, Want> checks[] = {
      {m_call(NEP_WIRE_BF16, 2, 8, 8, 8, offsets, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "format=1"}},
      {m_call(NEP_GEMM_MXFP8, 0, 8, 8, 8, offsets, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "num_groups=0"}},
      {m_call(NEP_GEMM_MXFP8, 1025, 8, 8, 8, offsets, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "num_groups=1025"}},
      {m_call(NEP_GEMM_MXFP8, 2, 0, 8, 8, offsets, 0, 0, o, 0), {NEP_ERR_INVALID_ARGUMENT, "n=0"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, -1, 8, offsets, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "k=-1"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 7, offsets, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "exceeds m=7"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, falling, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "group_offsets[2]=4"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, nullptr, 0, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "group_offsets is null"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, offsets, 7, 0, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "lda=7"}},
      {m_call(NEP_GEMM_FP8_BLOCK, 2, 8, 8, 8, offsets, 0, 2, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "ldsa=2"}},
      {m_call(NEP_GEMM_FP8_BLOCK, 2, 8, 8, 8, offsets, 0, 6, o, 0),
       {NEP_ERR_INVALID_ARGUMENT, "ldsa=6"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, offsets, 0, 0, o, 2),
       {NEP_ERR_INVALID_ARGUMENT, "out_dtype=2"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, offsets, 0, 0, 0, 0),
       {NEP_ERR_INVALID_ARGUMENT, "c is null"}},
      {m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, offsets, 0, 0, o + 2, 0),
       {NEP_ERR_INVALID_ARGUMENT, "4-byte aligned"}},
      {m_call(NEP_GEMM_MXFP8, 2, 1 << 30, 1 << 30, 8, offsets, 0, 0, o, 0),
       {NEP_ERR_CAPACITY, "2^50"}},
      {nep_gemm_grouped_k(NEP_GEMM_MXFP8, 2, 8, 8, offsets, 0, p, p, p, o, err, sizeof err),
       {NEP_ERR_INVALID_ARGUMENT, "a is null"}},
      {nep_gemm_grouped_k(NEP_GEMM_MXFP8, 2, 8, 8, falling, p, p, p, p, o, err, sizeof err),
       {NEP_ERR_INVALID_ARGUMENT, "group_offsets[2]=4"}},
      {nep_gemm_grouped_k(NEP_GEMM_FP8_BLOCK, 2, 8, 8, offsets, p, p + 2, p, p, o, err, sizeof err),
       {NEP_ERR_INVALID_ARGUMENT, "sa="}},
  };
  int index = 0;
  for (const auto& [status, want] : checks) {
    EXPECT_EQ(want.status, status) << "check " << index;
    ++index;
  }
  // The message of each: rerun them one by one, checking the text.
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT, m_call(NEP_GEMM_MXFP8, 2, 8, 8, 7, offsets, 0, 0, o, 0));
  EXPECT_NE(nullptr, std::strstr(err, "group_offsets[2]=8 exceeds m=7")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT, m_call(NEP_GEMM_MXFP8, 2, 8, 8, 8, offsets, 7, 0, o, 0));
  EXPECT_NE(nullptr, std::strstr(err, "lda=7 is below k=8")) << err;
  EXPECT_EQ(NEP_ERR_INVALID_ARGUMENT, m_call(NEP_GEMM_FP8_BLOCK, 2, 8, 8, 8, offsets, 0, 6, o, 0));
  EXPECT_NE(nullptr, std::strstr(err, "ldsa=6 is not a multiple of 4")) << err;
  // Empty work with null data is fine: no rows, no reads.
  const int64_t empty[] = {0, 0};
  EXPECT_EQ(NEP_OK, nep_gemm_grouped_m(NEP_GEMM_MXFP8, 1, 8, 8, 0, empty, 0, 0, 0, 0, p, p, 0, 0,
                                       err, sizeof err))
      << err;
}

}  // namespace
