/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

/**
 * Numerics of the routed experts' GEMMs.
 *
 * <p>On CPU, the quantised precisions are emulations by default: tensors stay float32, but every
 * GEMM input is rounded as the format would store it, so training sees the format's rounding error.
 * They do not make anything faster. On a GPU both run as real FP8 tensor-core GEMMs through the
 * native grouped kernels (the scales applied around the MMA, as DeepSeek-V3 does for {@link #FP8};
 * MXFP8's E8M0 scales likewise, since Hopper has no MX block-scaled MMA). {@link ExpertGemmPath}
 * says where they run and how to select the native path on the CPU.
 */
public enum ExpertPrecision {
    /** Plain float32 GEMMs. */
    FP32,
    /**
     * MXFP8 numerics (OCP MX v1.0: e4m3 elements, one E8M0 power-of-two scale per 32 elements along
     * the reduction dimension): activations and weights quantised along the reduction dimension in
     * the forward pass with straight-through gradients; with a tape, the gradients entering the
     * backward GEMMs are quantised along their last axis too.
     */
    MXFP8,
    /**
     * DeepSeek-V3 numerics: e4m3 elements, activations and gradients in 1x128 tiles along the
     * reduction axis with fp32 scales, weights in 128x128 blocks with fp32 scales, fp32
     * accumulation. Forward rounding with straight-through gradients; with a tape, the gradients
     * entering the backward GEMMs are quantised in 1x128 tiles along their last axis (the reduction
     * axis of the GEMM that takes them with the weights). See {@link Fp8BlockNumerics}.
     */
    FP8
}
