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
#include "test_support.h"

namespace {

struct World {
  int32_t world, experts, topk;
  int64_t hidden;
  std::vector<neptest::Routing> routing;  // per rank
  std::vector<std::vector<float>> x;      // per rank [T, H]
};

// Uneven tokens per rank, rank 1 with none, a hot expert, -1 slots, some unrouted rows.
World make_world(uint64_t seed, int32_t world, int64_t hidden) {
  std::mt19937_64 rng(seed);
  World w{world, 8 * world, 4, hidden, {}, {}};
  for (int32_t r = 0; r < world; ++r) {
    const int64_t tokens = r == 1 ? 0 : 37 + 11 * r;
    auto routing = neptest::random_routing(rng, tokens, w.topk, w.experts, 0.25, 0.4, 3);
    if (tokens > 0) {
      for (int32_t k = 0; k < w.topk; ++k) routing.idx[k] = -1;  // token 0 goes nowhere
    }
    w.routing.push_back(routing);
    w.x.push_back(neptest::random_rows(rng, tokens, hidden));
  }
  return w;
}

std::vector<float> round_trip(int32_t wire, const float* row, int64_t hidden) {
  const auto w = static_cast<nep::Wire>(wire);
  std::vector<uint8_t> buf(nep::wire_row_bytes(w, hidden));
  std::vector<float> out(hidden);
  nep::encode_row(w, row, hidden, buf.data());
  nep::decode_row(w, buf.data(), hidden, out.data());
  return out;
}

// y on rank r for received row i: a function of the received data and of r, so combine's sum
// has distinct terms per rank.
std::vector<float> make_y(const std::vector<float>& recv_x, int32_t rank) {
  std::vector<float> y(recv_x.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = recv_x[i] * static_cast<float>(rank + 1) + 0.25f;
  return y;
}

void check_world(const World& w, int32_t wire, int32_t align) {
  std::mutex mu;
  std::vector<std::vector<float>> ys(w.world);           // per rank, for the combine oracle
  std::vector<std::vector<int32_t>> recv_src(w.world);
  std::vector<std::vector<float>> combined(w.world);
  std::vector<std::vector<float>> combined_w(w.world);
  std::vector<std::vector<float>> y_weights(w.world);
  neptest::run_world(w.world, [&](nep::Transport& t) {
    const int32_t me = t.rank();
    const auto& routing = w.routing[me];
    const nep::DispatchHandle h = nep::dispatch_notify(t, routing.idx.data(), routing.tokens,
                                                       w.topk, w.experts, align);
    const auto want = neptest::oracle_recv(w.routing, me, w.experts);
    const int64_t recv = static_cast<int64_t>(want.src_idx.size());
    EXPECT_EQ(h.num_recv, recv);
    EXPECT_EQ(h.recv_src_idx, want.src_idx);
    EXPECT_EQ(h.recv_tokens_per_expert, want.per_expert);
    for (size_t e = 0; e < want.per_expert.size(); ++e) {
      const int32_t a = h.recv_tokens_per_expert_aligned[e];
      EXPECT_TRUE(a % align == 0 && a >= want.per_expert[e] && a - want.per_expert[e] < align);
    }
    // Prefix matrix: column me ends each source's slice.
    for (int32_t s = 0; s < w.world; ++s) {
      int64_t upto = 0;
      for (size_t i = 0; i < want.src_rank.size(); ++i) upto += want.src_rank[i] <= s;
      EXPECT_EQ(h.rank_prefix_matrix[s * w.world + me], upto) << "rank " << me << " source " << s;
    }

    std::vector<float> recv_x(recv * w.hidden), recv_w(recv * w.topk);
    std::vector<int64_t> recv_ids(recv * w.topk);
    neptest::poison(recv_x);
    neptest::poison(recv_w);
    neptest::poison(recv_ids);
    nep::DispatchArgs d;
    d.x = w.x[me].data();
    d.hidden = w.hidden;
    d.wire = wire;
    d.topk_weights = routing.weights.data();
    d.recv_x = recv_x.data();
    d.recv_topk_idx = recv_ids.data();
    d.recv_topk_weights = recv_w.data();
    nep::dispatch(t, &h, d);
    EXPECT_EQ(recv_ids, want.local_ids);
    EXPECT_EQ(recv_w, want.weights);
    for (int64_t r = 0; r < recv; ++r) {
      const auto rt = round_trip(wire, &w.x[want.src_rank[r]][want.src_idx[r] * w.hidden], w.hidden);
      ASSERT_EQ(std::memcmp(rt.data(), &recv_x[r * w.hidden], w.hidden * 4), 0)
          << "rank " << me << " row " << r << " wire " << wire;
    }

    // Cached dispatch of other data with the same handle, without weights.
    std::vector<float> x2(w.x[me].size());
    for (size_t i = 0; i < x2.size(); ++i) x2[i] = -2.0f * w.x[me][i];
    std::vector<float> recv_x2(recv * w.hidden);
    neptest::poison(recv_x2);
    nep::DispatchArgs d2;
    d2.x = x2.data();
    d2.hidden = w.hidden;
    d2.wire = wire;
    d2.recv_x = recv_x2.data();
    nep::dispatch(t, &h, d2);
    for (int64_t r = 0; r < recv; ++r) {
      const float* src_row = &w.x[want.src_rank[r]][want.src_idx[r] * w.hidden];
      std::vector<float> neg(src_row, src_row + w.hidden);
      for (float& v : neg) v *= -2.0f;
      const auto rt = round_trip(wire, neg.data(), w.hidden);
      ASSERT_EQ(std::memcmp(rt.data(), &recv_x2[r * w.hidden], w.hidden * 4), 0) << "cached row " << r;
    }

    const auto y = make_y(recv_x, me);
    std::vector<float> yw(recv * w.topk);
    for (size_t i = 0; i < yw.size(); ++i) yw[i] = recv_w[i] + static_cast<float>(me);
    std::vector<float> out(routing.tokens * w.hidden), out_w(routing.tokens * w.topk);
    neptest::poison(out);
    neptest::poison(out_w);
    nep::CombineArgs c;
    c.y = y.data();
    c.hidden = w.hidden;
    c.wire = wire;
    c.y_weights = yw.data();
    c.out = out.data();
    c.out_weights = out_w.data();
    nep::combine(t, &h, c);
    // Determinism: a second combine gives the same bits.
    std::vector<float> again(out.size());
    c.out = again.data();
    c.out_weights = nullptr;
    c.y_weights = nullptr;
    nep::combine(t, &h, c);
    EXPECT_EQ(std::memcmp(out.data(), again.data(), out.size() * 4), 0);
    std::lock_guard<std::mutex> lock(mu);
    ys[me] = y;
    y_weights[me] = yw;
    recv_src[me] = want.src_rank;
    combined[me] = out;
    combined_w[me] = out_w;
  });

  // Combine oracle: for each source token, the sum in rank order of the round-tripped rows.
  for (int32_t s = 0; s < w.world; ++s) {
    const int64_t tokens = w.routing[s].tokens;
    std::vector<float> want(tokens * w.hidden, 0.0f), want_w(tokens * w.topk, 0.0f);
    std::vector<bool> seen(tokens, false);
    for (int32_t r = 0; r < w.world; ++r) {
      const auto oracle = neptest::oracle_recv(w.routing, r, w.experts);
      for (size_t i = 0; i < oracle.src_idx.size(); ++i) {
        if (oracle.src_rank[i] != s) continue;
        const int64_t t = oracle.src_idx[i];
        const auto rt = round_trip(wire, &ys[r][i * w.hidden], w.hidden);
        for (int64_t c = 0; c < w.hidden; ++c) want[t * w.hidden + c] = seen[t] ? want[t * w.hidden + c] + rt[c] : rt[c];
        for (int32_t k = 0; k < w.topk; ++k) {
          const float v = y_weights[r][i * w.topk + k];
          want_w[t * w.topk + k] = seen[t] ? want_w[t * w.topk + k] + v : v;
        }
        seen[t] = true;
      }
    }
    EXPECT_EQ(std::memcmp(combined[s].data(), want.data(), want.size() * 4), 0) << "combine on rank " << s;
    EXPECT_EQ(std::memcmp(combined_w[s].data(), want_w.data(), want_w.size() * 4), 0) << "weights on rank " << s;
  }
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
      nep::dispatch_notify(t, r.idx.data(), r.tokens, w.topk, t.rank() == 0 ? w.experts : 2 * w.experts, 1);
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
      const uint8_t mine[3] = {static_cast<uint8_t>(t.rank()), 7, static_cast<uint8_t>(10 * t.rank())};
      gathered[t.rank()].resize(3 * world);
      nep::all_gather(t, mine, 3, gathered[t.rank()].data());
    });
    for (int32_t r = 0; r < world; ++r) {
      EXPECT_EQ(std::memcmp(got_f[r].data(), want_f.data(), count * 4), 0) << "world " << world << " rank " << r;
      EXPECT_EQ(std::memcmp(got_d[r].data(), want_d.data(), count * 8), 0) << "world " << world << " rank " << r;
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
