/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeGemm;
import dev.djlmoe.nativeep.cuda.NativeGemmCuda;

/**
 * The CUDA plug-in's entry points ({@code nep_cuda_gemm_*} of libnativeep_cuda) on one GPU,
 * launched on the legacy default stream, which libtorch uses, so DJL ops and these kernels stay
 * ordered.
 */
final class CudaGemmKernels implements GemmKernels {

    private static final long STREAM = 0L;

    private final int device;

    CudaGemmKernels(int device) {
        this.device = device;
    }

    @Override
    public void quantizeRows(int format, long x, long m, long k, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemmCuda.nep_cuda_gemm_quantize_rows(
                            device, format, x, m, k, q, s, STREAM, c.err(), c.cap()),
                    "GPU " + device + ": FP8 quantise rows");
        }
    }

    @Override
    public void quantizeWeights(
            int format, long w, long g, long n, long k, boolean transpose, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemmCuda.nep_cuda_gemm_quantize_weights(
                            device,
                            format,
                            w,
                            g,
                            n,
                            k,
                            transpose ? 1 : 0,
                            q,
                            s,
                            STREAM,
                            c.err(),
                            c.cap()),
                    "GPU " + device + ": FP8 quantise weights");
        }
    }

    @Override
    public void quantizeRowsTGrouped(
            int format, long x, long m, long ch, long[] offsets, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemmCuda.nep_cuda_gemm_quantize_rows_t_grouped(
                            device,
                            format,
                            x,
                            m,
                            ch,
                            offsets.length - 1,
                            offsets,
                            q,
                            s,
                            STREAM,
                            c.err(),
                            c.cap()),
                    "GPU " + device + ": FP8 quantise token-major groups");
        }
    }

    @Override
    public void swigluQuantizeRows(
            int format, long y, long m, long inter, long hOut, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemmCuda.nep_cuda_gemm_swiglu_quantize_rows(
                            device, format, y, m, inter, hOut, q, s, STREAM, c.err(), c.cap()),
                    "GPU " + device + ": FP8 SwiGLU quantise");
        }
    }

    @Override
    public void dswigluQuantizeRows(
            int format, long y, long dh, long m, long inter, long dyOut, long q, long s) {
        try (NativeCall c = new NativeCall()) {
            c.check(
                    NativeGemmCuda.nep_cuda_gemm_dswiglu_quantize_rows(
                            device, format, y, dh, m, inter, dyOut, q, s, STREAM, c.err(), c.cap()),
                    "GPU " + device + ": FP8 SwiGLU backward quantise");
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
                    NativeGemmCuda.nep_cuda_gemm_grouped_m(
                            device,
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
                            STREAM,
                            c.err(),
                            c.cap()),
                    "GPU " + device + ": FP8 grouped GEMM (n " + n + ", k " + k + ")");
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
                    NativeGemmCuda.nep_cuda_gemm_grouped_k(
                            device,
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
                            STREAM,
                            c.err(),
                            c.cap()),
                    "GPU " + device + ": FP8 weight-gradient GEMM (n " + n + ", k " + k + ")");
        }
    }
}
