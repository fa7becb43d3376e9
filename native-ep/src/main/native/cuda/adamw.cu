// AdamW in one pass over memory for the training step on a GPU (nep_cuda_adamw_f32 in
// include/nativeep/cuda_api.h): per element, the gradient is read once (scaled by the clipping
// factor), the weight and both moments are read and written once, and the gradient may be zeroed
// in the same pass. DJL's adamUpdate reaches the same result with a dozen separate kernels and
// three full-size temporaries per parameter, about four times the memory traffic.
//
// The arithmetic follows DJL's adamUpdate step by step (decoupled decay from the weight before the
// step, then the moments, then the step), each step rounded to float as those kernels round, the
// multiply-adds of add(alpha) and addcmul fused as nvcc compiles them there.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "device_span.h"
#include "host_utils.h"
#include "nativeep/cuda_api.h"

#define NEP_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

using namespace nep::cuda;

namespace {

struct AdamWArgs {
  float lr;            // decoupled weight decay: w -= (w * lr) * weight_decay
  float lr_corrected;  // the step: w -= m * lr_corrected / (sqrt(v) + eps)
  float weight_decay;
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float eps;
  float grad_scale;  // the gradient is multiplied by this first (1 = as it is)
  int zero_grad;     // write 0 into the gradient after reading it
};

__device__ __forceinline__ void adamw_element(float& w, float& g, float& m, float& v,
                                              const AdamWArgs& a) {
  const float grad = a.grad_scale == 1.0f ? g : __fmul_rn(g, a.grad_scale);
  if (a.zero_grad) g = 0.0f;
  w = __fsub_rn(w, __fmul_rn(__fmul_rn(w, a.lr), a.weight_decay));
  m = __fmaf_rn(a.one_minus_beta1, grad, __fmul_rn(m, a.beta1));
  v = __fmaf_rn(__fmul_rn(a.one_minus_beta2, grad), grad, __fmul_rn(v, a.beta2));
  const float denom = __fadd_rn(__fsqrt_rn(v), a.eps);
  w = __fsub_rn(w, __fdiv_rn(__fmul_rn(m, a.lr_corrected), denom));
}

// Four elements per thread and iteration where every array is 16-byte aligned.
__global__ void adamw_vec4(float4* __restrict__ w, float4* __restrict__ g, float4* __restrict__ m,
                           float4* __restrict__ v, int64_t n4, AdamWArgs a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
       i += (int64_t)gridDim.x * blockDim.x) {
    float4 W = w[i], G = g[i], M = m[i], V = v[i];
    adamw_element(W.x, G.x, M.x, V.x, a);
    adamw_element(W.y, G.y, M.y, V.y, a);
    adamw_element(W.z, G.z, M.z, V.z, a);
    adamw_element(W.w, G.w, M.w, V.w, a);
    w[i] = W;
    m[i] = M;
    v[i] = V;
    if (a.zero_grad) g[i] = G;
  }
}

__global__ void adamw_scalar(float* __restrict__ w, float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t begin, int64_t n, AdamWArgs a) {
  for (int64_t i = begin + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float W = w[i], G = g[i], M = m[i], V = v[i];
    adamw_element(W, G, M, V, a);
    w[i] = W;
    m[i] = M;
    v[i] = V;
    if (a.zero_grad) g[i] = G;
  }
}

void require_finite(const char* name, float x) {
  if (!std::isfinite(x)) fail(NEP_ERR_INVALID_ARGUMENT, name, "=", x, " is not finite");
}

unsigned grid_for(int64_t items, int threads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return (unsigned)(blocks < 65535 ? (blocks < 1 ? 1 : blocks) : 65535);
}

}  // namespace

NEP_CUDA_EXPORT int32_t nep_cuda_adamw_f32(int32_t device, int64_t weight, int64_t grad,
                                           int64_t mean, int64_t variance, int64_t n, float lr,
                                           float lr_corrected, float weight_decay, float beta1,
                                           float beta2, float eps, float grad_scale,
                                           int32_t zero_grad, int64_t stream, char* err,
                                           int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (n < 0) fail(NEP_ERR_INVALID_ARGUMENT, "n=", n, " is negative");
    if (n == 0) return;
    if (weight == 0 || grad == 0 || mean == 0 || variance == 0)
      fail(NEP_ERR_INVALID_ARGUMENT,
           "weight, grad, mean and variance must be device addresses (one is null) for n=", n);
    if (weight == grad || weight == mean || weight == variance || grad == mean ||
        grad == variance || mean == variance)
      fail(NEP_ERR_INVALID_ARGUMENT,
           "weight, grad, mean and variance must be four different arrays");
    require_finite("lr", lr);
    require_finite("lr_corrected", lr_corrected);
    require_finite("weight_decay", weight_decay);
    require_finite("eps", eps);
    require_finite("grad_scale", grad_scale);
    if (!(beta1 >= 0.0f && beta1 < 1.0f))
      fail(NEP_ERR_INVALID_ARGUMENT, "beta1=", beta1, " is outside [0, 1)");
    if (!(beta2 >= 0.0f && beta2 < 1.0f))
      fail(NEP_ERR_INVALID_ARGUMENT, "beta2=", beta2, " is outside [0, 1)");
    const int count = nep_cuda_device_count();
    if (device < 0 || device >= count)
      fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", count,
           ") (CUDA devices visible)");
    DeviceGuard guard(device);
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, s);
    const long long bytes = (long long)n * 4;
    check("weight", weight, bytes);
    check("grad", grad, bytes);
    check("mean", mean, bytes);
    check("variance", variance, bytes);
    AdamWArgs a{lr,    lr_corrected, weight_decay, beta1,      1.0f - beta1,
                beta2, 1.0f - beta2, eps,          grad_scale, zero_grad != 0};
    float* W = reinterpret_cast<float*>(weight);
    float* G = reinterpret_cast<float*>(grad);
    float* M = reinterpret_cast<float*>(mean);
    float* V = reinterpret_cast<float*>(variance);
    constexpr int kThreads = 256;
    const bool aligned = ((weight | grad | mean | variance) & 15) == 0;
    int64_t done = 0;
    if (aligned && n >= 4) {
      const int64_t n4 = n / 4;
      adamw_vec4<<<grid_for(n4, kThreads), kThreads, 0, s>>>(
          reinterpret_cast<float4*>(W), reinterpret_cast<float4*>(G), reinterpret_cast<float4*>(M),
          reinterpret_cast<float4*>(V), n4, a);
      check_cuda(cudaGetLastError(), "AdamW kernel launch");
      done = n4 * 4;
    }
    if (done < n) {
      adamw_scalar<<<grid_for(n - done, kThreads), kThreads, 0, s>>>(W, G, M, V, done, n, a);
      check_cuda(cudaGetLastError(), "AdamW kernel launch");
    }
  });
}
