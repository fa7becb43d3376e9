// How the ranks of a normal-mode buffer move rows: the cuda-ipc transport (peers' buffers mapped
// over NVLink, the ring kernels of dispatch.cu / combine.cu) or the nccl transport (staging
// buffers packed by nccl_path.cu, NCCL grouped send/recv). Chosen once, when the buffer connects;
// the buffer (ep_buffer.h) checks the arguments of a call and hands the exchange to its transport.
#ifndef NATIVEEP_CUDA_EP_TRANSPORT_H_
#define NATIVEEP_CUDA_EP_TRANSPORT_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "ipc_peers.h"
#include "nccl_api.h"

struct nep_cuda_buffer;
struct nep_cuda_handle;

namespace nep {
namespace cuda {

// A dispatch's arguments once checked: device addresses, dtypes and the message layout.
// What a dispatch and a combine share: the wire format, the channels (one per SM), the message
// slots and the row size.
struct RingCall {
  int32_t wire, num_sms;
  long long payload_offset, slot_bytes;
  int64_t hidden;
};

struct DispatchCall : RingCall {
  int64_t x;
  int32_t x_dtype;
  int64_t topk_idx, topk_weights, recv_x;
  int32_t recv_dtype;
  int64_t recv_topk_idx, recv_topk_weights;
};

// A combine's arguments once checked.
struct CombineCall : RingCall {
  int64_t y;
  int32_t y_dtype;
  int64_t y_weights, out;
  int32_t out_dtype;
  int64_t out_weights;
};

class EpTransport {
 public:
  virtual ~EpTransport() = default;
  virtual int32_t kind() const = 0;  // NEP_CUDA_TRANSPORT_*

  // Notify after the layout kernel was queued on s: fills the buffer's NotifyResult for h (every
  // rank's counts), waiting for the GPU.
  virtual void notify(nep_cuda_buffer& b, nep_cuda_handle& h, cudaStream_t s) = 0;
  // After a notify that succeeded: the handle's rank prefix matrix and token counts on the device,
  // where the notify left them on the host only.
  virtual void publish_routing(nep_cuda_handle& /*h*/, cudaStream_t /*s*/) {}
  virtual void dispatch(nep_cuda_buffer& b, nep_cuda_handle& h, const DispatchCall& c,
                        cudaStream_t s) = 0;
  virtual void combine(nep_cuda_buffer& b, const nep_cuda_handle& h, const CombineCall& c,
                       cudaStream_t s) = 0;
  // In-place sum over the ranks (nep_cuda_all_reduce_sum).
  virtual void all_reduce_sum(nep_cuda_buffer& b, int64_t data, int64_t count, int32_t dtype,
                              cudaStream_t s) = 0;
  // Base of rank `peer`'s buffer as mapped here (nep_cuda_buffer_peer_scratch).
  virtual uint8_t* peer_memory(int32_t peer) const = 0;

  // Polled while the host waits for the GPU: "" or why the transport failed (it stopped then).
  virtual std::string async_error(const char* /*what*/, int32_t /*rank*/) { return {}; }
  // The host's wait for the GPU ran out: stops what the transport has in flight and says what to
  // report, or "" when it has nothing of its own in flight.
  virtual std::string abandon(const char* /*what*/, int32_t /*rank*/, int64_t /*waited_ms*/) {
    return {};
  }
  // Before the buffer is freed; `failed` when the buffer reported an error.
  virtual void close(bool /*failed*/) {}
};

std::unique_ptr<EpTransport> make_ipc_transport(IpcPeers peers, int32_t world);
std::unique_ptr<EpTransport> make_nccl_transport(ncclComm_t comm);

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_EP_TRANSPORT_H_
