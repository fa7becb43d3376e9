/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

/**
 * Numerics of the routed experts' GEMMs.
 *
 * <p>On CPU, {@link #MXFP8} is an emulation: tensors stay float32, but every GEMM input is rounded
 * as MXFP8 would store it (OCP MX v1.0: e4m3 elements, one E8M0 power-of-two scale per 32 elements
 * along the reduction dimension), so training sees MXFP8's rounding error. It does not make
 * anything faster; real MXFP8 speed needs FP8 tensor cores (e.g. NVIDIA Blackwell's block scaled
 * MMA).
 */
public enum ExpertPrecision {
    /** Plain float32 GEMMs. */
    FP32,
    /**
     * MXFP8 numerics: activations and weights quantised along the reduction dimension in the
     * forward pass with straight-through gradients; with a tape, the gradients entering the
     * backward GEMMs are quantised along their last axis too.
     */
    MXFP8
}
