// Dispatch and combine through the C ABI on a world of one (loopback), against a plain loop
// oracle: ordering, source indices, local ids, weights, counts, alignment, cached dispatch,
// precision per wire format, and every argument error.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "codec.h"
#include "nativeep/c_api.h"
#include "test_support.h"

namespace {

int64_t addr(const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); }

struct CommDeleter {
  void operator()(nep_comm* c) const { nep_comm_destroy(c); }
};
struct HandleDeleter {
  void operator()(nep_handle* h) const { nep_handle_destroy(h); }
};
using CommPtr = std::unique_ptr<nep_comm, CommDeleter>;
using HandlePtr = std::unique_ptr<nep_handle, HandleDeleter>;

CommPtr loopback() {
  nep_comm* c = nullptr;
  char err[256];
  EXPECT_EQ(nep_comm_create_loopback(&c, err, sizeof err), NEP_OK) << err;
  return CommPtr(c);
}

HandlePtr notify(nep_comm* comm, const neptest::Routing& r, int32_t experts, int32_t align) {
  nep_handle* h = nullptr;
  char err[256];
  EXPECT_EQ(nep_dispatch_notify(comm, addr(r.idx.data()), r.tokens, r.topk, experts, align, &h, err,
                                sizeof err),
            NEP_OK)
      << err;
  return HandlePtr(h);
}

struct Received {
  std::vector<float> x, weights;
  std::vector<int64_t> ids;
};

Received dispatch(nep_comm* comm, nep_handle* h, const std::vector<float>& x, int64_t hidden,
                  int32_t wire, const std::vector<float>* weights) {
  const int64_t recv = nep_handle_num_recv(h);
  const int32_t topk = nep_handle_num_topk(h);
  Received out;
  out.x.resize(recv * hidden);
  out.ids.resize(recv * topk);
  out.weights.resize(recv * topk);
  neptest::poison(out.x);
  neptest::poison(out.ids);
  neptest::poison(out.weights);
  char err[256];
  EXPECT_EQ(nep_dispatch(comm, h, addr(x.data()), hidden, wire, weights ? addr(weights->data()) : 0,
                         addr(out.x.data()), addr(out.ids.data()),
                         weights ? addr(out.weights.data()) : 0, err, sizeof err),
            NEP_OK)
      << err;
  return out;
}

struct Combined {
  std::vector<float> out, weights;
};

Combined combine(nep_comm* comm, nep_handle* h, const std::vector<float>& y, int64_t hidden,
                 int32_t wire, const std::vector<float>* y_weights) {
  const int64_t tokens = nep_handle_num_tokens(h);
  const int32_t topk = nep_handle_num_topk(h);
  Combined c;
  c.out.resize(tokens * hidden);
  c.weights.resize(tokens * topk);
  neptest::poison(c.out);
  neptest::poison(c.weights);
  char err[256];
  EXPECT_EQ(
      nep_combine(comm, h, addr(y.data()), hidden, wire, y_weights ? addr(y_weights->data()) : 0,
                  addr(c.out.data()), y_weights ? addr(c.weights.data()) : 0, err, sizeof err),
      NEP_OK)
      << err;
  return c;
}

// Routing on one rank where rows 0, 10 and the last go nowhere.
neptest::Routing routing_with_empty_rows(std::mt19937_64& rng, int64_t tokens, int32_t topk,
                                         int32_t experts) {
  auto r = neptest::random_routing(rng, tokens, topk, experts, 0.3, 0.5, 9);
  for (int64_t t : {int64_t{0}, int64_t{10}, tokens - 1}) {
    for (int32_t k = 0; k < topk; ++k) r.idx[t * topk + k] = -1;
  }
  return r;
}

std::vector<float> wire_round_trip(int32_t wire, const float* row, int64_t hidden) {
  std::vector<uint8_t> buf(nep_wire_row_bytes(wire, hidden));
  std::vector<float> out(hidden);
  nep::encode_row(static_cast<nep::Wire>(wire), row, hidden, buf.data());
  nep::decode_row(static_cast<nep::Wire>(wire), buf.data(), hidden, out.data());
  return out;
}

}  // namespace

TEST(LoopbackEp, DispatchAndCombineMatchTheOracle) {
  std::mt19937_64 rng(31);
  const int64_t tokens = 300, hidden = 160;
  const int32_t topk = 8, experts = 64, align = 32;
  auto comm = loopback();
  ASSERT_EQ(nep_comm_rank(comm.get()), 0);
  ASSERT_EQ(nep_comm_world_size(comm.get()), 1);
  const auto routing = routing_with_empty_rows(rng, tokens, topk, experts);
  const auto x = neptest::random_rows(rng, tokens, hidden);
  auto h = notify(comm.get(), routing, experts, align);
  ASSERT_NE(h, nullptr);
  const auto want = neptest::oracle_recv({routing}, 0, experts);
  const int64_t recv = nep_handle_num_recv(h.get());
  ASSERT_EQ(recv, static_cast<int64_t>(want.src_idx.size()));
  ASSERT_LE(recv, tokens - 3);
  EXPECT_EQ(nep_handle_num_tokens(h.get()), tokens);
  EXPECT_EQ(nep_handle_num_experts(h.get()), experts);
  EXPECT_EQ(nep_handle_num_local_experts(h.get()), experts);
  EXPECT_EQ(nep_handle_world_size(h.get()), 1);

  std::vector<int32_t> src(recv, -5), prefix(1, -5), raw(experts, -5), aligned(experts, -5);
  std::vector<uint8_t> in_rank(tokens, 0xEE);
  nep_handle_recv_src_idx(h.get(), src.data());
  nep_handle_rank_prefix_matrix(h.get(), prefix.data());
  nep_handle_recv_tokens_per_expert(h.get(), 0, raw.data());
  nep_handle_recv_tokens_per_expert(h.get(), 1, aligned.data());
  nep_handle_is_token_in_rank(h.get(), in_rank.data());
  EXPECT_EQ(src, want.src_idx);
  EXPECT_EQ(prefix[0], recv);
  EXPECT_EQ(raw, want.per_expert);
  for (int32_t e = 0; e < experts; ++e) {
    EXPECT_EQ(aligned[e] % align, 0);
    EXPECT_GE(aligned[e], raw[e]);
    EXPECT_LT(aligned[e] - raw[e], align);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    bool routed = false;
    for (int32_t k = 0; k < topk; ++k) routed = routed || routing.idx[t * topk + k] >= 0;
    EXPECT_EQ(in_rank[t], routed ? 1 : 0) << t;
  }

  const Received got = dispatch(comm.get(), h.get(), x, hidden, NEP_WIRE_FP32, &routing.weights);
  for (int64_t r = 0; r < recv; ++r) {
    ASSERT_EQ(std::memcmp(&got.x[r * hidden], &x[want.src_idx[r] * hidden], hidden * 4), 0)
        << "row " << r;
  }
  EXPECT_EQ(got.ids, want.local_ids);
  EXPECT_EQ(got.weights, want.weights);

  // Combine: y is one row per received token; out[t] is that row, or zeros when t went nowhere.
  const auto y = neptest::random_rows(rng, recv, hidden);
  const auto y_weights = neptest::random_rows(rng, recv, topk);
  const Combined c = combine(comm.get(), h.get(), y, hidden, NEP_WIRE_FP32, &y_weights);
  std::vector<float> want_out(tokens * hidden, 0.0f), want_w(tokens * topk, 0.0f);
  for (int64_t r = 0; r < recv; ++r) {
    std::memcpy(&want_out[src[r] * hidden], &y[r * hidden], hidden * 4);
    std::memcpy(&want_w[src[r] * topk], &y_weights[r * topk], topk * 4);
  }
  EXPECT_EQ(std::memcmp(c.out.data(), want_out.data(), want_out.size() * 4), 0);
  EXPECT_EQ(std::memcmp(c.weights.data(), want_w.data(), want_w.size() * 4), 0);
}

TEST(LoopbackEp, ZeroTokensAndAllRowsUnrouted) {
  auto comm = loopback();
  char err[256];
  // T = 0: every address may be 0.
  nep_handle* raw = nullptr;
  ASSERT_EQ(nep_dispatch_notify(comm.get(), 0, 0, 4, 8, 1, &raw, err, sizeof err), NEP_OK) << err;
  HandlePtr h(raw);
  EXPECT_EQ(nep_handle_num_recv(h.get()), 0);
  EXPECT_EQ(nep_dispatch(comm.get(), h.get(), 0, 64, NEP_WIRE_FP8, 0, 0, 0, 0, err, sizeof err),
            NEP_OK)
      << err;
  EXPECT_EQ(nep_combine(comm.get(), h.get(), 0, 64, NEP_WIRE_BF16, 0, 0, 0, err, sizeof err),
            NEP_OK)
      << err;

  // Every token routed nowhere: R = 0 and combine writes exact zeros over the poison.
  neptest::Routing r;
  r.tokens = 5;
  r.topk = 2;
  r.idx.assign(10, -1);
  r.weights.assign(10, 1.0f);
  auto h2 = notify(comm.get(), r, 8, 32);
  EXPECT_EQ(nep_handle_num_recv(h2.get()), 0);
  std::vector<int32_t> aligned(8, -1);
  nep_handle_recv_tokens_per_expert(h2.get(), 1, aligned.data());
  EXPECT_EQ(aligned, std::vector<int32_t>(8, 0));
  std::vector<float> y;
  const std::vector<float> yw;
  const Combined c = combine(comm.get(), h2.get(), y, 16, NEP_WIRE_FP32, &yw);
  EXPECT_EQ(c.out, std::vector<float>(5 * 16, 0.0f));
  EXPECT_EQ(c.weights, std::vector<float>(10, 0.0f));
}

TEST(LoopbackEp, CachedDispatchEqualsFreshDispatchForEveryWire) {
  std::mt19937_64 rng(41);
  const int64_t tokens = 200, hidden = 300;
  const int32_t topk = 6, experts = 32;
  auto comm = loopback();
  const auto routing = routing_with_empty_rows(rng, tokens, topk, experts);
  const auto x1 = neptest::random_rows(rng, tokens, hidden);
  const auto x2 = neptest::random_rows(rng, tokens, hidden);
  for (int32_t wire = NEP_WIRE_FP32; wire <= NEP_WIRE_MXFP8; ++wire) {
    auto h = notify(comm.get(), routing, experts, 1);
    dispatch(comm.get(), h.get(), x1, hidden, wire, &routing.weights);
    const Received cached = dispatch(comm.get(), h.get(), x2, hidden, wire, nullptr);
    auto fresh_h = notify(comm.get(), routing, experts, 1);
    const Received fresh = dispatch(comm.get(), fresh_h.get(), x2, hidden, wire, &routing.weights);
    EXPECT_EQ(std::memcmp(cached.x.data(), fresh.x.data(), fresh.x.size() * 4), 0)
        << "wire " << wire;
    EXPECT_EQ(cached.ids, fresh.ids);
  }
}

TEST(LoopbackEp, Bf16ExactDataIsBitwiseThroughBf16) {
  std::mt19937_64 rng(43);
  const int64_t tokens = 100, hidden = 1024;
  auto comm = loopback();
  const auto routing = routing_with_empty_rows(rng, tokens, 4, 16);
  auto x = neptest::random_rows(rng, tokens, hidden);
  for (float& v : x) v = nep::bf16_to_float(nep::bf16_from_float(v));
  auto h = notify(comm.get(), routing, 16, 1);
  const int64_t recv = nep_handle_num_recv(h.get());
  const Received got = dispatch(comm.get(), h.get(), x, hidden, NEP_WIRE_BF16, nullptr);
  std::vector<int32_t> src(recv);
  nep_handle_recv_src_idx(h.get(), src.data());
  for (int64_t r = 0; r < recv; ++r) {
    ASSERT_EQ(std::memcmp(&got.x[r * hidden], &x[src[r] * hidden], hidden * 4), 0) << r;
  }
  const Combined c = combine(comm.get(), h.get(), got.x, hidden, NEP_WIRE_BF16, nullptr);
  for (int64_t r = 0; r < recv; ++r) {
    ASSERT_EQ(std::memcmp(&c.out[src[r] * hidden], &x[src[r] * hidden], hidden * 4), 0) << r;
  }
}

// FP8 and MXFP8: each row within a float64 relative error bound, equal bitwise to the codec's
// own round trip (so the wire really carries the format), and weights still exact.
TEST(LoopbackEp, LossyWiresStayWithinTolerance) {
  std::mt19937_64 rng(47);
  const int64_t tokens = 150, hidden = 7168 / 4;
  const int32_t topk = 8, experts = 64;
  auto comm = loopback();
  const auto routing = routing_with_empty_rows(rng, tokens, topk, experts);
  const auto x = neptest::random_rows(rng, tokens, hidden);
  auto h = notify(comm.get(), routing, experts, 1);
  const int64_t recv = nep_handle_num_recv(h.get());
  std::vector<int32_t> src(recv);
  nep_handle_recv_src_idx(h.get(), src.data());
  const auto want = neptest::oracle_recv({routing}, 0, experts);
  for (int32_t wire : {NEP_WIRE_BF16, NEP_WIRE_FP8, NEP_WIRE_MXFP8}) {
    const double tol = wire == NEP_WIRE_BF16 ? 1.0 / 256 : 1.0 / 16;
    const Received got = dispatch(comm.get(), h.get(), x, hidden, wire, &routing.weights);
    EXPECT_EQ(got.weights, want.weights);
    bool lossy = false;
    for (int64_t r = 0; r < recv; ++r) {
      const float* xs = &x[src[r] * hidden];
      const auto rt = wire_round_trip(wire, xs, hidden);
      ASSERT_EQ(std::memcmp(rt.data(), &got.x[r * hidden], hidden * 4), 0)
          << "wire " << wire << " row " << r;
      double num = 0, den = 0;
      for (int64_t c = 0; c < hidden; ++c) {
        const double d = static_cast<double>(got.x[r * hidden + c]) - xs[c];
        num += d * d;
        den += static_cast<double>(xs[c]) * xs[c];
        lossy = lossy || d != 0;
      }
      ASSERT_LE(std::sqrt(num / den), tol) << "wire " << wire << " row " << r;
    }
    EXPECT_TRUE(lossy) << "wire " << wire << " changed nothing: was it applied?";
    // Combine of the received rows: out[t] is the wire round trip of y's row.
    const Combined c = combine(comm.get(), h.get(), got.x, hidden, wire, nullptr);
    for (int64_t r = 0; r < recv; ++r) {
      const auto rt = wire_round_trip(wire, &got.x[r * hidden], hidden);
      ASSERT_EQ(std::memcmp(rt.data(), &c.out[src[r] * hidden], hidden * 4), 0) << "wire " << wire;
    }
  }
}

TEST(LoopbackEp, EveryBadArgumentIsRejectedByName) {
  std::mt19937_64 rng(53);
  auto comm = loopback();
  const auto routing = neptest::random_routing(rng, 20, 4, 16, 0.0, 0.0);
  auto h = notify(comm.get(), routing, 16, 1);
  const int64_t recv = nep_handle_num_recv(h.get());
  ASSERT_GT(recv, 0);
  const int64_t hidden = 64;
  std::vector<float> x(20 * hidden, 1.0f), rx(recv * hidden), w(20 * 4, 0.5f), rw(recv * 4);
  std::vector<int64_t> ids(recv * 4);
  char err[512];
  auto expect_invalid = [&](int32_t rc, const std::string& needle) {
    EXPECT_EQ(rc, NEP_ERR_INVALID_ARGUMENT) << needle;
    EXPECT_NE(std::string(err).find(needle), std::string::npos) << "message: " << err;
  };
  nep_handle* out = nullptr;
  expect_invalid(
      nep_dispatch_notify(nullptr, addr(routing.idx.data()), 20, 4, 16, 1, &out, err, sizeof err),
      "comm is null");
  expect_invalid(nep_dispatch_notify(comm.get(), addr(routing.idx.data()), 20, 4, 16, 1, nullptr,
                                     err, sizeof err),
                 "out is null");
  expect_invalid(nep_dispatch_notify(comm.get(), addr(routing.idx.data()), 20, 4, 16, 0, &out, err,
                                     sizeof err),
                 "expert_alignment = 0 must be >= 1");
  expect_invalid(
      nep_dispatch_notify(comm.get(), addr(routing.idx.data()), 20, 4, 8, 1, &out, err, sizeof err),
      "is outside [-1, 8)");
  expect_invalid(nep_dispatch_notify(comm.get(), 0, 20, 4, 16, 1, &out, err, sizeof err),
                 "topk_idx is null");
  expect_invalid(nep_dispatch_notify(comm.get(), addr(routing.idx.data()), 20, 0, 16, 1, &out, err,
                                     sizeof err),
                 "num_topk = 0");
  EXPECT_EQ(out, nullptr);

  expect_invalid(nep_dispatch(nullptr, h.get(), addr(x.data()), hidden, 0, 0, addr(rx.data()), 0, 0,
                              err, sizeof err),
                 "comm is null");
  expect_invalid(nep_dispatch(comm.get(), nullptr, addr(x.data()), hidden, 0, 0, addr(rx.data()), 0,
                              0, err, sizeof err),
                 "handle is null");
  expect_invalid(nep_dispatch(comm.get(), h.get(), addr(x.data()), 0, 0, 0, addr(rx.data()), 0, 0,
                              err, sizeof err),
                 "hidden = 0 must be > 0");
  expect_invalid(nep_dispatch(comm.get(), h.get(), addr(x.data()), hidden, 4, 0, addr(rx.data()), 0,
                              0, err, sizeof err),
                 "wire = 4 is not a wire format");
  expect_invalid(
      nep_dispatch(comm.get(), h.get(), 0, hidden, 0, 0, addr(rx.data()), 0, 0, err, sizeof err),
      "x is null");
  expect_invalid(
      nep_dispatch(comm.get(), h.get(), addr(x.data()), hidden, 0, 0, 0, 0, 0, err, sizeof err),
      "recv_x is null");
  expect_invalid(nep_dispatch(comm.get(), h.get(), addr(x.data()), hidden, 0, addr(w.data()),
                              addr(rx.data()), 0, 0, err, sizeof err),
                 "recv_topk_weights is null");
  expect_invalid(nep_dispatch(comm.get(), h.get(), addr(x.data()), hidden, 0, 0, addr(rx.data()), 0,
                              addr(rw.data()), err, sizeof err),
                 "topk_weights is null");
  EXPECT_EQ(nep_dispatch(comm.get(), h.get(), addr(x.data()), hidden, 0, addr(w.data()),
                         addr(rx.data()), addr(ids.data()), addr(rw.data()), err, sizeof err),
            NEP_OK)
      << err;

  std::vector<float> y(recv * hidden, 1.0f), o(20 * hidden), yw(recv * 4), ow(20 * 4);
  expect_invalid(nep_combine(nullptr, h.get(), addr(y.data()), hidden, 0, 0, addr(o.data()), 0, err,
                             sizeof err),
                 "comm is null");
  expect_invalid(nep_combine(comm.get(), nullptr, addr(y.data()), hidden, 0, 0, addr(o.data()), 0,
                             err, sizeof err),
                 "handle is null");
  expect_invalid(nep_combine(comm.get(), h.get(), addr(y.data()), -3, 0, 0, addr(o.data()), 0, err,
                             sizeof err),
                 "hidden = -3 must be > 0");
  expect_invalid(nep_combine(comm.get(), h.get(), addr(y.data()), hidden, -1, 0, addr(o.data()), 0,
                             err, sizeof err),
                 "wire = -1 is not a wire format");
  expect_invalid(
      nep_combine(comm.get(), h.get(), 0, hidden, 0, 0, addr(o.data()), 0, err, sizeof err),
      "y is null");
  expect_invalid(
      nep_combine(comm.get(), h.get(), addr(y.data()), hidden, 0, 0, 0, 0, err, sizeof err),
      "out is null");
  expect_invalid(nep_combine(comm.get(), h.get(), addr(y.data()), hidden, 0, addr(yw.data()),
                             addr(o.data()), 0, err, sizeof err),
                 "out_weights is null");
  expect_invalid(nep_combine(comm.get(), h.get(), addr(y.data()), hidden, 0, 0, addr(o.data()),
                             addr(ow.data()), err, sizeof err),
                 "y_weights is null");
  EXPECT_EQ(nep_combine(comm.get(), h.get(), addr(y.data()), hidden, 0, addr(yw.data()),
                        addr(o.data()), addr(ow.data()), err, sizeof err),
            NEP_OK)
      << err;

  EXPECT_EQ(nep_comm_create_loopback(nullptr, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(nep_comm_rank(nullptr), -1);
  EXPECT_EQ(nep_comm_world_size(nullptr), -1);
  EXPECT_EQ(nep_handle_num_recv(nullptr), -1);
  nep_handle_recv_src_idx(nullptr, nullptr);  // no-op, no crash
  nep_comm_destroy(nullptr);
  nep_handle_destroy(nullptr);
}

// Outputs of 16 MiB and more are written with streaming stores: dispatch and combine of a large
// [T, H] (20 MB) still give, row by row, exactly the codec's round trip (dispatch) and the zero
// rows and round-tripped sums (combine), for every wire, with poisoned outputs.
TEST(LoopbackEp, LargeOutputsWrittenWithStreamingStoresAreExact) {
  std::mt19937_64 rng(53);
  const int64_t tokens = 700, hidden = 7168;  // 700 * 7168 * 4 B = 20 MB > 16 MiB
  const int32_t topk = 4, experts = 16;
  auto comm = loopback();
  const auto routing = routing_with_empty_rows(rng, tokens, topk, experts);
  const auto x = neptest::random_rows(rng, tokens, hidden);
  for (int32_t wire = NEP_WIRE_FP32; wire <= NEP_WIRE_MXFP8; ++wire) {
    auto h = notify(comm.get(), routing, experts, 1);
    const int64_t recv = nep_handle_num_recv(h.get());
    ASSERT_GE(recv * hidden * 4, int64_t{16} << 20);
    std::vector<int32_t> src(recv);
    nep_handle_recv_src_idx(h.get(), src.data());
    const Received got = dispatch(comm.get(), h.get(), x, hidden, wire, nullptr);
    for (int64_t r = 0; r < recv; ++r) {
      const auto want = wire_round_trip(wire, &x[src[r] * hidden], hidden);
      ASSERT_EQ(std::memcmp(&got.x[r * hidden], want.data(), hidden * 4), 0)
          << "wire " << wire << " row " << r;
    }
    const Combined c = combine(comm.get(), h.get(), got.x, hidden, wire, nullptr);
    std::vector<bool> reached(tokens, false);
    for (int64_t r = 0; r < recv; ++r) {
      reached[src[r]] = true;
      const auto want = wire_round_trip(wire, &got.x[r * hidden], hidden);
      ASSERT_EQ(std::memcmp(&c.out[src[r] * hidden], want.data(), hidden * 4), 0)
          << "wire " << wire << " token " << src[r];
    }
    for (int64_t t = 0; t < tokens; ++t) {
      if (reached[t]) continue;
      for (int64_t i = 0; i < hidden; ++i)
        ASSERT_EQ(c.out[t * hidden + i], 0.0f) << "wire " << wire << " token " << t;
    }
  }
}
