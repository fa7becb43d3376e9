// Dispatch kernel of the cuda-ipc transport.
//
// One block per channel c; the tokens [T*c/C, T*(c+1)/C) of this rank belong to channel c. Half of
// the warps send: each takes one token per batch, reads its row once, casts it to the wire format
// and writes a message into ring (me -> r, c) in the buffer of every peer r that holds one of its
// experts (NVLink stores); the copy for this rank itself goes straight into recv_x. After each
// batch the sending warps meet at a barrier and one thread per peer publishes the ring's tail
// (release, system scope). The other half receives: one group of warps per peer s drains ring
// (s -> me, c) into recv_x at row (first row of s) + (send position carried by the message), and
// publishes the ring's head back to s after each batch, which frees the slots.
//
// Every wait is bounded (wait_geq); a failed wait sets the buffer's abort word, after which every
// warp skips its remaining work but still meets its barriers, so the kernel always ends.
#include "device_utils.cuh"
#include "ring_wait.cuh"
#ifndef NEP_CUDA_UNROLL
#define NEP_CUDA_UNROLL 4
#endif
#include "kernels.h"
#include "wire.cuh"

namespace nep {
namespace cuda {

namespace {

constexpr unsigned kFull = 0xffffffffu;
// warp-steps (256 channels each) whose loads are in flight together
constexpr int kUnroll = NEP_CUDA_UNROLL;

struct DispatchShared {
  int first[kMaxRanks];  // smallest send position of this channel's tokens, per destination
  int count[kMaxRanks];  // this channel's tokens per destination
  u64 sent_base[kMaxRanks];
  int batch[2][kMaxRanks];  // messages of the current batch per destination (parity by batch)
  u64 head[kSendWarps][kMaxRanks];
  uint8_t* slot[kSendWarps][kMaxRanks];
  int recv_count[kMaxRanks];
  u64 recv_base[kMaxRanks];
};

// Bytes of one output row: a float32 / bf16 row, or the wire row itself (kDtypeWireRows).
template <int WIRE>
__device__ __forceinline__ long long out_row_bytes(int32_t out_dtype, long long hidden) {
  return out_dtype == kDtypeWireRows ? wire_row_bytes(WIRE, hidden)
                                     : hidden * (out_dtype == NEP_DTYPE_BF16 ? 2 : 4);
}

template <int WIRE>
__device__ void send_token(const DispatchArgs& a, DispatchShared& sh, long long t, int par) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int W = a.world, me = a.rank, K = a.num_topk, c = blockIdx.x;
  const long long H = a.hidden, Q = a.geom.num_slots;

  int sp = -1;
  if (lane < W) sp = send_pos(a.route, W, t, lane);
  const unsigned dests = __ballot_sync(kFull, sp >= 0);
  if (dests == 0) return;
  const unsigned ring_dests = dests & ~(1u << me);

  // Reserve a slot in each peer's ring: lane r waits until ring (me -> r, c) has room.
  bool ok = true;
  if ((ring_dests >> lane) & 1u) {
    const u64 abs = sh.sent_base[lane] + (u64)(sp - sh.first[lane]);
    ok = wait_ring_room(a.peers[me], lane, c, abs, Q, a.wait, sh.head[warp][lane]);
    sh.slot[warp][lane] =
        ring_at(a.peers[lane], a.geom, me, c) + (long long)(abs % (u64)Q) * a.geom.slot_bytes;
  }
  if (__ballot_sync(kFull, !ok) != 0) return;
  __syncwarp();

  // Header, expert ids and weights.
  const bool has_topk = a.topk_idx != nullptr;
  const bool has_w = a.topk_weights != nullptr;
  int expert = -1;
  float weight = 0.f;
  if (lane < K) {
    if (has_topk) expert = (int)a.topk_idx[t * K + lane];
    if (has_w) weight = a.topk_weights[t * K + lane];
  }
  for (unsigned m = ring_dests; m != 0; m &= m - 1) {
    const int r = __ffs(m) - 1;
    const int spr = __shfl_sync(kFull, sp, r);
    uint8_t* slot = sh.slot[warp][r];
    if (lane == 0)
      *reinterpret_cast<int4*>(slot) =
          make_int4((int)t, spr, (has_topk ? 1 : 0) | (has_w ? 2 : 0), 0);
    if (lane < K) {
      if (has_topk) reinterpret_cast<int*>(slot + 16)[lane] = expert;
      if (has_w) reinterpret_cast<float*>(slot + 16 + 4 * K)[lane] = weight;
    }
  }
  const bool self = (dests >> me) & 1u;
  const int sp_me = __shfl_sync(kFull, sp, me);
  uint8_t* self_row = nullptr;
  if (self) {
    const long long row = recv_row_begin(a.route, W, me, me) + sp_me;
    if (lane == 0) a.recv_src_idx[row] = (int)t;
    if (lane < K && has_topk && a.recv_topk_idx != nullptr) {
      const int El = a.local_experts;
      const bool local = expert >= me * El && expert < (me + 1) * El;
      a.recv_topk_idx[row * K + lane] = local ? expert - me * El : -1;
      if (a.recv_topk_weights != nullptr)
        a.recv_topk_weights[row * K + lane] = local ? weight : 0.f;
    }
    self_row = static_cast<uint8_t*>(a.recv_x) + row * out_row_bytes<WIRE>(a.out_dtype, H);
  }
  const bool keep_wire = a.out_dtype == kDtypeWireRows;

  // Row data: two warp-steps (512 channels) in flight per iteration.
  const uint8_t* xrow =
      static_cast<const uint8_t*>(a.x) + t * H * (a.x_dtype == NEP_DTYPE_BF16 ? 2 : 4);
  const long long poff = a.geom.payload_offset;
  for (long long base = 0; base < H; base += kUnroll * kWarpChannels) {
    long long ch[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) ch[u] = base + u * kWarpChannels + lane * kLaneChannels;
    Raw8 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      raw[u].a = raw[u].b = make_uint4(0, 0, 0, 0);
      if (ch[u] < H) raw[u] = load_row8(xrow, a.x_dtype, ch[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float v[8];
      raw_to_f32(raw[u], a.x_dtype, v);
      const Enc8 e = encode8<WIRE>(v);
      if (ch[u] < H) {
        for (unsigned m = ring_dests; m != 0; m &= m - 1) {
          const int r = __ffs(m) - 1;
          store_wire8<WIRE>(sh.slot[warp][r] + poff, H, ch[u], lane, e);
        }
        if (self && keep_wire) {
          store_wire8<WIRE>(self_row, H, ch[u], lane, e);  // the row as it travels
        } else if (self) {
          decode8<WIRE>(e, v);
          store_row8(self_row, a.out_dtype, ch[u], v);
        }
      }
    }
  }
  __syncwarp();
  if (lane == 0)
    for (unsigned m = ring_dests; m != 0; m &= m - 1) atomicAdd(&sh.batch[par][__ffs(m) - 1], 1);
}

template <int WIRE>
__device__ void recv_message(const DispatchArgs& a, const uint8_t* ring, int s, u64 abs,
                             long long row_begin, long long row_end, u64& tail_seen) {
  const int lane = threadIdx.x & 31, c = blockIdx.x;
  const int K = a.num_topk, me = a.rank;
  const long long H = a.hidden;
  bool ok = true;
  if (lane == 0) ok = wait_ring_message(a.peers[me], s, c, abs, a.wait, tail_seen);
  if (!__shfl_sync(kFull, (int)ok, 0)) return;
  __syncwarp();  // orders lane 0's acquire before every lane's reads of the message
  const uint8_t* slot = ring + (long long)(abs % (u64)a.geom.num_slots) * a.geom.slot_bytes;
  const int hdr = lane < 3 ? ld_volatile_s32(slot + 4 * lane) : 0;
  const int tsrc = __shfl_sync(kFull, hdr, 0);
  const int sp = __shfl_sync(kFull, hdr, 1);
  const int flags = __shfl_sync(kFull, hdr, 2);
  const long long row = row_begin + sp;
  if (sp < 0 || row >= row_end) {
    if (lane == 0) report_failure(a.wait, NEP_ERR_INTERNAL, s, kCounterBadMessage, c, row_end, row);
    return;
  }
  if (lane == 0) a.recv_src_idx[row] = tsrc;
  // Expert ids and weights as the sender had them (a sender without them yields -1 and 0).
  if (lane < K && a.recv_topk_idx != nullptr) {
    const int El = a.local_experts;
    const int expert = (flags & 1) ? ld_volatile_s32(slot + 16 + 4 * lane) : -1;
    const bool local = expert >= me * El && expert < (me + 1) * El;
    a.recv_topk_idx[row * K + lane] = local ? expert - me * El : -1;
    if (a.recv_topk_weights != nullptr)
      a.recv_topk_weights[row * K + lane] =
          local && (flags & 2) ? ld_volatile_f32(slot + 16 + 4 * K + 4 * lane) : 0.f;
  }
  const uint8_t* payload = slot + a.geom.payload_offset;
  uint8_t* out_row = static_cast<uint8_t*>(a.recv_x) + row * out_row_bytes<WIRE>(a.out_dtype, H);
  const bool keep_wire = a.out_dtype == kDtypeWireRows;
  for (long long base = 0; base < H; base += kUnroll * kWarpChannels) {
    long long ch[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) ch[u] = base + u * kWarpChannels + lane * kLaneChannels;
    Enc8 e[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (ch[u] < H) e[u] = load_wire8<WIRE>(payload, H, ch[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (ch[u] < H && keep_wire) {
        store_wire8<WIRE>(out_row, H, ch[u], lane, e[u]);  // the wire row as it travelled
      } else if (ch[u] < H) {
        float v[8];
        decode8<WIRE>(e[u], v);
        store_row8(out_row, a.out_dtype, ch[u], v);
      }
    }
  }
}

template <int WIRE>
__global__ void __launch_bounds__(kEpThreads, 1)
    dispatch_kernel(const __grid_constant__ DispatchArgs a) {
  __shared__ DispatchShared sh;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int W = a.world, me = a.rank, c = blockIdx.x, C = a.num_channels;
  const long long T = a.route.num_tokens;
  const long long t0 = T * c / C, t1 = T * (c + 1) / C;
  uint8_t* local = a.peers[me];

  if (tid < kMaxRanks) {
    sh.first[tid] = INT_MAX;
    sh.count[tid] = 0;
    sh.batch[0][tid] = sh.batch[1][tid] = 0;
  }
  __syncthreads();
  count_channel_tokens(a.route, W, t0, t1, sh.first, sh.count);
  __syncthreads();

  if (warp < kSendWarps) {
    constexpr int kSendThreads = kSendWarps * 32;
    // Wait until each peer has read every message of earlier calls (rings may sit elsewhere now).
    for (int i = tid; i < W * a.drain_channels; i += kSendThreads) {
      const int r = i / a.drain_channels, cc = i % a.drain_channels;
      if (r == me) continue;
      wait_ring_drained(local, r, cc, a.wait);
    }
    named_barrier(1, kSendThreads);
    if (tid < W && tid != me) {
      const u64 base = ld_volatile_u64(counter_at(local, Ctrl::kSent, tid, c));
      const u64 head = ld_volatile_u64(counter_at(local, Ctrl::kHead, tid, c));
      sh.sent_base[tid] = base;
      for (int w = 0; w < kSendWarps; ++w) sh.head[w][tid] = head;
      st_release_sys(
          counter_at(a.peers[tid], Ctrl::kChanCount + size_t(a.parity) * kCounterArray, me, c),
          (a.call_id << 32) | (u64)(unsigned)sh.count[tid]);
    }
    named_barrier(1, kSendThreads);
    u64 published = 0;
    const long long nbatch = (t1 - t0 + kSendWarps - 1) / kSendWarps;
    for (long long b = 0; b < nbatch; ++b) {
      const long long t = t0 + b * kSendWarps + warp;
      const int par = (int)(b & 1);
      if (t < t1 && !is_aborted(a.wait)) send_token<WIRE>(a, sh, t, par);
      named_barrier(1, kSendThreads);
      publish_batch(a.peers, Ctrl::kTail, W, me, c, sh.batch[par], sh.sent_base, published);
    }
    record_ring_end(local, Ctrl::kSent, W, me, c, sh.sent_base, sh.count);
    return;
  }

  // Receiving warps: a group of g warps per peer.
  PeerGroup pg;
  if (!peer_group(warp - kSendWarps, kRecvWarps, W, me, pg)) return;
  const int g = pg.size, gi = pg.index, s = pg.peer, lw = pg.warp;
  const int bar = pg.barrier, nthr = pg.threads;
  if (lw == 0 && lane == 0) {
    u64 v = 0;
    const bool ok =
        wait_geq<true>(counter_at(local, Ctrl::kChanCount + size_t(a.parity) * kCounterArray, s, c),
                       a.call_id << 32, a.wait, s, kCounterChanCount, c, &v);
    sh.recv_count[gi] = ok ? (int)(v & 0xffffffffull) : 0;
    sh.recv_base[gi] = ld_volatile_u64(counter_at(local, Ctrl::kConsumed, s, c));
  }
  named_barrier(bar, nthr);
  const int cnt = sh.recv_count[gi];
  const u64 base = sh.recv_base[gi];
  const uint8_t* ring = ring_at(local, a.geom, s, c);
  const long long row_begin = recv_row_begin(a.route, W, s, me);
  const long long row_end = a.route.rank_prefix[s * W + me];
  u64 tail_seen = 0;
  const int per_batch = g * kBatchPerWarp;
  for (int k = 0; k < cnt; k += per_batch) {
#pragma unroll
    for (int j = 0; j < kBatchPerWarp; ++j) {
      const int i = k + j * g + lw;
      if (i < cnt && !is_aborted(a.wait))
        recv_message<WIRE>(a, ring, s, base + (u64)i, row_begin, row_end, tail_seen);
    }
    named_barrier(bar, nthr);
    if (lw == 0 && lane == 0)
      st_release_sys(counter_at(a.peers[s], Ctrl::kHead, me, c),
                     base + (u64)min(k + per_batch, cnt));
  }
  if (lw == 0 && lane == 0)
    st_volatile_u64(counter_at(local, Ctrl::kConsumed, s, c), base + (u64)cnt);
}

template <int WIRE>
cudaError_t launch_dispatch_t(const DispatchArgs& a, cudaStream_t stream) {
  void* params[] = {const_cast<DispatchArgs*>(&a)};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&dispatch_kernel<WIRE>),
                                     dim3(a.num_channels), dim3(kEpThreads), params, 0, stream);
}

}  // namespace

cudaError_t launch_dispatch(int wire, const DispatchArgs& a, cudaStream_t stream) {
  switch (wire) {
    case NEP_WIRE_FP32: return launch_dispatch_t<NEP_WIRE_FP32>(a, stream);
    case NEP_WIRE_BF16: return launch_dispatch_t<NEP_WIRE_BF16>(a, stream);
    case NEP_WIRE_FP8: return launch_dispatch_t<NEP_WIRE_FP8>(a, stream);
    case NEP_WIRE_MXFP8: return launch_dispatch_t<NEP_WIRE_MXFP8>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t dispatch_max_blocks_per_sm(int wire, int* blocks) {
  const void* f =
      wire == NEP_WIRE_FP32   ? reinterpret_cast<const void*>(&dispatch_kernel<NEP_WIRE_FP32>)
      : wire == NEP_WIRE_BF16 ? reinterpret_cast<const void*>(&dispatch_kernel<NEP_WIRE_BF16>)
      : wire == NEP_WIRE_FP8  ? reinterpret_cast<const void*>(&dispatch_kernel<NEP_WIRE_FP8>)
                              : reinterpret_cast<const void*>(&dispatch_kernel<NEP_WIRE_MXFP8>);
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, f, kEpThreads, 0);
}

}  // namespace cuda
}  // namespace nep
