// Portable tier of the grouped FP8 GEMMs (gemm_api.h): mma.sync m16n8k32 e4m3 with fp32
// accumulators (sm_89 and newer), written to be obviously correct: it is the GPU oracle of the
// Hopper tier and the fallback for every shape. A CTA of 4 warps computes a 64x64 tile of C; each
// 128-wide stage of the reduction is staged through shared memory (rows padded to 144 bytes so
// the fragment loads hit distinct banks), multiplied into fresh partial accumulators and promoted
// into the fp32 accumulators once per scale block, exactly as the CPU path's formula says.
#include <algorithm>

#include "gemm_device.cuh"
#include "gemm_kernels.h"
#include "host_utils.h"

namespace nep {
namespace cuda {
namespace gemm {
namespace {

constexpr int kTile = 64;               // rows and columns of a CTA's tile of C
constexpr int kStage = 128;             // reduction elements per stage (one FP8_BLOCK block)
constexpr int kRowBytes = kStage + 16;  // shared-memory row pitch
constexpr int kThreads = 128;

// One operand of a CTA's tile: `rows` rows (<= 64) from `base` (row 0, reduction index 0) with
// `ld` bytes between rows, and their scales from `scales` with `lds` bytes between rows (0: every
// row shares one row of scales, the FP8_BLOCK weight block of the tile).
struct Operand {
  const uint8_t* base;
  int64_t ld;
  int rows;
  const uint8_t* scales;
  int64_t lds;
};

struct TileJob {
  Operand a, b;
  int64_t len;  // reduction length
  uint8_t* c;   // element (0, 0) of the tile
  int64_t ldc;  // elements between rows of C
  bool bf16;
  bool vec;  // 16-byte loads: every base and ld 16-byte aligned
};

struct Smem {
  alignas(16) uint8_t a[kTile][kRowBytes];
  alignas(16) uint8_t b[kTile][kRowBytes];
  float sa[kTile];  // FP8_BLOCK: the stage's scale per row
  float sb[kTile];
  uint8_t ea[kTile][4];  // MXFP8: the stage's four E8M0 bytes per row
  uint8_t eb[kTile][4];
};

__device__ __forceinline__ void load_stage(uint8_t (*dst)[kRowBytes], const Operand& op, int64_t k0,
                                           int64_t len, bool vec) {
  for (int chunk = threadIdx.x; chunk < kTile * (kStage / 16); chunk += kThreads) {
    const int r = chunk / (kStage / 16), col = (chunk % (kStage / 16)) * 16;
    const int64_t kk = k0 + col;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < op.rows && kk < len) {
      const uint8_t* p = op.base + r * op.ld + kk;
      if (vec && kk + 16 <= len) {
        v = __ldg(reinterpret_cast<const uint4*>(p));
      } else {
        uint8_t bytes[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) bytes[i] = kk + i < len ? p[i] : 0;
        memcpy(&v, bytes, 16);
      }
    }
    *reinterpret_cast<uint4*>(&dst[r][col]) = v;
  }
}

template <Format F>
__device__ __forceinline__ void load_scales(float* s, uint8_t (*e)[4], const Operand& op,
                                            int64_t stage, int64_t k0, int64_t len) {
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    if (r >= op.rows) continue;
    const uint8_t* row = op.scales + r * op.lds;
    if constexpr (F == Format::kFp8Block) {
      s[r] = reinterpret_cast<const float*>(row)[stage];
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) e[r][j] = k0 + 32 * j < len ? row[stage * 4 + j] : 127;
    }
  }
}

__device__ __forceinline__ void mma_e4m3(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t lds32(const uint8_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Partial products of one 32-wide step ks of the stage into part (warp tile 32x32).
__device__ __forceinline__ void mma_step(const Smem& sm, int ks, int wm, int wn, int lane,
                                         float part[2][4][4]) {
  const int g = lane >> 2, t = lane & 3, kc = ks * 32 + t * 4;
  uint32_t a[2][4], b[4][2];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
    const int r = wm * 32 + mi * 16 + g;
    a[mi][0] = lds32(&sm.a[r][kc]);
    a[mi][1] = lds32(&sm.a[r + 8][kc]);
    a[mi][2] = lds32(&sm.a[r][kc + 16]);
    a[mi][3] = lds32(&sm.a[r + 8][kc + 16]);
  }
#pragma unroll
  for (int ni = 0; ni < 4; ++ni) {
    const int r = wn * 32 + ni * 8 + g;
    b[ni][0] = lds32(&sm.b[r][kc]);
    b[ni][1] = lds32(&sm.b[r][kc + 16]);
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) mma_e4m3(part[mi][ni], a[mi], b[ni]);
}

// Row and column in the tile of accumulator element e of fragment (mi, ni).
__device__ __forceinline__ int frag_row(int wm, int mi, int lane, int e) {
  return wm * 32 + mi * 16 + (lane >> 2) + (e >= 2 ? 8 : 0);
}
__device__ __forceinline__ int frag_col(int wn, int ni, int lane, int e) {
  return wn * 32 + ni * 8 + (lane & 3) * 2 + (e & 1);
}

template <Format F>
__device__ void run_tile(const TileJob& job) {
  __shared__ Smem sm;
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int wm = warp / 2, wn = warp % 2;
  float acc[2][4][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
  const int64_t stages = (job.len + kStage - 1) / kStage;
  for (int64_t st = 0; st < stages; ++st) {
    const int64_t k0 = st * kStage;
    load_stage(sm.a, job.a, k0, job.len, job.vec);
    load_stage(sm.b, job.b, k0, job.len, job.vec);
    load_scales<F>(sm.sa, sm.ea, job.a, st, k0, job.len);
    load_scales<F>(sm.sb, sm.eb, job.b, st, k0, job.len);
    __syncthreads();
    float part[2][4][4];
    if constexpr (F == Format::kFp8Block) {
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) part[mi][ni][e] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kStage / 32; ++ks) mma_step(sm, ks, wm, wn, lane, part);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float sa = sm.sa[frag_row(wm, mi, lane, e)];
            const float sb = sm.sb[frag_col(wn, ni, lane, e)];
            acc[mi][ni][e] = promote_fp8(acc[mi][ni][e], part[mi][ni][e], sa, sb);
          }
    } else {
      for (int ks = 0; ks < kStage / 32; ++ks) {
        if (k0 + 32 * ks >= job.len) break;  // uniform: no MX block there
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) part[mi][ni][e] = 0.0f;
        mma_step(sm, ks, wm, wn, lane, part);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const uint32_t ea = sm.ea[frag_row(wm, mi, lane, e)][ks];
              const uint32_t eb = sm.eb[frag_col(wn, ni, lane, e)][ks];
              acc[mi][ni][e] = promote_mx(acc[mi][ni][e], part[mi][ni][e], ea, eb);
            }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = frag_row(wm, mi, lane, e), c = frag_col(wn, ni, lane, e);
        if (r >= job.a.rows || c >= job.b.rows) continue;
        const int64_t at = r * job.ldc + c;
        if (job.bf16) {
          reinterpret_cast<uint16_t*>(job.c)[at] = bf16_bits(acc[mi][ni][e]);
        } else {
          reinterpret_cast<float*>(job.c)[at] = acc[mi][ni][e];
        }
      }
}

struct MParams {
  const uint8_t *a, *sa, *b, *sb;
  uint8_t* c;
  int64_t n, k, lda, ldsa;
  bool bf16, vec;
};

template <Format F>
__global__ void __launch_bounds__(kThreads)
    mma_grouped_m_kernel(const __grid_constant__ GroupTable t, const MParams p) {
  const int32_t tile = blockIdx.x;
  int lo = 0, hi = t.count - 1;  // the last group whose first tile is at or before this one
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (t.tile_prefix[mid] <= tile) lo = mid;
    else hi = mid - 1;
  }
  const int g = lo;
  const int64_t row0 = t.offsets[g] + (int64_t)(tile - t.tile_prefix[g]) * kTile;
  const int64_t n0 = (int64_t)blockIdx.y * kTile;
  const int64_t nkb = nep::gemm::ceil_div(p.k, F == Format::kFp8Block ? 128 : 32);
  TileJob job;
  job.a = {p.a + row0 * p.lda, p.lda, (int)min((int64_t)kTile, t.offsets[g + 1] - row0),
           p.sa + row0 * p.ldsa, p.ldsa};
  const uint8_t* bg = p.b + (int64_t)g * p.n * p.k;
  const uint8_t* sbg = p.sb + (int64_t)g * nep::gemm::weight_scale_bytes(F, p.n, p.k);
  if constexpr (F == Format::kFp8Block) {
    job.b = {bg + n0 * p.k, p.k, (int)min((int64_t)kTile, p.n - n0), sbg + (n0 / 128) * nkb * 4, 0};
  } else {
    job.b = {bg + n0 * p.k, p.k, (int)min((int64_t)kTile, p.n - n0), sbg + n0 * nkb, nkb};
  }
  job.len = p.k;
  job.c = p.c + (row0 * p.n + n0) * (p.bf16 ? 2 : 4);
  job.ldc = p.n;
  job.bf16 = p.bf16;
  job.vec = p.vec;
  run_tile<F>(job);
}

struct KParams {
  const uint8_t *a, *sa, *b, *sb;
  float* c;
  int64_t n, k;
  bool vec;
};

template <Format F>
__global__ void __launch_bounds__(kThreads)
    mma_grouped_k_kernel(const __grid_constant__ GroupTable t, const KParams p) {
  const int g = blockIdx.z;
  const int64_t n0 = (int64_t)blockIdx.y * kTile, k0 = (int64_t)blockIdx.x * kTile;
  const int64_t mp = t.padded[t.count], p0 = t.padded[g], len = t.padded[g + 1] - p0;
  const int rows_a = (int)min((int64_t)kTile, p.n - n0),
            rows_b = (int)min((int64_t)kTile, p.k - k0);
  float* c = p.c + (int64_t)g * p.n * p.k + n0 * p.k + k0;
  if (len == 0) {  // an empty group's gradient is zero
    for (int i = threadIdx.x; i < kTile * kTile; i += kThreads)
      if (i / kTile < rows_a && i % kTile < rows_b) c[(i / kTile) * p.k + i % kTile] = 0.0f;
    return;
  }
  const int64_t block = F == Format::kFp8Block ? 128 : 32, ssize = F == Format::kFp8Block ? 4 : 1;
  const int64_t scale_row = mp / block * ssize, scale0 = p0 / block * ssize;
  TileJob job;
  job.a = {p.a + n0 * mp + p0, mp, rows_a, p.sa + n0 * scale_row + scale0, scale_row};
  job.b = {p.b + k0 * mp + p0, mp, rows_b, p.sb + k0 * scale_row + scale0, scale_row};
  job.len = len;
  job.c = reinterpret_cast<uint8_t*>(c);
  job.ldc = p.k;
  job.bf16 = false;
  job.vec = p.vec;
  run_tile<F>(job);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void launch_mma_grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa,
                          const uint8_t* b, const uint8_t* sb, void* c, cudaStream_t stream) {
  const GroupTable table = make_group_table(args.groups, kTile);
  const int32_t tiles = table.tile_prefix[args.groups.count];
  if (tiles == 0) return;
  const int64_t n_tiles = nep::gemm::ceil_div(args.n, kTile);
  if (n_tiles > 65535) fail(NEP_ERR_CAPACITY, "grouped GEMM: n=", args.n, " is above 65535 * 64");
  MParams p{a,
            sa,
            b,
            sb,
            static_cast<uint8_t*>(c),
            args.n,
            args.k,
            args.lda,
            args.ldsa,
            args.out_dtype == NEP_GEMM_OUT_BF16,
            aligned16(a) && aligned16(b) && args.lda % 16 == 0 && args.k % 16 == 0};
  const dim3 grid((unsigned)tiles, (unsigned)n_tiles);
  if (args.format == Format::kFp8Block) {
    mma_grouped_m_kernel<Format::kFp8Block><<<grid, kThreads, 0, stream>>>(table, p);
  } else {
    mma_grouped_m_kernel<Format::kMxfp8><<<grid, kThreads, 0, stream>>>(table, p);
  }
  check_cuda(cudaGetLastError(), "grouped GEMM (mma.sync) kernel launch");
}

void launch_mma_grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa,
                          const uint8_t* b, const uint8_t* sb, float* c, cudaStream_t stream) {
  const GroupTable table = make_group_table(args.groups, 0);
  const int64_t n_tiles = nep::gemm::ceil_div(args.n, kTile),
                k_tiles = nep::gemm::ceil_div(args.k, kTile);
  if (n_tiles > 65535 || k_tiles > 65535)
    fail(NEP_ERR_CAPACITY, "grouped GEMM: n=", args.n, " and k=", args.k,
         " must be at most 65535 * 64");
  KParams p{a, sa, b, sb, c, args.n, args.k, aligned16(a) && aligned16(b)};
  const dim3 grid((unsigned)k_tiles, (unsigned)n_tiles, (unsigned)args.groups.count);
  if (args.format == Format::kFp8Block) {
    mma_grouped_k_kernel<Format::kFp8Block><<<grid, kThreads, 0, stream>>>(table, p);
  } else {
    mma_grouped_k_kernel<Format::kMxfp8><<<grid, kThreads, 0, stream>>>(table, p);
  }
  check_cuda(cudaGetLastError(), "grouped GEMM (mma.sync) kernel launch");
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep
