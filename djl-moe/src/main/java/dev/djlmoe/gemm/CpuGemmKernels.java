/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeGemm;

/** The CPU entry points ({@code nep_gemm_*} of libnativeep): the plain oracle. */
final class CpuGemmKernels implements GemmKernels {

    static final CpuGemmKernels INSTANCE = new CpuGemmKernels();

    private CpuGemmKernels() {}

    @Override
    public void quantizeRows(int format, long x, long m, long k, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_quantize_rows(format, x, m, k, q, s, c.err(), c.cap()),
                    "FP8 quantise rows");
        }
    }

    @Override
    public void quantizeWeights(
            int format, long w, long g, long n, long k, boolean transpose, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_quantize_weights(
                            format, w, g, n, k, transpose ? 1 : 0, q, s, c.err(), c.cap()),
                    "FP8 quantise weights");
        }
    }

    @Override
    public void quantizeRowsTGrouped(
            int format, long x, long m, long ch, long[] offsets, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_quantize_rows_t_grouped(
                            format, x, m, ch, offsets.length - 1, offsets, q, s, c.err(), c.cap()),
                    "FP8 quantise token-major groups");
        }
    }

    @Override
    public void swigluQuantizeRows(
            int format, long y, long m, long inter, long hOut, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_swiglu_quantize_rows(
                            format, y, m, inter, hOut, q, s, c.err(), c.cap()),
                    "FP8 SwiGLU quantise");
        }
    }

    @Override
    public void dswigluQuantizeRows(
            int format, long y, long dh, long m, long inter, long dyOut, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_dswiglu_quantize_rows(
                            format, y, dh, m, inter, dyOut, q, s, c.err(), c.cap()),
                    "FP8 SwiGLU backward quantise");
        }
    }

    @Override
    public void groupedM(
            int format,
            long n,
            long k,
            long m,
            long[] offsets,
            long a,
            long lda,
            long sa,
            long ldsa,
            long b,
            long sb,
            long out) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_grouped_m(
                            format,
                            offsets.length - 1,
                            n,
                            k,
                            m,
                            offsets,
                            a,
                            lda,
                            sa,
                            ldsa,
                            b,
                            sb,
                            out,
                            NativeGemm.NEP_GEMM_OUT_FP32,
                            c.err(),
                            c.cap()),
                    "FP8 grouped GEMM (n " + n + ", k " + k + ")");
        }
    }

    @Override
    public void groupedK(
            int format,
            long n,
            long k,
            long[] offsets,
            long a,
            long sa,
            long b,
            long sb,
            long out) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemm.nep_gemm_grouped_k(
                            format,
                            offsets.length - 1,
                            n,
                            k,
                            offsets,
                            a,
                            sa,
                            b,
                            sb,
                            out,
                            c.err(),
                            c.cap()),
                    "FP8 weight-gradient GEMM (n " + n + ", k " + k + ")");
        }
    }
}
