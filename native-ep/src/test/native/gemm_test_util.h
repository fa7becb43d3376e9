// Shared by the grouped FP8 GEMM tests: random inputs with per-row magnitudes, dequantisation by
// the formats' definitions (independent of the code under test), and float64 references.
#ifndef NATIVEEP_TEST_GEMM_TEST_UTIL_H_
#define NATIVEEP_TEST_GEMM_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "nativeep/gemm_api.h"

namespace gemmtest {

inline int64_t addr(const void* p) { return reinterpret_cast<int64_t>(p); }

// Value of an e4m3fn code by the spec's formula (NaN for S.1111.111).
inline double e4m3_value(uint8_t c) {
  const int sign = (c & 0x80) ? -1 : 1;
  const int exp = (c >> 3) & 0xF, man = c & 7;
  if ((c & 0x7F) == 0x7F) return std::nan("");
  if (exp == 0) return sign * man * std::ldexp(1.0, -9);
  return sign * (1.0 + man / 8.0) * std::ldexp(1.0, exp - 7);
}

inline int64_t block_of(int32_t format) { return format == NEP_GEMM_FP8_BLOCK ? 128 : 32; }
inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Value of scale j of a row's scale bytes.
inline double row_scale(int32_t format, const uint8_t* s, int64_t j) {
  if (format == NEP_GEMM_FP8_BLOCK) {
    float f;
    std::memcpy(&f, s + 4 * j, 4);
    return f;
  }
  return s[j] == 0xFF ? std::nan("") : std::ldexp(1.0, int(s[j]) - 127);
}

// Rows [rows, k] with each row's magnitude drawn over a few decades (and some rows of zeros).
inline std::vector<float> random_rows(int64_t rows, int64_t k, uint32_t seed,
                                      double zero_rows = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> decades(-3.0f, 2.0f), unit(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * k));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = unit(rng) < zero_rows ? 0.0f : std::pow(10.0f, decades(rng));
    for (int64_t i = 0; i < k; ++i) x[r * k + i] = normal(rng) * mag;
  }
  return x;
}

// Dequantised rows [rows, k] of q with row scales s (row stride sbytes), in double.
inline std::vector<double> dequant_rows(int32_t format, const uint8_t* q, int64_t lq,
                                        const uint8_t* s, int64_t ls, int64_t rows, int64_t k) {
  std::vector<double> out(static_cast<size_t>(rows * k));
  const int64_t blk = block_of(format);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i)
      out[r * k + i] = e4m3_value(q[r * lq + i]) * row_scale(format, s + r * ls, i / blk);
  return out;
}

// Dequantised weights of one group [n, k] (FP8_BLOCK 128x128 block scales, MXFP8 row scales).
inline std::vector<double> dequant_weight(int32_t format, const uint8_t* q, const uint8_t* s,
                                          int64_t n, int64_t k) {
  if (format == NEP_GEMM_MXFP8) return dequant_rows(format, q, k, s, cdiv(k, 32), n, k);
  std::vector<double> out(static_cast<size_t>(n * k));
  const int64_t kbs = cdiv(k, 128);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < k; ++i) {
      float f;
      std::memcpy(&f, s + 4 * ((r / 128) * kbs + i / 128), 4);
      out[r * k + i] = e4m3_value(q[r * k + i]) * f;
    }
  return out;
}

// NaN-poisoned floats: rows a GEMM did not write keep this bit pattern.
constexpr uint32_t kPoisonBits = 0x7FBADBADu;
inline float poison() {
  float f;
  std::memcpy(&f, &kPoisonBits, 4);
  return f;
}
inline bool is_poison(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u == kPoisonBits;
}

}  // namespace gemmtest

#endif  // NATIVEEP_TEST_GEMM_TEST_UTIL_H_
