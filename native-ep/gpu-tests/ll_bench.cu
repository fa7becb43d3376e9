// Benchmark of the cuda-ipc low-latency mode on the decode workload (DeepEP's
// low-latency test): 128 tokens per rank, H=7168, top-8 of 256 experts, bf16 x, FP8 dispatch
// (1x128 scales), bf16 received rows, bf16 combine wire, bf16 out.
//
//   ll_bench --world W [--tokens 128] [--iters 50] [--warmup 20] [--round-scale] [--json out.json]
//            [--machine name] [--sms N]
//
// Timings (CUDA events, 256 MB L2 flush between calls outside the timed interval, median per rank,
// mean over ranks):
//   dispatch, combine, step  send + receive back to back (a step: dispatch, identity experts,
//                            combine), ranks kept in step by the protocol itself;
//   graph step               the step captured in a CUDA graph and replayed;
//   *_send, *_recv           the hook's halves measured apart: host barrier, a 200 us spin kernel
//                            (the call is queued before its start event runs), send timed alone;
//                            stream synchronised, host barrier (every rank's data has arrived),
//                            receive timed alone.
// W ranks run on GPU rank % device_count: on one GPU, ranks time-slice and W > 1 figures are not
// NVLink figures (they are reported with "devices": 1).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "ll_harness.h"
#include "oracle.h"

using namespace nepgpu;

namespace {

struct Opts {
  int world = 2;
  int64_t tokens = 128, hidden = 7168;
  int topk = 8, experts = 256;
  int warmup = 20, iters = 50;
  int sms = 0;
  bool round_scale = false;
  std::string json, machine = "unknown";
};

// Keeps the GPU busy for `ns` so that the host has queued the timed call before its start event
// runs (otherwise the host's launch latency would be timed as idle GPU time).
__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
  double dispatch, combine, step, graph_step, dispatch_send, dispatch_recv, combine_send,
      combine_recv, calc_diff;
  long long recv_rows;
};

int rank_main(Exchange& ex, const Opts& o, std::vector<Result>* all_out) {
  const int me = ex.rank(), W = ex.world();
  const int dev = device_of_rank(me);
  cuda_ok(cudaSetDevice(dev), "cudaSetDevice");
  int ndev = 0;
  cuda_ok(cudaGetDeviceCount(&ndev), "cudaGetDeviceCount");
  CudaStream stream;
  const cudaStream_t s = stream.get();
  const int64_t T = o.tokens, H = o.hidden;
  const int K = o.topk, E = o.experts, El = E / W;
  const int64_t N = int64_t(W) * T;

  LlConfig cfg;
  cfg.max_tokens = T;
  cfg.hidden = H;
  cfg.experts = E;
  cfg.max_topk = K;
  cfg.max_wire = NEP_WIRE_FP8;
  cfg.timeout_ms = 120000;
  LlBufferPtr buf = make_ll_buffer(ex, cfg);
  Err e;
  if (o.sms > 0)
    nep_ok(nep_cuda_ll_buffer_set_num_sms(buf.get(), o.sms, e.msg, sizeof(e.msg)), e,
           "nep_cuda_ll_buffer_set_num_sms");

  // Inputs: bf16 x, K distinct experts per token, weights in [0.05, 1.05).
  std::vector<float> x(size_t(T * H));
  std::vector<int64_t> idx(size_t(T * K));
  std::vector<float> w(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    Rng rng(42, 1 + me, 1 + t, 5);
    for (int64_t h = 0; h < H; ++h) x[t * H + h] = round_bf16(float(rng.normal()));
    int n = 0;
    while (n < K) {
      const int64_t ev = int64_t(rng.next() % uint64_t(E));
      bool dup = false;
      for (int j = 0; j < n; ++j) dup |= idx[t * K + j] == ev;
      if (!dup) idx[t * K + n++] = ev;
    }
    for (int k = 0; k < K; ++k) w[t * K + k] = float(0.05 + rng.uniform());
  }
  std::vector<uint8_t> xb(x.size() * 2);
  store_dtype(NEP_DTYPE_BF16, x.data(), int64_t(x.size()), xb.data());
  DevMem dx(xb.size()), didx(idx.size() * 8), dw(w.size() * 4), recv(size_t(El * N * H) * 2),
      count(size_t(El) * 4), out(size_t(T * H) * 2), flush(size_t(256) << 20);
  dx.upload(xb.data(), xb.size());
  didx.upload(idx.data(), idx.size() * 8);
  dw.upload(w.data(), w.size() * 4);
  const int flags = o.round_scale ? NEP_CUDA_LL_ROUND_SCALE : 0;

  nep_cuda_ll_op* dop = nullptr;
  nep_cuda_ll_op* cop = nullptr;
  nep_cuda_ll_handle* handle = nullptr;
  auto dsend = [&] {
    nep_ok(nep_cuda_ll_dispatch_send(buf.get(), dx.addr(), NEP_DTYPE_BF16, T, H, didx.addr(), K,
                                     NEP_WIRE_FP8, flags, (int64_t)s, &dop, e.msg, sizeof(e.msg)),
           e, "nep_cuda_ll_dispatch_send");
  };
  auto drecv = [&] {
    if (handle != nullptr) nep_cuda_ll_handle_destroy(handle);
    handle = nullptr;
    nep_ok(nep_cuda_ll_dispatch_recv(dop, recv.addr(), NEP_DTYPE_BF16, count.addr(), 0, 0,
                                     (int64_t)s, &handle, e.msg, sizeof(e.msg)),
           e, "nep_cuda_ll_dispatch_recv");
    nep_cuda_ll_op_destroy(dop);
    dop = nullptr;
  };
  auto csend = [&] {
    nep_ok(
        nep_cuda_ll_combine_send(buf.get(), handle, recv.addr(), NEP_DTYPE_BF16, didx.addr(),
                                 dw.addr(), NEP_WIRE_BF16, (int64_t)s, &cop, e.msg, sizeof(e.msg)),
        e, "nep_cuda_ll_combine_send");
  };
  auto crecv = [&] {
    nep_ok(
        nep_cuda_ll_combine_recv(cop, out.addr(), NEP_DTYPE_BF16, (int64_t)s, e.msg, sizeof(e.msg)),
        e, "nep_cuda_ll_combine_recv");
    nep_cuda_ll_op_destroy(cop);
    cop = nullptr;
  };
  auto sync = [&] {
    nep_ok(nep_cuda_ll_sync(buf.get(), (int64_t)s, e.msg, sizeof(e.msg)), e, "nep_cuda_ll_sync");
  };
  auto do_flush = [&] {
    cuda_ok(cudaMemsetAsync(flush.get(), 0, flush.bytes(), s), "cudaMemsetAsync");
  };

  // Back-to-back timing of `body` (events around it, flush outside): median microseconds.
  auto series = [&](const std::function<void()>& body) {
    const int n = o.warmup + o.iters;
    std::vector<TimingEvent> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    ex.barrier();
    for (int i = 0; i < n; ++i) {
      do_flush();
      cuda_ok(cudaEventRecord(a[size_t(i)].get(), s), "cudaEventRecord");
      body();
      cuda_ok(cudaEventRecord(b[size_t(i)].get(), s), "cudaEventRecord");
    }
    sync();
    std::vector<double> v;
    for (int i = o.warmup; i < n; ++i) {
      float ms = 0;
      cuda_ok(cudaEventElapsedTime(&ms, a[size_t(i)].get(), b[size_t(i)].get()),
              "cudaEventElapsedTime");
      v.push_back(ms * 1000.0);
    }
    return median(v);
  };
  // One half timed alone: setup (untimed) then barrier, then `timed`, then finish (untimed).
  auto apart = [&](const std::function<void()>& setup, const std::function<void()>& timed,
                   const std::function<void()>& finish) {
    std::vector<double> v;
    TimingEvent a, b;
    for (int i = 0; i < o.warmup / 2 + o.iters; ++i) {
      setup();
      sync();
      do_flush();
      sync();
      ex.barrier();
      spin_kernel<<<1, 1, 0, s>>>(200000ull);
      cuda_ok(cudaEventRecord(a.get(), s), "cudaEventRecord");
      timed();
      cuda_ok(cudaEventRecord(b.get(), s), "cudaEventRecord");
      finish();
      sync();
      float ms = 0;
      cuda_ok(cudaEventElapsedTime(&ms, a.get(), b.get()), "cudaEventElapsedTime");
      if (i >= o.warmup / 2) v.push_back(ms * 1000.0);
    }
    return median(v);
  };

  Result r{};
  // Correctness of one step first (calc_diff of out against x * sum_k w_k).
  dsend();
  drecv();
  csend();
  crecv();
  sync();
  {
    std::vector<uint16_t> got(size_t(T * H));
    out.download(got.data(), got.size() * 2);
    std::vector<int32_t> cnt(El);
    count.download(cnt.data(), cnt.size() * 4);
    for (int c : cnt) r.recv_rows += c;
    double xy = 0, xx = 0;
    for (int64_t t = 0; t < T; ++t) {
      double ws = 0;
      for (int k = 0; k < K; ++k) ws += w[t * K + k];
      for (int64_t h = 0; h < H; ++h) {
        const double a = bf16_to_f32(got[t * H + h]), b = ws * x[t * H + h];
        xy += a * b;
        xx += a * a + b * b;
      }
    }
    r.calc_diff = 1.0 - 2.0 * xy / xx;
  }
  r.dispatch = series([&] {
    dsend();
    drecv();
  });
  r.combine = series([&] {
    csend();
    crecv();
  });
  r.step = series([&] {
    dsend();
    drecv();
    csend();
    crecv();
  });
  {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    dsend();
    drecv();
    csend();
    crecv();
    cuda_ok(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
    cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
    r.graph_step = series([&] { cuda_ok(cudaGraphLaunch(exec, s), "cudaGraphLaunch"); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  r.dispatch_send = apart([] {}, dsend, drecv);
  r.dispatch_recv = apart(dsend, drecv, [] {});
  // Combine halves: each iteration needs a fresh dispatch (untimed) for its handle.
  r.combine_send = apart([&] {
    dsend();
    drecv();
  }, csend, crecv);
  r.combine_recv = apart([&] {
    dsend();
    drecv();
    csend();
  }, crecv, [] {});
  if (handle != nullptr) nep_cuda_ll_handle_destroy(handle);
  ex.barrier();

  std::vector<Result> all(static_cast<size_t>(W));
  ex.allgather(&r, sizeof(r), all.data());
  if (me != 0) return 0;
  *all_out = all;
  auto mean = [&](double Result::* f) {
    double sum = 0;
    for (const Result& q : all) sum += q.*f;
    return sum / W;
  };
  const bool one_gpu = ndev < W;
  std::printf(
      "\nll_bench: %d ranks on %d GPU(s)%s, %lld tokens/rank, H=%lld, top-%d of %d experts, FP8%s "
      "dispatch, bf16 combine; "
      "median of %d after %d warm-up, L2 flushed\n",
      W, std::min(ndev, W), one_gpu ? " (ranks share a GPU: time-sliced, NOT NVLink figures)" : "",
      (long long)T, (long long)H, K, E, o.round_scale ? " (round scale)" : "", o.iters, o.warmup);
  std::printf("dispatch %.1f us, combine %.1f us, step %.1f us, graph step %.1f us\n",
              mean(&Result::dispatch), mean(&Result::combine), mean(&Result::step),
              mean(&Result::graph_step));
  std::printf("hook: dispatch send %.1f us + recv %.1f us, combine send %.1f us + recv %.1f us\n",
              mean(&Result::dispatch_send), mean(&Result::dispatch_recv),
              mean(&Result::combine_send), mean(&Result::combine_recv));
  std::printf("check: calc_diff(out, x * sum w) = %.3g (limit 9e-4), received rows per rank %.1f\n",
              mean(&Result::calc_diff), [&] {
    double t = 0;
    for (const Result& q : all) t += double(q.recv_rows);
    return t / W;
  }());
  if (!o.json.empty()) {
    std::ostringstream js;
    time_t now = time(nullptr);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
    js << "{\n  \"machine\": \"" << o.machine << "\",\n  \"date\": \"" << date
       << "\",\n  \"transport\": \"cuda-ipc low-latency\",\n"
       << "  \"ranks\": " << W << ",\n  \"devices\": " << std::min(ndev, W) << ",\n  \"note\": \""
       << (one_gpu ? "ranks share a GPU and time-slice: not NVLink figures" : "one GPU per rank")
       << "\",\n"
       << "  \"workload\": {\"tokens_per_rank\": " << T << ", \"hidden\": " << H
       << ", \"topk\": " << K << ", \"experts\": " << E
       << ", \"x_dtype\": \"bf16\", \"dispatch_wire\": \"fp8"
       << (o.round_scale ? "-round-scale" : "")
       << "\", \"recv_dtype\": \"bf16\", \"combine_wire\": \"bf16\"},\n"
       << "  \"timing\": {\"method\": \"cuda events, 256MB L2 flush between calls\", \"warmup\": "
       << o.warmup << ", \"iters\": " << o.iters
       << ", \"stat\": \"median per rank, mean over ranks\"},\n";
    const std::pair<const char*, double Result::*> fields[] = {
        {"dispatch_us", &Result::dispatch},
        {"combine_us", &Result::combine},
        {"step_us", &Result::step},
        {"graph_step_us", &Result::graph_step},
        {"dispatch_send_us", &Result::dispatch_send},
        {"dispatch_recv_us", &Result::dispatch_recv},
        {"combine_send_us", &Result::combine_send},
        {"combine_recv_us", &Result::combine_recv},
        {"calc_diff", &Result::calc_diff}};
    for (const auto& f : fields) js << "  \"" << f.first << "\": " << mean(f.second) << ",\n";
    js << "  \"per_rank\": [";
    for (int q = 0; q < W; ++q) {
      js << (q ? ", " : "") << "{\"rank\": " << q
         << ", \"recv_rows\": " << all[size_t(q)].recv_rows;
      for (const auto& f : fields) js << ", \"" << f.first << "\": " << all[size_t(q)].*(f.second);
      js << "}";
    }
    js << "]\n}\n";
    write_report(o.json, js.str());
  }
  return r.calc_diff < 9e-4 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  o.world = std::atoi(opt(argc, argv, "--world", "2"));
  o.tokens = std::atoll(opt(argc, argv, "--tokens", "128"));
  o.hidden = std::atoll(opt(argc, argv, "--hidden", "7168"));
  o.topk = std::atoi(opt(argc, argv, "--topk", "8"));
  o.experts = std::atoi(opt(argc, argv, "--experts", "256"));
  o.warmup = std::atoi(opt(argc, argv, "--warmup", "20"));
  o.iters = std::atoi(opt(argc, argv, "--iters", "50"));
  o.sms = std::atoi(opt(argc, argv, "--sms", "0"));
  o.round_scale = flag(argc, argv, "--round-scale");
  o.json = opt(argc, argv, "--json", "");
  o.machine = opt(argc, argv, "--machine", "unknown");
  if (o.world < 1 || o.world > NEP_CUDA_MAX_RANKS) {
    std::fprintf(stderr, "--world %d is outside [1, %d]\n", o.world, NEP_CUDA_MAX_RANKS);
    return 2;
  }
  std::vector<Result> all;
  const int failed =
      run_ranks(o.world, 600, 30, [&](Exchange& ex) { return rank_main(ex, o, &all); });
  std::printf("ll_bench: %d of %d ranks failed\n", failed, o.world);
  return failed == 0 ? 0 : 1;
}
