/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.WireFormat;

/**
 * Emulated MXFP8 rounding for float32 tensors, using the native MXFP8 codec (the same one the
 * dispatch wire uses): blocks of 32 along the last axis share one E8M0 scale, elements are e4m3
 * (saturating at 448).
 */
public final class Mxfp8Numerics {

    private Mxfp8Numerics() {}

    /**
     * Returns {@code x} rounded to MXFP8 along its last axis (no gradient).
     *
     * @param x a float32 array {@code [..., D]}
     * @return a new array, same shape
     */
    public static NDArray roundTrip(NDArray x) {
        return WireRounding.roundTrip(x, WireFormat.MXFP8);
    }

    /**
     * Fake-quantises with a straight-through gradient: the value is MXFP8-rounded, the gradient
     * passes unchanged ({@code x + stopGradient(q(x) - x)}).
     *
     * @param x a float32 array in the graph, {@code [..., D]}
     * @return the rounded array, in the graph
     */
    public static NDArray fakeQuantize(NDArray x) {
        NDArray q = roundTrip(x);
        return x.add(q.sub(x.stopGradient()));
    }

    /**
     * Identity in the forward pass; in the staged backward the gradient flowing back through the
     * result is MXFP8-rounded along its last axis (the input of the backward GEMMs).
     *
     * @param tape the step's tape; null leaves gradients unrounded
     * @param x an array in the graph
     * @return the array to use downstream
     */
    public static NDArray quantizeGradient(Tape tape, NDArray x) {
        return WireRounding.roundGradient(tape, x, WireFormat.MXFP8);
    }
}
