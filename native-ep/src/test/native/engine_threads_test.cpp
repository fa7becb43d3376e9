// The dispatch/combine engine and the collectives with W = 2 and 4 ranks on threads (an
// in-process test transport), against a plain all-to-all oracle computed from the same seed.
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "codec.h"
#include "collectives.h"
#include "engine.h"
#include "ep_check.h"
#include "test_support.h"

namespace {

using neptest::make_world;
using neptest::World;

void check_world(const World& w, int32_t wire, int32_t align) {
  std::mutex mu;
  std::string failures;
  neptest::run_world(w.world, [&](nep::Transport& t) {
    const std::string f = neptest::check_ep_rank(t, w, wire, align, 3);
    std::lock_guard<std::mutex> lock(mu);
    failures += f;
  });
  EXPECT_EQ(failures, "") << "world " << w.world << " wire " << wire;
}

}  // namespace

TEST(ThreadedEp, TwoRanksEveryWire) {
  for (int32_t wire = NEP_WIRE_FP32; wire <= NEP_WIRE_MXFP8; ++wire) {
    check_world(make_world(100 + wire, 2, 96), wire, 1);
  }
}

TEST(ThreadedEp, FourRanksWithAlignmentAndPartialBlocks) {
  check_world(make_world(7, 4, 200), NEP_WIRE_FP32, 32);
  check_world(make_world(8, 4, 200), NEP_WIRE_MXFP8, 32);
  check_world(make_world(9, 4, 130), NEP_WIRE_FP8, 4);
}

TEST(ThreadedEp, EveryTokenToOneExpert) {
  check_world(make_world(10, 4, 64, 50, true), NEP_WIRE_BF16, 8);
}

TEST(ThreadedEp, BadArgumentsOnOneRankFailEveryRankNamingIt) {
  const World w = make_world(5, 3, 16);
  std::vector<std::string> messages(3);
  std::vector<int32_t> codes(3);
  std::mutex mu;
  neptest::run_world(3, [&](nep::Transport& t) {
    const auto& r = w.routing[t.rank()];
    const auto h = nep::dispatch_notify(t, r.idx.data(), r.tokens, w.topk, w.experts, 1);
    std::vector<float> recv(h.num_recv * w.hidden);
    nep::DispatchArgs d;
    d.x = w.x[t.rank()].data();
    d.hidden = t.rank() == 2 ? 0 : w.hidden;  // rank 2 passes a bad hidden size
    d.recv_x = recv.data();
    try {
      nep::dispatch(t, &h, d);
    } catch (const nep::Error& e) {
      std::lock_guard<std::mutex> lock(mu);
      messages[t.rank()] = e.what();
      codes[t.rank()] = e.code();
    }
  });
  EXPECT_EQ(codes[2], NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(messages[2], "hidden = 0 must be > 0");
  for (int r : {0, 1}) {
    EXPECT_EQ(codes[r], NEP_ERR_PEER);
    EXPECT_NE(messages[r].find("nep_dispatch failed on rank 2"), std::string::npos) << messages[r];
  }
}

TEST(ThreadedEp, DisagreementOnHiddenOrExpertsIsAPeerError) {
  const World w = make_world(6, 2, 16);
  std::vector<std::string> messages(2);
  std::mutex mu;
  neptest::run_world(2, [&](nep::Transport& t) {
    const auto& r = w.routing[t.rank()];
    try {
      nep::dispatch_notify(t, r.idx.data(), r.tokens, w.topk,
                           t.rank() == 0 ? w.experts : 2 * w.experts, 1);
    } catch (const nep::Error& e) {
      std::lock_guard<std::mutex> lock(mu);
      messages[t.rank()] = e.what();
    }
  });
  for (const auto& m : messages) {
    EXPECT_NE(m.find("passed num_experts = "), std::string::npos) << m;
    EXPECT_NE(m.find("all ranks must agree"), std::string::npos) << m;
  }
}

TEST(ThreadedCollectives, AllReduceIsRankOrderedAndIdenticalEverywhere) {
  for (int32_t world : {1, 2, 3, 4}) {
    const int64_t count = 1001;
    std::vector<std::vector<float>> f(world);
    std::vector<std::vector<double>> d(world);
    std::mt19937_64 rng(world);
    for (int32_t r = 0; r < world; ++r) {
      f[r] = neptest::random_rows(rng, 1, count);
      for (float v : f[r]) d[r].push_back(static_cast<double>(v) * 1e-3);
    }
    std::vector<float> want_f(count);
    std::vector<double> want_d(count);
    for (int64_t i = 0; i < count; ++i) {
      float sf = f[0][i];
      double sd = d[0][i];
      for (int32_t r = 1; r < world; ++r) {
        sf += f[r][i];
        sd += d[r][i];
      }
      want_f[i] = sf;
      want_d[i] = sd;
    }
    auto got_f = f;
    auto got_d = d;
    std::vector<std::vector<uint8_t>> gathered(world);
    neptest::run_world(world, [&](nep::Transport& t) {
      nep::all_reduce_sum(t, got_f[t.rank()].data(), count);
      nep::all_reduce_sum(t, got_d[t.rank()].data(), count);
      const uint8_t mine[3] = {static_cast<uint8_t>(t.rank()), 7,
                               static_cast<uint8_t>(10 * t.rank())};
      gathered[t.rank()].resize(3 * world);
      nep::all_gather(t, mine, 3, gathered[t.rank()].data());
    });
    for (int32_t r = 0; r < world; ++r) {
      EXPECT_EQ(std::memcmp(got_f[r].data(), want_f.data(), count * 4), 0)
          << "world " << world << " rank " << r;
      EXPECT_EQ(std::memcmp(got_d[r].data(), want_d.data(), count * 8), 0)
          << "world " << world << " rank " << r;
      for (int32_t s = 0; s < world; ++s) {
        EXPECT_EQ(gathered[r][3 * s], s);
        EXPECT_EQ(gathered[r][3 * s + 2], 10 * s);
      }
    }
  }
}

TEST(ThreadedEp, HandleFromAnotherWorldIsRejected) {
  nep::DispatchHandle h;
  h.world_size = 2;
  neptest::run_world(1, [&](nep::Transport& t) {
    std::vector<float> x(4);
    nep::DispatchArgs d;
    d.x = x.data();
    d.hidden = 4;
    try {
      nep::dispatch(t, &h, d);
      ADD_FAILURE() << "expected an error";
    } catch (const nep::Error& e) {
      EXPECT_EQ(e.code(), NEP_ERR_INVALID_ARGUMENT);
      EXPECT_EQ(std::string(e.what()), "handle world_size = 2 does not match comm world_size = 1");
    }
  });
}
