// Arguments of the grouped FP8 GEMMs and their quantisers (include/nativeep/gemm_api.h), checked
// once for the CPU path and the CUDA plug-in alike: header-only, so the plug-in shares every rule
// and message without linking the core. Every check throws nep::Error naming the argument, its
// value and the limit.
#ifndef NATIVEEP_SRC_GEMM_ARGS_H_
#define NATIVEEP_SRC_GEMM_ARGS_H_

#include <cstdint>
#include <vector>

#include "error.h"
#include "nativeep/gemm_api.h"

namespace nep {
namespace gemm {

enum class Format : int32_t { kFp8Block = NEP_GEMM_FP8_BLOCK, kMxfp8 = NEP_GEMM_MXFP8 };

constexpr int64_t kFp8Block = 128;  // FP8_BLOCK: 1x128 row tiles, 128x128 weight blocks
constexpr int64_t kMxBlock = 32;    // MXFP8: 1x32 along K
constexpr int64_t kTokenTile = NEP_GEMM_TOKEN_TILE;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per scale along K: 128 or 32. (constexpr: the CUDA kernels call these too.)
constexpr int64_t block_of(Format f) { return f == Format::kFp8Block ? kFp8Block : kMxBlock; }
// Bytes of one scale: 4 (fp32) or 1 (E8M0).
constexpr int64_t scale_size(Format f) { return f == Format::kFp8Block ? 4 : 1; }
constexpr int64_t row_scale_bytes(Format f, int64_t k) {
  return ceil_div(k, block_of(f)) * scale_size(f);
}
// Scale bytes of one group's [rows, cols] weight (cols the reduction axis).
constexpr int64_t weight_scale_bytes(Format f, int64_t rows, int64_t cols) {
  return f == Format::kFp8Block ? ceil_div(rows, kFp8Block) * ceil_div(cols, kFp8Block) * 4
                                : rows * ceil_div(cols, kMxBlock);
}

inline Format check_format(int32_t format) {
  if (format != NEP_GEMM_FP8_BLOCK && format != NEP_GEMM_MXFP8)
    fail_invalid("format=", format, " is neither NEP_GEMM_FP8_BLOCK (", NEP_GEMM_FP8_BLOCK,
                 ") nor NEP_GEMM_MXFP8 (", NEP_GEMM_MXFP8, ")");
  return static_cast<Format>(format);
}

inline void check_positive(const char* name, int64_t v) {
  if (v < 1) fail_invalid(name, "=", v, " must be at least 1");
}

inline void check_non_negative(const char* name, int64_t v) {
  if (v < 0) fail_invalid(name, "=", v, " is negative");
}

// Products of dimensions stay far from int64 overflow (2^50 elements is beyond any memory).
inline void check_elements(const char* what, int64_t a, int64_t b, int64_t c = 1) {
  constexpr int64_t kLimit = int64_t(1) << 50;
  if (a > 0 && b > 0 && c > 0 && (a > kLimit / b || a * b > kLimit / c))
    fail(NEP_ERR_CAPACITY, what, " has ", a, " x ", b, " x ", c, " elements, more than 2^50");
}

// Group offsets, copied from the host array and checked: non-decreasing, offsets[0] >= 0 and
// offsets[G] <= rows_limit (pass -1 for no limit).
struct Groups {
  int32_t count = 0;
  std::vector<int64_t> offsets;  // [count + 1]
  std::vector<int64_t> padded;   // [count + 1]: the K-grouped layout's p[g]

  int64_t rows(int32_t g) const { return offsets[g + 1] - offsets[g]; }
  int64_t padded_rows() const { return padded[count]; }
};

inline Groups check_groups(int32_t num_groups, const int64_t* group_offsets, int64_t rows_limit,
                           const char* rows_name) {
  if (num_groups < 1 || num_groups > NEP_GEMM_MAX_GROUPS)
    fail_invalid("num_groups=", num_groups, " is outside [1, ", NEP_GEMM_MAX_GROUPS, "]");
  if (group_offsets == nullptr)
    fail_invalid("group_offsets is null (a host array of num_groups + 1)");
  Groups g;
  g.count = num_groups;
  g.offsets.assign(group_offsets, group_offsets + num_groups + 1);
  if (g.offsets[0] < 0) fail_invalid("group_offsets[0]=", g.offsets[0], " is negative");
  for (int32_t i = 0; i < num_groups; ++i) {
    if (g.offsets[i + 1] < g.offsets[i])
      fail_invalid("group_offsets[", i + 1, "]=", g.offsets[i + 1], " is below group_offsets[", i,
                   "]=", g.offsets[i], " (offsets must not decrease)");
  }
  if (rows_limit >= 0 && g.offsets[num_groups] > rows_limit)
    fail_invalid("group_offsets[", num_groups, "]=", g.offsets[num_groups], " exceeds ", rows_name,
                 "=", rows_limit);
  constexpr int64_t kRowLimit = int64_t(1) << 40;
  if (g.offsets[num_groups] > kRowLimit)
    fail(NEP_ERR_CAPACITY, "group_offsets[", num_groups, "]=", g.offsets[num_groups],
         " exceeds 2^40 rows");
  g.padded.resize(num_groups + 1);
  g.padded[0] = 0;
  for (int32_t i = 0; i < num_groups; ++i)
    g.padded[i + 1] = g.padded[i] + ceil_div(g.rows(i), kTokenTile) * kTokenTile;
  return g;
}

inline void check_out_dtype(int32_t out_dtype) {
  if (out_dtype != NEP_GEMM_OUT_FP32 && out_dtype != NEP_GEMM_OUT_BF16)
    fail_invalid("out_dtype=", out_dtype,
                 " is neither NEP_GEMM_OUT_FP32 (0) nor NEP_GEMM_OUT_BF16 (1)");
}

inline void check_scale_alignment(Format f, const char* name, int64_t address) {
  if (f == Format::kFp8Block && (address & 3) != 0)
    fail_invalid(name, "=", address, " is not 4-byte aligned (fp32 scales)");
}

// The fused SwiGLU quantiser's arguments (y [m, 2 inter] float32, h_out optional).
inline Format check_swiglu(int32_t format, int64_t y, int64_t m, int64_t inter, int64_t h_out,
                           int64_t q, int64_t s, const char* out_name = "h_out") {
  const Format f = check_format(format);
  check_non_negative("m", m);
  check_positive("inter", inter);
  check_elements("y", m, 2 * inter);
  if (m > 0) {
    require_address(y, "y");
    require_address(q, "q");
    require_address(s, "s");
  }
  check_scale_alignment(f, "s", s);
  if ((y & 3) != 0) fail_invalid("y=", y, " is not 4-byte aligned");
  if ((h_out & 3) != 0) fail_invalid(out_name, "=", h_out, " is not 4-byte aligned");
  return f;
}

// The fused SwiGLU backward quantiser's arguments (y [m, 2 inter], dh [m, inter], dy_out
// optional).
inline Format check_dswiglu(int32_t format, int64_t y, int64_t dh, int64_t m, int64_t inter,
                            int64_t dy_out, int64_t q, int64_t s) {
  const Format f = check_swiglu(format, y, m, inter, dy_out, q, s, "dy_out");
  if (m > 0) require_address(dh, "dh");
  if ((dh & 3) != 0) fail_invalid("dh=", dh, " is not 4-byte aligned");
  return f;
}

// The M-grouped GEMM's arguments, checked, with the defaults (0 strides) filled in.
struct GroupedM {
  Format format;
  Groups groups;
  int64_t n, k, m, lda, ldsa;
  int32_t out_dtype;
};

inline GroupedM check_grouped_m(int32_t format, int32_t num_groups, int64_t n, int64_t k, int64_t m,
                                const int64_t* group_offsets, int64_t a, int64_t lda, int64_t sa,
                                int64_t ldsa, int64_t b, int64_t sb, int64_t c, int32_t out_dtype) {
  GroupedM g;
  g.format = check_format(format);
  check_positive("n", n);
  check_positive("k", k);
  check_non_negative("m", m);
  check_elements("A", m, k);
  check_elements("C", m, n);
  check_elements("B", num_groups, n, k);
  g.groups = check_groups(num_groups, group_offsets, m, "m");
  g.n = n;
  g.k = k;
  g.m = m;
  g.lda = lda == 0 ? k : lda;
  const int64_t dense_scales = row_scale_bytes(g.format, k);
  g.ldsa = ldsa == 0 ? dense_scales : ldsa;
  if (g.lda < k) fail_invalid("lda=", lda, " is below k=", k, " (bytes between rows of A)");
  if (g.ldsa < dense_scales)
    fail_invalid("ldsa=", ldsa, " is below the ", dense_scales, " scale bytes of a row of k=", k);
  if (g.format == Format::kFp8Block && (g.ldsa & 3) != 0)
    fail_invalid("ldsa=", g.ldsa, " is not a multiple of 4 (fp32 scales)");
  check_out_dtype(out_dtype);
  g.out_dtype = out_dtype;
  if (g.groups.offsets[num_groups] > g.groups.offsets[0]) {
    require_address(a, "a");
    require_address(sa, "sa");
    require_address(c, "c");
  }
  require_address(b, "b");
  require_address(sb, "sb");
  check_scale_alignment(g.format, "sa", sa);
  check_scale_alignment(g.format, "sb", sb);
  if (out_dtype == NEP_GEMM_OUT_FP32 && (c & 3) != 0)
    fail_invalid("c=", c, " is not 4-byte aligned");
  if (out_dtype == NEP_GEMM_OUT_BF16 && (c & 1) != 0)
    fail_invalid("c=", c, " is not 2-byte aligned");
  return g;
}

// The K-grouped GEMM's arguments, checked.
struct GroupedK {
  Format format;
  Groups groups;
  int64_t n, k;
};

inline GroupedK check_grouped_k(int32_t format, int32_t num_groups, int64_t n, int64_t k,
                                const int64_t* group_offsets, int64_t a, int64_t sa, int64_t b,
                                int64_t sb, int64_t c) {
  GroupedK g;
  g.format = check_format(format);
  check_positive("n", n);
  check_positive("k", k);
  check_elements("C", num_groups, n, k);
  g.groups = check_groups(num_groups, group_offsets, -1, "");
  check_elements("A", n, g.groups.padded_rows());
  check_elements("B", k, g.groups.padded_rows());
  g.n = n;
  g.k = k;
  if (g.groups.padded_rows() > 0) {
    require_address(a, "a");
    require_address(sa, "sa");
    require_address(b, "b");
    require_address(sb, "sb");
  }
  require_address(c, "c");
  check_scale_alignment(g.format, "sa", sa);
  check_scale_alignment(g.format, "sb", sb);
  if ((c & 3) != 0) fail_invalid("c=", c, " is not 4-byte aligned");
  return g;
}

}  // namespace gemm
}  // namespace nep

#endif  // NATIVEEP_SRC_GEMM_ARGS_H_
