// Benchmark driver of the cuda-ipc transport on DeepEP's normal-mode workload (4096 tokens per
// rank, H=7168, top-8 of 256 experts): layout, notify, dispatch (FP8, BF16, MXFP8 wire, bf16 out)
// and combine (bf16 wire), plus the copy limit (every GPU writing to every peer at once) in the
// same run. Each timed call: 256 MB L2 flush, CUDA events around the call, median of --iters
// after --warmup calls. GB/s as DeepEP counts it: received rows x H x 2 bytes (BF16), times
// (1 + 4/128) / 2 for FP8 and MXFP8, over the time; local traffic included.
//
//   ep_bench --world 2 [--sms 24,12] [--iters 50] [--warmup 20] [--json out.json] [--machine name]
//            [--transport ipc|nccl|auto]   (nccl: no copy limit; the SM count is not used)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_common.h"
#include "harness.h"
#include "oracle.h"

using namespace nepgpu;

namespace {

struct Opts {
  int world = 2;
  int64_t tokens = 4096, hidden = 7168;
  int topk = 8, experts = 256;
  std::vector<int> sms = {24};
  int warmup = 20, iters = 50;
  int64_t copy_mb = 128;
  int64_t buffer_mb = 1024;
  std::string json, machine = "unknown";
  int transport = NEP_CUDA_TRANSPORT_IPC;
};

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(std::atoi(item.c_str()));
  return v;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Each block copies its share of `bytes` from src to every peer destination, 16 bytes per thread
// per step, peers interleaved so that all links are busy at once.
__global__ void peer_copy_kernel(const uint4* __restrict__ src, uint4* const* dst, int ndst,
                                 long long words) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += stride) {
    const uint4 v = src[i];
    for (int d = 0; d < ndst; ++d) dst[d][i] = v;
  }
}

struct Series {
  std::vector<TimingEvent> start, stop;
  explicit Series(int n) : start(static_cast<size_t>(n)), stop(size_t(n)) {}
  std::vector<double> micros() const {
    std::vector<double> v;
    for (size_t i = 0; i < start.size(); ++i) {
      float ms = 0;
      cuda_ok(cudaEventElapsedTime(&ms, start[i].get(), stop[i].get()), "cudaEventElapsedTime");
      v.push_back(ms * 1000.0);
    }
    return v;
  }
};

// Times body() `iters` times after `warmup` untimed calls, with an L2 flush before each call.
template <class F>
std::vector<double> time_series(nep_cuda_buffer* buf, DevMem& flush, int warmup, int iters,
                                F body) {
  for (int i = 0; i < warmup; ++i) {
    cuda_ok(cudaMemsetAsync(flush.get(), i & 0xff, flush.bytes(), 0), "flush");
    body();
  }
  Series s(iters);
  for (int i = 0; i < iters; ++i) {
    cuda_ok(cudaMemsetAsync(flush.get(), i & 0xff, flush.bytes(), 0), "flush");
    cuda_ok(cudaEventRecord(s.start[size_t(i)].get(), 0), "cudaEventRecord");
    body();
    cuda_ok(cudaEventRecord(s.stop[size_t(i)].get(), 0), "cudaEventRecord");
  }
  Err e;
  nep_ok(nep_cuda_sync(buf, 0, e.msg, sizeof(e.msg)), e, "nep_cuda_sync");
  std::vector<double> v = s.micros();
  v.erase(v.begin());  // the first sample follows the untimed warm-up tail
  return v;
}

struct RankResult {  // what each rank reports to rank 0, per (sms, wire)
  double dispatch_us, dispatch_topk_us, combine_us, dispatch_min, dispatch_max, combine_min,
      combine_max;
  long long recv_rows;
};

const char* wire_str(int w) {
  return w == NEP_WIRE_BF16    ? "bf16"
         : w == NEP_WIRE_FP8   ? "fp8"
         : w == NEP_WIRE_MXFP8 ? "mxfp8"
                               : "fp32";
}

int rank_main(Exchange& ex, const Opts& o) {
  const int me = ex.rank(), W = ex.world();
  cuda_ok(cudaSetDevice(me), "cudaSetDevice");
  BufferPtr buf = make_buffer(ex, o.buffer_mb << 20, 20000, o.transport);
  Err e;
  Problem p;
  p.world = W;
  p.seed = 4242;
  p.tokens = o.tokens;
  p.hidden = o.hidden;
  p.topk = o.topk;
  p.experts = o.experts;
  const int64_t T = o.tokens, H = o.hidden, K = o.topk;

  // Inputs: bf16 x ~ N(0, 1) per row magnitudes, uniform distinct top-k (as topk(|randn| + 1)).
  std::vector<uint16_t> hx(static_cast<size_t>(T * H));
  std::vector<float> row(static_cast<size_t>(H));
  for (int64_t t = 0; t < T; ++t) {
    p.x_row(me, t, row.data());
    for (int64_t h = 0; h < H; ++h) hx[size_t(t * H + h)] = f32_to_bf16(row[size_t(h)]);
  }
  std::vector<int64_t> htopk(static_cast<size_t>(T * K));
  std::vector<float> hw(htopk.size());
  for (int64_t t = 0; t < T; ++t) p.topk_row(me, t, &htopk[size_t(t * K)], &hw[size_t(t * K)]);
  DevMem dx(hx.size() * 2), dtopk(htopk.size() * 8), dw(hw.size() * 4), flush(size_t(256) << 20);
  dx.upload(hx.data(), hx.size() * 2);
  dtopk.upload(htopk.data(), htopk.size() * 8);
  dw.upload(hw.data(), hw.size() * 4);

  // Layout (asynchronous entry point) and notify (layout + count exchange + host sync).
  DevMem tpr(size_t(W) * 4), tpe(size_t(o.experts) * 4), inr(static_cast<size_t>(T * W));
  ex.barrier();
  const double layout_us = median(time_series(buf.get(), flush, o.warmup, o.iters, [&] {
    Err le;
    nep_ok(nep_cuda_layout(buf.get(), dtopk.addr(), T, o.topk, o.experts, tpr.addr(), tpe.addr(),
                           inr.addr(), 0, le.msg, sizeof(le.msg)),
           le, "nep_cuda_layout");
  }));
  std::vector<double> notify_host;
  ex.barrier();
  HandlePtr h;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    nep_cuda_handle* hr = nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    nep_ok(nep_cuda_dispatch_notify(buf.get(), dtopk.addr(), T, o.topk, o.experts, 1, 0, &hr, e.msg,
                                    sizeof(e.msg)),
           e, "notify");
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= o.warmup)
      notify_host.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    h.reset(hr);
  }
  const double notify_us = median(notify_host);
  const int64_t R = nep_cuda_handle_num_recv(h.get());

  DevMem recv_x(static_cast<size_t>(std::max<int64_t>(R, 1) * H * 2)),
      recv_idx(static_cast<size_t>(std::max<int64_t>(R, 1) * K * 8)),
      recv_w(static_cast<size_t>(std::max<int64_t>(R, 1) * K * 4)),
      out(static_cast<size_t>(T * H * 2));
  const int wires[3] = {NEP_WIRE_FP8, NEP_WIRE_BF16, NEP_WIRE_MXFP8};
  std::vector<RankResult> mine;
  for (int sms : o.sms) {
    for (int wire : wires) {
      RankResult r{};
      r.recv_rows = R;
      ex.barrier();
      std::vector<double> d = time_series(buf.get(), flush, o.warmup, o.iters, [&] {
        Err de;
        nep_ok(
            nep_cuda_dispatch(buf.get(), h.get(), dx.addr(), NEP_DTYPE_BF16, H, wire, 0, 0,
                              recv_x.addr(), NEP_DTYPE_BF16, 0, 0, sms, 0, de.msg, sizeof(de.msg)),
            de, "dispatch");
      });
      r.dispatch_us = median(d);
      r.dispatch_min = *std::min_element(d.begin(), d.end());
      r.dispatch_max = *std::max_element(d.begin(), d.end());
      ex.barrier();
      r.dispatch_topk_us = median(time_series(buf.get(), flush, o.warmup / 2, o.iters / 2, [&] {
        Err de;
        nep_ok(nep_cuda_dispatch(buf.get(), h.get(), dx.addr(), NEP_DTYPE_BF16, H, wire,
                                 dtopk.addr(), dw.addr(), recv_x.addr(), NEP_DTYPE_BF16,
                                 recv_idx.addr(), recv_w.addr(), sms, 0, de.msg, sizeof(de.msg)),
               de, "dispatch with topk");
      }));
      ex.barrier();
      // Combine the received bf16 rows (bf16 wire), as DeepEP's benchmark does.
      std::vector<double> c = time_series(buf.get(), flush, o.warmup, o.iters, [&] {
        Err ce;
        nep_ok(nep_cuda_combine(buf.get(), h.get(), recv_x.addr(), NEP_DTYPE_BF16, H, NEP_WIRE_BF16,
                                0, out.addr(), NEP_DTYPE_BF16, 0, sms, 0, ce.msg, sizeof(ce.msg)),
               ce, "combine");
      });
      r.combine_us = median(c);
      r.combine_min = *std::min_element(c.begin(), c.end());
      r.combine_max = *std::max_element(c.begin(), c.end());
      mine.push_back(r);
    }
  }

  // Copy limit: every GPU writes copy_mb MiB into every peer at once.
  double copy_kernel_gbps = 0, copy_kernel_all_gbps = 0, copy_engine_gbps = 0;
  if (W > 1 && o.transport == NEP_CUDA_TRANSPORT_IPC) {
    const int64_t bytes = o.copy_mb << 20;
    DevMem src(static_cast<size_t>(bytes));
    src.poison(0x3c);
    std::vector<uint4*> dst;
    for (int q = 0; q < W; ++q) {
      if (q == me) continue;
      int64_t addr = 0, cap = 0;
      nep_ok(nep_cuda_buffer_peer_scratch(buf.get(), q, &addr, &cap, e.msg, sizeof(e.msg)), e,
             "peer_scratch");
      if (cap < bytes * W)
        throw std::runtime_error("copy limit: scratch of " + std::to_string(cap) + " bytes < " +
                                 std::to_string(bytes * W));
      dst.push_back(reinterpret_cast<uint4*>(addr + me * bytes));
    }
    DevMem ddst(dst.size() * sizeof(uint4*));
    ddst.upload(dst.data(), dst.size() * sizeof(uint4*));
    int dev_sms = nep_cuda_buffer_num_device_sms(buf.get());
    for (int variant = 0; variant < 2; ++variant) {
      const int blocks = variant == 0 ? o.sms[0] : dev_sms;
      std::vector<double> v;
      for (int i = 0; i < 6; ++i) {
        cuda_ok(cudaDeviceSynchronize(), "sync");
        ex.barrier();
        TimingEvent a, b;
        cuda_ok(cudaEventRecord(a.get(), 0), "rec");
        peer_copy_kernel<<<blocks, 1024>>>(static_cast<const uint4*>(src.get()),
                                           static_cast<uint4* const*>(ddst.get()), int(dst.size()),
                                           bytes / 16);
        cuda_ok(cudaGetLastError(), "peer_copy_kernel");
        cuda_ok(cudaEventRecord(b.get(), 0), "rec");
        cuda_ok(cudaEventSynchronize(b.get()), "sync");
        float ms = 0;
        cuda_ok(cudaEventElapsedTime(&ms, a.get(), b.get()), "elapsed");
        if (i > 0) v.push_back(double(bytes) * double(dst.size()) / (ms * 1e-3) / 1e9);
      }
      (variant == 0 ? copy_kernel_gbps : copy_kernel_all_gbps) = median(v);
    }
    {
      std::vector<CudaStream> streams(dst.size());
      std::vector<double> v;
      for (int i = 0; i < 6; ++i) {
        cuda_ok(cudaDeviceSynchronize(), "sync");
        ex.barrier();
        TimingEvent a, b;
        std::vector<TimingEvent> ends(dst.size());
        cuda_ok(cudaEventRecord(a.get(), 0), "rec");
        for (size_t q = 0; q < dst.size(); ++q) {
          cuda_ok(cudaStreamWaitEvent(streams[q].get(), a.get(), 0), "wait");
          cuda_ok(cudaMemcpyAsync(dst[q], src.get(), size_t(bytes), cudaMemcpyDeviceToDevice,
                                  streams[q].get()),
                  "cudaMemcpyAsync peer");
          cuda_ok(cudaEventRecord(ends[q].get(), streams[q].get()), "rec");
          cuda_ok(cudaStreamWaitEvent(0, ends[q].get(), 0), "wait");
        }
        cuda_ok(cudaEventRecord(b.get(), 0), "rec");
        cuda_ok(cudaEventSynchronize(b.get()), "sync");
        float ms = 0;
        cuda_ok(cudaEventElapsedTime(&ms, a.get(), b.get()), "elapsed");
        if (i > 0) v.push_back(double(bytes) * double(dst.size()) / (ms * 1e-3) / 1e9);
      }
      copy_engine_gbps = median(v);
    }
    cuda_ok(cudaDeviceSynchronize(), "sync");
    ex.barrier();
  }

  // Gather on rank 0.
  struct Summary {
    double layout_us, notify_us, copy_kernel, copy_kernel_all, copy_engine;
  } sm{layout_us, notify_us, copy_kernel_gbps, copy_kernel_all_gbps, copy_engine_gbps};
  std::vector<Summary> all_sm(static_cast<size_t>(W));
  ex.allgather(&sm, sizeof(sm), all_sm.data());
  std::vector<RankResult> all(mine.size() * size_t(W));
  ex.allgather(mine.data(), mine.size() * sizeof(RankResult), all.data());
  if (me != 0) return 0;

  auto mean_of = [&](auto get) {
    double s = 0;
    for (int q = 0; q < W; ++q) s += get(q);
    return s / W;
  };
  const double fp8_factor = (1.0 + 4.0 / 128.0) / 2.0;
  std::printf(
      "\nep_bench (%s): %d x GPU, %lld tokens/rank, H=%lld, top-%d of %d experts; median of %d "
      "after %d warm-up, L2 flushed\n",
      transport_name(o.transport), W, (long long)T, (long long)H, o.topk, o.experts, o.iters - 1,
      o.warmup);
  std::printf("layout %.1f us (mean over ranks), notify (layout + exchange + host sync) %.1f us\n",
              mean_of([&](int q) { return all_sm[size_t(q)].layout_us; }),
              mean_of([&](int q) { return all_sm[size_t(q)].notify_us; }));
  std::printf("%-6s %-4s %12s %10s %14s %12s %10s\n", "wire", "SMs", "dispatch us", "GB/s",
              "disp+topk us", "combine us", "GB/s");
  std::ostringstream js;
  time_t now = time(nullptr);
  char date[32];
  strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
  js << "{\n  \"machine\": \"" << o.machine << "\",\n  \"date\": \"" << date
     << "\",\n  \"transport\": \"" << transport_name(o.transport) << "\",\n  \"gpus\": " << W
     << ",\n  \"workload\": {\"tokens_per_rank\": " << T << ", \"hidden\": " << H
     << ", \"topk\": " << o.topk << ", \"experts\": " << o.experts
     << ", \"x_dtype\": \"bf16\", \"recv_dtype\": \"bf16\", \"combine_wire\": \"bf16\"},\n"
     << "  \"timing\": {\"method\": \"cuda events, 256MB L2 flush before each call\", \"warmup\": "
     << o.warmup << ", \"iters\": " << o.iters - 1
     << ", \"stat\": \"median per rank, mean over ranks\"},\n"
     << "  \"layout_us\": " << mean_of([&](int q) { return all_sm[size_t(q)].layout_us; })
     << ",\n  \"notify_us_host\": " << mean_of([&](int q) { return all_sm[size_t(q)].notify_us; })
     << ",\n  \"runs\": [\n";
  size_t idx = 0;
  bool first = true;
  for (int sms : o.sms) {
    for (int wire : wires) {
      auto at = [&](int q) -> const RankResult& { return all[size_t(q) * mine.size() + idx]; };
      const double d_us = mean_of([&](int q) { return at(q).dispatch_us; });
      const double dt_us = mean_of([&](int q) { return at(q).dispatch_topk_us; });
      const double c_us = mean_of([&](int q) { return at(q).combine_us; });
      const double rows = mean_of([&](int q) { return double(at(q).recv_rows); });
      const double bf16_bytes = rows * double(H) * 2.0;
      const double d_bytes = wire == NEP_WIRE_BF16 ? bf16_bytes : bf16_bytes * fp8_factor;
      const double d_gbps = d_bytes / (d_us * 1e-6) / 1e9,
                   c_gbps = bf16_bytes / (c_us * 1e-6) / 1e9;
      std::printf("%-6s %-4d %12.1f %10.1f %14.1f %12.1f %10.1f\n", wire_str(wire), sms, d_us,
                  d_gbps, dt_us, c_us, c_gbps);
      js << (first ? "" : ",\n") << "    {\"wire\": \"" << wire_str(wire) << "\", \"sms\": " << sms
         << ", \"recv_rows_mean\": " << rows << ", \"dispatch_us\": " << d_us
         << ", \"dispatch_gbps\": " << d_gbps << ", \"dispatch_with_topk_us\": " << dt_us
         << ", \"combine_us\": " << c_us << ", \"combine_gbps\": " << c_gbps << ", \"per_rank\": [";
      for (int q = 0; q < W; ++q)
        js << (q ? ", " : "") << "{\"rank\": " << q << ", \"recv_rows\": " << at(q).recv_rows
           << ", \"dispatch_us\": " << at(q).dispatch_us
           << ", \"dispatch_min_us\": " << at(q).dispatch_min
           << ", \"dispatch_max_us\": " << at(q).dispatch_max
           << ", \"combine_us\": " << at(q).combine_us
           << ", \"combine_min_us\": " << at(q).combine_min
           << ", \"combine_max_us\": " << at(q).combine_max << "}";
      js << "]}";
      first = false;
      ++idx;
    }
  }
  const double ck = mean_of([&](int q) { return all_sm[size_t(q)].copy_kernel; });
  const double cka = mean_of([&](int q) { return all_sm[size_t(q)].copy_kernel_all; });
  const double ce = mean_of([&](int q) { return all_sm[size_t(q)].copy_engine; });
  std::printf(
      "copy limit (each GPU writing %lld MiB to each of its %d peers at once, outgoing GB/s per "
      "GPU): kernel %d SMs %.1f, kernel all SMs %.1f, "
      "copy engines %.1f\n",
      (long long)o.copy_mb, W - 1, o.sms[0], ck, cka, ce);
  js << "\n  ],\n  \"copy_limit\": {\"bytes_per_peer\": " << (o.copy_mb << 20)
     << ", \"kernel_sms\": " << o.sms[0] << ", \"kernel_gbps_per_gpu\": " << ck
     << ", \"kernel_all_sms_gbps_per_gpu\": " << cka << ", \"copy_engine_gbps_per_gpu\": " << ce
     << "}\n}\n";
  if (!o.json.empty()) {
    write_report(o.json, js.str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  o.world = std::atoi(opt(argc, argv, "--world", "2"));
  o.tokens = std::atoll(opt(argc, argv, "--tokens", "4096"));
  o.hidden = std::atoll(opt(argc, argv, "--hidden", "7168"));
  o.topk = std::atoi(opt(argc, argv, "--topk", "8"));
  o.experts = std::atoi(opt(argc, argv, "--experts", "256"));
  o.sms = parse_list(opt(argc, argv, "--sms", "24"));
  o.warmup = std::atoi(opt(argc, argv, "--warmup", "20"));
  o.iters = std::atoi(opt(argc, argv, "--iters", "50")) + 1;
  o.copy_mb = std::atoll(opt(argc, argv, "--copy-mb", "128"));
  o.buffer_mb = std::atoll(opt(argc, argv, "--buffer-mb", "1024"));
  o.json = opt(argc, argv, "--json", "");
  o.machine = opt(argc, argv, "--machine", "unknown");
  try {
    o.transport = parse_transport(opt(argc, argv, "--transport", "ipc"), o.world);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "%s\n", ex.what());
    return 2;
  }
  if (o.world < 1 || o.world > NEP_CUDA_MAX_RANKS || o.sms.empty()) {
    std::fprintf(stderr, "bad --world or --sms\n");
    return 2;
  }
  const int failed = run_ranks(o.world, 900, 30, [&](Exchange& ex) { return rank_main(ex, o); });
  return failed == 0 ? 0 : 1;
}
