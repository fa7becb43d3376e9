/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.autograd.Tape;

/**
 * How a quantised {@link ExpertPrecision} rounds the inputs of the routed experts' GEMMs: the
 * activations and weights in the forward pass (straight-through gradients), and the gradients
 * entering the backward GEMMs through the staged backward.
 */
enum GemmRounding {
    /** MXFP8: blocks of 32 along the reduction axis, for activations, weights and gradients. */
    MXFP8 {
        @Override
        NDArray activation(NDArray x) {
            return Mxfp8Numerics.fakeQuantize(x);
        }

        @Override
        NDArray weight(NDArray w) {
            return Mxfp8Numerics.fakeQuantize(w);
        }

        @Override
        NDArray gradient(Tape tape, NDArray x) {
            return Mxfp8Numerics.quantizeGradient(tape, x);
        }
    },
    /** DeepSeek-V3 FP8: 1 x 128 tiles for activations and gradients, 128 x 128 weight blocks. */
    FP8 {
        @Override
        NDArray activation(NDArray x) {
            return Fp8BlockNumerics.fakeQuantizeTiles(x);
        }

        @Override
        NDArray weight(NDArray w) {
            return Fp8BlockNumerics.fakeQuantizeBlocks(w);
        }

        @Override
        NDArray gradient(Tape tape, NDArray x) {
            return Fp8BlockNumerics.quantizeGradient(tape, x);
        }
    };

    /**
     * Rounds a GEMM's activation input along its last axis (the reduction axis).
     *
     * @param x {@code [rows, K]} in the graph
     * @return the rounded array, in the graph
     */
    abstract NDArray activation(NDArray x);

    /**
     * Rounds stacked weights {@code [El, N, K]} whose last axis is the reduction axis.
     *
     * @param w the weights, in the graph
     * @return the rounded weights, in the graph
     */
    abstract NDArray weight(NDArray w);

    /**
     * Identity forward; with a tape, rounds the gradient flowing back through the result.
     *
     * @param tape the step's tape, or null
     * @param x a GEMM output in the graph
     * @return the array to use downstream
     */
    abstract NDArray gradient(Tape tape, NDArray x);

    /**
     * Returns the rounding of a precision.
     *
     * @param precision the expert GEMM numerics
     * @return the rounding, or null for plain float32 GEMMs
     */
    static GemmRounding of(ExpertPrecision precision) {
        return switch (precision) {
            case FP32 -> null;
            case MXFP8 -> MXFP8;
            case FP8 -> FP8;
        };
    }
}
