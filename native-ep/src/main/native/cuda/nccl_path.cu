// Kernels of the nccl transport: pack rows into staging buffers in the wire format before NCCL's
// grouped send/recv moves them, and unpack / reduce them after. One warp per row (or token); the
// codecs are those of the cuda-ipc kernels (wire.cuh), so both transports give the same bytes.
#include "device_utils.cuh"
#include "kernels.h"
#include "wire.cuh"

namespace nep {
namespace cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kStageThreads = 256;
constexpr int kStageWarps = kStageThreads / 32;

__device__ __forceinline__ long long warp_id_global() {
  return (long long)blockIdx.x * kStageWarps + (threadIdx.x >> 5);
}
__device__ __forceinline__ long long warps_total() { return (long long)gridDim.x * kStageWarps; }

template <int WIRE>
__global__ void __launch_bounds__(kStageThreads) dispatch_pack_kernel(const NcclStageArgs a) {
  const int lane = threadIdx.x & 31;
  const int W = a.world, K = a.num_topk;
  const long long H = a.hidden;
  const bool has_topk = a.topk_idx != nullptr, has_w = a.topk_weights != nullptr;
  const int xb = a.in_dtype == NEP_DTYPE_BF16 ? 2 : 4;
  for (long long t = warp_id_global(); t < a.num_tokens; t += warps_total()) {
    int sp = -1;
    if (lane < W) sp = send_pos(a.route, W, t, lane);
    const unsigned dests = __ballot_sync(kFull, sp >= 0);
    if (dests == 0) continue;
    int expert = -1;
    float weight = 0.f;
    if (lane < K) {
      if (has_topk) expert = (int)a.topk_idx[t * K + lane];
      if (has_w) weight = a.topk_weights[t * K + lane];
    }
    int sps[kMaxRanks];
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) sps[r] = __shfl_sync(kFull, sp, r);
    for (unsigned m = dests; m != 0; m &= m - 1) {
      const int r = __ffs(m) - 1;
      const int spr = __shfl_sync(kFull, sp, r);
      uint8_t* slot = a.send_stage + (a.send_off[r] + spr) * a.slot_bytes;
      if (lane == 0)
        *reinterpret_cast<int4*>(slot) =
            make_int4((int)t, spr, (has_topk ? 1 : 0) | (has_w ? 2 : 0), 0);
      if (lane < K) {
        if (has_topk) reinterpret_cast<int*>(slot + 16)[lane] = expert;
        if (has_w) reinterpret_cast<float*>(slot + 16 + 4 * K)[lane] = weight;
      }
    }
    const uint8_t* xrow = static_cast<const uint8_t*>(a.x) + t * H * xb;
    for (long long base = 0; base < H; base += kWarpChannels) {
      const long long ch = base + lane * kLaneChannels;
      Raw8 raw;
      raw.a = raw.b = make_uint4(0, 0, 0, 0);
      if (ch < H) raw = load_row8(xrow, a.in_dtype, ch);
      float v[8];
      raw_to_f32(raw, a.in_dtype, v);
      const Enc8 e = encode8<WIRE>(v);  // every lane (shuffles)
      if (ch < H) {
#pragma unroll
        for (int r = 0; r < kMaxRanks; ++r)
          if ((dests >> r) & 1u)
            store_wire8<WIRE>(
                a.send_stage + (a.send_off[r] + sps[r]) * a.slot_bytes + a.payload_offset, H, ch,
                lane, e);
      }
    }
  }
}

template <int WIRE>
__global__ void __launch_bounds__(kStageThreads) dispatch_unpack_kernel(const NcclStageArgs a) {
  const int lane = threadIdx.x & 31;
  const int K = a.num_topk, me = a.rank, El = a.local_experts;
  const long long H = a.hidden;
  const bool raw = a.out_dtype == kDtypeWireRows;  // keep the wire rows as they travelled
  const long long ob = raw ? wire_row_bytes(WIRE, H) : H * (a.out_dtype == NEP_DTYPE_BF16 ? 2 : 4);
  for (long long i = warp_id_global(); i < a.num_recv; i += warps_total()) {
    const uint8_t* slot = a.recv_stage + i * a.slot_bytes;
    const int hdr = lane < 3 ? reinterpret_cast<const int*>(slot)[lane] : 0;
    const int tsrc = __shfl_sync(kFull, hdr, 0);
    const int flags = __shfl_sync(kFull, hdr, 2);
    if (lane == 0) a.recv_src_idx[i] = tsrc;
    if (lane < K && a.recv_topk_idx != nullptr) {
      const int expert = (flags & 1) ? reinterpret_cast<const int*>(slot + 16)[lane] : -1;
      const bool local = expert >= me * El && expert < (me + 1) * El;
      a.recv_topk_idx[i * K + lane] = local ? expert - me * El : -1;
      if (a.recv_topk_weights != nullptr)
        a.recv_topk_weights[i * K + lane] =
            local && (flags & 2) ? reinterpret_cast<const float*>(slot + 16 + 4 * K)[lane] : 0.f;
    }
    const uint8_t* payload = slot + a.payload_offset;
    uint8_t* out_row = static_cast<uint8_t*>(a.recv_x) + i * ob;
    for (long long base = 0; base < H; base += kWarpChannels) {
      const long long ch = base + lane * kLaneChannels;
      if (ch < H && raw) {
        store_wire8<WIRE>(out_row, H, ch, lane, load_wire8<WIRE>(payload, H, ch));
      } else if (ch < H) {
        const Enc8 e = load_wire8<WIRE>(payload, H, ch);
        float v[8];
        decode8<WIRE>(e, v);
        store_row8(out_row, a.out_dtype, ch, v);
      }
    }
  }
}

template <int WIRE>
__global__ void __launch_bounds__(kStageThreads) combine_pack_kernel(const NcclStageArgs a) {
  const int lane = threadIdx.x & 31;
  const int K = a.num_topk;
  const long long H = a.hidden;
  const int yb = a.in_dtype == NEP_DTYPE_BF16 ? 2 : 4;
  for (long long i = warp_id_global(); i < a.num_recv; i += warps_total()) {
    uint8_t* slot = a.send_stage + i * a.slot_bytes;
    if (lane < K)
      reinterpret_cast<float*>(slot)[lane] =
          a.y_weights != nullptr ? a.y_weights[i * K + lane] : 0.f;
    const uint8_t* yrow = static_cast<const uint8_t*>(a.y) + i * H * yb;
    for (long long base = 0; base < H; base += kWarpChannels) {
      const long long ch = base + lane * kLaneChannels;
      if (ch < H) {  // BF16 / FP32 wire only: no shuffles in encode8
        const Raw8 raw = load_row8(yrow, a.in_dtype, ch);
        float v[8];
        raw_to_f32(raw, a.in_dtype, v);
        store_wire8<WIRE>(slot + a.payload_offset, H, ch, lane, encode8<WIRE>(v));
      }
    }
  }
}

template <int WIRE>
__global__ void __launch_bounds__(kStageThreads) combine_reduce_kernel(const NcclStageArgs a) {
  const int lane = threadIdx.x & 31;
  const int W = a.world, K = a.num_topk;
  const long long H = a.hidden;
  const int ob = a.out_dtype == NEP_DTYPE_BF16 ? 2 : 4;
  for (long long t = warp_id_global(); t < a.num_tokens; t += warps_total()) {
    int sp = -1;
    if (lane < W) sp = send_pos(a.route, W, t, lane);
    const unsigned mask = __ballot_sync(kFull, sp >= 0);
    int sps[kMaxRanks];
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) sps[r] = __shfl_sync(kFull, sp, r);
    if (a.out_weights != nullptr && lane < K) {
      float w = 0.f;
#pragma unroll
      for (int r = 0; r < kMaxRanks; ++r)
        if ((mask >> r) & 1u)
          w += reinterpret_cast<const float*>(a.recv_stage +
                                              (a.send_off[r] + sps[r]) * a.slot_bytes)[lane];
      a.out_weights[t * K + lane] = w;
    }
    uint8_t* out_row = static_cast<uint8_t*>(a.out) + t * H * ob;
    for (long long base = 0; base < H; base += kWarpChannels) {
      const long long ch = base + lane * kLaneChannels;
      if (ch >= H) continue;
      float acc[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = 0.f;
#pragma unroll
      for (int r = 0; r < kMaxRanks; ++r) {
        if (!((mask >> r) & 1u)) continue;
        const uint8_t* payload =
            a.recv_stage + (a.send_off[r] + sps[r]) * a.slot_bytes + a.payload_offset;
        float v[8];
        decode8<WIRE>(load_wire8<WIRE>(payload, H, ch), v);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] += v[i];
      }
      store_row8(out_row, a.out_dtype, ch, acc);
    }
  }
}

unsigned grid_for(long long rows) {
  const long long blocks = (rows + kStageWarps - 1) / kStageWarps;
  return (unsigned)(blocks < 1 ? 1 : blocks > 4096 ? 4096 : blocks);
}

}  // namespace

#define NEP_NCCL_LAUNCH(kernel, rows)                                            \
  do {                                                                           \
    if ((rows) <= 0) return cudaSuccess;                                         \
    switch (wire) {                                                              \
      case NEP_WIRE_FP32:                                                        \
        kernel<NEP_WIRE_FP32><<<grid_for(rows), kStageThreads, 0, stream>>>(a);  \
        break;                                                                   \
      case NEP_WIRE_BF16:                                                        \
        kernel<NEP_WIRE_BF16><<<grid_for(rows), kStageThreads, 0, stream>>>(a);  \
        break;                                                                   \
      case NEP_WIRE_FP8:                                                         \
        kernel<NEP_WIRE_FP8><<<grid_for(rows), kStageThreads, 0, stream>>>(a);   \
        break;                                                                   \
      case NEP_WIRE_MXFP8:                                                       \
        kernel<NEP_WIRE_MXFP8><<<grid_for(rows), kStageThreads, 0, stream>>>(a); \
        break;                                                                   \
      default: return cudaErrorInvalidValue;                                     \
    }                                                                            \
    return cudaGetLastError();                                                   \
  } while (0)

#define NEP_NCCL_LAUNCH_COMBINE(kernel, rows)                                   \
  do {                                                                          \
    if ((rows) <= 0) return cudaSuccess;                                        \
    switch (wire) {                                                             \
      case NEP_WIRE_FP32:                                                       \
        kernel<NEP_WIRE_FP32><<<grid_for(rows), kStageThreads, 0, stream>>>(a); \
        break;                                                                  \
      case NEP_WIRE_BF16:                                                       \
        kernel<NEP_WIRE_BF16><<<grid_for(rows), kStageThreads, 0, stream>>>(a); \
        break;                                                                  \
      default: return cudaErrorInvalidValue;                                    \
    }                                                                           \
    return cudaGetLastError();                                                  \
  } while (0)

cudaError_t launch_nccl_dispatch_pack(int wire, const NcclStageArgs& a, cudaStream_t stream) {
  NEP_NCCL_LAUNCH(dispatch_pack_kernel, a.num_tokens);
}
cudaError_t launch_nccl_dispatch_unpack(int wire, const NcclStageArgs& a, cudaStream_t stream) {
  NEP_NCCL_LAUNCH(dispatch_unpack_kernel, a.num_recv);
}
cudaError_t launch_nccl_combine_pack(int wire, const NcclStageArgs& a, cudaStream_t stream) {
  NEP_NCCL_LAUNCH_COMBINE(combine_pack_kernel, a.num_recv);
}
cudaError_t launch_nccl_combine_reduce(int wire, const NcclStageArgs& a, cudaStream_t stream) {
  NEP_NCCL_LAUNCH_COMBINE(combine_reduce_kernel, a.num_tokens);
}

}  // namespace cuda
}  // namespace nep
