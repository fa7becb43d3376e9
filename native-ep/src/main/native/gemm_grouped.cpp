// Grouped GEMMs of the CPU path (gemm_cpu.h), the oracle of the GPU kernels. Each K-block's
// partial sum is computed exactly (e4m3 values are multiples of 2^-9 below 2^9, so a product is
// a multiple of 2^-18 below 2^18 and a block of at most 128 sums exactly in a double) and rounded
// once to fp32, then promoted into the fp32 accumulator as gemm_api.h specifies.
#include <cmath>
#include <cstring>
#include <vector>

#include "codec.h"
#include "gemm_cpu.h"

namespace nep {
namespace gemm {
namespace {

// e4m3 codes -> float, unscaled (NaN codes stay NaN).
struct E4m3Table {
  float value[256];
  E4m3Table() {
    for (int i = 0; i < 256; ++i) value[i] = e4m3_to_float(static_cast<uint8_t>(i));
  }
};

const E4m3Table& table() {
  static const E4m3Table t;
  return t;
}

void widen(const uint8_t* q, int64_t count, float* out) {
  const float* v = table().value;
  for (int64_t i = 0; i < count; ++i) out[i] = v[q[i]];
}

// The exact sum of x[i] * y[i] over [0, count), rounded once to float.
inline float block_dot(const float* x, const float* y, int64_t count) {
  double p = 0.0;
  for (int64_t i = 0; i < count; ++i) p += static_cast<double>(x[i]) * static_cast<double>(y[i]);
  return static_cast<float>(p);
}

inline float read_f32(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, sizeof f);
  return f;
}

}  // namespace

float promote_fp8(float acc, float p, float sa, float sb) {
  const float scale = sa * sb;
  const float scaled = p * scale;
  return acc + scaled;
}

float promote_mx(float acc, float p, uint8_t ea, uint8_t eb) {
  if (ea == 0xFF || eb == 0xFF) return std::nanf("");
  return acc + std::ldexp(p, static_cast<int>(ea) + static_cast<int>(eb) - 254);
}

void grouped_m(const GroupedM& args, const uint8_t* a, const uint8_t* sa, const uint8_t* b,
               const uint8_t* sb, void* c) {
  const Format f = args.format;
  const int64_t n = args.n, k = args.k, block = block_of(f);
  const int64_t kb_count = ceil_div(k, block);
  const int64_t b_scales = weight_scale_bytes(f, n, k);
  std::vector<float> bw(static_cast<size_t>(n * k));
  for (int32_t g = 0; g < args.groups.count; ++g) {
    const int64_t row0 = args.groups.offsets[g], rows = args.groups.rows(g);
    if (rows == 0) continue;
    widen(b + g * n * k, n * k, bw.data());
    const uint8_t* sbg = sb + g * b_scales;
    parallel_rows(rows, n * k, [&](int64_t begin, int64_t end) {
      std::vector<float> aw(static_cast<size_t>(k));
      for (int64_t r = row0 + begin; r < row0 + end; ++r) {
        widen(a + r * args.lda, k, aw.data());
        const uint8_t* sar = sa + r * args.ldsa;
        for (int64_t j = 0; j < n; ++j) {
          float acc = 0.0f;
          for (int64_t kb = 0; kb < kb_count; ++kb) {
            const int64_t k0 = kb * block, len = std::min(block, k - k0);
            const float p = block_dot(aw.data() + k0, bw.data() + j * k + k0, len);
            if (f == Format::kFp8Block) {
              const float s_b = read_f32(sbg + ((j / kFp8Block) * kb_count + kb) * 4);
              acc = promote_fp8(acc, p, read_f32(sar + kb * 4), s_b);
            } else {
              acc = promote_mx(acc, p, sar[kb], sbg[j * kb_count + kb]);
            }
          }
          if (args.out_dtype == NEP_GEMM_OUT_FP32) {
            static_cast<float*>(c)[r * n + j] = acc;
          } else {
            static_cast<uint16_t*>(c)[r * n + j] = bf16_from_float(acc);
          }
        }
      }
    });
  }
}

void grouped_k(const GroupedK& args, const uint8_t* a, const uint8_t* sa, const uint8_t* b,
               const uint8_t* sb, float* c) {
  const Format f = args.format;
  const int64_t n = args.n, k = args.k, block = block_of(f), ssize = scale_size(f);
  const int64_t mp = args.groups.padded_rows();
  const int64_t scale_row = mp / block * ssize;
  for (int32_t g = 0; g < args.groups.count; ++g) {
    float* cg = c + g * n * k;
    const int64_t p0 = args.groups.padded[g], len = args.groups.padded[g + 1] - p0;
    if (len == 0) {
      std::fill(cg, cg + n * k, 0.0f);
      continue;
    }
    // B_g widened once: [k, len].
    std::vector<float> bw(static_cast<size_t>(k * len));
    for (int64_t j = 0; j < k; ++j) widen(b + j * mp + p0, len, bw.data() + j * len);
    const int64_t tiles = len / block, t0 = p0 / block;
    parallel_rows(n, k * len, [&](int64_t begin, int64_t end) {
      std::vector<float> aw(static_cast<size_t>(len));
      for (int64_t i = begin; i < end; ++i) {
        widen(a + i * mp + p0, len, aw.data());
        const uint8_t* sai = sa + i * scale_row;
        for (int64_t j = 0; j < k; ++j) {
          const uint8_t* sbj = sb + j * scale_row;
          float acc = 0.0f;
          for (int64_t t = 0; t < tiles; ++t) {
            const float p =
                block_dot(aw.data() + t * block, bw.data() + j * len + t * block, block);
            if (f == Format::kFp8Block) {
              acc = promote_fp8(acc, p, read_f32(sai + (t0 + t) * 4), read_f32(sbj + (t0 + t) * 4));
            } else {
              acc = promote_mx(acc, p, sai[t0 + t], sbj[t0 + t]);
            }
          }
          cg[i * k + j] = acc;
        }
      }
    });
  }
}

}  // namespace gemm
}  // namespace nep
