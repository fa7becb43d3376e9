// Quantisers of the CPU GEMM path (gemm_cpu.h). Rows go through the wire encoder itself
// (encode_row), so their bytes are the wire's by construction; 128x128 weight blocks apply the
// same scale rule and element conversion (codec.h) to a block's amax.
#include <algorithm>
#include <cstring>
#include <vector>

#include "codec.h"
#include "codec_kernels.h"
#include "gemm_cpu.h"

namespace nep {
namespace gemm {
namespace {

Wire wire_of(Format f) { return f == Format::kFp8Block ? Wire::kFp8 : Wire::kMxfp8; }

// One row through the wire encoder, its elements to q and its scales to s.
void quantize_row(Format f, const float* x, int64_t k, uint8_t* q, uint8_t* s,
                  std::vector<uint8_t>& scratch) {
  const int64_t bytes = wire_row_bytes(wire_of(f), k);
  scratch.resize(static_cast<size_t>(bytes));
  encode_row(wire_of(f), x, k, scratch.data());
  std::memcpy(q, scratch.data(), static_cast<size_t>(k));
  std::memcpy(s, scratch.data() + k, static_cast<size_t>(bytes - k));
}

// FP8_BLOCK weights of one group [n, k]: one fp32 scale per 128x128 block, the wire's rule
// (scale = max(amax, floor) / 448, element = e4m3(x * (448 / amax))) over the block's amax.
void quantize_blocks(const float* w, int64_t n, int64_t k, uint8_t* q, float* s) {
  const int64_t kb_count = ceil_div(k, kFp8Block);
  for (int64_t n0 = 0; n0 < n; n0 += kFp8Block) {
    const int64_t rows = std::min(kFp8Block, n - n0);
    for (int64_t k0 = 0; k0 < k; k0 += kFp8Block) {
      const int64_t cols = std::min(kFp8Block, k - k0);
      uint32_t amax_bits = 0;
      for (int64_t r = 0; r < rows; ++r)
        amax_bits = std::max(amax_bits, finite_amax_bits(w + (n0 + r) * k + k0, cols));
      const float amax = bits_float(std::max(amax_bits, kFp8AmaxFloorBits));
      const float inv_scale = 448.0f / amax;
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = w + (n0 + r) * k + k0;
        uint8_t* dst = q + (n0 + r) * k + k0;
        for (int64_t i = 0; i < cols; ++i) dst[i] = e4m3_from_float(src[i] * inv_scale);
      }
      s[(n0 / kFp8Block) * kb_count + k0 / kFp8Block] = amax / 448.0f;
    }
  }
}

// One group's weight [n, k] (k the reduction axis) -> q [n, k], s.
void quantize_weight(Format f, const float* w, int64_t n, int64_t k, uint8_t* q, uint8_t* s) {
  if (f == Format::kFp8Block) {
    quantize_blocks(w, n, k, q, reinterpret_cast<float*>(s));
    return;
  }
  const int64_t sbytes = row_scale_bytes(f, k);
  parallel_rows(n, k, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> scratch;
    for (int64_t r = begin; r < end; ++r)
      quantize_row(f, w + r * k, k, q + r * k, s + r * sbytes, scratch);
  });
}

}  // namespace

void quantize_rows(Format f, const float* x, int64_t m, int64_t k, uint8_t* q, uint8_t* s) {
  const int64_t sbytes = row_scale_bytes(f, k);
  parallel_rows(m, k, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> scratch;
    for (int64_t r = begin; r < end; ++r)
      quantize_row(f, x + r * k, k, q + r * k, s + r * sbytes, scratch);
  });
}

void swiglu_quantize_rows(Format f, const float* y, int64_t m, int64_t inter, float* h_out,
                          uint8_t* q, uint8_t* s) {
  const int64_t sbytes = row_scale_bytes(f, inter);
  parallel_rows(m, inter * 8, [&](int64_t begin, int64_t end) {
    std::vector<float> h(static_cast<size_t>(inter));
    std::vector<uint8_t> scratch;
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = y + r * 2 * inter;
      const float* up = gate + inter;
      for (int64_t i = 0; i < inter; ++i) h[i] = swiglu(gate[i], up[i]);
      if (h_out != nullptr)
        std::memcpy(h_out + r * inter, h.data(), static_cast<size_t>(inter) * 4);
      quantize_row(f, h.data(), inter, q + r * inter, s + r * sbytes, scratch);
    }
  });
}

void dswiglu_quantize_rows(Format f, const float* y, const float* dh, int64_t m, int64_t inter,
                           float* dy_out, uint8_t* q, uint8_t* s) {
  const int64_t k = 2 * inter, sbytes = row_scale_bytes(f, k);
  parallel_rows(m, k * 8, [&](int64_t begin, int64_t end) {
    std::vector<float> dy(static_cast<size_t>(k));
    std::vector<uint8_t> scratch;
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = y + r * k;
      for (int64_t i = 0; i < inter; ++i)
        dswiglu(gate[i], gate[inter + i], dh[r * inter + i], dy[i], dy[inter + i]);
      if (dy_out != nullptr) std::memcpy(dy_out + r * k, dy.data(), static_cast<size_t>(k) * 4);
      quantize_row(f, dy.data(), k, q + r * k, s + r * sbytes, scratch);
    }
  });
}

void quantize_weights(Format f, const float* w, int64_t groups, int64_t n, int64_t k,
                      bool transpose, uint8_t* q, uint8_t* s) {
  const int64_t rows = transpose ? k : n, cols = transpose ? n : k;
  const int64_t sbytes = weight_scale_bytes(f, rows, cols);
  std::vector<float> wt;
  for (int64_t g = 0; g < groups; ++g) {
    const float* src = w + g * n * k;
    if (transpose) {
      // w_g^T [k, n]; FP8_BLOCK gets the same blocks (amax and elements are transpose-invariant).
      wt.resize(static_cast<size_t>(n * k));
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) wt[j * n + i] = src[i * k + j];
      src = wt.data();
    }
    quantize_weight(f, src, rows, cols, q + g * n * k, s + g * sbytes);
  }
}

void quantize_rows_t_grouped(Format f, const float* x, int64_t c, const Groups& groups, uint8_t* q,
                             uint8_t* s) {
  const int64_t mp = groups.padded_rows();
  const int64_t block = block_of(f), ssize = scale_size(f);
  const int64_t scale_row = mp / block * ssize;  // scale bytes per row of q
  for (int32_t g = 0; g < groups.count; ++g) {
    const int64_t rows = groups.rows(g);
    const int64_t padded = groups.padded[g + 1] - groups.padded[g];
    if (padded == 0) continue;
    const float* xg = x + groups.offsets[g] * c;
    parallel_rows(c, padded, [&](int64_t begin, int64_t end) {
      std::vector<float> column(static_cast<size_t>(padded), 0.0f);
      std::vector<uint8_t> scratch;
      for (int64_t col = begin; col < end; ++col) {
        for (int64_t r = 0; r < rows; ++r) column[r] = xg[r * c + col];
        quantize_row(f, column.data(), padded, q + col * mp + groups.padded[g],
                     s + col * scale_row + groups.padded[g] / block * ssize, scratch);
      }
    });
  }
}

}  // namespace gemm
}  // namespace nep
