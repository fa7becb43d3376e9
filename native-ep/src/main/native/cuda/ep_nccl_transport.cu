// The nccl transport of the normal mode (ranks on several hosts): notify all-gathers each rank's
// count record; dispatch and combine pack rows into staging buffers in the wire format
// (nccl_path.cu), move them with NCCL grouped send/recv and unpack or reduce them. NCCL itself is
// loaded at run time (nccl_api.h).
#include <algorithm>
#include <vector>

#include "device_span.h"
#include "ep_buffer.h"
#include "kernels.h"

namespace nep {
namespace cuda {

namespace {

// Rows this rank sends to each rank and receives from each, from the handle's prefix matrix.
struct NcclCounts {
  long long send[kMaxRanks], recv[kMaxRanks], send_off[kMaxRanks], recv_off[kMaxRanks];
  long long send_total = 0;
};

NcclCounts nccl_counts(const nep_cuda_handle& h) {
  NcclCounts c{};
  const int W = h.world, me = h.rank;
  const auto& rp = h.h_rank_prefix;
  for (int p = 0; p < W; ++p) {
    c.send[p] = rp[me * W + p] - (me > 0 ? rp[(me - 1) * W + p] : 0);
    c.recv[p] = rp[p * W + me] - (p > 0 ? rp[(p - 1) * W + me] : 0);
    c.recv_off[p] = p > 0 ? rp[(p - 1) * W + me] : 0;
    c.send_off[p] = c.send_total;
    c.send_total += c.send[p];
  }
  return c;
}

// The staging memory of one exchange: send_rows and recv_rows slots (at least one each), freed
// on the stream after use.
struct Stages {
  StreamMemory send, recv;
  Stages(long long send_rows, long long recv_rows, long long slot, cudaStream_t s)
      : send((size_t)std::max<long long>(send_rows, 1) * (size_t)slot, s),
        recv((size_t)std::max<long long>(recv_rows, 1) * (size_t)slot, s) {}
};

NcclStageArgs stage_args(const nep_cuda_buffer& b, const nep_cuda_handle& h, const NcclCounts& c,
                         long long poff, long long slot, int64_t hidden, int32_t in_dtype,
                         int32_t out_dtype, Stages& st) {
  NcclStageArgs a{};
  a.in_dtype = in_dtype;
  a.out_dtype = out_dtype;
  a.send_stage = static_cast<uint8_t*>(st.send.get());
  a.recv_stage = static_cast<const uint8_t*>(st.recv.get());
  a.rank = b.rank;
  a.world = b.world;
  a.num_topk = h.num_topk;
  a.local_experts = h.local_experts;
  a.hidden = hidden;
  a.num_tokens = h.num_tokens;
  a.num_recv = h.num_recv;
  a.slot_bytes = slot;
  a.payload_offset = poff;
  a.route = h.view();
  for (int p = 0; p < b.world; ++p) a.send_off[p] = c.send_off[p];
  return a;
}

class NcclTransport final : public EpTransport {
 public:
  explicit NcclTransport(ncclComm_t comm) : comm_(comm) {}
  ~NcclTransport() override = default;

  int32_t kind() const override { return NEP_CUDA_TRANSPORT_NCCL; }

  // block_prefix and the count record on the GPU, an all-gather of the records, and on the host
  // what the cuda-ipc notify kernel computes into the NotifyResult.
  void notify(nep_cuda_buffer& b, nep_cuda_handle& h, cudaStream_t s) override {
    const int W = b.world, me = b.rank, E = h.num_experts, El = h.local_experts;
    const size_t rec = kNcclRecordInts;
    StreamMemory recs(sizeof(int32_t) * rec * (W + 1), s);
    int32_t* send = static_cast<int32_t*>(recs.get());
    int32_t* all = send + rec;
    NcclNotifyArgs na{};
    na.world = W;
    na.num_topk = h.num_topk;
    na.num_experts = E;
    na.num_blocks = (int32_t)h.num_blocks;
    na.num_tokens = h.num_tokens;
    na.block_counts = h.block_counts;
    na.block_prefix = h.block_prefix;
    na.tokens_per_rank = h.tokens_per_rank;
    na.tokens_per_expert = h.tokens_per_expert;
    na.layout_err = b.layout_err->device();
    na.record = send;
    check_cuda(launch_nccl_notify(na, s), "nccl notify kernel launch");
    const NcclApi& api = nccl_or_throw();
    check_nccl(api.AllGather(send, all, rec, ncclInt32, comm_, s), "ncclAllGather (notify counts)",
               comm_);
    b.wait_stream(s, "nep_cuda_dispatch_notify");
    std::vector<int32_t> host(rec * W);
    check_cuda(cudaMemcpy(host.data(), all, sizeof(int32_t) * host.size(), cudaMemcpyDeviceToHost),
               "cudaMemcpy notify records");
    auto record = [&](int r) { return host.data() + (size_t)r * rec; };
    volatile NotifyResult* r = b.notify_result->host();
    int st = kNotifyOk, bad = -1, bad_k = 0, bad_e = 0;
    if (record(me)[0] != 0) {
      st = kNotifyLocalInput;
      bad = me;
    }
    for (int q = 0; q < W && st == kNotifyOk; ++q) {
      if (record(q)[0] != 0) {
        st = kNotifyPeerInput;
        bad = q;
      } else if (record(q)[2] != h.num_topk || record(q)[3] != E) {
        st = kNotifyMismatch;
        bad = q;
        bad_k = record(q)[2];
        bad_e = record(q)[3];
      }
    }
    r->status = st;
    r->bad_rank = bad;
    r->bad_topk = bad_k;
    r->bad_experts = bad_e;
    if (st != kNotifyOk) return;
    for (int i = 0; i < W; ++i)
      for (int j = 0; j < W; ++j) {
        int acc = 0;
        for (int q = 0; q <= i; ++q) acc += record(q)[kNcclRecordHeader + j];
        r->rank_prefix[i * W + j] = acc;
      }
    r->num_recv = r->rank_prefix[(W - 1) * W + me];
    for (int q = 0; q < W; ++q) r->rank_tokens[q] = record(q)[1];
    for (int e = 0; e < El; ++e) {
      long long acc = 0;
      for (int q = 0; q < W; ++q) acc += record(q)[kNcclRecordExperts + me * El + e];
      r->recv_raw[e] = (int32_t)acc;
      r->recv_aligned[e] = (int32_t)((acc + h.alignment - 1) / h.alignment * h.alignment);
    }
  }

  // The cuda-ipc notify kernel writes these on the device; here they come from the host.
  void publish_routing(nep_cuda_handle& h, cudaStream_t s) override {
    const int W = h.world;
    check_cuda(cudaMemcpyAsync(h.rank_prefix, h.h_rank_prefix.data(), sizeof(int32_t) * W * W,
                               cudaMemcpyHostToDevice, s),
               "cudaMemcpyAsync rank_prefix");
    check_cuda(cudaMemcpyAsync(h.rank_tokens, h.h_rank_tokens.data(), sizeof(int32_t) * W,
                               cudaMemcpyHostToDevice, s),
               "cudaMemcpyAsync rank_tokens");
  }

  // Pack every destination's rows (this rank's own too), exchange, unpack.
  void dispatch(nep_cuda_buffer& b, nep_cuda_handle& h, const DispatchCall& d,
                cudaStream_t s) override {
    const long long slot = d.slot_bytes;
    const NcclCounts c = nccl_counts(h);
    Stages st(c.send_total, h.num_recv, slot, s);
    NcclStageArgs a =
        stage_args(b, h, c, d.payload_offset, slot, d.hidden, d.x_dtype, d.recv_dtype, st);
    a.x = reinterpret_cast<const void*>(d.x);
    a.topk_idx = reinterpret_cast<const long long*>(d.topk_idx);
    a.topk_weights = reinterpret_cast<const float*>(d.topk_weights);
    a.recv_x = reinterpret_cast<void*>(d.recv_x);
    a.recv_src_idx = h.recv_src_idx;
    a.recv_topk_idx = reinterpret_cast<long long*>(d.recv_topk_idx);
    a.recv_topk_weights = reinterpret_cast<float*>(d.recv_topk_weights);
    check_cuda(launch_nccl_dispatch_pack(d.wire, a, s), "nccl dispatch pack kernel launch");
    exchange(b, a.send_stage, c.send_off, c.send, static_cast<uint8_t*>(st.recv.get()), c.recv_off,
             c.recv, slot, s, "dispatch (nccl)");
    check_cuda(launch_nccl_dispatch_unpack(d.wire, a, s), "nccl dispatch unpack kernel launch");
  }

  // Pack the received rows back by source rank, exchange, sum in rank order.
  void combine(nep_cuda_buffer& b, const nep_cuda_handle& h, const CombineCall& d,
               cudaStream_t s) override {
    const long long slot = d.slot_bytes;
    const NcclCounts c = nccl_counts(h);
    Stages st(h.num_recv, c.send_total, slot, s);
    NcclStageArgs a =
        stage_args(b, h, c, d.payload_offset, slot, d.hidden, d.y_dtype, d.out_dtype, st);
    a.y = reinterpret_cast<const void*>(d.y);
    a.y_weights = reinterpret_cast<const float*>(d.y_weights);
    a.out = reinterpret_cast<void*>(d.out);
    a.out_weights = reinterpret_cast<float*>(d.out_weights);
    check_cuda(launch_nccl_combine_pack(d.wire, a, s), "nccl combine pack kernel launch");
    exchange(b, a.send_stage, c.recv_off, c.recv, static_cast<uint8_t*>(st.recv.get()), c.send_off,
             c.send, slot, s, "combine (nccl)");
    check_cuda(launch_nccl_combine_reduce(d.wire, a, s), "nccl combine reduce kernel launch");
  }

  void all_reduce_sum(nep_cuda_buffer& b, int64_t data, int64_t count, int32_t dtype,
                      cudaStream_t s) override {
    check_all_reduce_args(data, count, dtype);
    if (count == 0) return;
    const NcclApi& api = nccl_or_throw();
    DeviceGuard guard(b.device);
    SpanChecker(b.device, s)("data", data, count * dtype_bytes(dtype));
    void* p = reinterpret_cast<void*>(data);
    check_nccl(
        api.AllReduce(p, p, (size_t)count, dtype == NEP_DTYPE_BF16 ? ncclBfloat16 : ncclFloat32,
                      ncclSum, comm_, s),
        "ncclAllReduce", comm_);
  }

  uint8_t* peer_memory(int32_t) const override {
    fail(NEP_ERR_UNSUPPORTED, "peer memory is mapped by the cuda-ipc transport only");
  }

  std::string async_error(const char* what, int32_t rank) override {
    const NcclApi& api = nccl_or_throw();
    ncclResult_t ae = ncclSuccess;
    if (api.CommGetAsyncError(comm_, &ae) == ncclSuccess && ae != ncclSuccess &&
        ae != ncclInProgress) {
      abort();
      return cat(what, " on rank ", rank, ": NCCL reported error ", ae, " (",
                 api.GetErrorString(ae),
                 ") while the GPU ran (a peer failed or left); the buffer is unusable now (every "
                 "rank must re-create it)");
    }
    return {};
  }

  std::string abandon(const char* what, int32_t rank, int64_t waited_ms) override {
    abort();
    return cat(what, " on rank ", rank, ": NCCL operations did not finish within ", waited_ms,
               " ms (a peer skipped the call, died or is stuck); the NCCL communicator was "
               "aborted and the buffer is unusable now");
  }

  void close(bool failed) override {
    std::string why;
    if (const NcclApi* api = nccl_api(&why)) {
      if (aborted_) {
        // ncclCommAbort already released the communicator.
      } else if (failed) {
        api->CommAbort(comm_);
      } else {
        api->CommDestroy(comm_);
      }
    }
    comm_ = nullptr;
    aborted_ = true;
  }

 private:
  void abort() {
    if (!aborted_) {
      std::string why;
      if (const NcclApi* api = nccl_api(&why)) api->CommAbort(comm_);
      aborted_ = true;
    }
  }

  // Grouped send/recv: piece p of `src` (rows src_off[p] .. + src_n[p]) goes to rank p, piece p
  // of `dst` (rows dst_off[p] .. + dst_n[p]) comes from rank p; this rank's own piece is a device
  // copy.
  void exchange(const nep_cuda_buffer& b, const uint8_t* src, const long long* src_off,
                const long long* src_n, uint8_t* dst, const long long* dst_off,
                const long long* dst_n, long long slot, cudaStream_t s, const char* what) {
    const NcclApi& api = nccl_or_throw();
    const int W = b.world, me = b.rank;
    check_nccl(api.GroupStart(), "ncclGroupStart");
    ncclResult_t res = ncclSuccess;
    const char* failed = nullptr;
    for (int p = 0; p < W && res == ncclSuccess; ++p) {
      if (p == me) continue;
      if (src_n[p] > 0) {
        res = api.Send(src + src_off[p] * slot, (size_t)(src_n[p] * slot), ncclUint8, p, comm_, s);
        if (res != ncclSuccess) failed = "ncclSend";
      }
      if (res == ncclSuccess && dst_n[p] > 0) {
        res = api.Recv(dst + dst_off[p] * slot, (size_t)(dst_n[p] * slot), ncclUint8, p, comm_, s);
        if (res != ncclSuccess) failed = "ncclRecv";
      }
    }
    const ncclResult_t end = api.GroupEnd();
    check_nccl(res, cat(what, ": ", failed ? failed : "").c_str(), comm_);
    check_nccl(end, cat(what, ": ncclGroupEnd").c_str(), comm_);
    if (src_n[me] != dst_n[me])
      fail(NEP_ERR_INTERNAL, what, ": this rank's own piece has ", src_n[me], " rows to send but ",
           dst_n[me], " to receive");
    if (src_n[me] > 0)
      check_cuda(cudaMemcpyAsync(dst + dst_off[me] * slot, src + src_off[me] * slot,
                                 (size_t)(src_n[me] * slot), cudaMemcpyDeviceToDevice, s),
                 "cudaMemcpyAsync (own rows)");
  }

  ncclComm_t comm_;
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<EpTransport> make_nccl_transport(ncclComm_t comm) {
  return std::make_unique<NcclTransport>(comm);
}

}  // namespace cuda
}  // namespace nep
