// Dispatch into wire rows (nep_dispatch_wire, DispatchArgs::keep_wire): each received row holds the
// codec's encoding of its source row, byte for byte, and decoding it gives what the float dispatch
// writes, bit for bit; with W = 1 (loopback and threads), 2 and 3 ranks, uneven token counts, an
// empty rank, -1 slots and a hot expert (make_world), and the refusals on every rank.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "codec.h"
#include "engine.h"
#include "ep_check.h"
#include "nativeep/c_api.h"
#include "test_support.h"

namespace {

using neptest::make_world;
using neptest::World;

// Runs both dispatches on one rank and returns the failures as text (empty when all is well).
std::string check_rank(nep::Transport& t, const World& w, int32_t wire) {
  const int32_t me = t.rank();
  const auto& r = w.routing[me];
  const auto h = nep::dispatch_notify(t, r.idx.data(), r.tokens, w.topk, w.experts, 1);
  const auto wr = static_cast<nep::Wire>(wire);
  const int64_t row_bytes = nep::wire_row_bytes(wr, w.hidden);
  const int64_t rows = h.num_recv;
  std::vector<float> recv_x(static_cast<size_t>(rows * w.hidden));
  std::vector<int64_t> idx_f(static_cast<size_t>(rows * w.topk)), idx_w(idx_f.size());
  std::vector<float> wt_f(idx_f.size()), wt_w(idx_f.size());
  neptest::poison(recv_x);
  nep::DispatchArgs f;
  f.x = w.x[me].data();
  f.hidden = w.hidden;
  f.wire = wire;
  f.topk_weights = r.weights.data();
  f.recv_x = recv_x.data();
  f.recv_topk_idx = idx_f.data();
  f.recv_topk_weights = wt_f.data();
  nep::dispatch(t, &h, f);

  std::vector<uint8_t> recv_rows(static_cast<size_t>(rows * row_bytes), 0xA5);
  nep::DispatchArgs d = f;
  d.recv_x = nullptr;
  d.keep_wire = true;
  d.recv_rows = recv_rows.data();
  d.recv_row_bytes = row_bytes;
  d.recv_topk_idx = idx_w.data();
  d.recv_topk_weights = wt_w.data();
  nep::dispatch(t, &h, d);

  std::string out;
  auto fail = [&](const std::string& what) {
    out += "rank " + std::to_string(me) + ": " + what + "\n";
  };
  if (idx_f != idx_w) fail("recv_topk_idx differs");
  if (std::memcmp(wt_f.data(), wt_w.data(), wt_f.size() * sizeof(float)) != 0) {
    fail("recv_topk_weights differ");
  }
  std::vector<uint8_t> expected(static_cast<size_t>(row_bytes));
  std::vector<float> decoded(static_cast<size_t>(w.hidden));
  for (int64_t row = 0; row < rows; ++row) {
    int32_t src = 0;
    while (h.recv_offset[src + 1] <= row) ++src;
    const int64_t token = h.recv_src_idx[row];
    nep::encode_row(wr, w.x[src].data() + token * w.hidden, w.hidden, expected.data());
    const uint8_t* got = recv_rows.data() + row * row_bytes;
    if (std::memcmp(got, expected.data(), static_cast<size_t>(row_bytes)) != 0) {
      fail("row " + std::to_string(row) + " (rank " + std::to_string(src) + " token " +
           std::to_string(token) + ") is not the codec's encoding of its source row");
      break;
    }
    nep::decode_row(wr, got, w.hidden, decoded.data());
    if (std::memcmp(decoded.data(), recv_x.data() + row * w.hidden,
                    static_cast<size_t>(w.hidden) * sizeof(float)) != 0) {
      fail("decoded row " + std::to_string(row) + " differs from the float dispatch");
      break;
    }
  }
  return out;
}

void check_world(const World& w, int32_t wire) {
  std::mutex mu;
  std::string failures;
  neptest::run_world(w.world, [&](nep::Transport& t) {
    const std::string f = check_rank(t, w, wire);
    std::lock_guard<std::mutex> lock(mu);
    failures += f;
  });
  EXPECT_EQ(failures, "") << "world " << w.world << " wire " << wire;
}

// One rank's refusal, reported on every rank.
void check_refusal(int32_t bad_rank, const std::function<void(nep::DispatchArgs&)>& spoil,
                   const std::string& message) {
  const World w = make_world(41, 2, 96);
  std::vector<std::string> messages(2);
  std::vector<int32_t> codes(2, NEP_OK);
  std::mutex mu;
  neptest::run_world(2, [&](nep::Transport& t) {
    const auto& r = w.routing[t.rank()];
    const auto h = nep::dispatch_notify(t, r.idx.data(), r.tokens, w.topk, w.experts, 1);
    const int64_t row_bytes = nep::wire_row_bytes(nep::Wire::kFp8, w.hidden);
    std::vector<uint8_t> rows(static_cast<size_t>((h.num_recv + 1) * row_bytes));
    nep::DispatchArgs d;
    d.x = w.x[t.rank()].data();
    d.hidden = w.hidden;
    d.wire = NEP_WIRE_FP8;
    d.keep_wire = true;
    d.recv_rows = rows.data();
    d.recv_row_bytes = row_bytes;
    if (t.rank() == bad_rank) spoil(d);
    try {
      nep::dispatch(t, &h, d);
    } catch (const nep::Error& e) {
      std::lock_guard<std::mutex> lock(mu);
      messages[t.rank()] = e.what();
      codes[t.rank()] = e.code();
    }
  });
  EXPECT_EQ(codes[bad_rank], NEP_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(messages[bad_rank], message);
  const int32_t other = 1 - bad_rank;
  EXPECT_EQ(codes[other], NEP_ERR_PEER);
  EXPECT_NE(messages[other].find("failed on rank " + std::to_string(bad_rank)), std::string::npos)
      << messages[other];
}

}  // namespace

TEST(DispatchWireRows, OneRankBothWires) {
  for (int32_t wire : {NEP_WIRE_FP8, NEP_WIRE_MXFP8}) {
    check_world(make_world(300 + wire, 1, 200), wire);
  }
}

TEST(DispatchWireRows, TwoAndThreeRanksUnevenEmptyHotPartialBlocks) {
  for (int32_t wire : {NEP_WIRE_FP8, NEP_WIRE_MXFP8}) {
    check_world(make_world(310 + wire, 2, 96), wire);
    check_world(make_world(320 + wire, 3, 130), wire);           // partial last scaling blocks
    check_world(make_world(330 + wire, 2, 64, 50, true), wire);  // every token to expert 0
  }
}

TEST(DispatchWireRows, LoopbackThroughTheCApi) {
  const World w = make_world(350, 1, 160);
  nep_comm* comm = nullptr;
  char err[512] = {0};
  ASSERT_EQ(nep_comm_create_loopback(&comm, err, sizeof err), NEP_OK) << err;
  const auto& r = w.routing[0];
  nep_handle* h = nullptr;
  ASSERT_EQ(nep_dispatch_notify(comm, reinterpret_cast<int64_t>(r.idx.data()), r.tokens, w.topk,
                                w.experts, 1, &h, err, sizeof err),
            NEP_OK)
      << err;
  const int64_t rows = nep_handle_num_recv(h);
  for (int32_t wire : {NEP_WIRE_FP8, NEP_WIRE_MXFP8}) {
    const int64_t row_bytes = nep_wire_row_bytes(wire, w.hidden);
    std::vector<uint8_t> raw(static_cast<size_t>(rows * row_bytes));
    std::vector<float> recv_x(static_cast<size_t>(rows * w.hidden));
    std::vector<float> decoded(recv_x.size());
    ASSERT_EQ(nep_dispatch(comm, h, reinterpret_cast<int64_t>(w.x[0].data()), w.hidden, wire, 0,
                           reinterpret_cast<int64_t>(recv_x.data()), 0, 0, err, sizeof err),
              NEP_OK)
        << err;
    ASSERT_EQ(
        nep_dispatch_wire(comm, h, reinterpret_cast<int64_t>(w.x[0].data()), w.hidden, wire, 0,
                          reinterpret_cast<int64_t>(raw.data()), row_bytes, 0, 0, err, sizeof err),
        NEP_OK)
        << err;
    ASSERT_EQ(nep_decode_rows(wire, reinterpret_cast<int64_t>(raw.data()), rows, w.hidden,
                              reinterpret_cast<int64_t>(decoded.data()), err, sizeof err),
              NEP_OK)
        << err;
    EXPECT_EQ(std::memcmp(decoded.data(), recv_x.data(), recv_x.size() * sizeof(float)), 0)
        << "wire " << wire;
  }
  // Refusals name the value and the limit.
  std::vector<uint8_t> raw(static_cast<size_t>(rows * 4 * w.hidden + 64));
  EXPECT_EQ(nep_dispatch_wire(comm, h, reinterpret_cast<int64_t>(w.x[0].data()), w.hidden,
                              NEP_WIRE_BF16, 0, reinterpret_cast<int64_t>(raw.data()), 2 * w.hidden,
                              0, 0, err, sizeof err),
            NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("wire = 1 (bf16) has no wire-row output"), std::string::npos)
      << err;
  EXPECT_EQ(
      nep_dispatch_wire(comm, h, reinterpret_cast<int64_t>(w.x[0].data()), w.hidden, NEP_WIRE_FP8,
                        0, reinterpret_cast<int64_t>(raw.data()), w.hidden, 0, 0, err, sizeof err),
      NEP_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(err).find("recv_row_bytes = 160 must equal the fp8 row size of hidden = "
                                  "160, 168"),
            std::string::npos)
      << err;
  EXPECT_EQ(
      nep_dispatch_wire(comm, h, reinterpret_cast<int64_t>(w.x[0].data()), w.hidden, NEP_WIRE_MXFP8,
                        0, 0, nep_wire_row_bytes(NEP_WIRE_MXFP8, w.hidden), 0, 0, err, sizeof err),
      rows > 0 ? NEP_ERR_INVALID_ARGUMENT : NEP_OK);
  if (rows > 0) EXPECT_EQ(std::string(err), "recv_rows is null");
  nep_handle_destroy(h);
  nep_comm_destroy(comm);
}

TEST(DispatchWireRows, RefusalsOnOneRankFailEveryRank) {
  check_refusal(
      0, [](nep::DispatchArgs& d) { d.wire = NEP_WIRE_BF16; },
      "wire = 1 (bf16) has no wire-row output: only fp8 (2) and mxfp8 (3) rows are kept as they "
      "are");
  check_refusal(
      1, [](nep::DispatchArgs& d) { d.wire = NEP_WIRE_FP32; },
      "wire = 0 (fp32) has no wire-row output: only fp8 (2) and mxfp8 (3) rows are kept as they "
      "are");
  check_refusal(1, [](nep::DispatchArgs& d) { d.recv_row_bytes += 16; },
                "recv_row_bytes = 116 must equal the fp8 row size of hidden = 96, 100");
  static float dummy[1];
  check_refusal(0, [](nep::DispatchArgs& d) { d.recv_x = dummy; },
                "recv_x and recv_rows are both given: pass one of them");
}
