// GPU test of nep_cuda_adamw_f32 (one process, one GPU): several steps on random data against a
// host reference that rounds every step as the kernel specifies, for lengths that exercise the
// vectorised body and the scalar tail, arrays that are not 16-byte aligned, a gradient scale and
// zeroing; then bad arguments, each refused with a message naming it and nothing launched.
//
//   adamw_test [--probe-gpu]   exit 0: all cases pass (or a GPU is there); 1: a failure; 77: no GPU
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_common.h"
#include "nativeep/cuda_api.h"

using namespace nepgpu;

namespace {

int g_fail = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++g_fail;
    std::printf("FAIL %s\n", what.c_str());
  }
}

struct Hyper {
  float lr, lr_corrected, wd, beta1, beta2, eps, grad_scale;
};

// The specification, one rounding per step (std::fmaf where the kernel fuses).
void reference(std::vector<float>& w, std::vector<float>& g, std::vector<float>& m,
               std::vector<float>& v, const Hyper& h, bool zero) {
  const float omb1 = 1.0f - h.beta1, omb2 = 1.0f - h.beta2;
  for (size_t i = 0; i < w.size(); ++i) {
    volatile float grad = h.grad_scale == 1.0f ? g[i] : g[i] * h.grad_scale;
    if (zero) g[i] = 0.0f;
    volatile float t = w[i] * h.lr;
    t = t * h.wd;
    w[i] = w[i] - t;
    volatile float mb = m[i] * h.beta1;
    m[i] = std::fmaf(omb1, grad, mb);
    volatile float gg = omb2 * grad;
    volatile float vb = v[i] * h.beta2;
    v[i] = std::fmaf(gg, grad, vb);
    volatile float root = std::sqrt(v[i]);
    volatile float denom = root + h.eps;
    volatile float num = m[i] * h.lr_corrected;
    volatile float upd = num / denom;
    w[i] = w[i] - upd;
  }
}

int64_t ulps(float a, float b) {
  int32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  if ((x < 0) != (y < 0)) return a == b ? 0 : INT32_MAX;
  return std::llabs((int64_t)x - (int64_t)y);
}

void run_case(int64_t n, int offset, const Hyper& h, bool zero, int steps) {
  const std::string name = "n=" + std::to_string(n) + " offset=" + std::to_string(offset) +
                           (zero ? " zero-grad" : "") + " scale=" + std::to_string(h.grad_scale);
  std::mt19937 rng(1234 + (unsigned)n + offset);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(n), g(n), m(n), v(n);
  for (int64_t i = 0; i < n; ++i) {
    w[i] = normal(rng);
    m[i] = 0.1f * normal(rng);
    v[i] = std::fabs(0.01f * normal(rng));
  }
  const size_t bytes = (size_t)(n + offset) * 4;
  DevMem dw(bytes), dg(bytes), dm(bytes), dv(bytes);
  float* pw = static_cast<float*>(dw.get()) + offset;
  float* pg = static_cast<float*>(dg.get()) + offset;
  float* pm = static_cast<float*>(dm.get()) + offset;
  float* pv = static_cast<float*>(dv.get()) + offset;
  cuda_ok(cudaMemcpy(pw, w.data(), n * 4, cudaMemcpyHostToDevice), "upload w");
  cuda_ok(cudaMemcpy(pm, m.data(), n * 4, cudaMemcpyHostToDevice), "upload m");
  cuda_ok(cudaMemcpy(pv, v.data(), n * 4, cudaMemcpyHostToDevice), "upload v");
  for (int s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < n; ++i) g[i] = normal(rng);
    cuda_ok(cudaMemcpy(pg, g.data(), n * 4, cudaMemcpyHostToDevice), "upload g");
    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the uploads");
    Err e;
    const int32_t st = nep_cuda_adamw_f32(0, (int64_t)pw, (int64_t)pg, (int64_t)pm, (int64_t)pv, n,
                                          h.lr, h.lr_corrected, h.wd, h.beta1, h.beta2, h.eps,
                                          h.grad_scale, zero ? 1 : 0, 0, e.msg, sizeof(e.msg));
    expect(st == NEP_OK, name + ": status " + std::to_string(st) + " " + e.msg);
    reference(w, g, m, v, h, zero);
  }
  std::vector<float> gw(n), gg(n), gm(n), gv(n);
  cuda_ok(cudaMemcpy(gw.data(), pw, n * 4, cudaMemcpyDeviceToHost), "download w");
  cuda_ok(cudaMemcpy(gg.data(), pg, n * 4, cudaMemcpyDeviceToHost), "download g");
  cuda_ok(cudaMemcpy(gm.data(), pm, n * 4, cudaMemcpyDeviceToHost), "download m");
  cuda_ok(cudaMemcpy(gv.data(), pv, n * 4, cudaMemcpyDeviceToHost), "download v");
  int64_t worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(
        {worst, ulps(gw[i], w[i]), ulps(gm[i], m[i]), ulps(gv[i], v[i]), ulps(gg[i], g[i])});
  }
  // Every step is specified to the rounding; allow 1 ulp for a host compiler that fuses
  // differently.
  expect(worst <= 1,
         name + ": largest difference from the reference " + std::to_string(worst) + " ulp");
  std::printf("%s %s: %d steps, largest difference %lld ulp\n", worst <= 1 ? "ok  " : "FAIL",
              name.c_str(), steps, (long long)worst);
}

void expect_refused(int32_t st, const Err& e, const std::string& needle, const std::string& what) {
  const bool ok = st == NEP_ERR_INVALID_ARGUMENT && std::strstr(e.msg, needle.c_str()) != nullptr;
  expect(ok, what + ": status " + std::to_string(st) + ", message '" + e.msg + "' (wanted '" +
                 needle + "')");
  if (ok) std::printf("ok   refused %s: %s\n", what.c_str(), e.msg);
}

void bad_arguments() {
  const int64_t n = 1000;
  DevMem a(n * 4), b(n * 4), c(n * 4), d(n * 4);
  const int64_t w = (int64_t)a.get(), g = (int64_t)b.get(), m = (int64_t)c.get(),
                v = (int64_t)d.get();
  std::vector<float> host(n);
  Err e;
  expect_refused(nep_cuda_adamw_f32(0, w, g, m, v, -1, 1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1,
                                    0, 0, e.msg, sizeof(e.msg)),
                 e, "n=-1 is negative", "negative n");
  expect_refused(nep_cuda_adamw_f32(0, w, 0, m, v, n, 1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1,
                                    0, 0, e.msg, sizeof(e.msg)),
                 e, "one is null", "null grad");
  expect_refused(nep_cuda_adamw_f32(0, w, w, m, v, n, 1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1,
                                    0, 0, e.msg, sizeof(e.msg)),
                 e, "four different arrays", "grad aliasing weight");
  expect_refused(nep_cuda_adamw_f32(0, w, g, m, v, n, NAN, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1, 0,
                                    0, e.msg, sizeof(e.msg)),
                 e, "lr=nan is not finite", "NaN learning rate");
  expect_refused(nep_cuda_adamw_f32(0, w, g, m, v, n, 1e-3f, 1e-3f, 0.01f, 1.0f, 0.999f, 1e-8f, 1,
                                    0, 0, e.msg, sizeof(e.msg)),
                 e, "beta1=1 is outside [0, 1)", "beta1 = 1");
  expect_refused(nep_cuda_adamw_f32(0, w, g, m, v, n + (1 << 20), 1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f,
                                    1e-8f, 1, 0, 0, e.msg, sizeof(e.msg)),
                 e, "bytes for the shape given", "span past the allocation");
  expect_refused(nep_cuda_adamw_f32(0, w, (int64_t)host.data(), m, v, n, 1e-3f, 1e-3f, 0.01f, 0.9f,
                                    0.999f, 1e-8f, 1, 0, 0, e.msg, sizeof(e.msg)),
                 e, "grad=", "host memory as grad");
  int count = 0;
  cuda_ok(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  expect_refused(nep_cuda_adamw_f32(count, w, g, m, v, n, 1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f,
                                    1, 0, 0, e.msg, sizeof(e.msg)),
                 e, "is outside [0, ", "device past the visible ones");
  cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the refusals");
}

}  // namespace

int main(int argc, char** argv) {
  if (!gpu_present("adamw_test")) return kSkipNoGpu;
  if (argc > 1 && std::strcmp(argv[1], "--probe-gpu") == 0) return 0;  // sanitize.sh asks first
  try {
    cuda_ok(cudaSetDevice(0), "cudaSetDevice");
    const Hyper plain{3e-3f, 3e-3f * std::sqrt(1 - 0.999f) / (1 - 0.9f), 0.01f, 0.9f, 0.999f, 1e-8f,
                      1.0f};
    Hyper clipped = plain;
    clipped.grad_scale = 0.37f;
    for (int64_t n : {1, 3, 4, 5, 1024, 1000003}) run_case(n, 0, plain, false, 3);
    run_case(1000003, 1, plain, true, 3);  // not 16-byte aligned: the scalar path throughout
    run_case(4099, 3, clipped, true, 4);
    run_case(1 << 20, 0, clipped, false, 2);
    bad_arguments();
  } catch (const std::exception& ex) {
    ++g_fail;
    std::printf("FAIL %s\n", ex.what());
  }
  std::printf("adamw_test: %s\n",
              g_fail == 0 ? "all passed" : (std::to_string(g_fail) + " failures").c_str());
  return g_fail == 0 ? 0 : 1;
}
