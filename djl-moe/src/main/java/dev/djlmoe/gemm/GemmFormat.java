/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import dev.djlmoe.nativeep.NativeGemm;

/** The block-scaled FP8 formats of the native grouped GEMMs. */
public enum GemmFormat {
    /**
     * DeepSeek-V3: e4m3 elements, one fp32 scale per 1x128 tile of activations and gradients and
     * per 128x128 block of weights.
     */
    FP8_BLOCK(NativeGemm.NEP_GEMM_FP8_BLOCK),
    /** OCP MX v1.0: e4m3 elements, one E8M0 scale per 1x32 on every operand. */
    MXFP8(NativeGemm.NEP_GEMM_MXFP8);

    private final int code;

    GemmFormat(int code) {
        this.code = code;
    }

    /**
     * Returns the native format code ({@code NEP_GEMM_*}).
     *
     * @return the code
     */
    public int code() {
        return code;
    }

    /**
     * Returns the scale bytes of one row of {@code k} channels.
     *
     * @param k the channels, at least 1
     * @return the bytes
     */
    long rowScaleBytes(long k) {
        return NativeGemm.nep_gemm_row_scale_bytes(code, k);
    }

    /**
     * Returns the scale bytes of the weights {@code [g, n, k]} (or of their transpose).
     *
     * @return the bytes
     */
    long weightScaleBytes(long g, long n, long k, boolean transpose) {
        return NativeGemm.nep_gemm_weight_scale_bytes(code, g, n, k, transpose ? 1 : 0);
    }
}
