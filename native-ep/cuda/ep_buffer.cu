// The rank buffer and the C ABI of the CUDA plug-in (include/nativeep/cuda_api.h): the cuda-ipc
// transport (peers' buffers mapped over NVLink, kernels in dispatch.cu / combine.cu) and the nccl
// transport (grouped send/recv of packed rows, kernels in nccl_path.cu, NCCL loaded by nccl_api.cu).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "device_span.h"
#include "ep_common.cuh"
#include "host_utils.h"
#include "kernels.h"
#include "nativeep/cuda_api.h"
#include "nccl_api.h"

using namespace nep::cuda;

#define NEP_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr char kBlobMagic[8] = {'N', 'E', 'P', 'C', 'U', 'D', 'A', '1'};
constexpr int32_t kBlobVersion = 1;

struct ExportBlob {
  char magic[8];
  int32_t version;
  int32_t rank;
  int32_t world;
  int32_t device;
  int64_t bytes;
  int32_t pid;
  int32_t pad;
  char host[64];
  cudaIpcMemHandle_t ipc;
};
static_assert(sizeof(ExportBlob) <= NEP_CUDA_EXPORT_BYTES, "export blob too large");

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
    case kCounterNotifyFlag: return cat("notify flag of rank ", peer, " (in rank ", rank, "'s buffer)");
    case kCounterTail: return cat("ring tail (", peer, " -> ", rank, ", channel ", channel, "): messages published by rank ", peer);
    case kCounterHead: return cat("ring head (", rank, " -> ", peer, ", channel ", channel, "): free slots, advanced by rank ", peer);
    case kCounterChanCount: return cat("dispatch message count of ring (", peer, " -> ", rank, ", channel ", channel, ")");
    case kCounterDrain: return cat("ring head (", rank, " -> ", peer, ", channel ", channel, "): rank ", peer, " still reading an earlier call");
    case kCounterBadMessage: return cat("message on ring (", peer, " -> ", rank, ", channel ", channel, ") names a row outside rank ", peer, "'s range");
    default: return cat("counter ", counter);
  }
}

void check_dtype(const char* name, int32_t dtype) {
  if (dtype != NEP_DTYPE_FP32 && dtype != NEP_DTYPE_BF16)
    fail(NEP_ERR_INVALID_ARGUMENT, name, "=", dtype, " is not a dtype (NEP_DTYPE_FP32=0 or NEP_DTYPE_BF16=1)");
}

void check_aligned(const char* name, int64_t addr, int64_t align) {
  if (addr % align != 0) fail(NEP_ERR_INVALID_ARGUMENT, name, "=0x", std::hex, addr, std::dec, " is not ", align, "-byte aligned");
}

}  // namespace

struct nep_cuda_buffer {
  int32_t rank = 0, world = 0, device = 0, device_sms = 0;
  int64_t bytes = 0;
  int64_t timeout_ms = 30000;
  DeviceMemory mem;
  std::unique_ptr<MappedHost<ErrorRecord>> err;
  std::unique_ptr<MappedHost<LayoutError>> layout_err;
  std::unique_ptr<MappedHost<NotifyResult>> notify;
  std::unique_ptr<Event> done;
  std::vector<IpcMapping> maps;
  uint8_t* peers[kMaxRanks] = {};
  bool connected = false;
  int transport = NEP_CUDA_TRANSPORT_NONE;
  ncclComm_t nccl = nullptr;  // nccl transport
  bool nccl_aborted = false;
  unsigned long long notify_seq = 0;
  unsigned long long dispatch_calls = 0;
  int max_channels_used = 0;
  int failure_code = NEP_OK;
  std::string failure;

  uint8_t* local() const { return static_cast<uint8_t*>(mem.get()); }

  WaitCtx wait_ctx(int kernel) const {
    WaitCtx w;
    w.abort = reinterpret_cast<unsigned int*>(local() + Ctrl::kAbort);
    w.err_claim = reinterpret_cast<unsigned int*>(local() + Ctrl::kErrClaim);
    w.record = err->device();
    w.timeout_ns = (unsigned long long)timeout_ms * 1000000ull;
    w.rank = rank;
    w.kernel = kernel;
    return w;
  }

  // Fails the buffer with the device's error record if one was written.
  void check_device_error() {
    volatile ErrorRecord* r = err->host();
    if (r->valid == 0) return;
    std::string msg;
    if (r->code == NEP_ERR_TIMEOUT && r->counter == kCounterChanCount) {
      // The counter holds (dispatch call id << 32) | message count.
      const long long want = r->expected, seen = r->observed;
      msg = cat(kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms, " ms waiting for peer ", r->peer,
                ": ", counter_desc(r->counter, r->rank, r->peer, r->channel), "; expected dispatch call ", want >> 32,
                ", the peer's last was call ", seen >> 32, " (peer skipped a dispatch or is stuck before it)");
    } else if (r->code == NEP_ERR_TIMEOUT) {
      msg = cat(kernel_name(r->kernel), " on rank ", r->rank, " timed out after ", timeout_ms, " ms waiting for peer ", r->peer,
                ": ", counter_desc(r->counter, r->rank, r->peer, r->channel), "; expected >= ", r->expected, ", saw ",
                r->observed);
    } else {
      msg = cat(kernel_name(r->kernel), " on rank ", r->rank, " failed: ", counter_desc(r->counter, r->rank, r->peer, r->channel),
                " (limit ", r->expected, ", value ", r->observed, ")");
    }
    failure_code = r->code;
    failure = msg + "; the buffer is unusable now (every rank must re-create it)";
    throw nep::cuda::Error(failure_code, failure);
  }

  // Reports (once, then clears) a bad topk_idx found by an asynchronous layout.
  void check_layout_error() {
    volatile LayoutError* e = layout_err->host();
    if (e->valid == 0) return;
    const std::string msg = layout_message();
    e->valid = 0;
    throw nep::cuda::Error(NEP_ERR_INVALID_ARGUMENT, msg);
  }

  std::string layout_message() const {
    volatile LayoutError* e = layout_err->host();
    if (e->kind == kLayoutDuplicate)
      return cat("topk_idx[", e->token, "][", e->slot, "]=", e->value, " repeats an expert of the same row (each expert at most once per token)");
    return cat("topk_idx[", e->token, "][", e->slot, "]=", e->value, " is out of range [-1, num_experts)");
  }

  void check_usable() {
    if (!connected) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", rank, " is not connected (call nep_cuda_buffer_connect)");
    if (failure_code != NEP_OK) throw nep::cuda::Error(failure_code, failure);
    check_device_error();
  }

  // Waits for the work queued on `stream` so far, bounded by the timeout (plus a margin so that a
  // device-side timeout is reported first).
  void wait_stream(cudaStream_t stream, const char* what) {
    check_cuda(cudaEventRecord(done->get(), stream), "cudaEventRecord");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms + 5000);
    int spins = 0;
    for (;;) {
      const cudaError_t e = cudaEventQuery(done->get());
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) check_cuda(e, what);
      if (nccl != nullptr && (spins & 63) == 0) {
        const NcclApi& api = nccl_or_throw();
        ncclResult_t ae = ncclSuccess;
        if (api.CommGetAsyncError(nccl, &ae) == ncclSuccess && ae != ncclSuccess && ae != ncclInProgress) {
          abort_nccl();
          failure_code = NEP_ERR_PEER;
          failure = cat(what, " on rank ", rank, ": NCCL reported error ", ae, " (", api.GetErrorString(ae),
                        ") while the GPU ran (a peer failed or left); the buffer is unusable now (every rank must re-create it)");
          throw nep::cuda::Error(failure_code, failure);
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        failure_code = NEP_ERR_TIMEOUT;
        if (nccl != nullptr) {
          abort_nccl();
          failure = cat(what, " on rank ", rank, ": NCCL operations did not finish within ", timeout_ms + 5000,
                        " ms (a peer skipped the call, died or is stuck); the NCCL communicator was aborted and the buffer is unusable now");
        } else {
          failure = cat(what, " on rank ", rank, ": the GPU did not finish within ", timeout_ms + 5000,
                        " ms (device busy, or a kernel stuck); the buffer is unusable now");
        }
        throw nep::cuda::Error(failure_code, failure);
      }
      if (++spins < 2000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    check_device_error();
  }

  void abort_nccl() {
    if (nccl != nullptr && !nccl_aborted) {
      std::string why;
      if (const NcclApi* api = nccl_api(&why)) api->CommAbort(nccl);
      nccl_aborted = true;
    }
  }

  RingGeom geometry(long long slot_bytes, long long payload_offset, int channels, const char* what) const {
    RingGeom g;
    g.ring_offset = (long long)Ctrl::kRingOffset;
    const long long region = bytes - (long long)Ctrl::kRingOffset;
    g.src_stride = region / world / 4096 * 4096;
    g.ring_bytes = g.src_stride / channels / 128 * 128;
    g.slot_bytes = slot_bytes;
    g.payload_offset = payload_offset;
    g.num_slots = g.ring_bytes / slot_bytes;
    if (g.num_slots < kMinRingSlots) {
      const long long need = (long long)Ctrl::kRingOffset + kMinRingSlots * slot_bytes * channels * world + 4096LL * world +
                             128LL * channels * world;
      fail(NEP_ERR_CAPACITY, what, ": buffer_bytes=", bytes, " gives ", g.num_slots, " message slots per ring (", world,
           " ranks x ", channels, " channels, ", slot_bytes, " bytes per message); the minimum is ", kMinRingSlots,
           ": create the buffer with at least ", need, " bytes or use fewer SMs");
    }
    return g;
  }
};

struct nep_cuda_handle {
  const nep_cuda_buffer* owner = nullptr;
  int32_t rank = 0, world = 0, num_topk = 0, num_experts = 0, local_experts = 0, alignment = 1;
  int64_t num_tokens = 0, num_recv = 0, num_blocks = 0;
  StreamMemory route_mem;  // local_pos | block_counts | block_prefix | is_token_in_rank | tpr | tpe | rank_prefix | rank_tokens
  StreamMemory recv_mem;   // recv_src_idx
  int32_t* local_pos = nullptr;
  int32_t* block_counts = nullptr;
  int32_t* block_prefix = nullptr;
  uint8_t* is_token_in_rank = nullptr;
  int32_t* tokens_per_rank = nullptr;
  int32_t* tokens_per_expert = nullptr;
  int32_t* rank_prefix = nullptr;
  int32_t* rank_tokens = nullptr;
  int32_t* recv_src_idx = nullptr;
  std::vector<int32_t> h_rank_prefix, h_rank_tokens, h_raw, h_aligned;
  bool dispatched = false;

  RouteView view() const {
    RouteView v;
    v.local_pos = local_pos;
    v.block_prefix = block_prefix;
    v.rank_prefix = rank_prefix;
    v.rank_tokens = rank_tokens;
    v.num_tokens = num_tokens;
    v.num_recv = num_recv;
    return v;
  }
  void set_stream(cudaStream_t s) {
    route_mem.set_stream(s);
    recv_mem.set_stream(s);
  }
};

namespace {

cudaStream_t as_stream(int64_t s) { return reinterpret_cast<cudaStream_t>(s); }

void require_buffer(const nep_cuda_buffer* b) {
  if (b == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "buf is null");
}

void check_num_sms(const nep_cuda_buffer* b, int32_t num_sms) {
  const int limit = std::min(kMaxChannels, b->device_sms);
  if (num_sms < 1 || num_sms > limit)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_sms=", num_sms, " is outside [1, ", limit, "] (device has ", b->device_sms,
         " SMs, limit ", kMaxChannels, ")");
}

// Every wire takes such a hidden; with FP8 and MXFP8 a row's last scale group may be partial (its
// amax is that of the channels it has), as in the CPU engine.
void check_hidden(int64_t hidden) {
  if (hidden <= 0 || hidden > (1LL << 24)) fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is outside [1, 2^24]");
  if (hidden % 8 != 0) fail(NEP_ERR_INVALID_ARGUMENT, "hidden=", hidden, " is not a multiple of 8 (16-byte rows of bf16)");
}

}  // namespace

// ---- C ABI ------------------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_abi_version(void) { return 3; }

NEP_CUDA_EXPORT int32_t nep_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_create(int32_t rank, int32_t world_size, int32_t device, int64_t buffer_bytes,
                                               int64_t timeout_ms, nep_cuda_buffer** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    if (world_size < 1 || world_size > kMaxRanks)
      fail(NEP_ERR_INVALID_ARGUMENT, "world_size=", world_size, " is outside [1, ", kMaxRanks, "] (ranks of one host)");
    if (rank < 0 || rank >= world_size) fail(NEP_ERR_INVALID_ARGUMENT, "rank=", rank, " is outside [0, ", world_size, ")");
    if (timeout_ms < 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " is negative");
    const int64_t min_bytes = (int64_t)Ctrl::kRingOffset + (64LL << 20);
    if (buffer_bytes < min_bytes) fail(NEP_ERR_INVALID_ARGUMENT, "buffer_bytes=", buffer_bytes, " is below the minimum ", min_bytes);
    const int n = nep_cuda_device_count();
    if (device < 0 || device >= n) fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", n, ") (CUDA devices visible)");
    DeviceGuard guard(device);
    auto b = std::make_unique<nep_cuda_buffer>();
    b->rank = rank;
    b->world = world_size;
    b->device = device;
    b->bytes = buffer_bytes;
    b->timeout_ms = timeout_ms == 0 ? 30000 : timeout_ms;
    check_cuda(cudaDeviceGetAttribute(&b->device_sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    int coop = 0;
    check_cuda(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device), "cudaDeviceGetAttribute");
    if (!coop) fail(NEP_ERR_UNSUPPORTED, "device ", device, " does not support cooperative launches");
    b->mem = DeviceMemory((size_t)buffer_bytes);
    check_cuda(cudaMemset(b->mem.get(), 0, Ctrl::kRingOffset), "cudaMemset");
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    b->err = std::make_unique<MappedHost<ErrorRecord>>();
    b->layout_err = std::make_unique<MappedHost<LayoutError>>();
    b->notify = std::make_unique<MappedHost<NotifyResult>>();
    b->done = std::make_unique<Event>();
    b->peers[rank] = b->local();
    *out = b.release();
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_export(const nep_cuda_buffer* buf, uint8_t* out, int64_t cap, char* err,
                                               int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    if (cap < NEP_CUDA_EXPORT_BYTES) fail(NEP_ERR_INVALID_ARGUMENT, "cap=", cap, " is below NEP_CUDA_EXPORT_BYTES=", NEP_CUDA_EXPORT_BYTES);
    DeviceGuard guard(buf->device);
    ExportBlob blob;
    std::memset(&blob, 0, sizeof(blob));
    std::memcpy(blob.magic, kBlobMagic, sizeof(kBlobMagic));
    blob.version = kBlobVersion;
    blob.rank = buf->rank;
    blob.world = buf->world;
    blob.device = buf->device;
    blob.bytes = buf->bytes;
    blob.pid = (int32_t)getpid();
    gethostname(blob.host, sizeof(blob.host) - 1);
    check_cuda(cudaIpcGetMemHandle(&blob.ipc, buf->mem.get()), "cudaIpcGetMemHandle");
    std::memset(out, 0, NEP_CUDA_EXPORT_BYTES);
    std::memcpy(out, &blob, sizeof(blob));
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_connect(nep_cuda_buffer* buf, const uint8_t* all_blobs, int64_t bytes, char* err,
                                                int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (buf->connected) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", buf->rank, " is already connected");
    if (all_blobs == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "all_blobs is null");
    const int64_t want = (int64_t)buf->world * NEP_CUDA_EXPORT_BYTES;
    if (bytes != want) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " but world_size x NEP_CUDA_EXPORT_BYTES = ", want);
    DeviceGuard guard(buf->device);
    ExportBlob mine;
    std::memcpy(&mine, all_blobs + (size_t)buf->rank * NEP_CUDA_EXPORT_BYTES, sizeof(mine));
    std::vector<IpcMapping> maps;
    for (int p = 0; p < buf->world; ++p) {
      ExportBlob b;
      std::memcpy(&b, all_blobs + (size_t)p * NEP_CUDA_EXPORT_BYTES, sizeof(b));
      if (std::memcmp(b.magic, kBlobMagic, sizeof(kBlobMagic)) != 0 || b.version != kBlobVersion)
        fail(NEP_ERR_PEER, "blob ", p, " is not a nativeep CUDA buffer export of version ", kBlobVersion);
      if (b.rank != p) fail(NEP_ERR_PEER, "blob ", p, " comes from rank ", b.rank, " (blobs must be ordered by rank)");
      if (b.world != buf->world) fail(NEP_ERR_PEER, "rank ", p, " has world_size=", b.world, ", this rank ", buf->world);
      if (b.bytes != buf->bytes) fail(NEP_ERR_PEER, "rank ", p, " has buffer_bytes=", b.bytes, ", this rank ", buf->bytes);
      b.host[sizeof(b.host) - 1] = '\0';
      mine.host[sizeof(mine.host) - 1] = '\0';
      if (std::strcmp(b.host, mine.host) != 0)
        fail(NEP_ERR_PEER, "rank ", p, " runs on host '", b.host, "', this rank on '", mine.host, "': cuda-ipc joins ranks of one host");
      if (p == buf->rank) continue;
      const std::string what = cat("cudaIpcOpenMemHandle of rank ", p, " (device ", b.device, ", pid ", b.pid, ")");
      maps.emplace_back(b.ipc, what.c_str());
      buf->peers[p] = static_cast<uint8_t*>(maps.back().get());
    }
    buf->maps = std::move(maps);
    buf->connected = true;
    buf->transport = NEP_CUDA_TRANSPORT_IPC;
  });
}

// ---- Device memory ------------------------------------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_malloc(int32_t device, int64_t bytes, int64_t* address, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (address == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "address is null");
    *address = 0;
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    DeviceGuard guard(device);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, (size_t)std::max<int64_t>(bytes, 1));
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail(e == cudaErrorMemoryAllocation ? NEP_ERR_CAPACITY : NEP_ERR_INTERNAL, "cudaMalloc of ", bytes, " bytes on device ", device,
           ": ", cudaGetErrorString(e));
    }
    *address = reinterpret_cast<int64_t>(p);
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_free(int32_t device, int64_t address, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (address == 0) return;
    DeviceGuard guard(device);
    check_cuda(cudaFree(reinterpret_cast<void*>(address)), "cudaFree");
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_memcpy(int32_t device, int64_t dst, int64_t src, int64_t bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    if (bytes == 0) return;
    if (dst == 0 || src == 0) fail(NEP_ERR_INVALID_ARGUMENT, "dst or src is null");
    DeviceGuard guard(device);
    check_cuda(cudaMemcpy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), (size_t)bytes, cudaMemcpyDefault),
               "cudaMemcpy");
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_memset(int32_t device, int64_t address, int32_t value, int64_t bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (bytes < 0) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " is negative");
    if (bytes == 0) return;
    if (address == 0) fail(NEP_ERR_INVALID_ARGUMENT, "address is null");
    DeviceGuard guard(device);
    check_cuda(cudaMemset(reinterpret_cast<void*>(address), value & 0xff, (size_t)bytes), "cudaMemset");
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_device_info(int32_t device, char* name, int64_t name_cap, int64_t* total_bytes,
                                             int64_t* free_bytes, int32_t* sm_count, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (name != nullptr && name_cap > 0) name[0] = '\0';
    const int n = nep_cuda_device_count();
    if (device < 0 || device >= n) fail(NEP_ERR_INVALID_ARGUMENT, "device=", device, " is outside [0, ", n, ") (CUDA devices visible)");
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    if (name != nullptr && name_cap > 0) {
      std::strncpy(name, prop.name, size_t(name_cap - 1));
      name[name_cap - 1] = '\0';
    }
    if (sm_count != nullptr) *sm_count = prop.multiProcessorCount;
    DeviceGuard guard(device);
    size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    if (total_bytes != nullptr) *total_bytes = (int64_t)total;
    if (free_bytes != nullptr) *free_bytes = (int64_t)free;
  });
}

// ---- nccl transport: connection and all-reduce ----------------------------------------------------------

NEP_CUDA_EXPORT int32_t nep_cuda_nccl_version(int32_t* version, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const NcclApi& api = nccl_or_throw();
    if (version != nullptr) *version = api.version;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_nccl_unique_id(uint8_t* out, int64_t cap, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    if (cap < NEP_CUDA_NCCL_ID_BYTES) fail(NEP_ERR_INVALID_ARGUMENT, "cap=", cap, " is below NEP_CUDA_NCCL_ID_BYTES=", NEP_CUDA_NCCL_ID_BYTES);
    const NcclApi& api = nccl_or_throw();
    ncclUniqueId id;
    check_nccl(api.GetUniqueId(&id), "ncclGetUniqueId");
    std::memcpy(out, id.internal, NEP_CUDA_NCCL_ID_BYTES);
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_connect_nccl(nep_cuda_buffer* buf, const uint8_t* unique_id, int64_t bytes, char* err,
                                                     int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (buf->connected) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", buf->rank, " is already connected");
    if (unique_id == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "unique_id is null");
    if (bytes != NEP_CUDA_NCCL_ID_BYTES) fail(NEP_ERR_INVALID_ARGUMENT, "bytes=", bytes, " but NEP_CUDA_NCCL_ID_BYTES = ", NEP_CUDA_NCCL_ID_BYTES);
    const NcclApi& api = nccl_or_throw();
    DeviceGuard guard(buf->device);
    ncclUniqueId id;
    std::memcpy(id.internal, unique_id, NEP_CUDA_NCCL_ID_BYTES);
    ncclComm_t comm = nullptr;
    check_nccl(api.CommInitRank(&comm, buf->world, id, buf->rank), "ncclCommInitRank");
    buf->nccl = comm;
    buf->connected = true;
    buf->transport = NEP_CUDA_TRANSPORT_NCCL;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_transport(const nep_cuda_buffer* buf) { return buf ? buf->transport : -1; }

NEP_CUDA_EXPORT int32_t nep_cuda_all_reduce_sum(nep_cuda_buffer* buf, int64_t data, int64_t count, int32_t dtype, int64_t stream,
                                                char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->check_usable();
    if (buf->transport != NEP_CUDA_TRANSPORT_NCCL)
      fail(NEP_ERR_UNSUPPORTED, "nep_cuda_all_reduce_sum needs the nccl transport (nep_cuda_buffer_connect_nccl)");
    check_dtype("dtype", dtype);
    if (count < 0) fail(NEP_ERR_INVALID_ARGUMENT, "count=", count, " is negative");
    if (count == 0) return;
    if (data == 0) fail(NEP_ERR_INVALID_ARGUMENT, "data is null with count=", count);
    const NcclApi& api = nccl_or_throw();
    DeviceGuard guard(buf->device);
    SpanChecker(buf->device, as_stream(stream))("data", data, count * dtype_bytes(dtype));
    void* p = reinterpret_cast<void*>(data);
    check_nccl(api.AllReduce(p, p, (size_t)count, dtype == NEP_DTYPE_BF16 ? ncclBfloat16 : ncclFloat32, ncclSum, buf->nccl,
                             as_stream(stream)),
               "ncclAllReduce", buf->nccl);
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_set_timeout(nep_cuda_buffer* buf, int64_t timeout_ms, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (timeout_ms <= 0) fail(NEP_ERR_INVALID_ARGUMENT, "timeout_ms=", timeout_ms, " must be > 0");
    buf->timeout_ms = timeout_ms;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_rank(const nep_cuda_buffer* buf) { return buf ? buf->rank : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_buffer_world_size(const nep_cuda_buffer* buf) { return buf ? buf->world : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_buffer_device(const nep_cuda_buffer* buf) { return buf ? buf->device : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_buffer_num_device_sms(const nep_cuda_buffer* buf) { return buf ? buf->device_sms : -1; }

NEP_CUDA_EXPORT int32_t nep_cuda_buffer_peer_scratch(const nep_cuda_buffer* buf, int32_t peer, int64_t* address,
                                                     int64_t* bytes, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (!buf->connected) fail(NEP_ERR_INVALID_ARGUMENT, "buffer of rank ", buf->rank, " is not connected");
    if (buf->transport != NEP_CUDA_TRANSPORT_IPC) fail(NEP_ERR_UNSUPPORTED, "peer memory is mapped by the cuda-ipc transport only");
    if (peer < 0 || peer >= buf->world) fail(NEP_ERR_INVALID_ARGUMENT, "peer=", peer, " is outside [0, ", buf->world, ")");
    if (address == nullptr || bytes == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "address or bytes is null");
    *address = reinterpret_cast<int64_t>(buf->peers[peer] + Ctrl::kRingOffset);
    *bytes = buf->bytes - (int64_t)Ctrl::kRingOffset;
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_sync(nep_cuda_buffer* buf, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (buf->failure_code != NEP_OK) throw nep::cuda::Error(buf->failure_code, buf->failure);
    DeviceGuard guard(buf->device);
    buf->wait_stream(as_stream(stream), "nep_cuda_sync");
    buf->check_layout_error();
  });
}

NEP_CUDA_EXPORT void nep_cuda_buffer_destroy(nep_cuda_buffer* buf) {
  if (buf == nullptr) return;
  int prev = 0;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(buf->device);
  cudaDeviceSynchronize();
  if (buf->nccl != nullptr) {
    std::string why;
    if (const NcclApi* api = nccl_api(&why)) {
      if (buf->nccl_aborted) {
        // ncclCommAbort already released the communicator.
      } else if (buf->failure_code != NEP_OK) {
        api->CommAbort(buf->nccl);
      } else {
        api->CommDestroy(buf->nccl);
      }
    }
    buf->nccl = nullptr;
  }
  delete buf;
  if (have_prev) cudaSetDevice(prev);
}

// ---- Layout -------------------------------------------------------------------------------------------

namespace {

void check_topk_args(const nep_cuda_buffer* b, int64_t topk_idx, int64_t num_tokens, int32_t num_topk, int32_t num_experts) {
  if (num_tokens < 0 || num_tokens > INT32_MAX) fail(NEP_ERR_INVALID_ARGUMENT, "num_tokens=", num_tokens, " is outside [0, 2^31)");
  if (num_topk < 1 || num_topk > kMaxTopk) fail(NEP_ERR_INVALID_ARGUMENT, "num_topk=", num_topk, " is outside [1, ", kMaxTopk, "]");
  if (num_experts < b->world || num_experts % b->world != 0)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts=", num_experts, " is not a positive multiple of world_size=", b->world);
  if (num_experts / b->world > kMaxLocalExperts)
    fail(NEP_ERR_INVALID_ARGUMENT, "num_experts / world_size = ", num_experts / b->world, " exceeds ", kMaxLocalExperts, " local experts");
  if (num_tokens > 0 && topk_idx == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_idx is null with num_tokens=", num_tokens);
  check_aligned("topk_idx", topk_idx, 8);
}

}  // namespace

NEP_CUDA_EXPORT int32_t nep_cuda_layout(nep_cuda_buffer* buf, int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                                        int32_t num_experts, int64_t tokens_per_rank, int64_t tokens_per_expert,
                                        int64_t is_token_in_rank, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->check_usable();
    check_topk_args(buf, topk_idx, num_tokens, num_topk, num_experts);
    DeviceGuard guard(buf->device);
    cudaStream_t s = as_stream(stream);
    const SpanChecker span(buf->device, s);
    span("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
    span("tokens_per_rank", tokens_per_rank, 4LL * buf->world);
    span("tokens_per_expert", tokens_per_expert, 4LL * num_experts);
    span("is_token_in_rank", is_token_in_rank, num_tokens * (long long)buf->world);
    if (tokens_per_rank != 0)
      check_cuda(cudaMemsetAsync(reinterpret_cast<void*>(tokens_per_rank), 0, sizeof(int32_t) * buf->world, s), "cudaMemsetAsync");
    if (tokens_per_expert != 0)
      check_cuda(cudaMemsetAsync(reinterpret_cast<void*>(tokens_per_expert), 0, sizeof(int32_t) * num_experts, s), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(buf->local() + Ctrl::kLayoutClaim, 0, sizeof(unsigned int), s), "cudaMemsetAsync");
    LayoutArgs a{};
    a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
    a.num_tokens = num_tokens;
    a.num_topk = num_topk;
    a.num_experts = num_experts;
    a.world = buf->world;
    a.local_experts = num_experts / buf->world;
    a.is_token_in_rank = reinterpret_cast<uint8_t*>(is_token_in_rank);
    a.tokens_per_rank = reinterpret_cast<int32_t*>(tokens_per_rank);
    a.tokens_per_expert = reinterpret_cast<int32_t*>(tokens_per_expert);
    a.err_claim = reinterpret_cast<unsigned int*>(buf->local() + Ctrl::kLayoutClaim);
    a.err = buf->layout_err->device();
    check_cuda(launch_layout(a, s), "layout kernel launch");
  });
}

// ---- Notify -------------------------------------------------------------------------------------------

namespace {

// nccl transport: block_prefix and the count record on the GPU, an all-gather of the records, and
// on the host what the cuda-ipc notify kernel computes into the NotifyResult.
void nccl_notify(nep_cuda_buffer* buf, nep_cuda_handle* h, cudaStream_t s) {
  const int W = buf->world, me = buf->rank, E = h->num_experts, El = h->local_experts;
  const size_t rec = kNcclRecordInts;
  StreamMemory recs(sizeof(int32_t) * rec * (W + 1), s);
  int32_t* send = static_cast<int32_t*>(recs.get());
  int32_t* all = send + rec;
  NcclNotifyArgs na{};
  na.world = W;
  na.num_topk = h->num_topk;
  na.num_experts = E;
  na.num_blocks = (int32_t)h->num_blocks;
  na.num_tokens = h->num_tokens;
  na.block_counts = h->block_counts;
  na.block_prefix = h->block_prefix;
  na.tokens_per_rank = h->tokens_per_rank;
  na.tokens_per_expert = h->tokens_per_expert;
  na.layout_err = buf->layout_err->device();
  na.record = send;
  check_cuda(launch_nccl_notify(na, s), "nccl notify kernel launch");
  const NcclApi& api = nccl_or_throw();
  check_nccl(api.AllGather(send, all, rec, ncclInt32, buf->nccl, s), "ncclAllGather (notify counts)", buf->nccl);
  buf->wait_stream(s, "nep_cuda_dispatch_notify");
  std::vector<int32_t> host(rec * W);
  check_cuda(cudaMemcpy(host.data(), all, sizeof(int32_t) * host.size(), cudaMemcpyDeviceToHost), "cudaMemcpy notify records");
  auto record = [&](int r) { return host.data() + (size_t)r * rec; };
  volatile NotifyResult* r = buf->notify->host();
  int st = kNotifyOk, bad = -1, bad_k = 0, bad_e = 0;
  if (record(me)[0] != 0) {
    st = kNotifyLocalInput;
    bad = me;
  }
  for (int q = 0; q < W && st == kNotifyOk; ++q) {
    if (record(q)[0] != 0) {
      st = kNotifyPeerInput;
      bad = q;
    } else if (record(q)[2] != h->num_topk || record(q)[3] != E) {
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
    r->recv_aligned[e] = (int32_t)((acc + h->alignment - 1) / h->alignment * h->alignment);
  }
}

// Rows this rank sends to each rank and receives from each, from the handle's prefix matrix.
struct NcclCounts {
  long long send[kMaxRanks], recv[kMaxRanks], send_off[kMaxRanks], recv_off[kMaxRanks];
  long long send_total = 0;
};

NcclCounts nccl_counts(const nep_cuda_handle* h) {
  NcclCounts c{};
  const int W = h->world, me = h->rank;
  const auto& rp = h->h_rank_prefix;
  for (int p = 0; p < W; ++p) {
    c.send[p] = rp[me * W + p] - (me > 0 ? rp[(me - 1) * W + p] : 0);
    c.recv[p] = rp[p * W + me] - (p > 0 ? rp[(p - 1) * W + me] : 0);
    c.recv_off[p] = p > 0 ? rp[(p - 1) * W + me] : 0;
    c.send_off[p] = c.send_total;
    c.send_total += c.send[p];
  }
  return c;
}

// Grouped send/recv: piece p of `src` (rows src_off[p] .. + src_n[p]) goes to rank p, piece p of
// `dst` (rows dst_off[p] .. + dst_n[p]) comes from rank p; this rank's own piece is a device copy.
void nccl_exchange(nep_cuda_buffer* buf, const uint8_t* src, const long long* src_off, const long long* src_n, uint8_t* dst,
                   const long long* dst_off, const long long* dst_n, long long slot, cudaStream_t s, const char* what) {
  const NcclApi& api = nccl_or_throw();
  const int W = buf->world, me = buf->rank;
  check_nccl(api.GroupStart(), "ncclGroupStart");
  ncclResult_t res = ncclSuccess;
  const char* failed = nullptr;
  for (int p = 0; p < W && res == ncclSuccess; ++p) {
    if (p == me) continue;
    if (src_n[p] > 0) {
      res = api.Send(src + src_off[p] * slot, (size_t)(src_n[p] * slot), ncclUint8, p, buf->nccl, s);
      if (res != ncclSuccess) failed = "ncclSend";
    }
    if (res == ncclSuccess && dst_n[p] > 0) {
      res = api.Recv(dst + dst_off[p] * slot, (size_t)(dst_n[p] * slot), ncclUint8, p, buf->nccl, s);
      if (res != ncclSuccess) failed = "ncclRecv";
    }
  }
  const ncclResult_t end = api.GroupEnd();
  check_nccl(res, cat(what, ": ", failed ? failed : "").c_str(), buf->nccl);
  check_nccl(end, cat(what, ": ncclGroupEnd").c_str(), buf->nccl);
  if (src_n[me] != dst_n[me]) fail(NEP_ERR_INTERNAL, what, ": this rank's own piece has ", src_n[me], " rows to send but ", dst_n[me], " to receive");
  if (src_n[me] > 0)
    check_cuda(cudaMemcpyAsync(dst + dst_off[me] * slot, src + src_off[me] * slot, (size_t)(src_n[me] * slot), cudaMemcpyDeviceToDevice, s),
               "cudaMemcpyAsync (own rows)");
}

}  // namespace

NEP_CUDA_EXPORT int32_t nep_cuda_dispatch_notify(nep_cuda_buffer* buf, int64_t topk_idx, int64_t num_tokens, int32_t num_topk,
                                                 int32_t num_experts, int32_t expert_alignment, int64_t stream,
                                                 nep_cuda_handle** out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    if (out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    buf->check_usable();
    check_topk_args(buf, topk_idx, num_tokens, num_topk, num_experts);
    if (expert_alignment < 1 || expert_alignment > (1 << 20))
      fail(NEP_ERR_INVALID_ARGUMENT, "expert_alignment=", expert_alignment, " is outside [1, 2^20]");
    DeviceGuard guard(buf->device);
    cudaStream_t s = as_stream(stream);
    SpanChecker(buf->device, s)("topk_idx", topk_idx, num_tokens * num_topk * 8LL);
    const int W = buf->world;
    auto h = std::make_unique<nep_cuda_handle>();
    h->owner = buf;
    h->rank = buf->rank;
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
    check_cuda(cudaMemsetAsync(buf->local() + Ctrl::kLayoutClaim, 0, sizeof(unsigned int), s), "cudaMemsetAsync");
    buf->layout_err->host()->valid = 0;
    buf->notify->host()->status = -1;
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
      la.err_claim = reinterpret_cast<unsigned int*>(buf->local() + Ctrl::kLayoutClaim);
      la.err = buf->layout_err->device();
      check_cuda(launch_layout(la, s), "layout kernel launch");
    }
    if (buf->transport == NEP_CUDA_TRANSPORT_NCCL) {
      nccl_notify(buf, h.get(), s);
    } else {
      NotifyArgs na{};
      na.rank = buf->rank;
      na.world = W;
      na.num_topk = num_topk;
      na.num_experts = num_experts;
      na.local_experts = h->local_experts;
      na.alignment = expert_alignment;
      na.num_tokens = num_tokens;
      na.num_blocks = (int32_t)h->num_blocks;
      na.block_counts = h->block_counts;
      na.block_prefix = h->block_prefix;
      na.tokens_per_rank = h->tokens_per_rank;
      na.tokens_per_expert = h->tokens_per_expert;
      na.layout_err = buf->layout_err->device();
      for (int p = 0; p < W; ++p) na.peers[p] = buf->peers[p];
      na.seq = ++buf->notify_seq;
      na.parity = (int32_t)(na.seq & 1);
      na.rank_prefix = h->rank_prefix;
      na.rank_tokens = h->rank_tokens;
      na.result = buf->notify->device();
      na.wait = buf->wait_ctx(kKernelNotify);
      check_cuda(launch_notify(na, s), "notify kernel launch");
      buf->wait_stream(s, "nep_cuda_dispatch_notify");
    }

    volatile NotifyResult* r = buf->notify->host();
    switch (r->status) {
      case kNotifyOk: break;
      case kNotifyLocalInput: {
        const std::string msg = buf->layout_message();
        buf->layout_err->host()->valid = 0;
        fail(NEP_ERR_INVALID_ARGUMENT, msg);
      }
      case kNotifyPeerInput:
        buf->layout_err->host()->valid = 0;
        fail(NEP_ERR_PEER, "rank ", r->bad_rank, " passed an invalid topk_idx to notify (its error names the entry)");
      case kNotifyMismatch:
        buf->layout_err->host()->valid = 0;
        fail(NEP_ERR_PEER, "rank ", r->bad_rank, " called notify with num_topk=", r->bad_topk, ", num_experts=", r->bad_experts,
             "; this rank with num_topk=", num_topk, ", num_experts=", num_experts);
      default: fail(NEP_ERR_INTERNAL, "notify kernel on rank ", buf->rank, " left no result (status ", r->status, ")");
    }
    h->num_recv = r->num_recv;
    if (h->num_recv < 0 || h->num_recv > INT32_MAX) fail(NEP_ERR_CAPACITY, "rank ", buf->rank, " would receive ", h->num_recv, " rows (limit 2^31-1)");
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
    if (buf->transport == NEP_CUDA_TRANSPORT_NCCL) {  // the cuda-ipc notify kernel writes these on the device
      check_cuda(cudaMemcpyAsync(h->rank_prefix, h->h_rank_prefix.data(), sizeof(int32_t) * W * W, cudaMemcpyHostToDevice, s),
                 "cudaMemcpyAsync rank_prefix");
      check_cuda(cudaMemcpyAsync(h->rank_tokens, h->h_rank_tokens.data(), sizeof(int32_t) * W, cudaMemcpyHostToDevice, s),
                 "cudaMemcpyAsync rank_tokens");
    }
    h->recv_mem = StreamMemory(sizeof(int32_t) * std::max<int64_t>(h->num_recv, 1), s);
    h->recv_src_idx = static_cast<int32_t*>(h->recv_mem.get());
    *out = h.release();
  });
}

NEP_CUDA_EXPORT int64_t nep_cuda_handle_num_tokens(const nep_cuda_handle* h) { return h ? h->num_tokens : -1; }
NEP_CUDA_EXPORT int64_t nep_cuda_handle_num_recv(const nep_cuda_handle* h) { return h ? h->num_recv : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_handle_num_topk(const nep_cuda_handle* h) { return h ? h->num_topk : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_handle_num_experts(const nep_cuda_handle* h) { return h ? h->num_experts : -1; }
NEP_CUDA_EXPORT int32_t nep_cuda_handle_num_local_experts(const nep_cuda_handle* h) { return h ? h->local_experts : -1; }

NEP_CUDA_EXPORT void nep_cuda_handle_recv_tokens_per_expert(const nep_cuda_handle* h, int32_t aligned, int32_t* out) {
  if (h == nullptr || out == nullptr) return;
  const auto& v = aligned ? h->h_aligned : h->h_raw;
  std::copy(v.begin(), v.end(), out);
}
NEP_CUDA_EXPORT void nep_cuda_handle_rank_prefix_matrix(const nep_cuda_handle* h, int32_t* out) {
  if (h != nullptr && out != nullptr) std::copy(h->h_rank_prefix.begin(), h->h_rank_prefix.end(), out);
}
NEP_CUDA_EXPORT void nep_cuda_handle_rank_num_tokens(const nep_cuda_handle* h, int32_t* out) {
  if (h != nullptr && out != nullptr) std::copy(h->h_rank_tokens.begin(), h->h_rank_tokens.end(), out);
}

NEP_CUDA_EXPORT int32_t nep_cuda_handle_copy_is_token_in_rank(const nep_cuda_handle* h, uint8_t* out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
    const size_t n = (size_t)h->num_tokens * h->world;
    if (n > 0 && out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null but is_token_in_rank has ", n, " bytes");
    DeviceGuard guard(h->owner->device);
    if (n > 0) check_cuda(cudaMemcpy(out, h->is_token_in_rank, n, cudaMemcpyDeviceToHost), "cudaMemcpy is_token_in_rank");
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_handle_copy_recv_src_idx(const nep_cuda_handle* h, int32_t* out, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
    if (h->num_recv > 0 && out == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "out is null but recv_src_idx has ", h->num_recv, " entries");
    if (!h->dispatched) fail(NEP_ERR_INVALID_ARGUMENT, "recv_src_idx is filled by the first dispatch with this handle; none ran yet");
    DeviceGuard guard(h->owner->device);
    if (h->num_recv > 0)
      check_cuda(cudaMemcpy(out, h->recv_src_idx, sizeof(int32_t) * h->num_recv, cudaMemcpyDeviceToHost), "cudaMemcpy recv_src_idx");
  });
}

NEP_CUDA_EXPORT void nep_cuda_handle_destroy(nep_cuda_handle* h) {
  if (h == nullptr) return;
  int prev = 0;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  cudaSetDevice(h->owner->device);
  delete h;
  if (have_prev) cudaSetDevice(prev);
}

// ---- Dispatch and combine -------------------------------------------------------------------------------

namespace {

NcclStageArgs nccl_stage_args(const nep_cuda_buffer* buf, const nep_cuda_handle* h, const NcclCounts& c, long long poff,
                              long long slot, int64_t hidden) {
  NcclStageArgs a{};
  a.rank = buf->rank;
  a.world = buf->world;
  a.num_topk = h->num_topk;
  a.local_experts = h->local_experts;
  a.hidden = hidden;
  a.num_tokens = h->num_tokens;
  a.num_recv = h->num_recv;
  a.slot_bytes = slot;
  a.payload_offset = poff;
  a.route = h->view();
  for (int p = 0; p < buf->world; ++p) a.send_off[p] = c.send_off[p];
  return a;
}

// nccl transport: pack every destination's rows (this rank's own too), exchange, unpack.
void nccl_dispatch(nep_cuda_buffer* buf, nep_cuda_handle* h, int wire, long long poff, long long slot, int64_t x, int32_t x_dtype,
                   int64_t hidden, int64_t topk_idx, int64_t topk_weights, int64_t recv_x, int32_t recv_dtype, int64_t recv_topk_idx,
                   int64_t recv_topk_weights, cudaStream_t s) {
  const NcclCounts c = nccl_counts(h);
  StreamMemory send_stage((size_t)std::max<long long>(c.send_total, 1) * (size_t)slot, s);
  StreamMemory recv_stage((size_t)std::max<long long>(h->num_recv, 1) * (size_t)slot, s);
  NcclStageArgs a = nccl_stage_args(buf, h, c, poff, slot, hidden);
  a.in_dtype = x_dtype;
  a.out_dtype = recv_dtype;
  a.send_stage = static_cast<uint8_t*>(send_stage.get());
  a.recv_stage = static_cast<const uint8_t*>(recv_stage.get());
  a.x = reinterpret_cast<const void*>(x);
  a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
  a.topk_weights = reinterpret_cast<const float*>(topk_weights);
  a.recv_x = reinterpret_cast<void*>(recv_x);
  a.recv_src_idx = h->recv_src_idx;
  a.recv_topk_idx = reinterpret_cast<long long*>(recv_topk_idx);
  a.recv_topk_weights = reinterpret_cast<float*>(recv_topk_weights);
  check_cuda(launch_nccl_dispatch_pack(wire, a, s), "nccl dispatch pack kernel launch");
  nccl_exchange(buf, a.send_stage, c.send_off, c.send, static_cast<uint8_t*>(recv_stage.get()), c.recv_off, c.recv, slot, s,
                "dispatch (nccl)");
  check_cuda(launch_nccl_dispatch_unpack(wire, a, s), "nccl dispatch unpack kernel launch");
}

// nccl transport: pack the received rows back by source rank, exchange, sum in rank order.
void nccl_combine(nep_cuda_buffer* buf, const nep_cuda_handle* h, int wire, long long poff, long long slot, int64_t y, int32_t y_dtype,
                  int64_t hidden, int64_t y_weights, int64_t out, int32_t out_dtype, int64_t out_weights, cudaStream_t s) {
  const NcclCounts c = nccl_counts(h);
  StreamMemory send_stage((size_t)std::max<long long>(h->num_recv, 1) * (size_t)slot, s);
  StreamMemory recv_stage((size_t)std::max<long long>(c.send_total, 1) * (size_t)slot, s);
  NcclStageArgs a = nccl_stage_args(buf, h, c, poff, slot, hidden);
  a.in_dtype = y_dtype;
  a.out_dtype = out_dtype;
  a.send_stage = static_cast<uint8_t*>(send_stage.get());
  a.recv_stage = static_cast<const uint8_t*>(recv_stage.get());
  a.y = reinterpret_cast<const void*>(y);
  a.y_weights = reinterpret_cast<const float*>(y_weights);
  a.out = reinterpret_cast<void*>(out);
  a.out_weights = reinterpret_cast<float*>(out_weights);
  check_cuda(launch_nccl_combine_pack(wire, a, s), "nccl combine pack kernel launch");
  nccl_exchange(buf, a.send_stage, c.recv_off, c.recv, static_cast<uint8_t*>(recv_stage.get()), c.send_off, c.send, slot, s,
                "combine (nccl)");
  check_cuda(launch_nccl_combine_reduce(wire, a, s), "nccl combine reduce kernel launch");
}

}  // namespace

NEP_CUDA_EXPORT int32_t nep_cuda_dispatch(nep_cuda_buffer* buf, nep_cuda_handle* h, int64_t x, int32_t x_dtype, int64_t hidden,
                                          int32_t wire, int64_t topk_idx, int64_t topk_weights, int64_t recv_x,
                                          int32_t recv_dtype, int64_t recv_topk_idx, int64_t recv_topk_weights, int32_t num_sms,
                                          int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->check_usable();
    if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
    if (h->owner != buf) fail(NEP_ERR_INVALID_ARGUMENT, "handle was made by another buffer");
    check_dtype("x_dtype", x_dtype);
    check_dtype("recv_dtype", recv_dtype);
    if (wire < NEP_WIRE_FP32 || wire > NEP_WIRE_MXFP8) fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire, " is not a wire format (0..3)");
    check_hidden(hidden);
    check_num_sms(buf, num_sms);
    if (h->num_tokens > 0 && x == 0) fail(NEP_ERR_INVALID_ARGUMENT, "x is null with num_tokens=", h->num_tokens);
    if (h->num_recv > 0 && recv_x == 0) fail(NEP_ERR_INVALID_ARGUMENT, "recv_x is null but this rank receives ", h->num_recv, " rows");
    check_aligned("x", x, 16);
    check_aligned("recv_x", recv_x, 16);
    if (topk_weights != 0 && topk_idx == 0) fail(NEP_ERR_INVALID_ARGUMENT, "topk_weights needs topk_idx (to know which slots are local)");
    if (recv_topk_idx != 0 && topk_idx == 0) fail(NEP_ERR_INVALID_ARGUMENT, "recv_topk_idx needs topk_idx");
    if (recv_topk_weights != 0 && topk_weights == 0) fail(NEP_ERR_INVALID_ARGUMENT, "recv_topk_weights needs topk_weights");
    check_aligned("topk_idx", topk_idx, 8);
    check_aligned("recv_topk_idx", recv_topk_idx, 8);
    check_aligned("topk_weights", topk_weights, 4);
    check_aligned("recv_topk_weights", recv_topk_weights, 4);
    DeviceGuard guard(buf->device);
    const int K = h->num_topk;
    const long long T = h->num_tokens, R = h->num_recv;
    const SpanChecker span(buf->device, as_stream(stream));
    span("x", x, T * hidden * dtype_bytes(x_dtype));
    span("topk_idx", topk_idx, T * K * 8LL);
    span("topk_weights", topk_weights, T * K * 4LL);
    span("recv_x", recv_x, R * hidden * dtype_bytes(recv_dtype));
    span("recv_topk_idx", recv_topk_idx, R * K * 8LL);
    span("recv_topk_weights", recv_topk_weights, R * K * 4LL);
    const long long poff = dispatch_payload_offset(K);
    const long long slot = align_up(poff + wire_row_bytes(wire, hidden), 16);
    if (buf->transport == NEP_CUDA_TRANSPORT_NCCL) {
      cudaStream_t s = as_stream(stream);
      nccl_dispatch(buf, h, wire, poff, slot, x, x_dtype, hidden, topk_idx, topk_weights, recv_x, recv_dtype, recv_topk_idx,
                    recv_topk_weights, s);
      h->dispatched = true;
      h->set_stream(s);
      return;
    }
    const RingGeom g = buf->geometry(slot, poff, num_sms, "dispatch");
    DispatchArgs a{};
    a.rank = buf->rank;
    a.world = buf->world;
    a.num_topk = K;
    a.local_experts = h->local_experts;
    a.num_channels = num_sms;
    a.hidden = hidden;
    a.x = reinterpret_cast<const void*>(x);
    a.x_dtype = x_dtype;
    a.out_dtype = recv_dtype;
    a.topk_idx = reinterpret_cast<const long long*>(topk_idx);
    a.topk_weights = reinterpret_cast<const float*>(topk_weights);
    a.route = h->view();
    a.recv_x = reinterpret_cast<void*>(recv_x);
    a.recv_src_idx = h->recv_src_idx;
    a.recv_topk_idx = reinterpret_cast<long long*>(recv_topk_idx);
    a.recv_topk_weights = reinterpret_cast<float*>(recv_topk_weights);
    for (int p = 0; p < buf->world; ++p) a.peers[p] = buf->peers[p];
    a.geom = g;
    buf->max_channels_used = std::max(buf->max_channels_used, num_sms);
    a.drain_channels = buf->max_channels_used;
    a.call_id = ++buf->dispatch_calls;
    a.parity = (int32_t)(a.call_id & 1);
    a.wait = buf->wait_ctx(kKernelDispatch);
    cudaStream_t s = as_stream(stream);
    check_cuda(launch_dispatch(wire, a, s), "dispatch kernel launch");
    h->dispatched = true;
    h->set_stream(s);
  });
}

NEP_CUDA_EXPORT int32_t nep_cuda_combine(nep_cuda_buffer* buf, const nep_cuda_handle* h, int64_t y, int32_t y_dtype, int64_t hidden,
                                         int32_t wire, int64_t y_weights, int64_t out, int32_t out_dtype, int64_t out_weights,
                                         int32_t num_sms, int64_t stream, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    require_buffer(buf);
    buf->check_usable();
    if (h == nullptr) fail(NEP_ERR_INVALID_ARGUMENT, "handle is null");
    if (h->owner != buf) fail(NEP_ERR_INVALID_ARGUMENT, "handle was made by another buffer");
    if (!h->dispatched) fail(NEP_ERR_INVALID_ARGUMENT, "combine needs a handle that a dispatch has used (recv_src_idx is filled there)");
    check_dtype("y_dtype", y_dtype);
    check_dtype("out_dtype", out_dtype);
    if (wire != NEP_WIRE_BF16 && wire != NEP_WIRE_FP32)
      fail(NEP_ERR_INVALID_ARGUMENT, "wire=", wire, " is not a combine wire format (NEP_WIRE_FP32=0 or NEP_WIRE_BF16=1)");
    check_hidden(hidden);
    check_num_sms(buf, num_sms);
    if (h->num_recv > 0 && y == 0) fail(NEP_ERR_INVALID_ARGUMENT, "y is null but this rank received ", h->num_recv, " rows");
    if (h->num_tokens > 0 && out == 0) fail(NEP_ERR_INVALID_ARGUMENT, "out is null with num_tokens=", h->num_tokens);
    if ((y_weights == 0) != (out_weights == 0)) fail(NEP_ERR_INVALID_ARGUMENT, "y_weights and out_weights go together (one is null)");
    check_aligned("y", y, 16);
    check_aligned("out", out, 16);
    check_aligned("y_weights", y_weights, 4);
    check_aligned("out_weights", out_weights, 4);
    DeviceGuard guard(buf->device);
    const int K = h->num_topk;
    const long long T = h->num_tokens, R = h->num_recv;
    const SpanChecker span(buf->device, as_stream(stream));
    span("y", y, R * hidden * dtype_bytes(y_dtype));
    span("y_weights", y_weights, R * K * 4LL);
    span("out", out, T * hidden * dtype_bytes(out_dtype));
    span("out_weights", out_weights, T * K * 4LL);
    const long long poff = combine_payload_offset(K);
    const long long slot = align_up(poff + wire_row_bytes(wire, hidden), 16);
    if (buf->transport == NEP_CUDA_TRANSPORT_NCCL) {
      cudaStream_t s = as_stream(stream);
      nccl_combine(buf, h, wire, poff, slot, y, y_dtype, hidden, y_weights, out, out_dtype, out_weights, s);
      const_cast<nep_cuda_handle*>(h)->set_stream(s);
      return;
    }
    const RingGeom g = buf->geometry(slot, poff, num_sms, "combine");
    CombineArgs a{};
    a.rank = buf->rank;
    a.world = buf->world;
    a.num_topk = K;
    a.num_channels = num_sms;
    a.hidden = hidden;
    a.y = reinterpret_cast<const void*>(y);
    a.y_dtype = y_dtype;
    a.out_dtype = out_dtype;
    a.y_weights = reinterpret_cast<const float*>(y_weights);
    a.route = h->view();
    a.recv_src_idx = h->recv_src_idx;
    a.out = reinterpret_cast<void*>(out);
    a.out_weights = reinterpret_cast<float*>(out_weights);
    for (int p = 0; p < buf->world; ++p) a.peers[p] = buf->peers[p];
    a.geom = g;
    buf->max_channels_used = std::max(buf->max_channels_used, num_sms);
    a.drain_channels = buf->max_channels_used;
    a.wait = buf->wait_ctx(kKernelCombine);
    cudaStream_t s = as_stream(stream);
    check_cuda(launch_combine(wire, a, s), "combine kernel launch");
    const_cast<nep_cuda_handle*>(h)->set_stream(s);
  });
}
