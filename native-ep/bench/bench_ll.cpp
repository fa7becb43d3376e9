// Benchmark of the low-latency mode on CPU ranks of one host (cpu-shm), through the public C ABI
// only. Forks W processes per world size; rank 0 serves the rendezvous store. Per iteration every
// rank passes a barrier (to remove skew), then the timed call. Reports, per world size, the
// median over iterations of each rank (max and mean over ranks) for
//   LL dispatch (send + receive back to back), LL combine (send + receive),
//   the hook split: send, then a barrier standing in for overlapped work, then receive,
//   the normal-mode baseline on the same communicator (notify + dispatch, combine),
// and the logical bandwidth with DeepEP's byte counts (FP8 H + 4H/128 + 16, BF16 2H per
// selection). The experts are the identity (y = received rows), so combine must return
// x * sum_k w_k: its calc_diff is printed as a sanity check.
//
// Usage: bench_ll [--worlds 2,4] [--tokens 128] [--hidden 7168] [--experts 256] [--topk 8]
//                 [--iters 200] [--warmup 20] [--dispatch-wire fp8] [--combine-wire bf16]
//                 [--round-scale]
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_fork.h"
#include "nativeep/c_api.h"

namespace {

struct Options : nep_bench::Shape {
  Options() {
    tokens = 128;
    iters = 200;
  }
  int warmup = 20;
  int32_t dispatch_wire = NEP_WIRE_FP8;
  int32_t combine_wire = NEP_WIRE_BF16;
  int32_t flags = 0;
};

using nep_bench::median;
using nep_bench::now_us;
using nep_bench::ok;
using nep_bench::wire_label;

enum Metric {
  kDispatch,
  kCombine,
  kDispatchSend,
  kDispatchRecv,
  kCombineSend,
  kCombineRecv,
  kNormalDispatch,
  kNormalCombine,
  kMetrics
};
const char* kMetricNames[kMetrics] = {"LL dispatch (send+recv)",       "LL combine (send+recv)",
                                      "  hook: dispatch send",         "  hook: dispatch recv",
                                      "  hook: combine send",          "  hook: combine recv",
                                      "normal dispatch (notify+data)", "normal combine"};

// One rank of one world size. Returns the process exit code.
int run_rank(const Options& o, int world, int rank, int port) {
  char err[2048];
  nep_comm* comm = nep_bench::create_comm(world, rank, port, "bench-ll");
  if (comm == nullptr) return 2;
  const int32_t max_wire =
      nep_wire_row_bytes(o.dispatch_wire, o.hidden) >= nep_wire_row_bytes(o.combine_wire, o.hidden)
          ? o.dispatch_wire
          : o.combine_wire;
  nep_ll_buffer* buf = nullptr;
  if (!ok(nep_ll_buffer_create(comm, o.tokens, o.hidden, o.experts, o.topk, max_wire, 120000, &buf,
                               err, sizeof err),
          "nep_ll_buffer_create", err, rank)) {
    return 2;
  }
  const int32_t local = o.experts / world;
  const int64_t rows = static_cast<int64_t>(world) * o.tokens;
  const int64_t t = o.tokens, h = o.hidden, k = o.topk;

  // Inputs: normal x, K distinct uniform experts per token, uniform weights.
  std::mt19937_64 rng(1234 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(t * h)), w(static_cast<size_t>(t * k)),
      out(static_cast<size_t>(t * h));
  std::vector<int64_t> idx(static_cast<size_t>(t * k));
  for (float& v : x) v = normal(rng);
  nep_bench::distinct_experts(rng, t, k, o.experts, [&](int64_t i, int64_t j, int64_t e) {
    idx[i * k + j] = e;
    w[i * k + j] = uni(rng);
  });
  // recv_x [El, W*T, H] is large (E * T * H floats over all ranks) but only received rows are
  // touched: map it lazily. The identity expert combines recv_x itself (y = recv_x).
  const size_t recv_bytes = static_cast<size_t>(local) * rows * h * sizeof(float);
  void* mapped = mmap(nullptr, recv_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapped == MAP_FAILED) {
    std::fprintf(stderr, "rank %d: cannot map recv_x (%zu bytes)\n", rank, recv_bytes);
    return 2;
  }
  float* recv_x = static_cast<float*>(mapped);
  std::vector<int32_t> recv_count(static_cast<size_t>(local));
  const int64_t xa = reinterpret_cast<int64_t>(x.data()),
                ia = reinterpret_cast<int64_t>(idx.data());
  const int64_t wa = reinterpret_cast<int64_t>(w.data()),
                oa = reinterpret_cast<int64_t>(out.data());
  const int64_t ra = reinterpret_cast<int64_t>(recv_x),
                ca = reinterpret_cast<int64_t>(recv_count.data());

  std::vector<std::vector<double>> samples(kMetrics);
  int64_t dispatch_bytes = 0, combine_bytes = 0;
  bool good = true;
  auto barrier = [&] {
    good = good && ok(nep_barrier(comm, err, sizeof err), "nep_barrier", err, rank);
  };

  // One LL step; split = true inserts a barrier between each send and its receive.
  auto ll_step = [&](bool split, bool record) {
    nep_ll_op* op = nullptr;
    nep_ll_handle* hd = nullptr;
    barrier();
    double t0 = now_us();
    good = good && ok(nep_ll_dispatch_send(buf, xa, t, h, ia, static_cast<int32_t>(k),
                                           o.dispatch_wire, o.flags, &op, err, sizeof err),
                      "nep_ll_dispatch_send", err, rank);
    if (!good) return;
    double t1 = now_us();
    if (split) barrier();
    double t2 = now_us();
    good = good && ok(nep_ll_dispatch_recv(op, ra, ca, 0, 0, &hd, err, sizeof err),
                      "nep_ll_dispatch_recv", err, rank);
    double t3 = now_us();
    dispatch_bytes = nep_ll_op_bytes_sent(op);
    nep_ll_op_destroy(op);
    if (!good) return;
    if (record) {
      if (split) {
        samples[kDispatchSend].push_back(t1 - t0);
        samples[kDispatchRecv].push_back(t3 - t2);
      } else {
        samples[kDispatch].push_back(t3 - t0);
      }
    }
    barrier();
    t0 = now_us();
    good = good && ok(nep_ll_combine_send(buf, hd, ra, h, ia, wa, t, static_cast<int32_t>(k),
                                          o.combine_wire, &op, err, sizeof err),
                      "nep_ll_combine_send", err, rank);
    if (!good) return;
    t1 = now_us();
    if (split) barrier();
    t2 = now_us();
    good =
        good && ok(nep_ll_combine_recv(op, oa, err, sizeof err), "nep_ll_combine_recv", err, rank);
    t3 = now_us();
    combine_bytes = nep_ll_op_bytes_sent(op);
    nep_ll_op_destroy(op);
    nep_ll_handle_destroy(hd);
    if (record) {
      if (split) {
        samples[kCombineSend].push_back(t1 - t0);
        samples[kCombineRecv].push_back(t3 - t2);
      } else {
        samples[kCombine].push_back(t3 - t0);
      }
    }
  };

  // The normal-mode path for the same decode step (its host-side layout step included).
  std::vector<float> normal_recv;
  auto normal_step = [&](bool record) {
    nep_handle* nh = nullptr;
    barrier();
    const double t0 = now_us();
    good = good && ok(nep_dispatch_notify(comm, ia, t, static_cast<int32_t>(k), o.experts, 1, &nh,
                                          err, sizeof err),
                      "nep_dispatch_notify", err, rank);
    if (!good) return;
    const int64_t r = nep_handle_num_recv(nh);
    if (static_cast<int64_t>(normal_recv.size()) < r * h)
      normal_recv.resize(static_cast<size_t>(r * h));
    const int64_t na = reinterpret_cast<int64_t>(normal_recv.data());
    good = good && ok(nep_dispatch(comm, nh, xa, h, o.dispatch_wire, 0, na, 0, 0, err, sizeof err),
                      "nep_dispatch", err, rank);
    const double t1 = now_us();
    barrier();
    const double t2 = now_us();
    good = good && ok(nep_combine(comm, nh, na, h, o.combine_wire, 0, oa, 0, err, sizeof err),
                      "nep_combine", err, rank);
    const double t3 = now_us();
    nep_handle_destroy(nh);
    if (record) {
      samples[kNormalDispatch].push_back(t1 - t0);
      samples[kNormalCombine].push_back(t3 - t2);
    }
  };

  // Machine reference: memcpy of the float32 rows one rank receives in a dispatch (T * K rows on
  // average), the memory traffic that dominates both receives on a CPU; the ranks take turns so
  // each measures alone.
  double copy_us = 0.0;
  {
    const size_t bytes = static_cast<size_t>(t * k * h) * sizeof(float);
    std::vector<char> a(bytes, 1), b(bytes, 2);
    for (int turn = 0; turn < world; ++turn) {
      barrier();
      if (turn != rank) continue;
      std::vector<double> v;
      for (int i = 0; i < 20; ++i) {
        const double c0 = now_us();
        std::memcpy(i % 2 ? a.data() : b.data(), i % 2 ? b.data() : a.data(), bytes);
        v.push_back(now_us() - c0);
      }
      copy_us = median(v);
    }
    barrier();
  }
  for (int i = 0; i < o.warmup && good; ++i) ll_step(false, false);
  // Sanity: the identity experts' combine is x * sum_k w_k.
  double diff = 0.0;
  {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < t; ++i) {
      double ws = 0.0;
      for (int64_t j = 0; j < k; ++j) ws += w[i * k + j];
      for (int64_t c = 0; c < h; ++c) {
        const double a = out[i * h + c] + 1.0, b = x[i * h + c] * ws + 1.0;
        num += a * b;
        den += a * a + b * b;
      }
    }
    diff = 1.0 - 2.0 * num / den;
  }
  for (int i = 0; i < o.iters && good; ++i) ll_step(false, true);
  for (int i = 0; i < o.warmup && good; ++i) ll_step(true, false);
  for (int i = 0; i < o.iters && good; ++i) ll_step(true, true);
  for (int i = 0; i < o.warmup && good; ++i) normal_step(false);
  for (int i = 0; i < o.iters && good; ++i) normal_step(true);
  if (!good) return 1;

  // Gather every rank's medians, the sanity value and the bytes; rank 0 prints.
  std::vector<double> mine(kMetrics + 4);
  for (int m = 0; m < kMetrics; ++m) mine[m] = median(samples[m]);
  mine[kMetrics] = diff;
  mine[kMetrics + 1] = static_cast<double>(dispatch_bytes);
  mine[kMetrics + 2] = static_cast<double>(combine_bytes);
  mine[kMetrics + 3] = copy_us;
  std::vector<double> all(mine.size() * world);
  if (!ok(nep_all_gather(comm, reinterpret_cast<int64_t>(mine.data()),
                         static_cast<int64_t>(mine.size() * 8),
                         reinterpret_cast<int64_t>(all.data()), err, sizeof err),
          "nep_all_gather", err, rank)) {
    return 1;
  }
  if (rank == 0) {
    const size_t n = mine.size();
    double max_diff = 0.0, dbytes = 0.0, cbytes = 0.0, copy = 0.0;
    for (int r = 0; r < world; ++r) {
      copy += all[r * n + kMetrics + 3] / world;
      max_diff = std::max(max_diff, all[r * n + kMetrics]);
      dbytes += all[r * n + kMetrics + 1] / world;
      cbytes += all[r * n + kMetrics + 2] / world;
    }
    std::printf(
        "\nW=%d ranks, %lld tokens/rank, H=%lld, top-%d of %d experts, dispatch %s%s, combine %s; "
        "%d iterations after %d warm-up; LL buffer %.1f MiB/rank\n",
        world, static_cast<long long>(t), static_cast<long long>(h), o.topk, o.experts,
        wire_label(o.dispatch_wire), o.flags ? " (pow2 scales)" : "", wire_label(o.combine_wire),
        o.iters, o.warmup, static_cast<double>(nep_ll_buffer_bytes(buf)) / (1 << 20));
    std::printf("  %-32s %12s %12s   %s\n", "median over iterations (us)", "max rank", "mean rank",
                "per rank");
    for (int m = 0; m < kMetrics; ++m) {
      double mx = 0.0, mean = 0.0;
      std::string per;
      for (int r = 0; r < world; ++r) {
        const double v = all[r * n + m];
        mx = std::max(mx, v);
        mean += v / world;
        char b[32];
        std::snprintf(b, sizeof b, "%s%.0f", r ? " " : "", v);
        per += b;
      }
      std::printf("  %-32s %12.1f %12.1f   [%s]\n", kMetricNames[m], mx, mean, per.c_str());
    }
    const double d_us = [&] {
      double v = 0;
      for (int r = 0; r < world; ++r) v = std::max(v, all[r * n + kDispatch]);
      return v;
    }();
    const double c_us = [&] {
      double v = 0;
      for (int r = 0; r < world; ++r) v = std::max(v, all[r * n + kCombine]);
      return v;
    }();
    std::printf(
        "  bytes sent per rank: dispatch %.2f MB (%.2f GB/s at the max-rank median), combine %.2f "
        "MB (%.2f GB/s)\n",
        dbytes / 1e6, dbytes / d_us / 1e3, cbytes / 1e6, cbytes / c_us / 1e3);
    std::printf("  combine sanity: calc_diff(out, x * sum w) = %.3g (max over ranks)\n", max_diff);
    std::printf(
        "  machine reference: memcpy of %.1f MB (T*K float32 rows, what a rank's receive writes) "
        "takes %.0f us (one rank at a time; mean of their medians)\n",
        static_cast<double>(t * k * h * 4) / 1e6, copy);
    std::fflush(stdout);
  }
  munmap(mapped, recv_bytes);
  nep_ll_buffer_destroy(buf);
  nep_comm_destroy(comm);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const bool parsed =
      nep_bench::parse_options(argc, argv, o, "bench_ll.cpp", [&](const std::string& a, auto next) {
    if (a == "--warmup") {
      o.warmup = std::atoi(next().c_str());
    } else if (a == "--dispatch-wire") {
      o.dispatch_wire = nep_bench::parse_wire(next());
    } else if (a == "--combine-wire") {
      o.combine_wire = nep_bench::parse_wire(next());
    } else if (a == "--round-scale") {
      o.flags = NEP_LL_ROUND_SCALE;
    } else {
      return false;
    }
    return true;
  });
  if (!parsed) return 2;
  if (o.dispatch_wire < 0 || o.combine_wire < 0) return 2;
  std::printf("bench_ll: low-latency dispatch/combine over cpu-shm (%ld CPUs online)\n",
              sysconf(_SC_NPROCESSORS_ONLN));
  return nep_bench::run_worlds(
      o, "bench-ll", std::chrono::minutes(10),
      [&](int world, int rank, int port) { return run_rank(o, world, rank, port); });
}
