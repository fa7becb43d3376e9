// C ABI of the low-latency mode (include/nativeep/cuda_api.h "Low-latency mode"): each entry a
// guarded call into the low-latency buffer (ll_buffer.h).
#include <memory>

#include "ll_buffer.h"
#include "nativeep/cuda_api.h"
#include "nativeep/export.h"

using namespace nep::cuda;

namespace {

cudaStream_t as_stream(int64_t s) { return reinterpret_cast<cudaStream_t>(s); }

void require_buffer(const nep_cuda_ll_buffer* b) {
  if (b == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "buf is null");
}

void require_out(const void* out, const char* name) {
  if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, name, " is null");
}

// An op of `kind` whose receive is still pending.
void check_op(const nep_cuda_ll_op* op, int32_t kind) {
  if (op == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "op is null");
  if (op->kind != kind)
    fail(NEP_ERR_INVALID_ARGUMENT, "op of call ", op->call, " is a ",
         op->kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine", ", not a ",
         kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine");
  if (!op->pending)
    fail(NEP_ERR_INVALID_ARGUMENT, "op of call ", op->call, " was already received");
}

}  // namespace

// ---- Buffer ------------------------------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_ll_buffer_create(int32_t rank, int32_t world_size, int32_t device,
                                             int64_t max_tokens_per_rank, int64_t hidden,
                                             int32_t num_experts, int32_t max_topk,
                                             int32_t max_wire, int64_t timeout_ms,
                                             nep_cuda_ll_buffer** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_out(out, "out");
    *out = nullptr;
    *out = std::make_unique<nep_cuda_ll_buffer>(rank, world_size, device, max_tokens_per_rank,
                                                hidden, num_experts, max_topk, max_wire, timeout_ms)
               .release();
  });
}

NEP_EXPORT int32_t nep_cuda_ll_buffer_export(const nep_cuda_ll_buffer* buf, uint8_t* out,
                                             int64_t cap, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->export_blob(out, cap);
  });
}

NEP_EXPORT int32_t nep_cuda_ll_buffer_connect(nep_cuda_ll_buffer* buf, const uint8_t* all_blobs,
                                              int64_t bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->connect(all_blobs, bytes);
  });
}

NEP_EXPORT int32_t nep_cuda_ll_buffer_set_num_sms(nep_cuda_ll_buffer* buf, int32_t num_sms,
                                                  char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (num_sms < 1 || num_sms > buf->device_sms)
      fail(NEP_ERR_INVALID_ARGUMENT, "num_sms=", num_sms, " is outside [1, ", buf->device_sms,
           "] (SMs of device ", buf->device, ")");
    buf->num_sms = num_sms;
  });
}

NEP_EXPORT int32_t nep_cuda_ll_buffer_set_timeout(nep_cuda_ll_buffer* buf, int64_t timeout_ms,
                                                  char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (timeout_ms <= 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " must be > 0");
    buf->timeout_ms = timeout_ms;
  });
}

NEP_EXPORT int64_t nep_cuda_ll_buffer_max_tokens_per_rank(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.max_tokens : -1;
}
NEP_EXPORT int64_t nep_cuda_ll_buffer_hidden(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.hidden : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_num_experts(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.num_experts : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_num_local_experts(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.local_experts : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_max_topk(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.max_topk : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_max_wire(const nep_cuda_ll_buffer* b) {
  return b ? b->max_wire : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_rank(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.rank : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_world_size(const nep_cuda_ll_buffer* b) {
  return b ? b->shape.world : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_device(const nep_cuda_ll_buffer* b) {
  return b ? b->device : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_buffer_num_sms(const nep_cuda_ll_buffer* b) {
  return b ? b->num_sms : -1;
}
NEP_EXPORT int64_t nep_cuda_ll_buffer_bytes(const nep_cuda_ll_buffer* b) {
  return b ? b->geom.total : -1;
}

NEP_EXPORT int32_t nep_cuda_ll_sync(nep_cuda_ll_buffer* buf, int64_t stream, char* err,
                                    int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->sync(as_stream(stream));
  });
}

NEP_EXPORT int32_t nep_cuda_ll_buffer_poison(nep_cuda_ll_buffer* buf, int64_t stream, char* err,
                                             int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->poison(as_stream(stream));
  });
}

NEP_EXPORT void nep_cuda_ll_buffer_destroy(nep_cuda_ll_buffer* buf) {
  if (buf == nullptr) return;
  int prev = 0;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(buf->device);
  cudaDeviceSynchronize();
  delete buf;
  if (have_prev) cudaSetDevice(prev);
}

// ---- Dispatch and combine ----------------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_ll_dispatch_send(nep_cuda_ll_buffer* buf, int64_t x, int32_t x_dtype,
                                             int64_t num_tokens, int64_t hidden, int64_t topk_idx,
                                             int32_t num_topk, int32_t wire, int32_t flags,
                                             int64_t stream, nep_cuda_ll_op** out, char* err,
                                             int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    require_out(out, "out");
    *out = nullptr;
    *out = buf->dispatch_send(x, x_dtype, num_tokens, hidden, topk_idx, num_topk, wire, flags,
                              as_stream(stream))
               .release();
  });
}

NEP_EXPORT int32_t nep_cuda_ll_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype,
                                             int64_t recv_count, int64_t recv_src_info,
                                             int64_t recv_layout_range, int64_t stream,
                                             nep_cuda_ll_handle** out_handle, char* err,
                                             int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    check_op(op, NEP_CUDA_LL_DISPATCH);
    require_out(out_handle, "out_handle");
    *out_handle = nullptr;
    *out_handle = op->buf
                      ->dispatch_recv(op, recv_x, recv_dtype, recv_count, recv_src_info,
                                      recv_layout_range, as_stream(stream))
                      .release();
  });
}

NEP_EXPORT int32_t nep_cuda_ll_combine_send(nep_cuda_ll_buffer* buf, const nep_cuda_ll_handle* h,
                                            int64_t y, int32_t y_dtype, int64_t topk_idx,
                                            int64_t topk_weights, int32_t wire, int64_t stream,
                                            nep_cuda_ll_op** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    require_out(out, "out");
    *out = nullptr;
    *out =
        buf->combine_send(h, y, y_dtype, topk_idx, topk_weights, wire, as_stream(stream)).release();
  });
}

NEP_EXPORT int32_t nep_cuda_ll_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype,
                                            int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    check_op(op, NEP_CUDA_LL_COMBINE);
    op->buf->combine_recv(op, out, out_dtype, as_stream(stream));
  });
}

// ---- Ops and handles ---------------------------------------------------------------------------

NEP_EXPORT int32_t nep_cuda_ll_op_kind(const nep_cuda_ll_op* op) { return op ? op->kind : -1; }
NEP_EXPORT int32_t nep_cuda_ll_op_is_pending(const nep_cuda_ll_op* op) {
  return op && op->pending ? 1 : 0;
}
NEP_EXPORT int64_t nep_cuda_ll_op_call_index(const nep_cuda_ll_op* op) {
  return op ? (int64_t)op->call : -1;
}
NEP_EXPORT int64_t nep_cuda_ll_op_num_tokens(const nep_cuda_ll_op* op) {
  return op ? op->num_tokens : -1;
}

NEP_EXPORT void nep_cuda_ll_op_destroy(nep_cuda_ll_op* op) {
  if (op == nullptr) return;
  if (op->pending && op->buf != nullptr) op->buf->abandon(op);
  delete op;
}

NEP_EXPORT int64_t nep_cuda_ll_handle_num_tokens(const nep_cuda_ll_handle* h) {
  return h ? h->num_tokens : -1;
}
NEP_EXPORT int32_t nep_cuda_ll_handle_num_topk(const nep_cuda_ll_handle* h) {
  return h ? h->num_topk : -1;
}
NEP_EXPORT int64_t nep_cuda_ll_handle_call_index(const nep_cuda_ll_handle* h) {
  return h ? (int64_t)h->call : -1;
}
NEP_EXPORT void nep_cuda_ll_handle_destroy(nep_cuda_ll_handle* h) { delete h; }
