// C ABI of the plug-in's grouped FP8 GEMMs and quantisers (include/nativeep/gemm_api.h): the
// arguments are checked by the rules the CPU path uses (../gemm_args.h), every device span is
// checked against its allocation (device_span.h), then the tier is chosen and the kernels are
// launched on the caller's stream.
#include <cstdlib>
#include <cstring>

#include "device_span.h"
#include "gemm_kernels.h"
#include "host_utils.h"
#include "nativeep/cuda_api.h"
#include "nativeep/export.h"
#include "nativeep/gemm_api.h"

using namespace nep::cuda;
using namespace nep::cuda::gemm;
using nep::require_address;
using nep::gemm::block_of;
using nep::gemm::check_elements;
using nep::gemm::check_format;
using nep::gemm::check_grouped_k;
using nep::gemm::check_grouped_m;
using nep::gemm::check_groups;
using nep::gemm::check_non_negative;
using nep::gemm::check_positive;
using nep::gemm::check_scale_alignment;
using nep::gemm::row_scale_bytes;
using nep::gemm::scale_size;
using nep::gemm::weight_scale_bytes;

namespace {

thread_local int32_t g_last_tier = NEP_GEMM_TIER_NONE;

template <class T>
T* ptr(int64_t address) {
  return reinterpret_cast<T*>(address);
}

// Checks `device` and makes it current; the kernels need compute capability 9.0.
struct DeviceScope {
  DeviceGuard guard;
  int major = 0, minor = 0;
  explicit DeviceScope(int32_t device) : guard(checked(device)) {
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
               "cudaDeviceGetAttribute");
    check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
               "cudaDeviceGetAttribute");
  }
  static int32_t checked(int32_t device) {
    const int count = nep_cuda_device_count();
    if (device < 0 || device >= count)
      fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", count,
           ") (CUDA devices visible)");
    return device;
  }
  void require_fp8_mma() const {
    // FP8 tensor cores start at 8.9, but the plug-in is compiled for sm_90 only
    // (CMAKE_CUDA_ARCHITECTURES): refuse here rather than fail at launch with "no kernel image".
    if (major * 10 + minor < 90)
      fail(NEP_ERR_UNSUPPORTED,
           "FP8 grouped GEMMs need compute capability 9.0 or newer (this build's kernels are "
           "compiled for sm_90); this GPU has ",
           major, ".", minor);
  }
};

// The tier NEP_GEMM_TIER asks for: "auto" (or unset), "mma" or "wgmma".
int32_t requested_tier() {
  const char* env = std::getenv("NEP_GEMM_TIER");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return NEP_GEMM_TIER_NONE;
  if (std::strcmp(env, "mma") == 0) return NEP_GEMM_TIER_MMA;
  if (std::strcmp(env, "wgmma") == 0) return NEP_GEMM_TIER_WGMMA;
  fail(NEP_ERR_INVALID_ARGUMENT, "NEP_GEMM_TIER=", env, " is none of auto, mma, wgmma");
}

// The tier a GEMM runs on. "auto" takes the Hopper tier on compute capability 9.0 wherever it
// can take the call (refusal == nullptr), else the portable tier: the Hopper tier passed every
// gemm_test case on an H100 (2026-12-08, the 16B expert shapes included; native-ep/bench/
// RESULTS.md). "mma" forces the portable tier; "wgmma" forces the Hopper tier and refuses a call
// it cannot take, with the reason.
int32_t choose_tier(const DeviceScope& scope, const char* refusal) {
  const int32_t want = requested_tier();
  const bool hopper = scope.major == 9 && scope.minor == 0;
  if (want == NEP_GEMM_TIER_MMA) return NEP_GEMM_TIER_MMA;
  if (want == NEP_GEMM_TIER_NONE)
    return hopper && refusal == nullptr ? NEP_GEMM_TIER_WGMMA : NEP_GEMM_TIER_MMA;
  if (!hopper)
    fail(NEP_ERR_UNSUPPORTED,
         "NEP_GEMM_TIER=wgmma: the Hopper tier runs on compute capability 9.0 "
         "only; this GPU has ",
         scope.major, ".", scope.minor);
  if (refusal != nullptr) fail(NEP_ERR_UNSUPPORTED, "NEP_GEMM_TIER=wgmma: ", refusal);
  return NEP_GEMM_TIER_WGMMA;
}

}  // namespace

NEP_EXPORT int32_t nep_cuda_gemm_last_tier(void) { return g_last_tier; }

NEP_EXPORT int32_t nep_cuda_gemm_quantize_rows(int32_t device, int32_t format, int64_t x, int64_t m,
                                               int64_t k, int64_t q, int64_t s, int64_t stream,
                                               char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_non_negative("m", m);
    check_positive("k", k);
    check_elements("x", m, k);
    if (m == 0) return;
    require_address(x, "x");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    if ((x & 3) != 0) fail(NEP_ERR_INVALID_ARGUMENT, "x=", x, " is not 4-byte aligned");
    DeviceScope scope(device);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    check("x", x, m * k * 4);
    check("q", q, m * k);
    check("s", s, m * row_scale_bytes(f, k));
    launch_quantize_rows(f, ptr<const float>(x), m, k, ptr<uint8_t>(q), ptr<uint8_t>(s), st);
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_swiglu_quantize_rows(int32_t device, int32_t format, int64_t y,
                                                      int64_t m, int64_t inter, int64_t h_out,
                                                      int64_t q, int64_t s, int64_t stream,
                                                      char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = nep::gemm::check_swiglu(format, y, m, inter, h_out, q, s);
    if (m == 0) return;
    DeviceScope scope(device);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    check("y", y, m * 2 * inter * 4);
    check("h_out", h_out, m * inter * 4);
    check("q", q, m * inter);
    check("s", s, m * row_scale_bytes(f, inter));
    launch_swiglu_quantize_rows(f, ptr<const float>(y), m, inter, ptr<float>(h_out),
                                ptr<uint8_t>(q), ptr<uint8_t>(s), st);
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_dswiglu_quantize_rows(int32_t device, int32_t format, int64_t y,
                                                       int64_t dh, int64_t m, int64_t inter,
                                                       int64_t dy_out, int64_t q, int64_t s,
                                                       int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = nep::gemm::check_dswiglu(format, y, dh, m, inter, dy_out, q, s);
    if (m == 0) return;
    DeviceScope scope(device);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    check("y", y, m * 2 * inter * 4);
    check("dh", dh, m * inter * 4);
    check("dy_out", dy_out, m * 2 * inter * 4);
    check("q", q, m * 2 * inter);
    check("s", s, m * row_scale_bytes(f, 2 * inter));
    launch_dswiglu_quantize_rows(f, ptr<const float>(y), ptr<const float>(dh), m, inter,
                                 ptr<float>(dy_out), ptr<uint8_t>(q), ptr<uint8_t>(s), st);
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_quantize_weights(int32_t device, int32_t format, int64_t w,
                                                  int64_t num_groups, int64_t n, int64_t k,
                                                  int32_t transpose, int64_t q, int64_t s,
                                                  int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_positive("num_groups", num_groups);
    check_positive("n", n);
    check_positive("k", k);
    check_elements("w", num_groups, n, k);
    if (transpose != 0 && transpose != 1)
      fail(NEP_ERR_INVALID_ARGUMENT, "transpose=", transpose, " is neither 0 nor 1");
    require_address(w, "w");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    if ((w & 3) != 0) fail(NEP_ERR_INVALID_ARGUMENT, "w=", w, " is not 4-byte aligned");
    DeviceScope scope(device);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    const int64_t rows = transpose ? k : n, cols = transpose ? n : k;
    check("w", w, num_groups * n * k * 4);
    check("q", q, num_groups * n * k);
    check("s", s, num_groups * weight_scale_bytes(f, rows, cols));
    launch_quantize_weights(f, ptr<const float>(w), num_groups, n, k, transpose == 1,
                            ptr<uint8_t>(q), ptr<uint8_t>(s), st);
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_quantize_rows_t_grouped(int32_t device, int32_t format, int64_t x,
                                                         int64_t m, int64_t c, int32_t num_groups,
                                                         const int64_t* group_offsets, int64_t q,
                                                         int64_t s, int64_t stream, char* err,
                                                         int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_non_negative("m", m);
    check_positive("c", c);
    check_elements("x", m, c);
    const nep::gemm::Groups g = check_groups(num_groups, group_offsets, m, "m");
    check_elements("q", c, g.padded_rows());
    if (g.padded_rows() == 0) return;
    require_address(x, "x");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    if ((x & 3) != 0) fail(NEP_ERR_INVALID_ARGUMENT, "x=", x, " is not 4-byte aligned");
    DeviceScope scope(device);
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    check("x", x, g.offsets[num_groups] * c * 4);
    check("q", q, c * g.padded_rows());
    check("s", s, c * g.padded_rows() / block_of(f) * scale_size(f));
    launch_quantize_rows_t_grouped(f, ptr<const float>(x), c, g, ptr<uint8_t>(q), ptr<uint8_t>(s),
                                   st);
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_grouped_m(int32_t device, int32_t format, int32_t num_groups,
                                           int64_t n, int64_t k, int64_t m,
                                           const int64_t* group_offsets, int64_t a, int64_t lda,
                                           int64_t sa, int64_t ldsa, int64_t b, int64_t sb,
                                           int64_t c, int32_t out_dtype, int64_t stream, char* err,
                                           int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const GroupedM args = check_grouped_m(format, num_groups, n, k, m, group_offsets, a, lda, sa,
                                          ldsa, b, sb, c, out_dtype);
    DeviceScope scope(device);
    scope.require_fp8_mma();
    const int32_t tier = choose_tier(scope, wgmma_refusal_m(args, ptr<void>(a), ptr<void>(b)));
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    const int64_t first = args.groups.offsets[0], end = args.groups.offsets[num_groups];
    if (end > first) {
      check("a", a + first * args.lda, (end - 1 - first) * args.lda + k);
      check("sa", sa + first * args.ldsa,
            (end - 1 - first) * args.ldsa + row_scale_bytes(args.format, k));
      check("c", c, end * n * (out_dtype == NEP_GEMM_OUT_BF16 ? 2 : 4));
    }
    check("b", b, num_groups * n * k);
    check("sb", sb, num_groups * weight_scale_bytes(args.format, n, k));
    g_last_tier = tier;
    if (tier == NEP_GEMM_TIER_WGMMA) {
      launch_wgmma_grouped_m(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa),
                             ptr<const uint8_t>(b), ptr<const uint8_t>(sb), ptr<void>(c), st);
    } else {
      launch_mma_grouped_m(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa),
                           ptr<const uint8_t>(b), ptr<const uint8_t>(sb), ptr<void>(c), st);
    }
  });
}

NEP_EXPORT int32_t nep_cuda_gemm_grouped_k(int32_t device, int32_t format, int32_t num_groups,
                                           int64_t n, int64_t k, const int64_t* group_offsets,
                                           int64_t a, int64_t sa, int64_t b, int64_t sb, int64_t c,
                                           int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const GroupedK args = check_grouped_k(format, num_groups, n, k, group_offsets, a, sa, b, sb, c);
    DeviceScope scope(device);
    scope.require_fp8_mma();
    const int32_t tier = choose_tier(scope, wgmma_refusal_k(args, ptr<void>(a), ptr<void>(b)));
    cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    const SpanChecker check(device, st);
    const int64_t mp = args.groups.padded_rows();
    const int64_t scale_row = mp / block_of(args.format) * scale_size(args.format);
    check("a", a, n * mp);
    check("sa", sa, n * scale_row);
    check("b", b, k * mp);
    check("sb", sb, k * scale_row);
    check("c", c, num_groups * n * k * 4);
    g_last_tier = tier;
    if (tier == NEP_GEMM_TIER_WGMMA) {
      launch_wgmma_grouped_k(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa),
                             ptr<const uint8_t>(b), ptr<const uint8_t>(sb), ptr<float>(c), st);
    } else {
      launch_mma_grouped_k(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa),
                           ptr<const uint8_t>(b), ptr<const uint8_t>(sb), ptr<float>(c), st);
    }
  });
}
