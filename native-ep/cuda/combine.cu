// Combine kernel of the cuda-ipc transport: the reverse of dispatch.
//
// One block per channel c. Half of the warps send: one group per peer s walks the rows this rank
// received from s whose source token lies in s's channel c (a contiguous run of rows, found by
// binary search in recv_src_idx) and writes each, cast to the wire format, with its weights into
// ring (me -> s, c) in s's buffer. The other half receives, one token per warp per batch, in token
// order: for token t of channel c it takes, in rank order, the row from every rank that received t
// (its own y for this rank, the ring message for a peer: the k-th message of ring (r -> me, c) is
// the k-th token of channel c that was sent to r), sums in fp32 and writes out[t]. After each batch
// it publishes each ring's head back to its sender.
#include "device_utils.cuh"
#ifndef NEP_CUDA_UNROLL
#define NEP_CUDA_UNROLL 4
#endif
#include "kernels.h"
#include "wire.cuh"

namespace nep {
namespace cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kUnroll = NEP_CUDA_UNROLL;  // warp-steps (256 channels each) whose loads are in flight together
constexpr int kGroup = 2;  // ranks whose loads are in flight together (4 spills at 64 registers)

struct CombineShared {
  int first[kMaxRanks];  // smallest send position among this channel's tokens, per rank
  int count[kMaxRanks];  // this channel's tokens per rank
  u64 consumed_base[kMaxRanks];
  int batch[2][kMaxRanks];
  const uint8_t* src[kRecvWarps][kMaxRanks];
  const float* wsrc[kRecvWarps][kMaxRanks];
  long long lo[kMaxRanks];
  int n[kMaxRanks];
  u64 sent_base[kMaxRanks];
  u64 head0[kMaxRanks];
};

// First index in [lo, hi) with v[i] >= key (v ascending).
__device__ long long lower_bound_i32(const int32_t* v, long long lo, long long hi, long long key) {
  while (lo < hi) {
    const long long mid = (lo + hi) / 2;
    if (v[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// A value of y as it arrives from this rank itself: cast to the wire format and widened.
template <int WIRE>
__device__ __forceinline__ void local_to_wire(const Raw8& raw, int y_dtype, float v[8]) {
  raw_to_f32(raw, y_dtype, v);
  if (WIRE == NEP_WIRE_BF16 && y_dtype == NEP_DTYPE_FP32) {
    const uint4 p = pack_bf16x8(v);
    unpack_bf16x8(p, v);
  }
}

template <int WIRE>
__device__ void combine_token(const CombineArgs& a, CombineShared& sh, long long t, int par, u64& tail_seen) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int W = a.world, me = a.rank, K = a.num_topk, c = blockIdx.x;
  const long long H = a.hidden;
  const int ysize = a.y_dtype == NEP_DTYPE_BF16 ? 2 : 4;

  int sp = -1;
  if (lane < W) sp = send_pos(a.route, W, t, lane);
  const unsigned mask = __ballot_sync(kFull, sp >= 0);
  bool ok = true;
  if (sp >= 0) {  // lane r < W: where rank r's contribution is
    if (lane == me) {
      const long long row = recv_row_begin(a.route, W, me, me) + sp;
      sh.src[warp][lane] = static_cast<const uint8_t*>(a.y) + row * H * ysize;
      sh.wsrc[warp][lane] = a.y_weights != nullptr ? a.y_weights + row * K : nullptr;
    } else {
      const u64 abs = sh.consumed_base[lane] + (u64)(sp - sh.first[lane]);
      if (tail_seen < abs + 1)
        ok = wait_geq<true>(counter_at(a.peers[me], Ctrl::kTail, lane, c), abs + 1, a.wait, lane, kCounterTail, c,
                            &tail_seen);
      const uint8_t* slot = ring_at(a.peers[me], a.geom, lane, c) +
                            (long long)(abs % (u64)a.geom.num_slots) * a.geom.slot_bytes;
      sh.src[warp][lane] = slot + a.geom.payload_offset;
      sh.wsrc[warp][lane] = a.y_weights != nullptr ? reinterpret_cast<const float*>(slot) : nullptr;
    }
  }
  if (__ballot_sync(kFull, !ok) != 0) return;
  __syncwarp();

  const int osize = a.out_dtype == NEP_DTYPE_BF16 ? 2 : 4;
  uint8_t* out_row = static_cast<uint8_t*>(a.out) + t * H * osize;
  for (long long ch = lane * kLaneChannels; ch - lane * kLaneChannels < H; ch += kWarpChannels) {
    const bool active = ch < H;
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = 0.f;
    // Ranks in groups of kGroup: the group's loads are issued together, then summed in rank order.
    for (int rb = 0; rb < W; rb += kGroup) {
      Raw8 raw[kGroup];
#pragma unroll
      for (int q = 0; q < kGroup; ++q) {
        const int r = rb + q;
        raw[q].a = raw[q].b = make_uint4(0, 0, 0, 0);
        if (active && r < W && ((mask >> r) & 1u)) {
          if (r == me) {
            raw[q] = load_row8(sh.src[warp][r], a.y_dtype, ch);
          } else if (WIRE == NEP_WIRE_BF16) {
            raw[q].a = ld_volatile_v4(sh.src[warp][r] + ch * 2);
          } else {
            raw[q].a = ld_volatile_v4(sh.src[warp][r] + ch * 4);
            raw[q].b = ld_volatile_v4(sh.src[warp][r] + ch * 4 + 16);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kGroup; ++q) {
        const int r = rb + q;
        if (active && r < W && ((mask >> r) & 1u)) {
          float v[8];
          if (r == me) local_to_wire<WIRE>(raw[q], a.y_dtype, v);
          else raw_to_f32(raw[q], WIRE == NEP_WIRE_BF16 ? NEP_DTYPE_BF16 : NEP_DTYPE_FP32, v);
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[i] += v[i];
        }
      }
    }
    if (active) store_row8(out_row, a.out_dtype, ch, acc);
  }
  if (a.out_weights != nullptr && lane < K) {
    float acc = 0.f;
    for (int r = 0; r < W; ++r) {
      if (!((mask >> r) & 1u)) continue;
      const float* ws = sh.wsrc[warp][r];
      if (ws == nullptr) continue;
      acc += r == me ? ws[lane] : ld_volatile_f32(ws + lane);
    }
    a.out_weights[t * K + lane] = acc;
  }
  __syncwarp();
  if (lane == 0)
    for (unsigned m = mask & ~(1u << me); m != 0; m &= m - 1) atomicAdd(&sh.batch[par][__ffs(m) - 1], 1);
}

template <int WIRE>
__device__ void send_row(const CombineArgs& a, int s, long long j, u64 abs, u64& head_seen) {
  const int lane = threadIdx.x & 31, c = blockIdx.x;
  const int K = a.num_topk, me = a.rank;
  const long long H = a.hidden, Q = a.geom.num_slots;
  bool ok = true;
  const u64 need = abs + 1 > (u64)Q ? abs + 1 - (u64)Q : 0;
  if (lane == 0 && head_seen < need)
    ok = wait_geq<true>(counter_at(a.peers[me], Ctrl::kHead, s, c), need, a.wait, s, kCounterHead, c, &head_seen);
  if (!__shfl_sync(kFull, (int)ok, 0)) return;
  __syncwarp();  // orders lane 0's acquire of the head before every lane's writes into the slot
  uint8_t* slot = ring_at(a.peers[s], a.geom, me, c) + (long long)(abs % (u64)Q) * a.geom.slot_bytes;
  if (a.y_weights != nullptr && lane < K) reinterpret_cast<float*>(slot)[lane] = a.y_weights[j * K + lane];
  uint8_t* payload = slot + a.geom.payload_offset;
  const uint8_t* yrow = static_cast<const uint8_t*>(a.y) + j * H * (a.y_dtype == NEP_DTYPE_BF16 ? 2 : 4);
  for (long long base = 0; base < H; base += kUnroll * kWarpChannels) {
    long long ch[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) ch[u] = base + u * kWarpChannels + lane * kLaneChannels;
    Raw8 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      raw[u].a = raw[u].b = make_uint4(0, 0, 0, 0);
      if (ch[u] < H) raw[u] = load_row8(yrow, a.y_dtype, ch[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (ch[u] < H) {
        float v[8];
        raw_to_f32(raw[u], a.y_dtype, v);
        store_wire8<WIRE>(payload, H, ch[u], lane, encode8<WIRE>(v));
      }
    }
  }
}

template <int WIRE>
__global__ void __launch_bounds__(kEpThreads, 1) combine_kernel(const __grid_constant__ CombineArgs a) {
  __shared__ CombineShared sh;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int W = a.world, me = a.rank, c = blockIdx.x, C = a.num_channels;
  const long long T = a.route.num_tokens;
  const long long t0 = T * c / C, t1 = T * (c + 1) / C;
  uint8_t* local = a.peers[me];

  if (tid < kMaxRanks) {
    sh.first[tid] = INT_MAX;
    sh.count[tid] = 0;
    sh.batch[0][tid] = sh.batch[1][tid] = 0;
    if (tid < W) sh.consumed_base[tid] = ld_volatile_u64(counter_at(local, Ctrl::kConsumed, tid, c));
  }
  __syncthreads();
  for (long long t = t0 + tid; t < t1; t += kEpThreads) {
    for (int r = 0; r < W; ++r) {
      const int p = send_pos(a.route, W, t, r);
      if (p >= 0) {
        atomicMin(&sh.first[r], p);
        atomicAdd(&sh.count[r], 1);
      }
    }
  }
  __syncthreads();

  if (warp < kRecvWarps) {
    constexpr int kRecvThreads = kRecvWarps * 32;
    u64 tail_seen = 0;  // lane r: last tail seen of ring (r -> me, c)
    u64 consumed = 0;   // thread r: messages of ring (r -> me, c) consumed in this call
    const long long nbatch = (t1 - t0 + kRecvWarps - 1) / kRecvWarps;
    for (long long b = 0; b < nbatch; ++b) {
      const long long t = t0 + b * kRecvWarps + warp;
      const int par = (int)(b & 1);
      if (t < t1 && !is_aborted(a.wait)) combine_token<WIRE>(a, sh, t, par, tail_seen);
      named_barrier(1, kRecvThreads);
      if (tid < W && tid != me) {
        const int n = sh.batch[par][tid];
        if (n != 0) {
          sh.batch[par][tid] = 0;
          consumed += (u64)n;
          st_release_sys(counter_at(a.peers[tid], Ctrl::kHead, me, c), sh.consumed_base[tid] + consumed);
        }
      }
    }
    if (tid < W && tid != me)
      st_volatile_u64(counter_at(local, Ctrl::kConsumed, tid, c), sh.consumed_base[tid] + (u64)sh.count[tid]);
    return;
  }

  // Sending warps: a group of g warps per peer.
  const int npeers = W - 1;
  if (npeers == 0) return;
  const int sw = warp - kRecvWarps;
  const int g = kSendWarps / npeers;
  const int gi = sw / g;
  if (gi >= npeers) return;
  const int s = gi < me ? gi : gi + 1;
  const int lw = sw - gi * g;
  const int bar = 2 + gi, nthr = g * 32;
  const int gtid = lw * 32 + lane;
  if (gtid == 0) {
    const long long p0 = recv_row_begin(a.route, W, s, me), p1 = a.route.rank_prefix[s * W + me];
    const long long ts = a.route.rank_tokens[s];
    const long long lo = lower_bound_i32(a.recv_src_idx, p0, p1, ts * c / C);
    const long long hi = lower_bound_i32(a.recv_src_idx, lo, p1, ts * (c + 1) / C);
    sh.lo[gi] = lo;
    sh.n[gi] = (int)(hi - lo);
  }
  for (int cc = gtid; cc < a.drain_channels; cc += nthr) {
    const u64 sent = ld_volatile_u64(counter_at(local, Ctrl::kSent, s, cc));
    u64 seen;
    if (sent != 0) wait_geq<true>(counter_at(local, Ctrl::kHead, s, cc), sent, a.wait, s, kCounterDrain, cc, &seen);
  }
  named_barrier(bar, nthr);
  if (gtid == 0) {
    sh.sent_base[gi] = ld_volatile_u64(counter_at(local, Ctrl::kSent, s, c));
    sh.head0[gi] = ld_volatile_u64(counter_at(local, Ctrl::kHead, s, c));
  }
  named_barrier(bar, nthr);
  const long long lo = sh.lo[gi];
  const int n = sh.n[gi];
  const u64 base = sh.sent_base[gi];
  u64 head_seen = sh.head0[gi];
  const int per_batch = g * kBatchPerWarp;
  for (int k = 0; k < n; k += per_batch) {
#pragma unroll
    for (int j = 0; j < kBatchPerWarp; ++j) {
      const int i = k + j * g + lw;
      if (i < n && !is_aborted(a.wait)) send_row<WIRE>(a, s, lo + i, base + (u64)i, head_seen);
    }
    named_barrier(bar, nthr);
    if (gtid == 0) st_release_sys(counter_at(a.peers[s], Ctrl::kTail, me, c), base + (u64)min(k + per_batch, n));
  }
  if (gtid == 0) st_volatile_u64(counter_at(local, Ctrl::kSent, s, c), base + (u64)n);
}

template <int WIRE>
cudaError_t launch_combine_t(const CombineArgs& a, cudaStream_t stream) {
  void* params[] = {const_cast<CombineArgs*>(&a)};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&combine_kernel<WIRE>), dim3(a.num_channels),
                                     dim3(kEpThreads), params, 0, stream);
}

}  // namespace

cudaError_t launch_combine(int wire, const CombineArgs& a, cudaStream_t stream) {
  switch (wire) {
    case NEP_WIRE_FP32: return launch_combine_t<NEP_WIRE_FP32>(a, stream);
    case NEP_WIRE_BF16: return launch_combine_t<NEP_WIRE_BF16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t combine_max_blocks_per_sm(int wire, int* blocks) {
  const void* f = wire == NEP_WIRE_FP32 ? reinterpret_cast<const void*>(&combine_kernel<NEP_WIRE_FP32>)
                                        : reinterpret_cast<const void*>(&combine_kernel<NEP_WIRE_BF16>);
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, f, kEpThreads, 0);
}

}  // namespace cuda
}  // namespace nep
