// Kernels of the low-latency mode (protocol and buffer layout in ll_common.cuh).
//
// dispatch send: every block builds, in shared memory, a bitmap [E][ceil(T/32)] of which tokens
//   chose which expert (checking topk_idx on the way), so the place of message (t, e) among the
//   messages of (e, this rank) is a popcount: token order, no atomics, no exchange of counts.
//   Block 0 writes each destination's flag (the counts per local expert); then blocks take
//   tokens, warps take 256-channel slices, each slice is cast once (FP8 scales fused) and stored
//   to the K destinations; after a token, one thread per slot raises the arrival counter.
// dispatch recv (two blocks per SM): blocks take (local expert, source) units, a pass of up to 64
//   at once: one thread per unit waits for its arrival counter, the headers of all their rows are
//   read in one pass (the routing combine needs), then warps copy (row, slice) items into the
//   packed output, four loads in flight, decoding the wire the source chose.
// combine send (two blocks per SM): blocks take received rows (prefix over the per-expert counts), a pass of up to 32
//   at once; warps cast (row, slice) items, four in flight, into the source rank's (token, slot)
//   rows; one arrival count per row after the pass.
// combine recv: blocks take tokens; out[t] = sum over set slots, in slot order, of w * row, fp32
//   with separate multiply and add (reproducible on the host bit for bit).
// Every wait is bounded (report_failure names rank, peer, counter); nothing traps.
// Publication: data and flags are plain stores; every writing thread fences (fence.acq_rel.sys),
// then after a barrier one thread makes them visible with a release at system scope
// (st.release.sys / red.release.sys); the reader acquires (ld.acquire.sys) before reading.
#include <cub/block/block_scan.cuh>

#include "device_utils.cuh"
#include "ll_common.cuh"
#include "wire.cuh"

namespace nep {
namespace cuda {

namespace {

constexpr int kLlRowsPerPass = 32;  // combine send: rows resolved per pass of a block
constexpr int kLlFastTopk = 8;      // combine receive: slots loaded at once on the bf16 path
constexpr int kLlUnitsPerPass = 64; // dispatch receive: (local expert, source) units awaited per pass of a block

__device__ __forceinline__ unsigned int ld_acquire_sys_u32(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release_sys_add(unsigned int* p, unsigned int v) {
  asm volatile("red.release.sys.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
// Makes this thread's earlier stores visible at system scope before its later ones. Every thread
// that wrote rows runs it before the barrier after which one thread signals the rows: a barrier
// alone does not wait for other warps' stores in flight (seen as a rare stale combine row).
__device__ __forceinline__ void fence_sys() { asm volatile("fence.acq_rel.sys;" ::: "memory"); }
__device__ __forceinline__ void st_volatile_u32(unsigned int* p, unsigned int v) {
  asm volatile("st.volatile.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

template <class T>
__device__ __forceinline__ T* at(uint8_t* base, long long off) {
  return reinterpret_cast<T*>(base + off);
}

// Waits until the counter at p (64-bit when kWide) reaches target. Also stops when this rank has
// failed (abort word) or the peer has (its abort word, read through its mapping).
template <bool kWide>
__device__ bool ll_wait(const void* p, unsigned long long target, const WaitCtx& w, const unsigned int* peer_abort,
                        int peer, int counter, int channel) {
  auto load = [&]() -> unsigned long long {
    return kWide ? ld_acquire_sys(static_cast<const u64*>(p)) : ld_acquire_sys_u32(static_cast<const unsigned int*>(p));
  };
  unsigned long long v = load();
  if (v >= target) return true;
  const u64 start = global_timer_ns();
  for (unsigned int it = 1;; ++it) {
    v = load();
    if (v >= target) return true;
    if ((it & 63u) == 0u) {
      if (is_aborted(w)) return false;
      if (peer_abort != nullptr && ld_volatile_u32(peer_abort) != 0u) {
        report_failure(w, NEP_ERR_PEER, peer, kLlCounterPeerAbort, channel, 0, 1);
        return false;
      }
      if (global_timer_ns() - start > w.timeout_ns) {
        report_failure(w, NEP_ERR_TIMEOUT, peer, counter, channel, (long long)target, (long long)v);
        return false;
      }
    }
  }
}

__device__ __forceinline__ int dtype_size(int dtype) { return dtype == NEP_DTYPE_BF16 ? 2 : 4; }

__device__ __forceinline__ void load_in8(const uint8_t* row, int dtype, long long ch, float v[8]) {
  raw_to_f32(load_row8(row, dtype, ch), dtype, v);
}

// FP8 with power-of-two scales: scale = 2^ceil(log2(max(amax, 1e-4) / 448)), values x * 2^-e.
// All 32 lanes call; a 16-lane group shares one scale.
__device__ __forceinline__ Enc8 encode8_fp8_pow2(const float v[8]) {
  float amax = lane_amax8(v);
#pragma unroll
  for (int m = 1; m < 16; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
  amax = fmaxf(amax, 1e-4f);
  const uint32_t qb = __float_as_uint(__fdiv_rn(amax, 448.f));
  int e = int((qb >> 23) & 0xff) - 127;
  if ((qb & 0x7fffffu) != 0u) ++e;
  e = e < -126 ? -126 : (e > 126 ? 126 : e);
  Enc8 r;
  r.scale = __uint_as_float(uint32_t(127 + e) << 23);
  r.sbyte = 0;
  const uint2 q = quantize_e4m3x8(v, __uint_as_float(uint32_t(127 - e) << 23));
  r.a = make_uint4(q.x, q.y, 0, 0);
  r.b = make_uint4(0, 0, 0, 0);
  return r;
}

__device__ __forceinline__ void decode_wire8(int wire, const uint8_t* row, long long hidden, long long ch, float v[8]) {
  switch (wire) {
    case NEP_WIRE_FP32: decode8<NEP_WIRE_FP32>(load_wire8<NEP_WIRE_FP32>(row, hidden, ch), v); break;
    case NEP_WIRE_BF16: decode8<NEP_WIRE_BF16>(load_wire8<NEP_WIRE_BF16>(row, hidden, ch), v); break;
    case NEP_WIRE_FP8: decode8<NEP_WIRE_FP8>(load_wire8<NEP_WIRE_FP8>(row, hidden, ch), v); break;
    default: decode8<NEP_WIRE_MXFP8>(load_wire8<NEP_WIRE_MXFP8>(row, hidden, ch), v); break;
  }
}

// Publishes the end of a receive of half b: the last block to finish resets what `reset` names,
// then sets epoch[b] = released[b] = target (unless this rank failed: then the half stays held).
template <class Reset>
__device__ void finish_receive(uint8_t* local, const LlGeom& g, int b, unsigned long long target, const WaitCtx& w,
                               Reset&& reset) {
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence();
  unsigned int* done = at<unsigned int>(local, g.done(b));
  const unsigned int old = atomicAdd(done, 1u);
  if (old != gridDim.x - 1) return;
  __threadfence();
  st_volatile_u32(done, 0u);
  if (is_aborted(w)) return;
  reset();
  st_volatile_u64(at<u64>(local, g.epoch(b)), target);
  st_release_sys(at<u64>(local, g.released(b)), target);
}

// ---- dispatch send ------------------------------------------------------------------------------------

template <int WIRE, bool kRound>
__global__ void __launch_bounds__(kLlThreads) ll_dispatch_send_kernel(const LlDispatchSendArgs a) {
  extern __shared__ uint32_t bits[];  // [E][words]
  __shared__ long long s_bad;         // smallest bad (token * 64 + slot), or LLONG_MAX
  __shared__ uint8_t* s_dst[kMaxTopk];
  __shared__ int s_ok;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int E = s.num_experts, El = s.local_experts, W = s.world, K = a.num_topk, words = a.words;
  const long long T = a.num_tokens, H = s.hidden;
  uint8_t* local = a.peers[s.rank];

  for (int i = tid; i < E * words; i += blockDim.x) bits[i] = 0u;
  if (tid == 0) {
    s_bad = LLONG_MAX;
    s_ok = 1;
  }
  __syncthreads();
  for (int p = tid; p < int(T) * K; p += blockDim.x) {
    const long long e = a.topk_idx[p];
    if (e == -1) continue;
    const int t = p / K;
    const long long key = (long long)t * 64 + (p - t * K);
    if (e < -1 || e >= E) {
      atomicMin(&s_bad, key);
      continue;
    }
    const uint32_t bit = 1u << (t & 31);
    if (atomicOr(&bits[e * words + (t >> 5)], bit) & bit) atomicMin(&s_bad, key);
  }
  __syncthreads();
  const bool bad = s_bad != LLONG_MAX;
  const u64 epoch = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half)));
  // Every destination must have received the call two before on this half.
  if (tid < W) {
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    if (!ll_wait<true>(at<u64>(a.peers[tid], a.g.released(a.half)), epoch, a.wait, peer_abort, tid, kLlCounterReleased, a.half))
      s_ok = 0;
  }
  __syncthreads();
  if (!s_ok) return;
  if (blockIdx.x == 0) {
    if (bad && tid == 0) {
      const long long key = s_bad, t = key / 64;
      const int k = int(key % 64);
      report_failure(a.wait, NEP_ERR_INVALID_ARGUMENT, s.rank, kLlCounterBadInput, k, t, a.topk_idx[t * K + k]);
    }
    for (int d = warp; d < W; d += kLlWarps) {
      uint8_t* f = a.peers[d] + a.g.flag(a.half, s.rank, W);
      int32_t* counts = reinterpret_cast<int32_t*>(f + kLlFlagHeader);
      for (int le = lane; le < El; le += 32) {
        int c = 0;
        if (!bad)
          for (int w = 0; w < words; ++w) c += __popc(bits[(d * El + le) * words + w]);
        counts[le] = c;
      }
      LlFlag* fl = reinterpret_cast<LlFlag*>(f);
      if (lane == 0) {
        fl->kind = NEP_CUDA_LL_DISPATCH;
        fl->wire = a.wire;
        fl->status = bad ? kLlStatusBadInput : kLlStatusOk;
        fl->tokens = int32_t(T);
      }
      fence_sys();
      __syncwarp();
      if (lane == 0) st_release_sys(&fl->seq, epoch + 1);  // release: covers the warp's stores (__syncwarp)
    }
  }
  if (bad) return;
  const int xb = dtype_size(a.x_dtype);
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    if (tid < K) {
      const long long e = a.topk_idx[t * K + tid];
      uint8_t* dst = nullptr;
      if (e >= 0) {
        const int d = int(e / El), le = int(e % El);
        const uint32_t* row = &bits[e * words];
        int j = 0;
        for (int w = 0; w < int(t >> 5); ++w) j += __popc(row[w]);
        j += __popc(row[t >> 5] & ((1u << (t & 31)) - 1u));
        dst = a.peers[d] + a.g.half(a.half) + ((long long)(le * W + s.rank) * s.max_tokens + j) * a.g.msg_stride;
        *reinterpret_cast<int4*>(dst) = make_int4(int(t), tid, 0, 0);
      }
      s_dst[tid] = dst;
    }
    __syncthreads();
    const uint8_t* xrow = static_cast<const uint8_t*>(a.x) + t * H * xb;
    for (long long c0 = (long long)warp * kWarpChannels; c0 < H; c0 += (long long)kLlWarps * kWarpChannels) {
      const long long ch = c0 + lane * kLaneChannels;
      const bool valid = ch < H;
      float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (valid) load_in8(xrow, a.x_dtype, ch, v);
      Enc8 enc;
      if constexpr (kRound) enc = encode8_fp8_pow2(v);
      else enc = encode8<WIRE>(v);
      if (valid) {
        for (int k = 0; k < K; ++k) {
          uint8_t* dst = s_dst[k];
          if (dst != nullptr) store_wire8<WIRE>(dst + kLlMsgHeader, H, ch, lane, enc);
        }
      }
    }
    fence_sys();
    __syncthreads();
    if (tid < K && s_dst[tid] != nullptr) {
      const long long e = a.topk_idx[t * K + tid];
      const int d = int(e / El), le = int(e % El);
      red_release_sys_add(at<unsigned int>(a.peers[d], a.g.darr(a.half, le, s.rank, El, W)), 1u);
    }
    __syncthreads();
  }
}

// ---- dispatch recv ------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kLlThreads, 2) ll_dispatch_recv_kernel(const LlDispatchRecvArgs a) {
  __shared__ int s_ok;
  __shared__ int s_wire[kMaxRanks];
  __shared__ int s_ubegin[kLlUnitsPerPass], s_ucnt[kLlUnitsPerPass], s_urow[kLlUnitsPerPass + 1];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int El = s.local_experts, W = s.world;
  const long long H = s.hidden, N = (long long)W * s.max_tokens;
  uint8_t* local = a.peers[s.rank];
  const u64 target = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half))) + 1;
  const int units = El * W;
  if (tid == 0) s_ok = 1;
  __syncthreads();
  if (blockIdx.x < units && tid < W) {
    const LlFlag* fl = at<LlFlag>(local, a.g.flag(a.half, tid, W));
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    if (!ll_wait<true>(&fl->seq, target, a.wait, peer_abort, tid, kLlCounterFlag, a.half)) {
      s_ok = 0;
    } else {
      const int kind = ld_volatile_s32(&fl->kind), status = ld_volatile_s32(&fl->status);
      s_wire[tid] = ld_volatile_s32(&fl->wire);
      if (kind != NEP_CUDA_LL_DISPATCH) {
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterKind, a.half, NEP_CUDA_LL_DISPATCH, kind);
        s_ok = 0;
      } else if (status != kLlStatusOk) {
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterPeerInput, a.half, 0, status);
        s_ok = 0;
      }
    }
  }
  __syncthreads();
  const int out_b = dtype_size(a.out_dtype);
  const int nchunks = int((H + kWarpChannels - 1) / kWarpChannels);
  // The block's units are u = blockIdx.x + i * gridDim.x; a pass takes up to kLlUnitsPerPass of
  // them: their counters are awaited in parallel (one thread each), then the headers of all their
  // rows are read at once, then warps take (unit, message, slice) items, four in flight.
  for (int first = blockIdx.x; first < units; first += kLlUnitsPerPass * gridDim.x) {
    const int nu = min(kLlUnitsPerPass, (units - first + int(gridDim.x) - 1) / int(gridDim.x));
    if (tid < nu) {
      const int u = first + tid * int(gridDim.x), le = u / W, src = u % W;
      int begin = 0;
      for (int q = 0; q < src; ++q) begin += ld_volatile_s32(local + a.g.flag(a.half, q, W) + kLlFlagHeader + 4LL * le);
      const int cnt = ld_volatile_s32(local + a.g.flag(a.half, src, W) + kLlFlagHeader + 4LL * le);
      s_ubegin[tid] = begin;
      s_ucnt[tid] = cnt;
      unsigned int* arr = at<unsigned int>(local, a.g.darr(a.half, le, src, El, W));
      const unsigned int* peer_abort = at<unsigned int>(a.peers[src], a.g.abort_off);
      if (s_ok && ll_wait<false>(arr, (unsigned long long)cnt, a.wait, peer_abort, src, kLlCounterDispatchRows, le)) {
        st_volatile_u32(arr, 0u);  // every message of this call has arrived: reset for the next use
        fence_sys();               // visible before this half is released (finish_receive)
      } else {
        s_ok = 0;
      }
    }
    __syncthreads();
    if (!s_ok) break;
    if (tid == 0) {
      int rows = 0;
      for (int i = 0; i < nu; ++i) {
        s_urow[i] = rows;
        rows += s_ucnt[i];
      }
      s_urow[nu] = rows;
    }
    __syncthreads();
    const int total_rows = s_urow[nu];
    auto unit_of = [&](int r) {  // last i with s_urow[i] <= r
      int lo = 0, hi = nu;
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (s_urow[mid] <= r) lo = mid;
        else hi = mid;
      }
      return lo;
    };
    // Headers: the routing of every row, one thread per row.
    for (int r = tid; r < total_rows; r += blockDim.x) {
      const int i = unit_of(r), j = r - s_urow[i];
      const int u = first + i * int(gridDim.x), le = u / W, src = u % W;
      const uint8_t* msg = local + a.g.half(a.half) + ((long long)(le * W + src) * s.max_tokens + j) * a.g.msg_stride;
      const int t = ld_volatile_s32(msg), k = ld_volatile_s32(msg + 4);
      const long long row = (long long)le * N + s_ubegin[i] + j;
      a.route_rows[row] = make_int2(t, (src << 8) | k);
      if (a.recv_src_info != nullptr) a.recv_src_info[row] = t;
    }
    // Data: (row, slice) items, four in flight per warp; warp w takes items w, w + 16, ... with the
    // (row, slice) pair advanced incrementally (no divisions per item).
    if (a.recv_x != nullptr && total_rows > 0) {
      int r = warp / nchunks, c = warp % nchunks;
      int ui = unit_of(min(r, total_rows - 1));
      while (r < total_rows) {
        float v[4][8];
        uint8_t* dst[4];
        long long chq[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dst[q] = nullptr;
          if (r < total_rows) {
            while (s_urow[ui + 1] <= r) ++ui;
            const int j = r - s_urow[ui];
            const int u = first + ui * int(gridDim.x), le = u / W, src = u % W;
            const long long ch = (long long)c * kWarpChannels + lane * kLaneChannels;
            chq[q] = ch;
            dst[q] = static_cast<uint8_t*>(a.recv_x) + ((long long)le * N + s_ubegin[ui] + j) * H * out_b;
            if (ch < H)
              decode_wire8(s_wire[src], local + a.g.half(a.half) + ((long long)(le * W + src) * s.max_tokens + j) * a.g.msg_stride + kLlMsgHeader,
                           H, ch, v[q]);
            c += kLlWarps;
            while (c >= nchunks) {
              c -= nchunks;
              ++r;
            }
          }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (dst[q] != nullptr && chq[q] < H) store_row8(dst[q], a.out_dtype, chq[q], v[q]);
      }
    }
    // Per unit: layout range, and for the last source the count and the -1 tail of src_info.
    for (int i = warp; i < nu; i += kLlWarps) {
      const int u = first + i * int(gridDim.x), le = u / W, src = u % W;
      const int begin = s_ubegin[i], cnt = s_ucnt[i];
      if (lane == 0 && a.recv_layout_range != nullptr) a.recv_layout_range[le * W + src] = ((long long)begin << 32) | (long long)cnt;
      if (src == W - 1) {
        if (lane == 0) {
          a.route_counts[le] = begin + cnt;
          if (a.recv_count != nullptr) a.recv_count[le] = begin + cnt;
        }
        if (a.recv_src_info != nullptr)
          for (long long x = begin + cnt + lane; x < N; x += 32) a.recv_src_info[(long long)le * N + x] = -1;
      }
    }
    __syncthreads();
  }
  finish_receive(local, a.g, a.half, target, a.wait, [] {});
}

// ---- combine send -------------------------------------------------------------------------------------

template <int WIRE>
__global__ void __launch_bounds__(kLlThreads, 2) ll_combine_send_kernel(const LlCombineSendArgs a) {
  using Scan = cub::BlockScan<int, kLlThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int s_pre[kMaxLocalExperts + 1];
  __shared__ uint8_t* s_dst[kLlRowsPerPass];
  __shared__ const uint8_t* s_y[kLlRowsPerPass];
  __shared__ int s_src[kLlRowsPerPass];
  __shared__ int s_ok;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int El = s.local_experts, W = s.world;
  const long long H = s.hidden, N = (long long)W * s.max_tokens;
  uint8_t* local = a.peers[s.rank];
  const u64 epoch = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half)));
  if (tid == 0) s_ok = 1;
  // Prefix of the received rows per local expert (El <= 1024 = 2 per thread).
  int c0 = 2 * tid < El ? a.route_counts[2 * tid] : 0;
  int c1 = 2 * tid + 1 < El ? a.route_counts[2 * tid + 1] : 0;
  int excl = 0;
  Scan(scan_tmp).ExclusiveSum(c0 + c1, excl);
  if (2 * tid < El) s_pre[2 * tid] = excl;
  if (2 * tid + 1 < El) s_pre[2 * tid + 1] = excl + c0;
  if (2 * tid + 1 == El || 2 * tid + 2 == El) s_pre[El] = excl + c0 + c1;
  if (tid < W) {
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    if (!ll_wait<true>(at<u64>(a.peers[tid], a.g.released(a.half)), epoch, a.wait, peer_abort, tid, kLlCounterReleased, a.half))
      s_ok = 0;
  }
  __syncthreads();
  if (!s_ok) return;
  if (blockIdx.x == 0 && tid < W) {
    LlFlag* fl = at<LlFlag>(a.peers[tid], a.g.flag(a.half, s.rank, W));
    fl->kind = NEP_CUDA_LL_COMBINE;
    fl->wire = WIRE;
    fl->status = kLlStatusOk;
    fl->tokens = 0;
    st_release_sys(&fl->seq, epoch + 1);
  }
  const int total = s_pre[El];
  const int yb = dtype_size(a.y_dtype);
  const int nchunks = int((H + kWarpChannels - 1) / kWarpChannels);
  // The block's rows are r = blockIdx.x + i * gridDim.x; a pass takes up to kLlRowsPerPass of them:
  // their places are resolved once, then warps take (row, slice) items, four in flight, and after
  // one barrier each row's thread raises its destination's arrival counter.
  for (int first = blockIdx.x; first < total; first += kLlRowsPerPass * gridDim.x) {
    const int nrows = min(kLlRowsPerPass, (total - first + gridDim.x - 1) / gridDim.x);
    if (tid < nrows) {
      const int r = first + tid * gridDim.x;
      int lo = 0, hi = El;  // last le with s_pre[le] <= r
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (s_pre[mid] <= r) lo = mid;
        else hi = mid;
      }
      const int le = lo, i = r - s_pre[le];
      const int2 info = a.route_rows[(long long)le * N + i];
      const int t = info.x, src = info.y >> 8, k = info.y & 255;
      s_dst[tid] = a.peers[src] + a.g.half(a.half) + ((long long)t * s.max_topk + k) * a.g.crow_stride;
      s_src[tid] = src;
      s_y[tid] = static_cast<const uint8_t*>(a.y) + ((long long)le * N + i) * H * yb;
    }
    __syncthreads();
    {
      int r = warp / nchunks, c = warp % nchunks;  // (row, slice) advanced incrementally
      while (r < nrows) {
        float v[4][8];
        int rq[4];
        long long chq[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          rq[q] = r;
          chq[q] = (long long)c * kWarpChannels + lane * kLaneChannels;
#pragma unroll
          for (int z = 0; z < 8; ++z) v[q][z] = 0.f;
          if (r < nrows) {
            if (chq[q] < H) load_in8(s_y[r], a.y_dtype, chq[q], v[q]);
            c += kLlWarps;
            while (c >= nchunks) {
              c -= nchunks;
              ++r;
            }
          }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (rq[q] >= nrows) break;  // uniform across the warp
          const Enc8 enc = encode8<WIRE>(v[q]);
          if (chq[q] < H) store_wire8<WIRE>(s_dst[rq[q]], H, chq[q], lane, enc);
        }
      }
    }
    fence_sys();
    __syncthreads();
    if (tid < nrows) red_release_sys_add(at<unsigned int>(a.peers[s_src[tid]], a.g.carr(a.half, s.rank, W)), 1u);
    __syncthreads();
  }
}

// ---- combine recv -------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kLlThreads) ll_combine_recv_kernel(const LlCombineRecvArgs a) {
  __shared__ int s_expect[kMaxRanks];
  __shared__ int s_wire[kMaxRanks];
  __shared__ long long s_idx[kMaxTopk];
  __shared__ float s_w[kMaxTopk];
  __shared__ int s_ok;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int El = s.local_experts, W = s.world, K = a.num_topk, E = s.num_experts;
  const long long H = s.hidden, T = a.num_tokens;
  uint8_t* local = a.peers[s.rank];
  const u64 target = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half))) + 1;
  if (tid < W) s_expect[tid] = 0;
  if (tid == 0) s_ok = 1;
  __syncthreads();
  for (long long p = tid; p < T * K; p += blockDim.x) {
    const long long e = a.topk_idx[p];
    if (e >= 0 && e < E) atomicAdd(&s_expect[e / El], 1);
  }
  __syncthreads();
  if (tid < W) {
    const LlFlag* fl = at<LlFlag>(local, a.g.flag(a.half, tid, W));
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    if (!ll_wait<true>(&fl->seq, target, a.wait, peer_abort, tid, kLlCounterFlag, a.half)) {
      s_ok = 0;
    } else {
      const int kind = ld_volatile_s32(&fl->kind);
      s_wire[tid] = ld_volatile_s32(&fl->wire);
      if (kind != NEP_CUDA_LL_COMBINE) {
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterKind, a.half, NEP_CUDA_LL_COMBINE, kind);
        s_ok = 0;
      } else if (!ll_wait<false>(at<unsigned int>(local, a.g.carr(a.half, tid, W)), (unsigned long long)s_expect[tid], a.wait,
                                 peer_abort, tid, kLlCounterCombineRows, a.half)) {
        s_ok = 0;
      }
    }
  }
  __syncthreads();
  const int ob = dtype_size(a.out_dtype);
  if (s_ok && a.out != nullptr) {
    const uint8_t* rows = local + a.g.half(a.half);
    bool uniform_bf16 = true;
    for (int q = 0; q < W; ++q) uniform_bf16 &= s_wire[q] == NEP_WIRE_BF16;
    for (long long t = blockIdx.x; t < T; t += gridDim.x) {
      __syncthreads();
      if (tid < K) {
        s_idx[tid] = a.topk_idx[t * K + tid];
        s_w[tid] = a.topk_weights[t * K + tid];
      }
      __syncthreads();
      for (long long cc = (long long)warp * kWarpChannels; cc < H; cc += (long long)kLlWarps * kWarpChannels) {
        const long long ch = cc + lane * kLaneChannels;
        if (ch >= H) continue;
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (uniform_bf16 && K <= kLlFastTopk) {
          // Every source sent bf16: all K slots' 16-byte loads in flight, then the ordered sum.
          uint4 raw[kLlFastTopk];
          float wk[kLlFastTopk];
#pragma unroll
          for (int k = 0; k < kLlFastTopk; ++k) {
            wk[k] = 0.f;
            if (k < K && s_idx[k] >= 0) {
              wk[k] = s_w[k];
              raw[k] = ld_volatile_v4(rows + (t * s.max_topk + k) * a.g.crow_stride + ch * 2);
            }
          }
          bool first = true;
#pragma unroll
          for (int k = 0; k < kLlFastTopk; ++k) {
            if (k < K && s_idx[k] >= 0) {
              float v[8];
              unpack_bf16x8(raw[k], v);
#pragma unroll
              for (int i = 0; i < 8; ++i) acc[i] = first ? __fmul_rn(wk[k], v[i]) : __fadd_rn(acc[i], __fmul_rn(wk[k], v[i]));
              first = false;
            }
          }
        } else {
          bool first = true;
          for (int k = 0; k < K; ++k) {
            const long long e = s_idx[k];
            if (e < 0) continue;
            const float w = s_w[k];
            float v[8];
            decode_wire8(s_wire[e / El], rows + (t * s.max_topk + k) * a.g.crow_stride, H, ch, v);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[i] = first ? __fmul_rn(w, v[i]) : __fadd_rn(acc[i], __fmul_rn(w, v[i]));
            first = false;
          }
        }
        store_row8(static_cast<uint8_t*>(a.out) + t * H * ob, a.out_dtype, ch, acc);
      }
    }
  }
  const LlGeom g = a.g;
  const int half = a.half;
  finish_receive(local, a.g, a.half, target, a.wait, [&] {
    for (int q = 0; q < W; ++q) st_volatile_u32(at<unsigned int>(local, g.carr(half, q, W)), 0u);
  });
}

template <int WIRE, bool kRound>
cudaError_t set_send_smem() {
  return cudaFuncSetAttribute(ll_dispatch_send_kernel<WIRE, kRound>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              int(kLlSmemLimit));
}

}  // namespace

cudaError_t ll_prepare_kernels(int /*device*/) {
  cudaError_t e;
  if ((e = set_send_smem<NEP_WIRE_FP32, false>()) != cudaSuccess) return e;
  if ((e = set_send_smem<NEP_WIRE_BF16, false>()) != cudaSuccess) return e;
  if ((e = set_send_smem<NEP_WIRE_FP8, false>()) != cudaSuccess) return e;
  if ((e = set_send_smem<NEP_WIRE_MXFP8, false>()) != cudaSuccess) return e;
  return set_send_smem<NEP_WIRE_FP8, true>();
}

cudaError_t launch_ll_dispatch_send(const LlDispatchSendArgs& a, int blocks, cudaStream_t stream) {
  const size_t smem = size_t(a.s.num_experts) * size_t(a.words) * 4;
  const bool round = (a.flags & NEP_CUDA_LL_ROUND_SCALE) != 0;
  switch (a.wire) {
    case NEP_WIRE_FP32: ll_dispatch_send_kernel<NEP_WIRE_FP32, false><<<blocks, kLlThreads, smem, stream>>>(a); break;
    case NEP_WIRE_BF16: ll_dispatch_send_kernel<NEP_WIRE_BF16, false><<<blocks, kLlThreads, smem, stream>>>(a); break;
    case NEP_WIRE_FP8:
      if (round) ll_dispatch_send_kernel<NEP_WIRE_FP8, true><<<blocks, kLlThreads, smem, stream>>>(a);
      else ll_dispatch_send_kernel<NEP_WIRE_FP8, false><<<blocks, kLlThreads, smem, stream>>>(a);
      break;
    default: ll_dispatch_send_kernel<NEP_WIRE_MXFP8, false><<<blocks, kLlThreads, smem, stream>>>(a); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_ll_dispatch_recv(const LlDispatchRecvArgs& a, int blocks, cudaStream_t stream) {
  ll_dispatch_recv_kernel<<<blocks, kLlThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_ll_combine_send(const LlCombineSendArgs& a, int blocks, cudaStream_t stream) {
  switch (a.wire) {
    case NEP_WIRE_FP32: ll_combine_send_kernel<NEP_WIRE_FP32><<<blocks, kLlThreads, 0, stream>>>(a); break;
    case NEP_WIRE_BF16: ll_combine_send_kernel<NEP_WIRE_BF16><<<blocks, kLlThreads, 0, stream>>>(a); break;
    case NEP_WIRE_FP8: ll_combine_send_kernel<NEP_WIRE_FP8><<<blocks, kLlThreads, 0, stream>>>(a); break;
    default: ll_combine_send_kernel<NEP_WIRE_MXFP8><<<blocks, kLlThreads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_ll_combine_recv(const LlCombineRecvArgs& a, int blocks, cudaStream_t stream) {
  ll_combine_recv_kernel<<<blocks, kLlThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace nep
