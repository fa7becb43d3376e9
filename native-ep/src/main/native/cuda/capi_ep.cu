// C ABI of the normal mode (include/nativeep/cuda_api.h): the buffer, its connection over cuda-ipc
// or NCCL, notify, dispatch, combine and the dense all-reduce, each a guarded call into the buffer
// (ep_buffer.h).
#include <algorithm>
#include <cstring>
#include <memory>

#include "ep_buffer.h"
#include "nativeep/export.h"
#include "nccl_api.h"

using namespace nep::cuda;

namespace {

cudaStream_t as_stream(int64_t s) { return reinterpret_cast<cudaStream_t>(s); }

void require_buffer(const nep_cuda_buffer* b) {
  if (b == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "buf is null");
}

void require_handle(const nep_cuda_handle* h) {
  if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
}

// Runs free() with `device` current, then makes the caller's device current again.
template <class Free>
void on_device(int device, Free&& free) {
  int prev = 0;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(device);
  free();
  if (have_prev) cudaSetDevice(prev);
}

}  // namespace

// ---- Buffer: creation, connection ---------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_buffer_create(int32_t rank, int32_t world_size, int32_t device,
                                          int64_t buffer_bytes, int64_t timeout_ms,
                                          nep_cuda_buffer** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    *out = std::make_unique<nep_cuda_buffer>(rank, world_size, device, buffer_bytes, timeout_ms)
               .release();
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_export(const nep_cuda_buffer* buf, uint8_t* out, int64_t cap,
                                          char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->export_blob(out, cap);
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_connect(nep_cuda_buffer* buf, const uint8_t* all_blobs,
                                           int64_t bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->connect_ipc(all_blobs, bytes);
  });
}

NEP_EXPORT int32_t nep_cuda_nccl_version(int32_t* version, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const NcclApi& api = nccl_or_throw();
    if (version != nullptr) *version = api.version;
  });
}

NEP_EXPORT int32_t nep_cuda_nccl_unique_id(uint8_t* out, int64_t cap, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    if (cap < NEP_CUDA_NCCL_ID_BYTES)
      fail(NEP_ERR_INVALID_ARGUMENT, "cap=", cap,
           " is below NEP_CUDA_NCCL_ID_BYTES=", NEP_CUDA_NCCL_ID_BYTES);
    const NcclApi& api = nccl_or_throw();
    ncclUniqueId id;
    check_nccl(api.GetUniqueId(&id), "ncclGetUniqueId");
    std::memcpy(out, id.internal, NEP_CUDA_NCCL_ID_BYTES);
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_connect_nccl(nep_cuda_buffer* buf, const uint8_t* unique_id,
                                                int64_t bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->connect_nccl(unique_id, bytes);
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_transport(const nep_cuda_buffer* buf) {
  return buf ? buf->transport_kind() : -1;
}

NEP_EXPORT int32_t nep_cuda_all_reduce_sum(nep_cuda_buffer* buf, int64_t data, int64_t count,
                                           int32_t dtype, int64_t stream, char* err,
                                           int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->all_reduce_sum(data, count, dtype, as_stream(stream));
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_set_timeout(nep_cuda_buffer* buf, int64_t timeout_ms, char* err,
                                               int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (timeout_ms <= 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " must be > 0");
    buf->timeout_ms = timeout_ms;
  });
}

NEP_EXPORT int32_t nep_cuda_buffer_rank(const nep_cuda_buffer* buf) { return buf ? buf->rank : -1; }
NEP_EXPORT int32_t nep_cuda_buffer_world_size(const nep_cuda_buffer* buf) {
  return buf ? buf->world : -1;
}
NEP_EXPORT int32_t nep_cuda_buffer_device(const nep_cuda_buffer* buf) {
  return buf ? buf->device : -1;
}
NEP_EXPORT int32_t nep_cuda_buffer_num_device_sms(const nep_cuda_buffer* buf) {
  return buf ? buf->device_sms : -1;
}

NEP_EXPORT int32_t nep_cuda_buffer_peer_scratch(const nep_cuda_buffer* buf, int32_t peer,
                                                int64_t* address, int64_t* bytes, char* err,
                                                int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->peer_scratch(peer, address, bytes);
  });
}

NEP_EXPORT int32_t nep_cuda_sync(nep_cuda_buffer* buf, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->sync(as_stream(stream));
  });
}

NEP_EXPORT void nep_cuda_buffer_destroy(nep_cuda_buffer* buf) {
  if (buf == nullptr) return;
  on_device(buf->device, [&] {
    cudaDeviceSynchronize();
    buf->close();
    delete buf;
  });
}

// ---- Layout, notify and the handle --------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_layout(nep_cuda_buffer* buf, int64_t topk_idx, int64_t num_tokens,
                                   int32_t num_topk, int32_t num_experts, int64_t tokens_per_rank,
                                   int64_t tokens_per_expert, int64_t is_token_in_rank,
                                   int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->layout(topk_idx, num_tokens, num_topk, num_experts, tokens_per_rank, tokens_per_expert,
                is_token_in_rank, as_stream(stream));
  });
}

NEP_EXPORT int32_t nep_cuda_dispatch_notify(nep_cuda_buffer* buf, int64_t topk_idx,
                                            int64_t num_tokens, int32_t num_topk,
                                            int32_t num_experts, int32_t expert_alignment,
                                            int64_t stream, nep_cuda_handle** out, char* err,
                                            int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    *out = buf->notify(topk_idx, num_tokens, num_topk, num_experts, expert_alignment,
                       as_stream(stream))
               .release();
  });
}

NEP_EXPORT int64_t nep_cuda_handle_num_tokens(const nep_cuda_handle* h) {
  return h ? h->num_tokens : -1;
}
NEP_EXPORT int64_t nep_cuda_handle_num_recv(const nep_cuda_handle* h) {
  return h ? h->num_recv : -1;
}
NEP_EXPORT int32_t nep_cuda_handle_num_topk(const nep_cuda_handle* h) {
  return h ? h->num_topk : -1;
}
NEP_EXPORT int32_t nep_cuda_handle_num_experts(const nep_cuda_handle* h) {
  return h ? h->num_experts : -1;
}
NEP_EXPORT int32_t nep_cuda_handle_num_local_experts(const nep_cuda_handle* h) {
  return h ? h->local_experts : -1;
}

NEP_EXPORT void nep_cuda_handle_recv_tokens_per_expert(const nep_cuda_handle* h, int32_t aligned,
                                                       int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  const auto& v = aligned ? h->h_aligned : h->h_raw;
  std::copy(v.begin(), v.end(), out);
}
NEP_EXPORT void nep_cuda_handle_rank_prefix_matrix(const nep_cuda_handle* h, int32_t* out) {
  if (h != nullptr && out != nullptr)
    std::copy(h->h_rank_prefix.begin(), h->h_rank_prefix.end(), out);
}
NEP_EXPORT void nep_cuda_handle_rank_num_tokens(const nep_cuda_handle* h, int32_t* out) {
  if (h != nullptr && out != nullptr)
    std::copy(h->h_rank_tokens.begin(), h->h_rank_tokens.end(), out);
}

NEP_EXPORT int32_t nep_cuda_handle_copy_is_token_in_rank(const nep_cuda_handle* h, uint8_t* out,
                                                         char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_handle(h);
    const size_t n = (size_t)h->num_tokens * h->world;
    if (n > 0 && out == nullptr)
      fail(NEP_ERR_INVALID_ARGUMENT, "out is null but is_token_in_rank has ", n, " bytes");
    DeviceGuard guard(h->owner->device);
    if (n > 0)
      check_cuda(cudaMemcpy(out, h->is_token_in_rank, n, cudaMemcpyDeviceToHost),
                 "cudaMemcpy is_token_in_rank");
  });
}

NEP_EXPORT int32_t nep_cuda_handle_copy_recv_src_idx(const nep_cuda_handle* h, int32_t* out,
                                                     char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_handle(h);
    if (h->num_recv > 0 && out == nullptr)
      fail(NEP_ERR_INVALID_ARGUMENT, "out is null but recv_src_idx has ", h->num_recv, " entries");
    if (!h->dispatched)
      fail(NEP_ERR_INVALID_ARGUMENT,
           "recv_src_idx is filled by the first dispatch with this handle; none ran yet");
    DeviceGuard guard(h->owner->device);
    if (h->num_recv > 0)
      check_cuda(
          cudaMemcpy(out, h->recv_src_idx, sizeof(int32_t) * h->num_recv, cudaMemcpyDeviceToHost),
          "cudaMemcpy recv_src_idx");
  });
}

NEP_EXPORT void nep_cuda_handle_destroy(nep_cuda_handle* h) {
  if (h == nullptr) return;
  on_device(h->owner->device, [&] { delete h; });
}

// ---- Dispatch and combine -----------------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_dispatch(nep_cuda_buffer* buf, nep_cuda_handle* h, int64_t x,
                                     int32_t x_dtype, int64_t hidden, int32_t wire,
                                     int64_t topk_idx, int64_t topk_weights, int64_t recv_x,
                                     int32_t recv_dtype, int64_t recv_topk_idx,
                                     int64_t recv_topk_weights, int32_t num_sms, int64_t stream,
                                     char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->dispatch(h, x, x_dtype, hidden, wire, topk_idx, topk_weights, recv_x, recv_dtype,
                  recv_topk_idx, recv_topk_weights, num_sms, as_stream(stream));
  });
}

NEP_EXPORT int32_t nep_cuda_dispatch_wire(nep_cuda_buffer* buf, nep_cuda_handle* h, int64_t x,
                                          int32_t x_dtype, int64_t hidden, int32_t wire,
                                          int64_t topk_idx, int64_t topk_weights, int64_t recv_rows,
                                          int64_t recv_row_bytes, int64_t recv_topk_idx,
                                          int64_t recv_topk_weights, int32_t num_sms,
                                          int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (recv_row_bytes < 0)
      fail(NEP_ERR_INVALID_ARGUMENT, "recv_row_bytes=", recv_row_bytes, " must be >= 0");
    buf->dispatch(h, x, x_dtype, hidden, wire, topk_idx, topk_weights, recv_rows, NEP_DTYPE_FP32,
                  recv_topk_idx, recv_topk_weights, num_sms, as_stream(stream), recv_row_bytes);
  });
}

NEP_EXPORT int32_t nep_cuda_combine(nep_cuda_buffer* buf, const nep_cuda_handle* h, int64_t y,
                                    int32_t y_dtype, int64_t hidden, int32_t wire,
                                    int64_t y_weights, int64_t out, int32_t out_dtype,
                                    int64_t out_weights, int32_t num_sms, int64_t stream, char* err,
                                    int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->combine(h, y, y_dtype, hidden, wire, y_weights, out, out_dtype, out_weights, num_sms,
                 as_stream(stream));
  });
}
