// Decoding of wire rows kept by nep_cuda_dispatch_wire: FP8 / MXFP8 rows in the GPU transport's
// layout (e4m3 elements from byte 0, scales at roundup(hidden, 16), rows padded to 16 bytes) into
// float32 rows, one warp per row, with the dispatch kernels' own loader and decoder (wire.cuh), so
// the result is what nep_cuda_dispatch writes for the same rows, bit for bit.
#include "device_utils.cuh"
#include "ep_common.cuh"
#include "host_utils.h"
#include "nativeep/cuda_api.h"
#include "nativeep/export.h"
#include "wire.cuh"

using namespace nep::cuda;

namespace {

constexpr int kDecodeThreads = 256;
constexpr int kDecodeWarps = kDecodeThreads / 32;

template <int WIRE>
__global__ void __launch_bounds__(kDecodeThreads)
    decode_wire_rows_kernel(const uint8_t* in, long long rows, long long hidden, float* out) {
  const int lane = threadIdx.x & 31;
  const long long row_bytes = wire_row_bytes(WIRE, hidden);
  const long long warps = (long long)gridDim.x * kDecodeWarps;
  for (long long r = (long long)blockIdx.x * kDecodeWarps + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const uint8_t* row = in + r * row_bytes;
    uint8_t* out_row = reinterpret_cast<uint8_t*>(out + r * hidden);
    for (long long base = 0; base < hidden; base += kWarpChannels) {
      const long long ch = base + lane * kLaneChannels;
      if (ch < hidden) {
        float v[8];
        decode8<WIRE>(load_wire8<WIRE>(row, hidden, ch), v);
        store_row8(out_row, NEP_DTYPE_FP32, ch, v);
      }
    }
  }
}

}  // namespace

NEP_EXPORT int32_t nep_cuda_decode_wire_rows(int32_t device, int32_t wire, int64_t in, int64_t rows,
                                             int64_t hidden, int64_t row_bytes, int64_t out,
                                             int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8)
      fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire,
           " has no wire rows to decode: only fp8 (2) and mxfp8 (3)");
    if (hidden <= 0 || hidden % 8 != 0 || hidden > (1LL << 40))
      fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden,
           " must be a positive multiple of 8 (a lane's 8 channels; the last scaling block may be "
           "partial, as the GPU dispatch allows)");
    if (rows < 0) fail(NEP_ERR_INVALID_ARGUMENT, "rows=", rows, " must be >= 0");
    if (row_bytes != wire_row_bytes(wire, hidden))
      fail(NEP_ERR_INVALID_ARGUMENT, "row_bytes=", row_bytes,
           " must equal the GPU wire row size of hidden=", hidden, ", ",
           wire_row_bytes(wire, hidden));
    if (rows == 0) return;
    if (in == 0) fail(NEP_ERR_INVALID_ARGUMENT, "in is null with rows=", rows);
    if (out == 0) fail(NEP_ERR_INVALID_ARGUMENT, "out is null with rows=", rows);
    if (in % 16 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "in=", in, " is not 16-byte aligned");
    if (out % 16 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "out=", out, " is not 16-byte aligned");
    DeviceGuard guard(device);
    const long long grid_rows = (rows + kDecodeWarps - 1) / kDecodeWarps;
    const unsigned grid = (unsigned)(grid_rows < 65535 ? grid_rows : 65535);
    cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    const auto* src = reinterpret_cast<const uint8_t*>(in);
    auto* dst = reinterpret_cast<float*>(out);
    if (wire == NEP_WIRE_FP8) {
      decode_wire_rows_kernel<NEP_WIRE_FP8><<<grid, kDecodeThreads, 0, s>>>(src, rows, hidden, dst);
    } else {
      decode_wire_rows_kernel<NEP_WIRE_MXFP8>
          <<<grid, kDecodeThreads, 0, s>>>(src, rows, hidden, dst);
    }
    check_cuda(cudaGetLastError(), "decode_wire_rows kernel launch");
  });
}
