// The normal-mode rank buffer of the CUDA plug-in and the routing handle of one dispatch: what the
// opaque C types nep_cuda_buffer and nep_cuda_handle (include/nativeep/cuda_api.h) are. The buffer
// owns the device memory (control words and rings), the records the GPU writes for the host and
// the transport; it checks every call's arguments, then hands the exchange to its transport
// (ep_transport.h). The C ABI over it is capi_ep.cu.
#ifndef NATIVEEP_CUDA_EP_BUFFER_H_
#define NATIVEEP_CUDA_EP_BUFFER_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ep_common.cuh"
#include "ep_transport.h"
#include "host_utils.h"

struct nep_cuda_buffer {
  // Checks the arguments of nep_cuda_buffer_create, allocates and zeroes the control region.
  nep_cuda_buffer(int32_t rank, int32_t world_size, int32_t device, int64_t buffer_bytes,
                  int64_t timeout_ms);

  int32_t rank = 0, world = 0, device = 0, device_sms = 0;
  int64_t bytes = 0;
  int64_t timeout_ms = 30000;
  nep::cuda::DeviceMemory mem;
  std::unique_ptr<nep::cuda::MappedHost<nep::cuda::ErrorRecord>> err;
  std::unique_ptr<nep::cuda::MappedHost<nep::cuda::LayoutError>> layout_err;
  std::unique_ptr<nep::cuda::MappedHost<nep::cuda::NotifyResult>> notify_result;
  std::unique_ptr<nep::cuda::Event> done;
  std::unique_ptr<nep::cuda::EpTransport> transport;  // null until connected
  int failure_code = NEP_OK;
  std::string failure;

  uint8_t* local() const { return static_cast<uint8_t*>(mem.get()); }
  bool connected() const { return transport != nullptr; }
  int32_t transport_kind() const { return transport ? transport->kind() : NEP_CUDA_TRANSPORT_NONE; }

  // ---- Connection ----
  void export_blob(uint8_t* out, int64_t cap) const;
  void connect_ipc(const uint8_t* all_blobs, int64_t bytes);
  void connect_nccl(const uint8_t* unique_id, int64_t bytes);
  // Releases the transport before the buffer is freed.
  void close();

  // ---- Calls ----
  void layout(int64_t topk_idx, int64_t num_tokens, int32_t num_topk, int32_t num_experts,
              int64_t tokens_per_rank, int64_t tokens_per_expert, int64_t is_token_in_rank,
              cudaStream_t s);
  std::unique_ptr<nep_cuda_handle> notify(int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                                          int32_t num_experts, int32_t expert_alignment,
                                          cudaStream_t s);
  // recv_row_bytes >= 0: recv_x receives the wire rows as they travelled (nep_cuda_dispatch_wire),
  // recv_row_bytes bytes per row, instead of rows of recv_dtype.
  void dispatch(nep_cuda_handle* h, int64_t x, int32_t x_dtype, int64_t hidden, int32_t wire,
                int64_t topk_idx, int64_t topk_weights, int64_t recv_x, int32_t recv_dtype,
                int64_t recv_topk_idx, int64_t recv_topk_weights, int32_t num_sms, cudaStream_t s,
                int64_t recv_row_bytes = -1);
  void combine(const nep_cuda_handle* h, int64_t y, int32_t y_dtype, int64_t hidden, int32_t wire,
               int64_t y_weights, int64_t out, int32_t out_dtype, int64_t out_weights,
               int32_t num_sms, cudaStream_t s);
  void all_reduce_sum(int64_t data, int64_t count, int32_t dtype, cudaStream_t s);
  void peer_scratch(int32_t peer, int64_t* address, int64_t* bytes) const;
  void sync(cudaStream_t s);

  // ---- Used by the transports ----
  nep::cuda::WaitCtx wait_ctx(int kernel) const;
  // Fails the buffer with the device's error record if one was written.
  void check_device_error();
  // Reports (once, then clears) a bad topk_idx found by an asynchronous layout.
  void check_layout_error();
  std::string layout_message() const;
  void check_usable();
  // Waits for the work queued on `stream` so far, bounded by the timeout (plus a margin so that a
  // device-side timeout is reported first).
  void wait_stream(cudaStream_t stream, const char* what);
  // Marks the buffer failed with `message` and throws it.
  [[noreturn]] void fail_buffer(int code, std::string message);
};

struct nep_cuda_handle {
  const nep_cuda_buffer* owner = nullptr;
  int32_t rank = 0, world = 0, num_topk = 0, num_experts = 0, local_experts = 0, alignment = 1;
  int64_t num_tokens = 0, num_recv = 0, num_blocks = 0;
  // local_pos | block_counts | block_prefix | is_token_in_rank | tpr | tpe | rank_prefix |
  // rank_tokens
  nep::cuda::StreamMemory route_mem;
  nep::cuda::StreamMemory recv_mem;  // recv_src_idx
  int32_t* local_pos = nullptr;
  int32_t* block_counts = nullptr;
  int32_t* block_prefix = nullptr;
  uint8_t* is_token_in_rank = nullptr;
  int32_t* tokens_per_rank = nullptr;
  int32_t* tokens_per_expert = nullptr;
  int32_t* rank_prefix = nullptr;
  int32_t* rank_tokens = nullptr;
  int32_t* recv_src_idx = nullptr;
  std::vector<int32_t> h_rank_prefix, h_rank_tokens, h_raw, h_aligned;
  bool dispatched = false;

  nep::cuda::RouteView view() const {
    nep::cuda::RouteView v;
    v.local_pos = local_pos;
    v.block_prefix = block_prefix;
    v.rank_prefix = rank_prefix;
    v.rank_tokens = rank_tokens;
    v.num_tokens = num_tokens;
    v.num_recv = num_recv;
    return v;
  }
  void set_stream(cudaStream_t s) {
    route_mem.set_stream(s);
    recv_mem.set_stream(s);
  }
};

namespace nep {
namespace cuda {

// The checks of nep_cuda_all_reduce_sum's arguments, run by the transport that can all-reduce.
void check_all_reduce_args(int64_t data, int64_t count, int32_t dtype);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_EP_BUFFER_H_
