// Hopper tier of the grouped FP8 GEMMs (gemm_api.h), compiled for sm_90a only: wgmma
// m64n128k32 e4m3 with both operands in shared memory, fed by TMA (128-byte swizzle) through an
// mbarrier pipeline. Persistent CTAs (one per SM) of 9 warps each compute 128x128 tiles of C in
// turn: warp 8 produces (per stage of 128 along the reduction: the scales of the tile's rows and
// columns into shared memory, then both operand tiles by TMA), keeping kStages stages in flight
// across tile boundaries, so the next tile's loads overlap this tile's last stages and epilogue;
// warps 0-7 are two consumer warpgroups (64 rows each) that multiply each stage into fresh partial
// accumulators (4 wgmma k32 for FP8_BLOCK, one per MX block for MXFP8) and promote them into fp32
// registers with the CPU path's float operations (gemm_device.cuh), the scales read from shared
// memory.
//
// Status: the per-tile version passed every gemm_test case on an H100 (2026-12-08), the 16B expert
// shapes included (FP8_BLOCK 267 TFLOP/s forward + backward at the 16B shape, MXFP8 23); this
// persistent version with shared-memory scales is its rewrite for speed. The C ABI takes the tier
// by default on compute capability 9.0 wherever it can (gemm_capi.cu). The encodings
// (descriptors, swizzle, accumulator layout, tensor maps, stage parities) live in wgmma_layout.h
// and are checked on the CPU by src/test/native/gemm_wgmma_layout_test.cpp.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gemm_device.cuh"
#include "gemm_kernels.h"
#include "host_utils.h"
#include "wgmma_layout.h"

namespace nep {
namespace cuda {
namespace gemm {
namespace {

namespace wg = nep::wgmma;

constexpr int kBM = wg::kTileRows, kBN = wg::kTileRows, kBK = wg::kTileK, kStages = wg::kStages;
constexpr int kTileBytes = wg::kTileBytes;  // one operand's stage (kBN == kBM)
constexpr int kConsumerThreads = 32 * wg::kConsumerWarps, kThreads = kConsumerThreads + 32;
// A stage's wait on its mbarrier that lasts this long means the pipeline is broken: the kernel
// traps (the launch then fails) rather than hang the process.
constexpr uint64_t kWaitLimitNs = 20ull * 1000 * 1000 * 1000;

struct alignas(wg::kSwizzleAtom) Smem {
  uint8_t a[kStages][kTileBytes];
  uint8_t b[kStages][kTileBytes];
  uint64_t full[kStages], empty[kStages];
  uint32_t sa[kStages][kBM];  // the stage's scales of A's rows (stage_scales)
  uint32_t sb[kStages][kBN];  // and of B's rows (the tile's columns)
  uint32_t mx_fast[kStages];  // MXFP8: mx_fast_blocks of the stage
};
constexpr size_t kSmemBytes = sizeof(Smem) + wg::kSwizzleAtom;  // + slack to align the base
static_assert(offsetof(Smem, a) % wg::kSwizzleAtom == 0 &&
                  offsetof(Smem, b) % wg::kSwizzleAtom == 0 && kTileBytes % wg::kSwizzleAtom == 0,
              "every stage's tiles start on a 1024-byte boundary (128-byte swizzle)");
static_assert(kSmemBytes <= 227 * 1024, "more shared memory than an sm_90 CTA may have");

// What a CTA computes: rows [a_row, +128) of A's tensor map against rows [b_row, +128) of B's,
// over the reduction [red0, red0 + len); rows_a x rows_b of the tile are stored.
struct Job {
  int32_t a_row, b_row, red0;
  int64_t len;
  int rows_a, rows_b;
  const uint8_t* sa;  // scales of A's row 0 (stage 0)
  int64_t ldsa;
  const uint8_t* sb;  // scales of B's row 0; ldsb = 0: one row of scales for the tile
  int64_t ldsb;
  uint8_t* c;
  int64_t ldc;
  bool bf16;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// Waits for the completion of the phase of parity `parity`, bounded: a wait that cannot end is a
// bug of the pipeline, and the kernel traps (the launch fails) instead of hanging. (Inline and
// without printf: a call inside the kernel would make ptxas serialise every wgmma.)
__device__ __forceinline__ void mbar_wait_slow(uint64_t* bar, uint32_t parity) {
  const uint64_t t0 = global_ns();
  while (!mbar_try_wait(bar, parity))
    if (global_ns() - t0 > kWaitLimitNs) __trap();
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  if (!mbar_try_wait(bar, parity)) mbar_wait_slow(bar, parity);
}
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int32_t inner,
                                            int32_t outer, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3}], [%4];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smem_addr(bar))
      : "memory");
}

// Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle TMA writes (encoding
// and k32 stepping in wgmma_layout.h).
__device__ __forceinline__ uint64_t smem_desc(const void* tile) {
  return wg::sw128_kmajor_desc(smem_addr(tile));
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
// Pins the accumulator registers at this point of the instruction stream: the compiler sees the
// wgmma's outputs as written when it is issued, so without this it may move their reads above
// wgmma.wait_group (or their writes below wgmma.fence).
__device__ __forceinline__ void fence_regs(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d[64] (+)= A(64 x 32) B(128 x 32)^T; scale_d = 0 starts from zero.
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t da, uint64_t db,
                                                 int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}

// The stage's scales of A's row r (rows_a of the tile are real) or B's column: FP8_BLOCK the fp32
// scale's bits; MXFP8 the four E8M0 bytes of the stage's MX blocks (byte j: K [32 j, 32 j + 32) of
// the stage), 127 (a factor of 1) past the reduction's end or past the tile's real rows, where the
// partial sums are zero. ld = 0: one row of scales serves every row.
template <Format F>
__device__ __forceinline__ uint32_t stage_scales(const uint8_t* scales, int64_t ld, int r, int rows,
                                                 int64_t st, int64_t len) {
  if constexpr (F == Format::kFp8Block) {
    return r < rows ? __float_as_uint(reinterpret_cast<const float*>(scales + r * ld)[st]) : 0u;
  } else {
    uint32_t packed = 0x7F7F7F7Fu;
    if (r < rows) {
      const uint8_t* row = scales + r * ld + st * 4;
      packed = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        packed |= uint32_t(st * kBK + 32 * j < len ? row[j] : 127) << (8 * j);
    }
    return packed;
  }
}

// Bytewise minimum and maximum of packed E8M0 quadruples.
__device__ __forceinline__ uint32_t bytes_min(uint32_t x, uint32_t y) { return __vminu4(x, y); }
__device__ __forceinline__ uint32_t bytes_max(uint32_t x, uint32_t y) { return __vmaxu4(x, y); }
__device__ __forceinline__ uint32_t warp_bytes_min(uint32_t v) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) v = bytes_min(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}
__device__ __forceinline__ uint32_t warp_bytes_max(uint32_t v) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) v = bytes_max(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

// The producer warp: for each of the CTA's tiles and each stage, waits for the slot, writes the
// stage's scales of A's 128 rows and B's 128 columns into the slot (all 32 lanes), then lane 0
// arms the slot's barrier and issues both TMA loads. The stage counter runs on across tiles, so
// the next tile's loads overlap this tile's last stages and the consumers' epilogue.
template <Format F, class JobOf>
__device__ void produce(int32_t tiles, const JobOf& job_of, const CUtensorMap* map_a,
                        const CUtensorMap* map_b, Smem& sm) {
  const int lane = threadIdx.x & 31;
  int64_t it = 0;
  for (int32_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const Job job = job_of(tile);
    const int64_t stages = (job.len + kBK - 1) / kBK;
    for (int64_t st = 0; st < stages; ++st, ++it) {
      const int s = wg::stage_slot(it, kStages);
      if (wg::producer_waits(it, kStages)) mbar_wait(&sm.empty[s], wg::empty_parity(it, kStages));
      uint32_t min_a = ~0u, max_a = 0, min_b = ~0u, max_b = 0;
#pragma unroll
      for (int j = 0; j < kBM / 32; ++j) {
        const int r = lane + 32 * j;
        const uint32_t va = stage_scales<F>(job.sa, job.ldsa, r, job.rows_a, st, job.len);
        const uint32_t vb = stage_scales<F>(job.sb, job.ldsb, r, job.rows_b, st, job.len);
        sm.sa[s][r] = va;
        sm.sb[s][r] = vb;
        min_a = bytes_min(min_a, va);
        max_a = bytes_max(max_a, va);
        min_b = bytes_min(min_b, vb);
        max_b = bytes_max(max_b, vb);
      }
      if constexpr (F == Format::kMxfp8) {
        const uint32_t fast = wg::mx_fast_blocks(warp_bytes_min(min_a), warp_bytes_max(max_a),
                                                 warp_bytes_min(min_b), warp_bytes_max(max_b));
        if (lane == 0) sm.mx_fast[s] = fast;
      }
      // The lanes' scale stores ordered before lane 0's arrival, whose release publishes them
      // with the slot.
      __syncwarp();
      if (lane == 0) {
        mbar_expect_tx(&sm.full[s], wg::kStageTxBytes);
        const int32_t k0 = job.red0 + int32_t(st * kBK);
        tma_load_2d(sm.a[s], map_a, k0, job.a_row, &sm.full[s]);
        tma_load_2d(sm.b[s], map_b, k0, job.b_row, &sm.full[s]);
      }
    }
  }
}

// One consumer warpgroup's share of a stage for FP8_BLOCK: four wgmma k32 into fresh partials, then
// their promotion with the stage's scales (one multiply of the scales, one of the partial, one add:
// the CPU path's operations). uniform_b: one scale for every column (the M-grouped GEMM's weight
// block).
__device__ __forceinline__ void consume_fp8(float (&acc)[64], float (&part)[64], uint64_t da,
                                            uint64_t db, const uint32_t* sa, const uint32_t* sb,
                                            int ra, int t, bool uniform_b) {
  fence_regs(part);
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kBK / int(wg::kStepK); ++ks)
    wgmma_m64n128k32(part, wg::desc_advance(da, ks * wg::kStepK),
                     wg::desc_advance(db, ks * wg::kStepK), ks > 0);
  wgmma_commit();
  fence_regs(part);
  wgmma_wait0();
  fence_regs(part);
  const float sa0 = __uint_as_float(sa[ra]), sa1 = __uint_as_float(sa[ra + 8]);
  if (uniform_b) {
    const float sb0 = __uint_as_float(sb[0]);
    const float s0 = __fmul_rn(sa0, sb0), s1 = __fmul_rn(sa1, sb0);
#pragma unroll
    for (int i = 0; i < 64; ++i)
      acc[i] = __fadd_rn(acc[i], __fmul_rn(part[i], (i / 2) % 2 == 0 ? s0 : s1));
  } else {
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const float sbc = __uint_as_float(sb[wg::acc_col(t, i)]);
      acc[i] = promote_fp8(acc[i], part[i], (i / 2) % 2 == 0 ? sa0 : sa1, sbc);
    }
  }
}

// The same for MXFP8: one wgmma k32 per MX block, each promoted before the next (its scales differ
// per block). Where the producer found every scale product of the block normal, the promotion is
// one multiply by 2^(ea + eb - 254) built from its bits and one add, which is promote_mx's result.
__device__ __forceinline__ void consume_mx(float (&acc)[64], float (&part)[64], uint64_t da,
                                           uint64_t db, const uint32_t* sa, const uint32_t* sb,
                                           uint32_t fast, int64_t left, int ra, int t) {
  const uint32_t pa0 = sa[ra], pa1 = sa[ra + 8];
#pragma unroll 1
  for (int ks = 0; ks < kBK / int(wg::kStepK); ++ks) {
    if (int64_t(wg::kStepK) * ks >= left) break;  // uniform: no MX block there
    fence_regs(part);
    wgmma_fence();
    wgmma_m64n128k32(part, wg::desc_advance(da, ks * wg::kStepK),
                     wg::desc_advance(db, ks * wg::kStepK), 0);
    wgmma_commit();
    fence_regs(part);
    wgmma_wait0();
    fence_regs(part);
    const int sh = 8 * ks;
    const uint32_t ea0 = (pa0 >> sh) & 0xFFu, ea1 = (pa1 >> sh) & 0xFFu;
    if ((fast >> ks) & 1u) {
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        const uint32_t eb = (sb[wg::acc_col(t, i)] >> sh) & 0xFFu;
        const uint32_t bits = wg::mx_factor_bits((i / 2) % 2 == 0 ? ea0 : ea1, eb);
        acc[i] = __fadd_rn(acc[i], __fmul_rn(part[i], __uint_as_float(bits)));
      }
    } else {
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        const uint32_t eb = (sb[wg::acc_col(t, i)] >> sh) & 0xFFu;
        acc[i] = promote_mx(acc[i], part[i], (i / 2) % 2 == 0 ? ea0 : ea1, eb);
      }
    }
  }
}

// A persistent CTA of 9 warps: tiles blockIdx.x, blockIdx.x + gridDim.x, ... of `tiles`, each
// described by job_of(tile). Warp 8 produces (produce above); warps 0-7 are two warpgroups of 64
// rows that wait for each stage, multiply, promote, release the slot, and store the tile.
template <Format F, class JobOf>
__device__ void run_tiles(int32_t tiles, const JobOf& job_of, const CUtensorMap* map_a,
                          const CUtensorMap* map_b, Smem& sm) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&sm.full[s], 1);
      mbar_init(&sm.empty[s], wg::kConsumerWarps);
    }
    // The initialised barriers visible to the other threads and to the async proxy (TMA's
    // complete_tx).
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  }
  __syncthreads();
  if (warp == kConsumerThreads / 32) {
    produce<F>(tiles, job_of, map_a, map_b, sm);
    return;
  }
  const int wgi = warp / 4, t = threadIdx.x % 128;
  // Rows of the tile this thread's accumulators hold (d[i] with (i / 2) even: r0, odd: r1 = r0 +
  // 8), and the column of d[i] is acc_col(t, i).
  const int r0 = wgi * 64 + int(wg::acc_row(t, 0)), r1 = wgi * 64 + int(wg::acc_row(t, 2));
  float acc[64], part[64];
  int64_t it = 0;
  for (int32_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const Job job = job_of(tile);
    const int64_t stages = (job.len + kBK - 1) / kBK;
    if (stages == 0) {  // an empty group of the K-grouped GEMM: its C_g tile is zeros
      for (int i = threadIdx.x; i < kBM * kBN; i += kConsumerThreads)
        if (i / kBN < job.rows_a && i % kBN < job.rows_b)
          reinterpret_cast<float*>(job.c)[(i / kBN) * job.ldc + i % kBN] = 0.0f;
      continue;
    }
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = part[i] = 0.0f;
    for (int64_t st = 0; st < stages; ++st, ++it) {
      const int s = wg::stage_slot(it, kStages);
      mbar_wait(&sm.full[s], wg::full_parity(it, kStages));
      const uint64_t da = smem_desc(sm.a[s] + wgi * 64 * kBK), db = smem_desc(sm.b[s]);
      if constexpr (F == Format::kFp8Block) {
        consume_fp8(acc, part, da, db, sm.sa[s], sm.sb[s], r0, t, job.ldsb == 0);
      } else {
        consume_mx(acc, part, da, db, sm.sa[s], sm.sb[s], sm.mx_fast[s], job.len - st * kBK, r0, t);
      }
      // Every lane done with the slot's tiles (the wgmma waited) and scales before the release.
      __syncwarp();
      if (lane == 0) mbar_arrive(&sm.empty[s]);
    }
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const int row = (i / 2) % 2 == 0 ? r0 : r1, col = int(wg::acc_col(t, i));
      if (row >= job.rows_a || col >= job.rows_b) continue;
      const int64_t at = row * job.ldc + col;
      if (job.bf16) {
        reinterpret_cast<uint16_t*>(job.c)[at] = bf16_bits(acc[i]);
      } else {
        reinterpret_cast<float*>(job.c)[at] = acc[i];
      }
    }
  }
}

// The dynamic shared memory from its first 1024-byte boundary (aligned on the shared address the
// swizzle and the descriptors see).
__device__ __forceinline__ Smem& smem_of(uint8_t* raw) {
  const uint32_t pad = (wg::kSwizzleAtom - (smem_addr(raw) % wg::kSwizzleAtom)) % wg::kSwizzleAtom;
  return *reinterpret_cast<Smem*>(raw + pad);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

struct MParams {
  const uint8_t *sa, *sb;
  uint8_t* c;
  int64_t n, k, ldsa;
  int32_t n_tiles;  // column tiles of 128
  bool bf16;
};

// Tile j of the M-grouped GEMM is row tile j / n_tiles of the layout (tile_prefix: each group's
// rows in tiles of 128) against column tile j % n_tiles: consecutive tiles share A's rows, and the
// CTAs in flight together cover a few groups' weights.
template <Format F>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_grouped_m_kernel(const __grid_constant__ CUtensorMap map_a,
                           const __grid_constant__ CUtensorMap map_b,
                           const __grid_constant__ GroupTable t, const MParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  const int32_t tiles = t.tile_prefix[t.count] * p.n_tiles;
  const auto job_of = [&](int32_t j) {
    const wg::MTile mt = wg::m_tile(j, p.n_tiles, t.tile_prefix, t.offsets, t.count, p.n);
    const int g = mt.g;
    const int64_t row0 = mt.row0, n0 = mt.n0;
    const int64_t nkb = nep::gemm::ceil_div(p.k, F == Format::kFp8Block ? 128 : 32);
    const uint8_t* sbg = p.sb + g * nep::gemm::weight_scale_bytes(F, p.n, p.k);
    Job job;
    job.a_row = int32_t(row0);
    job.b_row = int32_t(g * p.n + n0);
    job.red0 = 0;
    job.len = p.k;
    job.rows_a = mt.rows_a;
    job.rows_b = mt.rows_b;
    job.sa = p.sa + row0 * p.ldsa;
    job.ldsa = p.ldsa;
    if constexpr (F == Format::kFp8Block) {
      job.sb = sbg + (n0 / 128) * nkb * 4;
      job.ldsb = 0;
    } else {
      job.sb = sbg + n0 * nkb;
      job.ldsb = nkb;
    }
    job.c = p.c + (row0 * p.n + n0) * (p.bf16 ? 2 : 4);
    job.ldc = p.n;
    job.bf16 = p.bf16;
    return job;
  };
  run_tiles<F>(tiles, job_of, &map_a, &map_b, smem_of(raw));
#endif
}

struct KParams {
  const uint8_t *sa, *sb;
  float* c;
  int64_t n, k;
  int32_t n_tiles, k_tiles;  // tiles of 128 along C_g's rows (n) and columns (k)
};

// Tile j of the K-grouped GEMM is group j / (n_tiles k_tiles), row tile (j / k_tiles) % n_tiles,
// column tile j % k_tiles of C_g.
template <Format F>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_grouped_k_kernel(const __grid_constant__ CUtensorMap map_a,
                           const __grid_constant__ CUtensorMap map_b,
                           const __grid_constant__ GroupTable t, const KParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t raw[];
  const int32_t per_group = p.n_tiles * p.k_tiles;
  const int32_t tiles = t.count * per_group;
  const auto job_of = [&](int32_t j) {
    const wg::KTile kt = wg::k_tile(j, p.n_tiles, p.k_tiles, p.n, p.k);
    const int g = kt.g;
    const int64_t n0 = kt.n0, k0 = kt.k0;
    const int64_t mp = t.padded[t.count], p0 = t.padded[g];
    const int64_t block = F == Format::kFp8Block ? 128 : 32, ss = F == Format::kFp8Block ? 4 : 1;
    const int64_t scale_row = mp / block * ss, scale0 = p0 / block * ss;
    Job job;
    job.a_row = int32_t(n0);
    job.b_row = int32_t(k0);
    job.red0 = int32_t(p0);
    job.len = t.padded[g + 1] - p0;
    job.rows_a = kt.rows_a;
    job.rows_b = kt.rows_b;
    job.sa = p.sa + n0 * scale_row + scale0;
    job.ldsa = scale_row;
    job.sb = p.sb + k0 * scale_row + scale0;
    job.ldsb = scale_row;
    job.c = reinterpret_cast<uint8_t*>(p.c + int64_t(g) * p.n * p.k + n0 * p.k + k0);
    job.ldc = p.k;
    job.bf16 = false;
    return job;
  };
  run_tiles<F>(tiles, job_of, &map_a, &map_b, smem_of(raw));
#endif
}

// cuTensorMapEncodeTiled through the runtime's driver entry point (nothing links libcuda).
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// The encoded map of `m` (wgmma_layout.h: uint8 elements, one tile per box, 128-byte swizzle,
// zeros outside the tensor) over `base`.
CUtensorMap make_map(const char* name, const void* base, const wg::TmaMap2d& m) {
  if (const char* why = wg::map_problem(m, reinterpret_cast<uintptr_t>(base)))
    fail(NEP_ERR_INTERNAL, "TMA map of ", name, ": ", why);
  CUtensorMap map;
  std::memset(&map, 0, sizeof map);
  const cuuint64_t dims[2] = {m.dims[0], m.dims[1]};
  const cuuint64_t strides[1] = {m.strides[0]};
  const cuuint32_t box[2] = {m.box[0], m.box[1]};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r =
      encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides,
                  box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    fail(NEP_ERR_INTERNAL, "cuTensorMapEncodeTiled for ", name, " [", m.dims[1], ", ", m.dims[0],
         "] stride ", m.strides[0], " failed with CUresult ", int(r));
  return map;
}

// The M-grouped GEMM's maps: A [offsets[G], k] with rows lda apart (rows up to the last group's
// end only: the caller's allocation is checked that far; a tile that runs past a group's end
// reads the next group's rows, whose accumulator rows are never stored), B [G n, k].
wg::TmaMap2d map_a_of(const GroupedM& args) {
  return wg::tile_map(args.k, args.groups.offsets[args.groups.count], args.lda);
}
wg::TmaMap2d map_b_of(const GroupedM& args) {
  return wg::tile_map(args.k, args.groups.count * args.n, args.k);
}
// The K-grouped GEMM's maps (only when Mp > 0): A [n, Mp], B [k, Mp], rows Mp apart.
wg::TmaMap2d map_a_of(const GroupedK& args) {
  const int64_t mp = args.groups.padded_rows();
  return wg::tile_map(mp, args.n, mp);
}
wg::TmaMap2d map_b_of(const GroupedK& args) {
  const int64_t mp = args.groups.padded_rows();
  return wg::tile_map(mp, args.k, mp);
}

template <class Kernel>
void allow_smem(Kernel kernel) {
  check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes)),
      "cudaFuncSetAttribute (wgmma GEMM shared memory)");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

constexpr int64_t kMaxTiles = INT32_MAX / 2;  // tile indices (+ the grid stride) are int32

// The persistent grid: one CTA per SM of the current device (the kernel holds one per SM), fewer
// when there are fewer tiles.
unsigned persistent_ctas(int64_t tiles) {
  int device = 0, sms = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice (wgmma GEMM grid)");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute (SM count)");
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(tiles, std::max(sms, 1))));
}

}  // namespace

const char* wgmma_refusal_m(const GroupedM& args, const void* a, const void* b) {
  if (encode_fn() == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  if (args.k % 16 != 0) return "k is not a multiple of 16 (TMA rows must be 16-byte multiples)";
  if (args.lda % 16 != 0) return "lda is not a multiple of 16 (TMA stride)";
  if (!aligned16(a) || !aligned16(b)) return "a or b is not 16-byte aligned (TMA)";
  if (args.m >= (int64_t(1) << 31) || args.groups.count * args.n >= (int64_t(1) << 31) ||
      args.k >= (int64_t(1) << 31))
    return "a dimension reaches 2^31 (TMA coordinates are 32-bit)";
  int64_t row_tiles = 0;
  for (int32_t i = 0; i < args.groups.count; ++i)
    row_tiles += nep::gemm::ceil_div(args.groups.rows(i), kBM);
  if (row_tiles * nep::gemm::ceil_div(args.n, kBN) > kMaxTiles)
    return "more than 2^30 - 1 tiles of 128 x 128";
  const int32_t g = args.groups.count;
  if (args.groups.offsets[g] > args.groups.offsets[0]) {
    if (const char* why = wg::map_problem(map_a_of(args), reinterpret_cast<uintptr_t>(a)))
      return why;
  }
  return wg::map_problem(map_b_of(args), reinterpret_cast<uintptr_t>(b));
}

const char* wgmma_refusal_k(const GroupedK& args, const void* a, const void* b) {
  if (encode_fn() == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  if (!aligned16(a) || !aligned16(b)) return "a or b is not 16-byte aligned (TMA)";
  if (args.groups.padded_rows() >= (int64_t(1) << 31) || args.n >= (int64_t(1) << 31) ||
      args.k >= (int64_t(1) << 31))
    return "a dimension reaches 2^31 (TMA coordinates are 32-bit)";
  if (int64_t(args.groups.count) * nep::gemm::ceil_div(args.n, kBM) *
          nep::gemm::ceil_div(args.k, kBN) >
      kMaxTiles)
    return "more than 2^30 - 1 tiles of 128 x 128";
  if (args.groups.padded_rows() == 0) return nullptr;  // no map: every C_g is written as zeros
  if (const char* why = wg::map_problem(map_a_of(args), reinterpret_cast<uintptr_t>(a))) return why;
  return wg::map_problem(map_b_of(args), reinterpret_cast<uintptr_t>(b));
}

void launch_wgmma_grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa,
                            const uint8_t* b, const uint8_t* sb, void* c, cudaStream_t stream) {
  const GroupTable table = make_group_table(args.groups, kBM);
  const int32_t tiles = table.tile_prefix[args.groups.count];
  if (tiles == 0) return;
  const CUtensorMap map_a = make_map("a", a, map_a_of(args));
  const CUtensorMap map_b = make_map("b", b, map_b_of(args));
  const int64_t n_tiles = nep::gemm::ceil_div(args.n, kBN);
  if (int64_t(tiles) * n_tiles > kMaxTiles)
    fail(NEP_ERR_CAPACITY, "grouped GEMM: ", tiles, " row tiles x ", n_tiles,
         " column tiles exceed 2^30 - 1");
  const MParams p{sa,     sb,        static_cast<uint8_t*>(c), args.n,
                  args.k, args.ldsa, int32_t(n_tiles),         args.out_dtype == NEP_GEMM_OUT_BF16};
  const dim3 grid{persistent_ctas(int64_t(tiles) * n_tiles)};
  if (args.format == Format::kFp8Block) {
    allow_smem(wgmma_grouped_m_kernel<Format::kFp8Block>);
    wgmma_grouped_m_kernel<Format::kFp8Block>
        <<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, table, p);
  } else {
    allow_smem(wgmma_grouped_m_kernel<Format::kMxfp8>);
    wgmma_grouped_m_kernel<Format::kMxfp8>
        <<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, table, p);
  }
  check_cuda(cudaGetLastError(), "grouped GEMM (wgmma) kernel launch");
}

void launch_wgmma_grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa,
                            const uint8_t* b, const uint8_t* sb, float* c, cudaStream_t stream) {
  const GroupTable table = make_group_table(args.groups, 0);
  // With Mp = 0 (every group empty; a and b may be null) the kernel only writes zeros and never
  // touches the maps: they stay zero rather than encode a map of nothing.
  CUtensorMap map_a, map_b;
  std::memset(&map_a, 0, sizeof map_a);
  std::memset(&map_b, 0, sizeof map_b);
  if (args.groups.padded_rows() > 0) {
    map_a = make_map("a", a, map_a_of(args));
    map_b = make_map("b", b, map_b_of(args));
  }
  const int64_t n_tiles = nep::gemm::ceil_div(args.n, kBM),
                k_tiles = nep::gemm::ceil_div(args.k, kBN);
  const int64_t tiles = int64_t(args.groups.count) * n_tiles * k_tiles;
  if (tiles == 0) return;
  if (tiles > kMaxTiles)
    fail(NEP_ERR_CAPACITY, "grouped GEMM: ", args.groups.count, " groups x ", n_tiles, " x ",
         k_tiles, " tiles exceed 2^30 - 1");
  const KParams p{sa, sb, c, args.n, args.k, int32_t(n_tiles), int32_t(k_tiles)};
  const dim3 grid{persistent_ctas(tiles)};
  if (args.format == Format::kFp8Block) {
    allow_smem(wgmma_grouped_k_kernel<Format::kFp8Block>);
    wgmma_grouped_k_kernel<Format::kFp8Block>
        <<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, table, p);
  } else {
    allow_smem(wgmma_grouped_k_kernel<Format::kMxfp8>);
    wgmma_grouped_k_kernel<Format::kMxfp8>
        <<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, table, p);
  }
  check_cuda(cudaGetLastError(), "grouped GEMM (wgmma) kernel launch");
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep
