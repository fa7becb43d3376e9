// Layout (which ranks and experts each token goes to) and the notify step (exchange of the counts
// with every rank over NVLink) of the cuda-ipc transport.
#include <climits>

#include "device_utils.cuh"
#include "kernels.h"

namespace nep {
namespace cuda {

namespace {

__device__ void record_layout_error(const LayoutArgs& a, int kind, long long token, int slot,
                                    long long value) {
  if (atomicCAS(a.err_claim, 0u, 1u) == 0u) {
    volatile LayoutError* e = a.err;
    e->kind = kind;
    e->token = token;
    e->slot = slot;
    e->value = value;
    __threadfence_system();
    e->valid = 1;
    __threadfence_system();
  }
}

// One thread per token. Per block: positions of its tokens among those sent to each rank (warp
// ballots), the block's count per rank, and a shared-memory histogram of experts.
__global__ void __launch_bounds__(kLayoutBlock) layout_kernel(const LayoutArgs a) {
  extern __shared__ int s_expert_hist[];  // [E] when tokens_per_expert is wanted
  __shared__ int s_warp_count[kLayoutBlock / 32][kMaxRanks];
  __shared__ int s_warp_offset[kLayoutBlock / 32][kMaxRanks];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int W = a.world, K = a.num_topk, E = a.num_experts, El = a.local_experts;
  const bool hist = a.tokens_per_expert != nullptr;
  if (hist)
    for (int e = tid; e < E; e += blockDim.x) s_expert_hist[e] = 0;
  __syncthreads();

  const long long t = (long long)blockIdx.x * kLayoutBlock + tid;
  unsigned int mask = 0;
  if (t < a.num_tokens) {
    const long long* row = a.topk_idx + t * K;
    for (int k = 0; k < K; ++k) {
      const long long e = row[k];
      if (e == -1) continue;
      if (e < -1 || e >= E) {
        record_layout_error(a, kLayoutOutOfRange, t, k, e);
        continue;
      }
      bool dup = false;
      for (int j = 0; j < k; ++j) dup |= (row[j] == e);
      if (dup) {
        record_layout_error(a, kLayoutDuplicate, t, k, e);
        continue;
      }
      mask |= 1u << (int)(e / El);
      if (hist) atomicAdd(&s_expert_hist[e], 1);
    }
  }
  const unsigned int below = (1u << lane) - 1u;
  int pos_in_warp[kMaxRanks];
#pragma unroll
  for (int r = 0; r < kMaxRanks; ++r) {
    if (r >= W) break;
    const bool in = (mask >> r) & 1u;
    const unsigned int ballot = __ballot_sync(0xffffffffu, in);
    pos_in_warp[r] = in ? __popc(ballot & below) : -1;
    if (lane == 0) s_warp_count[warp][r] = __popc(ballot);
    if (t < a.num_tokens && a.is_token_in_rank != nullptr)
      a.is_token_in_rank[t * W + r] = in ? 1 : 0;
  }
  __syncthreads();
  if (tid < W) {
    int acc = 0;
    for (int w = 0; w < kLayoutBlock / 32; ++w) {
      s_warp_offset[w][tid] = acc;
      acc += s_warp_count[w][tid];
    }
    if (a.block_counts != nullptr) a.block_counts[blockIdx.x * W + tid] = acc;
    if (a.tokens_per_rank != nullptr && acc > 0) atomicAdd(&a.tokens_per_rank[tid], acc);
  }
  __syncthreads();
  if (t < a.num_tokens && a.local_pos != nullptr) {
#pragma unroll
    for (int r = 0; r < kMaxRanks; ++r) {
      if (r >= W) break;
      a.local_pos[t * W + r] = pos_in_warp[r] < 0 ? -1 : s_warp_offset[warp][r] + pos_in_warp[r];
    }
  }
  if (hist) {
    for (int e = tid; e < E; e += blockDim.x)
      if (s_expert_hist[e] != 0) atomicAdd(&a.tokens_per_expert[e], s_expert_hist[e]);
  }
}

constexpr int kNotifyThreads = 1024;

// Exclusive scan of v over the block (kNotifyThreads threads); returns the prefix of this thread
// and writes the block total into *total.
__device__ int block_exclusive_scan(int v, int* s_warp, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, d);
    if (lane >= d) x += y;
  }
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kNotifyThreads / 32 ? s_warp[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, d);
      if (lane >= d) w += y;
    }
    s_warp[lane] = w;  // inclusive prefix over warps
  }
  __syncthreads();
  const int before = (warp == 0 ? 0 : s_warp[warp - 1]) + x - v;
  *total = s_warp[kNotifyThreads / 32 - 1];
  __syncthreads();
  return before;
}

// block_prefix[b][r] = tokens of the layout blocks < b sent to rank r, from block_counts
// [num_blocks, world], by the block's kNotifyThreads threads (s_warp: the scan's shared memory).
__device__ __forceinline__ void prefix_over_blocks(const int32_t* block_counts,
                                                   int32_t* block_prefix, int num_blocks, int world,
                                                   int* s_warp) {
  const int tid = threadIdx.x;
  for (int r = 0; r < world; ++r) {
    int carry = 0;
    for (int b0 = 0; b0 < num_blocks; b0 += kNotifyThreads) {
      const int b = b0 + tid;
      const int v = b < num_blocks ? block_counts[b * world + r] : 0;
      int total;
      const int before = block_exclusive_scan(v, s_warp, &total);
      if (b < num_blocks) block_prefix[b * world + r] = carry + before;
      carry += total;
    }
  }
}

// One block: prefix over the layout blocks, then the exchange. Each rank writes, into every rank's
// buffer (its own included), the slot [parity][me] with its counts, then raises the flag
// [parity][me] to `seq`; then it waits for every rank's flag and sums the slots addressed to it.
__global__ void __launch_bounds__(kNotifyThreads) notify_kernel(const NotifyArgs a) {
  __shared__ int s_warp[32];
  __shared__ int s_ok;
  // step 4's verdict: its own word, so no thread writes a word others may still read
  __shared__ int s_go;
  __shared__ int s_status;
  const int tid = threadIdx.x;
  if (tid == 0)
    s_status =
        ld_volatile_s32(&a.layout_err->valid) != 0 ? ld_volatile_s32(&a.layout_err->kind) : 0;
  const int W = a.world, me = a.rank, El = a.local_experts;

  // 1. block_prefix[b][r]: tokens of layout blocks < b sent to r.
  prefix_over_blocks(a.block_counts, a.block_prefix, a.num_blocks, W, s_warp);

  // 2. Write my slot into every rank's buffer.
  __syncthreads();
  const int status = s_status;
  for (int p = 0; p < W; ++p) {
    NotifySlot* slot = reinterpret_cast<NotifySlot*>(
        a.peers[p] + Ctrl::kNotifySlots + (size_t(a.parity) * kMaxRanks + me) * kNotifySlotStride);
    if (tid == 0) {
      slot->status = status;
      slot->num_tokens = (int32_t)a.num_tokens;
      slot->num_topk = a.num_topk;
      slot->num_experts = a.num_experts;
    }
    if (tid < W) slot->tokens_per_rank[tid] = a.tokens_per_rank[tid];
    for (int e = tid; e < El; e += kNotifyThreads)
      slot->tokens_per_expert[e] = a.tokens_per_expert[p * El + e];
  }
  __threadfence_system();
  __syncthreads();
  if (tid < W) {
    u64* flag = reinterpret_cast<u64*>(a.peers[tid] + Ctrl::kNotifyFlag +
                                       (size_t(a.parity) * kMaxRanks + me) * kCounterStride);
    st_release_sys(flag, a.seq);
  }

  // 3. Wait for every rank's slot.
  if (tid == 0) s_ok = 1;
  __syncthreads();
  if (tid < W) {
    const u64* flag = reinterpret_cast<const u64*>(
        a.peers[me] + Ctrl::kNotifyFlag + (size_t(a.parity) * kMaxRanks + tid) * kCounterStride);
    u64 seen;
    if (!wait_geq<true>(flag, a.seq, a.wait, tid, kCounterNotifyFlag, -1, &seen)) s_ok = 0;
  }
  __syncthreads();
  if (!s_ok) return;  // the host reads the error record

  // 4. Sum the slots addressed to me.
  const uint8_t* mine =
      a.peers[me] + Ctrl::kNotifySlots + size_t(a.parity) * kMaxRanks * kNotifySlotStride;
  auto slot_of = [&](int s) {
    return reinterpret_cast<const NotifySlot*>(mine + size_t(s) * kNotifySlotStride);
  };
  if (tid == 0) {
    int st = kNotifyOk, bad = -1, bad_k = 0, bad_e = 0;
    if (status != 0) {
      st = kNotifyLocalInput;
      bad = me;
    }
    for (int s = 0; s < W && st == kNotifyOk; ++s) {
      const NotifySlot* sl = slot_of(s);
      const int ss = ld_volatile_s32(&sl->status);
      const int sk = ld_volatile_s32(&sl->num_topk), se = ld_volatile_s32(&sl->num_experts);
      if (ss != 0) {
        st = kNotifyPeerInput;
        bad = s;
      } else if (sk != a.num_topk || se != a.num_experts) {
        st = kNotifyMismatch;
        bad = s;
        bad_k = sk;
        bad_e = se;
      }
    }
    a.result->status = st;
    a.result->bad_rank = bad;
    a.result->bad_topk = bad_k;
    a.result->bad_experts = bad_e;
    s_go = st == kNotifyOk;
  }
  __syncthreads();
  if (!s_go) return;
  if (tid < W * W) {
    const int i = tid / W, j = tid % W;
    int acc = 0;
    for (int s = 0; s <= i; ++s) acc += ld_volatile_s32(&slot_of(s)->tokens_per_rank[j]);
    a.rank_prefix[i * W + j] = acc;
    a.result->rank_prefix[i * W + j] = acc;
    if (i == W - 1 && j == me) a.result->num_recv = acc;
  }
  if (tid < W) {
    const int n = ld_volatile_s32(&slot_of(tid)->num_tokens);
    a.rank_tokens[tid] = n;
    a.result->rank_tokens[tid] = n;
  }
  for (int e = tid; e < El; e += kNotifyThreads) {
    int acc = 0;
    for (int s = 0; s < W; ++s) acc += ld_volatile_s32(&slot_of(s)->tokens_per_expert[e]);
    a.result->recv_raw[e] = acc;
    a.result->recv_aligned[e] = (acc + a.alignment - 1) / a.alignment * a.alignment;
  }
}

// nccl transport: block_prefix (as step 1 of notify_kernel) and this rank's count record.
__global__ void __launch_bounds__(kNotifyThreads) nccl_notify_kernel(const NcclNotifyArgs a) {
  __shared__ int s_warp[32];
  const int tid = threadIdx.x, W = a.world;
  prefix_over_blocks(a.block_counts, a.block_prefix, a.num_blocks, W, s_warp);
  if (tid == 0) {
    a.record[0] =
        ld_volatile_s32(&a.layout_err->valid) != 0 ? ld_volatile_s32(&a.layout_err->kind) : 0;
    a.record[1] = (int32_t)a.num_tokens;
    a.record[2] = a.num_topk;
    a.record[3] = a.num_experts;
  }
  if (tid < W) a.record[kNcclRecordHeader + tid] = a.tokens_per_rank[tid];
  for (int e = tid; e < a.num_experts; e += kNotifyThreads)
    a.record[kNcclRecordExperts + e] = a.tokens_per_expert[e];
}

}  // namespace

cudaError_t launch_nccl_notify(const NcclNotifyArgs& a, cudaStream_t stream) {
  nccl_notify_kernel<<<1, kNotifyThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_layout(const LayoutArgs& a, cudaStream_t stream) {
  const long long blocks = (a.num_tokens + kLayoutBlock - 1) / kLayoutBlock;
  if (blocks == 0) return cudaSuccess;
  const size_t smem = a.tokens_per_expert != nullptr ? size_t(a.num_experts) * sizeof(int) : 0;
  if (smem > 48 * 1024) {
    cudaError_t e =
        cudaFuncSetAttribute(layout_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  layout_kernel<<<(unsigned)blocks, kLayoutBlock, smem, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_notify(const NotifyArgs& a, cudaStream_t stream) {
  notify_kernel<<<1, kNotifyThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace nep
