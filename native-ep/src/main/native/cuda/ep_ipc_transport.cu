// The cuda-ipc transport of the normal mode: every rank's buffer is mapped here (ipc_peers.h); the
// notify, dispatch and combine kernels (layout.cu, dispatch.cu, combine.cu) write into the peers'
// buffers over NVLink and wait on counters in their own.
#include <algorithm>

#include "ep_buffer.h"
#include "kernels.h"

namespace nep {
namespace cuda {

namespace {

class IpcTransport final : public EpTransport {
 public:
  IpcTransport(IpcPeers peers, int32_t world) : peers_(std::move(peers)), world_(world) {}

  int32_t kind() const override { return NEP_CUDA_TRANSPORT_IPC; }

  void notify(nep_cuda_buffer& b, nep_cuda_handle& h, cudaStream_t s) override {
    NotifyArgs na{};
    na.rank = b.rank;
    na.world = b.world;
    na.num_topk = h.num_topk;
    na.num_experts = h.num_experts;
    na.local_experts = h.local_experts;
    na.alignment = h.alignment;
    na.num_tokens = h.num_tokens;
    na.num_blocks = (int32_t)h.num_blocks;
    na.block_counts = h.block_counts;
    na.block_prefix = h.block_prefix;
    na.tokens_per_rank = h.tokens_per_rank;
    na.tokens_per_expert = h.tokens_per_expert;
    na.layout_err = b.layout_err->device();
    for (int p = 0; p < b.world; ++p) na.peers[p] = peers_.base(p);
    na.seq = ++notify_seq_;
    na.parity = (int32_t)(na.seq & 1);
    na.rank_prefix = h.rank_prefix;
    na.rank_tokens = h.rank_tokens;
    na.result = b.notify_result->device();
    na.wait = b.wait_ctx(kKernelNotify);
    check_cuda(launch_notify(na, s), "notify kernel launch");
    b.wait_stream(s, "nep_cuda_dispatch_notify");
  }

  void dispatch(nep_cuda_buffer& b, nep_cuda_handle& h, const DispatchCall& c,
                cudaStream_t s) override {
    DispatchArgs a{};
    ring_args(a, b, h, c, "dispatch");
    a.local_experts = h.local_experts;
    a.x = reinterpret_cast<const void*>(c.x);
    a.x_dtype = c.x_dtype;
    a.out_dtype = c.recv_dtype;
    a.topk_idx = reinterpret_cast<const long long*>(c.topk_idx);
    a.topk_weights = reinterpret_cast<const float*>(c.topk_weights);
    a.recv_x = reinterpret_cast<void*>(c.recv_x);
    a.recv_topk_idx = reinterpret_cast<long long*>(c.recv_topk_idx);
    a.recv_topk_weights = reinterpret_cast<float*>(c.recv_topk_weights);
    a.call_id = ++dispatch_calls_;
    a.parity = (int32_t)(a.call_id & 1);
    a.wait = b.wait_ctx(kKernelDispatch);
    check_cuda(launch_dispatch(c.wire, a, s), "dispatch kernel launch");
  }

  void combine(nep_cuda_buffer& b, const nep_cuda_handle& h, const CombineCall& c,
               cudaStream_t s) override {
    CombineArgs a{};
    ring_args(a, b, h, c, "combine");
    a.y = reinterpret_cast<const void*>(c.y);
    a.y_dtype = c.y_dtype;
    a.out_dtype = c.out_dtype;
    a.y_weights = reinterpret_cast<const float*>(c.y_weights);
    a.out = reinterpret_cast<void*>(c.out);
    a.out_weights = reinterpret_cast<float*>(c.out_weights);
    a.wait = b.wait_ctx(kKernelCombine);
    check_cuda(launch_combine(c.wire, a, s), "combine kernel launch");
  }

  void all_reduce_sum(nep_cuda_buffer&, int64_t, int64_t, int32_t, cudaStream_t) override {
    fail(NEP_ERR_UNSUPPORTED,
         "nep_cuda_all_reduce_sum needs the nccl transport (nep_cuda_buffer_connect_nccl)");
  }

  uint8_t* peer_memory(int32_t peer) const override {
    if (peer < 0 || peer >= world_)
      fail(NEP_ERR_INVALID_ARGUMENT, "peer=", peer, " is outside [0, ", world_, ")");
    return peers_.base(peer);
  }

 private:
  // The fields the dispatch and combine kernels' arguments share (Args: DispatchArgs or
  // CombineArgs, Call: the matching DispatchCall or CombineCall): ranks, the call's channels and
  // ring geometry, the handle's routing and the peers' buffers.
  template <class Args, class Call>
  void ring_args(Args& a, const nep_cuda_buffer& b, const nep_cuda_handle& h, const Call& c,
                 const char* what) {
    a.rank = b.rank;
    a.world = b.world;
    a.num_topk = h.num_topk;
    a.num_channels = c.num_sms;
    a.hidden = c.hidden;
    a.route = h.view();
    a.recv_src_idx = h.recv_src_idx;
    for (int p = 0; p < b.world; ++p) a.peers[p] = peers_.base(p);
    a.geom = geometry(b, c.slot_bytes, c.payload_offset, c.num_sms, what);
    max_channels_used_ = std::max(max_channels_used_, c.num_sms);
    a.drain_channels = max_channels_used_;
  }

  // The rings of a call: the ring region split evenly over source ranks, then over channels.
  static RingGeom geometry(const nep_cuda_buffer& b, long long slot_bytes, long long payload_offset,
                           int channels, const char* what) {
    RingGeom g;
    g.ring_offset = (long long)Ctrl::kRingOffset;
    const long long region = b.bytes - (long long)Ctrl::kRingOffset;
    g.src_stride = region / b.world / 4096 * 4096;
    g.ring_bytes = g.src_stride / channels / 128 * 128;
    g.slot_bytes = slot_bytes;
    g.payload_offset = payload_offset;
    g.num_slots = g.ring_bytes / slot_bytes;
    if (g.num_slots < kMinRingSlots) {
      const long long need = (long long)Ctrl::kRingOffset +
                             kMinRingSlots * slot_bytes * channels * b.world + 4096LL * b.world +
                             128LL * channels * b.world;
      fail(NEP_ERR_CAPACITY, what, ": buffer_bytes=", b.bytes, " gives ", g.num_slots,
           " message slots per ring (", b.world, " ranks x ", channels, " channels, ", slot_bytes,
           " bytes per message); the minimum is ", kMinRingSlots,
           ": create the buffer with at least ", need, " bytes or use fewer SMs");
    }
    return g;
  }

  IpcPeers peers_;
  int32_t world_;
  unsigned long long notify_seq_ = 0;
  unsigned long long dispatch_calls_ = 0;
  int max_channels_used_ = 0;
};

}  // namespace

std::unique_ptr<EpTransport> make_ipc_transport(IpcPeers peers, int32_t world) {
  return std::make_unique<IpcTransport>(std::move(peers), world);
}

}  // namespace cuda
}  // namespace nep
