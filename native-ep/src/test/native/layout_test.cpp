// Layout: per-rank deduplicated counts, per-expert counts and is_token_in_rank against a plain
// loop, and the argument errors.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "nativeep/c_api.h"
#include "test_support.h"

namespace {

int64_t addr(const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); }

struct Layout {
  std::vector<int32_t> per_rank, per_expert;
  std::vector<uint8_t> in_rank;
};

Layout oracle_layout(const std::vector<int64_t>& idx, int64_t tokens, int32_t topk, int32_t experts,
                     int32_t world) {
  Layout l;
  l.per_rank.assign(world, 0);
  l.per_expert.assign(experts, 0);
  l.in_rank.assign(tokens * world, 0);
  const int32_t local = experts / world;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int32_t r = 0; r < world; ++r) {
      bool hit = false;
      for (int32_t k = 0; k < topk; ++k) {
        const int64_t e = idx[t * topk + k];
        if (e >= 0 && e / local == r) hit = true;
      }
      l.in_rank[t * world + r] = hit;
      l.per_rank[r] += hit;
    }
    for (int32_t k = 0; k < topk; ++k) {
      if (idx[t * topk + k] >= 0) ++l.per_expert[idx[t * topk + k]];
    }
  }
  return l;
}

int32_t run_layout(const std::vector<int64_t>& idx, int64_t tokens, int32_t topk, int32_t experts,
                   int32_t world, Layout& out, std::string& message) {
  out.per_rank.assign(world > 0 ? world : 1, -7);
  out.per_expert.assign(experts > 0 ? experts : 1, -7);
  out.in_rank.assign(tokens > 0 && world > 0 ? tokens * world : 1, 0xEE);
  char err[512];
  const int32_t rc =
      nep_layout(addr(idx.data()), tokens, topk, experts, world, addr(out.per_rank.data()),
                 addr(out.per_expert.data()), addr(out.in_rank.data()), err, sizeof err);
  message = err;
  return rc;
}

}  // namespace

TEST(Layout, MatchesLoopOracleOnRandomRouting) {
  std::mt19937_64 rng(21);
  for (int32_t world : {1, 2, 4, 8}) {
    for (double hot : {0.0, 0.7}) {
      const int32_t experts = 64, topk = 8;
      const int64_t tokens = 257;
      auto routing = neptest::random_routing(rng, tokens, topk, experts, 0.2, hot, 5);
      Layout got;
      std::string msg;
      ASSERT_EQ(run_layout(routing.idx, tokens, topk, experts, world, got, msg), NEP_OK) << msg;
      const Layout want = oracle_layout(routing.idx, tokens, topk, experts, world);
      EXPECT_EQ(got.per_rank, want.per_rank) << "world " << world;
      EXPECT_EQ(got.per_expert, want.per_expert) << "world " << world;
      EXPECT_EQ(got.in_rank, want.in_rank) << "world " << world;
      if (hot > 0) EXPECT_GT(want.per_expert[5], tokens / 2);
    }
  }
}

TEST(Layout, CountsATokenOncePerRankWithSeveralExpertsThere) {
  // 8 experts over 2 ranks: token 0 has experts 0,1,2 (rank 0) and 7 (rank 1).
  const std::vector<int64_t> idx = {0, 1, 2, 7, -1, -1, -1, -1, 4, -1, 5, -1};
  Layout got;
  std::string msg;
  ASSERT_EQ(run_layout(idx, 3, 4, 8, 2, got, msg), NEP_OK) << msg;
  EXPECT_EQ(got.per_rank, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(got.per_expert, (std::vector<int32_t>{1, 1, 1, 0, 1, 1, 0, 1}));
  EXPECT_EQ(got.in_rank, (std::vector<uint8_t>{1, 1, 0, 0, 0, 1}));
}

TEST(Layout, NullOutputsAreSkippedAndZeroTokensWork) {
  const std::vector<int64_t> idx = {3, 1};
  std::vector<int32_t> per_rank(4, -1);
  char err[256];
  ASSERT_EQ(nep_layout(addr(idx.data()), 1, 2, 8, 4, addr(per_rank.data()), 0, 0, err, sizeof err),
            NEP_OK)
      << err;
  EXPECT_EQ(per_rank, (std::vector<int32_t>{1, 1, 0, 0}));
  ASSERT_EQ(nep_layout(0, 0, 2, 8, 4, addr(per_rank.data()), 0, 0, err, sizeof err), NEP_OK) << err;
  EXPECT_EQ(per_rank, (std::vector<int32_t>{0, 0, 0, 0}));
}

TEST(Layout, RejectsBadArgumentsNamingThem) {
  Layout out;
  std::string msg;
  std::vector<int64_t> idx(4 * 2, 0);
  for (int t = 0; t < 4; ++t) idx[t * 2 + 1] = -1;
  idx[3 * 2 + 1] = 70;
  EXPECT_EQ(run_layout(idx, 4, 2, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "topk_idx[3][1] = 70 is outside [-1, 64)");
  idx[3 * 2 + 1] = -2;
  EXPECT_EQ(run_layout(idx, 4, 2, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "topk_idx[3][1] = -2 is outside [-1, 64)");
  idx[3 * 2 + 1] = 64;
  EXPECT_EQ(run_layout(idx, 4, 2, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "topk_idx[3][1] = 64 is outside [-1, 64)");
  idx[3 * 2 + 1] = -1;
  idx[2 * 2 + 1] = 0;  // row 2 = {0, 0}
  EXPECT_EQ(run_layout(idx, 4, 2, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("topk_idx[2] selects expert 0 twice"), std::string::npos) << msg;
  idx[2 * 2 + 1] = -1;
  ASSERT_EQ(run_layout(idx, 4, 2, 64, 4, out, msg), NEP_OK) << msg;  // repeated -1 is fine

  EXPECT_EQ(run_layout(idx, 4, 2, 64, 3, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "num_experts = 64 is not a multiple of world_size = 3");
  EXPECT_EQ(run_layout(idx, 4, 0, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "num_topk = 0 must be >= 1");
  EXPECT_EQ(run_layout(idx, -1, 2, 64, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "num_tokens = -1 must be >= 0");
  EXPECT_EQ(run_layout(idx, 4, 2, 0, 4, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "num_experts = 0 must be >= 1");
  EXPECT_EQ(run_layout(idx, 4, 2, 64, 0, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg, "world_size = 0 must be >= 1");
  char err[256];
  EXPECT_EQ(nep_layout(0, 4, 2, 64, 4, 0, 0, 0, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "topk_idx is null");
  EXPECT_EQ(nep_layout(0, int64_t{1} << 40, 2, 64, 4, 0, 0, 0, err, sizeof err), NEP_ERR_CAPACITY);
  EXPECT_NE(std::string(err).find("num_tokens = 1099511627776 exceeds"), std::string::npos) << err;
}

TEST(Layout, FindsDuplicatesInWideRows) {
  const int32_t topk = 40, experts = 64;
  std::vector<int64_t> idx(topk);
  for (int32_t k = 0; k < topk; ++k) idx[k] = k;
  Layout out;
  std::string msg;
  ASSERT_EQ(run_layout(idx, 1, topk, experts, 2, out, msg), NEP_OK) << msg;
  idx[39] = 17;
  EXPECT_EQ(run_layout(idx, 1, topk, experts, 2, out, msg), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(msg,
            "topk_idx[0] selects expert 17 twice (slots 17 and 39); each expert may appear at most "
            "once per token");
}
