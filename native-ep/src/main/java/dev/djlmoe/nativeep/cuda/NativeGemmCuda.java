/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;

/**
 * JavaCPP binding of the grouped FP8 GEMMs' CUDA entry points ({@code nativeep/gemm_api.h}, the
 * {@code nep_cuda_gemm_*} functions of libnativeep_cuda): the CPU twins of {@code
 * dev.djlmoe.nativeep.NativeGemm} with the GPU {@code device} first and a CUDA {@code stream} (0 =
 * the legacy default stream, libtorch's) before {@code err}. Tensor arguments are device addresses;
 * group offsets stay host arrays. Calls are asynchronous on the stream. Like {@link NativeEpCuda}
 * this class loads the plug-in at first use; the stand-in built without nvcc fails every call with
 * {@code NEP_ERR_UNSUPPORTED}.
 */
@Properties(
        value = {
            @Platform(
                    value = "linux-x86_64",
                    include = {"nativeep/gemm_api.h"},
                    link = "nativeep_cuda")
        })
public final class NativeGemmCuda {

    static {
        Loader.load();
    }

    private NativeGemmCuda() {}

    /** No GEMM launched yet on this thread. */
    public static final int NEP_GEMM_TIER_NONE = 0;

    /** Portable tier: mma.sync m16n8k32 e4m3. */
    public static final int NEP_GEMM_TIER_MMA = 1;

    /** Hopper tier: wgmma fed by TMA. */
    public static final int NEP_GEMM_TIER_WGMMA = 2;

    public static native int nep_cuda_gemm_quantize_rows(
            int device,
            int format,
            long x,
            long m,
            long k,
            long q,
            long s,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_quantize_weights(
            int device,
            int format,
            long w,
            long numGroups,
            long n,
            long k,
            int transpose,
            long q,
            long s,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_quantize_rows_t_grouped(
            int device,
            int format,
            long x,
            long m,
            long c,
            int numGroups,
            @Cast("const int64_t*") long[] groupOffsets,
            long q,
            long s,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_swiglu_quantize_rows(
            int device,
            int format,
            long y,
            long m,
            long inter,
            long hOut,
            long q,
            long s,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_dswiglu_quantize_rows(
            int device,
            int format,
            long y,
            long dh,
            long m,
            long inter,
            long dyOut,
            long q,
            long s,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_grouped_m(
            int device,
            int format,
            int numGroups,
            long n,
            long k,
            long m,
            @Cast("const int64_t*") long[] groupOffsets,
            long a,
            long lda,
            long sa,
            long ldsa,
            long b,
            long sb,
            long c,
            int outDtype,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_gemm_grouped_k(
            int device,
            int format,
            int numGroups,
            long n,
            long k,
            @Cast("const int64_t*") long[] groupOffsets,
            long a,
            long sa,
            long b,
            long sb,
            long c,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    /**
     * @return the tier ({@code NEP_GEMM_TIER_*}) of the last GEMM this thread launched
     */
    public static native int nep_cuda_gemm_last_tier();
}
