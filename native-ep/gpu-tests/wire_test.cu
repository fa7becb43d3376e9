// GPU test of the wire encoders and decoders themselves (src/main/native/cuda/wire.cuh), one
// process on GPU 0, and of DeviceGuard's context handling (src/main/native/cuda/host_utils.h).
//
//   wire_test [--probe-gpu]   exit 0: all checks pass; 1: a failure; 77: no GPU
//
// Wires: rows holding NaN of either sign and several payloads, +-Inf, huge, subnormal and zero
// values next to ordinary ones, in full and partial scale groups, go through encode8 + store_wire8
// (the kernels' own functions, one warp a row) for BF16, FP8, MXFP8 and the low-latency FP8 with
// power-of-two scales; the bytes must equal the CPU codec's (nep_encode_rows; codec_kernels.h's
// encode_fp8_blocks with ll_codec.cpp's scale rule for the power-of-two wire) bit for bit. The CPU
// codec's bytes then go through load_wire8 + decode8 and must equal nep_decode_rows (NaN where it
// is NaN, every other value bit for bit).
//
// DeviceGuard: a thread with no current context that calls entry points on device 0 (and, with two
// GPUs, on device 1) still has no current context afterwards; a thread whose current context is
// device 0's gets that context back after a call on device 1; a call on device 1 from a thread on
// the default device creates no context on device 0. This runs first, before the process touches
// device 0.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "codec.h"
#include "codec_kernels.h"
#include "cuda/ep_common.cuh"
#include "cuda/wire.cuh"
#include "gpu_common.h"
#include "nativeep/c_api.h"
#include "nativeep/cuda_api.h"

using namespace nepgpu;

namespace {

int g_fail = 0;
long g_checks = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (ok) return;
  ++g_fail;
  if (g_fail <= 40) std::printf("FAIL %s\n", what.c_str());
}

// ---- DeviceGuard -------------------------------------------------------------------------------

using CtxGetCurrent = int (*)(void** ctx);
using PrimaryCtxGetState = int (*)(int dev, unsigned int* flags, int* active);

template <class Fn>
Fn driver_fn(const char* name) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  cuda_ok(cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q), name);
  if (q != cudaDriverEntryPointSuccess) throw std::runtime_error(std::string("no driver ") + name);
  return reinterpret_cast<Fn>(p);
}

// nep_cuda_malloc + nep_cuda_free on `device` (both run under a DeviceGuard).
void guarded_calls(int device) {
  Err e;
  int64_t addr = 0;
  nep_ok(nep_cuda_malloc(device, 4096, &addr, e.msg, sizeof(e.msg)), e, "nep_cuda_malloc");
  nep_ok(nep_cuda_free(device, addr, e.msg, sizeof(e.msg)), e, "nep_cuda_free");
}

void check_device_guard(int devices) {
  const auto get_ctx = driver_fn<CtxGetCurrent>("cuCtxGetCurrent");
  const auto primary_state = driver_fn<PrimaryCtxGetState>("cuDevicePrimaryCtxGetState");
  auto primary_active = [&](int dev) {
    unsigned int flags = 0;
    int active = -1;
    return primary_state(dev, &flags, &active) == 0 ? active : -1;
  };
  // With two GPUs: a thread on the default device (no context anywhere yet) works on device 1;
  // device 0 must not get a context from it.
  if (devices >= 2) {
    const int before = primary_active(0);
    std::thread([&] {
      try {
        guarded_calls(1);
        void* ctx = reinterpret_cast<void*>(1);
        check(get_ctx(&ctx) == 0 && ctx == nullptr,
              "a thread without a context has one after a call on device 1");
      } catch (const std::exception& ex) {
        check(false, std::string("device guard, device 1: ") + ex.what());
      }
    }).join();
    check(before != 0 || primary_active(0) == 0,
          "a call on device 1 created a context on device 0 (primary context active " +
              std::to_string(primary_active(0)) + ")");
  }
  // A thread with no current context: none again after calls on device 0 (the device it defaults
  // to, where the runtime makes a context current for the work itself).
  std::thread([&] {
    try {
      void* ctx = reinterpret_cast<void*>(1);
      check(get_ctx(&ctx) == 0 && ctx == nullptr, "a fresh thread already has a current context");
      guarded_calls(0);
      ctx = reinterpret_cast<void*>(1);
      check(get_ctx(&ctx) == 0 && ctx == nullptr,
            "a thread without a context has one after a call on device 0");
    } catch (const std::exception& ex) {
      check(false, std::string("device guard, device 0: ") + ex.what());
    }
  }).join();
  // A thread whose current context is device 0's primary context gets exactly it back.
  std::thread([&] {
    try {
      cuda_ok(cudaSetDevice(0), "cudaSetDevice(0)");
      cuda_ok(cudaFree(nullptr), "cudaFree(nullptr)");
      void* mine = nullptr;
      check(get_ctx(&mine) == 0 && mine != nullptr, "cudaSetDevice(0) left no current context");
      guarded_calls(devices >= 2 ? 1 : 0);
      void* after = nullptr;
      check(get_ctx(&after) == 0 && after == mine,
            "the thread's current context changed across a guarded call");
    } catch (const std::exception& ex) {
      check(false, std::string("device guard, context kept: ") + ex.what());
    }
  }).join();
}

// ---- Wires -------------------------------------------------------------------------------------

// One warp a row, as the dispatch and low-latency kernels encode: lanes past the row end pass
// zeros.
template <int WIRE, bool kPow2>
__global__ void encode_rows(const float* x, long long H, uint8_t* out, long long row_bytes) {
  const long long r = blockIdx.x;
  const int lane = threadIdx.x;
  for (long long c0 = 0; c0 < H; c0 += nep::cuda::kWarpChannels) {
    const long long ch = c0 + lane * nep::cuda::kLaneChannels;
    const bool valid = ch < H;
    float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (valid)
      for (int i = 0; i < 8; ++i) v[i] = x[r * H + ch + i];
    nep::cuda::Enc8 e;
    if constexpr (kPow2) e = nep::cuda::encode8_fp8_pow2(v);
    else e = nep::cuda::encode8<WIRE>(v);
    if (valid) nep::cuda::store_wire8<WIRE>(out + r * row_bytes, H, ch, lane, e);
  }
}

template <int WIRE>
__global__ void decode_rows(const uint8_t* in, long long H, long long row_bytes, float* out) {
  const long long r = blockIdx.x;
  for (long long ch = threadIdx.x * nep::cuda::kLaneChannels; ch < H;
       ch += 32 * nep::cuda::kLaneChannels) {
    float v[8];
    nep::cuda::decode8<WIRE>(nep::cuda::load_wire8<WIRE>(in + r * row_bytes, H, ch), v);
    for (int i = 0; i < 8; ++i) out[r * H + ch + i] = v[i];
  }
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Rows of ordinary values at scales from 2^-120 to 2^80 with special values mixed in; some rows
// have a whole group of specials, one is all zeros, one all NaN and Inf, one tiny values beside
// Inf.
std::vector<float> make_rows(int64_t rows, int64_t H, uint32_t seed) {
  static const uint32_t specials[] = {
      0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFFBFFFFFu, 0x7FFFFFFFu,
      0xFFFFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00800000u,
      0x00000000u, 0x80000000u, 0x43E00000u, 0x43E80000u, 0x3B000000u, 0x3A800000u};
  std::mt19937 rng(seed);
  std::vector<float> x(static_cast<size_t>(rows * H));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = &x[size_t(r * H)];
    const int e = int(rng() % 200) - 120;
    for (int64_t c = 0; c < H; ++c) row[c] = std::ldexp(float(int(rng() % 2001) - 1000) / 1e3f, e);
    const int n = int(rng() % 6);
    for (int k = 0; k < n; ++k) row[rng() % size_t(H)] = from_bits(specials[rng() % 20]);
    if (r % 8 == 1)
      for (int64_t c = 0; c < std::min<int64_t>(H, 32); ++c)
        row[c] = from_bits(specials[rng() % 8]);
    if (r == 2)
      for (int64_t c = 0; c < H; ++c) row[c] = 0.0f;
    if (r == 3)
      for (int64_t c = 0; c < H; ++c) row[c] = from_bits(specials[c % 8]);
    if (r == 4)
      for (int64_t c = 0; c < H; ++c) row[c] = c % 5 == 0 ? from_bits(0xFF800000u) : 1e-42f;
  }
  return x;
}

// ll_codec.cpp's FP8 row with power-of-two scales, from the codec's block loop.
void cpu_fp8_pow2_row(const float* x, int64_t H, uint8_t* out) {
  nep::encode_fp8_blocks(x, H, out, [](float amax, float& scale, float& inv_scale) {
    const uint32_t b = nep::float_bits(amax / 448.0f);
    int32_t e = int32_t(b >> 23) - 127;
    if ((b & 0x7FFFFFu) != 0) ++e;
    scale = nep::pow2f(e);
    inv_scale = nep::pow2f(-e);
  });
}

const char* wire_label(int wire, bool pow2) {
  return pow2                    ? "fp8 (power-of-two scales)"
         : wire == NEP_WIRE_BF16 ? "bf16"
         : wire == NEP_WIRE_FP8  ? "fp8"
                                 : "mxfp8";
}

// The GPU slot layout of a wire row against the CPU codec's (codec.h): the same elements, but
// the FP8 / MXFP8 scales start at wire_scale_offset (H rounded up to 16) instead of right after
// the H elements, and the slot is padded to 16 bytes.
int64_t gpu_row_stride(int wire, int64_t H) {
  return (nep::cuda::wire_row_bytes(wire, H) + 15) / 16 * 16;
}
void gpu_to_codec_row(int wire, int64_t H, const uint8_t* gpu, uint8_t* codec) {
  const int64_t rb = nep_wire_row_bytes(wire, H);
  if (wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8) {
    std::memcpy(codec, gpu, size_t(rb));
    return;
  }
  std::memcpy(codec, gpu, size_t(H));
  std::memcpy(codec + H, gpu + nep::cuda::wire_scale_offset(wire, H), size_t(rb - H));
}
void codec_to_gpu_row(int wire, int64_t H, const uint8_t* codec, uint8_t* gpu) {
  const int64_t rb = nep_wire_row_bytes(wire, H);
  if (wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8) {
    std::memcpy(gpu, codec, size_t(rb));
    return;
  }
  std::memcpy(gpu, codec, size_t(H));
  std::memcpy(gpu + nep::cuda::wire_scale_offset(wire, H), codec + H, size_t(rb - H));
}

template <int WIRE>
void check_decode(const std::string& what, int64_t rows, int64_t H,
                  const std::vector<uint8_t>& want, std::vector<uint8_t>& strided, DevMem& dw,
                  DevMem& df);

template <int WIRE, bool kPow2>
void check_wire(int64_t rows, int64_t H, uint32_t seed) {
  const std::string what = std::string(wire_label(WIRE, kPow2)) + " hidden " + std::to_string(H);
  const int64_t rb = nep_wire_row_bytes(WIRE, H);
  const std::vector<float> x = make_rows(rows, H, seed);
  std::vector<uint8_t> want(static_cast<size_t>(rows * rb)), got(want.size());
  Err e;
  if (kPow2) {
    for (int64_t r = 0; r < rows; ++r)
      cpu_fp8_pow2_row(&x[size_t(r * H)], H, &want[size_t(r * rb)]);
  } else {
    nep_ok(nep_encode_rows(WIRE, reinterpret_cast<int64_t>(x.data()), rows, H,
                           reinterpret_cast<int64_t>(want.data()), e.msg, sizeof(e.msg)),
           e, "nep_encode_rows");
  }
  // Rows at 16-byte strides on the GPU, as the kernels' slots are (vector stores and loads), in
  // the GPU slot layout: elements, then the scales from wire_scale_offset (H rounded up to 16),
  // where the CPU codec puts them right after the H elements.
  const int64_t stride = gpu_row_stride(WIRE, H);
  std::vector<uint8_t> strided(static_cast<size_t>(rows * stride));
  DevMem dx(x.size() * 4), dw(strided.size()), df(x.size() * 4);
  dx.upload(x.data(), x.size() * 4);
  dw.poison(0xA5);
  encode_rows<WIRE, kPow2><<<unsigned(rows), 32>>>(static_cast<const float*>(dx.get()), H,
                                                   static_cast<uint8_t*>(dw.get()), stride);
  cuda_ok(cudaGetLastError(), "encode_rows launch");
  cuda_ok(cudaDeviceSynchronize(), "encode_rows");
  dw.download(strided.data(), strided.size());
  for (int64_t r = 0; r < rows; ++r)
    gpu_to_codec_row(WIRE, H, &strided[size_t(r * stride)], &got[size_t(r * rb)]);
  long bad = 0;
  std::string first;
  for (int64_t i = 0; i < int64_t(want.size()); ++i) {
    if (want[size_t(i)] == got[size_t(i)]) continue;
    if (bad++ == 0) {
      const int64_t r = i / rb, b = i % rb;
      char msg[200];
      std::snprintf(msg, sizeof msg, "; first row %lld byte %lld: 0x%02x, CPU 0x%02x%s%08x",
                    (long long)r, (long long)b, got[size_t(i)], want[size_t(i)],
                    b < H ? ", input bits 0x" : " (a scale)",
                    b < H ? bits(x[size_t(r * H + b)]) : 0u);
      first = msg;
    }
  }
  check(bad == 0,
        what + " encode: " + std::to_string(bad) + " bytes differ from the CPU codec" + first);
  if constexpr (!kPow2) check_decode<WIRE>(what, rows, H, want, strided, dw, df);  // pow2: FP8's
}

// The CPU codec's bytes (want) through load_wire8 + decode8, against nep_decode_rows.
template <int WIRE>
void check_decode(const std::string& what, int64_t rows, int64_t H,
                  const std::vector<uint8_t>& want, std::vector<uint8_t>& strided, DevMem& dw,
                  DevMem& df) {
  const int64_t rb = nep_wire_row_bytes(WIRE, H), stride = gpu_row_stride(WIRE, H);
  Err e;
  long bad = 0;
  std::string first;
  for (int64_t r = 0; r < rows; ++r)
    codec_to_gpu_row(WIRE, H, &want[size_t(r * rb)], &strided[size_t(r * stride)]);
  dw.upload(strided.data(), strided.size());
  decode_rows<WIRE><<<unsigned(rows), 32>>>(static_cast<const uint8_t*>(dw.get()), H, stride,
                                            static_cast<float*>(df.get()));
  cuda_ok(cudaGetLastError(), "decode_rows launch");
  cuda_ok(cudaDeviceSynchronize(), "decode_rows");
  const size_t n = static_cast<size_t>(rows * H);
  std::vector<float> dec_want(n), dec_got(n);
  nep_ok(nep_decode_rows(WIRE, reinterpret_cast<int64_t>(want.data()), rows, H,
                         reinterpret_cast<int64_t>(dec_want.data()), e.msg, sizeof(e.msg)),
         e, "nep_decode_rows");
  df.download(dec_got.data(), dec_got.size() * 4);
  for (size_t i = 0; i < n; ++i) {
    const bool same =
        std::isnan(dec_want[i]) ? std::isnan(dec_got[i]) : bits(dec_want[i]) == bits(dec_got[i]);
    if (same) continue;
    if (bad++ == 0) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "; first at %zu: 0x%08x, CPU 0x%08x", i, bits(dec_got[i]),
                    bits(dec_want[i]));
      first = msg;
    }
  }
  check(bad == 0,
        what + " decode: " + std::to_string(bad) + " values differ from the CPU codec" + first);
}

void check_wires() {
  const int64_t hiddens[] = {40, 296, 1024};
  uint32_t seed = 1;
  for (const int64_t H : hiddens) {
    check_wire<NEP_WIRE_BF16, false>(64, H, seed++);
    check_wire<NEP_WIRE_FP8, false>(64, H, seed++);
    check_wire<NEP_WIRE_MXFP8, false>(64, H, seed++);
    check_wire<NEP_WIRE_FP8, true>(64, H, seed++);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!gpu_present("wire_test")) return kSkipNoGpu;
  if (argc > 1 && std::strcmp(argv[1], "--probe-gpu") == 0) return 0;  // sanitize.sh asks first
  try {
    int devices = 0;
    cuda_ok(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    check_device_guard(devices);
    cuda_ok(cudaSetDevice(0), "cudaSetDevice");
    check_wires();
  } catch (const std::exception& ex) {
    ++g_fail;
    std::printf("FAIL %s\n", ex.what());
  }
  std::printf("wire_test: %ld checks, %s\n", g_checks,
              g_fail == 0 ? "all passed" : (std::to_string(g_fail) + " failures").c_str());
  return g_fail == 0 ? 0 : 1;
}
