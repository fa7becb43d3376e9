// Set-up shared by the low-latency GPU drivers (ll_test, ll_bench): the LL buffer connected through
// the fork harness's exchange, on GPU device_of_rank(rank) (gpu_common.h).
#ifndef NATIVEEP_GPU_TESTS_LL_HARNESS_H_
#define NATIVEEP_GPU_TESTS_LL_HARNESS_H_

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "gpu_common.h"

namespace nepgpu {

struct LlBufferDeleter {
  void operator()(nep_cuda_ll_buffer* b) const { nep_cuda_ll_buffer_destroy(b); }
};
struct LlOpDeleter {
  void operator()(nep_cuda_ll_op* o) const { nep_cuda_ll_op_destroy(o); }
};
struct LlHandleDeleter {
  void operator()(nep_cuda_ll_handle* h) const { nep_cuda_ll_handle_destroy(h); }
};
using LlBufferPtr = std::unique_ptr<nep_cuda_ll_buffer, LlBufferDeleter>;
using LlOpPtr = std::unique_ptr<nep_cuda_ll_op, LlOpDeleter>;
using LlHandlePtr = std::unique_ptr<nep_cuda_ll_handle, LlHandleDeleter>;

struct LlConfig {
  int64_t max_tokens = 128;
  int64_t hidden = 7168;
  int experts = 256;
  int max_topk = 8;
  int max_wire = NEP_WIRE_BF16;
  int64_t timeout_ms = 60000;
};

inline LlBufferPtr make_ll_buffer(Exchange& ex, const LlConfig& c) {
  Err e;
  const int dev = device_of_rank(ex.rank());
  cuda_ok(cudaSetDevice(dev), "cudaSetDevice");
  nep_cuda_ll_buffer* raw = nullptr;
  nep_ok(
      nep_cuda_ll_buffer_create(ex.rank(), ex.world(), dev, c.max_tokens, c.hidden, c.experts,
                                c.max_topk, c.max_wire, c.timeout_ms, &raw, e.msg, sizeof(e.msg)),
      e, "nep_cuda_ll_buffer_create");
  LlBufferPtr buf(raw);
  std::vector<uint8_t> mine(NEP_CUDA_EXPORT_BYTES), all(size_t(NEP_CUDA_EXPORT_BYTES) * ex.world());
  nep_ok(
      nep_cuda_ll_buffer_export(buf.get(), mine.data(), (int64_t)mine.size(), e.msg, sizeof(e.msg)),
      e, "nep_cuda_ll_buffer_export");
  ex.allgather(mine.data(), mine.size(), all.data());
  nep_ok(
      nep_cuda_ll_buffer_connect(buf.get(), all.data(), (int64_t)all.size(), e.msg, sizeof(e.msg)),
      e, "nep_cuda_ll_buffer_connect");
  ex.barrier();
  return buf;
}

}  // namespace nepgpu

#endif  // NATIVEEP_GPU_TESTS_LL_HARNESS_H_
