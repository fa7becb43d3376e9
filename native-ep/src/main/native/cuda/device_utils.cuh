// Device helpers of the cuda-ipc kernels: memory-model operations on peers' memory, bounded waits
// that report to the host instead of hanging, named barriers, vector loads and stores.
#ifndef NATIVEEP_CUDA_DEVICE_UTILS_CUH_
#define NATIVEEP_CUDA_DEVICE_UTILS_CUH_

#include <cstdint>

#include "ep_common.cuh"

namespace nep {
namespace cuda {

using u64 = unsigned long long;

// ---- Loads and stores ---------------------------------------------------------------------------

__device__ __forceinline__ u64 ld_acquire_sys(const u64* p) {
  u64 v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_sys(u64* p, u64 v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ u64 ld_volatile_u64(const u64* p) {
  u64 v;
  asm volatile("ld.volatile.global.u64 %0, [%1];" : "=l"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ void st_volatile_u64(u64* p, u64 v) {
  asm volatile("st.volatile.global.u64 [%0], %1;" ::"l"(p), "l"(v));
}
__device__ __forceinline__ unsigned int ld_volatile_u32(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.volatile.global.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ int ld_volatile_s32(const void* p) {
  int v;
  asm volatile("ld.volatile.global.s32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ float ld_volatile_f32(const void* p) {
  float v;
  asm volatile("ld.volatile.global.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ unsigned int ld_volatile_u8(const void* p) {
  unsigned short v;
  asm volatile("ld.volatile.global.u8 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}
// Ring data: written by a peer GPU, read once; volatile so no stale line of an earlier lap of the
// ring can be served from L1.
__device__ __forceinline__ uint4 ld_volatile_v4(const void* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_volatile_v2(const void* p) {
  uint2 v;
  asm volatile("ld.volatile.global.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
// Inputs that no one writes during the kernel: read-only path, no L1 allocation (read once).
__device__ __forceinline__ uint4 ld_nc_v4(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ void st_v4(void* p, uint4 v) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
               "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void st_v2(void* p, uint2 v) {
  asm volatile("st.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}

__device__ __forceinline__ u64 global_timer_ns() {
  u64 t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Barrier among `threads` threads (a multiple of 32) of the block, id 1..15 (0 is __syncthreads).
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// ---- Failure reporting and bounded waits --------------------------------------------------------

__device__ __forceinline__ bool is_aborted(const WaitCtx& w) {
  return ld_volatile_u32(w.abort) != 0;
}

// Records the first failure of the buffer for the host and makes every other wait of this rank
// stop. Never traps: the kernel runs to its end with the remaining work skipped.
__device__ inline void report_failure(const WaitCtx& w, int code, int peer, int counter,
                                      int channel, long long expected, long long observed) {
  asm volatile("st.volatile.global.u32 [%0], %1;" ::"l"(w.abort), "r"(1u) : "memory");
  if (atomicCAS(w.err_claim, 0u, 1u) == 0u) {
    volatile ErrorRecord* r = w.record;
    r->code = code;
    r->kernel = w.kernel;
    r->rank = w.rank;
    r->peer = peer;
    r->counter = counter;
    r->channel = channel;
    r->expected = expected;
    r->observed = observed;
    __threadfence_system();
    r->valid = 1;
    __threadfence_system();
  }
}

// Waits until *p >= target (p is a monotonic counter written by `peer`). Returns false, after
// reporting, when the buffer's timeout passes or another wait of this rank has failed.
template <bool kAcquire>
__device__ inline bool wait_geq(const u64* p, u64 target, const WaitCtx& w, int peer, int counter,
                                int channel, u64* seen) {
  u64 v = kAcquire ? ld_acquire_sys(p) : ld_volatile_u64(p);
  if (v >= target) {
    *seen = v;
    return true;
  }
  const u64 start = global_timer_ns();
  for (unsigned int it = 1;; ++it) {
    v = kAcquire ? ld_acquire_sys(p) : ld_volatile_u64(p);
    if (v >= target) {
      *seen = v;
      return true;
    }
    if ((it & 127u) == 0u) {
      if (is_aborted(w)) return false;
      if (global_timer_ns() - start > w.timeout_ns) {
        report_failure(w, NEP_ERR_TIMEOUT, peer, counter, channel, (long long)target, (long long)v);
        return false;
      }
    }
  }
}

// ---- Routing ------------------------------------------------------------------------------------

// Position of token t among the tokens this rank sends to rank r, or -1.
__device__ __forceinline__ int send_pos(const RouteView& rv, int world, long long t, int r) {
  const int lp = rv.local_pos[t * world + r];
  const int bp = rv.block_prefix[(t / kLayoutBlock) * world + r];  // both loads in flight together
  return lp < 0 ? -1 : lp + bp;
}
// First received row, on rank `dst`, of the rows coming from rank `src`.
__device__ __forceinline__ int recv_row_begin(const RouteView& rv, int world, int src, int dst) {
  return src == 0 ? 0 : rv.rank_prefix[(src - 1) * world + dst];
}

}  // namespace cuda
}  // namespace nep

#endif  // NATIVEEP_CUDA_DEVICE_UTILS_CUH_
