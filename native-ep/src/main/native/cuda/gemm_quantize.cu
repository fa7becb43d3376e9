// Quantisers of the grouped FP8 GEMMs on the GPU (gemm_kernels.h): rows (and strided rows, for
// the transposed MXFP8 weights), FP8_BLOCK weight blocks, and the K-grouped operands. Each element
// and scale follows the CPU codec's rule (gemm_device.cuh), so the bytes equal the CPU path's.
#include <algorithm>

#include "gemm_device.cuh"
#include "gemm_kernels.h"
#include "host_utils.h"

namespace nep {
namespace cuda {
namespace gemm {
namespace {

constexpr int kUnit = 128;  // elements a warp quantises at once: one FP8 block or four MX blocks

unsigned grid_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return (unsigned)std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20);
}

// Quantises the 128 elements v[j] = element lane + 32 j of a unit (zeros past the row end) and
// writes elements (where i < len) and scales. FP8: one scale; MXFP8: one per 32.
template <Format F>
__device__ __forceinline__ void quantize_unit(const float v[4], int lane, int64_t len, uint8_t* q,
                                              uint8_t* s) {
  if constexpr (F == Format::kFp8Block) {
    uint32_t amax = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) amax = max(amax, finite_abs_bits(v[j]));
    const Fp8Scale sc = fp8_scale(warp_max_u32(amax));
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (lane + 32 * j < len) q[lane + 32 * j] = fp8_element(v[j], sc);
    if (lane == 0) *reinterpret_cast<float*>(s) = sc.scale;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (32 * j >= len) break;  // warp-uniform
      const MxScale sc = mx_scale(warp_max_u32(finite_abs_bits(v[j])));
      if (lane + 32 * j < len) q[lane + 32 * j] = mx_element(v[j], sc);
      if (lane == 0) s[j] = (uint8_t)(sc.shared_exp + 127);
    }
  }
}

// Where quantize_rows_kernel reads a row: a RowSource, or computed by the fused SwiGLU forward
// (row r, element i: silu(y[r, i]) * y[r, k + i], y [rows, 2k]) or backward (y [rows, 2I],
// dh [rows, I], k = 2I: element i < I is dgate, element I + i dup), the computed row also stored
// into out [rows, k] unless it is null.
enum class Source { kRows, kSwiglu, kDswiglu };
struct SwigluSource {
  const float* y;
  const float* dh;
  float* out;
};

template <Format F, Source kSource>
__global__ void quantize_rows_kernel(RowSource src, SwigluSource sw, int64_t rows, int64_t k,
                                     uint8_t* q, uint8_t* s) {
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
      const float* gate = sw.y + r * 2 * k + i0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = lane + 32 * j;
        v[j] = i < len ? swiglu(gate[i], gate[k + i]) : 0.0f;
        if (i < len && sw.out != nullptr) sw.out[r * k + i0 + i] = v[j];
      }
    } else if constexpr (kSource == Source::kDswiglu) {
      const int64_t inter = k / 2;
      const float* gate = sw.y + r * k;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t c = i0 + lane + 32 * j, i = c < inter ? c : c - inter;
        v[j] = 0.0f;
        if (c < k) {
          float dgate, dup;
          dswiglu(gate[i], gate[inter + i], sw.dh[r * inter + i], dgate, dup);
          v[j] = c < inter ? dgate : dup;
          if (sw.out != nullptr) sw.out[r * k + c] = v[j];
        }
      }
    } else {
      const float* row = src.x + (r / src.rows_per_batch) * src.batch_stride +
                         (r % src.rows_per_batch) * src.row_stride;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = lane + 32 * j;
        v[j] = i < len ? row[(i0 + i) * src.elem_stride] : 0.0f;
      }
    }
    const int64_t scale_at = F == Format::kFp8Block ? (i0 / 128) * 4 : i0 / 32;
    quantize_unit<F>(v, lane, len, q + r * k + i0, s + r * scale_row + scale_at);
  }
}

template <Source kSource>
void launch_rows(Format f, const RowSource& src, const SwigluSource& sw, int64_t rows, int64_t k,
                 uint8_t* q, uint8_t* s, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kThreads = 256;
  const int64_t units = rows * ((k + kUnit - 1) / kUnit);
  const unsigned grid = grid_for(units, kThreads / 32);
  if (f == Format::kFp8Block) {
    quantize_rows_kernel<Format::kFp8Block, kSource>
        <<<grid, kThreads, 0, stream>>>(src, sw, rows, k, q, s);
  } else {
    quantize_rows_kernel<Format::kMxfp8, kSource>
        <<<grid, kThreads, 0, stream>>>(src, sw, rows, k, q, s);
  }
  check_cuda(cudaGetLastError(), "quantize rows kernel launch");
}

// One 128x128 block per CTA of 256 threads.
__global__ void quantize_weight_blocks_kernel(const float* w, int64_t n, int64_t k, bool transpose,
                                              uint8_t* q, float* s) {
  const int64_t nbn = (n + 127) / 128, nbk = (k + 127) / 128;
  const int64_t g = blockIdx.z, bn = blockIdx.y, bk = blockIdx.x;
  const int64_t rows = min((int64_t)128, n - bn * 128), cols = min((int64_t)128, k - bk * 128);
  const float* wg = w + g * n * k + (bn * 128) * k + bk * 128;
  uint32_t amax = 0;
  for (int idx = threadIdx.x; idx < 128 * 128; idx += blockDim.x) {
    const int r = idx / 128, c = idx % 128;
    if (r < rows && c < cols) amax = max(amax, finite_abs_bits(wg[r * k + c]));
  }
  __shared__ uint32_t partial[32];
  amax = warp_max_u32(amax);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = amax;
  __syncthreads();
  if (threadIdx.x < 32) {
    uint32_t v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0u;
    v = warp_max_u32(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const Fp8Scale sc = fp8_scale(partial[0]);
  for (int idx = threadIdx.x; idx < 128 * 128; idx += blockDim.x) {
    const int r = idx / 128, c = idx % 128;
    if (r >= rows || c >= cols) continue;
    const int64_t nn = bn * 128 + r, kk = bk * 128 + c;
    const uint8_t e = fp8_element(wg[r * k + c], sc);
    if (transpose) {
      q[g * n * k + kk * n + nn] = e;
    } else {
      q[g * n * k + nn * k + kk] = e;
    }
  }
  if (threadIdx.x == 0) {
    if (transpose) {
      s[(g * nbk + bk) * nbn + bn] = sc.scale;
    } else {
      s[(g * nbn + bn) * nbk + bk] = sc.scale;
    }
  }
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

void launch_quantize_rows(Format f, const RowSource& src, int64_t rows, int64_t k, uint8_t* q,
                          uint8_t* s, cudaStream_t stream) {
  launch_rows<Source::kRows>(f, src, SwigluSource{nullptr, nullptr, nullptr}, rows, k, q, s,
                             stream);
}

void launch_swiglu_quantize_rows(Format f, const float* y, int64_t rows, int64_t inter,
                                 float* h_out, uint8_t* q, uint8_t* s, cudaStream_t stream) {
  launch_rows<Source::kSwiglu>(f, RowSource{nullptr, 1, 0, 0, 0}, SwigluSource{y, nullptr, h_out},
                               rows, inter, q, s, stream);
}

void launch_dswiglu_quantize_rows(Format f, const float* y, const float* dh, int64_t rows,
                                  int64_t inter, float* dy_out, uint8_t* q, uint8_t* s,
                                  cudaStream_t stream) {
  launch_rows<Source::kDswiglu>(f, RowSource{nullptr, 1, 0, 0, 0}, SwigluSource{y, dh, dy_out},
                                rows, 2 * inter, q, s, stream);
}

void launch_quantize_weight_blocks(const float* w, int64_t groups, int64_t n, int64_t k,
                                   bool transpose, uint8_t* q, float* s, cudaStream_t stream) {
  const dim3 grid((unsigned)((k + 127) / 128), (unsigned)((n + 127) / 128), (unsigned)groups);
  if (grid.y > 65535 || grid.z > 65535)
    fail(NEP_ERR_CAPACITY, "quantize weights: n=", n, " and num_groups=", groups,
         " need at most 65535 blocks of 128 rows and 65535 groups");
  quantize_weight_blocks_kernel<<<grid, 256, 0, stream>>>(w, n, k, transpose, q, s);
  check_cuda(cudaGetLastError(), "quantize weight blocks kernel launch");
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
