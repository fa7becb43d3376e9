// Benchmark of the grouped FP8 GEMMs on GPU 0 at the 16B expert shape (24,576 rows over 64
// experts, H = 2048, I = 1408, the uneven split of gemm_shapes.h): the SwiGLU expert's forward
// (gate+up fused [M, 2I] = x W13^T, down [M, H] = h W2^T), activation gradients (dh = dy W2,
// dx = dh13 W13) and weight gradients (dW2_g = dy_g^T h_g, dW13_g = dh13_g^T x_g), in FP8_BLOCK
// and MXFP8, with the quantisers (and the fused SwiGLU quantisers) timed apart. FLOPs count 2 M N K
// per GEMM over the real rows (the K-grouped layout's padding is not counted). The tier is
// NEP_GEMM_TIER's (auto by default); the report names the tier that ran.
// bench/grouped_gemm_torch.py times torch on the same shapes.
//
//   gemm_bench [--reps N] [--even] [--json FILE]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemm_shapes.h"
#include "gpu_common.h"
#include "nativeep/cuda_api.h"
#include "nativeep/gemm_api.h"

using namespace nepgpu;

namespace {

struct Result {
  std::string name;
  double us, tflops;
};

DevMem random_device(int64_t count, uint32_t seed, float scale) {
  std::vector<float> h(count);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (auto& v : h) v = normal(rng);
  DevMem d(count * 4);
  d.upload(h.data(), count * 4);
  return d;
}

template <class Fn>
double time_us(int reps, Fn&& fn) {
  fn();  // warm-up
  cuda_ok(cudaDeviceSynchronize(), "sync");
  TimingEvent t0, t1;
  cuda_ok(cudaEventRecord(t0.get(), 0), "record");
  for (int i = 0; i < reps; ++i) fn();
  cuda_ok(cudaEventRecord(t1.get(), 0), "record");
  cuda_ok(cudaEventSynchronize(t1.get()), "sync");
  float ms = 0;
  cuda_ok(cudaEventElapsedTime(&ms, t0.get(), t1.get()), "elapsed");
  return ms * 1000.0 / reps;
}

const char* tier_name(int32_t t) {
  return t == NEP_GEMM_TIER_WGMMA ? "wgmma" : t == NEP_GEMM_TIER_MMA ? "mma" : "none";
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each result reaches the log as it is measured
  if (!gpu_present("gemm_bench")) return kSkipNoGpu;
  int reps = 20;
  bool even = false;
  const char* json = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--even") == 0) even = true;
    else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
    else {
      std::fprintf(stderr, "gemm_bench: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  try {
    cuda_ok(cudaSetDevice(0), "cudaSetDevice");
    const int32_t G = k16bExperts;
    const int64_t M = k16bRows, H = k16bHidden, I = k16bInter;
    std::vector<int64_t> split = even ? std::vector<int64_t>(G, M / G) : uneven_split(M, G);
    const auto off = offsets_of(split);
    char name[256] = {0};
    int32_t sms = 0;
    Err e;
    nep_ok(nep_cuda_device_info(0, name, sizeof name, nullptr, nullptr, &sms, e.msg, sizeof e.msg),
           e, "device info");
    std::printf(
        "gemm_bench on %s (%d SMs): %lld rows over %d experts (%s split, %lld..%lld rows), H=%lld "
        "I=%lld, %d reps\n",
        name, sms, (long long)M, G, even ? "even" : "uneven",
        (long long)*std::min_element(split.begin(), split.end()),
        (long long)*std::max_element(split.begin(), split.end()), (long long)H, (long long)I, reps);
    int64_t mp = 0;
    nep_ok(nep_gemm_padded_rows(G, off.data(), &mp, nullptr, e.msg, sizeof e.msg), e,
           "padded rows");
    DevMem x = random_device(M * H, 1, 1.0f), h = random_device(M * I, 2, 1.0f),
           dy = random_device(M * H, 3, 1.0f), dh13 = random_device(M * 2 * I, 4, 1.0f),
           w13 = random_device(G * 2 * I * H, 5, 0.02f), w2 = random_device(G * H * I, 6, 0.02f);
    std::vector<Result> results;
    std::string tiers;
    for (int32_t f : {NEP_GEMM_FP8_BLOCK, NEP_GEMM_MXFP8}) {
      const std::string fname = f == NEP_GEMM_FP8_BLOCK ? "fp8-block" : "mxfp8";
      const int64_t blk = f == NEP_GEMM_FP8_BLOCK ? 128 : 32, ss = f == NEP_GEMM_FP8_BLOCK ? 4 : 1;
      auto rs = [&](int64_t k) { return nep_gemm_row_scale_bytes(f, k); };
      auto ws = [&](int64_t n, int64_t k, int t) {
        return nep_gemm_weight_scale_bytes(f, G, n, k, t);
      };
      // Quantised operands.
      DevMem qx(M * H), sx(M * rs(H)), qh(M * I), sh(M * rs(I)), qdy(M * H), sdy(M * rs(H)),
          qdh(M * 2 * I), sdh(M * rs(2 * I));
      DevMem qw13(G * 2 * I * H), sw13(ws(2 * I, H, 0)), qw13t(G * 2 * I * H),
          sw13t(ws(2 * I, H, 1)), qw2(G * H * I), sw2(ws(H, I, 0)), qw2t(G * H * I),
          sw2t(ws(H, I, 1));
      DevMem tdy(H * mp), tsdy(H * mp / blk * ss), th(I * mp), tsh(I * mp / blk * ss),
          tdh(2 * I * mp), tsdh(2 * I * mp / blk * ss), tx(H * mp), tsx(H * mp / blk * ss);
      DevMem y13(M * 2 * I * 4), y2(M * H * 4), gdh(M * I * 4), gdx(M * H * 4), gw2(G * H * I * 4),
          gw13(G * 2 * I * H * 4);
      auto ok = [&](int32_t st, const char* what) { nep_ok(st, e, what); };
      auto q_rows = [&](DevMem& src, int64_t k, DevMem& q, DevMem& s) {
        ok(nep_cuda_gemm_quantize_rows(0, f, src.addr(), M, k, q.addr(), s.addr(), 0, e.msg,
                                       sizeof e.msg),
           "quantize rows");
      };
      auto q_t = [&](DevMem& src, int64_t c, DevMem& q, DevMem& s) {
        ok(nep_cuda_gemm_quantize_rows_t_grouped(0, f, src.addr(), M, c, G, off.data(), q.addr(),
                                                 s.addr(), 0, e.msg, sizeof e.msg),
           "quantize rows t grouped");
      };
      auto q_w = [&](DevMem& w, int64_t n, int64_t k, int t, DevMem& q, DevMem& s) {
        ok(nep_cuda_gemm_quantize_weights(0, f, w.addr(), G, n, k, t, q.addr(), s.addr(), 0, e.msg,
                                          sizeof e.msg),
           "quantize weights");
      };
      auto gm = [&](int64_t n, int64_t k, DevMem& a, DevMem& sa, DevMem& b, DevMem& sb, DevMem& c) {
        ok(nep_cuda_gemm_grouped_m(0, f, G, n, k, M, off.data(), a.addr(), 0, sa.addr(), 0,
                                   b.addr(), sb.addr(), c.addr(), NEP_GEMM_OUT_FP32, 0, e.msg,
                                   sizeof e.msg),
           "grouped m");
      };
      auto gk = [&](int64_t n, int64_t k, DevMem& a, DevMem& sa, DevMem& b, DevMem& sb, DevMem& c) {
        ok(nep_cuda_gemm_grouped_k(0, f, G, n, k, off.data(), a.addr(), sa.addr(), b.addr(),
                                   sb.addr(), c.addr(), 0, e.msg, sizeof e.msg),
           "grouped k");
      };
      auto add = [&](const std::string& what, double flops, double us) {
        results.push_back({fname + " " + what, us, flops / us / 1e6});
        std::printf("  %-44s %9.1f us %8.1f TFLOP/s\n", (fname + " " + what).c_str(), us,
                    flops / us / 1e6);
      };
      const double F13 = 2.0 * M * 2 * I * H, F2 = 2.0 * M * H * I;
      add("quantize x rows [M, H]", 0, time_us(reps, [&] { q_rows(x, H, qx, sx); }));
      add("quantize W13 (once per step)", 0,
          time_us(reps, [&] { q_w(w13, 2 * I, H, 0, qw13, sw13); }));
      add("quantize W13^T (once per step)", 0,
          time_us(reps, [&] { q_w(w13, 2 * I, H, 1, qw13t, sw13t); }));
      add("quantize W2 (once per step)", 0, time_us(reps, [&] { q_w(w2, H, I, 0, qw2, sw2); }));
      add("quantize W2^T (once per step)", 0, time_us(reps, [&] { q_w(w2, H, I, 1, qw2t, sw2t); }));
      add("quantize dy^T grouped [H, Mp]", 0, time_us(reps, [&] { q_t(dy, H, tdy, tsdy); }));
      q_rows(h, I, qh, sh);
      q_rows(dy, H, qdy, sdy);
      q_rows(dh13, 2 * I, qdh, sdh);
      q_t(h, I, th, tsh);
      q_t(dh13, 2 * I, tdh, tsdh);
      q_t(x, H, tx, tsx);
      const double t_up = time_us(reps, [&] { gm(2 * I, H, qx, sx, qw13, sw13, y13); });
      tiers += std::string(fname) + ":" + tier_name(nep_cuda_gemm_last_tier()) + " ";
      const double t_down = time_us(reps, [&] { gm(H, I, qh, sh, qw2, sw2, y2); });
      const double t_dh = time_us(reps, [&] { gm(I, H, qdy, sdy, qw2t, sw2t, gdh); });
      const double t_dx = time_us(reps, [&] { gm(H, 2 * I, qdh, sdh, qw13t, sw13t, gdx); });
      const double t_dw2 = time_us(reps, [&] { gk(H, I, tdy, tsdy, th, tsh, gw2); });
      const double t_dw13 = time_us(reps, [&] { gk(2 * I, H, tdh, tsdh, tx, tsx, gw13); });
      add("swiglu + quantize h (fused, h kept)", 0, time_us(reps, [&] {
        ok(nep_cuda_gemm_swiglu_quantize_rows(0, f, y13.addr(), M, I, h.addr(), qh.addr(),
                                              sh.addr(), 0, e.msg, sizeof e.msg),
           "swiglu quantize");
      }));
      add("dswiglu + quantize dh13 (fused, kept)", 0, time_us(reps, [&] {
        ok(nep_cuda_gemm_dswiglu_quantize_rows(0, f, y13.addr(), gdh.addr(), M, I, dh13.addr(),
                                               qdh.addr(), sdh.addr(), 0, e.msg, sizeof e.msg),
           "dswiglu quantize");
      }));
      add("fwd gate+up [M,2I] = x W13^T", F13, t_up);
      add("fwd down [M,H] = h W2^T", F2, t_down);
      add("dgrad dh = dy W2", F2, t_dh);
      add("dgrad dx = dh13 W13", F13, t_dx);
      add("wgrad dW2 = dy^T h", F2, t_dw2);
      add("wgrad dW13 = dh13^T x", F13, t_dw13);
      add("forward total", F13 + F2, t_up + t_down);
      add("backward total", 2 * (F13 + F2), t_dh + t_dx + t_dw2 + t_dw13);
      add("forward + backward total", 3 * (F13 + F2), t_up + t_down + t_dh + t_dx + t_dw2 + t_dw13);
    }
    std::printf("tiers: %s\n", tiers.c_str());
    if (json != nullptr) {
      FILE* out = std::fopen(json, "w");
      if (out == nullptr) throw std::runtime_error(std::string("cannot write ") + json);
      std::fprintf(out,
                   "{\"device\": \"%s\", \"rows\": %lld, \"experts\": %d, \"hidden\": %lld, "
                   "\"inter\": %lld, "
                   "\"split\": \"%s\", \"tiers\": \"%s\", \"results\": [",
                   name, (long long)M, G, (long long)H, (long long)I, even ? "even" : "uneven",
                   tiers.c_str());
      for (size_t i = 0; i < results.size(); ++i)
        std::fprintf(out, "%s{\"name\": \"%s\", \"us\": %.2f, \"tflops\": %.2f}", i ? ", " : "",
                     results[i].name.c_str(), results[i].us, results[i].tflops);
      std::fprintf(out, "]}\n");
      std::fclose(out);
    }
  } catch (const std::exception& ex) {
    std::printf("FAIL %s\n", ex.what());
    return 1;
  }
  return 0;
}
