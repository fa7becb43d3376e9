// Weight quantisers of the grouped FP8 GEMMs on the GPU (gemm_kernels.h): w [G, n, k] float32 into
// q [G, n, k], or w_g^T into q [G, k, n], and the scales of nep_gemm_quantize_weights. Every kernel
// reads w once, in full 128-byte lines (float4 loads where w and the shape allow), and writes q in
// whole lines: the transposes go through shared memory. Elements and scales follow the CPU codec's
// rule (gemm_device.cuh), so the bytes equal the CPU path's.
#include "gemm_kernels.h"
#include "gemm_quantize.cuh"
#include "host_utils.h"

namespace nep {
namespace cuda {
namespace gemm {
namespace {

constexpr int kThreads = 256;  // every kernel here: 8 warps

// FP8_BLOCK, one 128x128 block of group g per CTA. Thread (warp, lane) holds the elements at rows
// 4 (warp + 8 p) + i and columns 4 lane + j (p, i, j < 4; zeros outside the block), so each load
// of a warp covers one 512-byte row segment. With kVec (k and, for kTranspose, n multiples of 4,
// w 16-byte and q 4-byte aligned) those are float4 loads and 4-byte stores, else single elements.
// The block's amax gives its scale (the CPU's rule); then q [G, n, k] takes each thread's row
// words directly, or q [G, k, n] takes column words staged in shared memory: word a of column c
// (its rows 4 a .. 4 a + 3) at c * 32 + (a ^ (c / 4)), the XOR spreading both the staging stores
// and the row reads over the 32 banks; a warp then writes 128 bytes of one output row at a time.
template <bool kVec, bool kTranspose>
__global__ void __launch_bounds__(kThreads, kVec ? 3 : 1)
    quantize_weight_blocks_kernel(const float* w, int64_t n, int64_t k, uint8_t* q, float* s) {
  const int64_t g = blockIdx.z, bn = blockIdx.y, bk = blockIdx.x;
  const int64_t nbn = (n + 127) / 128, nbk = (k + 127) / 128;
  const int rows = (int)min((int64_t)128, n - bn * 128),
            cols = (int)min((int64_t)128, k - bk * 128);
  const float* wb = w + (g * n + bn * 128) * k + bk * 128;
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, c0 = 4 * lane;
  float v[4][4][4];  // [p][i][j]: row 4 (warp + 8 p) + i, column c0 + j
  uint32_t amax = 0;
#pragma unroll
  for (int p = 0; p < 4; ++p) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = 4 * (warp + 8 * p) + i;
      if constexpr (kVec) {
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < rows && c0 < cols) x = __ldg(reinterpret_cast<const float4*>(wb + r * k + c0));
        v[p][i][0] = x.x;
        v[p][i][1] = x.y;
        v[p][i][2] = x.z;
        v[p][i][3] = x.w;
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          v[p][i][j] = r < rows && c0 + j < cols ? wb[r * k + c0 + j] : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) amax = max(amax, finite_abs_bits(v[p][i][j]));
    }
  }
  __shared__ uint32_t warp_amax[kThreads / 32];
  amax = warp_max_u32(amax);
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) amax = max(amax, warp_amax[i]);
  const Fp8Scale sc = fp8_scale(amax);
  if constexpr (!kTranspose) {
    uint8_t* qb = q + (g * n + bn * 128) * k + bk * 128;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = 4 * (warp + 8 * p) + i;
        if (r >= rows) continue;
        const float* e = v[p][i];
        if constexpr (kVec) {
          if (c0 < cols)
            *reinterpret_cast<uint32_t*>(qb + r * k + c0) =
                pack4(fp8_element(e[0], sc), fp8_element(e[1], sc), fp8_element(e[2], sc),
                      fp8_element(e[3], sc));
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (c0 + j < cols) qb[r * k + c0 + j] = fp8_element(e[j], sc);
        }
      }
    }
    if (threadIdx.x == 0) s[(g * nbn + bn) * nbk + bk] = sc.scale;
  } else {
    __shared__ uint32_t staged[128 * 32];
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int a = warp + 8 * p;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        staged[(c0 + j) * 32 + (a ^ lane)] =
            pack4(fp8_element(v[p][0][j], sc), fp8_element(v[p][1][j], sc),
                  fp8_element(v[p][2][j], sc), fp8_element(v[p][3][j], sc));
    }
    __syncthreads();
    uint8_t* qb = q + (g * k + bk * 128) * n + bn * 128;  // row c of the block at qb + c * n
    for (int c = warp; c < cols; c += kThreads / 32) {
      const uint32_t word = staged[c * 32 + (lane ^ (c / 4))];  // rows 4 lane .. 4 lane + 3
      if constexpr (kVec) {
        if (4 * lane < rows) *reinterpret_cast<uint32_t*>(qb + c * n + 4 * lane) = word;
      } else {
#pragma unroll
        for (int b = 0; b < 4; ++b)
          if (4 * lane + b < rows) qb[c * n + 4 * lane + b] = (uint8_t)(word >> (8 * b));
      }
    }
    if (threadIdx.x == 0) s[(g * nbk + bk) * nbn + bn] = sc.scale;
  }
}

// MXFP8 transposed: q_g = w_g^T [k, n], s [G, k, ceil(n / 32)] (1x32 blocks along n). One CTA per
// tile of 128 rows x 32 columns of w_g: read in whole lines into shared memory (with kVec, k a
// multiple of 4 and w 16-byte aligned, as float4: 8 lanes a row, a warp 4 rows), then each warp
// quantises output rows (tile columns) cc = warp, warp + 8, ... as units of 128 elements along n.
// Both shared-memory passes are free of bank conflicts (row stride 33).
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    quantize_weights_t_mx_kernel(const float* w, int64_t n, int64_t k, uint8_t* q, uint8_t* s) {
  __shared__ float tile[128][33];
  const int64_t g = blockIdx.z, i0 = (int64_t)blockIdx.y * 128, j0 = (int64_t)blockIdx.x * 32;
  const int rows = (int)min((int64_t)128, n - i0), cols = (int)min((int64_t)32, k - j0);
  const float* wt = w + (g * n + i0) * k + j0;
  if constexpr (kVec) {
    const int c = 4 * (threadIdx.x % 8);
#pragma unroll
    for (int p = 0; p < 128 / (kThreads / 8); ++p) {
      const int r = threadIdx.x / 8 + (kThreads / 8) * p;
      float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r < rows && c < cols) x = __ldg(reinterpret_cast<const float4*>(wt + r * k + c));
      tile[r][c] = x.x;
      tile[r][c + 1] = x.y;
      tile[r][c + 2] = x.z;
      tile[r][c + 3] = x.w;
    }
  } else {
    for (int idx = threadIdx.x; idx < 128 * 32; idx += kThreads) {
      const int r = idx / 32, c = idx % 32;
      tile[r][c] = r < rows && c < cols ? wt[r * k + c] : 0.0f;
    }
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t scale_row = (n + 31) / 32;
  for (int cc = warp; cc < cols; cc += kThreads / 32) {
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = tile[lane + 32 * j][cc];
    const int64_t row = g * k + j0 + cc;  // of q and s, all groups together
    quantize_unit<Format::kMxfp8>(v, lane, rows, q + row * n + i0, s + row * scale_row + i0 / 32);
  }
}

bool aligned(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

void check_grid(const dim3& grid, int64_t n, int64_t groups, int64_t rows_per_block) {
  if (grid.y > 65535 || grid.z > 65535)
    fail(NEP_ERR_CAPACITY, "quantize weights: n=", n, " and num_groups=", groups,
         " need at most 65535 blocks of ", rows_per_block, " rows and 65535 groups");
}

template <bool kVec>
void launch_blocks(const float* w, int64_t groups, int64_t n, int64_t k, bool transpose, uint8_t* q,
                   float* s, cudaStream_t stream) {
  const dim3 grid((unsigned)((k + 127) / 128), (unsigned)((n + 127) / 128), (unsigned)groups);
  check_grid(grid, n, groups, 128);
  if (transpose) {
    quantize_weight_blocks_kernel<kVec, true><<<grid, kThreads, 0, stream>>>(w, n, k, q, s);
  } else {
    quantize_weight_blocks_kernel<kVec, false><<<grid, kThreads, 0, stream>>>(w, n, k, q, s);
  }
}

}  // namespace

void launch_quantize_weights(Format f, const float* w, int64_t groups, int64_t n, int64_t k,
                             bool transpose, uint8_t* q, uint8_t* s, cudaStream_t stream) {
  if (f == Format::kFp8Block) {
    float* sf = reinterpret_cast<float*>(s);
    const bool vec = aligned(w, 16) && aligned(q, 4) && k % 4 == 0 && (!transpose || n % 4 == 0);
    if (vec) launch_blocks<true>(w, groups, n, k, transpose, q, sf, stream);
    else launch_blocks<false>(w, groups, n, k, transpose, q, sf, stream);
    check_cuda(cudaGetLastError(), "quantize weight blocks kernel launch");
  } else if (!transpose) {
    // MXFP8 rows along k: the row quantiser on the G * n rows of w.
    launch_quantize_rows(f, w, groups * n, k, q, s, stream);
  } else {
    const dim3 grid((unsigned)((k + 31) / 32), (unsigned)((n + 127) / 128), (unsigned)groups);
    check_grid(grid, n, groups, 128);
    if (aligned(w, 16) && k % 4 == 0) {
      quantize_weights_t_mx_kernel<true><<<grid, kThreads, 0, stream>>>(w, n, k, q, s);
    } else {
      quantize_weights_t_mx_kernel<false><<<grid, kThreads, 0, stream>>>(w, n, k, q, s);
    }
    check_cuda(cudaGetLastError(), "quantize weights t mx kernel launch");
  }
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep
