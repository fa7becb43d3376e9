// Quantisers of the grouped FP8 GEMMs' activations on the GPU (gemm_kernels.h): rows (plain, or
// computed by the fused SwiGLU forward or backward) and the K-grouped token-transposed operands.
// Each element and scale follows the CPU codec's rule (gemm_device.cuh), so the bytes equal the CPU
// path's. The weights' quantisers are gemm_quantize_weights.cu's.
#include <algorithm>

#include "gemm_kernels.h"
#include "gemm_quantize.cuh"
#include "host_utils.h"

namespace nep {
namespace cuda {
namespace gemm {
namespace {

unsigned grid_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return (unsigned)std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20);
}

// What quantize_rows_kernel quantises: the rows of x [rows, k], or rows computed by the fused
// SwiGLU forward (x = y [rows, 2k]; row r, element i: silu(y[r, i]) * y[r, k + i]) or backward
// (x = y [rows, 2I], dh [rows, I], k = 2I: element i < I is dgate, element I + i dup), the computed
// row also stored into out [rows, k] unless it is null.
enum class Source { kRows, kSwiglu, kDswiglu };
struct RowInput {
  const float* x;
  const float* dh;
  float* out;
};

template <Format F, Source kSource>
__global__ void quantize_rows_kernel(RowInput in, int64_t rows, int64_t k, uint8_t* q, uint8_t* s) {
  const int lane = threadIdx.x & 31;
  const int64_t units_per_row = (k + kUnit - 1) / kUnit;
  const int64_t units = rows * units_per_row;
  const int64_t scale_row = nep::gemm::row_scale_bytes(F, k);
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t u = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; u < units;
       u += warps) {
    const int64_t r = u / units_per_row, i0 = (u % units_per_row) * kUnit;
    const int64_t len = min((int64_t)kUnit, k - i0);
    float v[4];
    if constexpr (kSource == Source::kSwiglu) {
      const float* gate = in.x + r * 2 * k + i0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = lane + 32 * j;
        v[j] = i < len ? swiglu(gate[i], gate[k + i]) : 0.0f;
        if (i < len && in.out != nullptr) in.out[r * k + i0 + i] = v[j];
      }
    } else if constexpr (kSource == Source::kDswiglu) {
      const int64_t inter = k / 2;
      const float* gate = in.x + r * k;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t c = i0 + lane + 32 * j, i = c < inter ? c : c - inter;
        v[j] = 0.0f;
        if (c < k) {
          float dgate, dup;
          dswiglu(gate[i], gate[inter + i], in.dh[r * inter + i], dgate, dup);
          v[j] = c < inter ? dgate : dup;
          if (in.out != nullptr) in.out[r * k + c] = v[j];
        }
      }
    } else {
      const float* row = in.x + r * k + i0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = lane + 32 * j;
        v[j] = i < len ? row[i] : 0.0f;
      }
    }
    const int64_t scale_at = F == Format::kFp8Block ? (i0 / 128) * 4 : i0 / 32;
    quantize_unit<F>(v, lane, len, q + r * k + i0, s + r * scale_row + scale_at);
  }
}

constexpr int kUnitsPerWarp = 4;

// Rows of x [rows, k] with k a multiple of 4, x 16-byte and q 4-byte aligned: each lane loads four
// consecutive elements of a unit as one float4 and stores their bytes as one word, and a warp
// takes kUnitsPerWarp consecutive units (of the rows flattened) at once, their loads issued
// together. Only the first unit's position is divided out; the next ones step from it.
template <Format F>
__global__ void __launch_bounds__(256)
    quantize_rows_vec_kernel(const float* x, int64_t rows, int64_t k, uint8_t* q, uint8_t* s) {
  const int lane = threadIdx.x & 31;
  const int64_t units_per_row = (k + kUnit - 1) / kUnit;
  const int64_t units = rows * units_per_row;
  const int64_t scale_row = nep::gemm::row_scale_bytes(F, k);
  const int64_t step = (int64_t)gridDim.x * (blockDim.x / 32) * kUnitsPerWarp;
  for (int64_t u0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * kUnitsPerWarp;
       u0 < units; u0 += step) {
    int64_t r[kUnitsPerWarp], i0[kUnitsPerWarp];
    float4 v[kUnitsPerWarp];
    r[0] = u0 / units_per_row;
    i0[0] = (u0 - r[0] * units_per_row) * kUnit;
#pragma unroll
    for (int t = 0; t < kUnitsPerWarp; ++t) {
      if (t > 0) {
        r[t] = r[t - 1];
        i0[t] = i0[t - 1] + kUnit;
        if (i0[t] >= k) {
          r[t] += 1;
          i0[t] = 0;
        }
      }
      v[t] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (u0 + t < units && i0[t] + 4 * lane < k)
        v[t] = __ldg(reinterpret_cast<const float4*>(x + r[t] * k + i0[t] + 4 * lane));
    }
#pragma unroll
    for (int t = 0; t < kUnitsPerWarp; ++t) {
      if (u0 + t >= units) break;  // warp-uniform
      const int64_t scale_at = F == Format::kFp8Block ? (i0[t] / 128) * 4 : i0[t] / 32;
      quantize_unit4<F>(v[t], lane, k - i0[t], q + r[t] * k + i0[t],
                        s + r[t] * scale_row + scale_at);
    }
  }
}

template <Source kSource>
void launch_rows(Format f, const RowInput& in, int64_t rows, int64_t k, uint8_t* q, uint8_t* s,
                 cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kThreads = 256;
  const int64_t units = rows * ((k + kUnit - 1) / kUnit);
  const bool vec = kSource == Source::kRows && k % 4 == 0 &&
                   (reinterpret_cast<uintptr_t>(in.x) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(q) & 3) == 0;
  if (vec) {
    const unsigned grid = grid_for(units, kThreads / 32 * kUnitsPerWarp);
    if (f == Format::kFp8Block) {
      quantize_rows_vec_kernel<Format::kFp8Block>
          <<<grid, kThreads, 0, stream>>>(in.x, rows, k, q, s);
    } else {
      quantize_rows_vec_kernel<Format::kMxfp8><<<grid, kThreads, 0, stream>>>(in.x, rows, k, q, s);
    }
  } else {
    const unsigned grid = grid_for(units, kThreads / 32);
    if (f == Format::kFp8Block) {
      quantize_rows_kernel<Format::kFp8Block, kSource>
          <<<grid, kThreads, 0, stream>>>(in, rows, k, q, s);
    } else {
      quantize_rows_kernel<Format::kMxfp8, kSource>
          <<<grid, kThreads, 0, stream>>>(in, rows, k, q, s);
    }
  }
  check_cuda(cudaGetLastError(), "quantize rows kernel launch");
}

// One CTA of 256 threads per (128-token tile of the padded layout, 32 columns): the tile is
// transposed through shared memory so reads of x and writes of q are both coalesced.
template <Format F>
__global__ void quantize_rows_t_grouped_kernel(const __grid_constant__ GroupTable table,
                                               const float* x, int64_t c, uint8_t* q, uint8_t* s) {
  __shared__ float tile[128][33];
  const int64_t mp = table.padded[table.count];
  const int64_t t0 = (int64_t)blockIdx.x * 128, c0 = (int64_t)blockIdx.y * 32;
  int lo = 0, hi = table.count - 1;  // the group whose padded range holds t0
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table.padded[mid] <= t0) lo = mid;
    else hi = mid - 1;
  }
  const int g = lo;
  const int64_t local0 = t0 - table.padded[g];
  const int64_t rows = table.offsets[g + 1] - table.offsets[g];
  for (int idx = threadIdx.x; idx < 128 * 32; idx += blockDim.x) {
    const int tt = idx / 32, cc = idx % 32;
    const int64_t local = local0 + tt;
    tile[tt][cc] =
        (local < rows && c0 + cc < c) ? x[(table.offsets[g] + local) * c + c0 + cc] : 0.0f;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t block = F == Format::kFp8Block ? 128 : 32;
  const int64_t ssize = F == Format::kFp8Block ? 4 : 1;
  for (int cc = warp; cc < 32; cc += blockDim.x / 32) {
    const int64_t col = c0 + cc;
    if (col >= c) break;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = tile[lane + 32 * j][cc];
    quantize_unit<F>(v, lane, 128, q + col * mp + t0,
                     s + (col * (mp / block) + t0 / block) * ssize);
  }
}

}  // namespace

GroupTable make_group_table(const Groups& groups, int64_t tile_rows) {
  GroupTable t{};
  t.count = groups.count;
  int64_t tiles = 0;
  for (int32_t g = 0; g <= groups.count; ++g) {
    t.offsets[g] = groups.offsets[g];
    t.padded[g] = groups.padded[g];
    t.tile_prefix[g] = (int32_t)tiles;
    if (g < groups.count && tile_rows > 0) tiles += (groups.rows(g) + tile_rows - 1) / tile_rows;
  }
  if (tiles > INT32_MAX / 2)
    fail(NEP_ERR_CAPACITY, "grouped GEMM: ", tiles, " row tiles, more than 2^30");
  return t;
}

void launch_quantize_rows(Format f, const float* x, int64_t rows, int64_t k, uint8_t* q, uint8_t* s,
                          cudaStream_t stream) {
  launch_rows<Source::kRows>(f, RowInput{x, nullptr, nullptr}, rows, k, q, s, stream);
}

void launch_swiglu_quantize_rows(Format f, const float* y, int64_t rows, int64_t inter,
                                 float* h_out, uint8_t* q, uint8_t* s, cudaStream_t stream) {
  launch_rows<Source::kSwiglu>(f, RowInput{y, nullptr, h_out}, rows, inter, q, s, stream);
}

void launch_dswiglu_quantize_rows(Format f, const float* y, const float* dh, int64_t rows,
                                  int64_t inter, float* dy_out, uint8_t* q, uint8_t* s,
                                  cudaStream_t stream) {
  launch_rows<Source::kDswiglu>(f, RowInput{y, dh, dy_out}, rows, 2 * inter, q, s, stream);
}

void launch_quantize_rows_t_grouped(Format f, const float* x, int64_t c, const Groups& groups,
                                    uint8_t* q, uint8_t* s, cudaStream_t stream) {
  const int64_t mp = groups.padded_rows();
  if (mp == 0) return;
  const dim3 grid((unsigned)(mp / 128), (unsigned)((c + 31) / 32));
  if (grid.y > 65535)
    fail(NEP_ERR_CAPACITY, "quantize rows t grouped: c=", c, " is above 65535 * 32");
  const GroupTable table = make_group_table(groups, 0);
  if (f == Format::kFp8Block) {
    quantize_rows_t_grouped_kernel<Format::kFp8Block><<<grid, 256, 0, stream>>>(table, x, c, q, s);
  } else {
    quantize_rows_t_grouped_kernel<Format::kMxfp8><<<grid, 256, 0, stream>>>(table, x, c, q, s);
  }
  check_cuda(cudaGetLastError(), "quantize rows t grouped kernel launch");
}

}  // namespace gemm
}  // namespace cuda
}  // namespace nep
