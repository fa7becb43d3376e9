// Launchers of the cuda-ipc kernels (defined in layout.cu, dispatch.cu, combine.cu).
#ifndef NATIVEEP_CUDA_KERNELS_H_
#define NATIVEEP_CUDA_KERNELS_H_

#include <cuda_runtime.h>

#include "ep_common.cuh"

namespace nep {
namespace cuda {

cudaError_t launch_layout(const LayoutArgs& a, cudaStream_t stream);
cudaError_t launch_notify(const NotifyArgs& a, cudaStream_t stream);
// Cooperative launches (all channels resident at once), a.num_channels blocks.
cudaError_t launch_dispatch(int wire, const DispatchArgs& a, cudaStream_t stream);
cudaError_t launch_combine(int wire, const CombineArgs& a, cudaStream_t stream);
// Resident blocks per SM of the dispatch/combine kernels (cooperative launches need >= 1).
cudaError_t dispatch_max_blocks_per_sm(int wire, int* blocks);
cudaError_t combine_max_blocks_per_sm(int wire, int* blocks);

// ---- nccl transport (nccl_path.cu; the count record of notify in layout.cu) ---------------------

// Notify: block_prefix of the layout blocks, and this rank's count record for the all-gather:
// [status, num_tokens, num_topk, num_experts, tokens_per_rank[kMaxRanks], tokens_per_expert[E]]
// int32.
struct NcclNotifyArgs {
  int32_t world, num_topk, num_experts, num_blocks;
  long long num_tokens;
  const int32_t* block_counts;
  int32_t* block_prefix;
  const int32_t* tokens_per_rank;
  const int32_t* tokens_per_expert;
  const LayoutError* layout_err;
  int32_t* record;
};
// Fixed size, so that ranks that disagree on num_experts still all-gather the same bytes (the
// disagreement is then reported, as by the cuda-ipc notify).
constexpr int kNcclRecordHeader = 4;
constexpr int kNcclRecordExperts = kNcclRecordHeader + kMaxRanks;  // offset of tokens_per_expert
constexpr int kNcclRecordInts = kNcclRecordExperts + kMaxRanks * kMaxLocalExperts;
cudaError_t launch_nccl_notify(const NcclNotifyArgs& a, cudaStream_t stream);

// Staging rows: row i of a stage is at stage + i * slot_bytes, with the message layouts of the
// cuda-ipc rings (dispatch: header, expert ids, weights, wire row; combine: weights, wire row).
struct NcclStageArgs {
  int32_t rank, world, num_topk, local_experts;
  long long hidden, num_tokens, num_recv;
  long long slot_bytes, payload_offset;
  int32_t in_dtype, out_dtype;
  RouteView route;
  long long send_off[kMaxRanks];  // first stage row of each destination (by send position)
  uint8_t*
      send_stage;  // dispatch: rows by (destination, send position); combine: rows by received row
  const uint8_t*
      recv_stage;  // dispatch: rows by received row; combine: rows by (rank, send position)
  // dispatch
  const void* x;
  const long long* topk_idx;
  const float* topk_weights;
  void* recv_x;
  int32_t* recv_src_idx;
  long long* recv_topk_idx;
  float* recv_topk_weights;
  // combine
  const void* y;
  const float* y_weights;
  void* out;
  float* out_weights;
};
// Pack this rank's tokens into send_stage (every destination, this rank included).
cudaError_t launch_nccl_dispatch_pack(int wire, const NcclStageArgs& a, cudaStream_t stream);
// Unpack recv_stage (num_recv rows in received order) into recv_x and the routing outputs.
cudaError_t launch_nccl_dispatch_unpack(int wire, const NcclStageArgs& a, cudaStream_t stream);
// Pack y (num_recv rows) and y_weights into send_stage in received order.
cudaError_t launch_nccl_combine_pack(int wire, const NcclStageArgs& a, cudaStream_t stream);
// out[t] = sum over ranks r that got t, in rank order, of recv_stage[send_off[r] + send_pos(t, r)].
cudaError_t launch_nccl_combine_reduce(int wire, const NcclStageArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_KERNELS_H_
