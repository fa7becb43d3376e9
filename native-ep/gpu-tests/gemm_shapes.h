// Shapes of the grouped FP8 GEMM drivers (gemm_test, gemm_bench) and of
// bench/grouped_gemm_torch.py: the 16B expert shape of DeepSeek-V3-16B (4096 tokens x top-6 =
// 24,576 rows over 64 experts, hidden 2048, expert intermediate 1408) and its uneven split, integer
// arithmetic only so the Python script computes the same counts.
#ifndef NATIVEEP_GPU_TESTS_GEMM_SHAPES_H_
#define NATIVEEP_GPU_TESTS_GEMM_SHAPES_H_

#include <cstdint>
#include <vector>

namespace nepgpu {

constexpr int64_t k16bRows = 4096 * 6;
constexpr int32_t k16bExperts = 64;
constexpr int64_t k16bHidden = 2048;
constexpr int64_t k16bInter = 1408;

// Rows per expert: weight 64 + (37 e mod 64) per expert, expert 0 (hot) 192 more; counts are
// rows * weight / total rounded down, the remainder one each to the first experts.
inline std::vector<int64_t> uneven_split(int64_t rows, int32_t experts) {
  std::vector<int64_t> weight(experts), count(experts);
  int64_t total = 0, given = 0;
  for (int32_t e = 0; e < experts; ++e) {
    weight[e] = 64 + (37 * e) % 64 + (e == 0 ? 192 : 0);
    total += weight[e];
  }
  for (int32_t e = 0; e < experts; ++e) {
    count[e] = rows * weight[e] / total;
    given += count[e];
  }
  for (int32_t e = 0; given < rows; ++e, ++given) ++count[e % experts];
  return count;
}

// Offsets [experts + 1] of a split.
inline std::vector<int64_t> offsets_of(const std::vector<int64_t>& count) {
  std::vector<int64_t> off(count.size() + 1, 0);
  for (size_t e = 0; e < count.size(); ++e) off[e + 1] = off[e] + count[e];
  return off;
}

}  // namespace nepgpu

#endif  // NATIVEEP_GPU_TESTS_GEMM_SHAPES_H_
