// The low-latency buffer of the CUDA plug-in (cuda_api.h "Low-latency mode"; buffer layout and
// protocol in ll_common.cuh, kernels in ll_kernels.cu): what the opaque C types nep_cuda_ll_buffer,
// nep_cuda_ll_op and nep_cuda_ll_handle are. The host keeps only the call bookkeeping (which half
// a call uses, which calls await their receive, which dispatch owns each routing slot); everything
// that depends on the data stays on the device. Ranks reach each other over cuda-ipc
// (ipc_peers.h). The C ABI over it is capi_ll.cu.
#ifndef NATIVEEP_CUDA_LL_BUFFER_H_
#define NATIVEEP_CUDA_LL_BUFFER_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "host_utils.h"
#include "ipc_peers.h"
#include "ll_common.cuh"

struct nep_cuda_ll_op;
struct nep_cuda_ll_handle;

struct nep_cuda_ll_buffer {
  // Checks the arguments of nep_cuda_ll_buffer_create, lays out and allocates the buffer.
  nep_cuda_ll_buffer(int32_t rank, int32_t world_size, int32_t device, int64_t max_tokens_per_rank,
                     int64_t hidden, int32_t num_experts, int32_t max_topk, int32_t max_wire,
                     int64_t timeout_ms);

  nep::cuda::LlShape shape{};
  nep::cuda::LlGeom geom{};
  int32_t device = 0, device_sms = 0, num_sms = 0, max_wire = 0;
  int64_t timeout_ms = 30000;
  nep::cuda::DeviceMemory mem;    // shared (IPC)
  nep::cuda::DeviceMemory route;  // [2] routing slots: rows [El][N] int2, counts [El] int32
  long long route_rows_bytes = 0, route_slot_bytes = 0;
  std::unique_ptr<nep::cuda::MappedHost<nep::cuda::ErrorRecord>> err;
  std::unique_ptr<nep::cuda::Event> done;
  nep::cuda::IpcPeers peers{nullptr, 0};
  bool connected = false;
  int failure_code = NEP_OK;
  std::string failure;
  // Host bookkeeping.
  uint64_t calls = 0;
  nep_cuda_ll_op* pending[2] = {nullptr, nullptr};
  uint64_t route_owner[2] = {0, 0};  // call number of the dispatch whose routing slot b holds

  uint8_t* local() const { return static_cast<uint8_t*>(mem.get()); }
  int2* route_rows(int b) const {
    return reinterpret_cast<int2*>(static_cast<uint8_t*>(route.get()) + b * route_slot_bytes);
  }
  int32_t* route_counts(int b) const {
    return reinterpret_cast<int32_t*>(static_cast<uint8_t*>(route.get()) + b * route_slot_bytes +
                                      route_rows_bytes);
  }
  int64_t row_bytes(int32_t wire) const { return nep::cuda::wire_row_bytes(wire, shape.hidden); }

  // ---- Connection ----
  void export_blob(uint8_t* out, int64_t cap) const;
  void connect(const uint8_t* all_blobs, int64_t bytes);

  // ---- Calls ----
  std::unique_ptr<nep_cuda_ll_op> dispatch_send(int64_t x, int32_t x_dtype, int64_t num_tokens,
                                                int64_t hidden, int64_t topk_idx, int32_t num_topk,
                                                int32_t wire, int32_t flags, cudaStream_t s);
  std::unique_ptr<nep_cuda_ll_handle> dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x,
                                                    int32_t recv_dtype, int64_t recv_count,
                                                    int64_t recv_src_info,
                                                    int64_t recv_layout_range, cudaStream_t s);
  std::unique_ptr<nep_cuda_ll_op> combine_send(const nep_cuda_ll_handle* h, int64_t y,
                                               int32_t y_dtype, int64_t topk_idx,
                                               int64_t topk_weights, int32_t wire, cudaStream_t s);
  void combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype, cudaStream_t s);
  // An op dropped before its receive: drains its half so the peers may reuse it.
  void abandon(nep_cuda_ll_op* op);
  void sync(cudaStream_t s);
  void poison(cudaStream_t s);

  // ---- Failures ----
  nep::cuda::WaitCtx wait_ctx(int kernel) const;
  void check_device_error();
  void check_usable();

 private:
  // Reserves the next call number; fails (changing nothing) when its half still awaits a receive.
  uint64_t next_call(int* half) const;
  // The operation of a send: the next call number (next_call) and its half, the kind and sizes.
  std::unique_ptr<nep_cuda_ll_op> new_op(int32_t kind, int64_t num_tokens, int32_t num_topk,
                                         cudaStream_t stream);
  // Records a send's operation as launched: the latest call, pending in its half until received.
  void launched(nep_cuda_ll_op* op);
  void enqueue_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype,
                             int64_t recv_count, int64_t recv_src_info, int64_t recv_layout_range,
                             cudaStream_t stream);
  void enqueue_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype,
                            cudaStream_t stream);
  void finish(nep_cuda_ll_op* op);
};

struct nep_cuda_ll_op {
  nep_cuda_ll_buffer* buf = nullptr;
  int32_t kind = NEP_CUDA_LL_DISPATCH;
  bool pending = true;
  uint64_t call = 0;
  int32_t half = 0;
  int64_t num_tokens = 0;
  int32_t num_topk = 0;
  cudaStream_t stream = nullptr;
  // combine: the source side's routing and weights, read by the receive
  const long long* topk_idx = nullptr;
  const float* topk_weights = nullptr;
};

struct nep_cuda_ll_handle {
  nep_cuda_ll_buffer* buf = nullptr;
  uint64_t call = 0;
  int32_t route_slot = 0;
  int64_t num_tokens = 0;
  int32_t num_topk = 0;
};

#endif  // NATIVEEP_CUDA_LL_BUFFER_H_
