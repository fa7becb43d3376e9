/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;

/**
 * JavaCPP binding of the grouped FP8 GEMMs' CPU entry points ({@code nativeep/gemm_api.h}, the
 * {@code nep_gemm_*} functions of libnativeep): the quantisers and the M- and K-grouped GEMMs in
 * the two block-scaled formats, computed in plain C++ (the oracle the CUDA plug-in's kernels are
 * tested against, with the same numerics).
 *
 * <p>Tensor arguments are raw addresses of contiguous host buffers; group offsets are Java arrays.
 * Every function that can fail returns a status ({@link NativeEp#NEP_OK} on success) and writes a
 * message naming the argument, its value and the limit into {@code err}; callers check it through
 * {@code dev.djlmoe.core.NativeCall}. The CUDA twins live in {@code
 * dev.djlmoe.nativeep.cuda.NativeGemmCuda}.
 */
@Properties(
        value = {
            @Platform(
                    value = "linux-x86_64",
                    include = {"nativeep/gemm_api.h"},
                    link = "nativeep")
        })
public final class NativeGemm {

    static {
        Loader.load();
    }

    private NativeGemm() {}

    /** DeepSeek-V3 block scaling: 1x128 fp32 scales on rows, 128x128 on weights. */
    public static final int NEP_GEMM_FP8_BLOCK = 2;

    /** OCP MX v1.0: one E8M0 scale byte per 1x32. */
    public static final int NEP_GEMM_MXFP8 = 3;

    /** Output element type float32. */
    public static final int NEP_GEMM_OUT_FP32 = 0;

    /** Output element type bfloat16 (round to nearest even). */
    public static final int NEP_GEMM_OUT_BF16 = 1;

    /** Most groups (local experts) of one call. */
    public static final int NEP_GEMM_MAX_GROUPS = 1024;

    /** Per-group token padding of the K-grouped layout. */
    public static final int NEP_GEMM_TOKEN_TILE = 128;

    /**
     * @return the ABI version of {@code gemm_api.h} in the loaded library
     */
    public static native int nep_gemm_abi_version();

    /**
     * @param format {@link #NEP_GEMM_FP8_BLOCK} or {@link #NEP_GEMM_MXFP8}
     * @param k channels of a row
     * @return scale bytes of one row, or -1 when invalid
     */
    public static native long nep_gemm_row_scale_bytes(int format, long k);

    /**
     * @param format the format
     * @param numGroups G
     * @param n rows of one weight
     * @param k columns of one weight
     * @param transpose 1 for the scales of the transposed weights
     * @return scale bytes of the weights [G, N, K], or -1 when invalid
     */
    public static native long nep_gemm_weight_scale_bytes(
            int format, long numGroups, long n, long k, int transpose);

    public static native int nep_gemm_padded_rows(
            int numGroups,
            @Cast("const int64_t*") long[] groupOffsets,
            @Cast("int64_t*") long[] paddedRows,
            @Cast("int64_t*") long[] paddedOffsets,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_quantize_rows(
            int format,
            long x,
            long m,
            long k,
            long q,
            long s,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_quantize_weights(
            int format,
            long w,
            long numGroups,
            long n,
            long k,
            int transpose,
            long q,
            long s,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_quantize_rows_t_grouped(
            int format,
            long x,
            long m,
            long c,
            int numGroups,
            @Cast("const int64_t*") long[] groupOffsets,
            long q,
            long s,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_swiglu_quantize_rows(
            int format,
            long y,
            long m,
            long inter,
            long hOut,
            long q,
            long s,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_dswiglu_quantize_rows(
            int format,
            long y,
            long dh,
            long m,
            long inter,
            long dyOut,
            long q,
            long s,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_grouped_m(
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
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_gemm_grouped_k(
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
            @Cast("char*") BytePointer err,
            long errCap);
}
