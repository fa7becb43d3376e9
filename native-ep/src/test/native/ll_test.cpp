// Low-latency mode on one rank (loopback communicator) through the C ABI: steps over every wire
// format with send and receive split around normal-mode work, double buffering, refusals, op
// misuse, abandoning, the buffer-creation checks, the power-of-two FP8 codec, and a mutation test
// proving the checks detect corrupted outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ll_check.h"

namespace {

using neptest::LlRankCheck;
using neptest::LlShape;

// A loopback communicator with one low-latency buffer.
struct Loopback {
  nep_comm* comm = nullptr;
  nep_ll_buffer* buf = nullptr;
  char err[1024] = {0};

  explicit Loopback(const LlShape& s, int64_t timeout_ms = 5000) {
    EXPECT_EQ(nep_comm_create_loopback(&comm, err, sizeof err), NEP_OK) << err;
    EXPECT_EQ(nep_ll_buffer_create(comm, s.max_tokens, s.hidden, s.experts, s.topk, s.max_wire,
                                   timeout_ms, &buf, err, sizeof err),
              NEP_OK)
        << err;
  }
  ~Loopback() {
    nep_ll_buffer_destroy(buf);
    nep_comm_destroy(comm);
  }
  Loopback(const Loopback&) = delete;
  Loopback& operator=(const Loopback&) = delete;
};

LlShape small_shape() { return neptest::ll_shape(1, 16, 384, 8, 4); }

}  // namespace

TEST(LlCodec, Fp8PowerOfTwoScalesCoverTheBlockAndDecodeWithTheFp8Decoder) {
  std::mt19937_64 rng(5);
  const int64_t hidden = 300;  // two full blocks and a partial one
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int rep = 0; rep < 50; ++rep) {
    std::vector<float> x(hidden);
    const float mag = std::ldexp(1.0f, rep % 40 - 20);
    for (float& v : x) v = n(rng) * mag;
    if (rep % 7 == 0) std::fill(x.begin() + 128, x.begin() + 256, 0.0f);  // an all-zero block
    std::vector<uint8_t> enc(static_cast<size_t>(nep::wire_row_bytes(nep::Wire::kFp8, hidden)));
    nep::encode_row_fp8_pow2(x.data(), hidden, enc.data());
    std::vector<float> dec(hidden);
    nep::decode_row(nep::Wire::kFp8, enc.data(), hidden, dec.data());
    for (int64_t b = 0; b * 128 < hidden; ++b) {
      float scale;
      std::memcpy(&scale, enc.data() + hidden + 4 * b, 4);
      int exp = 0;
      ASSERT_EQ(std::frexp(scale, &exp), 0.5f)
          << "scale " << scale << " of block " << b << " is not a power of two";
      float amax = 0.0f;
      for (int64_t i = b * 128; i < std::min(hidden, (b + 1) * 128); ++i)
        amax = std::max(amax, std::fabs(x[i]));
      if (amax > 0.0f) {
        EXPECT_LE(amax / scale, 448.0f) << "block " << b << " would clip";
        EXPECT_GT(amax / scale, 224.0f)
            << "block " << b << ": the scale is not the smallest power of two";
      }
      for (int64_t i = b * 128; i < std::min(hidden, (b + 1) * 128); ++i) {
        const float err = std::fabs(dec[i] - x[i]);
        EXPECT_LE(err, std::max(std::fabs(x[i]) * 0.0625f, scale * std::ldexp(1.0f, -10)))
            << "channel " << i;
        if (amax == 0.0f) EXPECT_EQ(dec[i], 0.0f);
      }
    }
  }
  float special[3] = {std::nanf(""), 1.0f, -2.0f};
  std::vector<float> row(128, 0.5f);
  std::copy(special, special + 3, row.begin());
  std::vector<uint8_t> enc(128 + 4);
  nep::encode_row_fp8_pow2(row.data(), 128, enc.data());
  std::vector<float> dec(128);
  nep::decode_row(nep::Wire::kFp8, enc.data(), 128, dec.data());
  EXPECT_TRUE(std::isnan(dec[0]));
  EXPECT_EQ(dec[1], 1.0f);  // amax 2 -> scale 2^-7: 1 and -2 are exact
  EXPECT_EQ(dec[2], -2.0f);
}

TEST(LlLoopback, StepsDoubleBufferingAndRefusals) {
  const LlShape s = small_shape();
  Loopback lb(s);
  ASSERT_NE(lb.buf, nullptr);
  EXPECT_EQ(nep_ll_buffer_world_size(lb.buf), 1);
  EXPECT_EQ(nep_ll_buffer_num_local_experts(lb.buf), 8);
  EXPECT_EQ(nep_ll_buffer_max_tokens_per_rank(lb.buf), 16);
  EXPECT_GT(nep_ll_buffer_bytes(lb.buf), 0);
  LlRankCheck c(lb.comm, lb.buf, s, 11);
  neptest::ll_steps(c, 10);
  neptest::ll_double_buffering(c, -1);
  neptest::ll_refusals(c);
  EXPECT_EQ(c.failures(), "");
}

TEST(LlLoopback, HiddenNotAMultipleOf128AndMoreTopkThanExperts) {
  LlShape s = small_shape();
  s.hidden = 300;
  s.experts = 5;
  s.topk = 5;  // every expert selected: min(K, El) sizing at its limit
  Loopback lb(s);
  LlRankCheck c(lb.comm, lb.buf, s, 12);
  neptest::ll_steps(c, 5);
  EXPECT_EQ(c.failures(), "");
}

TEST(LlLoopback, ChecksDetectCorruptedOutputs) {
  const LlShape s = small_shape();
  Loopback lb(s);
  const std::vector<neptest::LlWires> wires(1, neptest::LlWires{NEP_WIRE_BF16, 0, NEP_WIRE_BF16});
  auto run = [&](const std::function<void(neptest::LlRecv&)>& mutate_recv,
                 const std::function<void(std::vector<float>&)>& mutate_out) {
    LlRankCheck c(lb.comm, lb.buf, s, 13);
    const auto all = c.inputs(0, [&](int32_t) { return s.max_tokens; });
    neptest::LlRecv r = c.dispatch_recv(c.dispatch_send(all[0], wires[0]));
    const auto y = c.expert_outputs(r);
    mutate_recv(r);
    c.check_dispatch(all, wires, r, "mutated");
    auto out = c.combine_recv(c.combine_send(r, y, all[0], wires[0]), all[0].tokens);
    mutate_out(out);
    c.check_combine(all, wires, out, neptest::ll_tolerance(wires[0]), "mutated");
    nep_ll_handle_destroy(r.handle);
    return c.failures();
  };
  // Offset of the first valid row (the first local expert that received rows).
  auto first_row = [&](const neptest::LlRecv& r) -> int64_t {
    for (int64_t e = 0; e < 8; ++e) {
      if (r.count[e] > 0) return e * s.max_tokens;
    }
    return 0;
  };
  auto none = [](neptest::LlRecv&) {};
  auto none_out = [](std::vector<float>&) {};
  EXPECT_EQ(run(none, none_out), "");
  EXPECT_NE(run([&](neptest::LlRecv& r) { r.x[first_row(r) * s.hidden + 7] += 1.0f; }, none_out)
                .find("data differs"),
            std::string::npos);
  EXPECT_NE(
      run([&](neptest::LlRecv& r) { r.x[first_row(r) * s.hidden + 256 + 4] += 1.0f; }, none_out)
          .find("index channel"),
      std::string::npos);
  EXPECT_NE(
      run([&](neptest::LlRecv& r) { r.src_info[first_row(r)] += 1; }, none_out).find("src_info"),
      std::string::npos);
  EXPECT_NE(
      run([](neptest::LlRecv& r) { r.count[2] -= 1; }, none_out).find("all-gathered selections"),
      std::string::npos);
  EXPECT_NE(run([](neptest::LlRecv& r) { r.range[1] += 1; }, none_out).find("layout_range"),
            std::string::npos);
  EXPECT_NE(
      run(none, [&](std::vector<float>& o) { o[2 * s.hidden + 3] += 0.5f; }).find("slot-ordered"),
      std::string::npos);
  // A gross error also fails the calc_diff bound (not only the bitwise check).
  const std::string gross = run(none, [](std::vector<float>& o) {
    for (float& v : o) v *= 1.5f;
  });
  EXPECT_NE(gross.find("calc_diff"), std::string::npos) << gross;
}

TEST(LlLoopback, WireWiderThanTheBufferIsRefusedNamingBoth) {
  LlShape s = small_shape();
  s.max_wire = NEP_WIRE_FP8;
  Loopback lb(s);
  LlRankCheck c(lb.comm, lb.buf, s, 14);
  const auto all = c.inputs(0, [&](int32_t) { return 3; });
  nep_ll_op* op = nullptr;
  EXPECT_EQ(nep_ll_dispatch_send(lb.buf, reinterpret_cast<int64_t>(all[0].x.data()), 3, s.hidden,
                                 reinterpret_cast<int64_t>(all[0].idx.data()), s.topk,
                                 NEP_WIRE_BF16, 0, &op, lb.err, sizeof lb.err),
            NEP_ERR_CAPACITY);
  EXPECT_NE(std::string(lb.err).find(
                "wire bf16 needs 768 bytes per row of 384 channels but this low-latency buffer "
                "was created for fp8 (396 bytes per row)"),
            std::string::npos)
      << lb.err;
  // FP8 and MXFP8 (396 bytes too) fit; so does a bf16 combine refused the same way.
  const std::vector<neptest::LlWires> wires(1, neptest::LlWires{NEP_WIRE_MXFP8, 0, NEP_WIRE_FP8});
  neptest::LlRecv r = c.dispatch_recv(c.dispatch_send(all[0], wires[0]));
  c.check_dispatch(all, wires, r, "mxfp8 in an fp8 buffer");
  const auto y = c.expert_outputs(r);
  EXPECT_EQ(nep_ll_combine_send(lb.buf, r.handle, reinterpret_cast<int64_t>(y.data()), s.hidden,
                                reinterpret_cast<int64_t>(all[0].idx.data()),
                                reinterpret_cast<int64_t>(all[0].weights.data()), 3, s.topk,
                                NEP_WIRE_BF16, &op, lb.err, sizeof lb.err),
            NEP_ERR_CAPACITY);
  const auto out = c.combine_recv(c.combine_send(r, y, all[0], wires[0]), 3);
  c.check_combine(all, wires, out, 9e-4, "fp8 combine");
  nep_ll_handle_destroy(r.handle);
  EXPECT_EQ(c.failures(), "");
}

TEST(LlLoopback, OpMisuseAbandonAndForeignHandles) {
  const LlShape s = small_shape();
  Loopback lb(s);
  LlRankCheck c(lb.comm, lb.buf, s, 15);
  const auto all = c.inputs(0, [&](int32_t) { return 5; });
  const std::vector<neptest::LlWires> wires(1, neptest::LlWires{});
  char* err = lb.err;
  const int64_t cap = sizeof lb.err;

  nep_ll_op* op = c.dispatch_send(all[0], wires[0]);
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(nep_ll_op_ready(op), 1);  // loopback: the only source is this rank
  nep_ll_handle* h = nullptr;
  std::vector<float> recv_x(static_cast<size_t>(8 * 16 * s.hidden));
  std::vector<int32_t> count(8);
  EXPECT_EQ(
      nep_ll_dispatch_recv(op, 0, reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err, cap),
      NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "recv_x is null");
  EXPECT_EQ(nep_ll_combine_recv(op, reinterpret_cast<int64_t>(recv_x.data()), err, cap),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("is a dispatch, not a combine"), std::string::npos) << err;
  EXPECT_EQ(nep_ll_op_is_pending(op), 1);   // argument errors leave it pending
  neptest::LlRecv r = c.dispatch_recv(op);  // ... and a good receive still works (destroys op)
  c.check_dispatch(all, wires, r, "after misuse");

  // A second receive of a completed op is refused.
  nep_ll_op* op2 = c.dispatch_send(all[0], wires[0]);
  ASSERT_EQ(nep_ll_dispatch_recv(op2, reinterpret_cast<int64_t>(recv_x.data()),
                                 reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err, cap),
            NEP_OK)
      << err;
  nep_ll_handle_destroy(h);
  EXPECT_EQ(nep_ll_dispatch_recv(op2, reinterpret_cast<int64_t>(recv_x.data()),
                                 reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err, cap),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("was already completed"), std::string::npos) << err;
  EXPECT_EQ(nep_ll_op_ready(op2), 0);
  nep_ll_op_destroy(op2);

  // Abandoning (destroying a pending op) frees its buffer: two more sends fit, and the call that
  // reuses the abandoned buffer gets its own data, not the abandoned call's.
  nep_ll_op_destroy(c.dispatch_send(all[0], wires[0]));
  const auto other = c.inputs(1, [&](int32_t) { return 9; });
  nep_ll_op* a = c.dispatch_send(other[0], wires[0]);
  nep_ll_op* b = c.dispatch_send(all[0], wires[0]);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  neptest::LlRecv rb = c.dispatch_recv(b);
  neptest::LlRecv ra = c.dispatch_recv(a);
  c.check_dispatch(all, wires, rb, "reusing the abandoned buffer");
  c.check_dispatch(other, wires, ra, "after abandon");

  // A handle of another buffer is refused; so is a null handle.
  Loopback lb2(s);
  const auto y = c.expert_outputs(r);
  nep_ll_op* cop = nullptr;
  EXPECT_EQ(nep_ll_combine_send(lb2.buf, r.handle, reinterpret_cast<int64_t>(y.data()), s.hidden,
                                reinterpret_cast<int64_t>(all[0].idx.data()),
                                reinterpret_cast<int64_t>(all[0].weights.data()), 5, s.topk,
                                NEP_WIRE_BF16, &cop, err, cap),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("made by another low-latency buffer"), std::string::npos) << err;
  EXPECT_EQ(nep_ll_combine_send(lb.buf, nullptr, reinterpret_cast<int64_t>(y.data()), s.hidden,
                                reinterpret_cast<int64_t>(all[0].idx.data()),
                                reinterpret_cast<int64_t>(all[0].weights.data()), 5, s.topk,
                                NEP_WIRE_BF16, &cop, err, cap),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "handle is null");
  // Non-finite weights of selected slots are refused.
  std::vector<float> bad_w = all[0].weights;
  int64_t selected = 0;
  while (all[0].idx[selected] < 0) ++selected;
  bad_w[selected] = std::nanf("");
  EXPECT_EQ(nep_ll_combine_send(lb.buf, r.handle, reinterpret_cast<int64_t>(y.data()), s.hidden,
                                reinterpret_cast<int64_t>(all[0].idx.data()),
                                reinterpret_cast<int64_t>(bad_w.data()), 5, s.topk, NEP_WIRE_BF16,
                                &cop, err, cap),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("is not finite"), std::string::npos) << err;
  // The buffer outlives its handle's users: destroying the buffer first keeps pending ops valid.
  nep_ll_op* pending = c.dispatch_send(all[0], wires[0]);
  nep_ll_handle_destroy(r.handle);
  nep_ll_handle_destroy(ra.handle);
  nep_ll_handle_destroy(rb.handle);
  nep_ll_buffer_destroy(lb.buf);
  lb.buf = nullptr;
  ASSERT_EQ(nep_ll_dispatch_recv(pending, reinterpret_cast<int64_t>(recv_x.data()),
                                 reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err, cap),
            NEP_OK)
      << err;
  nep_ll_handle_destroy(h);
  nep_ll_op_destroy(pending);
  EXPECT_EQ(c.failures(), "");
}

TEST(LlCApi, CreateChecksEveryArgument) {
  char err[512];
  nep_comm* comm = nullptr;
  ASSERT_EQ(nep_comm_create_loopback(&comm, err, sizeof err), NEP_OK);
  nep_ll_buffer* buf = nullptr;
  auto create = [&](int64_t t, int64_t h, int32_t e, int32_t k, int32_t wire, int64_t timeout) {
    return nep_ll_buffer_create(comm, t, h, e, k, wire, timeout, &buf, err, sizeof err);
  };
  EXPECT_EQ(nep_ll_buffer_create(nullptr, 8, 8, 8, 2, 1, 100, &buf, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "comm is null");
  EXPECT_EQ(create(0, 8, 8, 2, 1, 100), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "max_tokens_per_rank = 0 must be >= 1");
  EXPECT_EQ(create(8, 0, 8, 2, 1, 100), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "hidden = 0 must be >= 1");
  EXPECT_EQ(create(8, 8, 0, 2, 1, 100), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(create(8, 8, 8, 9, 1, 100), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "max_topk = 9 is outside [1, num_experts = 8]");
  EXPECT_EQ(create(8, 8, 8, 2, 7, 100), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("max_wire = 7"), std::string::npos);
  EXPECT_EQ(create(8, 8, 8, 2, 1, 0), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(create(int64_t{1} << 30, int64_t{1} << 20, 8, 8, 0, 100), NEP_ERR_CAPACITY);
  EXPECT_NE(std::string(err).find("exceeds the limit"), std::string::npos) << err;
  EXPECT_EQ(buf, nullptr);
  EXPECT_EQ(nep_ll_buffer_bytes(nullptr), -1);
  EXPECT_EQ(nep_ll_op_kind(nullptr), -1);
  EXPECT_EQ(nep_ll_op_ready(nullptr), 0);
  nep_ll_op_destroy(nullptr);
  nep_ll_handle_destroy(nullptr);
  nep_ll_buffer_destroy(nullptr);
  nep_ll_op* op = nullptr;
  EXPECT_EQ(nep_ll_dispatch_send(nullptr, 0, 0, 8, 0, 1, 1, 0, &op, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "buffer is null");
  EXPECT_EQ(nep_ll_combine_recv(nullptr, 0, err, sizeof err), NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(err), "op is null");
  nep_comm_destroy(comm);
}
