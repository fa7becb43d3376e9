// Low-latency (LL) mode of the cuda-ipc transport: the layout of a rank's LL buffer, the kernels'
// argument blocks and the ids of the counters a failed wait names. Host side in ll_buffer.cu,
// kernels in ll_kernels.cu; the contract is cuda_api.h "Low-latency mode".
//
// Buffer of one rank (one cudaMalloc, shared with the peers through a CUDA IPC handle):
//   control  words of this rank (abort, error claim), per half b: epoch[b] (calls received on b),
//            released[b] (= epoch[b], read by peers: the half may be written again), done[b]
//            (blocks of the running receive that finished; the last one publishes), the flag
//            blocks [b][source] written by each source at the start of its send (call number,
//            kind, wire, status, per-local-expert message counts), the dispatch arrival counters
//            [b][local expert][source] (raised by the senders after their rows, never reset: they
//            count every message ever sent to (b, le, src), modulo 2^32) with the receiver's own
//            consumed counts [b][epoch parity][le][src] (the counter's value before this call),
//            and the combine arrival counters [b][source] (raised by the senders, reset by the
//            receive).
//   data     two halves; a half holds either
//              dispatch: [El][W][Tm] messages (16-byte header {source token, top-k slot}, wire
//                        row); message j of (expert e, source s) is the j-th token of s, in token
//                        order, that chose e: fixed places, so no counts precede the data;
//              combine:  [Tm][max_topk] wire rows indexed by (token, slot) at the source rank.
// Protocol of call n on half b (epoch E = calls received on b so far, the same on every rank):
//   send:    wait until every destination d has released[b] >= E, write the flag (number E + 1)
//            and the rows, raise d's arrival counters (release, system scope);
//   receive: wait for every source's flag == E + 1 and for the arrival counters to reach the
//            counts (dispatch: counter - consumed >= count, then consumed[other parity] = counter
//            value expected after this call; combine: counter >= count, then reset), read, then
//            the last block sets epoch[b] = released[b] = E + 1. Nothing the host passes depends on
//            n, so a captured graph replays correctly.
#ifndef NATIVEEP_CUDA_LL_COMMON_CUH_
#define NATIVEEP_CUDA_LL_COMMON_CUH_

#include <cstdint>

#include "ep_common.cuh"

namespace nep {
namespace cuda {

constexpr int kLlThreads = 512;
constexpr int kLlWarps = kLlThreads / 32;
constexpr long long kLlMsgHeader = 16;
constexpr long long kLlSmemLimit = 200 * 1024;  // dynamic shared memory of the send kernel

// Kernel ids of the error record (KernelId continues here).
enum LlKernelId : int32_t {
  kKernelLlDispatchSend = 11,
  kKernelLlDispatchRecv = 12,
  kKernelLlCombineSend = 13,
  kKernelLlCombineRecv = 14,
};

// Counter ids of the error record (CounterId continues here).
enum LlCounterId : int32_t {
  kLlCounterReleased = 21,      // peer has not released the half (still receiving an older call)
  kLlCounterFlag = 22,          // peer's flag (call number) of this call
  kLlCounterDispatchRows = 23,  // messages of (local expert, peer) arrived
  kLlCounterCombineRows = 24,   // combine rows from peer arrived
  kLlCounterKind = 25,          // peer issued the other kind of call (sequences differ)
  kLlCounterBadInput = 26,      // this rank's topk_idx is invalid (expected = token * 64 + slot)
  kLlCounterPeerInput = 27,     // peer's topk_idx was invalid
  kLlCounterPeerAbort = 28,     // peer failed
  kLlCounterExtraRows = 29,     // more combine rows than the routing expects
};

enum LlStatus : int32_t { kLlStatusOk = 0, kLlStatusBadInput = 1 };

struct LlFlag {  // written by a source into the destination's buffer; seq last (release)
  unsigned long long seq;
  int32_t kind;
  int32_t wire;
  int32_t status;
  int32_t tokens;
  int32_t pad[2];
  // int32_t counts[El] follow (dispatch: messages per local expert of the destination)
};
constexpr long long kLlFlagHeader = 32;

// Offsets (bytes) inside a rank's LL buffer; the same on every rank.
struct LlGeom {
  long long abort_off, claim_off;
  long long epoch_off, released_off, done_off;  // [2] each, 64-byte stride
  long long flags_off, flag_stride;             // [2][W] flag blocks
  long long darr_off;                           // [2][El][W] uint32
  long long dcons_off;                          // [2][2][El][W] uint32 (half, parity of the epoch)
  long long carr_off;                           // [2][W] uint32, 64-byte stride
  long long data_off, half_bytes;               // [2] halves
  long long msg_stride;                         // dispatch message (header + row)
  long long crow_stride;                        // combine row
  long long total;

  __host__ __device__ long long epoch(int b) const { return epoch_off + 64LL * b; }
  __host__ __device__ long long released(int b) const { return released_off + 64LL * b; }
  __host__ __device__ long long done(int b) const { return done_off + 64LL * b; }
  __host__ __device__ long long flag(int b, int src, int world) const {
    return flags_off + (long long)(b * world + src) * flag_stride;
  }
  __host__ __device__ long long darr(int b, int le, int src, int local, int world) const {
    return darr_off + 4LL * (((long long)b * local + le) * world + src);
  }
  // Messages of (le, src) on half b received by the calls before the one with epoch target t, kept
  // in slot t & 1 (the receive of target t reads slot (t + 1) & 1 and writes slot t & 1).
  __host__ __device__ long long dcons(int b, unsigned long long t, int le, int src, int local,
                                      int world) const {
    return dcons_off + 4LL * ((((long long)b * 2 + (long long)(t & 1)) * local + le) * world + src);
  }
  __host__ __device__ long long carr(int b, int src, int world) const {
    return carr_off + 64LL * ((long long)b * world + src);
  }
  __host__ __device__ long long half(int b) const { return data_off + (long long)b * half_bytes; }
};

struct LlShape {
  int32_t rank, world, local_experts, num_experts, max_topk;
  long long max_tokens, hidden;
};

struct LlDispatchSendArgs {
  LlShape s;
  LlGeom g;
  int32_t half, num_topk, wire, flags, x_dtype;
  long long num_tokens;
  const void* x;
  const long long* topk_idx;
  int32_t words;  // ceil(num_tokens / 32): bitmap words per expert
  uint8_t* peers[kMaxRanks];
  WaitCtx wait;
};

struct LlDispatchRecvArgs {
  LlShape s;
  LlGeom g;
  int32_t half, out_dtype;
  void* recv_x;  // null: drain only (abandoned op)
  int32_t* recv_count;
  int32_t* recv_src_info;
  long long* recv_layout_range;
  int2* route_rows;       // [El][N] {token, (source << 8) | slot}
  int32_t* route_counts;  // [El]
  uint8_t* peers[kMaxRanks];
  WaitCtx wait;
};

struct LlCombineSendArgs {
  LlShape s;
  LlGeom g;
  int32_t half, wire, y_dtype;
  const void* y;
  const int2* route_rows;
  const int32_t* route_counts;
  uint8_t* peers[kMaxRanks];
  WaitCtx wait;
};

struct LlCombineRecvArgs {
  LlShape s;
  LlGeom g;
  int32_t half, num_topk, out_dtype;
  long long num_tokens;
  const long long* topk_idx;
  const float* topk_weights;
  void* out;  // null: drain only
  uint8_t* peers[kMaxRanks];
  WaitCtx wait;
};

// sets the shared-memory limits once per process/device
cudaError_t ll_prepare_kernels(int device);
cudaError_t launch_ll_dispatch_send(const LlDispatchSendArgs& a, int blocks, cudaStream_t stream);
cudaError_t launch_ll_dispatch_recv(const LlDispatchRecvArgs& a, int blocks, cudaStream_t stream);
cudaError_t launch_ll_combine_send(const LlCombineSendArgs& a, int blocks, cudaStream_t stream);
cudaError_t launch_ll_combine_recv(const LlCombineRecvArgs& a, int blocks, cudaStream_t stream);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_LL_COMMON_CUH_
