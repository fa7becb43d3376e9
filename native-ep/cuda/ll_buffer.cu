// Host side and C ABI of the low-latency mode of the cuda-ipc transport (cuda_api.h "Low-latency
// mode"; buffer layout and protocol in ll_common.cuh, kernels in ll_kernels.cu). The host keeps
// only the call bookkeeping (which half a call uses, which calls await their receive, which
// dispatch owns each routing slot); everything that depends on the data stays on the device.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "device_span.h"
#include "host_utils.h"
#include "ll_common.cuh"
#include "nativeep/cuda_api.h"

using namespace nep::cuda;

#define NEP_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr char kLlBlobMagic[8] = {'N', 'E', 'P', 'C', 'U', 'L', 'L', '1'};

struct LlBlob {
  char magic[8];
  int32_t rank, world, device, pid;
  int64_t bytes, max_tokens, hidden;
  int32_t num_experts, max_topk, max_wire, pad;
  char host[64];
  cudaIpcMemHandle_t ipc;
};
static_assert(sizeof(LlBlob) <= NEP_CUDA_EXPORT_BYTES, "LL export blob too large");

long long up(long long v, long long a) { return (v + a - 1) / a * a; }

bool valid_wire(int32_t w) { return w == NEP_WIRE_FP32 || w == NEP_WIRE_BF16 || w == NEP_WIRE_FP8 || w == NEP_WIRE_MXFP8; }

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
      return cat("released[", channel, "] of rank ", peer, " (rank ", peer, " has not received the call two before on half ", channel, ")");
    case kLlCounterFlag: return cat("flag[", channel, "][", peer, "] in rank ", rank, "'s buffer (call number written by rank ", peer, ")");
    case kLlCounterDispatchRows:
      return cat("dispatch arrival counter (local expert ", channel, ", source ", peer, ") in rank ", rank, "'s buffer");
    case kLlCounterCombineRows: return cat("combine arrival counter of source ", peer, " in rank ", rank, "'s buffer (half ", channel, ")");
    case kLlCounterKind: return cat("kind of rank ", peer, "'s call (the ranks' sequences of LL calls differ)");
    case kLlCounterPeerAbort: return cat("rank ", peer, " failed (its abort word is set)");
    default: return cat("counter ", counter);
  }
}

void check_dtype(const char* name, int32_t dtype) {
  if (dtype != NEP_DTYPE_FP32 && dtype != NEP_DTYPE_BF16)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=", dtype, " is not a dtype (NEP_DTYPE_FP32=0 or NEP_DTYPE_BF16=1)");
}

void check_addr(const char* name, int64_t addr, bool required) {
  if (addr == 0) {
    if (required) fail(NEP_ERR_INVALID_ARGUMENT, name, " is null");
    return;
  }
  if (addr % 16 != 0) fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec, " is not 16-byte aligned");
}

cudaStream_t as_stream(int64_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace

struct nep_cuda_ll_op;

struct nep_cuda_ll_buffer {
  LlShape shape{};
  LlGeom geom{};
  int32_t device = 0, device_sms = 0, num_sms = 0, max_wire = 0;
  int64_t timeout_ms = 30000;
  DeviceMemory mem;    // shared (IPC)
  DeviceMemory route;  // [2] routing slots: rows [El][N] int2, counts [El] int32
  long long route_rows_bytes = 0, route_slot_bytes = 0;
  std::unique_ptr<MappedHost<ErrorRecord>> err;
  std::unique_ptr<Event> done;
  std::vector<IpcMapping> maps;
  uint8_t* peers[kMaxRanks] = {};
  bool connected = false;
  int failure_code = NEP_OK;
  std::string failure;
  // Host bookkeeping.
  uint64_t calls = 0;
  nep_cuda_ll_op* pending[2] = {nullptr, nullptr};
  uint64_t route_owner[2] = {0, 0};  // call number of the dispatch whose routing slot b holds

  uint8_t* local() const { return static_cast<uint8_t*>(mem.get()); }
  int2* route_rows(int b) const { return reinterpret_cast<int2*>(static_cast<uint8_t*>(route.get()) + b * route_slot_bytes); }
  int32_t* route_counts(int b) const {
    return reinterpret_cast<int32_t*>(static_cast<uint8_t*>(route.get()) + b * route_slot_bytes + route_rows_bytes);
  }

  WaitCtx wait_ctx(int kernel) const {
    WaitCtx w;
    w.abort = reinterpret_cast<unsigned int*>(local() + geom.abort_off);
    w.err_claim = reinterpret_cast<unsigned int*>(local() + geom.claim_off);
    w.record = err->device();
    w.timeout_ns = (unsigned long long)timeout_ms * 1000000ull;
    w.rank = shape.rank;
    w.kernel = kernel;
    return w;
  }

  void check_device_error() {
    volatile ErrorRecord* r = err->host();
    if (r->valid == 0) return;
    std::string msg;
    if (r->counter == kLlCounterBadInput) {
      msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, ": topk_idx[", r->expected, "][", r->channel, "]=", r->observed,
                " is out of range [-1, num_experts=", shape.num_experts, ") or repeats an expert of its row");
    } else if (r->counter == kLlCounterPeerInput) {
      msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, ": rank ", r->peer, "'s topk_idx was invalid (rank ", r->peer,
                " reports which entry)");
    } else if (r->code == NEP_ERR_TIMEOUT) {
      msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms, " ms waiting for rank ", r->peer, ": ",
                ll_counter_desc(r->counter, r->rank, r->peer, r->channel), "; expected >= ", r->expected, ", saw ", r->observed);
    } else {
      msg = cat(ll_kernel_name(r->kernel), " on rank ", r->rank, " failed waiting for rank ", r->peer, ": ",
                ll_counter_desc(r->counter, r->rank, r->peer, r->channel), " (expected ", r->expected, ", saw ", r->observed, ")");
    }
    failure_code = r->code;
    failure = msg + "; the low-latency buffer is unusable now (every rank must re-create it)";
    throw nep::cuda::Error(failure_code, failure);
  }

  void check_usable() {
    if (!connected) fail(NEP_ERR_INVALID_ARGUMENT, "low-latency buffer of rank ", shape.rank, " is not connected (call nep_cuda_ll_buffer_connect)");
    if (failure_code != NEP_OK) throw nep::cuda::Error(failure_code, failure);
    check_device_error();
  }

  void fill_peers(uint8_t* out[kMaxRanks]) const {
    for (int i = 0; i < kMaxRanks; ++i) out[i] = peers[i];
  }

  int64_t row_bytes(int32_t wire) const { return wire_row_bytes(wire, shape.hidden); }
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

namespace {

void require_buffer(const nep_cuda_ll_buffer* b) {
  if (b == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "buf is null");
}

// Reserves the next call number; fails (changing nothing) when its half still awaits a receive.
uint64_t next_call(nep_cuda_ll_buffer* b, int* half) {
  const uint64_t n = b->calls + 1;
  const int h = int(n % 2);
  if (b->pending[h] != nullptr) {
    const nep_cuda_ll_op* p = b->pending[h];
    fail(NEP_ERR_INVALID_ARGUMENT, "rank ", b->shape.rank, ": low-latency call ", p->call, " (a ",
         p->kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine", ") still awaits its receive; at most two sends may be pending");
  }
  *half = h;
  return n;
}

void check_op(const nep_cuda_ll_op* op, int32_t kind) {
  if (op == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "op is null");
  if (op->kind != kind)
    fail(NEP_ERR_INVALID_ARGUMENT, "op of call ", op->call, " is a ", op->kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine",
         ", not a ", kind == NEP_CUDA_LL_DISPATCH ? "dispatch" : "combine");
  if (!op->pending) fail(NEP_ERR_INVALID_ARGUMENT, "op of call ", op->call, " was already received");
}

int blocks_for(const nep_cuda_ll_buffer* b) { return b->num_sms; }

void enqueue_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype, int64_t recv_count, int64_t recv_src_info,
                           int64_t recv_layout_range, cudaStream_t stream) {
  nep_cuda_ll_buffer* b = op->buf;
  LlDispatchRecvArgs a{};
  a.s = b->shape;
  a.g = b->geom;
  a.half = op->half;
  a.out_dtype = recv_dtype;
  a.recv_x = reinterpret_cast<void*>(recv_x);
  a.recv_count = reinterpret_cast<int32_t*>(recv_count);
  a.recv_src_info = reinterpret_cast<int32_t*>(recv_src_info);
  a.recv_layout_range = reinterpret_cast<long long*>(recv_layout_range);
  a.route_rows = b->route_rows(op->half);
  a.route_counts = b->route_counts(op->half);
  b->fill_peers(a.peers);
  a.wait = b->wait_ctx(kKernelLlDispatchRecv);
  // Two blocks per SM (the kernel is latency-bound; 64 registers let two 512-thread blocks share an SM).
  check_cuda(launch_ll_dispatch_recv(a, 2 * blocks_for(b), stream), "LL dispatch receive launch");
}

void enqueue_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype, cudaStream_t stream) {
  nep_cuda_ll_buffer* b = op->buf;
  LlCombineRecvArgs a{};
  a.s = b->shape;
  a.g = b->geom;
  a.half = op->half;
  a.num_topk = op->num_topk;
  a.out_dtype = out_dtype;
  a.num_tokens = op->num_tokens;
  a.topk_idx = op->topk_idx;
  a.topk_weights = op->topk_weights;
  a.out = reinterpret_cast<void*>(out);
  b->fill_peers(a.peers);
  a.wait = b->wait_ctx(kKernelLlCombineRecv);
  check_cuda(launch_ll_combine_recv(a, blocks_for(b), stream), "LL combine receive launch");
}

void finish_op(nep_cuda_ll_op* op) {
  op->pending = false;
  if (op->buf->pending[op->half] == op) op->buf->pending[op->half] = nullptr;
}

}  // namespace

// ---- Buffer ------------------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_create(int32_t rank, int32_t world_size, int32_t device, int64_t max_tokens_per_rank,
                                                  int64_t hidden, int32_t num_experts, int32_t max_topk, int32_t max_wire,
                                                  int64_t timeout_ms, nep_cuda_ll_buffer** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    if (world_size < 1 || world_size > kMaxRanks)
      fail(NEP_ERR_INVALID_ARGUMENT, "world_size=", world_size, " is outside [1, ", kMaxRanks, "] (ranks of one host)");
    if (rank < 0 || rank >= world_size) fail(NEP_ERR_INVALID_ARGUMENT, "rank=", rank, " is outside [0, ", world_size, ")");
    if (max_tokens_per_rank < 1 || max_tokens_per_rank > (1 << 20))
      fail(NEP_ERR_INVALID_ARGUMENT, "max_tokens_per_rank=", max_tokens_per_rank, " is outside [1, 2^20]");
    if (hidden < 1 || hidden > (1LL << 20)) fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is outside [1, 2^20]");
    if (hidden % 8 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is not a multiple of 8 (16-byte rows of bf16)");
    if (num_experts < 1 || num_experts % world_size != 0)
      fail(NEP_ERR_INVALID_ARGUMENT, "num_experts=", num_experts, " is not a positive multiple of world_size=", world_size);
    if (num_experts / world_size > kMaxLocalExperts)
      fail(NEP_ERR_INVALID_ARGUMENT, "num_experts / world_size = ", num_experts / world_size, " exceeds ", kMaxLocalExperts, " local experts");
    if (max_topk < 1 || max_topk > kMaxTopk || max_topk > num_experts)
      fail(NEP_ERR_INVALID_ARGUMENT, "max_topk=", max_topk, " is outside [1, min(", kMaxTopk, ", num_experts=", num_experts, ")]");
    if (!valid_wire(max_wire)) fail(NEP_ERR_INVALID_ARGUMENT, "max_wire=", max_wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
    if (timeout_ms < 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " is negative");
    const long long smem = (long long)num_experts * ((max_tokens_per_rank + 31) / 32) * 4;
    if (smem > kLlSmemLimit)
      fail(NEP_ERR_CAPACITY, "num_experts x ceil(max_tokens_per_rank / 32) x 4 = ", smem, " bytes of shared memory exceed the limit ",
           kLlSmemLimit, " (lower max_tokens_per_rank)");
    const int n = nep_cuda_device_count();
    if (device < 0 || device >= n) fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", n, ") (CUDA devices visible)");
    DeviceGuard guard(device);
    auto b = std::make_unique<nep_cuda_ll_buffer>();
    LlShape& s = b->shape;
    s.rank = rank;
    s.world = world_size;
    s.local_experts = num_experts / world_size;
    s.num_experts = num_experts;
    s.max_topk = max_topk;
    s.max_tokens = max_tokens_per_rank;
    s.hidden = hidden;
    b->device = device;
    b->max_wire = max_wire;
    b->timeout_ms = timeout_ms == 0 ? 30000 : timeout_ms;
    check_cuda(cudaDeviceGetAttribute(&b->device_sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    b->num_sms = b->device_sms;
    // Geometry.
    LlGeom& g = b->geom;
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
    g.crow_stride = up(std::max(wire_row_bytes(max_wire, hidden), wire_row_bytes(NEP_WIRE_BF16, hidden)), 16);
    const long long dispatch_bytes = (long long)El * W * max_tokens_per_rank * g.msg_stride;
    const long long combine_bytes = max_tokens_per_rank * max_topk * g.crow_stride;
    g.half_bytes = up(std::max(dispatch_bytes, combine_bytes), 4096);
    g.total = g.data_off + 2 * g.half_bytes;
    b->route_rows_bytes = up(8LL * El * W * max_tokens_per_rank, 256);
    b->route_slot_bytes = up(b->route_rows_bytes + 4LL * El, 256);
    b->mem = DeviceMemory((size_t)g.total);
    b->route = DeviceMemory((size_t)(2 * b->route_slot_bytes));
    check_cuda(cudaMemset(b->mem.get(), 0, (size_t)g.data_off), "cudaMemset");
    check_cuda(cudaMemset(b->route.get(), 0, (size_t)(2 * b->route_slot_bytes)), "cudaMemset");
    check_cuda(ll_prepare_kernels(device), "cudaFuncSetAttribute (LL kernels)");
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    b->err = std::make_unique<MappedHost<ErrorRecord>>();
    b->done = std::make_unique<Event>();
    b->peers[rank] = b->local();
    *out = b.release();
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_export(const nep_cuda_ll_buffer* buf, uint8_t* out, int64_t cap, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    if (cap < NEP_CUDA_EXPORT_BYTES) fail(NEP_ERR_INVALID_ARGUMENT, "cap=", cap, " is below NEP_CUDA_EXPORT_BYTES=", NEP_CUDA_EXPORT_BYTES);
    DeviceGuard guard(buf->device);
    LlBlob blob;
    std::memset(&blob, 0, sizeof(blob));
    std::memcpy(blob.magic, kLlBlobMagic, sizeof(kLlBlobMagic));
    blob.rank = buf->shape.rank;
    blob.world = buf->shape.world;
    blob.device = buf->device;
    blob.pid = (int32_t)getpid();
    blob.bytes = buf->geom.total;
    blob.max_tokens = buf->shape.max_tokens;
    blob.hidden = buf->shape.hidden;
    blob.num_experts = buf->shape.num_experts;
    blob.max_topk = buf->shape.max_topk;
    blob.max_wire = buf->max_wire;
    gethostname(blob.host, sizeof(blob.host) - 1);
    check_cuda(cudaIpcGetMemHandle(&blob.ipc, buf->mem.get()), "cudaIpcGetMemHandle");
    std::memset(out, 0, NEP_CUDA_EXPORT_BYTES);
    std::memcpy(out, &blob, sizeof(blob));
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_connect(nep_cuda_ll_buffer* buf, const uint8_t* all_blobs, int64_t bytes, char* err,
                                                   int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (buf->connected) fail(NEP_ERR_INVALID_ARGUMENT, "low-latency buffer of rank ", buf->shape.rank, " is already connected");
    if (all_blobs == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "all_blobs is null");
    const int W = buf->shape.world, me = buf->shape.rank;
    const int64_t want = (int64_t)W * NEP_CUDA_EXPORT_BYTES;
    if (bytes != want) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " but world_size x NEP_CUDA_EXPORT_BYTES = ", want);
    DeviceGuard guard(buf->device);
    LlBlob mine;
    std::memcpy(&mine, all_blobs + (size_t)me * NEP_CUDA_EXPORT_BYTES, sizeof(mine));
    mine.host[sizeof(mine.host) - 1] = '\0';
    std::vector<IpcMapping> maps;
    uint8_t* peers[kMaxRanks] = {};
    peers[me] = buf->local();
    for (int p = 0; p < W; ++p) {
      LlBlob b;
      std::memcpy(&b, all_blobs + (size_t)p * NEP_CUDA_EXPORT_BYTES, sizeof(b));
      b.host[sizeof(b.host) - 1] = '\0';
      if (std::memcmp(b.magic, kLlBlobMagic, sizeof(kLlBlobMagic)) != 0)
        fail(NEP_ERR_PEER, "blob ", p, " is not a nativeep low-latency buffer export (nep_cuda_ll_buffer_export)");
      if (b.rank != p) fail(NEP_ERR_PEER, "blob ", p, " comes from rank ", b.rank, " (blobs must be ordered by rank)");
      if (b.world != W) fail(NEP_ERR_PEER, "rank ", p, " has world_size=", b.world, ", this rank ", W);
      if (b.max_tokens != buf->shape.max_tokens || b.hidden != buf->shape.hidden || b.num_experts != buf->shape.num_experts ||
          b.max_topk != buf->shape.max_topk || b.max_wire != buf->max_wire || b.bytes != buf->geom.total)
        fail(NEP_ERR_PEER, "rank ", p, " created its low-latency buffer with (max_tokens_per_rank, hidden, num_experts, max_topk, max_wire) = (",
             b.max_tokens, ", ", b.hidden, ", ", b.num_experts, ", ", b.max_topk, ", ", b.max_wire, "), this rank with (",
             buf->shape.max_tokens, ", ", buf->shape.hidden, ", ", buf->shape.num_experts, ", ", buf->shape.max_topk, ", ", buf->max_wire, ")");
      if (std::strcmp(b.host, mine.host) != 0)
        fail(NEP_ERR_PEER, "rank ", p, " runs on host '", b.host, "', this rank on '", mine.host, "': cuda-ipc joins ranks of one host");
      if (p == me) continue;
      const std::string what = cat("cudaIpcOpenMemHandle of rank ", p, "'s low-latency buffer (device ", b.device, ", pid ", b.pid, ")");
      maps.emplace_back(b.ipc, what.c_str());
      peers[p] = static_cast<uint8_t*>(maps.back().get());
    }
    buf->maps = std::move(maps);
    for (int p = 0; p < kMaxRanks; ++p) buf->peers[p] = peers[p];
    buf->connected = true;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_set_num_sms(nep_cuda_ll_buffer* buf, int32_t num_sms, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (num_sms < 1 || num_sms > buf->device_sms)
      fail(NEP_ERR_INVALID_ARGUMENT, "num_sms=", num_sms, " is outside [1, ", buf->device_sms, "] (SMs of device ", buf->device, ")");
    buf->num_sms = num_sms;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_set_timeout(nep_cuda_ll_buffer* buf, int64_t timeout_ms, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (timeout_ms <= 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " must be > 0");
    buf->timeout_ms = timeout_ms;
  });
}

NEP_CUDA_EXPORT int64_t nep_cuda_ll_buffer_max_tokens_per_rank(const nep_cuda_ll_buffer* b) { return b ? b->shape.max_tokens : -1; }
NEP_CUDA_EXPORT int64_t nep_cuda_ll_buffer_hidden(const nep_cuda_ll_buffer* b) { return b ? b->shape.hidden : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_num_experts(const nep_cuda_ll_buffer* b) { return b ? b->shape.num_experts : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_num_local_experts(const nep_cuda_ll_buffer* b) { return b ? b->shape.local_experts : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_max_topk(const nep_cuda_ll_buffer* b) { return b ? b->shape.max_topk : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_max_wire(const nep_cuda_ll_buffer* b) { return b ? b->max_wire : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_rank(const nep_cuda_ll_buffer* b) { return b ? b->shape.rank : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_world_size(const nep_cuda_ll_buffer* b) { return b ? b->shape.world : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_device(const nep_cuda_ll_buffer* b) { return b ? b->device : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_num_sms(const nep_cuda_ll_buffer* b) { return b ? b->num_sms : -1; }
NEP_CUDA_EXPORT int64_t nep_cuda_ll_buffer_bytes(const nep_cuda_ll_buffer* b) { return b ? b->geom.total : -1; }

NEP_CUDA_EXPORT int32_t nep_cuda_ll_sync(nep_cuda_ll_buffer* buf, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (buf->failure_code != NEP_OK) throw nep::cuda::Error(buf->failure_code, buf->failure);
    DeviceGuard guard(buf->device);
    check_cuda(cudaEventRecord(buf->done->get(), as_stream(stream)), "cudaEventRecord");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(buf->timeout_ms + 5000);
    for (int spins = 0;; ++spins) {
      const cudaError_t e = cudaEventQuery(buf->done->get());
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) check_cuda(e, "nep_cuda_ll_sync");
      buf->check_device_error();
      if (std::chrono::steady_clock::now() > deadline) {
        buf->failure_code = NEP_ERR_TIMEOUT;
        buf->failure = cat("nep_cuda_ll_sync on rank ", buf->shape.rank, ": the GPU did not finish within ", buf->timeout_ms + 5000,
                           " ms (device busy, or a kernel stuck); the low-latency buffer is unusable now");
        throw nep::cuda::Error(buf->failure_code, buf->failure);
      }
      if (spins < 2000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    buf->check_device_error();
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_buffer_poison(nep_cuda_ll_buffer* buf, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    DeviceGuard guard(buf->device);
    check_cuda(cudaMemsetAsync(buf->local() + buf->geom.data_off, 0xFF, (size_t)(2 * buf->geom.half_bytes), as_stream(stream)),
               "cudaMemsetAsync");
  });
}

NEP_CUDA_EXPORT void nep_cuda_ll_buffer_destroy(nep_cuda_ll_buffer* buf) {
  if (buf == nullptr) return;
  int prev = 0;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(buf->device);
  cudaDeviceSynchronize();
  delete buf;
  if (have_prev) cudaSetDevice(prev);
}

// ---- Dispatch -----------------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_ll_dispatch_send(nep_cuda_ll_buffer* buf, int64_t x, int32_t x_dtype, int64_t num_tokens, int64_t hidden,
                                                  int64_t topk_idx, int32_t num_topk, int32_t wire, int32_t flags, int64_t stream,
                                                  nep_cuda_ll_op** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    buf->check_usable();
    const LlShape& s = buf->shape;
    if (num_tokens < 0) fail(NEP_ERR_INVALID_ARGUMENT, "num_tokens=", num_tokens, " is negative");
    if (num_tokens > s.max_tokens)
      fail(NEP_ERR_CAPACITY, "num_tokens=", num_tokens, " exceeds max_tokens_per_rank=", s.max_tokens, " of the low-latency buffer");
    if (hidden != s.hidden) fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " but the low-latency buffer was created with hidden=", s.hidden);
    if (num_topk < 1 || num_topk > s.max_topk) fail(NEP_ERR_INVALID_ARGUMENT, "num_topk=", num_topk, " is outside [1, max_topk=", s.max_topk, "]");
    check_dtype("x_dtype", x_dtype);
    if (!valid_wire(wire)) fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
    if (buf->row_bytes(wire) > buf->row_bytes(buf->max_wire))
      fail(NEP_ERR_CAPACITY, "wire=", wire_name(wire), " needs ", buf->row_bytes(wire), " bytes per row, above the ", buf->row_bytes(buf->max_wire),
           " of max_wire=", wire_name(buf->max_wire));
    if (flags != 0 && flags != NEP_CUDA_LL_ROUND_SCALE) fail(NEP_ERR_INVALID_ARGUMENT, "flags=", flags, " is not 0 or NEP_CUDA_LL_ROUND_SCALE");
    if (flags == NEP_CUDA_LL_ROUND_SCALE && wire != NEP_WIRE_FP8)
      fail(NEP_ERR_INVALID_ARGUMENT, "NEP_CUDA_LL_ROUND_SCALE needs wire=NEP_WIRE_FP8, not ", wire_name(wire));
    check_addr("x", x, num_tokens > 0);
    if (topk_idx == 0 && num_tokens > 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null");
    if (topk_idx % 8 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is not 8-byte aligned");
    DeviceGuard guard(buf->device);
    const SpanChecker span(buf->device, as_stream(stream));
    span("x", x, num_tokens * s.hidden * dtype_bytes(x_dtype));
    span("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
    int half = 0;
    const uint64_t n = next_call(buf, &half);
    auto op = std::make_unique<nep_cuda_ll_op>();
    op->buf = buf;
    op->kind = NEP_CUDA_LL_DISPATCH;
    op->call = n;
    op->half = half;
    op->num_tokens = num_tokens;
    op->num_topk = num_topk;
    op->stream = as_stream(stream);
    LlDispatchSendArgs a{};
    a.s = s;
    a.g = buf->geom;
    a.half = half;
    a.num_topk = num_topk;
    a.wire = wire;
    a.flags = flags;
    a.x_dtype = x_dtype;
    a.num_tokens = num_tokens;
    a.x = reinterpret_cast<const void*>(x);
    a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
    a.words = int32_t((num_tokens + 31) / 32);
    buf->fill_peers(a.peers);
    a.wait = buf->wait_ctx(kKernelLlDispatchSend);
    check_cuda(launch_ll_dispatch_send(a, buf->num_sms, op->stream), "LL dispatch send launch");
    buf->calls = n;
    buf->route_owner[half] = n;  // the receive writes this routing slot
    buf->pending[half] = op.get();
    *out = op.release();
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_dispatch_recv(nep_cuda_ll_op* op, int64_t recv_x, int32_t recv_dtype, int64_t recv_count,
                                                  int64_t recv_src_info, int64_t recv_layout_range, int64_t stream,
                                                  nep_cuda_ll_handle** out_handle, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    check_op(op, NEP_CUDA_LL_DISPATCH);
    if (out_handle == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out_handle is null");
    *out_handle = nullptr;
    nep_cuda_ll_buffer* buf = op->buf;
    buf->check_usable();
    check_dtype("recv_dtype", recv_dtype);
    check_addr("recv_x", recv_x, true);
    check_addr("recv_count", recv_count, true);
    check_addr("recv_src_info", recv_src_info, false);
    check_addr("recv_layout_range", recv_layout_range, false);
    DeviceGuard guard(buf->device);
    const LlShape& s = buf->shape;
    const long long El = s.local_experts, N = (long long)s.world * s.max_tokens;
    const SpanChecker span(buf->device, as_stream(stream));
    span("recv_x", recv_x, El * N * s.hidden * dtype_bytes(recv_dtype));
    span("recv_count", recv_count, El * 4);
    span("recv_src_info", recv_src_info, El * N * 4);
    span("recv_layout_range", recv_layout_range, El * s.world * 8);
    auto h = std::make_unique<nep_cuda_ll_handle>();
    h->buf = buf;
    h->call = op->call;
    h->route_slot = op->half;
    h->num_tokens = op->num_tokens;
    h->num_topk = op->num_topk;
    enqueue_dispatch_recv(op, recv_x, recv_dtype, recv_count, recv_src_info, recv_layout_range, as_stream(stream));
    finish_op(op);
    *out_handle = h.release();
  });
}

// ---- Combine ------------------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_ll_combine_send(nep_cuda_ll_buffer* buf, const nep_cuda_ll_handle* h, int64_t y, int32_t y_dtype,
                                                 int64_t topk_idx, int64_t topk_weights, int32_t wire, int64_t stream,
                                                 nep_cuda_ll_op** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
    if (h->buf != buf) fail(NEP_ERR_INVALID_ARGUMENT, "the handle belongs to another low-latency buffer");
    buf->check_usable();
    if (buf->route_owner[h->route_slot] != h->call)
      fail(NEP_ERR_INVALID_ARGUMENT, "the handle of dispatch call ", h->call, " is stale: dispatch call ", buf->route_owner[h->route_slot],
           " reused its routing slot (combine a dispatch before the dispatch after next)");
    check_dtype("y_dtype", y_dtype);
    if (wire != NEP_WIRE_FP32 && wire != NEP_WIRE_BF16 && wire != NEP_WIRE_FP8 && wire != NEP_WIRE_MXFP8)
      fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire, " is not a wire format (0 fp32, 1 bf16, 2 fp8, 3 mxfp8)");
    if (buf->row_bytes(wire) > buf->geom.crow_stride)
      fail(NEP_ERR_CAPACITY, "combine wire=", wire_name(wire), " needs ", buf->row_bytes(wire), " bytes per row, above the ",
           buf->geom.crow_stride, " the buffer holds (max_wire=", wire_name(buf->max_wire), ")");
    check_addr("y", y, true);
    const bool need = h->num_tokens > 0;
    if (need && topk_idx == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null");
    if (need && topk_weights == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_weights is null");
    if (topk_idx % 8 != 0 || topk_weights % 4 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx or topk_weights is misaligned");
    DeviceGuard guard(buf->device);
    {
      const LlShape& s = buf->shape;
      const long long El = s.local_experts, N = (long long)s.world * s.max_tokens;
      const SpanChecker span(buf->device, as_stream(stream));
      span("y", y, El * N * s.hidden * dtype_bytes(y_dtype));
      span("topk_idx", topk_idx, h->num_tokens * h->num_topk * 8LL);
      span("topk_weights", topk_weights, h->num_tokens * h->num_topk * 4LL);
    }
    int half = 0;
    const uint64_t n = next_call(buf, &half);
    auto op = std::make_unique<nep_cuda_ll_op>();
    op->buf = buf;
    op->kind = NEP_CUDA_LL_COMBINE;
    op->call = n;
    op->half = half;
    op->num_tokens = h->num_tokens;
    op->num_topk = h->num_topk;
    op->stream = as_stream(stream);
    op->topk_idx = reinterpret_cast<const long long*>(topk_idx);
    op->topk_weights = reinterpret_cast<const float*>(topk_weights);
    LlCombineSendArgs a{};
    a.s = buf->shape;
    a.g = buf->geom;
    a.half = half;
    a.wire = wire;
    a.y_dtype = y_dtype;
    a.y = reinterpret_cast<const void*>(y);
    a.route_rows = buf->route_rows(h->route_slot);
    a.route_counts = buf->route_counts(h->route_slot);
    buf->fill_peers(a.peers);
    a.wait = buf->wait_ctx(kKernelLlCombineSend);
    check_cuda(launch_ll_combine_send(a, 2 * buf->num_sms, op->stream), "LL combine send launch");  // two blocks per SM
    buf->calls = n;
    buf->pending[half] = op.get();
    *out = op.release();
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_ll_combine_recv(nep_cuda_ll_op* op, int64_t out, int32_t out_dtype, int64_t stream, char* err,
                                                 int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    check_op(op, NEP_CUDA_LL_COMBINE);
    nep_cuda_ll_buffer* buf = op->buf;
    buf->check_usable();
    check_dtype("out_dtype", out_dtype);
    check_addr("out", out, op->num_tokens > 0);
    DeviceGuard guard(buf->device);
    SpanChecker(buf->device, as_stream(stream))("out", out, op->num_tokens * buf->shape.hidden * dtype_bytes(out_dtype));
    enqueue_combine_recv(op, out, out_dtype, as_stream(stream));
    finish_op(op);
  });
}

// ---- Ops and handles ----------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_ll_op_kind(const nep_cuda_ll_op* op) { return op ? op->kind : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_op_is_pending(const nep_cuda_ll_op* op) { return op && op->pending ? 1 : 0; }
NEP_CUDA_EXPORT int64_t nep_cuda_ll_op_call_index(const nep_cuda_ll_op* op) { return op ? (int64_t)op->call : -1; }
NEP_CUDA_EXPORT int64_t nep_cuda_ll_op_num_tokens(const nep_cuda_ll_op* op) { return op ? op->num_tokens : -1; }

NEP_CUDA_EXPORT void nep_cuda_ll_op_destroy(nep_cuda_ll_op* op) {
  if (op == nullptr) return;
  if (op->pending && op->buf != nullptr && op->buf->failure_code == NEP_OK) {
    // Abandoned: drain the half so the peers may reuse it.
    try {
      DeviceGuard guard(op->buf->device);
      if (op->kind == NEP_CUDA_LL_DISPATCH) enqueue_dispatch_recv(op, 0, NEP_DTYPE_FP32, 0, 0, 0, op->stream);
      else enqueue_combine_recv(op, 0, NEP_DTYPE_FP32, op->stream);
    } catch (...) {
    }
  }
  if (op->pending && op->buf != nullptr) finish_op(op);
  delete op;
}

NEP_CUDA_EXPORT int64_t nep_cuda_ll_handle_num_tokens(const nep_cuda_ll_handle* h) { return h ? h->num_tokens : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_ll_handle_num_topk(const nep_cuda_ll_handle* h) { return h ? h->num_topk : -1; }
NEP_CUDA_EXPORT int64_t nep_cuda_ll_handle_call_index(const nep_cuda_ll_handle* h) { return h ? (int64_t)h->call : -1; }
NEP_CUDA_EXPORT void nep_cuda_ll_handle_destroy(nep_cuda_ll_handle* h) { delete h; }
