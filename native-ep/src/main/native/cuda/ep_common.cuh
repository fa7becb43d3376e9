// Definitions shared by the host code and the kernels of the cuda-ipc transport: the layout of a
// rank's buffer, the records the GPU writes for the host, and the kernels' argument blocks.
#ifndef NATIVEEP_CUDA_EP_COMMON_CUH_
#define NATIVEEP_CUDA_EP_COMMON_CUH_

#include <cstddef>
#include <cstdint>

#include "nativeep/cuda_api.h"

namespace nep {
namespace cuda {

constexpr int kMaxRanks = NEP_CUDA_MAX_RANKS;
constexpr int kMaxChannels = NEP_CUDA_MAX_CHANNELS;
constexpr int kMaxLocalExperts = NEP_CUDA_MAX_LOCAL_EXPERTS;
constexpr int kMaxTopk = NEP_CUDA_MAX_TOPK;

// Tokens per block of the layout kernel; send positions are stored per block and fixed up with a
// per-block prefix (block_prefix) when they are read.
constexpr int kLayoutBlock = 256;

// Dispatch/combine kernels: one block per channel (= per SM), half of the warps send, half receive.
constexpr int kEpThreads = 1024;
constexpr int kSendWarps = 16;
constexpr int kRecvWarps = 16;
constexpr int kBatchPerWarp = 2;  // messages a receiving (or combine-sending) warp takes per batch

// Smallest ring (in messages) a call accepts: a batch of the sending side plus one of the receiving
// side must fit, with room to spare so both sides stream instead of taking turns.
constexpr int64_t kMinRingSlots = 4 * (kSendWarps + kRecvWarps * kBatchPerWarp);

// ---- Rank buffer layout -------------------------------------------------------------------------
// [control region | ring region]. Counters are 64-bit and monotonic over the buffer's life (never
// reset), each on its own 64-byte line. A "ring (s -> r, c)" is the queue of messages rank s sends
// to rank r on channel c; it lives in r's ring region.
constexpr size_t kCounterStride = 64;
constexpr size_t kCounterArray = size_t(kMaxRanks) * kMaxChannels * kCounterStride;

struct NotifySlot {  // what rank s tells rank r in the notify step
  int32_t status;    // 0 or a LayoutError kind of rank s's input
  int32_t num_tokens;
  int32_t num_topk;
  int32_t num_experts;
  int32_t tokens_per_rank[kMaxRanks];
  int32_t tokens_per_expert[kMaxLocalExperts];  // of r's experts only
};
constexpr size_t kNotifySlotStride = (sizeof(NotifySlot) + 63) / 64 * 64;

struct Ctrl {
  // In r's buffer, [s][c]: messages s has published on ring (s -> r, c). Written by s.
  static constexpr size_t kTail = 0;
  // In s's buffer, [r][c]: messages r has consumed from ring (s -> r, c). Written by r.
  static constexpr size_t kHead = kTail + kCounterArray;
  // In s's buffer, [r][c]: messages s has sent on ring (s -> r, c). Local.
  static constexpr size_t kSent = kHead + kCounterArray;
  // In r's buffer, [s][c]: messages r has consumed from ring (s -> r, c). Local.
  static constexpr size_t kConsumed = kSent + kCounterArray;
  // In r's buffer, [parity][s][c]: (dispatch call id << 32) | messages on ring (s -> r, c) in
  // that call. Written by s at the start of a dispatch.
  static constexpr size_t kChanCount = kConsumed + kCounterArray;
  // In r's buffer, [parity][s]: notify sequence number of the slot s wrote. Written by s.
  static constexpr size_t kNotifyFlag = kChanCount + 2 * kCounterArray;
  static constexpr size_t kNotifySlots = kNotifyFlag + 2 * kMaxRanks * kCounterStride;
  // Local words: abort flag, error claim, layout error claim.
  static constexpr size_t kAbort = kNotifySlots + 2 * kMaxRanks * kNotifySlotStride;
  static constexpr size_t kErrClaim = kAbort + 64;
  static constexpr size_t kLayoutClaim = kErrClaim + 64;
  static constexpr size_t kEnd = kLayoutClaim + 64;
  // The ring region starts on a 1 MiB boundary.
  static constexpr size_t kRingOffset = (kEnd + (1u << 20) - 1) / (1u << 20) * (1u << 20);
};

__host__ __device__ inline unsigned long long* counter_at(uint8_t* base, size_t array, int i,
                                                          int channel) {
  return reinterpret_cast<unsigned long long*>(
      base + array + (size_t(i) * kMaxChannels + channel) * kCounterStride);
}

// ---- Records the GPU writes into mapped host memory ---------------------------------------------

enum KernelId : int32_t {
  kKernelLayout = 1,
  kKernelNotify = 2,
  kKernelDispatch = 3,
  kKernelCombine = 4
};

enum CounterId : int32_t {
  kCounterNotifyFlag = 1,  // notify flag written by the peer
  kCounterTail = 2,        // ring tail written by the peer (messages published)
  kCounterHead = 3,        // ring head written by the peer (free space)
  kCounterChanCount = 4,   // per-channel message count of a dispatch
  kCounterDrain = 5,       // peer still reading messages of an earlier call
  kCounterBadMessage = 6,  // a message named a row outside the sender's range
};

struct ErrorRecord {  // first device-side failure of a buffer
  int32_t code;       // NEP_ERR_*
  int32_t kernel;     // KernelId
  int32_t rank;
  int32_t peer;
  int32_t counter;  // CounterId
  int32_t channel;
  long long expected;
  long long observed;
  int32_t valid;  // written last
  int32_t pad;
};

enum LayoutErrorKind : int32_t { kLayoutOk = 0, kLayoutOutOfRange = 1, kLayoutDuplicate = 2 };

struct LayoutError {  // first bad entry of topk_idx found by the layout kernel
  int32_t kind;
  int32_t slot;
  long long token;
  long long value;
  int32_t valid;
  int32_t pad;
};

enum NotifyStatus : int32_t {
  kNotifyOk = 0,
  kNotifyLocalInput = 1,  // this rank's topk_idx is invalid (LayoutError says why)
  kNotifyPeerInput = 2,   // rank bad_rank's topk_idx is invalid
  kNotifyMismatch = 3,    // rank bad_rank passed other num_topk / num_experts
};

struct NotifyResult {  // what the notify kernel hands the host
  int32_t status;
  int32_t bad_rank;
  int32_t bad_topk;
  int32_t bad_experts;
  long long num_recv;
  int32_t rank_prefix[kMaxRanks * kMaxRanks];
  int32_t rank_tokens[kMaxRanks];
  int32_t recv_raw[kMaxLocalExperts];
  int32_t recv_aligned[kMaxLocalExperts];
};

// ---- Kernel arguments ---------------------------------------------------------------------------

struct WaitCtx {
  unsigned int* abort;      // local buffer word: set on the first failure, ends every wait
  unsigned int* err_claim;  // local buffer word: the first failure claims the record
  ErrorRecord* record;      // mapped host memory
  unsigned long long timeout_ns;
  int32_t rank;
  int32_t kernel;
};

struct RingGeom {
  long long ring_offset;     // offset of the ring region in a buffer
  long long src_stride;      // bytes of ring region per source rank
  long long ring_bytes;      // bytes of one ring (per source, per channel) in this call
  long long slot_bytes;      // bytes of one message
  long long num_slots;       // messages per ring (Q)
  long long payload_offset;  // offset of the row payload in a message
};

__host__ __device__ inline uint8_t* ring_at(uint8_t* base, const RingGeom& g, int src,
                                            int channel) {
  return base + g.ring_offset + g.src_stride * src + g.ring_bytes * channel;
}

struct LayoutArgs {
  const long long* topk_idx;
  long long num_tokens;
  int32_t num_topk, num_experts, world, local_experts;
  int32_t* local_pos;     // [T, W] position of the token among the block's tokens sent to r, or -1
  int32_t* block_counts;  // [num_blocks, W]
  uint8_t* is_token_in_rank;   // [T, W] or null
  int32_t* tokens_per_rank;    // [W] (zeroed before) or null
  int32_t* tokens_per_expert;  // [E] (zeroed before) or null
  unsigned int* err_claim;
  LayoutError* err;
};

struct NotifyArgs {
  int32_t rank, world, num_topk, num_experts, local_experts, alignment;
  long long num_tokens;
  int32_t num_blocks;
  const int32_t* block_counts;
  int32_t* block_prefix;
  const int32_t* tokens_per_rank;
  const int32_t* tokens_per_expert;
  const LayoutError* layout_err;
  uint8_t* peers[kMaxRanks];  // every rank's buffer base as mapped here (own included)
  unsigned long long seq;
  int32_t parity;
  int32_t* rank_prefix;  // device [W, W]
  int32_t* rank_tokens;  // device [W]
  NotifyResult* result;  // mapped host memory
  WaitCtx wait;
};

struct RouteView {  // the handle's routing as the kernels read it
  const int32_t* local_pos;
  const int32_t* block_prefix;
  const int32_t* rank_prefix;
  const int32_t* rank_tokens;
  long long num_tokens;
  long long num_recv;
};

// Output "dtype" of a dispatch into wire rows (nep_cuda_dispatch_wire): each received row is
// stored as it travelled, wire_row_bytes(wire, hidden) bytes per row (internal, never a public
// NEP_DTYPE_* value).
constexpr int32_t kDtypeWireRows = 2;

struct DispatchArgs {
  int32_t rank, world, num_topk, local_experts, num_channels, drain_channels;
  long long hidden;
  const void* x;
  int32_t x_dtype, out_dtype;
  const long long* topk_idx;
  const float* topk_weights;
  RouteView route;
  void* recv_x;
  int32_t* recv_src_idx;
  long long* recv_topk_idx;
  float* recv_topk_weights;
  uint8_t* peers[kMaxRanks];
  RingGeom geom;
  unsigned long long call_id;
  int32_t parity;
  WaitCtx wait;
};

struct CombineArgs {
  int32_t rank, world, num_topk, num_channels, drain_channels;
  long long hidden;
  const void* y;
  int32_t y_dtype, out_dtype;
  const float* y_weights;
  RouteView route;
  const int32_t* recv_src_idx;
  void* out;
  float* out_weights;
  uint8_t* peers[kMaxRanks];
  RingGeom geom;
  WaitCtx wait;
};

// ---- Message layouts ----------------------------------------------------------------------------

__host__ __device__ constexpr long long align_up(long long v, long long a) {
  return (v + a - 1) / a * a;
}

// Dispatch message: [src token, send position, 2 pad] int32, K expert ids int32, K weights f32,
// then the wire row at payload_offset.
__host__ __device__ constexpr long long dispatch_payload_offset(int num_topk) {
  return align_up(16 + 8LL * num_topk, 16);
}
// Combine message: K weights f32, then the wire row.
__host__ __device__ constexpr long long combine_payload_offset(int num_topk) {
  return align_up(4LL * num_topk, 16);
}

// Wire row: data, then (FP8/MXFP8) the scales at a 16-byte aligned offset.
__host__ __device__ constexpr long long wire_scale_offset(int wire, long long hidden) {
  return wire == NEP_WIRE_FP32   ? 4 * hidden
         : wire == NEP_WIRE_BF16 ? 2 * hidden
                                 : align_up(hidden, 16);
}
__host__ __device__ constexpr long long wire_row_bytes(int wire, long long hidden) {
  return wire == NEP_WIRE_FP32   ? 4 * hidden
         : wire == NEP_WIRE_BF16 ? align_up(2 * hidden, 16)
         : wire == NEP_WIRE_FP8  ? align_up(align_up(hidden, 16) + 4 * ((hidden + 127) / 128), 16)
                                 : align_up(align_up(hidden, 16) + (hidden + 31) / 32, 16);
}

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_EP_COMMON_CUH_
