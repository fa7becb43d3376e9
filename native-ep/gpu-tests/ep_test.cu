// GPU test driver of the cuda-ipc transport: forks one rank per GPU and checks layout, notify,
// dispatch (fresh and cached), combine and the error paths against the host oracle (oracle.h),
// which every rank computes from the same seed for all ranks' inputs.
//
//   ep_test --world 2 [--quick] [--timeout-test] [--only NAME|errors] [--transport ipc|nccl|auto]
//   [--probe-gpu]
//
// Ranks run as forked processes on GPU rank % device_count, so --world 2 also runs on one GPU. With
// no GPU the driver prints why and exits 77 (CTest's skip code); --probe-gpu only does that check.
//
// --transport nccl (or auto with LOCAL_WORLD_SIZE < world, which simulates ranks on several hosts)
// runs the same cases over the nccl transport, plus an all-reduce case.
//
// Exit status 0 only when every check of every rank passed.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_common.h"
#include "harness.h"
#include "oracle.h"

using namespace nepgpu;

namespace {

int g_transport = NEP_CUDA_TRANSPORT_IPC;

struct Case {
  std::string name;
  Problem p;
  int wire = NEP_WIRE_BF16;
  int recv_dtype = NEP_DTYPE_BF16;
  int align = 1;
  int sms = 8;
  int cached_sms = 5;
  int y_dtype = NEP_DTYPE_BF16;
  int comb_wire = NEP_WIRE_BF16;
  int out_dtype = NEP_DTYPE_BF16;
  double q_bound = 0;  // bound on the float64 relative error of FP8/MXFP8 results, 0 = not checked
};

struct Ctx {
  Exchange& ex;
  nep_cuda_buffer* buf;
  int me, W;
  long checks = 0, failures = 0;
  std::string cur;

  void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
      ++failures;
      std::printf("[rank %d] FAIL %s: %s\n", me, cur.c_str(), what.c_str());
      std::fflush(stdout);
    }
  }
};

std::string wire_name(int w) {
  return w == NEP_WIRE_FP32   ? "fp32"
         : w == NEP_WIRE_BF16 ? "bf16"
         : w == NEP_WIRE_FP8  ? "fp8"
                              : "mxfp8";
}

// Compares rows of bytes; reports how many rows differ and the first difference. Returns the
// number of differing rows.
template <class Describe>
long compare_rows(Ctx* ctx, const std::string& what, const uint8_t* exp, const uint8_t* got,
                  int64_t rows, int64_t row_bytes, int elem_bytes, Describe describe) {
  long bad = 0;
  int64_t first = -1, first_col = -1;
  for (int64_t i = 0; i < rows; ++i) {
    if (std::memcmp(exp + i * row_bytes, got + i * row_bytes, size_t(row_bytes)) != 0) {
      if (first < 0) {
        first = i;
        for (int64_t b = 0; b < row_bytes; ++b)
          if (exp[i * row_bytes + b] != got[i * row_bytes + b]) {
            first_col = b / elem_bytes;
            break;
          }
      }
      ++bad;
    }
  }
  if (ctx != nullptr) {
    std::string msg =
        what + ": " + std::to_string(bad) + " of " + std::to_string(rows) + " rows differ";
    if (first >= 0)
      msg += "; first row " + std::to_string(first) + " (" + describe(first) + "), element " +
             std::to_string(first_col);
    ctx->check(bad == 0, msg);
  }
  return bad;
}

template <class T>
void compare_vec(Ctx& ctx, const std::string& what, const std::vector<T>& exp,
                 const std::vector<T>& got) {
  size_t bad = 0, first = size_t(-1);
  for (size_t i = 0; i < std::min(exp.size(), got.size()); ++i)
    if (std::memcmp(&exp[i], &got[i], sizeof(T)) != 0) {
      if (first == size_t(-1)) first = i;
      ++bad;
    }
  std::string msg = what + ": sizes " + std::to_string(exp.size()) + "/" +
                    std::to_string(got.size()) + ", " + std::to_string(bad) + " differ";
  if (first != size_t(-1))
    msg += "; first at " + std::to_string(first) + " expected " +
           std::to_string((double)exp[first]) + " got " + std::to_string((double)got[first]);
  ctx.check(exp.size() == got.size() && bad == 0, msg);
}

struct DispatchOut {
  DevMem x, idx, w;
};

int32_t do_dispatch(Ctx& ctx, nep_cuda_handle* h, const Case& c, const DevMem& dx,
                    const DevMem* dtopk, const DevMem* dw, DispatchOut& out, int sms, Err& e) {
  const int64_t R = nep_cuda_handle_num_recv(h), H = c.p.hidden, K = c.p.topk;
  out.x = DevMem(size_t(std::max<int64_t>(R, 1) * H * dtype_bytes(c.recv_dtype)));
  out.idx = DevMem(static_cast<size_t>(std::max<int64_t>(R, 1) * K * 8));
  out.w = DevMem(static_cast<size_t>(std::max<int64_t>(R, 1) * K * 4));
  out.x.poison(0xff);
  out.idx.poison(0x5a);
  out.w.poison(0xff);
  int32_t st =
      nep_cuda_dispatch(ctx.buf, h, dx.addr(), c.p.x_dtype, H, c.wire, dtopk ? dtopk->addr() : 0,
                        dw ? dw->addr() : 0, out.x.addr(), c.recv_dtype, dtopk ? out.idx.addr() : 0,
                        dw ? out.w.addr() : 0, sms, 0, e.msg, sizeof(e.msg));
  if (st != NEP_OK) return st;
  return nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
}

void upload_x(const Problem& p, int me, DevMem& dx) {
  const int64_t T = p.num_tokens(me), H = p.hidden;
  const int xb = dtype_bytes(p.x_dtype);
  std::vector<uint8_t> hx(static_cast<size_t>(std::max<int64_t>(T, 1) * H * xb));
  std::vector<float> row(static_cast<size_t>(H));
  for (int64_t t = 0; t < T; ++t) {
    p.x_row(me, t, row.data());
    store_dtype(p.x_dtype, row.data(), H, hx.data() + t * H * xb);
  }
  dx = DevMem(hx.size());
  dx.upload(hx.data(), hx.size());
}

// Rank me's routed inputs on the host and the device: x, topk_idx [T, K] int64 and topk_weights
// [T, K] (at least one row, so a rank without tokens still has valid addresses).
struct Inputs {
  DevMem x, topk, weights;
  std::vector<int64_t> h_topk;
  std::vector<float> h_weights;

  Inputs(const Problem& p, int me) {
    const int64_t T = p.num_tokens(me), K = p.topk;
    upload_x(p, me, x);
    h_topk.resize(static_cast<size_t>(std::max<int64_t>(T, 1) * K));
    h_weights.resize(h_topk.size());
    for (int64_t t = 0; t < T; ++t) p.topk_row(me, t, &h_topk[t * K], &h_weights[t * K]);
    topk = DevMem(h_topk.size() * 8);
    weights = DevMem(h_weights.size() * 4);
    topk.upload(h_topk.data(), h_topk.size() * 8);
    weights.upload(h_weights.data(), h_weights.size() * 4);
  }
};

// Expected recv_x bytes for a problem.
std::vector<uint8_t> expected_recv(const Problem& p, const Expected& ex, int wire, int recv_dtype) {
  const int64_t R = ex.num_recv, H = p.hidden;
  const int ob = dtype_bytes(recv_dtype);
  std::vector<uint8_t> out(static_cast<size_t>(R * H * ob));
  std::vector<float> row(static_cast<size_t>(H)), scratch;
  for (int64_t i = 0; i < R; ++i) {
    expect_recv_row(p, wire, recv_dtype, ex.recv_src_rank[i], ex.recv_src_idx[i], row.data(),
                    scratch);
    store_dtype(recv_dtype, row.data(), H, out.data() + i * H * ob);
  }
  return out;
}

void run_case(Ctx& ctx, const Case& c) {
  ctx.cur = c.name;
  const Problem& p = c.p;
  const int me = ctx.me, W = ctx.W;
  const int64_t T = p.num_tokens(me), H = p.hidden, K = p.topk, E = p.experts;
  const int El = p.local_experts();
  const Expected ex = expect_layout(p, me, c.align);

  // Inputs.
  Inputs in(p, me);
  DevMem &dx = in.x, &dtopk = in.topk, &dw = in.weights;
  std::vector<int64_t>& htopk = in.h_topk;
  std::vector<float>& hw = in.h_weights;

  // Notify.
  Err e;
  nep_cuda_handle* hraw = nullptr;
  int32_t st = nep_cuda_dispatch_notify(ctx.buf, T > 0 ? dtopk.addr() : 0, T, int(K), int(E),
                                        c.align, 0, &hraw, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_OK, std::string("notify status ") + std::to_string(st) + ": " + e.msg);
  if (st != NEP_OK) return;
  HandlePtr h(hraw);
  const int64_t R = nep_cuda_handle_num_recv(h.get());
  ctx.check(R == ex.num_recv,
            "num_recv " + std::to_string(R) + ", expected " + std::to_string(ex.num_recv));
  if (R != ex.num_recv) return;
  std::vector<int32_t> got(static_cast<size_t>(W * W));
  nep_cuda_handle_rank_prefix_matrix(h.get(), got.data());
  compare_vec(ctx, "rank_prefix_matrix", ex.rank_prefix, got);
  got.assign(size_t(W), 0);
  nep_cuda_handle_rank_num_tokens(h.get(), got.data());
  compare_vec(ctx, "rank tokens", ex.rank_tokens, got);
  got.assign(size_t(El), 0);
  nep_cuda_handle_recv_tokens_per_expert(h.get(), 0, got.data());
  compare_vec(ctx, "recv_tokens_per_expert (raw)", ex.recv_raw, got);
  nep_cuda_handle_recv_tokens_per_expert(h.get(), 1, got.data());
  compare_vec(ctx, "recv_tokens_per_expert (aligned " + std::to_string(c.align) + ")",
              ex.recv_aligned, got);
  {
    std::vector<uint8_t> in_rank(static_cast<size_t>(T * W));
    st = nep_cuda_handle_copy_is_token_in_rank(h.get(), in_rank.data(), e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, e.msg);
    compare_vec(ctx, "is_token_in_rank", ex.is_token_in_rank, in_rank);
  }

  // Fresh dispatch.
  DispatchOut d1;
  st = do_dispatch(ctx, h.get(), c, dx, &dtopk, &dw, d1, c.sms, e);
  ctx.check(st == NEP_OK, std::string("dispatch status ") + std::to_string(st) + ": " + e.msg);
  if (st != NEP_OK) return;
  const int ob = dtype_bytes(c.recv_dtype);
  const std::vector<uint8_t> exp_x = expected_recv(p, ex, c.wire, c.recv_dtype);
  std::vector<uint8_t> got_x(exp_x.size());
  d1.x.download(got_x.data(), got_x.size());
  auto describe = [&](int64_t i) {
    return "from rank " + std::to_string(ex.recv_src_rank[i]) + " token " +
           std::to_string(ex.recv_src_idx[i]);
  };
  compare_rows(&ctx, "recv_x (" + wire_name(c.wire) + " wire)", exp_x.data(), got_x.data(), R,
               H * ob, ob, describe);
  {
    // The comparison must see a single flipped bit (guards against a vacuous check).
    if (R > 0) {
      std::vector<uint8_t> mutated = got_x;
      mutated[size_t((R / 2) * H * ob + (H / 3) * ob)] ^= 0x01;
      ctx.check(
          compare_rows(nullptr, "", exp_x.data(), mutated.data(), R, H * ob, ob, describe) == 1 ||
              compare_rows(nullptr, "", exp_x.data(), got_x.data(), R, H * ob, ob, describe) != 0,
          "mutation check: a flipped bit in recv_x was not detected");
    }
    std::vector<int32_t> src(static_cast<size_t>(R));
    st = nep_cuda_handle_copy_recv_src_idx(h.get(), src.data(), e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, e.msg);
    compare_vec(ctx, "recv_src_idx", ex.recv_src_idx, src);
    std::vector<int64_t> gidx(static_cast<size_t>(R * K));
    std::vector<float> gw(static_cast<size_t>(R * K));
    d1.idx.download(gidx.data(), gidx.size() * 8);
    d1.w.download(gw.data(), gw.size() * 4);
    compare_vec(ctx, "recv_topk_idx (local ids)", ex.recv_topk_idx, gidx);
    compare_vec(ctx, "recv_topk_weights (zero where not local)", ex.recv_topk_w, gw);
    // Per-expert counts from the received ids equal the handle's raw counts.
    std::vector<int32_t> cnt(size_t(El), 0);
    bool ids_ok = true;
    for (int64_t v : gidx) {
      if (v >= 0 && v < El) cnt[size_t(v)]++;
      else if (v != -1) ids_ok = false;
    }
    ctx.check(ids_ok, "recv_topk_idx holds values outside {-1} U [0, El)");
    compare_vec(ctx, "count(recv_topk_idx == e)", ex.recv_raw, cnt);
  }
  // Wire rows (nep_cuda_dispatch_wire): the same call into rows kept as they travelled, decoded
  // on the GPU (nep_cuda_decode_wire_rows), must give the float dispatch's rows bit for bit, with
  // the same top-k and weights.
  if ((c.wire == NEP_WIRE_FP8 || c.wire == NEP_WIRE_MXFP8) && c.recv_dtype == NEP_DTYPE_FP32) {
    const int64_t rb = c.wire == NEP_WIRE_FP8
                           ? (((H + 15) / 16 * 16 + 4 * ((H + 127) / 128)) + 15) / 16 * 16
                           : (((H + 15) / 16 * 16 + (H + 31) / 32) + 15) / 16 * 16;
    DevMem rows(size_t(std::max<int64_t>(R, 1) * rb));
    DevMem idx(size_t(std::max<int64_t>(R, 1) * K * 8));
    DevMem wts(size_t(std::max<int64_t>(R, 1) * K * 4));
    DevMem dec(size_t(std::max<int64_t>(R, 1) * H * 4));
    rows.poison(0xff);
    dec.poison(0xff);
    st = nep_cuda_dispatch_wire(ctx.buf, h.get(), dx.addr(), p.x_dtype, H, c.wire, dtopk.addr(),
                                dw.addr(), rows.addr(), rb, idx.addr(), wts.addr(), c.sms, 0, e.msg,
                                sizeof(e.msg));
    ctx.check(st == NEP_OK,
              std::string("dispatch_wire status ") + std::to_string(st) + ": " + e.msg);
    if (st == NEP_OK) {
      st = nep_cuda_decode_wire_rows(nep_cuda_buffer_device(ctx.buf), c.wire, rows.addr(), R, H, rb,
                                     dec.addr(), 0, e.msg, sizeof(e.msg));
      ctx.check(st == NEP_OK, std::string("decode_wire_rows: ") + e.msg);
      st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
      ctx.check(st == NEP_OK, std::string("sync after dispatch_wire: ") + e.msg);
      std::vector<uint8_t> got_dec(static_cast<size_t>(R * H * 4));
      dec.download(got_dec.data(), got_dec.size());
      compare_rows(&ctx, "decoded wire rows (" + wire_name(c.wire) + ") vs recv_x", got_x.data(),
                   got_dec.data(), R, H * ob, ob, describe);
      std::vector<int64_t> widx(static_cast<size_t>(R * K)), fidx(widx.size());
      std::vector<float> ww(static_cast<size_t>(R * K)), fw(ww.size());
      idx.download(widx.data(), widx.size() * 8);
      d1.idx.download(fidx.data(), fidx.size() * 8);
      wts.download(ww.data(), ww.size() * 4);
      d1.w.download(fw.data(), fw.size() * 4);
      compare_vec(ctx, "wire-row dispatch recv_topk_idx", fidx, widx);
      compare_vec(ctx, "wire-row dispatch recv_topk_weights", fw, ww);
    }
  }
  // Provenance and order read from the rows themselves (pattern data: channel 0 = source rank + 1,
  // the last two 128-channel groups = the token index in base 128).
  if (p.data == Data::kPattern && c.wire != NEP_WIRE_MXFP8) {
    long bad = 0;
    std::string first;
    int64_t row0 = 0;
    for (int s = 0; s < W; ++s) {
      const int64_t row1 = ex.rank_prefix[s * W + me];
      int64_t prev = -1;
      for (int64_t i = row0; i < row1; ++i) {
        const uint8_t* rp = got_x.data() + i * H * ob;
        const double src = load_dtype(c.recv_dtype, rp, 0) - 1.0;
        const double t =
            load_dtype(c.recv_dtype, rp, H - 256) + 128.0 * load_dtype(c.recv_dtype, rp, H - 128);
        const bool ok = std::fabs(src - s) < 1e-3 && std::fabs(t - std::nearbyint(t)) < 1e-3 &&
                        t > prev + 0.5 && std::nearbyint(t) < p.num_tokens(s);
        if (!ok) {
          if (bad == 0)
            first = "row " + std::to_string(i) + " reads source " + std::to_string(src) +
                    " token " + std::to_string(t) + ", slice of rank " + std::to_string(s) +
                    ", previous token " + std::to_string(prev);
          ++bad;
        }
        prev = (int64_t)std::nearbyint(t);
      }
      row0 = row1;
    }
    ctx.check(bad == 0,
              "pattern provenance/order: " + std::to_string(bad) + " rows wrong; " + first);
  }
  // FP8/MXFP8: float64 relative error of the received rows against the original rows.
  if (c.q_bound > 0) {
    double num = 0, den = 0;
    std::vector<float> xr(static_cast<size_t>(H));
    for (int64_t i = 0; i < R; ++i) {
      p.x_row(ex.recv_src_rank[i], ex.recv_src_idx[i], xr.data());
      for (int64_t hh = 0; hh < H; ++hh) {
        const double g = load_dtype(c.recv_dtype, got_x.data() + i * H * ob, hh),
                     x = xr[size_t(hh)];
        num += (g - x) * (g - x);
        den += x * x;
      }
    }
    const double rel = den > 0 ? std::sqrt(num / den) : 0;
    std::printf("[rank %d] %s: %s dispatch relative error (float64) %.3e, bound %.1e\n", me,
                c.name.c_str(), wire_name(c.wire).c_str(), rel, c.q_bound);
    ctx.check(std::isfinite(rel) && rel < c.q_bound, "dispatch relative error " +
                                                         std::to_string(rel) + " >= bound " +
                                                         std::to_string(c.q_bound));
  }

  // Cached dispatch, same data, another SM count: equal to the fresh result.
  {
    DispatchOut d2;
    st = do_dispatch(ctx, h.get(), c, dx, &dtopk, &dw, d2, c.cached_sms, e);
    ctx.check(st == NEP_OK,
              std::string("cached dispatch status ") + std::to_string(st) + ": " + e.msg);
    if (st == NEP_OK) {
      std::vector<uint8_t> g2(got_x.size());
      d2.x.download(g2.data(), g2.size());
      compare_rows(&ctx, "cached dispatch (sms " + std::to_string(c.cached_sms) + ") == fresh",
                   got_x.data(), g2.data(), R, H * ob, ob, describe);
    }
  }
  // Cached dispatch of other data without topk: equal to the oracle of that data.
  {
    Problem p2 = p;
    p2.variant = 1;
    DevMem dx2;
    upload_x(p2, me, dx2);
    DispatchOut d3;
    st = do_dispatch(ctx, h.get(), c, dx2, nullptr, nullptr, d3, c.cached_sms, e);
    ctx.check(st == NEP_OK,
              std::string("cached dispatch (other x) status ") + std::to_string(st) + ": " + e.msg);
    if (st == NEP_OK) {
      const std::vector<uint8_t> exp2 = expected_recv(p2, ex, c.wire, c.recv_dtype);
      std::vector<uint8_t> g3(exp2.size());
      d3.x.download(g3.data(), g3.size());
      compare_rows(&ctx, "cached dispatch of other x", exp2.data(), g3.data(), R, H * ob, ob,
                   describe);
    }
  }

  // Combine: y_me[row] = dtype(recv * (me + 1)); out[t] = sum over ranks r that got t, in rank
  // order, of wire(y_r) in fp32.
  {
    const int yb = dtype_bytes(c.y_dtype), odb = dtype_bytes(c.out_dtype);
    std::vector<uint8_t> hy(static_cast<size_t>(std::max<int64_t>(R, 1) * H * yb));
    std::vector<float> recv(static_cast<size_t>(H)), y(static_cast<size_t>(H)),
        yw(static_cast<size_t>(H)), acc(static_cast<size_t>(H)), scratch;
    for (int64_t i = 0; i < R; ++i) {
      for (int64_t hh = 0; hh < H; ++hh)
        recv[size_t(hh)] = load_dtype(c.recv_dtype, exp_x.data() + i * H * ob, hh);
      combine_input_row(c.y_dtype, me, recv.data(), H, y.data());
      store_dtype(c.y_dtype, y.data(), H, hy.data() + i * H * yb);
    }
    DevMem dy(hy.size());
    dy.upload(hy.data(), hy.size());
    DevMem dout(static_cast<size_t>(std::max<int64_t>(T, 1) * H * odb)),
        dout_w(static_cast<size_t>(std::max<int64_t>(T, 1) * K * 4));
    dout.poison(0xff);
    dout_w.poison(0xff);
    st = nep_cuda_combine(ctx.buf, h.get(), dy.addr(), c.y_dtype, H, c.comb_wire, d1.w.addr(),
                          dout.addr(), c.out_dtype, dout_w.addr(), c.sms, 0, e.msg, sizeof(e.msg));
    if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, std::string("combine status ") + std::to_string(st) + ": " + e.msg);
    if (st == NEP_OK) {
      std::vector<uint8_t> exp_out(static_cast<size_t>(T * H * odb)), got_out(exp_out.size());
      std::vector<float> exp_w(static_cast<size_t>(T * K)), got_w(exp_w.size());
      std::vector<float> xr(static_cast<size_t>(H));
      for (int64_t t = 0; t < T; ++t) {
        expect_recv_row(p, c.wire, c.recv_dtype, me, t, recv.data(), scratch);
        std::fill(acc.begin(), acc.end(), 0.f);
        float wacc[NEP_CUDA_MAX_TOPK] = {0};
        for (int r = 0; r < W; ++r) {
          if (!ex.is_token_in_rank[size_t(t * W + r)]) continue;
          combine_input_row(c.y_dtype, r, recv.data(), H, y.data());
          wire_roundtrip(c.comb_wire, y.data(), H, yw.data());
          for (int64_t hh = 0; hh < H; ++hh) acc[size_t(hh)] += yw[size_t(hh)];
          for (int k = 0; k < K; ++k)
            wacc[k] += p.owner(htopk[t * K + k]) == r ? hw[t * K + k] : 0.f;
        }
        for (int64_t hh = 0; hh < H; ++hh) acc[size_t(hh)] = to_dtype(c.out_dtype, acc[size_t(hh)]);
        store_dtype(c.out_dtype, acc.data(), H, exp_out.data() + t * H * odb);
        for (int k = 0; k < K; ++k) exp_w[size_t(t * K + k)] = wacc[k];
      }
      dout.download(got_out.data(), got_out.size());
      dout_w.download(got_w.data(), got_w.size() * 4);
      auto describe_t = [&](int64_t t) { return "token " + std::to_string(t); };
      compare_rows(&ctx, "combine out (fp32 sum in rank order)", exp_out.data(), got_out.data(), T,
                   H * odb, odb, describe_t);
      compare_vec(ctx, "combine out_weights == topk_weights (0 for -1 slots)", exp_w, got_w);
      // Weights round trip: the combined weights are the original weights where the slot is set.
      bool rt = true;
      for (int64_t t = 0; t < T && rt; ++t)
        for (int k = 0; k < K; ++k) {
          const float want = htopk[t * K + k] >= 0 ? hw[t * K + k] : 0.f;
          if (std::memcmp(&want, &got_w[size_t(t * K + k)], 4) != 0) rt = false;
        }
      ctx.check(rt, "weights round trip (dispatch then combine) lost a weight");
      if (c.q_bound > 0) {
        double num = 0, den = 0;
        for (int64_t t = 0; t < T; ++t) {
          double nvis = 0;
          for (int r = 0; r < W; ++r)
            if (ex.is_token_in_rank[size_t(t * W + r)]) nvis += r + 1;
          if (nvis == 0) continue;
          p.x_row(me, t, xr.data());
          for (int64_t hh = 0; hh < H; ++hh) {
            const double ref = nvis * xr[size_t(hh)];
            const double g = load_dtype(c.out_dtype, got_out.data() + t * H * odb, hh);
            num += (g - ref) * (g - ref);
            den += ref * ref;
          }
        }
        const double rel = den > 0 ? std::sqrt(num / den) : 0;
        std::printf(
            "[rank %d] %s: combine relative error vs float64 sum of original x %.3e, bound %.1e\n",
            me, c.name.c_str(), rel, c.q_bound);
        ctx.check(std::isfinite(rel) && rel < c.q_bound,
                  "combine relative error " + std::to_string(rel));
      }
    }
  }

  // Standalone layout entry point.
  {
    DevMem tpr(size_t(W) * 4), tpe(size_t(E) * 4),
        inr(static_cast<size_t>(std::max<int64_t>(T, 1) * W));
    tpr.poison(0x7f);
    tpe.poison(0x7f);
    inr.poison(0x7f);
    st = nep_cuda_layout(ctx.buf, T > 0 ? dtopk.addr() : 0, T, int(K), int(E), tpr.addr(),
                         tpe.addr(), inr.addr(), 0, e.msg, sizeof(e.msg));
    if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, std::string("layout status ") + std::to_string(st) + ": " + e.msg);
    if (st == NEP_OK) {
      std::vector<int32_t> g1(static_cast<size_t>(W)), g2(static_cast<size_t>(E));
      std::vector<uint8_t> g3(static_cast<size_t>(T * W));
      tpr.download(g1.data(), g1.size() * 4);
      tpe.download(g2.data(), g2.size() * 4);
      inr.download(g3.data(), g3.size());
      compare_vec(ctx, "layout tokens_per_rank", ex.tokens_per_rank, g1);
      compare_vec(ctx, "layout tokens_per_expert", ex.tokens_per_expert, g2);
      compare_vec(ctx, "layout is_token_in_rank", ex.is_token_in_rank, g3);
    }
  }
}

// 20 repeats of notify + dispatch + combine give identical bytes.
void run_repeats(Ctx& ctx, const Case& c, int repeats) {
  ctx.cur = c.name + " x" + std::to_string(repeats);
  const Problem& p = c.p;
  const int me = ctx.me;
  const int64_t T = p.num_tokens(me), H = p.hidden, K = p.topk;
  Inputs in(p, me);
  DevMem &dx = in.x, &dtopk = in.topk, &dw = in.weights;
  std::vector<uint64_t> hashes;
  for (int it = 0; it < repeats; ++it) {
    Err e;
    nep_cuda_handle* hraw = nullptr;
    int32_t st = nep_cuda_dispatch_notify(ctx.buf, T > 0 ? dtopk.addr() : 0, T, int(K), p.experts,
                                          c.align, 0, &hraw, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, e.msg);
    if (st != NEP_OK) return;
    HandlePtr h(hraw);
    const int64_t R = nep_cuda_handle_num_recv(h.get());
    DispatchOut d;
    st = do_dispatch(ctx, h.get(), c, dx, &dtopk, &dw, d, c.sms, e);
    ctx.check(st == NEP_OK, e.msg);
    if (st != NEP_OK) return;
    // Combine the received rows themselves (bf16 or fp32 as received).
    DevMem dout(static_cast<size_t>(std::max<int64_t>(T, 1) * H * 4)),
        dout_w(static_cast<size_t>(std::max<int64_t>(T, 1) * K * 4));
    dout.poison(0xff);
    dout_w.poison(0xff);
    st = nep_cuda_combine(ctx.buf, h.get(), d.x.addr(), c.recv_dtype, H, NEP_WIRE_BF16, d.w.addr(),
                          dout.addr(), NEP_DTYPE_FP32, dout_w.addr(), c.sms, 0, e.msg,
                          sizeof(e.msg));
    if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, e.msg);
    if (st != NEP_OK) return;
    std::vector<uint8_t> a(static_cast<size_t>(R * H * dtype_bytes(c.recv_dtype))),
        b(static_cast<size_t>(R * K * 8)), cw(static_cast<size_t>(R * K * 4)),
        o(static_cast<size_t>(T * H * 4)), ow(static_cast<size_t>(T * K * 4));
    std::vector<int32_t> src(static_cast<size_t>(R));
    d.x.download(a.data(), a.size());
    d.idx.download(b.data(), b.size());
    d.w.download(cw.data(), cw.size());
    dout.download(o.data(), o.size());
    dout_w.download(ow.data(), ow.size());
    nep_cuda_handle_copy_recv_src_idx(h.get(), src.data(), e.msg, sizeof(e.msg));
    uint64_t hh = fnv1a(a.data(), a.size());
    hh = fnv1a(b.data(), b.size(), hh);
    hh = fnv1a(cw.data(), cw.size(), hh);
    hh = fnv1a(o.data(), o.size(), hh);
    hh = fnv1a(ow.data(), ow.size(), hh);
    hh = fnv1a(src.data(), src.size() * 4, hh);
    hashes.push_back(hh);
  }
  long diff = 0;
  for (uint64_t v : hashes) diff += v != hashes[0];
  std::printf("[rank %d] %s: hash %016llx, %ld of %d repeats differ\n", me, ctx.cur.c_str(),
              (unsigned long long)hashes[0], diff, repeats);
  ctx.check(diff == 0, "repeats are not bitwise identical");
}

// W ranks with `tokens` tokens each, hidden 512 and 8 experts per rank.
Problem small_problem(int W, int64_t tokens) {
  Problem p;
  p.world = W;
  p.tokens = tokens;
  p.hidden = 512;
  p.experts = 8 * W;
  return p;
}

bool contains(const char* s, const std::string& sub) {
  return std::string(s).find(sub) != std::string::npos;
}

// Error paths: each must return the documented status with a message naming the argument, value
// and limit, and leave the buffer usable.
void run_negative(Ctx& ctx) {
  ctx.cur = "errors";
  const Problem p = small_problem(ctx.W, 64);
  const int me = ctx.me, W = ctx.W;
  const int64_t T = p.num_tokens(me), K = p.topk;
  Inputs in(p, me);
  DevMem &dx = in.x, &dtopk = in.topk;
  std::vector<int64_t>& htopk = in.h_topk;
  DevMem dout(size_t(64) << 20);
  Err e;
  nep_cuda_handle* hraw = nullptr;
  int32_t st = nep_cuda_dispatch_notify(ctx.buf, dtopk.addr(), T, int(K), p.experts, 1, 0, &hraw,
                                        e.msg, sizeof(e.msg));
  ctx.check(st == NEP_OK, e.msg);
  if (st != NEP_OK) return;
  HandlePtr h(hraw);

  st = nep_cuda_combine(ctx.buf, h.get(), dout.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                        dout.addr(), NEP_DTYPE_BF16, 0, 4, 0, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "dispatch"),
            std::string("combine before dispatch: ") + e.msg);
  st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, 204, NEP_WIRE_FP8, 0, 0,
                         dout.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "hidden=204") &&
                contains(e.msg, "multiple of 8"),
            std::string("fp8 hidden 204: ") + e.msg);
  st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0, 0,
                         dout.addr(), NEP_DTYPE_BF16, 0, 0, 0, 0, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "num_sms=0"),
            std::string("num_sms 0: ") + e.msg);
  // Spans the kernels would touch, checked against the allocations before any launch (each of
  // these once launched a kernel that read or wrote far outside its array).
  {
    const int64_t R = nep_cuda_handle_num_recv(h.get());
    // x holds T x 512 bf16; a call that claims 2^20 fp32 channels must be refused, not launched.
    st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_FP32, 1 << 20, NEP_WIRE_FP32, 0,
                           0, dout.addr(), NEP_DTYPE_FP32, 0, 0, 1, 0, e.msg, sizeof(e.msg));
    ctx.check(T == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "x=0x") &&
                         contains(e.msg, "needs " + std::to_string(T * 4 << 20))),
              std::string("x smaller than [T, hidden]: ") + e.msg);
    // recv_x too small for [R, hidden]: the kernel would write past it.
    DevMem small_recv(256);
    st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                           0, small_recv.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
    ctx.check(R == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "recv_x=0x")),
              std::string("recv_x smaller than [R, hidden]: ") + e.msg);
    // Host memory is not GPU memory.
    std::vector<uint8_t> host_x(size_t(std::max<int64_t>(T, 1) * p.hidden * 2) + 64);
    const int64_t host_addr = (reinterpret_cast<int64_t>(host_x.data()) + 15) / 16 * 16;
    st = nep_cuda_dispatch(ctx.buf, h.get(), host_addr, NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                           0, dout.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
    ctx.check(T == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "host memory")),
              std::string("x in host memory: ") + e.msg);
    // topk_weights [T, K] float32 in an 8-byte allocation.
    DevMem tiny(8);
    st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16,
                           dtopk.addr(), tiny.addr(), dout.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0,
                           e.msg, sizeof(e.msg));
    ctx.check(T == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "topk_weights=0x")),
              std::string("topk_weights too small: ") + e.msg);
  }
  if (g_transport == NEP_CUDA_TRANSPORT_IPC) {  // the nccl transport stages rows outside the buffer
    // Rows too large for the rings: 2^22 fp32 channels (16 MiB a message) leave fewer than the
    // minimum slots per ring in a 1 GiB buffer at every world size; the arrays are real and large
    // enough, so only the capacity can refuse the call.
    const int64_t big_h = int64_t(1) << 22, R = nep_cuda_handle_num_recv(h.get());
    DevMem big_x(size_t(std::max<int64_t>(T, 1) * big_h * 4)),
        big_recv(size_t(std::max<int64_t>(R, 1) * big_h * 4));
    st = nep_cuda_dispatch(ctx.buf, h.get(), big_x.addr(), NEP_DTYPE_FP32, big_h, NEP_WIRE_FP32, 0,
                           0, big_recv.addr(), NEP_DTYPE_FP32, 0, 0, 1, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_ERR_CAPACITY && contains(e.msg, "buffer_bytes="),
              std::string("capacity: ") + e.msg);
  } else {
    st = nep_cuda_buffer_peer_scratch(ctx.buf, 0, nullptr, nullptr, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_ERR_UNSUPPORTED, std::string("peer scratch over nccl: ") + e.msg);
  }
  {
    // A real dispatch, then a combine whose out [T, hidden] fp32 would not fit its allocation.
    const int64_t R = nep_cuda_handle_num_recv(h.get());
    DevMem recv(size_t(std::max<int64_t>(R, 1) * p.hidden * 2)), small_out(16);
    st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                           0, recv.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
    if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, std::string("dispatch before the combine checks: ") + e.msg);
    st = nep_cuda_combine(ctx.buf, h.get(), recv.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                          small_out.addr(), NEP_DTYPE_FP32, 0, 4, 0, e.msg, sizeof(e.msg));
    ctx.check(T == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "out=0x")),
              std::string("out smaller than [T, hidden]: ") + e.msg);
    st = nep_cuda_combine(ctx.buf, h.get(), small_out.addr(), NEP_DTYPE_BF16, p.hidden,
                          NEP_WIRE_BF16, 0, dout.addr(), NEP_DTYPE_FP32, 0, 4, 0, e.msg,
                          sizeof(e.msg));
    ctx.check(R == 0 || (st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "y=0x")),
              std::string("y smaller than [R, hidden]: ") + e.msg);
    // The same handle still combines correctly-sized arrays (every rank takes part).
    st = nep_cuda_combine(ctx.buf, h.get(), recv.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                          dout.addr(), NEP_DTYPE_FP32, 0, 4, 0, e.msg, sizeof(e.msg));
    if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_OK, std::string("combine after the refused ones: ") + e.msg);
  }
  st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), 7, p.hidden, NEP_WIRE_BF16, 0, 0, dout.addr(),
                         NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, "x_dtype=7"),
            std::string("dtype 7: ") + e.msg);
  std::printf("[rank %d] errors: host-side checks done (last message: %s)\n", me, e.msg);

  // A bad index on rank 0 and a duplicate on the last rank: the bad rank gets INVALID_ARGUMENT
  // naming the entry, the others NEP_ERR_PEER naming the rank; nobody hangs.
  for (int variant = 0; variant < 2; ++variant) {
    const int bad_rank = variant == 0 ? 0 : W - 1;
    std::vector<int64_t> bad = htopk;
    if (me == bad_rank) {
      if (variant == 0) bad[1] = p.experts;                  // token 0, slot 1
      else bad[size_t(1 * K + 2)] = bad[size_t(1 * K + 0)];  // token 1 repeats slot 0 in slot 2
    }
    DevMem dbad(bad.size() * 8);
    dbad.upload(bad.data(), bad.size() * 8);
    nep_cuda_handle* hb = nullptr;
    st = nep_cuda_dispatch_notify(ctx.buf, dbad.addr(), T, int(K), p.experts, 1, 0, &hb, e.msg,
                                  sizeof(e.msg));
    HandlePtr hbad(hb);
    if (me == bad_rank) {
      const std::string want =
          variant == 0 ? "topk_idx[0][1]=" + std::to_string(p.experts) : "topk_idx[1][2]=";
      ctx.check(st == NEP_ERR_INVALID_ARGUMENT && contains(e.msg, want),
                "bad topk on this rank: status " + std::to_string(st) + ": " + e.msg);
    } else {
      ctx.check(st == NEP_ERR_PEER && contains(e.msg, "rank " + std::to_string(bad_rank)),
                "bad topk on rank " + std::to_string(bad_rank) + ": status " + std::to_string(st) +
                    ": " + e.msg);
    }
    ctx.check(hb == nullptr, "a failed notify returned a handle");
    if (variant == 1 || me == 0)
      std::printf("[rank %d] errors: bad topk variant %d -> %d: %s\n", me, variant, st, e.msg);
  }
  // Ranks that disagree on num_experts.
  if (W > 1) {
    nep_cuda_handle* hm = nullptr;
    const int E = me == 1 ? p.experts * 2 : p.experts;
    st = nep_cuda_dispatch_notify(ctx.buf, dtopk.addr(), T, int(K), E, 1, 0, &hm, e.msg,
                                  sizeof(e.msg));
    HandlePtr hmm(hm);
    ctx.check(st == NEP_ERR_PEER && contains(e.msg, "num_experts"),
              "num_experts mismatch: status " + std::to_string(st) + ": " + e.msg);
    if (me <= 1) std::printf("[rank %d] errors: num_experts mismatch -> %d: %s\n", me, st, e.msg);
  }
}

// nccl transport: the dense-gradient all-reduce, fp32 and bf16, of integers that every order of
// summation gives exactly.
// Sums n values of `dtype` (T: its host type) over the ranks, rank r contributing value(i, r + 1),
// and compares with value(i, 1 + 2 + ... + W).
template <class T, class Value>
void check_all_reduce(Ctx& ctx, int32_t dtype, const std::string& name, int64_t n, Value value) {
  const int me = ctx.me, W = ctx.W;
  std::vector<T> h(static_cast<size_t>(n)), want(h.size()), got(h.size());
  for (int64_t i = 0; i < n; ++i) {
    h[size_t(i)] = value(i, me + 1);
    want[size_t(i)] = value(i, W * (W + 1) / 2);
  }
  Err e;
  DevMem d(h.size() * sizeof(T));
  d.upload(h.data(), h.size() * sizeof(T));
  int32_t st = nep_cuda_all_reduce_sum(ctx.buf, d.addr(), n, dtype, 0, e.msg, sizeof(e.msg));
  if (st == NEP_OK) st = nep_cuda_sync(ctx.buf, 0, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_OK, "all-reduce " + name + " status " + std::to_string(st) + ": " + e.msg);
  d.download(got.data(), got.size() * sizeof(T));
  compare_vec(ctx, "all-reduce " + name + " sum", want, got);
}

void run_all_reduce(Ctx& ctx) {
  ctx.cur = "all-reduce";
  const int64_t n = (int64_t(1) << 20) + 3;
  check_all_reduce<float>(ctx, NEP_DTYPE_FP32, "fp32", n,
                          [](int64_t i, int k) { return float((i % 1000) * k); });
  check_all_reduce<uint16_t>(ctx, NEP_DTYPE_BF16, "bf16", n,
                             [](int64_t i, int k) { return f32_to_bf16(float((i % 16) * k)); });
}

// One rank skips a dispatch: the others must fail within the timeout with a message naming the
// rank, the peer and the counter, and their buffers must stay failed.
void run_timeout(Ctx& ctx) {
  ctx.cur = "timeout";
  const Problem p = small_problem(ctx.W, 256);
  const int me = ctx.me;
  const int64_t T = p.num_tokens(me), K = p.topk;
  Inputs in(p, me);
  DevMem &dx = in.x, &dtopk = in.topk;
  Err e;
  int32_t st = nep_cuda_buffer_set_timeout(ctx.buf, 2000, e.msg, sizeof(e.msg));
  ctx.check(st == NEP_OK, e.msg);
  nep_cuda_handle* hraw = nullptr;
  st = nep_cuda_dispatch_notify(ctx.buf, dtopk.addr(), T, int(K), p.experts, 1, 0, &hraw, e.msg,
                                sizeof(e.msg));
  ctx.check(st == NEP_OK, e.msg);
  if (st != NEP_OK) return;
  HandlePtr h(hraw);
  Case c;
  c.p = p;
  if (me != 0) {
    DispatchOut d;
    const auto t0 = std::chrono::steady_clock::now();
    st = do_dispatch(ctx, h.get(), c, dx, nullptr, nullptr, d, 4, e);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[rank %d] timeout: status %d after %.2f s: %s\n", me, st, secs, e.msg);
    ctx.check(st == NEP_ERR_TIMEOUT && contains(e.msg, "timed out") && contains(e.msg, "peer"),
              std::string("expected a timeout: ") + e.msg);
    ctx.check(secs < 10, "the timeout took " + std::to_string(secs) + " s (limit 2 s + margin)");
    st = nep_cuda_dispatch(ctx.buf, h.get(), dx.addr(), NEP_DTYPE_BF16, p.hidden, NEP_WIRE_BF16, 0,
                           0, d.x.addr(), NEP_DTYPE_BF16, 0, 0, 4, 0, e.msg, sizeof(e.msg));
    ctx.check(st == NEP_ERR_TIMEOUT,
              "a failed buffer accepted another dispatch: " + std::to_string(st));
  }
}

// Canonical-size rows through a small buffer: about 230 messages per ring, so every ring wraps
// several times in one call.
Case base_wrap_case(int W) {
  Case c;
  c.name = "small-buffer-wrap";
  c.p.world = W;
  c.p.seed = 77;
  c.p.tokens = 4096, c.p.hidden = 7168, c.p.experts = 256;
  const int64_t region = int64_t(67) << 20;  // ring region of the 68 MiB buffer, roughly
  const int64_t slot = 16 + 8 * 8 + 2 * 7168;
  c.sms = int(std::max<int64_t>(1, region / W / (230 * slot)));
  c.cached_sms = std::max(1, c.sms - 1);
  return c;
}

std::vector<Case> make_cases(int W, bool quick) {
  std::vector<Case> cs;
  auto base = [&](const std::string& name) {
    Case c;
    c.name = name;
    c.p.world = W;
    c.p.seed = 1000 + cs.size();
    return c;
  };
  {
    Case c = base("bf16-pattern-uneven");
    c.p.tokens = 700, c.p.token_step = 37, c.p.hidden = 1024, c.p.experts = 64,
    c.p.data = Data::kPattern;
    c.sms = 8, c.cached_sms = 5;
    cs.push_back(c);
  }
  {
    Case c = base("fp8-pattern-f32out");
    c.p.tokens = 300, c.p.token_step = 11, c.p.hidden = 2048, c.p.experts = 64,
    c.p.data = Data::kPattern;
    c.wire = NEP_WIRE_FP8, c.recv_dtype = NEP_DTYPE_BF16, c.sms = 6, c.cached_sms = 9,
    c.out_dtype = NEP_DTYPE_FP32;
    cs.push_back(c);
  }
  {
    Case c = base("fp8-random-align32");
    c.p.tokens = 1024, c.p.token_step = 100, c.p.hidden = 2048, c.p.experts = 128;
    c.wire = NEP_WIRE_FP8, c.align = 32, c.sms = 12, c.cached_sms = 24,
    c.out_dtype = NEP_DTYPE_FP32, c.q_bound = 0.05;
    cs.push_back(c);
  }
  {
    Case c = base("mxfp8-random-f32recv");
    c.p.tokens = 600, c.p.token_step = 50, c.p.hidden = 1536, c.p.experts = 64;
    c.wire = NEP_WIRE_MXFP8, c.recv_dtype = NEP_DTYPE_FP32, c.align = 32, c.sms = 7,
    c.cached_sms = 3;
    c.y_dtype = NEP_DTYPE_FP32, c.q_bound = 0.06;
    cs.push_back(c);
  }
  {
    Case c = base("fp32-wire-h264");
    c.p.tokens = 333, c.p.token_step = 20, c.p.hidden = 264, c.p.experts = 32, c.p.topk = 4,
    c.p.x_dtype = NEP_DTYPE_FP32;
    c.wire = NEP_WIRE_FP32, c.recv_dtype = NEP_DTYPE_FP32, c.sms = 3, c.cached_sms = 1;
    c.y_dtype = NEP_DTYPE_FP32, c.comb_wire = NEP_WIRE_FP32, c.out_dtype = NEP_DTYPE_FP32;
    cs.push_back(c);
  }
  {
    Case c = base("zero-tokens-on-rank1");
    c.p.tokens = 500, c.p.zero_rank = 1, c.p.hidden = 512, c.p.experts = 64;
    c.sms = 4, c.cached_sms = 2;
    cs.push_back(c);
  }
  {
    Case c = base("all-to-one-expert");
    c.p.tokens = 400, c.p.hidden = 1024, c.p.experts = 64, c.p.routing = Routing::kOneExpert;
    c.wire = NEP_WIRE_FP8, c.sms = 6, c.cached_sms = 16, c.q_bound = 0.05;
    cs.push_back(c);
  }
  {
    Case c = base("masked-slots");
    c.p.tokens = 900, c.p.token_step = 13, c.p.hidden = 768, c.p.experts = 64,
    c.p.routing = Routing::kMasked;
    c.align = 8, c.sms = 16, c.cached_sms = 4;
    cs.push_back(c);
  }
  {
    Case c = base("one-token-h7168");
    c.p.tokens = 1, c.p.hidden = 7168, c.p.experts = 256;
    c.wire = NEP_WIRE_FP8, c.sms = 24, c.cached_sms = 24;
    cs.push_back(c);
  }
  {
    Case c = base("biased-mxfp8");
    c.p.tokens = 2000, c.p.hidden = 2048, c.p.experts = 128, c.p.routing = Routing::kBiased;
    c.wire = NEP_WIRE_MXFP8, c.sms = 32, c.cached_sms = 12, c.q_bound = 0.06;
    cs.push_back(c);
  }
  {
    // Hidden sizes whose last FP8 (1x128) or MXFP8 (1x32) scale group is partial: 200 = 128 + 72
    // (and 200 = 6 x 32 + 8), 64 (the tiny preset's: one half group), as the CPU engine takes them.
    Case c = base("fp8-partial-block-h200");
    c.p.tokens = 257, c.p.token_step = 31, c.p.hidden = 200, c.p.experts = 32;
    c.wire = NEP_WIRE_FP8, c.sms = 5, c.cached_sms = 3, c.out_dtype = NEP_DTYPE_FP32,
    c.q_bound = 0.05;
    cs.push_back(c);
    Case d = base("mxfp8-partial-group-h200");
    d.p.tokens = 190, d.p.token_step = 17, d.p.hidden = 200, d.p.experts = 32,
    d.p.x_dtype = NEP_DTYPE_FP32;
    d.wire = NEP_WIRE_MXFP8, d.recv_dtype = NEP_DTYPE_FP32, d.sms = 4, d.cached_sms = 6,
    d.q_bound = 0.06;
    cs.push_back(d);
    Case t = base("fp8-h64-tiny");
    t.p.tokens = 96, t.p.token_step = 9, t.p.hidden = 64, t.p.experts = 8, t.p.topk = 2;
    t.wire = NEP_WIRE_FP8, t.sms = 2, t.cached_sms = 1, t.q_bound = 0.05;
    cs.push_back(t);
  }
  if (!quick) {
    Case c = base("canonical-fp8");
    c.p.tokens = 4096, c.p.hidden = 7168, c.p.experts = 256;
    c.wire = NEP_WIRE_FP8, c.sms = 24, c.cached_sms = 20, c.q_bound = 0.05;
    cs.push_back(c);
    Case d = base("canonical-bf16-uneven");
    d.p.tokens = 4096, d.p.token_step = 1, d.p.hidden = 7168, d.p.experts = 256;
    d.sms = 24, d.cached_sms = 32;
    cs.push_back(d);
  }
  return cs;
}

int rank_main(Exchange& ex, bool quick, bool timeout_test, const std::string& only) {
  const int me = ex.rank(), W = ex.world();
  cuda_ok(cudaSetDevice(device_of_rank(me)), "cudaSetDevice");
  BufferPtr buf = make_buffer(ex, int64_t(1) << 30, 10000, g_transport);
  if (me == 0)
    std::printf("ep_test world %d: transport %s\n", W,
                transport_name(nep_cuda_buffer_transport(buf.get())));
  Ctx ctx{ex, buf.get(), me, W};
  std::vector<Case> cases = make_cases(W, quick);
  for (const Case& c : cases) {
    if (!only.empty() && c.name != only) continue;
    const long f0 = ctx.failures, c0 = ctx.checks;
    const auto t0 = std::chrono::steady_clock::now();
    run_case(ctx, c);
    ex.barrier();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[rank %d] case %-24s %s (%ld checks, %ld failed, %.1f s)\n", me, c.name.c_str(),
                ctx.failures == f0 ? "PASS" : "FAIL", ctx.checks - c0, ctx.failures - f0, secs);
    std::fflush(stdout);
  }
  if (only == "errors") {  // the refusals alone (the sanitizers run them)
    const long f0 = ctx.failures;
    run_negative(ctx);
    ex.barrier();
    std::printf("[rank %d] case %-24s %s\n", me, "errors", ctx.failures == f0 ? "PASS" : "FAIL");
  }
  if (only.empty()) {
    {
      long f0 = ctx.failures;
      run_negative(ctx);
      ex.barrier();
      std::printf("[rank %d] case %-24s %s\n", me, "errors", ctx.failures == f0 ? "PASS" : "FAIL");
      // The buffer still works after the errors.
      Case c = cases[0];
      c.name = "after-errors";
      f0 = ctx.failures;
      run_case(ctx, c);
      ex.barrier();
      std::printf("[rank %d] case %-24s %s\n", me, c.name.c_str(),
                  ctx.failures == f0 ? "PASS" : "FAIL");
    }
    {
      const long f0 = ctx.failures;
      Case c = cases[2];  // fp8 random
      c.name = "fp8-repeats";
      run_repeats(ctx, c, 20);
      ex.barrier();
      std::printf("[rank %d] case %-24s %s\n", me, "fp8-repeats x20",
                  ctx.failures == f0 ? "PASS" : "FAIL");
    }
    {
      // A small buffer: rings of ~200 messages, so each ring wraps several times per call.
      const long f0 = ctx.failures;
      const int64_t bytes = (int64_t(64) << 20) + (int64_t(4) << 20);
      BufferPtr small = make_buffer(ex, bytes, 10000, g_transport);
      Case c = base_wrap_case(W);
      Ctx sctx{ex, small.get(), me, W};
      run_case(sctx, c);
      ex.barrier();
      ctx.checks += sctx.checks;
      ctx.failures += sctx.failures;
      std::printf("[rank %d] case %-24s %s (sms %d)\n", me, c.name.c_str(),
                  ctx.failures == f0 ? "PASS" : "FAIL", c.sms);
    }
    if (g_transport == NEP_CUDA_TRANSPORT_NCCL) {
      const long f0 = ctx.failures;
      run_all_reduce(ctx);
      ex.barrier();
      std::printf("[rank %d] case %-24s %s\n", me, "all-reduce",
                  ctx.failures == f0 ? "PASS" : "FAIL");
    }
    if (timeout_test) {
      const long f0 = ctx.failures;
      run_timeout(ctx);
      ex.barrier();
      std::printf("[rank %d] case %-24s %s\n", me, "timeout", ctx.failures == f0 ? "PASS" : "FAIL");
    }
  }
  ex.barrier();
  long mine[2] = {ctx.checks, ctx.failures};
  std::vector<long> all(static_cast<size_t>(2 * W));
  ex.allgather(mine, sizeof(mine), all.data());
  if (me == 0) {
    long checks = 0, failures = 0;
    for (int r = 0; r < W; ++r) checks += all[2 * r], failures += all[2 * r + 1];
    std::printf("ep_test world %d: %ld checks, %ld failed -> %s\n", W, checks, failures,
                failures == 0 ? "PASS" : "FAIL");
  }
  return ctx.failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int world = std::atoi(opt(argc, argv, "--world", "2"));
  const bool quick = flag(argc, argv, "--quick");
  const bool timeout_test = flag(argc, argv, "--timeout-test");
  const std::string only = opt(argc, argv, "--only", "");
  try {
    g_transport = parse_transport(opt(argc, argv, "--transport", "ipc"), world);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "%s\n", ex.what());
    return 2;
  }
  if (world < 1 || world > NEP_CUDA_MAX_RANKS) {
    std::fprintf(stderr, "--world %d is outside [1, %d]\n", world, NEP_CUDA_MAX_RANKS);
    return 2;
  }
  if (!gpu_present("ep_test")) return kSkipNoGpu;
  if (flag(argc, argv, "--probe-gpu")) return 0;
  const int failed = run_ranks(
      world, 600, 30, [&](Exchange& ex) { return rank_main(ex, quick, timeout_test, only); });
  std::printf("ep_test: %d of %d ranks failed\n", failed, world);
  return failed == 0 ? 0 : 1;
}
