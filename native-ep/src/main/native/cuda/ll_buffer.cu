// The low-latency buffer (ll_buffer.h): creation and layout of the buffer, its cuda-ipc
// connection, the checks and bookkeeping of every call, and the launches of the LL kernels.
#include "ll_buffer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "device_span.h"
#include "nativeep/cuda_api.h"

using namespace nep::cuda;

namespace {

constexpr char kLlBlobMagic[8] = {'N', 'E', 'P', 'C', 'U', 'L', 'L', '1'};

struct LlBlob {
  IpcBlobHeader id;
  int64_t bytes, max_tokens, hidden;
  int32_t num_experts, max_topk, max_wire, pad;
};

long long up(long long v, long long a) { return (v + a - 1) / a * a; }

bool valid_wire(int32_t w) {
  return w == NEP_WIRE_FP32 || w == NEP_WIRE_BF16 || w == NEP_WIRE_FP8 || w == NEP_WIRE_MXFP8;
}

const char* wire_name(int32_t w) {
  switch (w) {
    case NEP_WIRE_FP32: return "fp32";
    case NEP_WIRE_BF16: return "bf16";
    case NEP_WIRE_FP8: return "fp8";
    case NEP_WIRE_MXFP8: return "mxfp8";
    default: return "?";
  }
}

const char* ll_kernel_name(int k) {
  switch (k) {
    case kKernelLlDispatchSend: return "LL dispatch send";
    case kKernelLlDispatchRecv: return "LL dispatch receive";
    case kKernelLlCombineSend: return "LL combine send";
    case kKernelLlCombineRecv: return "LL combine receive";
    default: return "LL kernel";
  }
}

std::string ll_counter_desc(int counter, int rank, int peer, int channel) {
  switch (counter) {
    case kLlCounterReleased:
      return cat("released[", channel, "] of rank ", peer, " (rank ", peer,
                 " has not received the call two before on half ", channel, ")");
    case kLlCounterFlag:
      return cat("flag[", channel, "][", peer, "] in rank ", rank,
                 "'s buffer (call number written by rank ", peer, ")");
    case kLlCounterDispatchRows:
      return cat("dispatch arrival counter (local expert ", channel, ", source ", peer,
                 ") in rank ", rank, "'s buffer");
    case kLlCounterCombineRows:
      return cat("combine arrival counter of source ", peer, " in rank ", rank, "'s buffer (half ",
                 channel, ")");
    case kLlCounterKind:
      return cat("kind of rank ", peer, "'s call (the ranks' sequences of LL calls differ)");
    case kLlCounterPeerAbort: return cat("rank ", peer, " failed (its abort word is set)");
    default: return cat("counter ", counter);
  }
}

void check_dtype(const char* name, int32_t dtype) {
  if (dtype != NEP_DTYPE_FP32 && dtype != NEP_DTYPE_BF16)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=", dtype,
         " is not a dtype (NEP_DTYPE_FP32=0 or NEP_DTYPE_BF16=1)");
}

void check_addr(const char* name, int64_t addr, bool required) {
  if (addr == 0) {
    if (required) fail(NEP_ERR_INVALID_ARGUMENT, name, " is null");
    return;
  }
  if (addr % 16 != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec,
         " is not 16-byte aligned");
}

}  // namespace

// ---- Creation and connection -------------------------------------------------------------------

nep_cuda_ll_buffer::nep_cuda_ll_buffer(int32_t rank, int32_t world_size, int32_t device_,
                                       int64_t max_tokens_per_rank, int64_t hidden,
                                       int32_t num_experts, int32_t max_topk, int32_t max_wire_,
                                       int64_t timeout_ms_) {
  if (world_size < 1 || world_size > kMaxRanks)
    fail(NEP_ERR_INVALID_ARGUMENT, "world_size=", world_size, " is outside [1, ", kMaxRanks,
         "] (ranks of one host)");
  if (rank < 0 || rank >= world_size)
    fail(NEP_ERR_INVALID_ARGUMENT, "rank=", rank, " is outside [0, ", world_size, ")");
  if (max_tokens_per_rank < 1 || max_tokens_per_rank > (1 << 20))
    fail(NEP_ERR_INVALID_ARGUMENT, "max_tokens_per_rank=", max_tokens_per_rank,
         " is outside [1, 2^20]");
  if (hidden < 1 || hidden > (1LL << 20))
    fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is outside [1, 2^20]");
  if (hidden % 8 != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden,
         " is not a multiple of 8 (16-byte rows of bf16)");
  if (num_experts < 1 || num_experts % world_size != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts=", num_experts,
         " is not a positive multiple of world_size=", world_size);
  if (num_experts / world_size > kMaxLocalExperts)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts / world_size = ", num_experts / world_size,
         " exceeds ", kMaxLocalExperts, " local experts");
  if (max_topk < 1 || max_topk > kMaxTopk || max_topk > num_experts)
    fail(NEP_ERR_INVALID_ARGUMENT, "max_topk=", max_topk, " is outside [1, min(", kMaxTopk,
         ", num_experts=", num_experts, ")]");
  if (!valid_wire(max_wire_))
    fail(NEP_ERR_INVALID_ARGUMENT, "max_wire=", max_wire_,
         " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  if (timeout_ms_ < 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms_, " is negative");
  const long long smem = (long long)num_experts * ((max_tokens_per_rank + 31) / 32) * 4;
  if (smem > kLlSmemLimit)
    fail(NEP_ERR_CAPACITY, "num_experts x ceil(max_tokens_per_rank / 32) x 4 = ", smem,
         " bytes of shared memory exceed the limit ", kLlSmemLimit, " (lower max_tokens_per_rank)");
  const int n = nep_cuda_device_count();
  if (device_ < 0 || device_ >= n)
    fail(NEP_ERR_INVALID_ARGUMENT, "device=", device_, " is outside [0, ", n,
         ") (CUDA devices visible)");
  DeviceGuard guard(device_);
  LlShape& s = shape;
  s.rank = rank;
  s.world = world_size;
  s.local_experts = num_experts / world_size;
  s.num_experts = num_experts;
  s.max_topk = max_topk;
  s.max_tokens = max_tokens_per_rank;
  s.hidden = hidden;
  device = device_;
  max_wire = max_wire_;
  timeout_ms = timeout_ms_ == 0 ? 30000 : timeout_ms_;
  check_cuda(cudaDeviceGetAttribute(&device_sms, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute");
  num_sms = device_sms;
  // Geometry.
  LlGeom& g = geom;
  const int El = s.local_experts, W = world_size;
  g.abort_off = 0;
  g.claim_off = 64;
  g.epoch_off = 128;
  g.released_off = g.epoch_off + 128;
  g.done_off = g.released_off + 128;
  g.flags_off = g.done_off + 128;
  g.flag_stride = up(kLlFlagHeader + 4LL * El, 64);
  g.darr_off = up(g.flags_off + 2LL * W * g.flag_stride, 64);
  g.dcons_off = up(g.darr_off + 4LL * 2 * El * W, 64);
  g.carr_off = up(g.dcons_off + 4LL * 4 * El * W, 64);
  g.data_off = up(g.carr_off + 64LL * 2 * W, 4096);
  g.msg_stride = up(kLlMsgHeader + wire_row_bytes(max_wire, hidden), 16);
  g.crow_stride =
      up(std::max(wire_row_bytes(max_wire, hidden), wire_row_bytes(NEP_WIRE_BF16, hidden)), 16);
  const long long dispatch_bytes = (long long)El * W * max_tokens_per_rank * g.msg_stride;
  const long long combine_bytes = max_tokens_per_rank * max_topk * g.crow_stride;
  g.half_bytes = up(std::max(dispatch_bytes, combine_bytes), 4096);
  g.total = g.data_off + 2 * g.half_bytes;
  route_rows_bytes = up(8LL * El * W * max_tokens_per_rank, 256);
  route_slot_bytes = up(route_rows_bytes + 4LL * El, 256);
  mem = DeviceMemory((size_t)g.total);
  route = DeviceMemory((size_t)(2 * route_slot_bytes));
  check_cuda(cudaMemset(mem.get(), 0, (size_t)g.data_off), "cudaMemset");
  check_cuda(cudaMemset(route.get(), 0, (size_t)(2 * route_slot_bytes)), "cudaMemset");
  check_cuda(ll_prepare_kernels(device), "cudaFuncSetAttribute (LL kernels)");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  err = std::make_unique<MappedHost<ErrorRecord>>();
  done = std::make_unique<Event>();
  peers = IpcPeers(local(), rank);
}

void nep_cuda_ll_buffer::export_blob(uint8_t* out, int64_t cap) const {
  ipc_check_export_out(out, cap);
  DeviceGuard guard(device);
  LlBlob blob;
  std::memset(&blob, 0, sizeof(blob));
  blob.bytes = geom.total;
  blob.max_tokens = shape.max_tokens;
  blob.hidden = shape.hidden;
  blob.num_experts = shape.num_experts;
  blob.max_topk = shape.max_topk;
  blob.max_wire = max_wire;
  ipc_fill_header(blob.id, kLlBlobMagic, shape.rank, shape.world, device, mem.get());
  ipc_write_blob(&blob, sizeof(blob), out);
}

void nep_cuda_ll_buffer::connect(const uint8_t* all_blobs, int64_t bytes) {
  if (connected)
    fail(NEP_ERR_INVALID_ARGUMENT, "low-latency buffer of rank ", shape.rank,
         " is already connected");
  const LlShape& s = shape;
  peers.connect<LlBlob>(all_blobs, bytes, s.world, s.rank, device, "'s low-latency buffer",
                        [&](int p, const LlBlob& b) {
    if (std::memcmp(b.id.magic, kLlBlobMagic, sizeof(kLlBlobMagic)) != 0)
      fail(NEP_ERR_PEER, "blob ", p,
           " is not a nativeep low-latency buffer export (nep_cuda_ll_buffer_export)");
  }, [&](int p, const LlBlob& b) {
    if (b.max_tokens != s.max_tokens || b.hidden != s.hidden || b.num_experts != s.num_experts ||
        b.max_topk != s.max_topk || b.max_wire != max_wire || b.bytes != geom.total)
      fail(NEP_ERR_PEER, "rank ", p,
           " created its low-latency buffer with (max_tokens_per_rank, hidden, num_experts, "
           "max_topk, max_wire) = (",
           b.max_tokens, ", ", b.hidden, ", ", b.num_experts, ", ", b.max_topk, ", ", b.max_wire,
           "), this rank with (", s.max_tokens, ", ", s.hidden, ", ", s.num_experts, ", ",
           s.max_topk, ", ", max_wire, ")");
  });
  connected = true;
}

// ---- Failures and waits ------------------------------------------------------------------------

WaitCtx nep_cuda_ll_buffer::wait_ctx(int kernel) const {
  WaitCtx w;
  w.abort = reinterpret_cast<unsigned int*>(local() + geom.abort_off);
  w.err_claim = reinterpret_cast<unsigned int*>(local() + geom.claim_off);
  w.record = err->device();
  w.timeout_ns = (unsigned long long)timeout_ms * 1000000ull;
  w.rank = shape.rank;
  w.kernel = kernel;
  return w;
}

void nep_cuda_ll_buffer::check_device_error() {
  volatile ErrorRecord* r = err->host();
  if (r->valid == 0) return;
  std::string msg;
  if (r->counter == kLlCounterBadInput) {
    msg =
        cat(ll_kernel_name(r->kernel), " on rank ", r->rank, ": topk_idx[", r->expected, "][",
            r->channel, "]=", r->observed, " is out of range [-1, num_experts=", shape.num_experts,
            ") or repeats an expert of its row");
  } else if (r->counter == kLlCounterPeerInput) {
    msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, ": rank ", r->peer,
              "'s topk_idx was invalid (rank ", r->peer, " reports which entry)");
  } else if (r->code == NEP_ERR_TIMEOUT) {
    msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms,
              " ms waiting for rank ", r->peer, ": ",
              ll_counter_desc(r->counter, r->rank, r->peer, r->channel),
              "; expected >= ", r->expected, ", saw ", r->observed);
  } else {
    msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, " failed waiting for rank ", r->peer,
              ": ", ll_counter_desc(r->counter, r->rank, r->peer, r->channel), " (expected ",
              r->expected, ", saw ", r->observed, ")");
  }
  failure_code = r->code;
  failure = msg + "; the low-latency buffer is unusable now (every rank must re-create it)";
  throw Error(failure_code, failure);
}

void nep_cuda_ll_buffer::check_usable() {
  if (!connected)
    fail(NEP_ERR_INVALID_ARGUMENT, "low-latency buffer of rank ", shape.rank,
         " is not connected (call nep_cuda_ll_buffer_connect)");
  if (failure_code != NEP_OK) throw Error(failure_code, failure);
  check_device_error();
}

void nep_cuda_ll_buffer::sync(cudaStream_t stream) {
  if (failure_code != NEP_OK) throw Error(failure_code, failure);
  DeviceGuard guard(device);
  check_cuda(cudaEventRecord(done->get(), stream), "cudaEventRecord");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms + 5000);
  for (int spins = 0;; ++spins) {
    const cudaError_t e = cudaEventQuery(done->get());
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) check_cuda(e, "nep_cuda_ll_sync");
    check_device_error();
    if (std::chrono::steady_clock::now() > deadline) {
      failure_code = NEP_ERR_TIMEOUT;
      failure = cat("nep_cuda_ll_sync on rank ", shape.rank, ": the GPU did not finish within ",
                    timeout_ms + 5000,
                    " ms (device busy, or a kernel stuck); the low-latency buffer is unusable now");
      throw Error(failure_code, failure);
    }
    if (spins < 2000) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  check_device_error();
}

void nep_cuda_ll_buffer::poison(cudaStream_t stream) {
  DeviceGuard guard(device);
  check_cuda(cudaMemsetAsync(local() + geom.data_off, 0xFF, (size_t)(2 * geom.half_bytes), stream),
             "cudaMemsetAsync");
}

// ---- Call bookkeeping ---------------------------------------------------------------------------

uint64_t nep_cuda_ll_buffer::next_call(int* half) const {
  const uint64_t n = calls + 1;
  const int h = int(n % 2);
  if (pending[h] != nullptr) {
    const nep_cuda_ll_op* p = pending[h];
    fail(NEP_ERR_INVALID_ARGUMENT, "rank ", shape.rank, ": low-latency call ", p->call, " (a ",
         p->kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine",
         ") still awaits its receive; at most two sends may be pending");
  }
  *half = h;
  return n;
}

std::unique_ptr<nep_cuda_ll_op> nep_cuda_ll_buffer::new_op(int32_t kind, int64_t num_tokens,
                                                           int32_t num_topk, cudaStream_t stream) {
  int half = 0;
  const uint64_t n = next_call(&half);
  auto op = std::make_unique<nep_cuda_ll_op>();
  op->buf = this;
  op->kind = kind;
  op->call = n;
  op->half = half;
  op->num_tokens = num_tokens;
  op->num_topk = num_topk;
  op->stream = stream;
  return op;
}

void nep_cuda_ll_buffer::launched(nep_cuda_ll_op* op) {
  calls = op->call;
  pending[op->half] = op;
}

void nep_cuda_ll_buffer::finish(nep_cuda_ll_op* op) {
  op->pending = false;
  if (pending[op->half] == op) pending[op->half] = nullptr;
}

void nep_cuda_ll_buffer::abandon(nep_cuda_ll_op* op) {
  if (failure_code == NEP_OK) {
    try {
      DeviceGuard guard(device);
      if (op->kind == NEP_CUDA_LL_DISPATCH)
        enqueue_dispatch_recv(op, 0, NEP_DTYPE_FP32, 0, 0, 0, op->stream);
      else enqueue_combine_recv(op, 0, NEP_DTYPE_FP32, op->stream);
    } catch (...) {
    }
  }
  finish(op);
}

// ---- Dispatch -----------------------------------------------------------------------------------

std::unique_ptr<nep_cuda_ll_op> nep_cuda_ll_buffer::dispatch_send(
    int64_t x, int32_t x_dtype, int64_t num_tokens, int64_t hidden, int64_t topk_idx,
    int32_t num_topk, int32_t wire, int32_t flags, cudaStream_t stream) {
  check_usable();
  const LlShape& s = shape;
  if (num_tokens < 0) fail(NEP_ERR_INVALID_ARGUMENT, "num_tokens=", num_tokens, " is negative");
  if (num_tokens > s.max_tokens)
    fail(NEP_ERR_CAPACITY, "num_tokens=", num_tokens, " exceeds max_tokens_per_rank=", s.max_tokens,
         " of the low-latency buffer");
  if (hidden != s.hidden)
    fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden,
         " but the low-latency buffer was created with hidden=", s.hidden);
  if (num_topk < 1 || num_topk > s.max_topk)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_topk=", num_topk, " is outside [1, max_topk=", s.max_topk,
         "]");
  check_dtype("x_dtype", x_dtype);
  if (!valid_wire(wire))
    fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire,
         " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  if (row_bytes(wire) > row_bytes(max_wire))
    fail(NEP_ERR_CAPACITY, "wire=", wire_name(wire), " needs ", row_bytes(wire),
         " bytes per row, above the ", row_bytes(max_wire), " of max_wire=", wire_name(max_wire));
  if (flags != 0 && flags != NEP_CUDA_LL_ROUND_SCALE)
    fail(NEP_ERR_INVALID_ARGUMENT, "flags=", flags, " is not 0 or NEP_CUDA_LL_ROUND_SCALE");
  if (flags == NEP_CUDA_LL_ROUND_SCALE && wire != NEP_WIRE_FP8)
    fail(NEP_ERR_INVALID_ARGUMENT, "NEP_CUDA_LL_ROUND_SCALE needs wire=NEP_WIRE_FP8, not ",
         wire_name(wire));
  check_addr("x", x, num_tokens > 0);
  if (topk_idx == 0 && num_tokens > 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null");
  if (topk_idx % 8 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is not 8-byte aligned");
  DeviceGuard guard(device);
  const SpanChecker span(device, stream);
  span("x", x, num_tokens * s.hidden * dtype_bytes(x_dtype));
  span("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
  auto op = new_op(NEP_CUDA_LL_DISPATCH, num_tokens, num_topk, stream);
  LlDispatchSendArgs a{};
  a.s = s;
  a.g = geom;
  a.half = op->half;
  a.num_topk = num_topk;
  a.wire = wire;
  a.flags = flags;
  a.x_dtype = x_dtype;
  a.num_tokens = num_tokens;
  a.x = reinterpret_cast<const void*>(x);
  a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
  a.words = int32_t((num_tokens + 31) / 32);
  peers.copy_bases(a.peers);
  a.wait = wait_ctx(kKernelLlDispatchSend);
  check_cuda(launch_ll_dispatch_send(a, num_sms, op->stream), "LL dispatch send launch");
  route_owner[op->half] = op->call;  // the receive writes this routing slot
  launched(op.get());
  return op;
}

std::unique_ptr<nep_cuda_ll_handle> nep_cuda_ll_buffer::dispatch_recv(
    nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype, int64_t recv_count,
    int64_t recv_src_info, int64_t recv_layout_range, cudaStream_t stream) {
  check_usable();
  check_dtype("recv_dtype", recv_dtype);
  check_addr("recv_x", recv_x, true);
  check_addr("recv_count", recv_count, true);
  check_addr("recv_src_info", recv_src_info, false);
  check_addr("recv_layout_range", recv_layout_range, false);
  DeviceGuard guard(device);
  const LlShape& s = shape;
  const long long El = s.local_experts, N = (long long)s.world * s.max_tokens;
  const SpanChecker span(device, stream);
  span("recv_x", recv_x, El * N * s.hidden * dtype_bytes(recv_dtype));
  span("recv_count", recv_count, El * 4);
  span("recv_src_info", recv_src_info, El * N * 4);
  span("recv_layout_range", recv_layout_range, El * s.world * 8);
  auto h = std::make_unique<nep_cuda_ll_handle>();
  h->buf = this;
  h->call = op->call;
  h->route_slot = op->half;
  h->num_tokens = op->num_tokens;
  h->num_topk = op->num_topk;
  enqueue_dispatch_recv(op, recv_x, recv_dtype, recv_count, recv_src_info, recv_layout_range,
                        stream);
  finish(op);
  return h;
}

void nep_cuda_ll_buffer::enqueue_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x,
                                               int32_t recv_dtype, int64_t recv_count,
                                               int64_t recv_src_info, int64_t recv_layout_range,
                                               cudaStream_t stream) {
  LlDispatchRecvArgs a{};
  a.s = shape;
  a.g = geom;
  a.half = op->half;
  a.out_dtype = recv_dtype;
  a.recv_x = reinterpret_cast<void*>(recv_x);
  a.recv_count = reinterpret_cast<int32_t*>(recv_count);
  a.recv_src_info = reinterpret_cast<int32_t*>(recv_src_info);
  a.recv_layout_range = reinterpret_cast<long long*>(recv_layout_range);
  a.route_rows = route_rows(op->half);
  a.route_counts = route_counts(op->half);
  peers.copy_bases(a.peers);
  a.wait = wait_ctx(kKernelLlDispatchRecv);
  // Two blocks per SM (the kernel is latency-bound; 64 registers let two 512-thread blocks share
  // an SM).
  check_cuda(launch_ll_dispatch_recv(a, 2 * num_sms, stream), "LL dispatch receive launch");
}

// ---- Combine ------------------------------------------------------------------------------------

std::unique_ptr<nep_cuda_ll_op> nep_cuda_ll_buffer::combine_send(const nep_cuda_ll_handle* h,
                                                                 int64_t y, int32_t y_dtype,
                                                                 int64_t topk_idx,
                                                                 int64_t topk_weights, int32_t wire,
                                                                 cudaStream_t stream) {
  if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
  if (h->buf != this)
    fail(NEP_ERR_INVALID_ARGUMENT, "the handle belongs to another low-latency buffer");
  check_usable();
  if (route_owner[h->route_slot] != h->call)
    fail(NEP_ERR_INVALID_ARGUMENT, "the handle of dispatch call ", h->call,
         " is stale: dispatch call ", route_owner[h->route_slot],
         " reused its routing slot (combine a dispatch before the dispatch after next)");
  check_dtype("y_dtype", y_dtype);
  if (wire != NEP_WIRE_FP32 && wire != NEP_WIRE_BF16 && wire != NEP_WIRE_FP8 &&
      wire != NEP_WIRE_MXFP8)
    fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire,
         " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
  if (row_bytes(wire) > geom.crow_stride)
    fail(NEP_ERR_CAPACITY, "combine wire=", wire_name(wire), " needs ", row_bytes(wire),
         " bytes per row, above the ", geom.crow_stride,
         " the buffer holds (max_wire=", wire_name(max_wire), ")");
  check_addr("y", y, true);
  const bool need = h->num_tokens > 0;
  if (need && topk_idx == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null");
  if (need && topk_weights == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_weights is null");
  if (topk_idx % 8 != 0 || topk_weights % 4 != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx or topk_weights is misaligned");
  DeviceGuard guard(device);
  {
    const LlShape& s = shape;
    const long long El = s.local_experts, N = (long long)s.world * s.max_tokens;
    const SpanChecker span(device, stream);
    span("y", y, El * N * s.hidden * dtype_bytes(y_dtype));
    span("topk_idx", topk_idx, h->num_tokens * h->num_topk * 8LL);
    span("topk_weights", topk_weights, h->num_tokens * h->num_topk * 4LL);
  }
  auto op = new_op(NEP_CUDA_LL_COMBINE, h->num_tokens, h->num_topk, stream);
  op->topk_idx = reinterpret_cast<const long long*>(topk_idx);
  op->topk_weights = reinterpret_cast<const float*>(topk_weights);
  LlCombineSendArgs a{};
  a.s = shape;
  a.g = geom;
  a.half = op->half;
  a.wire = wire;
  a.y_dtype = y_dtype;
  a.y = reinterpret_cast<const void*>(y);
  a.route_rows = route_rows(h->route_slot);
  a.route_counts = route_counts(h->route_slot);
  peers.copy_bases(a.peers);
  a.wait = wait_ctx(kKernelLlCombineSend);
  // two blocks per SM
  check_cuda(launch_ll_combine_send(a, 2 * num_sms, op->stream), "LL combine send launch");
  launched(op.get());
  return op;
}

void nep_cuda_ll_buffer::combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype,
                                      cudaStream_t stream) {
  check_usable();
  check_dtype("out_dtype", out_dtype);
  check_addr("out", out, op->num_tokens > 0);
  DeviceGuard guard(device);
  SpanChecker(device, stream)("out", out, op->num_tokens * shape.hidden * dtype_bytes(out_dtype));
  enqueue_combine_recv(op, out, out_dtype, stream);
  finish(op);
}

void nep_cuda_ll_buffer::enqueue_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype,
                                              cudaStream_t stream) {
  LlCombineRecvArgs a{};
  a.s = shape;
  a.g = geom;
  a.half = op->half;
  a.num_topk = op->num_topk;
  a.out_dtype = out_dtype;
  a.num_tokens = op->num_tokens;
  a.topk_idx = op->topk_idx;
  a.topk_weights = op->topk_weights;
  a.out = reinterpret_cast<void*>(out);
  peers.copy_bases(a.peers);
  a.wait = wait_ctx(kKernelLlCombineRecv);
  check_cuda(launch_ll_combine_recv(a, num_sms, stream), "LL combine receive launch");
}
