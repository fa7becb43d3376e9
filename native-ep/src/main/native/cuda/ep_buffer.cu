// The normal-mode rank buffer (ep_buffer.h): creation, connection, the checks of every call, the
// routing handle of notify, and the host's bounded waits for the GPU. The exchanges themselves are
// the transports' (ep_ipc_transport.cu, ep_nccl_transport.cu).
#include "ep_buffer.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "device_span.h"
#include "kernels.h"

using namespace nep::cuda;

namespace {

constexpr char kBlobMagic[8] = {'N', 'E', 'P', 'C', 'U', 'D', 'A', '1'};
constexpr int32_t kBlobVersion = 1;

struct ExportBlob {
  IpcBlobHeader id;
  int32_t version;
  int32_t pad;
  int64_t bytes;
};

const char* kernel_name(int k) {
  switch (k) {
    case kKernelLayout: return "layout";
    case kKernelNotify: return "notify";
    case kKernelDispatch: return "dispatch";
    case kKernelCombine: return "combine";
    default: return "kernel";
  }
}

std::string counter_desc(int counter, int rank, int peer, int channel) {
  switch (counter) {
    case kCounterNotifyFlag:
      return cat("notify flag of rank ", peer, " (in rank ", rank, "'s buffer)");
    case kCounterTail:
      return cat("ring tail (", peer, " -> ", rank, ", channel ", channel,
                 "): messages published by rank ", peer);
    case kCounterHead:
      return cat("ring head (", rank, " -> ", peer, ", channel ", channel,
                 "): free slots, advanced by rank ", peer);
    case kCounterChanCount:
      return cat("dispatch message count of ring (", peer, " -> ", rank, ", channel ", channel,
                 ")");
    case kCounterDrain:
      return cat("ring head (", rank, " -> ", peer, ", channel ", channel, "): rank ", peer,
                 " still reading an earlier call");
    case kCounterBadMessage:
      return cat("message on ring (", peer, " -> ", rank, ", channel ", channel,
                 ") names a row outside rank ", peer, "'s range");
    default: return cat("counter ", counter);
  }
}

void check_dtype(const char* name, int32_t dtype) {
  if (dtype != NEP_DTYPE_FP32 && dtype != NEP_DTYPE_BF16)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=", dtype,
         " is not a dtype (NEP_DTYPE_FP32=0 or NEP_DTYPE_BF16=1)");
}

void check_aligned(const char* name, int64_t addr, int64_t align) {
  if (addr % align != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec, " is not ", align,
         "-byte aligned");
}

void check_num_sms(const nep_cuda_buffer* b, int32_t num_sms) {
  const int limit = std::min(kMaxChannels, b->device_sms);
  if (num_sms < 1 || num_sms > limit)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_sms=", num_sms, " is outside [1, ", limit, "] (device has ",
         b->device_sms, " SMs, limit ", kMaxChannels, ")");
}

// Every wire takes such a hidden; with FP8 and MXFP8 a row's last scale group may be partial (its
// amax is that of the channels it has), as in the CPU engine.
void check_hidden(int64_t hidden) {
  if (hidden <= 0 || hidden > (1LL << 24))
    fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is outside [1, 2^24]");
  if (hidden % 8 != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden,
         " is not a multiple of 8 (16-byte rows of bf16)");
}

void check_topk_args(const nep_cuda_buffer* b, int64_t topk_idx, int64_t num_tokens,
                     int32_t num_topk, int32_t num_experts) {
  if (num_tokens < 0 || num_tokens > INT32_MAX)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_tokens=", num_tokens, " is outside [0, 2^31)");
  if (num_topk < 1 || num_topk > kMaxTopk)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_topk=", num_topk, " is outside [1, ", kMaxTopk, "]");
  if (num_experts < b->world || num_experts % b->world != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts=", num_experts,
         " is not a positive multiple of world_size=", b->world);
  if (num_experts / b->world > kMaxLocalExperts)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts / world_size = ", num_experts / b->world,
         " exceeds ", kMaxLocalExperts, " local experts");
  if (num_tokens > 0 && topk_idx == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null with num_tokens=", num_tokens);
  check_aligned("topk_idx", topk_idx, 8);
}

void check_handle(const nep_cuda_buffer* b, const nep_cuda_handle* h) {
  if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
  if (h->owner != b) fail(NEP_ERR_INVALID_ARGUMENT, "handle was made by another buffer");
}

// The message slots of a dispatch or combine: header and weights up to payload_offset, then the
// row on the wire, padded to 16 bytes.
void set_ring(RingCall& c, int32_t wire, int32_t num_sms, long long payload_offset,
              int64_t hidden) {
  c.wire = wire;
  c.num_sms = num_sms;
  c.payload_offset = payload_offset;
  c.slot_bytes = align_up(payload_offset + wire_row_bytes(wire, hidden), 16);
  c.hidden = hidden;
}

}  // namespace

// ---- Creation and connection -------------------------------------------------------------------

nep_cuda_buffer::nep_cuda_buffer(int32_t rank_, int32_t world_size, int32_t device_,
                                 int64_t buffer_bytes, int64_t timeout_ms_) {
  if (world_size < 1 || world_size > kMaxRanks)
    fail(NEP_ERR_INVALID_ARGUMENT, "world_size=", world_size, " is outside [1, ", kMaxRanks,
         "] (ranks of one host)");
  if (rank_ < 0 || rank_ >= world_size)
    fail(NEP_ERR_INVALID_ARGUMENT, "rank=", rank_, " is outside [0, ", world_size, ")");
  if (timeout_ms_ < 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms_, " is negative");
  // 64 MiB in all, the control region included (EpBuffer.MIN_CUDA_BUFFER_BYTES on the Java side).
  const int64_t min_bytes = 64LL << 20;
  if (buffer_bytes < min_bytes)
    fail(NEP_ERR_INVALID_ARGUMENT, "buffer_bytes=", buffer_bytes, " is below the minimum ",
         min_bytes);
  const int n = nep_cuda_device_count();
  if (device_ < 0 || device_ >= n)
    fail(NEP_ERR_INVALID_ARGUMENT, "device=", device_, " is outside [0, ", n,
         ") (CUDA devices visible)");
  DeviceGuard guard(device_);
  rank = rank_;
  world = world_size;
  device = device_;
  bytes = buffer_bytes;
  timeout_ms = timeout_ms_ == 0 ? 30000 : timeout_ms_;
  check_cuda(cudaDeviceGetAttribute(&device_sms, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute");
  int coop = 0;
  check_cuda(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device),
             "cudaDeviceGetAttribute");
  if (!coop) fail(NEP_ERR_UNSUPPORTED, "device ", device, " does not support cooperative launches");
  mem = DeviceMemory((size_t)buffer_bytes);
  check_cuda(cudaMemset(mem.get(), 0, Ctrl::kRingOffset), "cudaMemset");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  err = std::make_unique<MappedHost<ErrorRecord>>();
  layout_err = std::make_unique<MappedHost<LayoutError>>();
  notify_result = std::make_unique<MappedHost<NotifyResult>>();
  done = std::make_unique<Event>();
}

void nep_cuda_buffer::export_blob(uint8_t* out, int64_t cap) const {
  ipc_check_export_out(out, cap);
  DeviceGuard guard(device);
  ExportBlob blob;
  std::memset(&blob, 0, sizeof(blob));
  blob.version = kBlobVersion;
  blob.bytes = bytes;
  ipc_fill_header(blob.id, kBlobMagic, rank, world, device, mem.get());
  ipc_write_blob(&blob, sizeof(blob), out);
}

void nep_cuda_buffer::connect_ipc(const uint8_t* all_blobs, int64_t n) {
  if (connected()) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", rank, " is already connected");
  IpcPeers peers(local(), rank);
  peers.connect<ExportBlob>(all_blobs, n, world, rank, device, "", [&](int p, const ExportBlob& b) {
    if (std::memcmp(b.id.magic, kBlobMagic, sizeof(kBlobMagic)) != 0 || b.version != kBlobVersion)
      fail(NEP_ERR_PEER, "blob ", p, " is not a nativeep CUDA buffer export of version ",
           kBlobVersion);
  }, [&](int p, const ExportBlob& b) {
    if (b.bytes != bytes)
      fail(NEP_ERR_PEER, "rank ", p, " has buffer_bytes=", b.bytes, ", this rank ", bytes);
  });
  transport = make_ipc_transport(std::move(peers), world);
}

void nep_cuda_buffer::connect_nccl(const uint8_t* unique_id, int64_t n) {
  if (connected()) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", rank, " is already connected");
  if (unique_id == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "unique_id is null");
  if (n != NEP_CUDA_NCCL_ID_BYTES)
    fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", n,
         " but NEP_CUDA_NCCL_ID_BYTES = ", NEP_CUDA_NCCL_ID_BYTES);
  const NcclApi& api = nccl_or_throw();
  DeviceGuard guard(device);
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id, NEP_CUDA_NCCL_ID_BYTES);
  ncclComm_t comm = nullptr;
  check_nccl(api.CommInitRank(&comm, world, id, rank), "ncclCommInitRank");
  transport = make_nccl_transport(comm);
}

void nep_cuda_buffer::close() {
  if (transport) transport->close(failure_code != NEP_OK);
}

// ---- Failures and waits ------------------------------------------------------------------------

WaitCtx nep_cuda_buffer::wait_ctx(int kernel) const {
  WaitCtx w;
  w.abort = reinterpret_cast<unsigned int*>(local() + Ctrl::kAbort);
  w.err_claim = reinterpret_cast<unsigned int*>(local() + Ctrl::kErrClaim);
  w.record = err->device();
  w.timeout_ns = (unsigned long long)timeout_ms * 1000000ull;
  w.rank = rank;
  w.kernel = kernel;
  return w;
}

void nep_cuda_buffer::fail_buffer(int code, std::string message) {
  failure_code = code;
  failure = std::move(message);
  throw Error(failure_code, failure);
}

void nep_cuda_buffer::check_device_error() {
  volatile ErrorRecord* r = err->host();
  if (r->valid == 0) return;
  std::string msg;
  if (r->code == NEP_ERR_TIMEOUT && r->counter == kCounterChanCount) {
    // The counter holds (dispatch call id << 32) | message count.
    const long long want = r->expected, seen = r->observed;
    msg = cat(kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms,
              " ms waiting for peer ", r->peer, ": ",
              counter_desc(r->counter, r->rank, r->peer, r->channel), "; expected dispatch call ",
              want >> 32, ", the peer's last was call ", seen >> 32,
              " (peer skipped a dispatch or is stuck before it)");
  } else if (r->code == NEP_ERR_TIMEOUT) {
    msg = cat(kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms,
              " ms waiting for peer ", r->peer, ": ",
              counter_desc(r->counter, r->rank, r->peer, r->channel), "; expected >= ", r->expected,
              ", saw ", r->observed);
  } else {
    msg = cat(kernel_name(r->kernel), " on rank ", r->rank,
              " failed: ", counter_desc(r->counter, r->rank, r->peer, r->channel), " (limit ",
              r->expected, ", value ", r->observed, ")");
  }
  fail_buffer(r->code, msg + "; the buffer is unusable now (every rank must re-create it)");
}

void nep_cuda_buffer::check_layout_error() {
  volatile LayoutError* e = layout_err->host();
  if (e->valid == 0) return;
  const std::string msg = layout_message();
  e->valid = 0;
  throw Error(NEP_ERR_INVALID_ARGUMENT, msg);
}

std::string nep_cuda_buffer::layout_message() const {
  volatile LayoutError* e = layout_err->host();
  if (e->kind == kLayoutDuplicate)
    return cat("topk_idx[", e->token, "][", e->slot, "]=", e->value,
               " repeats an expert of the same row (each expert at most once per token)");
  return cat("topk_idx[", e->token, "][", e->slot, "]=", e->value,
             " is out of range [-1, num_experts)");
}

void nep_cuda_buffer::check_usable() {
  if (!connected())
    fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", rank,
         " is not connected (call nep_cuda_buffer_connect)");
  if (failure_code != NEP_OK) throw Error(failure_code, failure);
  check_device_error();
}

void nep_cuda_buffer::wait_stream(cudaStream_t stream, const char* what) {
  check_cuda(cudaEventRecord(done->get(), stream), "cudaEventRecord");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms + 5000);
  int spins = 0;
  for (;;) {
    const cudaError_t e = cudaEventQuery(done->get());
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) check_cuda(e, what);
    if (transport && (spins & 63) == 0) {
      std::string why = transport->async_error(what, rank);
      if (!why.empty()) fail_buffer(NEP_ERR_PEER, std::move(why));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::string why = transport ? transport->abandon(what, rank, timeout_ms + 5000) : "";
      if (why.empty())
        why = cat(what, " on rank ", rank, ": the GPU did not finish within ", timeout_ms + 5000,
                  " ms (device busy, or a kernel stuck); the buffer is unusable now");
      fail_buffer(NEP_ERR_TIMEOUT, std::move(why));
    }
    if (++spins < 2000) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  check_device_error();
}

void nep_cuda_buffer::sync(cudaStream_t s) {
  if (failure_code != NEP_OK) throw Error(failure_code, failure);
  DeviceGuard guard(device);
  wait_stream(s, "nep_cuda_sync");
  check_layout_error();
}

// ---- Layout and notify -------------------------------------------------------------------------

void nep_cuda_buffer::layout(int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                             int32_t num_experts, int64_t tokens_per_rank,
                             int64_t tokens_per_expert, int64_t is_token_in_rank, cudaStream_t s) {
  check_usable();
  check_topk_args(this, topk_idx, num_tokens, num_topk, num_experts);
  DeviceGuard guard(device);
  const SpanChecker span(device, s);
  span("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
  span("tokens_per_rank", tokens_per_rank, 4LL * world);
  span("tokens_per_expert", tokens_per_expert, 4LL * num_experts);
  span("is_token_in_rank", is_token_in_rank, num_tokens * (long long)world);
  if (tokens_per_rank != 0)
    check_cuda(
        cudaMemsetAsync(reinterpret_cast<void*>(tokens_per_rank), 0, sizeof(int32_t) * world, s),
        "cudaMemsetAsync");
  if (tokens_per_expert != 0)
    check_cuda(cudaMemsetAsync(reinterpret_cast<void*>(tokens_per_expert), 0,
                               sizeof(int32_t) * num_experts, s),
               "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(local() + Ctrl::kLayoutClaim, 0, sizeof(unsigned int), s),
             "cudaMemsetAsync");
  LayoutArgs a{};
  a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
  a.num_tokens = num_tokens;
  a.num_topk = num_topk;
  a.num_experts = num_experts;
  a.world = world;
  a.local_experts = num_experts / world;
  a.is_token_in_rank = reinterpret_cast<uint8_t*>(is_token_in_rank);
  a.tokens_per_rank = reinterpret_cast<int32_t*>(tokens_per_rank);
  a.tokens_per_expert = reinterpret_cast<int32_t*>(tokens_per_expert);
  a.err_claim = reinterpret_cast<unsigned int*>(local() + Ctrl::kLayoutClaim);
  a.err = layout_err->device();
  check_cuda(launch_layout(a, s), "layout kernel launch");
}

std::unique_ptr<nep_cuda_handle> nep_cuda_buffer::notify(int64_t topk_idx, int64_t num_tokens,
                                                         int32_t num_topk, int32_t num_experts,
                                                         int32_t expert_alignment, cudaStream_t s) {
  check_usable();
  check_topk_args(this, topk_idx, num_tokens, num_topk, num_experts);
  if (expert_alignment < 1 || expert_alignment > (1 << 20))
    fail(NEP_ERR_INVALID_ARGUMENT, "expert_alignment=", expert_alignment, " is outside [1, 2^20]");
  DeviceGuard guard(device);
  SpanChecker(device, s)("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
  const int W = world;
  auto h = std::make_unique<nep_cuda_handle>();
  h->owner = this;
  h->rank = rank;
  h->world = W;
  h->num_topk = num_topk;
  h->num_experts = num_experts;
  h->local_experts = num_experts / W;
  h->alignment = expert_alignment;
  h->num_tokens = num_tokens;
  h->num_blocks = (num_tokens + kLayoutBlock - 1) / kLayoutBlock;
  // One allocation for the routing arrays, each 256-byte aligned.
  size_t off = 0;
  auto take = [&](size_t n) {
    const size_t o = off;
    off += (n + 255) / 256 * 256;
    return o;
  };
  const size_t o_lp = take(sizeof(int32_t) * num_tokens * W);
  const size_t o_bc = take(sizeof(int32_t) * std::max<int64_t>(h->num_blocks, 1) * W);
  const size_t o_bp = take(sizeof(int32_t) * std::max<int64_t>(h->num_blocks, 1) * W);
  const size_t o_in = take((size_t)num_tokens * W);
  const size_t o_tpr = take(sizeof(int32_t) * W);
  const size_t o_tpe = take(sizeof(int32_t) * num_experts);
  const size_t o_rp = take(sizeof(int32_t) * W * W);
  const size_t o_rt = take(sizeof(int32_t) * W);
  h->route_mem = StreamMemory(off, s);
  uint8_t* base = static_cast<uint8_t*>(h->route_mem.get());
  h->local_pos = reinterpret_cast<int32_t*>(base + o_lp);
  h->block_counts = reinterpret_cast<int32_t*>(base + o_bc);
  h->block_prefix = reinterpret_cast<int32_t*>(base + o_bp);
  h->is_token_in_rank = base + o_in;
  h->tokens_per_rank = reinterpret_cast<int32_t*>(base + o_tpr);
  h->tokens_per_expert = reinterpret_cast<int32_t*>(base + o_tpe);
  h->rank_prefix = reinterpret_cast<int32_t*>(base + o_rp);
  h->rank_tokens = reinterpret_cast<int32_t*>(base + o_rt);
  check_cuda(cudaMemsetAsync(base + o_tpr, 0, o_rp - o_tpr, s), "cudaMemsetAsync");
  check_cuda(cudaMemsetAsync(local() + Ctrl::kLayoutClaim, 0, sizeof(unsigned int), s),
             "cudaMemsetAsync");
  layout_err->host()->valid = 0;
  notify_result->host()->status = -1;
  if (num_tokens > 0) {
    LayoutArgs la{};
    la.topk_idx = reinterpret_cast<const long long*>(topk_idx);
    la.num_tokens = num_tokens;
    la.num_topk = num_topk;
    la.num_experts = num_experts;
    la.world = W;
    la.local_experts = h->local_experts;
    la.local_pos = h->local_pos;
    la.block_counts = h->block_counts;
    la.is_token_in_rank = h->is_token_in_rank;
    la.tokens_per_rank = h->tokens_per_rank;
    la.tokens_per_expert = h->tokens_per_expert;
    la.err_claim = reinterpret_cast<unsigned int*>(local() + Ctrl::kLayoutClaim);
    la.err = layout_err->device();
    check_cuda(launch_layout(la, s), "layout kernel launch");
  }
  transport->notify(*this, *h, s);

  volatile NotifyResult* r = notify_result->host();
  switch (r->status) {
    case kNotifyOk: break;
    case kNotifyLocalInput: {
      const std::string msg = layout_message();
      layout_err->host()->valid = 0;
      fail(NEP_ERR_INVALID_ARGUMENT, msg);
    }
    case kNotifyPeerInput:
      layout_err->host()->valid = 0;
      fail(NEP_ERR_PEER, "rank ", r->bad_rank,
           " passed an invalid topk_idx to notify (its error names the entry)");
    case kNotifyMismatch:
      layout_err->host()->valid = 0;
      fail(NEP_ERR_PEER, "rank ", r->bad_rank, " called notify with num_topk=", r->bad_topk,
           ", num_experts=", r->bad_experts, "; this rank with num_topk=", num_topk,
           ", num_experts=", num_experts);
    default:
      fail(NEP_ERR_INTERNAL, "notify kernel on rank ", rank, " left no result (status ", r->status,
           ")");
  }
  h->num_recv = r->num_recv;
  if (h->num_recv < 0 || h->num_recv > INT32_MAX)
    fail(NEP_ERR_CAPACITY, "rank ", rank, " would receive ", h->num_recv, " rows (limit 2^31-1)");
  h->h_rank_prefix.assign(W * W, 0);
  h->h_rank_tokens.assign(W, 0);
  h->h_raw.assign(h->local_experts, 0);
  h->h_aligned.assign(h->local_experts, 0);
  for (int i = 0; i < W * W; ++i) h->h_rank_prefix[i] = r->rank_prefix[i];
  for (int i = 0; i < W; ++i) h->h_rank_tokens[i] = r->rank_tokens[i];
  for (int e = 0; e < h->local_experts; ++e) {
    h->h_raw[e] = r->recv_raw[e];
    h->h_aligned[e] = r->recv_aligned[e];
  }
  transport->publish_routing(*h, s);
  h->recv_mem = StreamMemory(sizeof(int32_t) * std::max<int64_t>(h->num_recv, 1), s);
  h->recv_src_idx = static_cast<int32_t*>(h->recv_mem.get());
  return h;
}

// ---- Dispatch and combine ----------------------------------------------------------------------

void nep_cuda_buffer::dispatch(nep_cuda_handle* h, int64_t x, int32_t x_dtype, int64_t hidden,
                               int32_t wire, int64_t topk_idx, int64_t topk_weights, int64_t recv_x,
                               int32_t recv_dtype, int64_t recv_topk_idx, int64_t recv_topk_weights,
                               int32_t num_sms, cudaStream_t s, int64_t recv_row_bytes) {
  check_usable();
  check_handle(this, h);
  check_dtype("x_dtype", x_dtype);
  const bool wire_rows = recv_row_bytes >= 0;
  if (!wire_rows) check_dtype("recv_dtype", recv_dtype);
  if (wire < NEP_WIRE_FP32 || wire > NEP_WIRE_MXFP8)
    fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire, " is not a wire format (0..3)");
  check_hidden(hidden);
  if (wire_rows) {
    if (wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8)
      fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire,
           " has no wire-row output: only fp8 (2) and mxfp8 (3) rows are kept as they travel");
    if (recv_row_bytes != wire_row_bytes(wire, hidden))
      fail(NEP_ERR_INVALID_ARGUMENT, "recv_row_bytes=", recv_row_bytes,
           " must equal the GPU wire row size of hidden=", hidden, ", ",
           wire_row_bytes(wire, hidden), " (scales at roundup(hidden, 16), rows padded to 16)");
    recv_dtype = kDtypeWireRows;
  }
  check_num_sms(this, num_sms);
  if (h->num_tokens > 0 && x == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "x is null with num_tokens=", h->num_tokens);
  const char* recv_name = wire_rows ? "recv_rows" : "recv_x";
  if (h->num_recv > 0 && recv_x == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, recv_name, " is null but this rank receives ", h->num_recv,
         " rows");
  check_aligned("x", x, 16);
  check_aligned(recv_name, recv_x, 16);
  if (topk_weights != 0 && topk_idx == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "topk_weights needs topk_idx (to know which slots are local)");
  if (recv_topk_idx != 0 && topk_idx == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "recv_topk_idx needs topk_idx");
  if (recv_topk_weights != 0 && topk_weights == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "recv_topk_weights needs topk_weights");
  check_aligned("topk_idx", topk_idx, 8);
  check_aligned("recv_topk_idx", recv_topk_idx, 8);
  check_aligned("topk_weights", topk_weights, 4);
  check_aligned("recv_topk_weights", recv_topk_weights, 4);
  DeviceGuard guard(device);
  const int K = h->num_topk;
  const long long T = h->num_tokens, R = h->num_recv;
  const SpanChecker span(device, s);
  span("x", x, T * hidden * dtype_bytes(x_dtype));
  span("topk_idx", topk_idx, T * K * 8LL);
  span("topk_weights", topk_weights, T * K * 4LL);
  span(wire_rows ? "recv_rows" : "recv_x", recv_x,
       wire_rows ? R * recv_row_bytes : R * hidden * dtype_bytes(recv_dtype));
  span("recv_topk_idx", recv_topk_idx, R * K * 8LL);
  span("recv_topk_weights", recv_topk_weights, R * K * 4LL);
  DispatchCall c;
  set_ring(c, wire, num_sms, dispatch_payload_offset(K), hidden);
  c.x = x;
  c.x_dtype = x_dtype;
  c.topk_idx = topk_idx;
  c.topk_weights = topk_weights;
  c.recv_x = recv_x;
  c.recv_dtype = recv_dtype;
  c.recv_topk_idx = recv_topk_idx;
  c.recv_topk_weights = recv_topk_weights;
  transport->dispatch(*this, *h, c, s);
  h->dispatched = true;
  h->set_stream(s);
}

void nep_cuda_buffer::combine(const nep_cuda_handle* h, int64_t y, int32_t y_dtype, int64_t hidden,
                              int32_t wire, int64_t y_weights, int64_t out, int32_t out_dtype,
                              int64_t out_weights, int32_t num_sms, cudaStream_t s) {
  check_usable();
  check_handle(this, h);
  if (!h->dispatched)
    fail(NEP_ERR_INVALID_ARGUMENT,
         "combine needs a handle that a dispatch has used (recv_src_idx is filled there)");
  check_dtype("y_dtype", y_dtype);
  check_dtype("out_dtype", out_dtype);
  if (wire != NEP_WIRE_BF16 && wire != NEP_WIRE_FP32)
    fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire,
         " is not a combine wire format (NEP_WIRE_FP32=0 or NEP_WIRE_BF16=1)");
  check_hidden(hidden);
  check_num_sms(this, num_sms);
  if (h->num_recv > 0 && y == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "y is null but this rank received ", h->num_recv, " rows");
  if (h->num_tokens > 0 && out == 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "out is null with num_tokens=", h->num_tokens);
  if ((y_weights == 0) != (out_weights == 0))
    fail(NEP_ERR_INVALID_ARGUMENT, "y_weights and out_weights go together (one is null)");
  check_aligned("y", y, 16);
  check_aligned("out", out, 16);
  check_aligned("y_weights", y_weights, 4);
  check_aligned("out_weights", out_weights, 4);
  DeviceGuard guard(device);
  const int K = h->num_topk;
  const long long T = h->num_tokens, R = h->num_recv;
  const SpanChecker span(device, s);
  span("y", y, R * hidden * dtype_bytes(y_dtype));
  span("y_weights", y_weights, R * K * 4LL);
  span("out", out, T * hidden * dtype_bytes(out_dtype));
  span("out_weights", out_weights, T * K * 4LL);
  CombineCall c;
  set_ring(c, wire, num_sms, combine_payload_offset(K), hidden);
  c.y = y;
  c.y_dtype = y_dtype;
  c.y_weights = y_weights;
  c.out = out;
  c.out_dtype = out_dtype;
  c.out_weights = out_weights;
  transport->combine(*this, *h, c, s);
  const_cast<nep_cuda_handle*>(h)->set_stream(s);
}

// ---- Dense collectives and peer memory ---------------------------------------------------------

void nep_cuda_buffer::all_reduce_sum(int64_t data, int64_t count, int32_t dtype, cudaStream_t s) {
  check_usable();
  transport->all_reduce_sum(*this, data, count, dtype, s);
}

void nep_cuda_buffer::peer_scratch(int32_t peer, int64_t* address, int64_t* n) const {
  if (!connected()) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", rank, " is not connected");
  uint8_t* base = transport->peer_memory(peer);
  if (address == nullptr || n == nullptr)
    fail(NEP_ERR_INVALID_ARGUMENT, "address or bytes is null");
  *address = reinterpret_cast<int64_t>(base + Ctrl::kRingOffset);
  *n = bytes - (int64_t)Ctrl::kRingOffset;
}

// ---- Argument checks shared with the transports -------------------------------------------------

void nep::cuda::check_all_reduce_args(int64_t data, int64_t count, int32_t dtype) {
  check_dtype("dtype", dtype);
  if (count < 0) fail(NEP_ERR_INVALID_ARGUMENT, "count=", count, " is negative");
  if (count > 0 && data == 0) fail(NEP_ERR_INVALID_ARGUMENT, "data is null with count=", count);
}
