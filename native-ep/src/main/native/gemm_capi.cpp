// C ABI of the CPU grouped FP8 GEMMs and quantisers (include/nativeep/gemm_api.h).
#include "api_guard.h"
#include "gemm_args.h"
#include "gemm_cpu.h"
#include "nativeep/export.h"
#include "nativeep/gemm_api.h"

using namespace nep;
using namespace nep::gemm;

namespace {

template <class T>
T* ptr(int64_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

NEP_EXPORT int32_t nep_gemm_abi_version(void) { return 1; }

NEP_EXPORT int64_t nep_gemm_row_scale_bytes(int32_t format, int64_t k) {
  if ((format != NEP_GEMM_FP8_BLOCK && format != NEP_GEMM_MXFP8) || k < 1) return -1;
  return row_scale_bytes(static_cast<Format>(format), k);
}

NEP_EXPORT int64_t nep_gemm_weight_scale_bytes(int32_t format, int64_t num_groups, int64_t n,
                                               int64_t k, int32_t transpose) {
  if ((format != NEP_GEMM_FP8_BLOCK && format != NEP_GEMM_MXFP8) || num_groups < 1 || n < 1 ||
      k < 1 || (transpose != 0 && transpose != 1))
    return -1;
  const Format f = static_cast<Format>(format);
  return num_groups * (transpose ? weight_scale_bytes(f, k, n) : weight_scale_bytes(f, n, k));
}

NEP_EXPORT int32_t nep_gemm_padded_rows(int32_t num_groups, const int64_t* group_offsets,
                                        int64_t* padded_rows, int64_t* padded_offsets, char* err,
                                        int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    if (padded_rows == nullptr) fail_invalid("padded_rows is null");
    const Groups g = check_groups(num_groups, group_offsets, -1, "");
    *padded_rows = g.padded_rows();
    if (padded_offsets != nullptr)
      for (int32_t i = 0; i <= num_groups; ++i) padded_offsets[i] = g.padded[i];
  });
}

NEP_EXPORT int32_t nep_gemm_quantize_rows(int32_t format, int64_t x, int64_t m, int64_t k,
                                          int64_t q, int64_t s, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_non_negative("m", m);
    check_positive("k", k);
    check_elements("x", m, k);
    if (m == 0) return;
    require_address(x, "x");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    quantize_rows(f, ptr<const float>(x), m, k, ptr<uint8_t>(q), ptr<uint8_t>(s));
  });
}

NEP_EXPORT int32_t nep_gemm_swiglu_quantize_rows(int32_t format, int64_t y, int64_t m,
                                                 int64_t inter, int64_t h_out, int64_t q, int64_t s,
                                                 char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_swiglu(format, y, m, inter, h_out, q, s);
    if (m == 0) return;
    swiglu_quantize_rows(f, ptr<const float>(y), m, inter, ptr<float>(h_out), ptr<uint8_t>(q),
                         ptr<uint8_t>(s));
  });
}

NEP_EXPORT int32_t nep_gemm_dswiglu_quantize_rows(int32_t format, int64_t y, int64_t dh, int64_t m,
                                                  int64_t inter, int64_t dy_out, int64_t q,
                                                  int64_t s, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_dswiglu(format, y, dh, m, inter, dy_out, q, s);
    if (m == 0) return;
    dswiglu_quantize_rows(f, ptr<const float>(y), ptr<const float>(dh), m, inter,
                          ptr<float>(dy_out), ptr<uint8_t>(q), ptr<uint8_t>(s));
  });
}

NEP_EXPORT int32_t nep_gemm_quantize_weights(int32_t format, int64_t w, int64_t num_groups,
                                             int64_t n, int64_t k, int32_t transpose, int64_t q,
                                             int64_t s, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_positive("num_groups", num_groups);
    check_positive("n", n);
    check_positive("k", k);
    check_elements("w", num_groups, n, k);
    if (transpose != 0 && transpose != 1)
      fail_invalid("transpose=", transpose, " is neither 0 nor 1");
    require_address(w, "w");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    quantize_weights(f, ptr<const float>(w), num_groups, n, k, transpose == 1, ptr<uint8_t>(q),
                     ptr<uint8_t>(s));
  });
}

NEP_EXPORT int32_t nep_gemm_quantize_rows_t_grouped(int32_t format, int64_t x, int64_t m, int64_t c,
                                                    int32_t num_groups,
                                                    const int64_t* group_offsets, int64_t q,
                                                    int64_t s, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const Format f = check_format(format);
    check_non_negative("m", m);
    check_positive("c", c);
    check_elements("x", m, c);
    const Groups g = check_groups(num_groups, group_offsets, m, "m");
    check_elements("q", c, g.padded_rows());
    if (g.padded_rows() == 0) return;
    require_address(x, "x");
    require_address(q, "q");
    require_address(s, "s");
    check_scale_alignment(f, "s", s);
    quantize_rows_t_grouped(f, ptr<const float>(x), c, g, ptr<uint8_t>(q), ptr<uint8_t>(s));
  });
}

NEP_EXPORT int32_t nep_gemm_grouped_m(int32_t format, int32_t num_groups, int64_t n, int64_t k,
                                      int64_t m, const int64_t* group_offsets, int64_t a,
                                      int64_t lda, int64_t sa, int64_t ldsa, int64_t b, int64_t sb,
                                      int64_t c, int32_t out_dtype, char* err, int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const GroupedM args = check_grouped_m(format, num_groups, n, k, m, group_offsets, a, lda, sa,
                                          ldsa, b, sb, c, out_dtype);
    grouped_m(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa), ptr<const uint8_t>(b),
              ptr<const uint8_t>(sb), ptr<void>(c));
  });
}

NEP_EXPORT int32_t nep_gemm_grouped_k(int32_t format, int32_t num_groups, int64_t n, int64_t k,
                                      const int64_t* group_offsets, int64_t a, int64_t sa,
                                      int64_t b, int64_t sb, int64_t c, char* err,
                                      int64_t err_cap) {
  return guarded(err, err_cap, [&] {
    const GroupedK args = check_grouped_k(format, num_groups, n, k, group_offsets, a, sa, b, sb, c);
    grouped_k(args, ptr<const uint8_t>(a), ptr<const uint8_t>(sa), ptr<const uint8_t>(b),
              ptr<const uint8_t>(sb), ptr<float>(c));
  });
}
