// Benchmark of normal-mode dispatch and combine on CPU ranks of one host (cpu-shm), through the
// public C ABI only: the native twin of `djl-moe bench ep` (same shape, same copy bound), for
// hosts without Java and for measuring with one core per rank. Forks W processes per world size;
// rank 0 serves the rendezvous store.
//
// Per world size and wire format, after one warm-up iteration, per iteration: a barrier, a
// 256 MiB memcpy on every rank (sets the bound, and evicts what the last call left in cache); a
// barrier, a cached dispatch (data only, handle from one notify) into a reused recv_x [R, H]; a
// barrier, a combine of those rows (identity experts) into a reused out [T, H]. Each is timed
// per rank and the slowest rank taken (a collective ends with its slowest rank); the table shows
// medians over the iterations.
//
// Copy bound, as EpBench computes it: the sender encodes each row from fp32 into the shared ring
// (reads 4H, writes b wire bytes), the receiver decodes it (reads b, writes 4H); counting a
// memcpy of n bytes as n, a rank sending S rows and receiving R must copy (S + R)(4H + b) / 2
// bytes in dispatch, plus (S - reached) * 4H / 2 in combine (the additions read the accumulator;
// `reached` = tokens sent to at least one rank). An iteration's bound is the largest rank's bytes
// at that iteration's memcpy bandwidth (so drifting memory bandwidth on a shared host moves the
// bound with the operations); ratio = the median over iterations of bound time / measured time.
// Payload GB/s: wire bytes received per rank over the time.
//
// Sanity (printed): combine(dispatch(x)) with identity experts is x times the number of ranks
// the token visited; calc_diff against that, in float64, over all ranks (0 = exact).
//
// Usage: bench_ep [--worlds 2,4] [--tokens 4096] [--hidden 7168] [--experts 256] [--topk 8]
//                 [--iters 5] [--wires fp32,bf16,fp8,mxfp8]
#include <unistd.h>

#include <algorithm>
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

using nep_bench::median;
using nep_bench::now_us;
using nep_bench::ok;

struct Options : nep_bench::Shape {
  std::vector<int32_t> wires = {NEP_WIRE_FP32, NEP_WIRE_BF16, NEP_WIRE_FP8, NEP_WIRE_MXFP8};
};

constexpr size_t kMemcpyBytes = size_t{256} << 20;

// n floats, 64-byte aligned (as framework tensors are: a row then starts on a cache line when
// 4H is a multiple of 64), filled with v.
struct AlignedFloats {
  explicit AlignedFloats(size_t n, float v = 0.0f)
      : size(n),
        data(static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64))) {
    if (data == nullptr) {
      std::fprintf(stderr, "cannot allocate %zu floats\n", n);
      std::exit(2);
    }
    std::fill(data, data + n, v);
  }
  ~AlignedFloats() { std::free(data); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float& operator[](size_t i) { return data[i]; }
  size_t size;
  float* data;
};

// What each rank reports per wire, gathered to rank 0.
struct WireFigures {
  double dispatch_copy, combine_copy, payload, diff_num, diff_den;
};

int run_rank(const Options& o, int world, int rank, int port) {
  char err[2048];
  nep_comm* comm = nep_bench::create_comm(world, rank, port, "bench-ep");
  if (comm == nullptr) return 2;
  bool good = true;
  auto barrier = [&] {
    good = good && ok(nep_barrier(comm, err, sizeof err), "nep_barrier", err, rank);
  };
  auto gather = [&](const void* mine, size_t bytes, void* all) {
    good = good &&
           ok(nep_all_gather(comm, reinterpret_cast<int64_t>(mine), static_cast<int64_t>(bytes),
                             reinterpret_cast<int64_t>(all), err, sizeof err),
              "nep_all_gather", err, rank);
  };

  // The memcpy that sets the bound, run on every rank at the start of each iteration.
  AlignedFloats copy_src(kMemcpyBytes / sizeof(float), 1.0f),
      copy_dst(kMemcpyBytes / sizeof(float), 2.0f);
  std::memcpy(copy_dst.data, copy_src.data, kMemcpyBytes);  // warms page tables

  const int64_t t = o.tokens, h = o.hidden, k = o.topk;
  std::mt19937_64 rng(1234 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  AlignedFloats x(static_cast<size_t>(t * h));
  for (size_t i = 0; i < x.size; ++i) x[i] = normal(rng);
  std::vector<int64_t> idx(static_cast<size_t>(t * k));
  nep_bench::distinct_experts(rng, t, k, o.experts,
                              [&](int64_t i, int64_t j, int64_t e) { idx[i * k + j] = e; });
  nep_handle* hd = nullptr;
  if (!good || !ok(nep_dispatch_notify(comm, reinterpret_cast<int64_t>(idx.data()), t,
                                       static_cast<int32_t>(k), o.experts, 1, &hd, err, sizeof err),
                   "nep_dispatch_notify", err, rank)) {
    return 1;
  }
  const int64_t recv = nep_handle_num_recv(hd);
  std::vector<uint8_t> in_rank(static_cast<size_t>(t * world));
  nep_handle_is_token_in_rank(hd, in_rank.data());
  int64_t sent = 0, reached = 0;
  std::vector<int32_t> visits(static_cast<size_t>(t), 0);
  for (int64_t i = 0; i < t; ++i) {
    for (int r = 0; r < world; ++r) visits[i] += in_rank[i * world + r];
    sent += visits[i];
    reached += visits[i] > 0;
  }
  // Outputs reused from call to call, touched before timing (as memcpy's destination is).
  AlignedFloats recv_x(static_cast<size_t>(std::max<int64_t>(recv, 1) * h));
  AlignedFloats out(static_cast<size_t>(t * h));
  const int64_t xa = reinterpret_cast<int64_t>(x.data), ra = reinterpret_cast<int64_t>(recv_x.data);
  const int64_t oa = reinterpret_cast<int64_t>(out.data);

  std::vector<WireFigures> mine;
  std::vector<std::vector<double>>
      slowest_times;  // per wire: [iteration][memcpy, dispatch, combine]
  for (int32_t wire : o.wires) {
    // Per iteration: this rank's memcpy, dispatch and combine times (us).
    std::vector<double> times(static_cast<size_t>(3 * o.iters));
    for (int it = -1; it < o.iters && good; ++it) {
      barrier();
      const double c0 = now_us();
      std::memcpy(copy_dst.data, copy_src.data, kMemcpyBytes);
      const double c1 = now_us();
      barrier();
      const double t0 = now_us();
      good = good && ok(nep_dispatch(comm, hd, xa, h, wire, 0, ra, 0, 0, err, sizeof err),
                        "nep_dispatch", err, rank);
      const double t1 = now_us();
      barrier();
      const double t2 = now_us();
      good = good && ok(nep_combine(comm, hd, ra, h, wire, 0, oa, 0, err, sizeof err),
                        "nep_combine", err, rank);
      const double t3 = now_us();
      if (it >= 0) {
        times[3 * it] = c1 - c0;
        times[3 * it + 1] = t1 - t0;
        times[3 * it + 2] = t3 - t2;
      }
    }
    if (!good) break;
    // The slowest rank per iteration.
    std::vector<double> all_times(times.size() * world);
    gather(times.data(), times.size() * sizeof(double), all_times.data());
    std::vector<double> slowest(times.size(), 0.0);
    for (int r = 0; r < world; ++r) {
      for (size_t i = 0; i < times.size(); ++i)
        slowest[i] = std::max(slowest[i], all_times[r * times.size() + i]);
    }
    if (!good) break;
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t c = 0; c < h; ++c) {
        const double a = static_cast<double>(out[i * h + c]) + 1.0;
        const double b = static_cast<double>(x[i * h + c]) * visits[i] + 1.0;
        num += a * b;
        den += a * a + b * b;
      }
    }
    const double row_bytes = static_cast<double>(nep_wire_row_bytes(wire, h));
    const double fp = 4.0 * static_cast<double>(h);
    slowest_times.push_back(slowest);
    mine.push_back({(sent + recv) * (fp + row_bytes) / 2,
                    (sent + recv) * (fp + row_bytes) / 2 + (sent - reached) * fp / 2,
                    recv * row_bytes, num, den});
  }
  if (!good) return 1;
  std::vector<WireFigures> all(mine.size() * world);
  gather(mine.data(), mine.size() * sizeof(WireFigures), all.data());
  std::vector<double> counts = {static_cast<double>(sent), static_cast<double>(recv)},
                      all_counts(2 * world);
  gather(counts.data(), counts.size() * sizeof(double), all_counts.data());
  if (!good) return 1;

  if (rank == 0) {
    double mean_sent = 0.0, mean_recv = 0.0;
    for (int r = 0; r < world; ++r) {
      mean_sent += all_counts[2 * r] / world;
      mean_recv += all_counts[2 * r + 1] / world;
    }
    std::printf(
        "\nW=%d ranks, %lld tokens/rank, H=%lld, top-%d of %d experts, uniform routing; rows per "
        "rank: "
        "sent %.0f, received %.0f (mean); %d iterations after 1 warm-up\n",
        world, static_cast<long long>(t), static_cast<long long>(h), o.topk, o.experts, mean_sent,
        mean_recv, o.iters);
    std::printf("%-6s %-9s %9s %9s %8s %9s %7s %8s   %s\n", "wire", "op", "time ms", "payload",
                "GB/s", "bound ms", "ratio", "memcpy", "calc_diff");
    const size_t n = mine.size();
    for (size_t wi = 0; wi < n; ++wi) {
      double dcopy = 0, ccopy = 0, payload = 0, num = 0, den = 0;
      for (int r = 0; r < world; ++r) {
        const WireFigures& f = all[r * n + wi];
        dcopy = std::max(dcopy, f.dispatch_copy);
        ccopy = std::max(ccopy, f.combine_copy);
        payload += f.payload / world;
        num += f.diff_num;
        den += f.diff_den;
      }
      // Per iteration: bound = the largest rank's bytes at that iteration's memcpy bandwidth.
      const std::vector<double>& s = slowest_times[wi];
      std::vector<double> copy_us, d_us, c_us, d_bound, c_bound, d_ratio, c_ratio;
      for (int it = 0; it < o.iters; ++it) {
        const double bw = static_cast<double>(kMemcpyBytes) / s[3 * it];  // bytes per us
        copy_us.push_back(s[3 * it]);
        d_us.push_back(s[3 * it + 1]);
        c_us.push_back(s[3 * it + 2]);
        d_bound.push_back(dcopy / bw);
        c_bound.push_back(ccopy / bw);
        d_ratio.push_back(d_bound.back() / d_us.back());
        c_ratio.push_back(c_bound.back() / c_us.back());
      }
      const double copy_gbs = static_cast<double>(kMemcpyBytes) / median(copy_us) / 1e3;
      const double d = median(d_us), c = median(c_us);
      const char* label = nep_bench::wire_label(o.wires[wi]);
      std::printf("%-6s %-9s %9.1f %7.0fMB %8.2f %9.1f %7.2f %8.2f\n", label, "dispatch", d / 1e3,
                  payload / 1e6, payload / (d * 1e3), median(d_bound) / 1e3, median(d_ratio),
                  copy_gbs);
      std::printf("%-6s %-9s %9.1f %7.0fMB %8.2f %9.1f %7.2f %8.2f   %.3g\n", label, "combine",
                  c / 1e3, payload / 1e6, payload / (c * 1e3), median(c_bound) / 1e3,
                  median(c_ratio), copy_gbs, 1.0 - 2.0 * num / den);
    }
    std::fflush(stdout);
  }
  nep_handle_destroy(hd);
  nep_comm_destroy(comm);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const bool parsed =
      nep_bench::parse_options(argc, argv, o, "bench_ep.cpp", [&](const std::string& a, auto next) {
    if (a != "--wires") return false;
    o.wires.clear();
    for (const std::string& v : nep_bench::split_list(next())) {
      const int32_t w = nep_bench::parse_wire(v);
      if (w < 0) std::exit(2);
      o.wires.push_back(w);
    }
    return true;
  });
  if (!parsed) return 2;
  if (o.tokens < 1 || o.hidden < 1 || o.topk < 1 || o.iters < 1 || o.experts < o.topk) {
    std::fprintf(stderr, "need --tokens, --hidden, --topk, --iters >= 1 and --experts >= --topk\n");
    return 2;
  }
  std::printf("bench_ep: normal-mode dispatch/combine over cpu-shm (%ld CPUs online)\n",
              sysconf(_SC_NPROCESSORS_ONLN));
  return nep_bench::run_worlds(
      o, "bench-ep", std::chrono::minutes(20),
      [&](int world, int rank, int port) { return run_rank(o, world, rank, port); });
}
