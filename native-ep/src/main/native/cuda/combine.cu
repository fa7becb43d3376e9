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
#include "kernels.h"
#include "ring_wait.cuh"
#include "wire.cuh"

namespace nep {
namespace cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
// sending side: warp-steps (256 channels each) whose loads are in flight together
constexpr int kUnroll = 3;
#ifndef NEP_CUDA_COMBINE_STEPS
#define NEP_CUDA_COMBINE_STEPS 1
#endif
// receiving side: warp-steps whose loads are in flight together
constexpr int kRecvSteps = NEP_CUDA_COMBINE_STEPS;

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

// Loads 8 channels of a row of `bytes_per` bytes per channel (2 or 4).
template <int kBytes>
__device__ __forceinline__ Raw8 load8(const uint8_t* row, long long ch, bool is_volatile) {
  Raw8 r;
  r.b = make_uint4(0, 0, 0, 0);
  if (is_volatile) {
    r.a = ld_volatile_v4(row + ch * kBytes);
    if (kBytes == 4) r.b = ld_volatile_v4(row + ch * kBytes + 16);
  } else {
    r.a = ld_nc_v4(row + ch * kBytes);
    if (kBytes == 4) r.b = ld_nc_v4(row + ch * kBytes + 16);
  }
  return r;
}

template <int WIRE, int YDT>
__device__ void combine_token(const CombineArgs& a, CombineShared& sh, long long t, int par,
                              u64& tail_seen) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int W = a.world, me = a.rank, K = a.num_topk, c = blockIdx.x;
  const long long H = a.hidden;
  constexpr int kYSize = YDT == NEP_DTYPE_BF16 ? 2 : 4;
  constexpr int kWSize = WIRE == NEP_WIRE_BF16 ? 2 : 4;
  // Ranks whose loads are in flight together: 4 when every load is one 16-byte word, else 2 (64
  // registers per thread).
  constexpr int kGroup = kYSize == 2 && kWSize == 2 ? 4 : 2;

  int sp = -1;
  if (lane < W) sp = send_pos(a.route, W, t, lane);
  const unsigned mask = __ballot_sync(kFull, sp >= 0);
  bool ok = true;
  if (sp >= 0) {  // lane r < W: where rank r's contribution is
    if (lane == me) {
      const long long row = recv_row_begin(a.route, W, me, me) + sp;
      sh.src[warp][lane] = static_cast<const uint8_t*>(a.y) + row * H * kYSize;
      sh.wsrc[warp][lane] = a.y_weights != nullptr ? a.y_weights + row * K : nullptr;
    } else {
      const u64 abs = sh.consumed_base[lane] + (u64)(sp - sh.first[lane]);
      ok = wait_ring_message(a.peers[me], lane, c, abs, a.wait, tail_seen);
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
  for (long long base = 0; base < H; base += kRecvSteps * kWarpChannels) {
    float acc[kRecvSteps][8];
#pragma unroll
    for (int u = 0; u < kRecvSteps; ++u)
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[u][i] = 0.f;
    // Ranks in groups of kGroup: the group's loads (all steps) are issued together, then summed in
    // rank order.
    for (int rb = 0; rb < W; rb += kGroup) {
      Raw8 raw[kRecvSteps][kGroup];
#pragma unroll
      for (int q = 0; q < kGroup; ++q) {
        const int r = rb + q;
        const bool present = r < W && ((mask >> r) & 1u);
        const uint8_t* src = present ? sh.src[warp][r] : nullptr;
#pragma unroll
        for (int u = 0; u < kRecvSteps; ++u) {
          const long long ch = base + u * kWarpChannels + lane * kLaneChannels;
          raw[u][q].a = raw[u][q].b = make_uint4(0, 0, 0, 0);
          if (present && ch < H)
            raw[u][q] = r == me ? load8<kYSize>(src, ch, false) : load8<kWSize>(src, ch, true);
        }
      }
#pragma unroll
      for (int q = 0; q < kGroup; ++q) {
        const int r = rb + q;
        if (!(r < W && ((mask >> r) & 1u))) continue;
#pragma unroll
        for (int u = 0; u < kRecvSteps; ++u) {
          float v[8];
          if (r == me) {
            raw_to_f32(raw[u][q], YDT, v);
            if (WIRE == NEP_WIRE_BF16 && YDT == NEP_DTYPE_FP32)
              unpack_bf16x8(pack_bf16x8(v), v);  // this rank's term on the wire
          } else {
            raw_to_f32(raw[u][q], WIRE == NEP_WIRE_BF16 ? NEP_DTYPE_BF16 : NEP_DTYPE_FP32, v);
          }
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[u][i] += v[i];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kRecvSteps; ++u) {
      const long long ch = base + u * kWarpChannels + lane * kLaneChannels;
      if (ch < H) store_row8(out_row, a.out_dtype, ch, acc[u]);
    }
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
    for (unsigned m = mask & ~(1u << me); m != 0; m &= m - 1)
      atomicAdd(&sh.batch[par][__ffs(m) - 1], 1);
}

template <int WIRE, int YDT>
__device__ void send_row(const CombineArgs& a, int s, long long j, u64 abs, u64& head_seen) {
  const int lane = threadIdx.x & 31, c = blockIdx.x;
  const int K = a.num_topk, me = a.rank;
  const long long H = a.hidden, Q = a.geom.num_slots;
  constexpr int kYSize = YDT == NEP_DTYPE_BF16 ? 2 : 4;
  const uint8_t* yrow = static_cast<const uint8_t*>(a.y) + j * H * kYSize;
  // The row's first loads go out before the wait for room.
  Raw8 raw[kUnroll];
  auto load_steps = [&](long long base) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long ch = base + u * kWarpChannels + lane * kLaneChannels;
      raw[u].a = raw[u].b = make_uint4(0, 0, 0, 0);
      if (ch < H) raw[u] = load8<kYSize>(yrow, ch, false);
    }
  };
  load_steps(0);
  bool ok = true;
  if (lane == 0) ok = wait_ring_room(a.peers[me], s, c, abs, Q, a.wait, head_seen);
  if (!__shfl_sync(kFull, (int)ok, 0)) return;
  __syncwarp();  // orders lane 0's acquire of the head before every lane's writes into the slot
  uint8_t* slot =
      ring_at(a.peers[s], a.geom, me, c) + (long long)(abs % (u64)Q) * a.geom.slot_bytes;
  if (a.y_weights != nullptr && lane < K)
    reinterpret_cast<float*>(slot)[lane] = a.y_weights[j * K + lane];
  uint8_t* payload = slot + a.geom.payload_offset;
  for (long long base = 0;;) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long ch = base + u * kWarpChannels + lane * kLaneChannels;
      if (ch < H) {
        if (WIRE == NEP_WIRE_BF16 && YDT == NEP_DTYPE_BF16) {
          st_v4(payload + ch * 2, raw[u].a);  // already on the wire format
        } else {
          float v[8];
          raw_to_f32(raw[u], YDT, v);
          store_wire8<WIRE>(payload, H, ch, lane, encode8<WIRE>(v));
        }
      }
    }
    base += kUnroll * kWarpChannels;
    if (base >= H) break;
    load_steps(base);
  }
}

template <int WIRE, int YDT>
__global__ void __launch_bounds__(kEpThreads, 1)
    combine_kernel(const __grid_constant__ CombineArgs a) {
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
    if (tid < W)
      sh.consumed_base[tid] = ld_volatile_u64(counter_at(local, Ctrl::kConsumed, tid, c));
  }
  __syncthreads();
  count_channel_tokens(a.route, W, t0, t1, sh.first, sh.count);
  __syncthreads();

  if (warp < kRecvWarps) {
    constexpr int kRecvThreads = kRecvWarps * 32;
    u64 tail_seen = 0;  // lane r: last tail seen of ring (r -> me, c)
    u64 consumed = 0;   // thread r: messages of ring (r -> me, c) consumed in this call
    const long long nbatch = (t1 - t0 + kRecvWarps - 1) / kRecvWarps;
    for (long long b = 0; b < nbatch; ++b) {
      const long long t = t0 + b * kRecvWarps + warp;
      const int par = (int)(b & 1);
      if (t < t1 && !is_aborted(a.wait)) combine_token<WIRE, YDT>(a, sh, t, par, tail_seen);
      named_barrier(1, kRecvThreads);
      publish_batch(a.peers, Ctrl::kHead, W, me, c, sh.batch[par], sh.consumed_base, consumed);
    }
    record_ring_end(local, Ctrl::kConsumed, W, me, c, sh.consumed_base, sh.count);
    return;
  }

  // Sending warps: a group of g warps per peer.
  PeerGroup pg;
  if (!peer_group(warp - kRecvWarps, kSendWarps, W, me, pg)) return;
  const int g = pg.size, gi = pg.index, s = pg.peer, lw = pg.warp;
  const int bar = pg.barrier, nthr = pg.threads;
  const int gtid = lw * 32 + lane;
  if (gtid == 0) {
    const long long p0 = recv_row_begin(a.route, W, s, me), p1 = a.route.rank_prefix[s * W + me];
    const long long ts = a.route.rank_tokens[s];
    const long long lo = lower_bound_i32(a.recv_src_idx, p0, p1, ts * c / C);
    const long long hi = lower_bound_i32(a.recv_src_idx, lo, p1, ts * (c + 1) / C);
    sh.lo[gi] = lo;
    sh.n[gi] = (int)(hi - lo);
  }
  for (int cc = gtid; cc < a.drain_channels; cc += nthr) wait_ring_drained(local, s, cc, a.wait);
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
      if (i < n && !is_aborted(a.wait)) send_row<WIRE, YDT>(a, s, lo + i, base + (u64)i, head_seen);
    }
    named_barrier(bar, nthr);
    if (gtid == 0)
      st_release_sys(counter_at(a.peers[s], Ctrl::kTail, me, c), base + (u64)min(k + per_batch, n));
  }
  if (gtid == 0) st_volatile_u64(counter_at(local, Ctrl::kSent, s, c), base + (u64)n);
}

template <int WIRE, int YDT>
const void* combine_fn() {
  return reinterpret_cast<const void*>(&combine_kernel<WIRE, YDT>);
}

const void* combine_fn(int wire, int y_dtype) {
  const bool bf = y_dtype == NEP_DTYPE_BF16;
  switch (wire) {
    case NEP_WIRE_FP32:
      return bf ? combine_fn<NEP_WIRE_FP32, NEP_DTYPE_BF16>()
                : combine_fn<NEP_WIRE_FP32, NEP_DTYPE_FP32>();
    case NEP_WIRE_BF16:
      return bf ? combine_fn<NEP_WIRE_BF16, NEP_DTYPE_BF16>()
                : combine_fn<NEP_WIRE_BF16, NEP_DTYPE_FP32>();
    default: return nullptr;
  }
}

}  // namespace

cudaError_t launch_combine(int wire, const CombineArgs& a, cudaStream_t stream) {
  const void* f = combine_fn(wire, a.y_dtype);
  if (f == nullptr) return cudaErrorInvalidValue;
  void* params[] = {const_cast<CombineArgs*>(&a)};
  return cudaLaunchCooperativeKernel(f, dim3(a.num_channels), dim3(kEpThreads), params, 0, stream);
}

cudaError_t combine_max_blocks_per_sm(int wire, int* blocks) {
  const void* f = combine_fn(wire, NEP_DTYPE_BF16);
  if (f == nullptr) return cudaErrorInvalidValue;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, f, kEpThreads, 0);
}

}  // namespace cuda
}  // namespace nep
