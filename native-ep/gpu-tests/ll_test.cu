// Correctness of the cuda-ipc low-latency mode (cuda_api.h "Low-latency mode") against a host
// oracle: every rank builds every rank's inputs from a seed, computes what it must receive with
// plain loops (wire casts from oracle.h, written independently of the kernels) and compares bit
// for bit; combine is also compared with x * sum_k w_k c_e in float64 (calc_diff).
//
//   ll_test --world W [--quick] [--only NAME] [--timeout-ms 60000]
//
// W ranks run as forked processes on GPU rank % device_count, so W = 2, 4 or 8 also run on one GPU
// (their kernels then time-slice: slow, but the protocol is the same). Cases:
//   wires / mixed wires / round scale / fp32 x / masked (-1) / hot expert / empty rank / T = 0:
//     counts per local expert == all-gathered selections, rows' source (index channel) exact,
//     layout ranges, rows past the count untouched (poisoned before), combine bit-exact against
//     the slot-ordered fp32 sum and calc_diff(x * sum w c) below 1e-5 (bf16) / 9e-4 (fp8);
//   harness ordering: the drivers' host copies and poisons are complete before a kernel on the
//     test's non-blocking stream reads them (a kernel right after a 512 MiB poison or upload);
//   reuse: several steps in a row on the same buffers, shared buffer and outputs poisoned between;
//   refusals: T > max_tokens_per_rank (NEP_ERR_CAPACITY), a third pending send, a stale handle,
//     arrays smaller than their shapes or in host memory (refused before any launch);
//   double buffering: two dispatches pending and received in reverse order, two combines likewise;
//   hook: a normal-mode dispatch + combine runs between an LL send and its receive;
//   graph: dispatch + combine captured in a CUDA graph, replays equal the eager run bit for bit;
//   bad input: an out-of-range expert on one rank fails every rank, naming that rank;
//   timeout: one rank skips a dispatch; the others report (rank, peer, counter) within the timeout.
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "harness.h"
#include "ll_harness.h"
#include "oracle.h"

using namespace nepgpu;

namespace {

int g_fail = 0;
int g_pass = 0;

// Counts the bytes of p[0, n) that differ from `want`.
__global__ void count_bytes_not(const uint8_t* p, size_t n, uint8_t want, unsigned long long* bad) {
  unsigned long long c = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    c += p[i] != want;
  if (c != 0) atomicAdd(bad, c);
}

void check(bool ok, int rank, const std::string& what) {
  if (ok) return;
  ++g_fail;
  if (g_fail <= 30) std::fprintf(stderr, "[rank %d] FAIL: %s\n", rank, what.c_str());
}

// FP8 with power-of-two scales, as the LL kernels (wire.cuh encode8_fp8_pow2).
void fp8_pow2_roundtrip(const float* in, int64_t H, float* out) {
  const E4M3& q = e4m3();
  for (int64_t g = 0; g < H; g += 128) {
    const int n = int(std::min<int64_t>(128, H - g));  // the last group may be partial
    float amax = 0.f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, finite_abs(in[g + i]));
    amax = std::max(amax, 448.f * 0x1p-126f);  // the codec's floor
    const uint32_t qb = f2u(amax / 448.f);
    int e = int((qb >> 23) & 0xff) - 127;
    if ((qb & 0x7fffffu) != 0) ++e;
    e = std::min(126, std::max(-126, e));
    const float scale = u2f(uint32_t(127 + e) << 23), mul = u2f(uint32_t(127 - e) << 23);
    for (int i = 0; i < n; ++i) out[g + i] = q.decode(q.encode(in[g + i] * mul)) * scale;
  }
}

void ll_roundtrip(int wire, int flags, const float* in, int64_t H, float* out) {
  if (wire == NEP_WIRE_FP8 && (flags & NEP_CUDA_LL_ROUND_SCALE)) fp8_pow2_roundtrip(in, H, out);
  else wire_roundtrip(wire, in, H, out);
}

double calc_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double xy = 0, xx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    xy += a[i] * b[i];
    xx += a[i] * a[i] + b[i] * b[i];
  }
  return xx == 0 ? 0.0 : 1.0 - 2.0 * xy / xx;
}

double tolerance(int wire) {
  return wire == NEP_WIRE_FP32 ? 1e-9 : wire == NEP_WIRE_BF16 ? 1e-5 : 9e-4;
}

struct Case {
  std::string name;
  uint64_t seed = 1;
  std::function<int64_t(int)> tokens;  // T of rank r
  int topk = 8;
  int x_dtype = NEP_DTYPE_BF16, recv_dtype = NEP_DTYPE_BF16, y_dtype = NEP_DTYPE_BF16,
      out_dtype = NEP_DTYPE_FP32;
  std::function<int(int)> dwire = [](int) { return NEP_WIRE_BF16; };
  std::function<int(int)> dflags = [](int) { return 0; };
  std::function<int(int)> cwire = [](int) { return NEP_WIRE_BF16; };
  double mask = 0.0;   // probability of a -1 slot; every 7th token fully masked when > 0
  bool hot = false;    // 60% of selections among experts 0..3
  bool factor = true;  // experts scale by c_e; false: y = recv_x (graph case)
};

float expert_factor(int64_t e) { return 0.5f + 0.25f * float(e % 7); }

// Every rank's inputs, built identically on every rank.
struct Inputs {
  int world = 0, topk = 0, experts = 0;
  int64_t hidden = 0;
  std::vector<int64_t> T;
  std::vector<std::vector<float>> x;      // [s][T, H] values of x_dtype
  std::vector<std::vector<int64_t>> idx;  // [s][T, K]
  std::vector<std::vector<float>> w;      // [s][T, K]
};

Inputs make_inputs(const Case& c, int world, int64_t H, int E) {
  Inputs in;
  in.world = world;
  in.topk = c.topk;
  in.experts = E;
  in.hidden = H;
  for (int s = 0; s < world; ++s) {
    const int64_t T = c.tokens(s);
    in.T.push_back(T);
    std::vector<float> x(size_t(T * H));
    std::vector<int64_t> idx(size_t(T * c.topk));
    std::vector<float> w(size_t(T * c.topk));
    for (int64_t t = 0; t < T; ++t) {
      Rng rng(c.seed, 1 + s, 1 + t, 3);
      const float mag = std::ldexp(1.f, int(rng.next() % 13) - 6);
      for (int64_t h = 0; h < H; ++h) x[t * H + h] = to_dtype(c.x_dtype, float(rng.normal()) * mag);
      int n = 0;
      while (n < c.topk) {
        int64_t e = c.hot && rng.uniform() < 0.6 ? int64_t(rng.next() % 4)
                                                 : int64_t(rng.next() % uint64_t(E));
        bool dup = false;
        for (int j = 0; j < n; ++j) dup |= idx[t * c.topk + j] == e;
        if (!dup) idx[t * c.topk + n++] = e;
      }
      for (int k = 0; k < c.topk; ++k) {
        w[t * c.topk + k] = float(0.05 + rng.uniform());
        if (c.mask > 0 && (t % 7 == 3 || rng.uniform() < c.mask)) idx[t * c.topk + k] = -1;
      }
    }
    in.x.push_back(std::move(x));
    in.idx.push_back(std::move(idx));
    in.w.push_back(std::move(w));
  }
  return in;
}

struct RankData {  // this rank's device tensors of one case
  DevMem x, idx, w, recv_x, recv_count, src_info, range, y, out;
};

int dsize(int dtype) { return dtype == NEP_DTYPE_BF16 ? 2 : 4; }

std::vector<uint8_t> to_bytes(int dtype, const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * size_t(dsize(dtype)));
  store_dtype(dtype, v.data(), int64_t(v.size()), b.data());
  return b;
}

class LlTester {
 public:
  LlTester(Exchange& ex, nep_cuda_ll_buffer* buf, cudaStream_t stream)
      : ex_(ex), buf_(buf), stream_(stream), me_(ex.rank()), W_(ex.world()) {
    H_ = nep_cuda_ll_buffer_hidden(buf);
    E_ = nep_cuda_ll_buffer_num_experts(buf);
    El_ = nep_cuda_ll_buffer_num_local_experts(buf);
    Tm_ = nep_cuda_ll_buffer_max_tokens_per_rank(buf);
    N_ = int64_t(W_) * Tm_;
  }

  // Barrier, poison the LL buffer's data halves, barrier: stale data can only leak if the
  // protocol reads what this step did not write.
  void poison_shared() {
    Err e;
    ex_.barrier();
    nep_ok(nep_cuda_ll_buffer_poison(buf_, (int64_t)stream_, e.msg, sizeof(e.msg)), e,
           "nep_cuda_ll_buffer_poison");
    nep_ok(nep_cuda_ll_sync(buf_, (int64_t)stream_, e.msg, sizeof(e.msg)), e, "nep_cuda_ll_sync");
    ex_.barrier();
  }

  RankData upload(const Case& c, const Inputs& in) {
    RankData d;
    const int64_t T = in.T[me_];
    const auto xb = to_bytes(c.x_dtype, in.x[me_]);
    d.x = DevMem(std::max<size_t>(xb.size(), 16));
    d.x.upload(xb.data(), xb.size());
    d.idx = DevMem(std::max<size_t>(size_t(T * c.topk) * 8, 16));
    d.idx.upload(in.idx[me_].data(), size_t(T * c.topk) * 8);
    d.w = DevMem(std::max<size_t>(size_t(T * c.topk) * 4, 16));
    d.w.upload(in.w[me_].data(), size_t(T * c.topk) * 4);
    d.recv_x = DevMem(size_t(El_ * N_ * H_) * dsize(c.recv_dtype));
    d.recv_count = DevMem(size_t(El_) * 4);
    d.src_info = DevMem(size_t(El_ * N_) * 4);
    d.range = DevMem(size_t(El_ * W_) * 8);
    d.y = DevMem(size_t(El_ * N_ * H_) * dsize(c.y_dtype));
    d.out = DevMem(std::max<size_t>(size_t(T * H_) * dsize(c.out_dtype), 16));
    for (DevMem* m : {&d.recv_x, &d.recv_count, &d.src_info, &d.range, &d.y, &d.out})
      m->poison(0xFF);
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    return d;
  }

  LlOpPtr dispatch_send(const Case& c, const Inputs& in, RankData& d) {
    Err e;
    nep_cuda_ll_op* op = nullptr;
    nep_ok(nep_cuda_ll_dispatch_send(buf_, d.x.addr(), c.x_dtype, in.T[me_], H_, d.idx.addr(),
                                     c.topk, c.dwire(me_), c.dflags(me_), (int64_t)stream_, &op,
                                     e.msg, sizeof(e.msg)),
           e, "nep_cuda_ll_dispatch_send");
    return LlOpPtr(op);
  }
  LlHandlePtr dispatch_recv(const Case& c, nep_cuda_ll_op* op, RankData& d) {
    Err e;
    nep_cuda_ll_handle* h = nullptr;
    nep_ok(nep_cuda_ll_dispatch_recv(op, d.recv_x.addr(), c.recv_dtype, d.recv_count.addr(),
                                     d.src_info.addr(), d.range.addr(), (int64_t)stream_, &h, e.msg,
                                     sizeof(e.msg)),
           e, "nep_cuda_ll_dispatch_recv");
    return LlHandlePtr(h);
  }
  LlOpPtr combine_send(const Case& c, nep_cuda_ll_handle* h, RankData& d, int64_t y_addr,
                       int y_dtype) {
    Err e;
    nep_cuda_ll_op* op = nullptr;
    nep_ok(nep_cuda_ll_combine_send(buf_, h, y_addr, y_dtype, d.idx.addr(), d.w.addr(),
                                    c.cwire(me_), (int64_t)stream_, &op, e.msg, sizeof(e.msg)),
           e, "nep_cuda_ll_combine_send");
    return LlOpPtr(op);
  }
  void combine_recv(const Case& c, nep_cuda_ll_op* op, RankData& d) {
    Err e;
    nep_ok(nep_cuda_ll_combine_recv(op, d.out.addr(), c.out_dtype, (int64_t)stream_, e.msg,
                                    sizeof(e.msg)),
           e, "nep_cuda_ll_combine_recv");
  }
  void sync() {
    Err e;
    nep_ok(nep_cuda_ll_sync(buf_, (int64_t)stream_, e.msg, sizeof(e.msg)), e, "nep_cuda_ll_sync");
  }

  // Checks the dispatch outputs; returns the expected received values [El][N][H] (fp32 of
  // recv_dtype).
  std::vector<float> check_dispatch(const Case& c, const Inputs& in, RankData& d,
                                    const std::string& label) {
    const int K = c.topk;
    std::vector<int32_t> count(El_), src(size_t(El_ * N_));
    std::vector<int64_t> range(size_t(El_ * W_));
    d.recv_count.download(count.data(), count.size() * 4);
    d.src_info.download(src.data(), src.size() * 4);
    d.range.download(range.data(), range.size() * 8);
    const int rb = dsize(c.recv_dtype);
    std::vector<uint8_t> got(size_t(El_ * N_ * H_) * rb);
    d.recv_x.download(got.data(), got.size());
    std::vector<float> expect(size_t(El_ * N_ * H_), 0.f), row(H_);
    int bad_rows = 0;
    for (int le = 0; le < El_; ++le) {
      const int64_t e = int64_t(me_) * El_ + le;
      int64_t n = 0;
      for (int s = 0; s < W_; ++s) {
        const int64_t begin = n;
        for (int64_t t = 0; t < in.T[s]; ++t) {
          bool sel = false;
          for (int k = 0; k < K; ++k) sel |= in.idx[s][t * K + k] == e;
          if (!sel) continue;
          ll_roundtrip(c.dwire(s), c.dflags(s), &in.x[s][t * H_], H_, row.data());
          float* ex = &expect[size_t((le * N_ + n) * H_)];
          for (int64_t h = 0; h < H_; ++h) ex[h] = to_dtype(c.recv_dtype, row[h]);
          if (n < N_) {
            check(src[le * N_ + n] == int32_t(t), me_,
                  label + ": src_info[" + std::to_string(le) + "][" + std::to_string(n) +
                      "]=" + std::to_string(src[le * N_ + n]) + ", expected token " +
                      std::to_string(t) + " of rank " + std::to_string(s));
            bool same = true;
            for (int64_t h = 0; h < H_ && same; ++h)
              same = load_dtype(c.recv_dtype, got.data(), (le * N_ + n) * H_ + h) == ex[h] ||
                     (std::isnan(ex[h]));
            if (!same && ++bad_rows <= 5)
              check(false, me_,
                    label + ": recv_x row " + std::to_string(n) + " of local expert " +
                        std::to_string(le) + " (rank " + std::to_string(s) + " token " +
                        std::to_string(t) + ") differs from the oracle");
          }
          ++n;
        }
        const int64_t want = (begin << 32) | (n - begin);
        check(range[le * W_ + s] == want, me_,
              label + ": layout_range[" + std::to_string(le) + "][" + std::to_string(s) +
                  "]=" + std::to_string(range[le * W_ + s]) + ", expected " + std::to_string(want));
      }
      check(count[le] == n, me_,
            label + ": recv_count[" + std::to_string(le) + "]=" + std::to_string(count[le]) +
                ", expected " + std::to_string(n));
      for (int64_t i = n; i < N_; ++i) {
        if (src[le * N_ + i] != -1) {
          check(false, me_,
                label + ": src_info past the count is not -1 (local expert " + std::to_string(le) +
                    ")");
          break;
        }
      }
      // Rows past the count stay as poisoned (0xFF bytes).
      const uint8_t* tail = got.data() + size_t((le * N_ + n) * H_) * rb;
      const size_t tail_bytes = size_t((N_ - n) * H_) * rb;
      bool untouched = true;
      for (size_t i = 0; i < tail_bytes && untouched; ++i) untouched = tail[i] == 0xFF;
      check(untouched, me_,
            label + ": recv_x rows past recv_count of local expert " + std::to_string(le) +
                " were written");
    }
    check(bad_rows == 0, me_, label + ": " + std::to_string(bad_rows) + " received rows differ");
    return expect;
  }

  // y = dtype(recv * c_e) for the rows below the count; poisoned rows beyond stay poisoned.
  void upload_y(const Case& c, const std::vector<float>& recv, RankData& d,
                const std::vector<int32_t>& count) {
    const int yb = dsize(c.y_dtype);
    std::vector<uint8_t> y(size_t(El_ * N_ * H_) * yb, 0xFF);
    std::vector<float> row(H_);
    for (int le = 0; le < El_; ++le) {
      const float f = c.factor ? expert_factor(int64_t(me_) * El_ + le) : 1.f;
      for (int64_t i = 0; i < count[le]; ++i) {
        for (int64_t h = 0; h < H_; ++h)
          row[h] = to_dtype(c.y_dtype, recv[size_t((le * N_ + i) * H_ + h)] * f);
        store_dtype(c.y_dtype, row.data(), H_, y.data() + size_t((le * N_ + i) * H_) * yb);
      }
    }
    d.y.upload(y.data(), y.size());
  }

  void check_combine(const Case& c, const Inputs& in, RankData& d, const std::string& label) {
    const int K = c.topk;
    const int64_t T = in.T[me_];
    const int ob = dsize(c.out_dtype);
    std::vector<uint8_t> got(std::max<size_t>(size_t(T * H_) * ob, 1));
    d.out.download(got.data(), size_t(T * H_) * ob);
    std::vector<float> acc(H_), v(H_), y(H_), rt(H_);
    std::vector<double> gotd, ideal;
    int bad = 0;
    double worst = 0;
    for (int64_t t = 0; t < T; ++t) {
      bool first = true;
      std::fill(acc.begin(), acc.end(), 0.f);
      std::vector<double> id(H_, 0.0);
      ll_roundtrip(c.dwire(me_), c.dflags(me_), &in.x[me_][t * H_], H_, rt.data());
      for (int k = 0; k < K; ++k) {
        const int64_t e = in.idx[me_][t * K + k];
        if (e < 0) continue;
        const float f = c.factor ? expert_factor(e) : 1.f;
        const float wk = in.w[me_][t * K + k];
        for (int64_t h = 0; h < H_; ++h)
          y[h] = to_dtype(c.y_dtype, to_dtype(c.recv_dtype, rt[h]) * f);
        wire_roundtrip(c.cwire(int(e / El_)), y.data(), H_, v.data());
        for (int64_t h = 0; h < H_; ++h) {
          const float p = wk * v[h];
          acc[h] = first ? p : acc[h] + p;
          id[h] += double(wk) * double(f) * double(in.x[me_][t * H_ + h]);
        }
        first = false;
      }
      bool same = true;
      for (int64_t h = 0; h < H_; ++h) {
        const float want = to_dtype(c.out_dtype, acc[h]);
        const float g = load_dtype(c.out_dtype, got.data(), t * H_ + h);
        if (!(g == want)) same = false;
        gotd.push_back(g);
        ideal.push_back(id[h]);
      }
      if (!same && ++bad <= 5)
        check(false, me_,
              label + ": combined token " + std::to_string(t) +
                  " differs from the slot-ordered fp32 sum");
    }
    check(bad == 0, me_, label + ": " + std::to_string(bad) + " combined tokens differ");
    const double diff = calc_diff(gotd, ideal);
    worst = diff;
    double tol = 0;
    for (int r = 0; r < W_; ++r)
      tol = std::max({tol, tolerance(c.dwire(r)), tolerance(c.cwire(r))});
    if (c.y_dtype == NEP_DTYPE_BF16 || c.recv_dtype == NEP_DTYPE_BF16 ||
        c.out_dtype == NEP_DTYPE_BF16)
      tol = std::max(tol, 1e-5);
    check(std::isfinite(diff) && diff < tol, me_,
          label + ": calc_diff(combine, x * sum w c) = " + std::to_string(diff) +
              " >= " + std::to_string(tol));
    if (me_ == 0)
      std::printf("[rank 0] %-28s calc_diff %.3g (limit %.1g)\n", label.c_str(), worst, tol);
  }

  // One full step: send, receive, experts, combine; every output checked.
  void step(const Case& c, const std::string& label) {
    const Inputs in = make_inputs(c, W_, H_, E_);
    RankData d = upload(c, in);
    poison_shared();
    LlOpPtr op = dispatch_send(c, in, d);
    LlHandlePtr h = dispatch_recv(c, op.get(), d);
    sync();
    const auto recv = check_dispatch(c, in, d, label);
    std::vector<int32_t> count(El_);
    d.recv_count.download(count.data(), count.size() * 4);
    upload_y(c, recv, d, count);
    LlOpPtr cop = combine_send(c, h.get(), d, d.y.addr(), c.y_dtype);
    combine_recv(c, cop.get(), d);
    sync();
    check_combine(c, in, d, label);
  }

  Exchange& ex_;
  nep_cuda_ll_buffer* buf_;
  cudaStream_t stream_;
  int me_, W_;
  int64_t H_ = 0, Tm_ = 0, N_ = 0;
  int E_ = 0, El_ = 0;
};

void report(int rank, const char* name, int before) {
  if (g_fail == before) ++g_pass;
  if (rank == 0) std::printf("[rank 0] case %-24s %s\n", name, g_fail == before ? "ok" : "FAILED");
  std::fflush(stdout);
}

// Normal-mode dispatch + combine (fp32 wire) between an LL send and its receive.
void normal_round(Exchange& ex, nep_cuda_buffer* nb, const Inputs& in, int x_dtype,
                  cudaStream_t stream) {
  const int me = ex.rank(), K = in.topk;
  const int64_t T = in.T[me], H = in.hidden;
  Err e;
  DevMem x(std::max<size_t>(size_t(T * H) * dsize(x_dtype), 16)),
      idx(std::max<size_t>(size_t(T * K) * 8, 16));
  const auto xb = to_bytes(x_dtype, in.x[me]);
  x.upload(xb.data(), xb.size());
  idx.upload(in.idx[me].data(), size_t(T * K) * 8);
  nep_cuda_handle* raw = nullptr;
  nep_ok(nep_cuda_dispatch_notify(nb, idx.addr(), T, K, in.experts, 1, (int64_t)stream, &raw, e.msg,
                                  sizeof(e.msg)),
         e, "nep_cuda_dispatch_notify");
  HandlePtr h(raw);
  const int64_t R = nep_cuda_handle_num_recv(h.get());
  DevMem recv(std::max<size_t>(size_t(R * H) * 4, 16)),
      out(std::max<size_t>(size_t(T * H) * 4, 16));
  nep_ok(nep_cuda_dispatch(nb, h.get(), x.addr(), x_dtype, H, NEP_WIRE_FP32, 0, 0, recv.addr(),
                           NEP_DTYPE_FP32, 0, 0, 8, (int64_t)stream, e.msg, sizeof(e.msg)),
         e, "nep_cuda_dispatch");
  nep_ok(nep_cuda_combine(nb, h.get(), recv.addr(), NEP_DTYPE_FP32, H, NEP_WIRE_FP32, 0, out.addr(),
                          NEP_DTYPE_FP32, 0, 8, (int64_t)stream, e.msg, sizeof(e.msg)),
         e, "nep_cuda_combine");
  nep_ok(nep_cuda_sync(nb, (int64_t)stream, e.msg, sizeof(e.msg)), e, "nep_cuda_sync");
  std::vector<float> got(size_t(T * H));
  out.download(got.data(), got.size() * 4);
  int bad = 0;
  for (int64_t t = 0; t < T; ++t) {
    unsigned mask = 0;
    for (int k = 0; k < K; ++k)
      if (in.idx[me][t * K + k] >= 0)
        mask |= 1u << (in.idx[me][t * K + k] / (in.experts / in.world));
    const float n = float(__builtin_popcount(mask));
    for (int64_t hh = 0; hh < H; ++hh) bad += got[t * H + hh] != in.x[me][t * H + hh] * n;
  }
  check(bad == 0, me,
        "normal mode between LL send and receive: " + std::to_string(bad) +
            " values differ from x * ranks");
}

int rank_main(Exchange& ex, bool quick, const std::string& only, int64_t timeout_ms) {
  const int me = ex.rank(), W = ex.world();
  const int dev = device_of_rank(me);
  cuda_ok(cudaSetDevice(dev), "cudaSetDevice");
  CudaStream stream;
  auto want = [&](const char* n) { return only.empty() || only == n; };

  LlConfig cfg;
  cfg.max_tokens = 64;
  cfg.hidden = 1024;
  cfg.experts = 16 * W;  // El = 16
  cfg.max_topk = 8;
  cfg.max_wire = NEP_WIRE_FP32;
  cfg.timeout_ms = timeout_ms;
  LlBufferPtr buf = make_ll_buffer(ex, cfg);
  LlTester tt(ex, buf.get(), stream.get());
  if (me == 0)
    std::printf(
        "[rank 0] ll_test: world %d on %d device(s), Tm=%lld H=%lld E=%d, LL buffer %.1f MB per "
        "rank\n",
        W,
        [] {
      int n = 0;
      cudaGetDeviceCount(&n);
      return n;
    }(), (long long)cfg.max_tokens, (long long)cfg.hidden, cfg.experts,
        nep_cuda_ll_buffer_bytes(buf.get()) / 1e6);

  // The harness's host copies and poisons are complete before a kernel on this (non-blocking)
  // stream reads them. They once ran on the legacy stream without waiting (cudaMemset returns
  // before it runs, a pageable cudaMemcpy before its last DMA), so a kernel launched next read
  // half-poisoned memory: the combine's inputs came back NaN, more often on H100 than on H200.
  if (want("harness-ordering")) {
    const int before = g_fail;
    const size_t n = size_t(512) << 20;
    DevMem big(n), bad(8);
    std::vector<uint8_t> host(n / 2, 0x5A);
    for (int round = 0; round < 3; ++round) {
      unsigned long long nbad[2] = {0, 0};
      big.poison(0x00);
      big.poison(0xFF);  // a 512 MiB memset; the check below starts at once on the other stream
      bad.poison(0x00);
      count_bytes_not<<<264, 512, 0, stream.get()>>>(static_cast<const uint8_t*>(big.get()), n,
                                                     0xFF,
                                                     static_cast<unsigned long long*>(bad.get()));
      cuda_ok(cudaGetLastError(), "count_bytes_not launch");
      cuda_ok(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
      bad.download(&nbad[0], 8);
      big.upload(host.data(), host.size());  // 256 MiB from pageable memory
      bad.poison(0x00);
      count_bytes_not<<<264, 512, 0, stream.get()>>>(static_cast<const uint8_t*>(big.get()),
                                                     host.size(), 0x5A,
                                                     static_cast<unsigned long long*>(bad.get()));
      cuda_ok(cudaGetLastError(), "count_bytes_not launch");
      cuda_ok(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
      bad.download(&nbad[1], 8);
      check(nbad[0] == 0, me,
            "harness-ordering: a kernel right after poison() saw " + std::to_string(nbad[0]) +
                " unpoisoned bytes");
      check(nbad[1] == 0, me,
            "harness-ordering: a kernel right after upload() saw " + std::to_string(nbad[1]) +
                " bytes not yet copied");
    }
    report(me, "harness-ordering", before);
  }

  const int64_t Tm = cfg.max_tokens;
  auto uneven = [Tm](int r) { return std::max<int64_t>(1, Tm - 13 * r % Tm); };
  std::vector<Case> cases;
  {
    Case c;
    c.name = "bf16";
    c.tokens = uneven;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "fp8-bf16";
    c.seed = 2;
    c.tokens = [Tm](int) { return Tm; };
    c.dwire = [](int) { return NEP_WIRE_FP8; };
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "fp8-round-scale";
    c.seed = 3;
    c.tokens = uneven;
    c.dwire = [](int) { return NEP_WIRE_FP8; };
    c.dflags = [](int) { return NEP_CUDA_LL_ROUND_SCALE; };
    c.mask = 0.2;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "mxfp8-fp32-x-fp32";
    c.seed = 4;
    c.tokens = uneven;
    c.x_dtype = NEP_DTYPE_FP32;
    c.recv_dtype = NEP_DTYPE_FP32;
    c.y_dtype = NEP_DTYPE_FP32;
    c.dwire = [](int) { return NEP_WIRE_MXFP8; };
    c.cwire = [](int) { return NEP_WIRE_FP32; };
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "mixed-wires-masked";
    c.seed = 5;
    c.tokens = uneven;
    c.mask = 0.3;
    c.dwire = [](int r) {
      return std::vector<int>{NEP_WIRE_FP8, NEP_WIRE_BF16, NEP_WIRE_MXFP8, NEP_WIRE_FP32}[r % 4];
    };
    c.cwire = [](int r) { return r % 2 == 0 ? NEP_WIRE_BF16 : NEP_WIRE_FP32; };
    c.out_dtype = NEP_DTYPE_BF16;
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "hot-expert-empty-rank";
    c.seed = 6;
    c.tokens = [Tm, W](int r) { return r == W - 1 && W > 1 ? int64_t(0) : Tm; };
    c.hot = true;
    c.topk = 6;
    c.dwire = [](int) { return NEP_WIRE_FP8; };
    cases.push_back(c);
  }
  {
    Case c;
    c.name = "topk1-all-masked-rank0";
    c.seed = 7;
    c.topk = 1;
    c.tokens = [](int r) { return int64_t(5 + r); };
    c.mask = 1.0;  // every slot -1: nothing is sent
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    if (!want(c.name.c_str())) continue;
    const int before = g_fail;
    try {
      tt.step(c, c.name);
    } catch (const std::exception& e) {
      check(false, me, c.name + ": " + e.what());
    }
    report(me, c.name.c_str(), before);
  }

  // Reuse: steps in a row, with other routing each time (stale rows would show).
  if (want("reuse")) {
    const int before = g_fail;
    for (int i = 0; i < (quick ? 3 : 6); ++i) {
      Case c = cases[i % 2];
      c.seed = 100 + i;
      c.mask = 0.25 * (i % 3);
      c.tokens = [Tm, i](int r) { return std::max<int64_t>(1, (Tm * (i + 1) + 7 * r) % (Tm + 1)); };
      tt.step(c, "reuse-" + std::to_string(i));
    }
    report(me, "reuse", before);
  }

  // Refusals found on the host: nothing sent, the buffer stays usable.
  if (want("refusals")) {
    const int before = g_fail;
    Case c = cases[0];
    c.tokens = [Tm](int) { return Tm; };
    const Inputs in = make_inputs(c, W, cfg.hidden, cfg.experts);
    RankData d = tt.upload(c, in);
    Err e;
    nep_cuda_ll_op* op = nullptr;
    int rc = nep_cuda_ll_dispatch_send(buf.get(), d.x.addr(), c.x_dtype, Tm + 1, cfg.hidden,
                                       d.idx.addr(), c.topk, NEP_WIRE_BF16, 0,
                                       (int64_t)stream.get(), &op, e.msg, sizeof(e.msg));
    check(rc == NEP_ERR_CAPACITY && op == nullptr &&
              std::strstr(e.msg, "max_tokens_per_rank=64") != nullptr,
          me, std::string("T > max_tokens_per_rank: rc=") + std::to_string(rc) + " msg=" + e.msg);
    rc = nep_cuda_ll_dispatch_send(buf.get(), d.x.addr(), c.x_dtype, 4, cfg.hidden, d.idx.addr(),
                                   c.topk, NEP_WIRE_BF16, 2, (int64_t)stream.get(), &op, e.msg,
                                   sizeof(e.msg));
    check(rc == NEP_ERR_INVALID_ARGUMENT && std::strstr(e.msg, "flags=2") != nullptr, me,
          std::string("bad flags: ") + e.msg);
    rc = nep_cuda_ll_dispatch_send(buf.get(), d.x.addr(), c.x_dtype, 4, cfg.hidden, d.idx.addr(), 9,
                                   NEP_WIRE_BF16, 0, (int64_t)stream.get(), &op, e.msg,
                                   sizeof(e.msg));
    check(rc == NEP_ERR_INVALID_ARGUMENT && std::strstr(e.msg, "num_topk=9") != nullptr, me,
          std::string("num_topk > max_topk: ") + e.msg);
    // Arrays smaller than their shapes, or in host memory: refused before any launch (each would
    // have made a kernel read or write outside its allocation).
    rc = nep_cuda_ll_dispatch_send(buf.get(), d.idx.addr(), NEP_DTYPE_FP32, Tm, cfg.hidden,
                                   d.idx.addr(), c.topk, NEP_WIRE_BF16, 0, (int64_t)stream.get(),
                                   &op, e.msg, sizeof(e.msg));
    check(rc == NEP_ERR_INVALID_ARGUMENT && op == nullptr &&
              std::strstr(e.msg, "x=0x") != nullptr && std::strstr(e.msg, "needs") != nullptr,
          me, std::string("x smaller than [T, H]: rc=") + std::to_string(rc) + " msg=" + e.msg);
    {
      std::vector<int64_t> host_idx(size_t(Tm * c.topk) + 2, 0);
      const int64_t host_addr = (reinterpret_cast<int64_t>(host_idx.data()) + 15) / 16 * 16;
      rc = nep_cuda_ll_dispatch_send(buf.get(), d.x.addr(), c.x_dtype, Tm, cfg.hidden, host_addr,
                                     c.topk, NEP_WIRE_BF16, 0, (int64_t)stream.get(), &op, e.msg,
                                     sizeof(e.msg));
      check(rc == NEP_ERR_INVALID_ARGUMENT && op == nullptr &&
                std::strstr(e.msg, "topk_idx=0x") != nullptr &&
                std::strstr(e.msg, "host memory") != nullptr,
            me, std::string("topk_idx in host memory: rc=") + std::to_string(rc) + " msg=" + e.msg);
    }
    // A stale handle: two dispatches later its routing slot has been reused.
    {
      LlOpPtr o1 = tt.dispatch_send(c, in, d);
      LlHandlePtr h1 = tt.dispatch_recv(c, o1.get(), d);
      LlOpPtr o2 = tt.dispatch_send(c, in, d);
      LlHandlePtr h2 = tt.dispatch_recv(c, o2.get(), d);
      LlOpPtr o3 = tt.dispatch_send(c, in, d);
      LlHandlePtr h3 = tt.dispatch_recv(c, o3.get(), d);
      tt.sync();
      nep_cuda_ll_op* cop = nullptr;
      rc = nep_cuda_ll_combine_send(buf.get(), h1.get(), d.y.addr(), c.y_dtype, d.idx.addr(),
                                    d.w.addr(), NEP_WIRE_BF16, (int64_t)stream.get(), &cop, e.msg,
                                    sizeof(e.msg));
      check(rc == NEP_ERR_INVALID_ARGUMENT && cop == nullptr &&
                std::strstr(e.msg, "is stale") != nullptr,
            me, std::string("stale handle: rc=") + std::to_string(rc) + " msg=" + e.msg);
      // y [El, W*Tm, H] in an allocation of [T, H]: refused, and the handle stays usable.
      rc = nep_cuda_ll_combine_send(buf.get(), h3.get(), d.x.addr(), c.y_dtype, d.idx.addr(),
                                    d.w.addr(), NEP_WIRE_BF16, (int64_t)stream.get(), &cop, e.msg,
                                    sizeof(e.msg));
      check(
          rc == NEP_ERR_INVALID_ARGUMENT && cop == nullptr && std::strstr(e.msg, "y=0x") != nullptr,
          me, std::string("y smaller than [El, N, H]: rc=") + std::to_string(rc) + " msg=" + e.msg);
      LlOpPtr c3 = tt.combine_send(c, h3.get(), d, d.y.addr(), c.y_dtype);
      DevMem small_out(16);
      rc = nep_cuda_ll_combine_recv(c3.get(), small_out.addr(), NEP_DTYPE_FP32,
                                    (int64_t)stream.get(), e.msg, sizeof(e.msg));
      check(rc == NEP_ERR_INVALID_ARGUMENT && std::strstr(e.msg, "out=0x") != nullptr, me,
            std::string("out smaller than [T, H]: rc=") + std::to_string(rc) + " msg=" + e.msg);
      tt.combine_recv(c, c3.get(), d);
      tt.sync();
    }
    tt.step(c, "after-refusals");
    report(me, "refusals", before);
  }

  // Two results alive at once; a third send refused; receives in reverse order.
  if (want("double-buffer")) {
    const int before = g_fail;
    Case a = cases[1], b = cases[0];
    a.seed = 200;
    b.seed = 201;
    b.mask = 0.2;
    b.tokens = uneven;
    const Inputs ia = make_inputs(a, W, cfg.hidden, cfg.experts),
                 ib = make_inputs(b, W, cfg.hidden, cfg.experts);
    RankData da = tt.upload(a, ia), db = tt.upload(b, ib);
    tt.poison_shared();
    LlOpPtr oa = tt.dispatch_send(a, ia, da);
    LlOpPtr ob = tt.dispatch_send(b, ib, db);
    Err e;
    nep_cuda_ll_op* third = nullptr;
    const int rc = nep_cuda_ll_dispatch_send(buf.get(), da.x.addr(), a.x_dtype, ia.T[me],
                                             cfg.hidden, da.idx.addr(), a.topk, NEP_WIRE_BF16, 0,
                                             (int64_t)stream.get(), &third, e.msg, sizeof(e.msg));
    const std::string want_msg = "low-latency call " +
                                 std::to_string(nep_cuda_ll_op_call_index(oa.get())) +
                                 " (a dispatch) still awaits";
    check(rc == NEP_ERR_INVALID_ARGUMENT && third == nullptr &&
              std::string(e.msg).find(want_msg) != std::string::npos,
          me, std::string("third pending send: rc=") + std::to_string(rc) + " msg=" + e.msg);
    LlHandlePtr hb = tt.dispatch_recv(b, ob.get(), db);
    LlHandlePtr ha = tt.dispatch_recv(a, oa.get(), da);
    tt.sync();
    const auto ra = tt.check_dispatch(a, ia, da, "double-buffer A");
    const auto rb = tt.check_dispatch(b, ib, db, "double-buffer B");
    std::vector<int32_t> ca(cfg.experts / W), cb(cfg.experts / W);
    da.recv_count.download(ca.data(), ca.size() * 4);
    db.recv_count.download(cb.data(), cb.size() * 4);
    tt.upload_y(a, ra, da, ca);
    tt.upload_y(b, rb, db, cb);
    LlOpPtr ca_op = tt.combine_send(a, ha.get(), da, da.y.addr(), a.y_dtype);
    LlOpPtr cb_op = tt.combine_send(b, hb.get(), db, db.y.addr(), b.y_dtype);
    tt.combine_recv(b, cb_op.get(), db);
    tt.combine_recv(a, ca_op.get(), da);
    tt.sync();
    tt.check_combine(a, ia, da, "double-buffer A");
    tt.check_combine(b, ib, db, "double-buffer B");
    // The handle of A is now stale after a later dispatch reused its slot? (A used slot 1, B slot
    // 0.)
    report(me, "double-buffer", before);
  }

  // The hook: a normal-mode dispatch + combine between an LL send and its receive.
  if (want("hook-normal-mode") && W <= 8) {
    const int before = g_fail;
    try {
      BufferPtr nb = make_buffer(ex, int64_t(256) << 20, timeout_ms);
      Case c = cases[1];
      c.seed = 300;
      c.tokens = uneven;
      const Inputs in = make_inputs(c, W, cfg.hidden, cfg.experts);
      RankData d = tt.upload(c, in);
      tt.poison_shared();
      LlOpPtr op = tt.dispatch_send(c, in, d);
      normal_round(ex, nb.get(), in, c.x_dtype, stream.get());
      LlHandlePtr h = tt.dispatch_recv(c, op.get(), d);
      tt.sync();
      const auto recv = tt.check_dispatch(c, in, d, "hook LL dispatch");
      std::vector<int32_t> count(cfg.experts / W);
      d.recv_count.download(count.data(), count.size() * 4);
      tt.upload_y(c, recv, d, count);
      LlOpPtr cop = tt.combine_send(c, h.get(), d, d.y.addr(), c.y_dtype);
      normal_round(ex, nb.get(), in, c.x_dtype, stream.get());
      tt.combine_recv(c, cop.get(), d);
      tt.sync();
      tt.check_combine(c, in, d, "hook LL combine");
      ex.barrier();
    } catch (const std::exception& e) {
      check(false, me, std::string("hook-normal-mode: ") + e.what());
    }
    report(me, "hook-normal-mode", before);
  }

  // CUDA graph: the whole step captured once, replayed; each replay equals the eager result.
  if (want("graph")) {
    const int before = g_fail;
    try {
      Case c = cases[1];  // fp8 dispatch, bf16 combine
      c.factor = false;   // y = recv_x: the expert is the identity inside the graph
      c.y_dtype = c.recv_dtype;
      c.mask = 0.1;
      c.tokens = uneven;
      Inputs in = make_inputs(c, W, cfg.hidden, cfg.experts);
      RankData d = tt.upload(c, in);
      // Eager reference.
      tt.poison_shared();
      {
        LlOpPtr op = tt.dispatch_send(c, in, d);
        LlHandlePtr h = tt.dispatch_recv(c, op.get(), d);
        LlOpPtr cop = tt.combine_send(c, h.get(), d, d.recv_x.addr(), c.recv_dtype);
        tt.combine_recv(c, cop.get(), d);
        tt.sync();
      }
      const int ob = dsize(c.out_dtype);
      std::vector<uint8_t> eager(std::max<size_t>(size_t(in.T[me] * cfg.hidden) * ob, 1));
      d.out.download(eager.data(), size_t(in.T[me] * cfg.hidden) * ob);
      tt.check_combine(c, in, d, "graph: eager");
      // Capture.
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      cuda_ok(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture");
      LlOpPtr op = tt.dispatch_send(c, in, d);
      LlHandlePtr h = tt.dispatch_recv(c, op.get(), d);
      LlOpPtr cop = tt.combine_send(c, h.get(), d, d.recv_x.addr(), c.recv_dtype);
      tt.combine_recv(c, cop.get(), d);
      cuda_ok(cudaStreamEndCapture(stream.get(), &graph), "cudaStreamEndCapture");
      cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
      for (int rep = 0; rep < 3; ++rep) {
        if (rep == 2) {  // new data in the same tensors: the graph reads them at replay
          c.seed = 301;
          in = make_inputs(c, W, cfg.hidden, cfg.experts);
          // Same T as captured (T is part of the graph).
          const auto xb = to_bytes(c.x_dtype, in.x[me]);
          d.x.upload(xb.data(), xb.size());
          d.idx.upload(in.idx[me].data(), in.idx[me].size() * 8);
          d.w.upload(in.w[me].data(), in.w[me].size() * 4);
        }
        d.out.poison(0xFF);
        d.recv_x.poison(0xFF);
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        tt.poison_shared();
        cuda_ok(cudaGraphLaunch(exec, stream.get()), "cudaGraphLaunch");
        tt.sync();
        std::vector<uint8_t> got(eager.size());
        d.out.download(got.data(), size_t(in.T[me] * cfg.hidden) * ob);
        if (rep < 2)
          check(got == eager, me,
                "graph replay " + std::to_string(rep) + " differs from the eager run");
        tt.check_dispatch(c, in, d, "graph replay " + std::to_string(rep));
        tt.check_combine(c, in, d, "graph replay " + std::to_string(rep));
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      // Eager calls continue after the replays.
      Case after = cases[0];
      after.seed = 302;
      tt.step(after, "eager after graph");
    } catch (const std::exception& e) {
      check(false, me, std::string("graph: ") + e.what());
    }
    report(me, "graph", before);
  }

  ex.barrier();
  buf.reset();
  ex.barrier();

  // Hidden sizes whose last FP8 (1x128) or MXFP8 (1x32) scale group is partial, as the CPU engine
  // takes them: 200 = 128 + 72 (a row's last lane in the 16-channel receive chunks holds 8
  // channels) and 64 (the tiny preset's hidden size).
  for (const int64_t hidden : {int64_t(200), int64_t(64)}) {
    const std::string name = "partial-groups-h" + std::to_string(hidden);
    if (!want(name.c_str())) continue;
    const int before = g_fail;
    LlConfig narrow = cfg;
    narrow.hidden = hidden;
    LlBufferPtr bn = make_ll_buffer(ex, narrow);
    LlTester tn(ex, bn.get(), stream.get());
    try {
      for (int i = 0; i < 4; ++i) {
        Case c;
        c.seed = 40 + i + int(hidden);
        c.tokens = uneven;
        c.mask = 0.15 * i;
        c.dwire = [i](int r) {
          return std::vector<int>{NEP_WIRE_FP8, NEP_WIRE_MXFP8, NEP_WIRE_FP8,
                                  NEP_WIRE_BF16}[(i + r) % 4];
        };
        // Power-of-two scales where this rank's wire is FP8 (list entries 0 and 2).
        if (i == 2)
          c.dflags = [i](int r) { return (i + r) % 2 == 0 ? NEP_CUDA_LL_ROUND_SCALE : 0; };
        if (i == 1) {
          c.x_dtype = NEP_DTYPE_FP32;
          c.recv_dtype = NEP_DTYPE_FP32;
        }
        c.cwire = [i](int r) { return (i + r) % 2 == 0 ? NEP_WIRE_BF16 : NEP_WIRE_FP32; };
        tn.step(c, name + "-" + std::to_string(i));
      }
    } catch (const std::exception& e) {
      check(false, me, name + ": " + e.what());
    }
    ex.barrier();
    report(me, name.c_str(), before);
  }

  // A bad expert index on rank 0: every rank fails, naming it; nothing hangs.
  if (want("bad-input")) {
    const int before = g_fail;
    LlConfig small = cfg;
    small.timeout_ms = timeout_ms;
    LlBufferPtr b2 = make_ll_buffer(ex, small);
    LlTester t2(ex, b2.get(), stream.get());
    Case c = cases[0];
    c.tokens = [](int) { return int64_t(8); };
    Inputs in = make_inputs(c, W, small.hidden, small.experts);
    if (me == 0) in.idx[0][5 * c.topk + 2] = small.experts;  // out of range
    RankData d = t2.upload(c, in);
    Err e;
    LlOpPtr op = t2.dispatch_send(c, in, d);
    LlHandlePtr h = t2.dispatch_recv(c, op.get(), d);
    const int rc = nep_cuda_ll_sync(b2.get(), (int64_t)stream.get(), e.msg, sizeof(e.msg));
    if (me == 0)
      check(rc == NEP_ERR_INVALID_ARGUMENT && std::strstr(e.msg, "topk_idx[5][2]=") != nullptr, me,
            std::string("bad input on this rank: rc=") + std::to_string(rc) + " msg=" + e.msg);
    else
      check(rc == NEP_ERR_PEER && std::strstr(e.msg, "rank 0's topk_idx was invalid") != nullptr,
            me, std::string("bad input on rank 0: rc=") + std::to_string(rc) + " msg=" + e.msg);
    nep_cuda_ll_op* again = nullptr;
    const int rc2 = nep_cuda_ll_dispatch_send(b2.get(), d.x.addr(), c.x_dtype, 8, small.hidden,
                                              d.idx.addr(), c.topk, NEP_WIRE_BF16, 0,
                                              (int64_t)stream.get(), &again, e.msg, sizeof(e.msg));
    check(rc2 != NEP_OK && again == nullptr, me, "a failed buffer must refuse later calls");
    cuda_ok(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
    ex.barrier();
    report(me, "bad-input", before);
  }

  // Timeout: the last rank skips a dispatch; the others report it within the timeout.
  if (want("timeout") && W > 1) {
    const int before = g_fail;
    LlConfig small = cfg;
    small.timeout_ms = 3000;
    LlBufferPtr b3 = make_ll_buffer(ex, small);
    LlTester t3(ex, b3.get(), stream.get());
    Case c = cases[0];
    c.tokens = [](int) { return int64_t(8); };
    const Inputs in = make_inputs(c, W, small.hidden, small.experts);
    RankData d = t3.upload(c, in);
    if (me != W - 1) {
      LlOpPtr op = t3.dispatch_send(c, in, d);
      LlHandlePtr h = t3.dispatch_recv(c, op.get(), d);
      Err e;
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = nep_cuda_ll_sync(b3.get(), (int64_t)stream.get(), e.msg, sizeof(e.msg));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string peer = "waiting for rank " + std::to_string(W - 1);
      check(rc == NEP_ERR_TIMEOUT && std::strstr(e.msg, peer.c_str()) != nullptr &&
                std::strstr(e.msg, "flag[") != nullptr,
            me, std::string("timeout: rc=") + std::to_string(rc) + " msg=" + e.msg);
      if (me == 0) std::printf("[rank 0] timeout after %.1f s: %s\n", s, e.msg);
      cuda_ok(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
    }
    ex.barrier();
    report(me, "timeout", before);
  }
  std::printf("[rank %d] ll_test: %d cases passed, %d failures\n", me, g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int world = std::atoi(opt(argc, argv, "--world", "2"));
  const bool quick = flag(argc, argv, "--quick");
  const std::string only = opt(argc, argv, "--only", "");
  const int64_t timeout_ms = std::atoll(opt(argc, argv, "--timeout-ms", "60000"));
  if (world < 1 || world > NEP_CUDA_MAX_RANKS) {
    std::fprintf(stderr, "--world %d is outside [1, %d]\n", world, NEP_CUDA_MAX_RANKS);
    return 2;
  }
  if (!gpu_present("ll_test")) return kSkipNoGpu;
  if (flag(argc, argv, "--probe-gpu")) return 0;
  const int failed = run_ranks(
      world, 600, 30, [&](Exchange& ex) { return rank_main(ex, quick, only, timeout_ms); });
  std::printf("ll_test: %d of %d ranks failed\n", failed, world);
  return failed == 0 ? 0 : 1;
}
