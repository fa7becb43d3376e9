/*
 * nativeep grouped FP8 GEMMs for the routed experts: quantisers and grouped GEMMs in two block
 * scaled FP8 formats, with one C ABI on the CPU (nep_gemm_*, in libnativeep: the oracle and the
 * CPU path) and one on the GPU (nep_cuda_gemm_*, in libnativeep_cuda). A CUDA entry point takes
 * the same arguments as its CPU twin plus `device` first and `stream` (a cudaStream_t as an
 * integer, 0 = the legacy default stream) before `err`; tensor addresses are then device addresses,
 * the group offsets stay a host array. CUDA calls are asynchronous on `stream`; arguments are
 * checked on the host before anything is launched, launch failures are returned at once and a
 * fault on the GPU shows at the next synchronising call (as in cuda_api.h).
 *
 * Conventions of c_api.h: int status (NEP_OK = 0, NEP_ERR_* codes), a NUL-terminated message in
 * err[0, err_cap) naming the argument, its value and the limit; nothing aborts the process.
 *
 * ---- Numerics --------------------------------------------------------------------------------
 * Elements are OCP e4m3fn bytes. Every operand is K-major (row-major [rows, K], K the reduction
 * axis) and carries one scale per block along K:
 *   NEP_GEMM_FP8_BLOCK (DeepSeek-V3): activations and gradients one fp32 scale per 1x128 tile of
 *     a row, weights one fp32 scale per 128x128 block; scale = max(amax, 448 * 2^-126) / 448,
 *     element = sat448(x * (448 / amax)) rounded to nearest even.
 *   NEP_GEMM_MXFP8 (OCP MX v1.0): one E8M0 byte per 1x32 of a row, on both operands;
 *     shared_exp = clamp(floor(log2 amax) - 8, -127, 127), element = sat448(x / 2^shared_exp).
 * These are the wire codecs' rules (native-ep/src/main/native/codec.h) byte for byte: a row of K
 * channels quantised here equals its NEP_WIRE_FP8 / NEP_WIRE_MXFP8 wire row (elements, then
 * scales), so rows that arrive from a dispatch on those wires feed the GEMM as they are (pass the
 * wire row size as the row strides; the GPU transport's rows put the scales at roundup(K, 16) and
 * pad the row to 16 bytes: pass a = row, sa = row + roundup(K, 16), lda = ldsa = its row size).
 * A block shorter than 128 (or 32) at the end of K gets its own scale; nothing is padded unless
 * said below. NaN and +-Inf inputs become the e4m3 NaN code.
 *
 * C[m, n] = sum over K-blocks kb of P(m, n, kb) * scale, accumulated in fp32 in order of kb, where
 * P is the block's partial sum of element products (computed exactly and rounded once to fp32 on
 * the CPU; in the tensor core's own fp32 accumulator on the GPU) and the promotion is
 *   FP8_BLOCK: acc = acc + P * (sa * sb)               (each operation rounded to fp32, no fma)
 *   MXFP8:     acc = acc + P * 2^(ea + eb - 254)       (exact scaling; a 0xFF scale byte is NaN)
 * so the CPU and GPU paths differ only by the tensor core's rounding inside a block.
 * For FP8_BLOCK the K-block is 128 and the promotion happens once per 128 (as DeepSeek-V3 promotes
 * its WGMMA partial sums); for MXFP8 the K-block is 32.
 *
 * ---- Groups ----------------------------------------------------------------------------------
 * Groups are the local experts (G of them, 1 <= G <= NEP_GEMM_MAX_GROUPS). group_offsets is a
 * host array int64 [G + 1], non-decreasing, offsets[0] >= 0: group g owns rows [offsets[g],
 * offsets[g + 1]) of the concatenated rows (the contiguous layout the dispatch produces; empty
 * groups allowed; no alignment needed).
 *
 * M-grouped GEMM (forward x W^T, and the activation gradient dY W):
 *   A  [M, K] e4m3 rows, row stride lda bytes (0 = K); scales sa: row stride ldsa bytes
 *      (0 = dense: FP8_BLOCK ceil(K/128) fp32, MXFP8 ceil(K/32) bytes per row).
 *   B  [G, N, K] e4m3 (one weight matrix per group, K-major); scales sb: FP8_BLOCK
 *      [G, ceil(N/128), ceil(K/128)] fp32, MXFP8 [G, N, ceil(K/32)] bytes.
 *   C  [M, N] (fp32 or bf16 by out_dtype, row-major dense): rows of group g get A_g B_g^T;
 *      rows outside [offsets[0], offsets[G]) are not written. Needs offsets[G] <= M.
 *   The forward GEMM of SwiGLU fuses gate and up: stack W1 and W3 as one [G, 2I, H] weight.
 *   The activation gradient dX = dY W uses B = W^T quantised by nep_gemm_quantize_weights with
 *   transpose = 1 (FP8_BLOCK block scales are transpose-invariant; MXFP8 needs its own scales
 *   along the other axis).
 * K-grouped GEMM (weight gradient: C_g[n, k] = sum over the group's rows m of dY[m, n] X[m, k]):
 *   Both operands are transposed, token-major, and padded per group: group g's rows start at the
 *   padded offset p[g] = sum over j < g of roundup(rows_j, NEP_GEMM_TOKEN_TILE), Mp = p[G]
 *   (nep_gemm_padded_rows); the padding holds zero elements. nep_gemm_quantize_rows_t_grouped
 *   writes this layout, so tiles restart at every group start and a group's last tile may be
 *   partial (its padding is zero).
 *   A  [N, Mp] e4m3 (dY^T), scales sa [N, Mp / blk]; B [K, Mp] e4m3 (X^T), scales sb [K, Mp / blk]
 *   (blk = 128 fp32 scales for FP8_BLOCK, 32 E8M0 bytes for MXFP8: both operands are 1 x blk
 *   tiles along the tokens). C [G, N, K] fp32; an empty group's C_g is written as zeros.
 *
 * ---- Alignment and the two GPU tiers -----------------------------------------------------------
 * CPU: no alignment demands beyond the types' own (fp32 scales 4-byte aligned).
 * GPU, portable tier (mma.sync m16n8k32 e4m3; this build targets sm_90): any shape and stride;
 * 16-byte aligned addresses and strides make its loads vectorised, others are read byte by byte.
 * GPU, Hopper tier (wgmma fed by TMA, built for sm_90a, runs on compute capability 9.0): needs
 * K and lda multiples of 16 and a, b 16-byte aligned (TMA's rules; the caller pads K with zero
 * columns to reach them). The environment variable NEP_GEMM_TIER picks the tier for every call of
 * the process: "auto" (default), "mma" (the portable tier) or "wgmma" (the Hopper tier; a call it
 * cannot take fails with NEP_ERR_UNSUPPORTED naming the reason). "auto" takes the Hopper tier on
 * compute capability 9.0 for every call it can take and the portable tier for the others (K not
 * a multiple of 16, say) and on other GPUs. nep_cuda_gemm_last_tier tells which tier the last
 * call on this thread ran.
 *
 * ---- A SwiGLU expert layer, step by step ------------------------------------------------------
 * x [M, H] the dispatched rows of the local experts (offsets from recv_tokens_per_expert), weights
 * W13 [G, 2I, H] (gate rows then up rows) and W2 [G, H, I], float32 masters quantised once per
 * step: W13 and W2 with transpose = 0 (forward), W13 and W2 with transpose = 1 (backward).
 *   forward:  quantize_rows(x) (or the FP8 / MXFP8 wire rows as they arrived)
 *             grouped_m(n = 2I, k = H, x, W13) -> y13 [M, 2I]
 *             swiglu_quantize_rows(y13) -> h [M, I] kept, h quantised
 *             grouped_m(n = H, k = I, h, W2) -> y [M, H]
 *   backward (dy [M, H]):
 *             quantize_rows(dy); grouped_m(n = I, k = H, dy, W2^T) -> dh [M, I]
 *             dswiglu_quantize_rows(y13, dh) -> dy13 [M, 2I] kept, dy13 quantised
 *             grouped_m(n = H, k = 2I, dy13, W13^T) -> dx [M, H]
 *             quantize_rows_t_grouped(dy), (h) -> grouped_k(n = H, k = I) -> dW2 [G, H, I]
 *             quantize_rows_t_grouped(dy13), (x) -> grouped_k(n = 2I, k = H) -> dW13 [G, 2I, H]
 * Every GEMM is 2 M N K FLOPs; the weight gradients' padding rows add nothing.
 *
 * Why hand-written kernels: CI compiles every kernel with nvcc alone (no cuBLAS, no CUTLASS);
 * cuBLASLt on Hopper has no MX block scaling and only the GPU host's torch wheel ships it; and the
 * promotion rule above (partial sums per scale block, fp32 accumulation outside the tensor core)
 * is ours to fix, so both tiers and the CPU compute the same formula.
 */
#ifndef NATIVEEP_GEMM_API_H_
#define NATIVEEP_GEMM_API_H_

#include <stdint.h>

#include "nativeep/c_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats (equal to the wire codes whose bytes they read). */
#define NEP_GEMM_FP8_BLOCK 2 /* NEP_WIRE_FP8: 1x128 / 128x128 fp32 scales */
#define NEP_GEMM_MXFP8 3     /* NEP_WIRE_MXFP8: 1x32 E8M0 scales */

/* Output element types (equal to cuda_api.h's NEP_DTYPE_*). */
#define NEP_GEMM_OUT_FP32 0
#define NEP_GEMM_OUT_BF16 1 /* round to nearest even */

#define NEP_GEMM_MAX_GROUPS 1024
#define NEP_GEMM_TOKEN_TILE 128 /* per-group padding of the K-grouped layout */

/* Tiers (nep_cuda_gemm_last_tier). */
#define NEP_GEMM_TIER_NONE 0
#define NEP_GEMM_TIER_MMA 1   /* portable: mma.sync m16n8k32 e4m3 */
#define NEP_GEMM_TIER_WGMMA 2 /* Hopper: wgmma + TMA */

/* ABI version of this header; bumped on any change of a signature below. */
int32_t nep_gemm_abi_version(void);

/* Scale bytes of one row of k channels (FP8_BLOCK 4 * ceil(k/128), MXFP8 ceil(k/32)); -1 when
 * format or k (> 0) is invalid. */
int64_t nep_gemm_row_scale_bytes(int32_t format, int64_t k);

/* Scale bytes of the weights [G, N, K] (transpose = 1: of [G, K, N]); -1 when invalid. */
int64_t nep_gemm_weight_scale_bytes(int32_t format, int64_t num_groups, int64_t n, int64_t k,
                                    int32_t transpose);

/* Mp of the K-grouped layout: *padded_rows = sum over g of roundup(rows_g, NEP_GEMM_TOKEN_TILE);
 * with padded_offsets != 0 also writes p [G + 1] (host int64). */
int32_t nep_gemm_padded_rows(int32_t num_groups, const int64_t* group_offsets, int64_t* padded_rows,
                             int64_t* padded_offsets, char* err, int64_t err_cap);

/* ---- Quantisers (input float32, row-major dense) -------------------------------------------- */

/* x [M, K] -> q [M, K] e4m3 and s [M, row scale bytes] (1x128 fp32 or 1x32 E8M0 along K):
 * byte-equal to nep_encode_rows of the same wire, with elements and scales in separate arrays. */
int32_t nep_gemm_quantize_rows(int32_t format, int64_t x, int64_t m, int64_t k, int64_t q,
                               int64_t s, char* err, int64_t err_cap);

/*
 * Weights w [G, N, K] -> transpose = 0: q [G, N, K], s FP8_BLOCK [G, ceil(N/128), ceil(K/128)]
 * fp32 (128x128 blocks) or MXFP8 [G, N, ceil(K/32)] (1x32 along K);
 * transpose = 1: q [G, K, N] (w_g^T), s FP8_BLOCK [G, ceil(K/128), ceil(N/128)] (the same block
 * scales, transposed; the elements are the same bytes) or MXFP8 [G, K, ceil(N/32)] (1x32 along N).
 */
int32_t nep_gemm_quantize_weights(int32_t format, int64_t w, int64_t num_groups, int64_t n,
                                  int64_t k, int32_t transpose, int64_t q, int64_t s, char* err,
                                  int64_t err_cap);

/*
 * x [M, C] (rows of all groups) -> the K-grouped operand: q [C, Mp] e4m3, x^T with group g's rows
 * at columns [p[g], p[g] + rows_g) and zeros up to p[g + 1]; s [C, Mp / blk] (1 x blk tiles along
 * the tokens, restarting at p[g]; FP8_BLOCK fp32, MXFP8 E8M0). Rows of x outside
 * [offsets[0], offsets[G]) are not read. Needs offsets[G] <= M.
 */
int32_t nep_gemm_quantize_rows_t_grouped(int32_t format, int64_t x, int64_t m, int64_t c,
                                         int32_t num_groups, const int64_t* group_offsets,
                                         int64_t q, int64_t s, char* err, int64_t err_cap);

/*
 * SwiGLU and row quantisation in one pass (the down projection's input straight from the fused
 * gate/up GEMM's output): y [M, 2I] float32, the gate in columns [0, I) and the up projection in
 * [I, 2I) -> h = silu(gate) * up [M, I] with silu(g) = g / (1 + exp(-g)), each step rounded to
 * float32; h_out [M, I] float32 receives h unless it is 0 (the backward needs it); q [M, I] and
 * s [M, row scale bytes] are what nep_gemm_quantize_rows gives for h. The CPU and GPU exp may
 * differ in the last bit, so their h (and rarely a quantised byte) may too.
 */
int32_t nep_gemm_swiglu_quantize_rows(int32_t format, int64_t y, int64_t m, int64_t inter,
                                      int64_t h_out, int64_t q, int64_t s, char* err,
                                      int64_t err_cap);

/*
 * The SwiGLU backward and row quantisation in one pass (the activation gradient GEMM's input
 * straight from dh = dy W2): y [M, 2I] the forward's gate/up output, dh [M, I] float32 ->
 * dy [M, 2I] = [dgate, dup] with e = exp(-g), d = 1 + e, sig = 1 / d, silu = g / d,
 * dgate = (dh * u) * (sig * (1 + g * (1 - sig))), dup = dh * silu, each step rounded to float32;
 * dy_out [M, 2I] float32 receives dy unless it is 0 (the weight gradient quantises it along the
 * tokens); q [M, 2I] and s [M, row scale bytes of 2I] are nep_gemm_quantize_rows's for dy.
 */
int32_t nep_gemm_dswiglu_quantize_rows(int32_t format, int64_t y, int64_t dh, int64_t m,
                                       int64_t inter, int64_t dy_out, int64_t q, int64_t s,
                                       char* err, int64_t err_cap);

/* ---- Grouped GEMMs -------------------------------------------------------------------------- */

/* M-grouped: C[m, :] = A[m, :] B_g^T for the rows m of group g (see above). */
int32_t nep_gemm_grouped_m(int32_t format, int32_t num_groups, int64_t n, int64_t k, int64_t m,
                           const int64_t* group_offsets, int64_t a, int64_t lda, int64_t sa,
                           int64_t ldsa, int64_t b, int64_t sb, int64_t c, int32_t out_dtype,
                           char* err, int64_t err_cap);

/* K-grouped: C_g = A_g B_g^T over the group's padded token columns (see above). */
int32_t nep_gemm_grouped_k(int32_t format, int32_t num_groups, int64_t n, int64_t k,
                           const int64_t* group_offsets, int64_t a, int64_t sa, int64_t b,
                           int64_t sb, int64_t c, char* err, int64_t err_cap);

/* ---- CUDA (libnativeep_cuda; NEP_ERR_UNSUPPORTED from the CPU-only stand-in) ---------------- */

int32_t nep_cuda_gemm_quantize_rows(int32_t device, int32_t format, int64_t x, int64_t m, int64_t k,
                                    int64_t q, int64_t s, int64_t stream, char* err,
                                    int64_t err_cap);
int32_t nep_cuda_gemm_quantize_weights(int32_t device, int32_t format, int64_t w,
                                       int64_t num_groups, int64_t n, int64_t k, int32_t transpose,
                                       int64_t q, int64_t s, int64_t stream, char* err,
                                       int64_t err_cap);
int32_t nep_cuda_gemm_quantize_rows_t_grouped(int32_t device, int32_t format, int64_t x, int64_t m,
                                              int64_t c, int32_t num_groups,
                                              const int64_t* group_offsets, int64_t q, int64_t s,
                                              int64_t stream, char* err, int64_t err_cap);
int32_t nep_cuda_gemm_swiglu_quantize_rows(int32_t device, int32_t format, int64_t y, int64_t m,
                                           int64_t inter, int64_t h_out, int64_t q, int64_t s,
                                           int64_t stream, char* err, int64_t err_cap);
int32_t nep_cuda_gemm_dswiglu_quantize_rows(int32_t device, int32_t format, int64_t y, int64_t dh,
                                            int64_t m, int64_t inter, int64_t dy_out, int64_t q,
                                            int64_t s, int64_t stream, char* err, int64_t err_cap);
int32_t nep_cuda_gemm_grouped_m(int32_t device, int32_t format, int32_t num_groups, int64_t n,
                                int64_t k, int64_t m, const int64_t* group_offsets, int64_t a,
                                int64_t lda, int64_t sa, int64_t ldsa, int64_t b, int64_t sb,
                                int64_t c, int32_t out_dtype, int64_t stream, char* err,
                                int64_t err_cap);
int32_t nep_cuda_gemm_grouped_k(int32_t device, int32_t format, int32_t num_groups, int64_t n,
                                int64_t k, const int64_t* group_offsets, int64_t a, int64_t sa,
                                int64_t b, int64_t sb, int64_t c, int64_t stream, char* err,
                                int64_t err_cap);
/* The tier (NEP_GEMM_TIER_*) of the last GEMM this thread launched through the plug-in. */
int32_t nep_cuda_gemm_last_tier(void);

#ifdef __cplusplus
}
#endif

#endif /* NATIVEEP_GEMM_API_H_ */
