// C ABI: communicators, the notify handle, dispatch and combine.
#include <algorithm>
#include <memory>

#include "api_guard.h"
#include "capi_objects.h"
#include "engine.h"
#include "loopback_transport.h"
#include "nativeep/c_api.h"
#include "nativeep/export.h"

namespace {

nep::Transport& transport_of(nep_comm* comm) {
  if (comm == nullptr || !comm->transport) nep::fail_invalid("comm is null");
  return *comm->transport;
}

template <class T>
T* as_ptr(int64_t address) {
  return reinterpret_cast<T*>(address);
}

// The arguments nep_dispatch and nep_dispatch_wire share; each sets where the rows go.
nep::DispatchArgs dispatch_args(int64_t x, int64_t hidden, int32_t wire, int64_t topk_weights,
                                int64_t recv_topk_idx, int64_t recv_topk_weights) {
  nep::DispatchArgs args;
  args.x = as_ptr<const float>(x);
  args.hidden = hidden;
  args.wire = wire;
  args.topk_weights = as_ptr<const float>(topk_weights);
  args.recv_topk_idx = as_ptr<int64_t>(recv_topk_idx);
  args.recv_topk_weights = as_ptr<float>(recv_topk_weights);
  return args;
}

void run_dispatch(nep_comm* comm, const nep_handle* h, const nep::DispatchArgs& args) {
  nep::Transport& transport = transport_of(comm);
  nep::dispatch(transport, h != nullptr ? &h->impl : nullptr, args);
}

}  // namespace

NEP_EXPORT int32_t nep_comm_create_loopback(nep_comm** out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    auto comm = std::make_unique<nep_comm>();
    comm->transport = std::make_unique<nep::LoopbackTransport>();
    *out = comm.release();
  });
}

NEP_EXPORT int32_t nep_comm_rank(const nep_comm* comm) {
  return comm != nullptr && comm->transport ? comm->transport->rank() : -1;
}

NEP_EXPORT int32_t nep_comm_world_size(const nep_comm* comm) {
  return comm != nullptr && comm->transport ? comm->transport->world_size() : -1;
}

NEP_EXPORT void nep_comm_destroy(nep_comm* comm) { delete comm; }

NEP_EXPORT int32_t nep_dispatch_notify(nep_comm* comm, int64_t topk_idx, int64_t num_tokens,
                                       int32_t num_topk, int32_t num_experts,
                                       int32_t expert_alignment, nep_handle** out, char* err,
                                       int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::Transport& transport = transport_of(comm);
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    auto handle = std::make_unique<nep_handle>();
    handle->impl = nep::dispatch_notify(transport, as_ptr<const int64_t>(topk_idx), num_tokens,
                                        num_topk, num_experts, expert_alignment);
    *out = handle.release();
  });
}

// Getters return -1 (or write nothing) for a null handle.
NEP_EXPORT int64_t nep_handle_num_tokens(const nep_handle* h) {
  return h ? h->impl.num_tokens : -1;
}
NEP_EXPORT int64_t nep_handle_num_recv(const nep_handle* h) { return h ? h->impl.num_recv : -1; }
NEP_EXPORT int32_t nep_handle_num_topk(const nep_handle* h) { return h ? h->impl.num_topk : -1; }
NEP_EXPORT int32_t nep_handle_num_experts(const nep_handle* h) {
  return h ? h->impl.num_experts : -1;
}
NEP_EXPORT int32_t nep_handle_num_local_experts(const nep_handle* h) {
  return h ? h->impl.num_local_experts : -1;
}
NEP_EXPORT int32_t nep_handle_world_size(const nep_handle* h) {
  return h ? h->impl.world_size : -1;
}

NEP_EXPORT void nep_handle_recv_tokens_per_expert(const nep_handle* h, int32_t aligned,
                                                  int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  const auto& v = aligned ? h->impl.recv_tokens_per_expert_aligned : h->impl.recv_tokens_per_expert;
  std::copy(v.begin(), v.end(), out);
}

NEP_EXPORT void nep_handle_rank_prefix_matrix(const nep_handle* h, int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.rank_prefix_matrix.begin(), h->impl.rank_prefix_matrix.end(), out);
}

NEP_EXPORT void nep_handle_recv_src_idx(const nep_handle* h, int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.recv_src_idx.begin(), h->impl.recv_src_idx.end(), out);
}

NEP_EXPORT void nep_handle_is_token_in_rank(const nep_handle* h, uint8_t* out) {
  if (h == nullptr || out == nullptr) return;
  std::copy(h->impl.is_token_in_rank.begin(), h->impl.is_token_in_rank.end(), out);
}

NEP_EXPORT void nep_handle_destroy(nep_handle* h) { delete h; }

NEP_EXPORT int32_t nep_dispatch(nep_comm* comm, const nep_handle* h, int64_t x, int64_t hidden,
                                int32_t wire, int64_t topk_weights, int64_t recv_x,
                                int64_t recv_topk_idx, int64_t recv_topk_weights, char* err,
                                int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::DispatchArgs args =
        dispatch_args(x, hidden, wire, topk_weights, recv_topk_idx, recv_topk_weights);
    args.recv_x = as_ptr<float>(recv_x);
    run_dispatch(comm, h, args);
  });
}

NEP_EXPORT int32_t nep_dispatch_wire(nep_comm* comm, const nep_handle* h, int64_t x, int64_t hidden,
                                     int32_t wire, int64_t topk_weights, int64_t recv_rows,
                                     int64_t recv_row_bytes, int64_t recv_topk_idx,
                                     int64_t recv_topk_weights, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::DispatchArgs args =
        dispatch_args(x, hidden, wire, topk_weights, recv_topk_idx, recv_topk_weights);
    args.keep_wire = true;
    args.recv_rows = as_ptr<uint8_t>(recv_rows);
    args.recv_row_bytes = recv_row_bytes;
    run_dispatch(comm, h, args);
  });
}

NEP_EXPORT int32_t nep_combine(nep_comm* comm, const nep_handle* h, int64_t y, int64_t hidden,
                               int32_t wire, int64_t y_weights, int64_t out, int64_t out_weights,
                               char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::Transport& transport = transport_of(comm);
    nep::CombineArgs args;
    args.y = as_ptr<const float>(y);
    args.hidden = hidden;
    args.wire = wire;
    args.y_weights = as_ptr<const float>(y_weights);
    args.out = as_ptr<float>(out);
    args.out_weights = as_ptr<float>(out_weights);
    nep::combine(transport, h != nullptr ? &h->impl : nullptr, args);
  });
}
