/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.autograd;

import ai.djl.engine.EngineException;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;

/**
 * Autograd helpers for DJL's PyTorch engine.
 *
 * <p>DJL cannot tell whether the result of an operation is in the autograd graph: {@code
 * NDArray.hasGradient()} and {@code JniUtils.requiresGrad} answer for leaves only, and asking for
 * the gradient function of a leaf crashes the JVM. So code here decides by grad mode and lets
 * autograd itself refuse an array that is not in the graph.
 */
public final class Autograd {

    private static final String NOT_IN_GRAPH = "does not require grad";

    private Autograd() {}

    /**
     * Returns whether autograd records operations on this thread (a gradient collector is open).
     *
     * @return the grad mode of the calling thread
     */
    public static boolean isRecording() {
        return JniUtils.isGradMode();
    }

    /**
     * Runs an action with autograd recording off on this thread (for in-place updates of
     * parameters), restoring the previous mode afterwards.
     *
     * @param action the work
     */
    public static void withoutRecording(Runnable action) {
        boolean was = JniUtils.isGradMode();
        JniUtils.setGradMode(false);
        try {
            action.run();
        } finally {
            JniUtils.setGradMode(was);
        }
    }

    /**
     * Returns a 0-d array holding {@code value}, with {@code like}'s data type, device and manager,
     * in storage that the engine (libtorch) owns.
     *
     * <p>Use it instead of DJL's {@code mul(Number)}, {@code div(Number)}, {@code pow(Number)},
     * {@code maximum(Number)} ... on arrays in the autograd graph. DJL 0.36 implements those by
     * making the scalar from Java data (an array over a direct {@code ByteBuffer}) and closing it
     * right after the operation, while autograd keeps that scalar for the backward pass (the
     * derivative of {@code x * c} is {@code c}). Once the garbage collector frees the buffer, the
     * backward reads freed memory: gradients come out zero or garbage, depending on GC timing (seen
     * as sporadic, unreproducible divergence of training runs). The same holds for any array made
     * from Java data and closed while the graph still uses it.
     *
     * @param like gives data type, device and manager
     * @param value the value
     * @return the scalar, attached to {@code like}'s manager
     */
    public static NDArray scalar(NDArray like, double value) {
        // Made on like's own device (a fill there): a scalar copied from the host would make the
        // engine wait for the device's queued work, one wait per use on a GPU.
        return like.getManager()
                .full(new Shape(), (float) value, like.getDataType(), like.getDevice());
    }

    /**
     * Multiplies {@code a} in place by {@code factor}, the factor made on {@code a}'s device by
     * {@link #scalar} and closed after (DJL's {@code muli(Number)} would copy it from the host, a
     * copy that on a GPU waits for the queued work). For arrays outside the autograd graph
     * (gradients).
     *
     * @param a the array to scale
     * @param factor the factor, rounded to float32 as {@code muli(float)} would
     */
    public static void scaleInPlace(NDArray a, float factor) {
        try (NDArray s = scalar(a, factor)) {
            a.muli(s);
        }
    }

    /**
     * Runs backward from {@code target} with {@code grad} as its gradient, keeping the graph.
     *
     * @param target an array in the autograd graph
     * @param grad its gradient, detached, the same shape
     * @return false when {@code target} turned out not to be in the graph (nothing to do)
     */
    public static boolean backward(NDArray target, NDArray grad) {
        try {
            JniUtils.backward((PtNDArray) target, (PtNDArray) grad, true, false);
            return true;
        } catch (EngineException e) {
            String msg = e.getMessage();
            if (msg != null && msg.contains(NOT_IN_GRAPH)) {
                return false;
            }
            throw e;
        }
    }
}
