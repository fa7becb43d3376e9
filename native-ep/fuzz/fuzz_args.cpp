// libFuzzer target over the argument checks of the public C ABI and the wire decoders.
//
// The first input byte picks a mode; the rest is a stream of choices (FuzzInput). Scalars are
// drawn from "interesting" values (0, -1, +-2^31, INT64 extremes, small ranges) and buffers are
// always sized to match the scalars passed with them: the C ABI trusts the caller's buffer sizes
// (that is its contract), so the target fuzzes values, ranges, codes and bytes, never lies about
// lengths. A scalar that would imply an impossible buffer (a huge T or hidden) is only passed
// where it must be refused before any memory is touched.
//
//   mode 0  nep_layout: shape, ids in and around [-1, E), duplicates, null outputs, tiny
//           error buffers; on success the counts are checked against a plain loop.
//   mode 1  loopback nep_dispatch_notify + nep_dispatch + nep_combine: every argument fuzzed; on
//           success combine(dispatch(x)) with the received rows as y must equal x times the
//           number of ranks (here 0 or 1) the token went to, bit-exact for fp32.
//   mode 2  nep_decode_rows over arbitrary wire bytes for every code (incl. invalid ones) and
//           nep_encode_rows -> nep_decode_rows of arbitrary floats (NaN, Inf, subnormals): the
//           documented error bounds and non-finite rules must hold.
//   mode 3  low-latency API on loopback: nep_ll_buffer_create and nep_ll_dispatch_send with
//           fuzzed T (beyond max_tokens_per_rank too), K, ids, wire and flags; on success the
//           receive and a combine complete.
//
// Invariants for every call: the status is one of the NEP_* codes; a failure writes a non-empty,
// NUL-terminated, printable message that fits the caller's buffer (the buffer is allocated with
// its exact size, so AddressSanitizer sees any overflow); nothing aborts.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "nativeep/c_api.h"

namespace {

[[noreturn]] void violated(const char* what, const char* detail) {
  std::fprintf(stderr, "INVARIANT VIOLATED: %s: %s\n", what, detail);
  std::abort();
}

class FuzzInput {
 public:
  FuzzInput(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint8_t byte() { return pos_ < n_ ? d_[pos_++] : 0; }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(byte()) << (8 * i);
    return v;
  }
  uint64_t u64() { return static_cast<uint64_t>(u32()) | (static_cast<uint64_t>(u32()) << 32); }
  bool flag() { return (byte() & 1) != 0; }
  // A value in [lo, hi], or (rarely) one of the boundary values.
  int64_t pick(int64_t lo, int64_t hi, bool allow_extreme = true) {
    const uint8_t sel = byte();
    if (allow_extreme && sel >= 240) {
      static const int64_t kExtreme[] = {
          0,
          -1,
          -2,
          std::numeric_limits<int32_t>::min(),
          std::numeric_limits<int32_t>::max(),
          static_cast<int64_t>(std::numeric_limits<int32_t>::max()) + 1,
          std::numeric_limits<int64_t>::min(),
          std::numeric_limits<int64_t>::max(),
          1 << 16,
          1 << 20,
          -(1 << 20),
          65537,
          3,
          127,
          129,
          33};
      return kExtreme[sel - 240];
    }
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(u32() % span);
  }
  float any_float() {
    const uint8_t sel = byte();
    switch (sel & 15) {
      case 0: return std::numeric_limits<float>::quiet_NaN();
      case 1: return std::numeric_limits<float>::infinity();
      case 2: return -std::numeric_limits<float>::infinity();
      case 3: return std::numeric_limits<float>::denorm_min();
      case 4: return std::numeric_limits<float>::max();
      case 5: return -0.0f;
      default: {
        float f;
        const uint32_t bits = u32();
        std::memcpy(&f, &bits, sizeof f);
        return f;
      }
    }
  }
  size_t remaining() const { return n_ - pos_; }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

// An error buffer of an exact, fuzzed capacity (0 means a null buffer).
struct ErrBuf {
  explicit ErrBuf(int64_t cap)
      : cap_(cap), data_(cap > 0 ? new char[static_cast<size_t>(cap)] : nullptr) {
    if (data_) std::memset(data_.get(), 'x', static_cast<size_t>(cap));
  }
  char* get() { return data_.get(); }
  int64_t cap() const { return cap_; }
  int64_t cap_;
  std::unique_ptr<char[]> data_;
};

void check_status(int32_t rc, ErrBuf& err, const char* what) {
  if (rc < NEP_OK || rc > NEP_ERR_INTERNAL) violated(what, "status outside the NEP_* codes");
  if (err.get() == nullptr) return;
  const char* m = err.get();
  const size_t len = strnlen(m, static_cast<size_t>(err.cap()));
  if (len == static_cast<size_t>(err.cap()))
    violated(what, "message not NUL-terminated within err_cap");
  if (rc == NEP_OK) {
    if (len != 0) violated(what, "success with a message");
    return;
  }
  if (len == 0 && err.cap() > 1) violated(what, "failure without a message");
  for (size_t i = 0; i < len; ++i) {
    const unsigned char c = static_cast<unsigned char>(m[i]);
    if (c < 0x20 || c > 0x7e) violated(what, "message is not printable ASCII");
  }
  if (rc == NEP_ERR_INTERNAL) {
    std::fprintf(stderr, "%s: internal error on bad input: %s\n", what, m);
    violated(what, "NEP_ERR_INTERNAL for an argument problem");
  }
}

int64_t err_cap(FuzzInput& in) {
  const uint8_t s = in.byte();
  if (s < 8) return s;  // 0 (null buffer) .. 7 bytes: truncation
  return 512;
}

// ---- mode 0: layout --------------------------------------------------------------------------

void fuzz_layout(FuzzInput& in) {
  int64_t t = in.pick(0, 64);
  const int32_t k = static_cast<int32_t>(in.pick(0, 40));
  const int32_t e = static_cast<int32_t>(in.pick(0, 300));
  const int32_t w = static_cast<int32_t>(in.pick(0, 20));
  // A real buffer only for a reasonable T*K; otherwise T must be refused before any read.
  const bool sane = t >= 0 && t <= 64 && k >= 1 && k <= 40;
  std::vector<int64_t> idx;
  if (sane) {
    idx.resize(static_cast<size_t>(t * k));
    for (auto& v : idx) {
      const uint8_t sel = in.byte();
      if (sel < 200 && e > 0) {
        v = static_cast<int64_t>(in.byte()) % (static_cast<int64_t>(e) + 1) - 1;  // [-1, E)
      } else {
        v = in.pick(-3, 400);
      }
    }
  } else if (t > 0 && t <= std::numeric_limits<int32_t>::max() && k >= 1) {
    t = -t;  // a T this large with no buffer behind it is the caller's bug: keep it refusable
  }
  const bool outputs = in.flag();
  const bool sane_outputs = outputs && w >= 1 && w <= 20 && e >= 1 && e <= 300 && sane;
  std::vector<int32_t> per_rank(sane_outputs ? w : 0), per_expert(sane_outputs ? e : 0);
  std::vector<uint8_t> in_rank(sane_outputs ? static_cast<size_t>(t * w) : 0);
  ErrBuf err(err_cap(in));
  const int32_t rc = nep_layout(
      sane ? reinterpret_cast<int64_t>(idx.data()) : 0, t, k, e, w,
      sane_outputs ? reinterpret_cast<int64_t>(per_rank.data()) : 0,
      sane_outputs ? reinterpret_cast<int64_t>(per_expert.data()) : 0,
      sane_outputs && t > 0 ? reinterpret_cast<int64_t>(in_rank.data()) : 0, err.get(), err.cap());
  check_status(rc, err, "nep_layout");
  if (rc != NEP_OK || !sane_outputs) return;
  // Oracle: counts from a plain loop.
  const int32_t local = e / w;
  std::vector<int32_t> pr(w, 0), pe(e, 0);
  for (int64_t i = 0; i < t; ++i) {
    std::vector<uint8_t> seen(w, 0);
    for (int32_t j = 0; j < k; ++j) {
      const int64_t x = idx[i * k + j];
      if (x < -1 || x >= e) violated("nep_layout", "accepted an id outside [-1, E)");
      if (x < 0) continue;
      for (int32_t j2 = 0; j2 < j; ++j2) {
        if (idx[i * k + j2] == x) violated("nep_layout", "accepted a duplicate expert in a row");
      }
      ++pe[x];
      seen[x / local] = 1;
    }
    for (int32_t r = 0; r < w; ++r) {
      pr[r] += seen[r];
      if (in_rank[i * w + r] != seen[r])
        violated("nep_layout", "is_token_in_rank differs from the oracle");
    }
  }
  if (pr != per_rank || pe != per_expert) violated("nep_layout", "counts differ from the oracle");
}

// ---- mode 1: loopback notify/dispatch/combine ---------------------------------------------------

void fuzz_dispatch(FuzzInput& in, nep_comm* comm) {
  const int64_t t = in.pick(0, 48, false) - (in.byte() >= 250 ? 100 : 0);  // sometimes negative
  const int32_t k = static_cast<int32_t>(in.pick(1, 12));
  const int32_t e = static_cast<int32_t>(in.pick(1, 40));
  const int32_t align = static_cast<int32_t>(in.pick(1, 40));
  const bool sane = t >= 0 && k >= 1 && k <= 12;
  std::vector<int64_t> idx(sane ? static_cast<size_t>(t * k) : 0);
  for (auto& v : idx) {
    const uint8_t sel = in.byte();
    v = sel < 230 && e > 0 ? static_cast<int64_t>(in.byte()) % (static_cast<int64_t>(e) + 1) - 1
                           : in.pick(-3, 60);
  }
  ErrBuf err(err_cap(in));
  nep_handle* h = nullptr;
  int32_t rc = nep_dispatch_notify(in.flag() && in.flag() ? nullptr : comm,
                                   sane ? reinterpret_cast<int64_t>(idx.data()) : 0, t, k, e, align,
                                   &h, err.get(), err.cap());
  check_status(rc, err, "nep_dispatch_notify");
  if (rc != NEP_OK) {
    if (h != nullptr) violated("nep_dispatch_notify", "failure returned a handle");
    return;
  }
  if (h == nullptr) violated("nep_dispatch_notify", "success without a handle");
  const int64_t recv = nep_handle_num_recv(h);
  if (nep_handle_num_tokens(h) != t || recv < 0 || recv > t) violated("handle", "bad counts");
  // hidden: valid (with real buffers) or invalid (refused before any read).
  const bool valid_hidden = in.byte() < 220;
  static const int64_t kBadHidden[] = {0, -1, -5, std::numeric_limits<int32_t>::min(),
                                       std::numeric_limits<int64_t>::min()};
  const int64_t hidden = valid_hidden ? in.pick(1, 300, false) : kBadHidden[in.byte() % 5];
  const int32_t wire =
      in.byte() < 230 ? static_cast<int32_t>(in.byte() % 4) : static_cast<int32_t>(in.pick(-3, 9));
  const bool ok_hidden = hidden >= 1 && hidden <= 300;
  std::vector<float> x(ok_hidden ? static_cast<size_t>(t * hidden) : 0);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(static_cast<int>(in.byte()) - 128) / 8.0f;
  std::vector<float> w(sane ? static_cast<size_t>(t * k) : 0, 0.5f);
  std::vector<float> recv_x(ok_hidden ? static_cast<size_t>(recv * hidden) : 0);
  std::vector<int64_t> recv_idx(static_cast<size_t>(recv * k));
  std::vector<float> recv_w(static_cast<size_t>(recv * k));
  const bool weights = in.flag();
  const bool null_recv = recv > 0 && in.byte() >= 250;
  ErrBuf err2(err_cap(in));
  rc = nep_dispatch(comm, h, ok_hidden ? reinterpret_cast<int64_t>(x.data()) : 0, hidden, wire,
                    weights ? reinterpret_cast<int64_t>(w.data()) : 0,
                    null_recv || !ok_hidden ? 0 : reinterpret_cast<int64_t>(recv_x.data()),
                    reinterpret_cast<int64_t>(recv_idx.data()),
                    weights ? reinterpret_cast<int64_t>(recv_w.data()) : 0, err2.get(), err2.cap());
  check_status(rc, err2, "nep_dispatch");
  if (rc == NEP_OK && (!ok_hidden || wire < 0 || wire > 3 || null_recv)) {
    violated("nep_dispatch", "accepted an invalid hidden size, wire format or null recv_x");
  }
  if (rc == NEP_OK) {
    std::vector<float> out(static_cast<size_t>(t * hidden), -7.0f);
    ErrBuf err3(err_cap(in));
    rc = nep_combine(comm, h, reinterpret_cast<int64_t>(recv_x.data()), hidden, wire, 0,
                     reinterpret_cast<int64_t>(out.data()), 0, err3.get(), err3.cap());
    check_status(rc, err3, "nep_combine");
    if (rc != NEP_OK)
      violated("nep_combine", "failed after a successful dispatch with the same arguments");
    if (wire == NEP_WIRE_FP32) {
      for (int64_t i = 0; i < t; ++i) {
        bool routed = false;
        for (int32_t j = 0; j < k; ++j) routed = routed || idx[i * k + j] >= 0;
        for (int64_t c = 0; c < hidden; ++c) {
          const float want = routed ? x[i * hidden + c] : 0.0f;
          if (out[i * hidden + c] != want) violated("nep_combine", "fp32 round trip is not exact");
        }
      }
    } else {
      for (float v : out) {
        if (!std::isfinite(v) || std::fabs(v) > 17.0f)
          violated("nep_combine", "lossy round trip out of range");
      }
    }
  }
  nep_handle_destroy(h);
}

// ---- mode 2: codecs --------------------------------------------------------------------------

void fuzz_codecs(FuzzInput& in) {
  const int32_t wire =
      in.byte() < 230 ? static_cast<int32_t>(in.byte() % 4) : static_cast<int32_t>(in.pick(-3, 9));
  const int64_t hidden = in.byte() < 240 ? in.pick(1, 400, false) : in.pick(-3, 0);
  int64_t rows = in.byte() < 245 ? in.pick(0, 6, false) : -in.pick(1, 5, false);
  if (hidden > 400 && rows > 0) rows = 0;  // no buffer that large: only the checks run
  const int64_t row_bytes = nep_wire_row_bytes(wire, hidden);
  const bool valid =
      wire >= 0 && wire <= 3 && hidden >= 1 && hidden <= std::numeric_limits<int64_t>::max() / 8;
  if (valid != (row_bytes > 0))
    violated("nep_wire_row_bytes", "validity disagrees with the documented rules");
  const bool sized = valid && rows >= 0;
  // Decode arbitrary bytes.
  std::vector<uint8_t> bytes(sized ? static_cast<size_t>(rows * row_bytes) : 0);
  for (auto& b : bytes) b = in.byte();
  std::vector<float> dec(sized ? static_cast<size_t>(rows * hidden) : 0);
  ErrBuf err(err_cap(in));
  int32_t rc =
      nep_decode_rows(wire, sized ? reinterpret_cast<int64_t>(bytes.data()) : 0, rows, hidden,
                      sized ? reinterpret_cast<int64_t>(dec.data()) : 0, err.get(), err.cap());
  check_status(rc, err, "nep_decode_rows");
  if (rc == NEP_OK && !sized) violated("nep_decode_rows", "accepted invalid arguments");
  if (rc != NEP_OK && sized) violated("nep_decode_rows", "valid arguments refused");
  if (rc == NEP_OK && wire == NEP_WIRE_FP32 && !bytes.empty() &&
      std::memcmp(bytes.data(), dec.data(), bytes.size()) != 0) {
    violated("nep_decode_rows", "fp32 decode is not a bit copy");
  }
  if (!sized) return;
  // Encode arbitrary floats, decode, check the bound per element relative to its block's amax.
  std::vector<float> x(static_cast<size_t>(rows * hidden));
  for (auto& v : x) v = in.any_float();
  std::vector<uint8_t> enc(static_cast<size_t>(rows * row_bytes));
  ErrBuf err2(err_cap(in));
  rc = nep_encode_rows(wire, reinterpret_cast<int64_t>(x.data()), rows, hidden,
                       reinterpret_cast<int64_t>(enc.data()), err2.get(), err2.cap());
  check_status(rc, err2, "nep_encode_rows");
  if (rc != NEP_OK) violated("nep_encode_rows", "valid arguments refused");
  ErrBuf err3(64);
  rc = nep_decode_rows(wire, reinterpret_cast<int64_t>(enc.data()), rows, hidden,
                       reinterpret_cast<int64_t>(dec.data()), err3.get(), err3.cap());
  check_status(rc, err3, "nep_decode_rows");
  const int64_t block = wire == NEP_WIRE_FP8 ? 128 : wire == NEP_WIRE_MXFP8 ? 32 : 1;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b0 = 0; b0 < hidden; b0 += block) {
      const int64_t b1 = std::min(hidden, b0 + block);
      float amax = 0.0f;
      for (int64_t c = b0; c < b1; ++c) {
        const float v = x[r * hidden + c];
        if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
      }
      for (int64_t c = b0; c < b1; ++c) {
        const float v = x[r * hidden + c];
        const float d = dec[r * hidden + c];
        if (std::isnan(v)) {
          if (!std::isnan(d)) violated("codec", "NaN did not stay NaN");
          continue;
        }
        if (wire == NEP_WIRE_FP32) {
          if (std::memcmp(&v, &d, 4) != 0) violated("codec", "fp32 is not exact");
        } else if (wire == NEP_WIRE_BF16) {
          if (std::isinf(v)) {
            if (d != v) violated("codec", "bf16 changed an infinity");
          } else if (std::isfinite(d) &&
                     std::fabs(d - v) > std::max(std::fabs(v) / 256.0f, std::ldexp(1.0f, -134))) {
            violated("codec", "bf16 error above half an ulp");
          }
        } else if (std::isinf(v)) {
          if (!std::isnan(d)) violated("codec", "an infinity did not become NaN on an e4m3 wire");
        } else {
          // e4m3: half-ulp 2^-4 relative for normal values; MXFP8 may clip the block top (1/8) and
          // the smallest elements of a block fall into subnormals / zero: bound by amax too.
          const double tol = std::max(std::fabs(static_cast<double>(v)) / 8.0,
                                      static_cast<double>(amax) * std::ldexp(1.0, -9)) +
                             1e-38;
          if (!std::isfinite(d) || std::fabs(static_cast<double>(d) - v) > tol) {
            char msg[160];
            std::snprintf(msg, sizeof msg, "e4m3 error too large: wire %d x %g decoded %g amax %g",
                          wire, v, d, amax);
            violated("codec", msg);
          }
        }
      }
    }
  }
}

// ---- mode 3: low-latency API -----------------------------------------------------------------

// Sizes above the low-latency limits (hidden > 2^24, num_experts > 2^20) are passed as drawn and
// must be refused: hidden = 2^63 - 1 used to overflow int64 in the row size and num_experts =
// 2^31 - 1 used to allocate 8 GiB (fuzz/known/, now regression tests in ll_limits_test.cpp).
// Legal sizes above the harness's small ones are negated, so its own buffers stay small.
constexpr int64_t kLlMaxHidden = int64_t{1} << 24;
constexpr int64_t kLlMaxExperts = int64_t{1} << 20;

void fuzz_ll(FuzzInput& in, nep_comm* comm) {
  int64_t tm = in.byte() < 240 ? in.pick(1, 16, false) : in.pick(-2, 0);
  if (tm > 16) tm = -tm;  // a large max_tokens_per_rank is legal; the harness's buffers stay small
  int64_t hidden = in.byte() < 240 ? in.pick(1, 160, false) : in.pick(-2, 0);
  if (hidden > 160 && hidden <= kLlMaxHidden) hidden = -hidden;
  int32_t e = static_cast<int32_t>(in.byte() < 240 ? in.pick(1, 16, false) : in.pick(-2, 0));
  if (e > 64 && e <= kLlMaxExperts) e = -e;
  const int32_t max_topk = static_cast<int32_t>(in.pick(-1, 18, false));
  const int32_t max_wire =
      static_cast<int32_t>(in.byte() < 240 ? in.byte() % 4 : in.pick(-2, 6, false));
  const int64_t timeout = in.byte() < 250 ? 2000 : in.pick(-2, 0, false);
  ErrBuf err(err_cap(in));
  nep_ll_buffer* buf = nullptr;
  int32_t rc = nep_ll_buffer_create(comm, tm, hidden, e, max_topk, max_wire, timeout, &buf,
                                    err.get(), err.cap());
  check_status(rc, err, "nep_ll_buffer_create");
  if (rc == NEP_OK && (hidden > kLlMaxHidden || e > kLlMaxExperts)) {
    violated("nep_ll_buffer_create", "accepted a hidden size or expert count above the limits");
  }
  if (rc != NEP_OK) return;
  const int64_t t = in.pick(0, tm + 2, false);
  const int32_t k = static_cast<int32_t>(in.pick(0, max_topk + 2, false));
  std::vector<float> x(static_cast<size_t>(t * hidden));
  for (auto& v : x) v = static_cast<float>(static_cast<int>(in.byte()) - 128) / 16.0f;
  std::vector<int64_t> idx(static_cast<size_t>(t * std::max(k, 0)));
  for (auto& v : idx) {
    v = in.byte() < 230 ? static_cast<int64_t>(in.byte()) % (static_cast<int64_t>(e) + 1) - 1
                        : in.pick(-3, 40);
  }
  const int32_t wire =
      static_cast<int32_t>(in.byte() < 230 ? in.byte() % 4 : in.pick(-2, 6, false));
  const int32_t flags = static_cast<int32_t>(in.byte() < 200 ? 0 : in.pick(0, 4, false));
  nep_ll_op* op = nullptr;
  ErrBuf err2(err_cap(in));
  rc = nep_ll_dispatch_send(buf, reinterpret_cast<int64_t>(x.data()), t, hidden,
                            reinterpret_cast<int64_t>(idx.data()), k, wire, flags, &op, err2.get(),
                            err2.cap());
  check_status(rc, err2, "nep_ll_dispatch_send");
  if (rc == NEP_OK && t > tm)
    violated("nep_ll_dispatch_send", "accepted more tokens than max_tokens_per_rank");
  if (rc == NEP_OK) {
    const int32_t el = nep_ll_buffer_num_local_experts(buf);
    const int64_t n = static_cast<int64_t>(nep_ll_buffer_world_size(buf)) * tm;
    std::vector<float> recv_x(static_cast<size_t>(el * n * hidden));
    std::vector<int32_t> count(static_cast<size_t>(el));
    nep_ll_handle* h = nullptr;
    ErrBuf err3(512);
    rc = nep_ll_dispatch_recv(op, reinterpret_cast<int64_t>(recv_x.data()),
                              reinterpret_cast<int64_t>(count.data()), 0, 0, &h, err3.get(),
                              err3.cap());
    check_status(rc, err3, "nep_ll_dispatch_recv");
    if (rc != NEP_OK) violated("nep_ll_dispatch_recv", "receive failed on loopback");
    std::vector<float> wts(idx.size(), 0.25f);
    nep_ll_op* op2 = nullptr;
    ErrBuf err4(512);
    rc = nep_ll_combine_send(buf, h, reinterpret_cast<int64_t>(recv_x.data()), hidden,
                             reinterpret_cast<int64_t>(idx.data()),
                             reinterpret_cast<int64_t>(wts.data()), t, k, wire, &op2, err4.get(),
                             err4.cap());
    check_status(rc, err4, "nep_ll_combine_send");
    if (rc == NEP_OK) {
      std::vector<float> out(static_cast<size_t>(t * hidden));
      ErrBuf err5(512);
      rc = nep_ll_combine_recv(op2, reinterpret_cast<int64_t>(out.data()), err5.get(), err5.cap());
      check_status(rc, err5, "nep_ll_combine_recv");
      nep_ll_op_destroy(op2);
    }
    nep_ll_handle_destroy(h);
  }
  nep_ll_op_destroy(op);
  nep_ll_buffer_destroy(buf);
}

nep_comm* loopback() {
  static nep_comm* comm = [] {
    nep_comm* c = nullptr;
    char err[256];
    if (nep_comm_create_loopback(&c, err, sizeof err) != NEP_OK) violated("loopback", err);
    return c;
  }();
  return comm;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  FuzzInput in(data + 1, size - 1);
  static const int forced =
      std::getenv("NEP_FUZZ_MODE") ? std::atoi(std::getenv("NEP_FUZZ_MODE")) : -1;
  switch (forced >= 0 ? forced : data[0] % 4) {
    case 0: fuzz_layout(in); break;
    case 1: fuzz_dispatch(in, loopback()); break;
    case 2: fuzz_codecs(in); break;
    default: fuzz_ll(in, loopback()); break;
  }
  return 0;
}
