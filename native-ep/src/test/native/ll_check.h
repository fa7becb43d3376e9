// One rank's checks of the low-latency mode through the C ABI, for any communicator (loopback or
// cpu-shm between forked processes). Every rank rebuilds every rank's input from the same seed,
// so each computes its own oracle: the all-gathered selections per local expert, the source of
// every row, the rows' bits after the wire round trip, and the combine both bit-exactly (same
// fp32 operations in slot order) and against the ideal x * sum_k w_k c(e_k) with DeepEP's
// calc_diff measure in float64 over the data channels. Failures are collected as text.
#ifndef NATIVEEP_TESTS_LL_CHECK_H_
#define NATIVEEP_TESTS_LL_CHECK_H_

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "capi_ll_objects.h"
#include "codec.h"
#include "ll_codec.h"
#include "nativeep/c_api.h"
#include "test_support.h"

namespace neptest {

struct LlShape {
  int32_t world = 1;
  int64_t max_tokens = 16;
  int64_t hidden = 384;  // >= 5 channels in the last 128-channel block (the index block)
  int32_t experts = 8;
  int32_t topk = 4;
  int32_t max_wire = NEP_WIRE_FP32;
};

// A shape from its numbers, in the order of LlShape's fields.
inline LlShape ll_shape(int32_t world, int64_t max_tokens, int64_t hidden, int32_t experts,
                        int32_t topk, int32_t max_wire = NEP_WIRE_FP32) {
  LlShape s;
  s.world = world;
  s.max_tokens = max_tokens;
  s.hidden = hidden;
  s.experts = experts;
  s.topk = topk;
  s.max_wire = max_wire;
  return s;
}

// DeepEP's calc_diff in float64: 1 - 2 sum (x+1)(y+1) / sum ((x+1)^2 + (y+1)^2); 0 when equal.
inline double calc_diff(const std::vector<double>& x, const std::vector<double>& y) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double a = x[i] + 1.0, b = y[i] + 1.0;
    num += a * b;
    den += a * a + b * b;
  }
  return den == 0.0 ? 0.0 : 1.0 - 2.0 * num / den;
}

// How one rank moves one step.
struct LlWires {
  int32_t dispatch = NEP_WIRE_BF16;
  int32_t flags = 0;
  int32_t combine = NEP_WIRE_BF16;
};

// One rank's input of one step; the same on every rank for the same (seed, step, rank).
struct LlInput {
  int64_t tokens = 0;
  std::vector<int64_t> idx;    // [T, K]
  std::vector<float> weights;  // [T, K]
  std::vector<float> x;        // [T, H]
};

// The index block is the last 128-channel block (partial when H is not a multiple of 128): its
// first channel is 448 (so the block's FP8 scale is exactly 1, and the MXFP8 scale of its first
// 32 channels too), then the source rank and the token in octal digits: exact in every format.
inline int64_t index_base(int64_t hidden) { return (hidden - 1) / 128 * 128; }

inline void write_index(float* row, int64_t hidden, int32_t rank, int64_t token) {
  float* b = row + index_base(hidden);
  std::fill(b, row + hidden, 0.0f);
  b[0] = 448.0f;
  b[1] = static_cast<float>(rank);
  b[2] = static_cast<float>((token >> 6) & 7);
  b[3] = static_cast<float>((token >> 3) & 7);
  b[4] = static_cast<float>(token & 7);
}

inline bool read_index(const float* row, int64_t hidden, int32_t* rank, int64_t* token) {
  const float* b = row + index_base(hidden);
  if (b[0] != 448.0f) return false;
  *rank = static_cast<int32_t>(b[1]);
  *token =
      static_cast<int64_t>(b[2]) * 64 + static_cast<int64_t>(b[3]) * 8 + static_cast<int64_t>(b[4]);
  return static_cast<float>(*rank) == b[1];
}

inline LlInput ll_input(uint64_t seed, int step, int32_t rank, const LlShape& s, int64_t tokens) {
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(step) * 7919ull +
                      static_cast<uint64_t>(rank));
  LlInput in;
  in.tokens = tokens;
  Routing r = random_routing(rng, tokens, s.topk, s.experts, 0.2, 0.3, 1 % s.experts);
  in.idx = r.idx;
  in.weights = r.weights;
  if (tokens > 0) {
    for (int32_t k = 0; k < s.topk; ++k) in.idx[k] = -1;  // token 0 goes nowhere
  }
  in.x = random_rows(rng, tokens, s.hidden);
  for (int64_t t = 0; t < tokens; ++t) write_index(&in.x[t * s.hidden], s.hidden, rank, t);
  return in;
}

// What the simulated expert g computes from a received row: a per-expert factor, so a row
// returned to the wrong (token, slot) changes the result.
inline float expert_factor(int64_t g) { return 1.0f + 0.125f * static_cast<float>(g % 5); }

inline std::vector<float> ll_round_trip(int32_t wire, int32_t flags, const float* row,
                                        int64_t hidden) {
  const auto w = static_cast<nep::Wire>(wire);
  std::vector<uint8_t> buf(static_cast<size_t>(nep::wire_row_bytes(w, hidden)));
  std::vector<float> out(static_cast<size_t>(hidden));
  nep::encode_row_ll(w, (flags & NEP_LL_ROUND_SCALE) != 0, row, hidden, buf.data());
  nep::decode_row(w, buf.data(), hidden, out.data());
  return out;
}

inline bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

// Outputs of one dispatch on this rank.
struct LlRecv {
  std::vector<float> x;           // [El, N, H]
  std::vector<int32_t> count;     // [El]
  std::vector<int32_t> src_info;  // [El, N]
  std::vector<int64_t> range;     // [El, W]
  nep_ll_handle* handle = nullptr;
};

class LlRankCheck {
 public:
  LlRankCheck(nep_comm* comm, nep_ll_buffer* buf, const LlShape& shape, uint64_t seed)
      : comm_(comm), buf_(buf), s_(shape), seed_(seed) {
    me_ = nep_comm_rank(comm);
    local_ = s_.experts / s_.world;
    rows_ = s_.world * s_.max_tokens;
  }

  std::string failures() const { return bad_.str(); }
  int32_t rank() const { return me_; }
  const LlShape& shape() const { return s_; }
  nep_ll_buffer* buffer() const { return buf_; }

  void check(bool ok, const std::string& what) {
    if (!ok && failures_++ < 25) bad_ << "rank " << me_ << ": " << what << "\n";
  }

  // Calls a C ABI function and records a failure with its message when it does not return OK.
  bool ok(int32_t rc, const char* what) {
    check(rc == NEP_OK, std::string(what) + " failed (status " + std::to_string(rc) + "): " + err_);
    return rc == NEP_OK;
  }
  char* err() { return err_; }
  int64_t cap() const { return sizeof err_; }

  // Inputs of every rank for a step (tokens per rank from tokens_of).
  std::vector<LlInput> inputs(int step, const std::function<int64_t(int32_t)>& tokens_of) const {
    std::vector<LlInput> all;
    for (int32_t r = 0; r < s_.world; ++r)
      all.push_back(ll_input(seed_, step, r, s_, tokens_of(r)));
    return all;
  }

  nep_ll_op* dispatch_send(const LlInput& in, const LlWires& w) {
    nep_ll_op* op = nullptr;
    ok(nep_ll_dispatch_send(buf_, reinterpret_cast<int64_t>(in.x.data()), in.tokens, s_.hidden,
                            reinterpret_cast<int64_t>(in.idx.data()), s_.topk, w.dispatch, w.flags,
                            &op, err_, cap()),
       "nep_ll_dispatch_send");
    if (op != nullptr) {
      int64_t selected = 0;
      for (int64_t e : in.idx) selected += e >= 0;
      check(nep_ll_op_rows_sent(op) == selected,
            "dispatch sent " + std::to_string(nep_ll_op_rows_sent(op)) + " messages for " +
                std::to_string(selected) +
                " selected (token, expert) pairs (-1 slots must not be sent)");
      check(nep_ll_op_kind(op) == NEP_LL_DISPATCH && nep_ll_op_is_pending(op) == 1,
            "dispatch op state");
    }
    return op;
  }

  // Receives into poisoned outputs (destroying op).
  LlRecv dispatch_recv(nep_ll_op* op) {
    LlRecv r;
    r.x.resize(static_cast<size_t>(local_ * rows_ * s_.hidden));
    r.count.resize(static_cast<size_t>(local_));
    r.src_info.resize(static_cast<size_t>(local_ * rows_));
    r.range.resize(static_cast<size_t>(local_) * s_.world);
    poison(r.x);
    poison(r.count);
    poison(r.src_info);
    poison(r.range);
    if (op == nullptr) return r;
    ok(nep_ll_dispatch_recv(op, reinterpret_cast<int64_t>(r.x.data()),
                            reinterpret_cast<int64_t>(r.count.data()),
                            reinterpret_cast<int64_t>(r.src_info.data()),
                            reinterpret_cast<int64_t>(r.range.data()), &r.handle, err_, cap()),
       "nep_ll_dispatch_recv");
    nep_ll_op_destroy(op);
    return r;
  }

  // Every check of one dispatch's outputs on this rank against the oracle.
  void check_dispatch(const std::vector<LlInput>& all, const std::vector<LlWires>& wires,
                      const LlRecv& r, const std::string& label) {
    const int64_t h = s_.hidden;
    if (r.handle == nullptr) return check(false, label + ": no handle");
    std::vector<int32_t> hc(static_cast<size_t>(local_));
    nep_ll_handle_recv_count(r.handle, hc.data());
    check(hc == r.count, label + ": handle recv_count differs from the output");
    check(nep_ll_handle_num_tokens(r.handle) == all[me_].tokens, label + ": handle num_tokens");
    for (int32_t e = 0; e < local_; ++e) {
      const int64_t g = static_cast<int64_t>(me_) * local_ + e;
      int64_t row = 0;
      for (int32_t s = 0; s < s_.world; ++s) {
        const LlInput& in = all[s];
        const int64_t begin = row;
        for (int64_t t = 0; t < in.tokens; ++t) {
          for (int32_t k = 0; k < s_.topk; ++k) {
            if (in.idx[t * s_.topk + k] != g) continue;
            const std::string where =
                label + ": expert " + std::to_string(e) + " row " + std::to_string(row);
            if (row < r.count[e]) {
              const int64_t at = (e * rows_ + row);
              check(r.src_info[at] == t, where + ": src_info " + std::to_string(r.src_info[at]) +
                                             ", want token " + std::to_string(t) + " of rank " +
                                             std::to_string(s));
              const float* got = &r.x[at * h];
              int32_t src_rank = -1;
              int64_t src_token = -1;
              check(read_index(got, h, &src_rank, &src_token) && src_rank == s && src_token == t,
                    where + ": index channel says rank " + std::to_string(src_rank) + " token " +
                        std::to_string(src_token) + ", want rank " + std::to_string(s) + " token " +
                        std::to_string(t));
              const auto want = ll_round_trip(wires[s].dispatch, wires[s].flags, &in.x[t * h], h);
              check(same_bits(want.data(), got, h),
                    where + ": data differs from the wire round trip");
            }
            ++row;
          }
        }
        const int64_t range = r.range[static_cast<int64_t>(e) * s_.world + s];
        check(range == ((begin << 32) | (row - begin)),
              label + ": layout_range[" + std::to_string(e) + "][" + std::to_string(s) +
                  "] = begin " + std::to_string(range >> 32) + " count " +
                  std::to_string(range & 0xFFFFFFFF) + ", want " + std::to_string(begin) + " / " +
                  std::to_string(row - begin));
      }
      check(r.count[e] == row, label + ": recv_count[" + std::to_string(e) +
                                   "] = " + std::to_string(r.count[e]) +
                                   ", but the all-gathered selections of expert " +
                                   std::to_string(g) + " are " + std::to_string(row));
      if (row < rows_) {
        const int64_t at = e * rows_ + row;
        check(r.src_info[at] == -1,
              label + ": src_info past the count is " + std::to_string(r.src_info[at]));
        uint32_t bits;
        std::memcpy(&bits, &r.x[at * h], 4);
        check(bits == 0xFFFFFFFFu, label + ": recv_x row past the count was written");
      }
    }
  }

  // y for the received rows: expert g scales its rows by expert_factor(g).
  std::vector<float> expert_outputs(const LlRecv& r) const {
    std::vector<float> y(r.x.size(), 0.0f);
    for (int32_t e = 0; e < local_; ++e) {
      const float f = expert_factor(static_cast<int64_t>(me_) * local_ + e);
      for (int64_t i = 0; i < r.count[e] * s_.hidden; ++i) {
        const int64_t at = e * rows_ * s_.hidden + i;
        y[at] = r.x[at] * f;
      }
    }
    return y;
  }

  nep_ll_op* combine_send(const LlRecv& r, const std::vector<float>& y, const LlInput& in,
                          const LlWires& w) {
    nep_ll_op* op = nullptr;
    ok(nep_ll_combine_send(buf_, r.handle, reinterpret_cast<int64_t>(y.data()), s_.hidden,
                           reinterpret_cast<int64_t>(in.idx.data()),
                           reinterpret_cast<int64_t>(in.weights.data()), in.tokens, s_.topk,
                           w.combine, &op, err_, cap()),
       "nep_ll_combine_send");
    if (op != nullptr) {
      int64_t received = 0;
      for (int32_t c : r.count) received += c;
      check(nep_ll_op_rows_sent(op) == received,
            "combine sent " + std::to_string(nep_ll_op_rows_sent(op)) + " rows for " +
                std::to_string(received) + " received");
    }
    return op;
  }

  std::vector<float> combine_recv(nep_ll_op* op, int64_t tokens) {
    std::vector<float> out(static_cast<size_t>(tokens * s_.hidden));
    poison(out);
    if (op == nullptr) return out;
    ok(nep_ll_combine_recv(op, reinterpret_cast<int64_t>(out.data()), err_, cap()),
       "nep_ll_combine_recv");
    nep_ll_op_destroy(op);
    return out;
  }

  // out against (a) the bit-exact emulation and (b) the ideal with calc_diff < tolerance.
  double check_combine(const std::vector<LlInput>& all, const std::vector<LlWires>& wires,
                       const std::vector<float>& out, double tolerance, const std::string& label) {
    const LlInput& in = all[me_];
    const int64_t h = s_.hidden;
    // calc_diff runs over the data channels: the index block's large anchor would dilute it.
    const int64_t data_ch = index_base(h);
    std::vector<double> got, ideal(static_cast<size_t>(in.tokens * data_ch), 0.0);
    for (int64_t t = 0; t < in.tokens; ++t)
      got.insert(got.end(), &out[t * h], &out[t * h + data_ch]);
    for (int64_t t = 0; t < in.tokens; ++t) {
      std::vector<float> acc(static_cast<size_t>(h), 0.0f);
      bool first = true;
      for (int32_t k = 0; k < s_.topk; ++k) {
        const int64_t g = in.idx[t * s_.topk + k];
        if (g < 0) continue;
        const int32_t dest = static_cast<int32_t>(g / local_);
        const float wk = in.weights[t * s_.topk + k];
        std::vector<float> v =
            ll_round_trip(wires[me_].dispatch, wires[me_].flags, &in.x[t * h], h);
        for (float& a : v) a *= expert_factor(g);
        const auto back = ll_round_trip(wires[dest].combine, 0, v.data(), h);
        for (int64_t i = 0; i < h; ++i) {
          acc[i] = first ? wk * back[i] : acc[i] + wk * back[i];
          if (i < data_ch)
            ideal[t * data_ch + i] += static_cast<double>(wk) * expert_factor(g) * in.x[t * h + i];
        }
        first = false;
      }
      check(same_bits(acc.data(), &out[t * h], h), label + ": combined token " + std::to_string(t) +
                                                       " differs from the slot-ordered fp32 sum");
    }
    const double diff = calc_diff(got, ideal);
    check(!(diff >= tolerance) && std::isfinite(diff),
          label + ": calc_diff(combined, x * sum w c) = " + std::to_string(diff) +
              " >= " + std::to_string(tolerance));
    return diff;
  }

  nep_comm* comm() const { return comm_; }

 private:
  nep_comm* comm_;
  nep_ll_buffer* buf_;
  LlShape s_;
  uint64_t seed_;
  int32_t me_ = 0;
  int32_t local_ = 0;
  int64_t rows_ = 0;
  int failures_ = 0;
  std::ostringstream bad_;
  char err_[1024] = {0};
};

// Tolerances of calc_diff for a dispatch / combine wire pair (DeepEP's where it has one).
inline double ll_tolerance(const LlWires& w) {
  auto one = [](int32_t wire) {
    switch (wire) {
      case NEP_WIRE_FP32: return 1e-12;
      case NEP_WIRE_BF16: return 1e-5;
      default: return 9e-4;  // FP8 (fp32 or power-of-two scales) and MXFP8 measure 1e-4 to 4e-4
    }
  };
  return std::max(one(w.dispatch), one(w.combine));
}

// Barrier, poison this rank's shared data areas, barrier: stale data from earlier steps can then
// only leak if the protocol reads what it did not write in this step.
inline void poison_between_steps(LlRankCheck& c) {
  c.ok(nep_barrier(c.comm(), c.err(), c.cap()), "nep_barrier");
  c.buffer()->impl->poison_data();
  c.ok(nep_barrier(c.comm(), c.err(), c.cap()), "nep_barrier");
}

// Normal-mode dispatch and combine of the same tokens (work between LL send and receive, and
// normal and LL modes in turn); checks combine(recv) == x * ranks visited.
inline void normal_mode_round(LlRankCheck& c, const LlInput& in) {
  const LlShape& s = c.shape();
  nep_handle* h = nullptr;
  if (!c.ok(nep_dispatch_notify(c.comm(), reinterpret_cast<int64_t>(in.idx.data()), in.tokens,
                                s.topk, s.experts, 1, &h, c.err(), c.cap()),
            "nep_dispatch_notify")) {
    return;
  }
  const int64_t r = nep_handle_num_recv(h);
  std::vector<float> recv(static_cast<size_t>(r * s.hidden)), out(in.x.size());
  c.ok(nep_dispatch(c.comm(), h, reinterpret_cast<int64_t>(in.x.data()), s.hidden, NEP_WIRE_FP32, 0,
                    reinterpret_cast<int64_t>(recv.data()), 0, 0, c.err(), c.cap()),
       "nep_dispatch");
  c.ok(nep_combine(c.comm(), h, reinterpret_cast<int64_t>(recv.data()), s.hidden, NEP_WIRE_FP32, 0,
                   reinterpret_cast<int64_t>(out.data()), 0, c.err(), c.cap()),
       "nep_combine");
  std::vector<uint8_t> in_rank(static_cast<size_t>(in.tokens * s.world));
  nep_handle_is_token_in_rank(h, in_rank.data());
  for (int64_t t = 0; t < in.tokens; ++t) {
    int n = 0;
    for (int32_t q = 0; q < s.world; ++q) n += in_rank[t * s.world + q];
    for (int64_t i = 0; i < s.hidden; ++i) {
      const float want = in.x[t * s.hidden + i] * static_cast<float>(n);
      if (std::fabs(out[t * s.hidden + i] - want) > 1e-5f * (1.0f + std::fabs(want))) {
        c.check(false, "normal-mode combine between LL send and receive is wrong at token " +
                           std::to_string(t));
        break;
      }
    }
  }
  nep_handle_destroy(h);
}

// Steps over wires and token counts (T = max, a rank with no tokens, ...): each step splits send
// and receive around normal-mode work and poisons the shared buffers between steps.
inline void ll_steps(LlRankCheck& c, int steps) {
  const LlShape& s = c.shape();
  const std::vector<LlWires> plan = {
      {NEP_WIRE_BF16, 0, NEP_WIRE_BF16},
      {NEP_WIRE_FP8, 0, NEP_WIRE_BF16},
      {NEP_WIRE_FP8, NEP_LL_ROUND_SCALE, NEP_WIRE_BF16},
      {NEP_WIRE_FP32, 0, NEP_WIRE_FP32},
      {NEP_WIRE_MXFP8, 0, NEP_WIRE_BF16},
  };
  for (int step = 0; step < steps; ++step) {
    auto tokens_of = [&](int32_t r) -> int64_t {
      switch (step % 4) {
        case 0: return s.max_tokens;
        case 1: return r == 1 ? 0 : 1 + (r * 7 + step) % s.max_tokens;
        case 2: return r % 2 == 0 ? 1 : s.max_tokens - 1;
        default: return (s.max_tokens / 2 + 3 * r) % (s.max_tokens + 1);
      }
    };
    const auto all = c.inputs(step, tokens_of);
    // Every fifth step mixes wires across ranks (each sender picks its own).
    std::vector<LlWires> wires(static_cast<size_t>(s.world), plan[step % plan.size()]);
    if (step % 5 == 4) {
      for (int32_t r = 0; r < s.world; ++r) wires[r] = plan[(step + r) % plan.size()];
    }
    const std::string label = "step " + std::to_string(step);
    const LlWires& mine = wires[c.rank()];
    nep_ll_op* op = c.dispatch_send(all[c.rank()], mine);
    normal_mode_round(c, all[c.rank()]);
    LlRecv r = c.dispatch_recv(op);
    c.check_dispatch(all, wires, r, label);
    const auto y = c.expert_outputs(r);
    nep_ll_op* cop = c.combine_send(r, y, all[c.rank()], mine);
    float v = 1.0f;
    c.ok(nep_all_reduce_sum_f32(c.comm(), reinterpret_cast<int64_t>(&v), 1, c.err(), c.cap()),
         "all_reduce");
    c.check(v == static_cast<float>(s.world), "all_reduce between combine send and receive");
    const auto out = c.combine_recv(cop, all[c.rank()].tokens);
    double tol = 0.0;
    for (const LlWires& w : wires) tol = std::max(tol, ll_tolerance(w));
    c.check_combine(all, wires, out, tol, label);
    nep_ll_handle_destroy(r.handle);
    poison_between_steps(c);
  }
}

// Two results alive at once: two dispatches sent before either is received, received in reverse
// order; a third send is refused naming the pending call; then two combines likewise. With
// slow_rank >= 0 that rank waits before its receives, so the others' next send must wait for it
// to release the buffer.
inline void ll_double_buffering(LlRankCheck& c, int32_t slow_rank) {
  const LlShape& s = c.shape();
  const int32_t me = c.rank();
  const auto a = c.inputs(100, [&](int32_t r) { return (s.max_tokens + r) / 2; });
  const auto b = c.inputs(101, [&](int32_t r) { return s.max_tokens - r % 2; });
  const std::vector<LlWires> wa(static_cast<size_t>(s.world),
                                LlWires{NEP_WIRE_FP8, 0, NEP_WIRE_BF16});
  const std::vector<LlWires> wb(static_cast<size_t>(s.world),
                                LlWires{NEP_WIRE_BF16, 0, NEP_WIRE_FP32});
  nep_ll_op* op_a = c.dispatch_send(a[me], wa[me]);
  nep_ll_op* op_b = c.dispatch_send(b[me], wb[me]);
  const int64_t first = op_a != nullptr ? nep_ll_op_call_index(op_a) : -1;
  nep_ll_op* third = nullptr;
  const int32_t rc =
      nep_ll_dispatch_send(c.buffer(), reinterpret_cast<int64_t>(a[me].x.data()), a[me].tokens,
                           s.hidden, reinterpret_cast<int64_t>(a[me].idx.data()), s.topk,
                           NEP_WIRE_BF16, 0, &third, c.err(), c.cap());
  const std::string m = c.err();
  c.check(rc == NEP_ERR_INVALID_ARGUMENT && third == nullptr &&
              m.find("low-latency call " + std::to_string(first) +
                     " (a dispatch) still awaits its receive") != std::string::npos,
          "third pending send: status " + std::to_string(rc) + ": " + m);
  auto now_us = [] {
    return std::chrono::duration<double, std::micro>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  // The slow rank notes when it starts the receive that releases call A's buffer; the others
  // note when their next send on that buffer (combine A) returned: it must be later.
  std::vector<double> marks(static_cast<size_t>(s.world), 0.0);
  if (me == slow_rank) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  LlRecv rb = c.dispatch_recv(op_b);
  if (me == slow_rank) marks[me] = now_us();
  LlRecv ra = c.dispatch_recv(op_a);
  c.check_dispatch(b, wb, rb, "double-buffered dispatch B");
  c.check_dispatch(a, wa, ra, "double-buffered dispatch A");
  const auto ya = c.expert_outputs(ra);
  const auto yb = c.expert_outputs(rb);
  nep_ll_op* ca = c.combine_send(ra, ya, a[me], wa[me]);
  if (me != slow_rank) marks[me] = now_us();
  nep_ll_op* cb = c.combine_send(rb, yb, b[me], wb[me]);
  const auto outa = c.combine_recv(ca, a[me].tokens);
  const auto outb = c.combine_recv(cb, b[me].tokens);
  c.check_combine(a, wa, outa, ll_tolerance(wa[0]), "double-buffered combine A");
  c.check_combine(b, wb, outb, ll_tolerance(wb[0]), "double-buffered combine B");
  nep_ll_handle_destroy(ra.handle);
  nep_ll_handle_destroy(rb.handle);
  if (slow_rank >= 0 && slow_rank < s.world) {
    // steady_clock is CLOCK_MONOTONIC, one clock for every process of the host.
    c.ok(nep_all_reduce_sum_f64(c.comm(), reinterpret_cast<int64_t>(marks.data()), s.world, c.err(),
                                c.cap()),
         "all_reduce of the marks");
    if (me != slow_rank) {
      c.check(marks[me] >= marks[slow_rank],
              "combine send returned " + std::to_string(marks[slow_rank] - marks[me]) +
                  " us before the slow rank released the buffer it writes into");
    }
  }
}

// Refusals (every rank makes the same ones, so nobody waits): too many tokens, top-k, bad expert
// ids, duplicates, hidden, round_scale without FP8, combine with other routing; then a good
// step proves the buffer stayed usable and that no call number was consumed.
inline void ll_refusals(LlRankCheck& c) {
  const LlShape& s = c.shape();
  const int32_t me = c.rank();
  auto expect = [&](int32_t rc, int32_t want, const std::vector<std::string>& parts,
                    const std::string& what) {
    const std::string m = c.err();
    bool has = rc == want;
    for (const std::string& p : parts) has = has && m.find(p) != std::string::npos;
    c.check(has, what + ": status " + std::to_string(rc) + ": " + m);
  };
  const int64_t big = s.max_tokens + 1;
  std::vector<float> x(static_cast<size_t>(big * s.hidden), 1.0f);
  std::vector<int64_t> idx(static_cast<size_t>(big * (s.topk + 1)), -1);
  nep_ll_op* op = nullptr;
  const int64_t xa = reinterpret_cast<int64_t>(x.data()),
                ia = reinterpret_cast<int64_t>(idx.data());
  expect(nep_ll_dispatch_send(c.buffer(), xa, big, s.hidden, ia, s.topk, NEP_WIRE_BF16, 0, &op,
                              c.err(), c.cap()),
         NEP_ERR_CAPACITY,
         {"num_tokens = " + std::to_string(big),
          "max_tokens_per_rank = " + std::to_string(s.max_tokens)},
         "T > max_tokens_per_rank");
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden, ia, s.topk + 1, NEP_WIRE_BF16, 0, &op,
                              c.err(), c.cap()),
         NEP_ERR_CAPACITY,
         {"num_topk = " + std::to_string(s.topk + 1), "max_topk = " + std::to_string(s.topk)},
         "K > max_topk");
  idx[1] = s.experts;
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden, ia, s.topk, NEP_WIRE_BF16, 0, &op,
                              c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"topk_idx[0][1] = " + std::to_string(s.experts)},
         "expert id out of range");
  idx[1] = 0;
  idx[2] = 0;
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden, ia, s.topk, NEP_WIRE_BF16, 0, &op,
                              c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"selects expert 0 twice"}, "duplicate expert");
  idx[2] = -1;
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden + 1, ia, s.topk, NEP_WIRE_BF16, 0, &op,
                              c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"hidden = " + std::to_string(s.hidden + 1)}, "hidden mismatch");
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden, ia, s.topk, NEP_WIRE_BF16,
                              NEP_LL_ROUND_SCALE, &op, c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"round_scale"}, "round_scale with bf16");
  expect(nep_ll_dispatch_send(c.buffer(), xa, 2, s.hidden, ia, s.topk, 9, 0, &op, c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"wire = 9"}, "unknown wire");
  c.check(op == nullptr, "a refused send returned an op");

  // A good dispatch, a refused combine (other routing, other T), then the good combine.
  const auto all = c.inputs(200, [&](int32_t r) { return 2 + r; });
  const std::vector<LlWires> wires(static_cast<size_t>(s.world), LlWires{});
  nep_ll_op* d = c.dispatch_send(all[me], wires[me]);
  const int64_t call = d != nullptr ? nep_ll_op_call_index(d) : -1;
  LlRecv r = c.dispatch_recv(d);
  c.check_dispatch(all, wires, r, "dispatch after refusals");
  const auto y = c.expert_outputs(r);
  // Token 1, slot 1 changed: to -1 if set, else to an expert token 1 does not use.
  std::vector<int64_t> other = all[me].idx;
  int64_t* slot = &other[s.topk + 1];
  if (*slot >= 0) {
    *slot = -1;
  } else {
    for (int64_t e = 0; e < s.experts && *slot < 0; ++e) {
      bool used = false;
      for (int32_t k = 0; k < s.topk; ++k) used = used || other[s.topk + k] == e;
      if (!used) *slot = e;
    }
  }
  nep_ll_op* cop = nullptr;
  expect(nep_ll_combine_send(c.buffer(), r.handle, reinterpret_cast<int64_t>(y.data()), s.hidden,
                             reinterpret_cast<int64_t>(other.data()),
                             reinterpret_cast<int64_t>(all[me].weights.data()), all[me].tokens,
                             s.topk, NEP_WIRE_BF16, &cop, c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"topk_idx[1][1]", "differs from the dispatched routing"},
         "combine with other routing");
  expect(nep_ll_combine_send(c.buffer(), r.handle, reinterpret_cast<int64_t>(y.data()), s.hidden,
                             reinterpret_cast<int64_t>(all[me].idx.data()),
                             reinterpret_cast<int64_t>(all[me].weights.data()), all[me].tokens - 1,
                             s.topk, NEP_WIRE_BF16, &cop, c.err(), c.cap()),
         NEP_ERR_INVALID_ARGUMENT, {"num_tokens = " + std::to_string(all[me].tokens - 1)},
         "combine with other T");
  cop = c.combine_send(r, y, all[me], wires[me]);
  c.check(cop == nullptr || nep_ll_op_call_index(cop) == call + 1,
          "a refused call consumed a call number (combine is call " +
              std::to_string(cop != nullptr ? nep_ll_op_call_index(cop) : -1) + ", dispatch was " +
              std::to_string(call) + ")");
  const auto out = c.combine_recv(cop, all[me].tokens);
  c.check_combine(all, wires, out, ll_tolerance(wires[0]), "combine after refusals");
  nep_ll_handle_destroy(r.handle);
}

}  // namespace neptest

#endif  // NATIVEEP_TESTS_LL_CHECK_H_
