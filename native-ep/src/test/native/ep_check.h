// One rank's full check of notify / dispatch / cached dispatch / combine against the plain
// all-to-all oracle, for any transport (threads in one process or forked processes). Every rank
// builds the same World from the same seed, so each can compute the oracle for itself. Returns
// the failures as text (empty when all checks pass) so forked children can report them.
#ifndef NATIVEEP_TESTS_EP_CHECK_H_
#define NATIVEEP_TESTS_EP_CHECK_H_

#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "codec.h"
#include "engine.h"
#include "test_support.h"

namespace neptest {

struct World {
  int32_t world = 1, experts = 8, topk = 4;
  int64_t hidden = 16;
  std::vector<Routing> routing;       // per rank
  std::vector<std::vector<float>> x;  // per rank [T, H]
};

// Uneven tokens per rank (base + 11 r), rank 1 with none, a hot expert, -1 slots, and token 0
// of each rank routed nowhere.
// With all_to_one every routed token selects expert 0 only (the worst imbalance).
inline World make_world(uint64_t seed, int32_t world, int64_t hidden, int64_t base_tokens = 37,
                        bool all_to_one = false) {
  std::mt19937_64 rng(seed);
  World w;
  w.world = world;
  w.experts = 8 * world;
  w.topk = 4;
  w.hidden = hidden;
  for (int32_t r = 0; r < world; ++r) {
    const int64_t tokens = r == 1 ? 0 : base_tokens + 11 * r;
    auto routing = random_routing(rng, tokens, w.topk, w.experts, 0.25, 0.4, 3);
    if (all_to_one) {
      for (size_t i = 0; i < routing.idx.size(); ++i) routing.idx[i] = i % w.topk == 0 ? 0 : -1;
    }
    if (tokens > 0) {
      for (int32_t k = 0; k < w.topk; ++k) routing.idx[k] = -1;
    }
    w.routing.push_back(routing);
    w.x.push_back(random_rows(rng, tokens, hidden));
  }
  return w;
}

inline std::vector<float> wire_round_trip(int32_t wire, const float* row, int64_t hidden) {
  const auto w = static_cast<nep::Wire>(wire);
  std::vector<uint8_t> buf(static_cast<size_t>(nep::wire_row_bytes(w, hidden)));
  std::vector<float> out(static_cast<size_t>(hidden));
  nep::encode_row(w, row, hidden, buf.data());
  nep::decode_row(w, buf.data(), hidden, out.data());
  return out;
}

// y on rank r for a received row: depends on the data and on r, so each rank's term differs.
inline float y_value(float recv, int32_t rank) {
  return recv * static_cast<float>(rank + 1) + 0.25f;
}

inline std::string check_ep_rank(nep::Transport& t, const World& w, int32_t wire, int32_t align,
                                 int repeats = 2) {
  std::ostringstream bad;
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok && failures++ < 20) bad << "rank " << t.rank() << ": " << what << "\n";
  };
  const int32_t me = t.rank();
  const int64_t hidden = w.hidden;
  const int32_t topk = w.topk;
  const Routing& routing = w.routing[me];
  const nep::DispatchHandle h =
      nep::dispatch_notify(t, routing.idx.data(), routing.tokens, topk, w.experts, align);
  const OracleRecv want = oracle_recv(w.routing, me, w.experts);
  const int64_t recv = static_cast<int64_t>(want.src_idx.size());
  check(h.num_recv == recv,
        "num_recv " + std::to_string(h.num_recv) + " != " + std::to_string(recv));
  if (h.num_recv != recv) return bad.str();
  check(h.recv_src_idx == want.src_idx, "recv_src_idx differs from the oracle");
  check(h.recv_tokens_per_expert == want.per_expert, "raw per-expert counts differ");
  for (size_t e = 0; e < want.per_expert.size(); ++e) {
    const int32_t a = h.recv_tokens_per_expert_aligned[e];
    check(a % align == 0 && a >= want.per_expert[e] && a - want.per_expert[e] < align,
          "aligned count of local expert " + std::to_string(e) + " = " + std::to_string(a));
  }
  for (int32_t s = 0; s < w.world; ++s) {
    int64_t upto = 0;
    for (int32_t src : want.src_rank) upto += src <= s;
    check(h.rank_prefix_matrix[s * w.world + me] == upto,
          "rank_prefix_matrix[" + std::to_string(s) +
              "][me] = " + std::to_string(h.rank_prefix_matrix[s * w.world + me]) + ", want " +
              std::to_string(upto));
  }

  // Fresh dispatch with weights.
  std::vector<float> recv_x(recv * hidden), recv_w(recv * topk);
  std::vector<int64_t> recv_ids(recv * topk);
  poison(recv_x);
  poison(recv_w);
  poison(recv_ids);
  nep::DispatchArgs d;
  d.x = w.x[me].data();
  d.hidden = hidden;
  d.wire = wire;
  d.topk_weights = routing.weights.data();
  d.recv_x = recv_x.data();
  d.recv_topk_idx = recv_ids.data();
  d.recv_topk_weights = recv_w.data();
  nep::dispatch(t, &h, d);
  check(recv_ids == want.local_ids, "recv_topk_idx differs from the oracle");
  check(std::memcmp(recv_w.data(), want.weights.data(), recv_w.size() * 4) == 0,
        "recv_topk_weights differ from the oracle");
  for (int64_t r = 0; r < recv; ++r) {
    const auto rt = wire_round_trip(wire, &w.x[want.src_rank[r]][want.src_idx[r] * hidden], hidden);
    check(std::memcmp(rt.data(), &recv_x[r * hidden], hidden * 4) == 0,
          "recv_x row " + std::to_string(r) + " (from rank " + std::to_string(want.src_rank[r]) +
              " token " + std::to_string(want.src_idx[r]) + ") differs");
  }

  // Cached dispatch of other data, without weights.
  std::vector<float> x2(w.x[me].size());
  for (size_t i = 0; i < x2.size(); ++i) x2[i] = -2.0f * w.x[me][i];
  std::vector<float> recv_x2(recv * hidden);
  poison(recv_x2);
  nep::DispatchArgs d2;
  d2.x = x2.data();
  d2.hidden = hidden;
  d2.wire = wire;
  d2.recv_x = recv_x2.data();
  nep::dispatch(t, &h, d2);
  for (int64_t r = 0; r < recv; ++r) {
    const float* src = &w.x[want.src_rank[r]][want.src_idx[r] * hidden];
    std::vector<float> neg(src, src + hidden);
    for (float& v : neg) v *= -2.0f;
    const auto rt = wire_round_trip(wire, neg.data(), hidden);
    check(std::memcmp(rt.data(), &recv_x2[r * hidden], hidden * 4) == 0,
          "cached dispatch row " + std::to_string(r) + " differs");
  }

  // Combine y (derived from what arrived) and weights (received weights + rank).
  std::vector<float> y(recv_x.size()), yw(recv_w.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = y_value(recv_x[i], me);
  for (size_t i = 0; i < yw.size(); ++i) yw[i] = recv_w[i] + static_cast<float>(me);
  std::vector<float> out(routing.tokens * hidden), out_w(routing.tokens * topk);
  poison(out);
  poison(out_w);
  nep::CombineArgs c;
  c.y = y.data();
  c.hidden = hidden;
  c.wire = wire;
  c.y_weights = yw.data();
  c.out = out.data();
  c.out_weights = out_w.data();
  nep::combine(t, &h, c);

  // Oracle: for each token, the ranks that hold one of its experts, in rank order.
  const int32_t local = w.experts / w.world;
  std::vector<float> want_out(out.size(), 0.0f), want_w(out_w.size(), 0.0f);
  for (int64_t tok = 0; tok < routing.tokens; ++tok) {
    bool seen = false;
    const auto xr = wire_round_trip(wire, &w.x[me][tok * hidden], hidden);
    for (int32_t r = 0; r < w.world; ++r) {
      bool holds = false;
      for (int32_t k = 0; k < topk; ++k) {
        const int64_t e = routing.idx[tok * topk + k];
        holds = holds || (e >= 0 && e / local == r);
      }
      if (!holds) continue;
      std::vector<float> yr(static_cast<size_t>(hidden));
      for (int64_t i = 0; i < hidden; ++i) yr[i] = y_value(xr[i], r);
      const auto term = wire_round_trip(wire, yr.data(), hidden);
      for (int64_t i = 0; i < hidden; ++i) {
        float& o = want_out[tok * hidden + i];
        o = seen ? o + term[i] : term[i];
      }
      for (int32_t k = 0; k < topk; ++k) {
        const int64_t e = routing.idx[tok * topk + k];
        const float wk = (e >= 0 && e / local == r) ? routing.weights[tok * topk + k] : 0.0f;
        float& o = want_w[tok * topk + k];
        o = seen ? o + (wk + static_cast<float>(r)) : wk + static_cast<float>(r);
      }
      seen = true;
    }
  }
  for (int64_t tok = 0; tok < routing.tokens; ++tok) {
    check(std::memcmp(&out[tok * hidden], &want_out[tok * hidden], hidden * 4) == 0,
          "combined row " + std::to_string(tok) + " differs from the rank-ordered oracle sum");
  }
  check(std::memcmp(out_w.data(), want_w.data(), out_w.size() * 4) == 0, "combined weights differ");

  // Determinism: the same combine again gives the same bits.
  for (int rep = 1; rep < repeats; ++rep) {
    std::vector<float> again(out.size());
    poison(again);
    c.out = again.data();
    c.y_weights = nullptr;
    c.out_weights = nullptr;
    nep::combine(t, &h, c);
    check(std::memcmp(again.data(), out.data(), out.size() * 4) == 0,
          "combine repeat " + std::to_string(rep) + " changed bits");
  }
  return bad.str();
}

}  // namespace neptest

#endif  // NATIVEEP_TESTS_EP_CHECK_H_
