// Kernels of the low-latency mode (protocol and buffer layout in ll_common.cuh).
//
// dispatch send: every block builds, in shared memory, a bitmap [E][ceil(T/32)] of which tokens
//   chose which expert (checking topk_idx on the way), so the place of message (t, e) among the
//   messages of (e, this rank) is a popcount: token order, no atomics, no exchange of counts. The
//   loads of the block's first token (x slices, expert choices) and the peers' released words are
//   issued before the bitmap, so their latency overlaps it. The last block, when it has no token
//   (else block 0), writes each destination's flag (the counts per local expert); blocks take
//   tokens, warps take 256-channel slices, each slice is cast once (FP8 scales fused) and stored to
//   the K destinations; after a token, one thread per slot raises the arrival counter.
// dispatch recv (two blocks per SM): every block reads all (local expert, source) counts with the
//   arrival counters and computes the row prefix, then takes an equal share of the rows (not of
//   the units, whose sizes vary): one thread per unit of its share waits if the counter was short,
//   a barrier releases the warps, which take (row, 512-channel chunk) items, four 16-byte loads in
//   flight. Arrival counters are never reset (consumed counts, see ll_common.cuh), so the last
//   block only publishes the half.
// send -> recv: a send lets the receive after it in the stream launch while it runs (programmatic
//   dependent launch); the receive waits for its data through the counters and for the kernel
//   before it only before writing outputs.
// combine send (two blocks per SM): blocks take received rows (prefix over the per-expert counts),
// a pass of up to 32
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
// dispatch receive: rows whose places a block resolves per pass
constexpr int kLlRecvRowsPerPass = 64;
// dispatch receive: channels of a (row, chunk) item (16 per lane)
constexpr int kLlRecvChunk = 512;

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

// Programmatic dependent launch (sm_90): a send lets the receive after it in the stream start
// early (the receive waits for its data through the buffer's counters, not through stream order);
// the receive waits for the grid before it to complete before writing its outputs, which kernels
// before it may still read.
__device__ __forceinline__ void let_dependents_launch() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void wait_prior_grid() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// Plain loads that skip L1, for rows whose arrival this block has acquired (the acquire and a
// barrier order them after the senders' stores).
__device__ __forceinline__ uint4 ld_na_v4(const void* p) {
  uint4 v;
  asm volatile("ld.global.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p)
               : "memory");
  return v;
}
__device__ __forceinline__ float ld_na_f32(const void* p) {
  float v;
  asm volatile("ld.global.L1::no_allocate.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  return v;
}

template <class T>
__device__ __forceinline__ T* at(uint8_t* base, long long off) {
  return reinterpret_cast<T*>(base + off);
}

// Waits until the counter at p (64-bit when kWide) reaches target. Also stops when this rank has
// failed (abort word) or the peer has (its abort word, read through its mapping).
template <bool kWide>
__device__ bool ll_wait(const void* p, unsigned long long target, const WaitCtx& w,
                        const unsigned int* peer_abort, int peer, int counter, int channel) {
  auto load = [&]() -> unsigned long long {
    return kWide ? ld_acquire_sys(static_cast<const u64*>(p))
                 : ld_acquire_sys_u32(static_cast<const unsigned int*>(p));
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

__device__ __forceinline__ void decode_wire8(int wire, const uint8_t* row, long long hidden,
                                             long long ch, float v[8]) {
  switch (wire) {
    case NEP_WIRE_FP32:
      decode8<NEP_WIRE_FP32>(load_wire8<NEP_WIRE_FP32>(row, hidden, ch), v);
      break;
    case NEP_WIRE_BF16:
      decode8<NEP_WIRE_BF16>(load_wire8<NEP_WIRE_BF16>(row, hidden, ch), v);
      break;
    case NEP_WIRE_FP8: decode8<NEP_WIRE_FP8>(load_wire8<NEP_WIRE_FP8>(row, hidden, ch), v); break;
    default: decode8<NEP_WIRE_MXFP8>(load_wire8<NEP_WIRE_MXFP8>(row, hidden, ch), v); break;
  }
}

// Publishes the end of a receive of half b: the last block to finish resets what `reset` names,
// then sets epoch[b] = released[b] = target (unless this rank failed: then the half stays held).
template <class Reset>
__device__ void finish_receive(uint8_t* local, const LlGeom& g, int b, unsigned long long target,
                               const WaitCtx& w, Reset&& reset) {
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

// ---- dispatch send ------------------------------------------------------------------------------

template <int WIRE, bool kRound>
__global__ void __launch_bounds__(kLlThreads) ll_dispatch_send_kernel(const LlDispatchSendArgs a) {
  extern __shared__ uint32_t bits[];  // [E][words]
  __shared__ long long s_bad;         // smallest bad (token * 64 + slot), or LLONG_MAX
  __shared__ uint8_t* s_dst[kMaxTopk];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int E = s.num_experts, El = s.local_experts, W = s.world, K = a.num_topk, words = a.words;
  const long long T = a.num_tokens, H = s.hidden;
  uint8_t* local = a.peers[s.rank];
  let_dependents_launch();
  const int xb = dtype_size(a.x_dtype);
  const long long t_first = blockIdx.x;

  // Issued first, used later (their latency overlaps the bitmap): this block's first token's x
  // slices (warp, warp + kLlWarps) and expert choices, and the peers' released words.
  Raw8 pre0{}, pre1{};
  long long e_first = -1;
  if (t_first < T) {
    const uint8_t* xrow = static_cast<const uint8_t*>(a.x) + t_first * H * xb;
    const long long ch0 = (long long)warp * kWarpChannels + lane * kLaneChannels;
    const long long ch1 = ch0 + (long long)kLlWarps * kWarpChannels;
    if (ch0 < H) pre0 = load_row8(xrow, a.x_dtype, ch0);
    if (ch1 < H) pre1 = load_row8(xrow, a.x_dtype, ch1);
    if (tid < K) e_first = a.topk_idx[t_first * K + tid];
  }
  const u64 epoch = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half)));
  // Every destination must have received the call two before on this half.
  bool ok = true;
  if (tid < W) {
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    ok = ll_wait<true>(at<u64>(a.peers[tid], a.g.released(a.half)), epoch, a.wait, peer_abort, tid,
                       kLlCounterReleased, a.half);
  }

  for (int i = tid; i < E * words; i += blockDim.x) bits[i] = 0u;
  if (tid == 0) s_bad = LLONG_MAX;
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
  ok = __syncthreads_and(ok) != 0;
  if (!ok) return;
  const bool bad = s_bad != LLONG_MAX;
  // The flags (counts per local expert of each destination) come from a block without a token
  // when there is one, so that no token waits for them.
  const int flag_block = int(gridDim.x) > T ? int(gridDim.x) - 1 : 0;
  if (int(blockIdx.x) == flag_block) {
    if (bad && tid == 0) {
      const long long key = s_bad, t = key / 64;
      const int k = int(key % 64);
      report_failure(a.wait, NEP_ERR_INVALID_ARGUMENT, s.rank, kLlCounterBadInput, k, t,
                     a.topk_idx[t * K + k]);
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
      if (lane == 0)
        st_release_sys(&fl->seq, epoch + 1);  // release: covers the warp's stores (__syncwarp)
    }
  }
  if (bad) return;
  for (long long t = t_first; t < T; t += gridDim.x) {
    const bool first = t == t_first;
    if (tid < K) {
      const long long e = first ? e_first : a.topk_idx[t * K + tid];
      uint8_t* dst = nullptr;
      if (e >= 0) {
        const int d = int(e / El), le = int(e % El);
        const uint32_t* row = &bits[e * words];
        int j = 0;
        for (int w = 0; w < int(t >> 5); ++w) j += __popc(row[w]);
        j += __popc(row[t >> 5] & ((1u << (t & 31)) - 1u));
        dst = a.peers[d] + a.g.half(a.half) +
              ((long long)(le * W + s.rank) * s.max_tokens + j) * a.g.msg_stride;
        *reinterpret_cast<int4*>(dst) = make_int4(int(t), tid, 0, 0);
      }
      s_dst[tid] = dst;
    }
    __syncthreads();
    const uint8_t* xrow = static_cast<const uint8_t*>(a.x) + t * H * xb;
    int i = 0;
    for (long long c0 = (long long)warp * kWarpChannels; c0 < H;
         c0 += (long long)kLlWarps * kWarpChannels, ++i) {
      const long long ch = c0 + lane * kLaneChannels;
      const bool valid = ch < H;
      float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (valid) {
        if (first && i == 0) raw_to_f32(pre0, a.x_dtype, v);
        else if (first && i == 1) raw_to_f32(pre1, a.x_dtype, v);
        else load_in8(xrow, a.x_dtype, ch, v);
      }
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
      const long long e = first ? e_first : a.topk_idx[t * K + tid];
      const int d = int(e / El), le = int(e % El);
      red_release_sys_add(at<unsigned int>(a.peers[d], a.g.darr(a.half, le, s.rank, El, W)), 1u);
    }
    __syncthreads();
  }
}

// ---- dispatch recv ------------------------------------------------------------------------------

// Rows of the receive are numbered in output order: unit u = le * W + src (local expert, source),
// its cnt(u) messages after those of the units before it, so s_pre[u] (an exclusive prefix over the
// counts every source published in its flag) is where unit u's rows start. Every block computes the
// whole prefix (one count per thread, read together with the unit's arrival counter and consumed
// count), then takes an equal share of the rows [r0, r1): a unit of that share whose counter had
// not yet reached its count gets one waiting thread, a barrier releases the block's warps, and
// warps take (row, 512-channel chunk) items, four in flight. Arrival counters are never reset: the
// consumed counts (two slots per half, by epoch parity) say where this call's messages start, so
// no write has to be made visible before the half is released except the consumed counts, written
// early (one block per unit) and fenced once.
constexpr int kLlMaxUnits = kMaxLocalExperts * kMaxRanks;

// Waits until (counter - base) mod 2^32 >= cnt: the messages of this call on a never-reset counter.
__device__ bool ll_wait_count(const unsigned int* p, unsigned int base, unsigned int cnt,
                              const WaitCtx& w, const unsigned int* peer_abort, int peer,
                              int channel) {
  unsigned int v = ld_acquire_sys_u32(p);
  if (v - base >= cnt) return true;
  const u64 start = global_timer_ns();
  for (unsigned int it = 1;; ++it) {
    v = ld_acquire_sys_u32(p);
    if (v - base >= cnt) return true;
    if ((it & 63u) == 0u) {
      if (is_aborted(w)) return false;
      if (peer_abort != nullptr && ld_volatile_u32(peer_abort) != 0u) {
        report_failure(w, NEP_ERR_PEER, peer, kLlCounterPeerAbort, channel, 0, 1);
        return false;
      }
      if (global_timer_ns() - start > w.timeout_ns) {
        report_failure(w, NEP_ERR_TIMEOUT, peer, kLlCounterDispatchRows, channel, (long long)cnt,
                       (long long)(v - base));
        return false;
      }
    }
  }
}

__device__ __forceinline__ void ll_store16(uint8_t* row, int dtype, long long ch,
                                           const float v[16]) {
  store_row8(row, dtype, ch, v);
  store_row8(row, dtype, ch + 8, v + 8);
}

__global__ void __launch_bounds__(kLlThreads, 2)
    ll_dispatch_recv_kernel(const LlDispatchRecvArgs a) {
  using Scan = cub::BlockScan<int, kLlThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int s_pre[kLlMaxUnits + 1];  // [U + 1] row offsets of the units
  __shared__ unsigned int
      s_arrived[kLlMaxUnits / 32];  // unit's messages all seen by the first read
  __shared__ int s_wire[kMaxRanks];
  __shared__ const uint8_t* s_src[kLlRecvRowsPerPass];  // wire row of the pass's row i
  __shared__ uint8_t* s_dst[kLlRecvRowsPerPass];        // output row (null: drain only)
  __shared__ int s_rwire[kLlRecvRowsPerPass];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const LlShape& s = a.s;
  const int El = s.local_experts, W = s.world, U = El * W, G = int(gridDim.x);
  const long long H = s.hidden, N = (long long)W * s.max_tokens, Tm = s.max_tokens;
  uint8_t* local = a.peers[s.rank];
  uint8_t* half = local + a.g.half(a.half);
  // in flight with the flag read
  const u64 epoch = ld_volatile_u64(at<u64>(local, a.g.epoch(a.half)));
  const u64 target = epoch + 1;
  bool ok = true, wrote = false;
  for (int i = tid; i < (U + 31) / 32; i += kLlThreads) s_arrived[i] = 0u;
  if (tid < W) {
    const LlFlag* fl = at<LlFlag>(local, a.g.flag(a.half, tid, W));
    const unsigned int* peer_abort = at<unsigned int>(a.peers[tid], a.g.abort_off);
    const u64 seq = ld_acquire_sys(&fl->seq);
    if (seq < target &&
        !ll_wait<true>(&fl->seq, target, a.wait, peer_abort, tid, kLlCounterFlag, a.half)) {
      ok = false;
    } else {
      const int kind = ld_volatile_s32(&fl->kind), status = ld_volatile_s32(&fl->status);
      s_wire[tid] = ld_volatile_s32(&fl->wire);
      if (kind != NEP_CUDA_LL_DISPATCH) {
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterKind, a.half, NEP_CUDA_LL_DISPATCH,
                       kind);
        ok = false;
      } else if (status != kLlStatusOk) {
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterPeerInput, a.half, 0, status);
        ok = false;
      }
    }
  }
  ok = __syncthreads_and(ok) != 0;
  if (ok) {
    // Units [tid * per, (tid + 1) * per): count, consumed count and arrival counter read together;
    // block u mod G writes the unit's consumed count for the next call on this half.
    const int per = (U + kLlThreads - 1) / kLlThreads, u0 = tid * per;
    int sum = 0;
    for (int i = 0; i < per; ++i) {
      const int u = u0 + i;
      if (u < U) {
        const int le = u / W, src = u % W;
        const int c = ld_volatile_s32(local + a.g.flag(a.half, src, W) + kLlFlagHeader + 4LL * le);
        const unsigned int base =
            ld_volatile_u32(at<unsigned int>(local, a.g.dcons(a.half, target + 1, le, src, El, W)));
        const unsigned int got =
            ld_acquire_sys_u32(at<unsigned int>(local, a.g.darr(a.half, le, src, El, W)));
        s_pre[u] = c;
        sum += c;
        if (got - base >= unsigned(c)) atomicOr(&s_arrived[u >> 5], 1u << (u & 31));
        if (u % G == int(blockIdx.x)) {
          st_volatile_u32(at<unsigned int>(local, a.g.dcons(a.half, target, le, src, El, W)),
                          base + unsigned(c));
          wrote = true;
        }
      }
    }
    int excl = 0;
    Scan(scan_tmp).ExclusiveSum(sum, excl);
    for (int i = 0; i < per; ++i) {
      const int u = u0 + i;
      if (u < U) {
        const int c = s_pre[u];
        s_pre[u] = excl;
        excl += c;
      }
    }
    if (u0 < U && u0 + per >= U) s_pre[U] = excl;
    __syncthreads();
    const int R = s_pre[U];
    const int r0 = int((long long)R * blockIdx.x / G),
              r1 = int((long long)R * (blockIdx.x + 1) / G);
    auto unit_of = [&](int r, int lo, int hi) {  // last u in [lo, hi) with s_pre[u] <= r
      while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (s_pre[mid] <= r) lo = mid;
        else hi = mid;
      }
      return lo;
    };
    // Arrival: a unit of [r0, r1) not complete at the first read gets one waiting thread.
    if (r0 < r1) {
      const int ua = unit_of(r0, 0, U), ub = unit_of(r1 - 1, ua, U);
      for (int u = ua + tid; u <= ub; u += kLlThreads) {
        const int cnt = s_pre[u + 1] - s_pre[u];
        if (cnt == 0 || (s_arrived[u >> 5] >> (u & 31)) & 1u) continue;
        const int le = u / W, src = u % W;
        const unsigned int base =
            ld_volatile_u32(at<unsigned int>(local, a.g.dcons(a.half, target + 1, le, src, El, W)));
        const unsigned int* arr = at<unsigned int>(local, a.g.darr(a.half, le, src, El, W));
        const unsigned int* peer_abort = at<unsigned int>(a.peers[src], a.g.abort_off);
        if (!ll_wait_count(arr, base, unsigned(cnt), a.wait, peer_abort, src, le)) ok = false;
      }
    }
    if (wrote)
      __threadfence();  // the consumed counts precede the release of the half (long since stored)
    ok = __syncthreads_and(ok) != 0;
    wait_prior_grid();  // the outputs below may still be read by the kernel before this one
    const int out_b = dtype_size(a.out_dtype);
    const int nchunks = int((H + kLlRecvChunk - 1) / kLlRecvChunk);
    const long long soff = wire_scale_offset(NEP_WIRE_FP8, H);
    for (int p0 = r0; ok && p0 < r1; p0 += kLlRecvRowsPerPass) {
      const int nrows = min(kLlRecvRowsPerPass, r1 - p0);
      int4 hdr = make_int4(0, 0, 0, 0);
      long long orow = 0;
      int rsrc = 0;
      if (tid < nrows) {
        const int r = p0 + tid;
        const int u = unit_of(r, 0, U), j = r - s_pre[u], le = u / W;
        rsrc = u % W;
        const uint8_t* msg = half + ((long long)u * Tm + j) * a.g.msg_stride;
        // used after the copy
        hdr = make_int4(ld_volatile_s32(msg), ld_volatile_s32(msg + 4), 0, 0);
        orow = (long long)le * N + (s_pre[u] - s_pre[le * W]) + j;
        s_src[tid] = msg + kLlMsgHeader;
        s_dst[tid] =
            a.recv_x != nullptr ? static_cast<uint8_t*>(a.recv_x) + orow * H * out_b : nullptr;
        s_rwire[tid] = s_wire[rsrc];
      }
      __syncthreads();
      if (a.recv_x != nullptr) {
        const int items = nrows * nchunks;
        for (int it0 = warp; it0 < items; it0 += 4 * kLlWarps) {
          // Four (row, chunk) items per warp in flight: lane takes 16 channels of each.
          uint4 raw[4];
          float sc[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int it = it0 + q * kLlWarps;
            raw[q] = make_uint4(0, 0, 0, 0);
            sc[q] = 0.f;
            if (it < items) {
              const int i = it / nchunks;
              const long long ch = (long long)(it - i * nchunks) * kLlRecvChunk + lane * 16;
              if (s_rwire[i] == NEP_WIRE_FP8 && ch < H) {
                raw[q] = ld_na_v4(s_src[i] + ch);
                sc[q] = ld_na_f32(s_src[i] + soff + (ch >> 7) * 4);
              }
            }
          }
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int it = it0 + q * kLlWarps;
            if (it >= items) break;  // uniform across the warp
            const int i = it / nchunks;
            const long long ch = (long long)(it - i * nchunks) * kLlRecvChunk + lane * 16;
            if (ch >= H) continue;
            float v[16];
            const int wire = s_rwire[i];
            if (wire == NEP_WIRE_FP8) {
              dequantize_e4m3x8(make_uint2(raw[q].x, raw[q].y), sc[q], v);
              dequantize_e4m3x8(make_uint2(raw[q].z, raw[q].w), sc[q], v + 8);
              // H is a multiple of 8, not always of 16: the row's last lane may hold 8 channels.
              if (ch + 16 <= H) ll_store16(s_dst[i], a.out_dtype, ch, v);
              else store_row8(s_dst[i], a.out_dtype, ch, v);
            } else {
              // Other wires (H is a multiple of 8, not always of 16): two 8-channel groups.
              decode_wire8(wire, s_src[i], H, ch, v);
              store_row8(s_dst[i], a.out_dtype, ch, v);
              if (ch + 8 < H) {
                decode_wire8(wire, s_src[i], H, ch + 8, v + 8);
                store_row8(s_dst[i], a.out_dtype, ch + 8, v + 8);
              }
            }
          }
        }
      }
      if (tid < nrows) {
        a.route_rows[orow] = make_int2(hdr.x, (rsrc << 8) | hdr.y);
        if (a.recv_src_info != nullptr) a.recv_src_info[orow] = hdr.x;
      }
      __syncthreads();
    }
    // Per local expert (block le mod G): its count, the layout ranges, the -1 tail of src_info.
    if (ok) {
      for (int le = blockIdx.x; le < El; le += G) {
        const int base = s_pre[le * W], total = s_pre[(le + 1) * W] - base;
        if (tid == 0) {
          a.route_counts[le] = total;
          if (a.recv_count != nullptr) a.recv_count[le] = total;
        }
        if (a.recv_layout_range != nullptr && tid < W) {
          const int u = le * W + tid;
          a.recv_layout_range[u] =
              ((long long)(s_pre[u] - base) << 32) | (long long)(s_pre[u + 1] - s_pre[u]);
        }
        if (a.recv_src_info != nullptr)
          for (long long x = total + tid; x < N; x += kLlThreads)
            a.recv_src_info[(long long)le * N + x] = -1;
      }
    }
  }
  // The last block to finish publishes the half: epoch[b] = released[b] = target (a failed rank
  // keeps the half held). Its only writes others must see first are the consumed counts (fenced by
  // their writers after the scan); the block's last thread, which has no stores in flight, counts
  // the block done.
  __syncthreads();
  if (tid != kLlThreads - 1) return;
  const bool aborted = is_aborted(a.wait);  // read in flight with the count below
  __threadfence();
  unsigned int* done = at<unsigned int>(local, a.g.done(a.half));
  if (atomicAdd(done, 1u) != unsigned(G - 1)) return;
  __threadfence();
  st_volatile_u32(done, 0u);
  if (aborted || is_aborted(a.wait)) return;
  st_volatile_u64(at<u64>(local, a.g.epoch(a.half)), target);
  st_release_sys(at<u64>(local, a.g.released(a.half)), target);
}

// ---- combine send -------------------------------------------------------------------------------

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
  let_dependents_launch();
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
    if (!ll_wait<true>(at<u64>(a.peers[tid], a.g.released(a.half)), epoch, a.wait, peer_abort, tid,
                       kLlCounterReleased, a.half))
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
      s_dst[tid] =
          a.peers[src] + a.g.half(a.half) + ((long long)t * s.max_topk + k) * a.g.crow_stride;
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
    if (tid < nrows)
      red_release_sys_add(at<unsigned int>(a.peers[s_src[tid]], a.g.carr(a.half, s.rank, W)), 1u);
    __syncthreads();
  }
}

// ---- combine recv -------------------------------------------------------------------------------

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
        report_failure(a.wait, NEP_ERR_PEER, tid, kLlCounterKind, a.half, NEP_CUDA_LL_COMBINE,
                       kind);
        s_ok = 0;
      } else if (!ll_wait<false>(at<unsigned int>(local, a.g.carr(a.half, tid, W)),
                                 (unsigned long long)s_expect[tid], a.wait, peer_abort, tid,
                                 kLlCounterCombineRows, a.half)) {
        s_ok = 0;
      }
    }
  }
  __syncthreads();
  wait_prior_grid();  // `out` may still be read by the kernel before this one
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
      for (long long cc = (long long)warp * kWarpChannels; cc < H;
           cc += (long long)kLlWarps * kWarpChannels) {
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
              for (int i = 0; i < 8; ++i)
                acc[i] = first ? __fmul_rn(wk[k], v[i]) : __fadd_rn(acc[i], __fmul_rn(wk[k], v[i]));
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
            for (int i = 0; i < 8; ++i)
              acc[i] = first ? __fmul_rn(w, v[i]) : __fadd_rn(acc[i], __fmul_rn(w, v[i]));
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
  return cudaFuncSetAttribute(ll_dispatch_send_kernel<WIRE, kRound>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, int(kLlSmemLimit));
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
    case NEP_WIRE_FP32:
      ll_dispatch_send_kernel<NEP_WIRE_FP32, false><<<blocks, kLlThreads, smem, stream>>>(a);
      break;
    case NEP_WIRE_BF16:
      ll_dispatch_send_kernel<NEP_WIRE_BF16, false><<<blocks, kLlThreads, smem, stream>>>(a);
      break;
    case NEP_WIRE_FP8:
      if (round)
        ll_dispatch_send_kernel<NEP_WIRE_FP8, true><<<blocks, kLlThreads, smem, stream>>>(a);
      else ll_dispatch_send_kernel<NEP_WIRE_FP8, false><<<blocks, kLlThreads, smem, stream>>>(a);
      break;
    default:
      ll_dispatch_send_kernel<NEP_WIRE_MXFP8, false><<<blocks, kLlThreads, smem, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

// Launches a receive kernel so that it may start while the kernel before it (its send) runs.
template <class Args>
cudaError_t launch_early(void (*kernel)(Args), const Args& a, int blocks, cudaStream_t stream) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(blocks));
  cfg.blockDim = dim3(kLlThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, a);
}

cudaError_t launch_ll_dispatch_recv(const LlDispatchRecvArgs& a, int blocks, cudaStream_t stream) {
  const cudaError_t e = launch_early(ll_dispatch_recv_kernel, a, blocks, stream);
  return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t launch_ll_combine_send(const LlCombineSendArgs& a, int blocks, cudaStream_t stream) {
  switch (a.wire) {
    case NEP_WIRE_FP32:
      ll_combine_send_kernel<NEP_WIRE_FP32><<<blocks, kLlThreads, 0, stream>>>(a);
      break;
    case NEP_WIRE_BF16:
      ll_combine_send_kernel<NEP_WIRE_BF16><<<blocks, kLlThreads, 0, stream>>>(a);
      break;
    case NEP_WIRE_FP8:
      ll_combine_send_kernel<NEP_WIRE_FP8><<<blocks, kLlThreads, 0, stream>>>(a);
      break;
    default: ll_combine_send_kernel<NEP_WIRE_MXFP8><<<blocks, kLlThreads, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_ll_combine_recv(const LlCombineRecvArgs& a, int blocks, cudaStream_t stream) {
  const cudaError_t e = launch_early(ll_combine_recv_kernel, a, blocks, stream);
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace cuda
}  // namespace nep
