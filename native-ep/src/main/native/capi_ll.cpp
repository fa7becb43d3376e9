// C ABI: low-latency mode (nep_ll_*), over nep::LlBuffer.
#include <algorithm>
#include <memory>

#include "api_guard.h"
#include "capi_ll_objects.h"
#include "capi_objects.h"
#include "ll_buffer.h"
#include "nativeep/c_api.h"
#include "nativeep/export.h"

namespace {

nep::LlBuffer& buffer_of(nep_ll_buffer* buf) {
  if (buf == nullptr || !buf->impl) nep::fail_invalid("buffer is null");
  return *buf->impl;
}

nep_ll_op& op_of(nep_ll_op* op) {
  if (op == nullptr || !op->buffer) nep::fail_invalid("op is null");
  return *op;
}

template <class T>
T* as_ptr(int64_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

NEP_EXPORT int32_t nep_ll_buffer_create(nep_comm* comm, int64_t max_tokens_per_rank, int64_t hidden,
                                        int32_t num_experts, int32_t max_topk, int32_t max_wire,
                                        int64_t timeout_ms, nep_ll_buffer** out, char* err,
                                        int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    if (comm == nullptr || !comm->transport) nep::fail_invalid("comm is null");
    nep::LlConfig config;
    config.max_tokens = max_tokens_per_rank;
    config.hidden = hidden;
    config.num_experts = num_experts;
    config.max_topk = max_topk;
    config.max_wire = max_wire;
    config.timeout_ms = timeout_ms;
    auto buf = std::make_unique<nep_ll_buffer>();
    buf->impl = std::make_shared<nep::LlBuffer>(*comm->transport, config);
    *out = buf.release();
  });
}

NEP_EXPORT int64_t nep_ll_buffer_max_tokens_per_rank(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->config().max_tokens : -1;
}
NEP_EXPORT int64_t nep_ll_buffer_hidden(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->config().hidden : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_num_experts(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->config().num_experts : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_num_local_experts(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->num_local_experts() : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_max_topk(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->config().max_topk : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_max_wire(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->config().max_wire : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_rank(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->rank() : -1;
}
NEP_EXPORT int32_t nep_ll_buffer_world_size(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->world_size() : -1;
}
NEP_EXPORT int64_t nep_ll_buffer_bytes(const nep_ll_buffer* b) {
  return b && b->impl ? b->impl->region_bytes() : -1;
}
NEP_EXPORT void nep_ll_buffer_destroy(nep_ll_buffer* b) { delete b; }

NEP_EXPORT int32_t nep_ll_dispatch_send(nep_ll_buffer* buf, int64_t x, int64_t num_tokens,
                                        int64_t hidden, int64_t topk_idx, int32_t num_topk,
                                        int32_t wire, int32_t flags, nep_ll_op** out, char* err,
                                        int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    nep::LlBuffer& b = buffer_of(buf);
    auto op = std::make_unique<nep_ll_op>();
    op->buffer = buf->impl;
    op->impl = b.dispatch_send(as_ptr<const float>(x), num_tokens, hidden,
                               as_ptr<const int64_t>(topk_idx), num_topk, wire, flags);
    *out = op.release();
  });
}

NEP_EXPORT int32_t nep_ll_dispatch_recv(nep_ll_op* op, int64_t recv_x, int64_t recv_count,
                                        int64_t recv_src_info, int64_t recv_layout_range,
                                        nep_ll_handle** out_handle, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out_handle == nullptr) nep::fail_invalid("out_handle is null");
    *out_handle = nullptr;
    nep_ll_op& o = op_of(op);
    auto h = std::make_unique<nep_ll_handle>();
    h->impl =
        o.buffer->dispatch_recv(o.impl, as_ptr<float>(recv_x), as_ptr<int32_t>(recv_count),
                                as_ptr<int32_t>(recv_src_info), as_ptr<int64_t>(recv_layout_range));
    *out_handle = h.release();
  });
}

NEP_EXPORT int32_t nep_ll_combine_send(nep_ll_buffer* buf, const nep_ll_handle* h, int64_t y,
                                       int64_t hidden, int64_t topk_idx, int64_t topk_weights,
                                       int64_t num_tokens, int32_t num_topk, int32_t wire,
                                       nep_ll_op** out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    nep::LlBuffer& b = buffer_of(buf);
    if (h == nullptr) nep::fail_invalid("handle is null");
    auto op = std::make_unique<nep_ll_op>();
    op->buffer = buf->impl;
    op->impl =
        b.combine_send(h->impl, as_ptr<const float>(y), hidden, as_ptr<const int64_t>(topk_idx),
                       as_ptr<const float>(topk_weights), num_tokens, num_topk, wire);
    *out = op.release();
  });
}

NEP_EXPORT int32_t nep_ll_combine_recv(nep_ll_op* op, int64_t out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep_ll_op& o = op_of(op);
    o.buffer->combine_recv(o.impl, as_ptr<float>(out));
  });
}

NEP_EXPORT int32_t nep_ll_op_ready(nep_ll_op* op) {
  if (op == nullptr || !op->buffer) return 0;
  return op->buffer->ready(op->impl) ? 1 : 0;
}
NEP_EXPORT int32_t nep_ll_op_kind(const nep_ll_op* op) {
  return op ? static_cast<int32_t>(op->impl.kind) : -1;
}
NEP_EXPORT int32_t nep_ll_op_is_pending(const nep_ll_op* op) {
  return op && op->impl.state == nep::LlOpState::kPending ? 1 : 0;
}
NEP_EXPORT int64_t nep_ll_op_call_index(const nep_ll_op* op) {
  return op ? static_cast<int64_t>(op->impl.seq) : -1;
}
NEP_EXPORT int64_t nep_ll_op_rows_sent(const nep_ll_op* op) { return op ? op->impl.rows_sent : -1; }
NEP_EXPORT int64_t nep_ll_op_bytes_sent(const nep_ll_op* op) {
  return op ? op->impl.bytes_sent : -1;
}

NEP_EXPORT void nep_ll_op_destroy(nep_ll_op* op) {
  if (op == nullptr) return;
  if (op->buffer) op->buffer->abandon(op->impl);
  delete op;
}

NEP_EXPORT int64_t nep_ll_handle_num_tokens(const nep_ll_handle* h) {
  return h ? h->impl.num_tokens : -1;
}
NEP_EXPORT int32_t nep_ll_handle_num_topk(const nep_ll_handle* h) {
  return h ? h->impl.num_topk : -1;
}
NEP_EXPORT int32_t nep_ll_handle_num_local_experts(const nep_ll_handle* h) {
  return h ? h->impl.num_local_experts : -1;
}
NEP_EXPORT int32_t nep_ll_handle_world_size(const nep_ll_handle* h) {
  return h ? h->impl.world_size : -1;
}
NEP_EXPORT int64_t nep_ll_handle_max_tokens_per_rank(const nep_ll_handle* h) {
  return h ? h->impl.max_tokens : -1;
}
NEP_EXPORT int64_t nep_ll_handle_hidden(const nep_ll_handle* h) { return h ? h->impl.hidden : -1; }

NEP_EXPORT void nep_ll_handle_recv_count(const nep_ll_handle* h, int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.recv_count.begin(), h->impl.recv_count.end(), out);
}
NEP_EXPORT void nep_ll_handle_src_info(const nep_ll_handle* h, int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.src_token.begin(), h->impl.src_token.end(), out);
}
NEP_EXPORT void nep_ll_handle_layout_range(const nep_ll_handle* h, int64_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.layout_range.begin(), h->impl.layout_range.end(), out);
}
NEP_EXPORT void nep_ll_handle_destroy(nep_ll_handle* h) { delete h; }
