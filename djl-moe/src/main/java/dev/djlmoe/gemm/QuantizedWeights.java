/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeMemory;

/**
 * The routed experts' weights quantised once per step: the fused gate/up weight {@code W13 [G, 2I,
 * H]} (gate rows, then up rows) and the down weight {@code W2 [G, H, I]}, each as e4m3 bytes and
 * scales, for the forward GEMMs and (when kept for a backward) transposed for the activation
 * gradient GEMMs. The arrays are DJL arrays of the weights' device, owned by the manager given to
 * {@link #quantize}.
 */
public final class QuantizedWeights {

    private final GemmFormat format;
    private final int groups;
    private final long inter;
    private final long hidden;
    private final NDArray[] w13;
    private final NDArray[] w2;
    private final NDArray[] w13t;
    private final NDArray[] w2t;
    private boolean forwardClosed;

    private QuantizedWeights(
            GemmFormat format,
            int groups,
            long inter,
            long hidden,
            NDArray[] w13,
            NDArray[] w2,
            NDArray[] w13t,
            NDArray[] w2t) {
        this.format = format;
        this.groups = groups;
        this.inter = inter;
        this.hidden = hidden;
        this.w13 = w13;
        this.w2 = w2;
        this.w13t = w13t;
        this.w2t = w2t;
    }

    /**
     * Quantises the stacked weights of one step.
     *
     * @param manager owns the quantised arrays (e.g. the step's manager)
     * @param format the FP8 format
     * @param w13 gate and up weights stacked: [G, 2I, H] float32
     * @param w2 down weights: [G, H, I] float32, on the device of {@code w13}
     * @param forBackward whether to keep the transposed copies the backward needs
     * @return the quantised weights
     * @throws IllegalArgumentException naming the argument on a wrong shape, type or device, or G
     *     above {@code NEP_GEMM_MAX_GROUPS}
     */
    public static QuantizedWeights quantize(
            NDManager manager, GemmFormat format, NDArray w13, NDArray w2, boolean forBackward) {
        if (format == null) {
            throw new IllegalArgumentException("argument 'format' must not be null");
        }
        Shape s13 = w13.getShape();
        if (s13.dimension() != 3 || s13.get(1) % 2 != 0 || s13.get(1) == 0) {
            throw new IllegalArgumentException(
                    "argument 'w13' must have shape [G, 2I, H] with I >= 1, got " + s13);
        }
        int groups = (int) s13.get(0);
        long inter = s13.get(1) / 2;
        long hidden = s13.get(2);
        GemmArrays arrays = new GemmArrays(manager, w13.getDevice());
        NDArray a13 = arrays.input(w13, "w13", s13, "'w13'");
        NDArray a2 = arrays.input(w2, "w2", new Shape(groups, hidden, inter), "'w13'");
        GemmKernels kernels = GemmKernels.of(arrays.device());
        NDArray[] q13 = quantize(kernels, arrays, format, a13, groups, 2 * inter, hidden, false);
        NDArray[] q2 = quantize(kernels, arrays, format, a2, groups, hidden, inter, false);
        NDArray[] q13t = null;
        NDArray[] q2t = null;
        if (forBackward) {
            q13t = quantize(kernels, arrays, format, a13, groups, 2 * inter, hidden, true);
            q2t = quantize(kernels, arrays, format, a2, groups, hidden, inter, true);
        }
        closeCopy(a13, w13);
        closeCopy(a2, w2);
        return new QuantizedWeights(format, groups, inter, hidden, q13, q2, q13t, q2t);
    }

    private static NDArray[] quantize(
            GemmKernels kernels,
            GemmArrays arrays,
            GemmFormat format,
            NDArray w,
            int g,
            long n,
            long k,
            boolean transpose) {
        NDArray q = transpose ? arrays.bytes(g, k, n) : arrays.bytes(g, n, k);
        NDArray s = arrays.bytes(format.weightScaleBytes(g, n, k, transpose));
        kernels.quantizeWeights(
                format.code(),
                GemmArrays.address(w, "w"),
                g,
                n,
                k,
                transpose,
                GemmArrays.address(q, "q"),
                GemmArrays.address(s, "s"));
        return new NDArray[] {q, s};
    }

    private static void closeCopy(NDArray used, NDArray given) {
        if (used != given) {
            used.close();
        }
    }

    /**
     * Returns the format.
     *
     * @return the format
     */
    public GemmFormat getFormat() {
        return format;
    }

    /**
     * Returns the number of groups (local experts) G.
     *
     * @return G
     */
    public int getGroups() {
        return groups;
    }

    /**
     * Returns the intermediate size I.
     *
     * @return I
     */
    public long getIntermediateSize() {
        return inter;
    }

    /**
     * Returns the hidden size H.
     *
     * @return H
     */
    public long getHiddenSize() {
        return hidden;
    }

    /**
     * Returns whether the transposed copies for the backward were kept.
     *
     * @return true when {@link #quantize} was asked for them
     */
    public boolean hasBackward() {
        return w13t != null;
    }

    /**
     * Closes the copies the forward GEMMs read (W13 and W2, elements and scales), keeping the
     * transposed ones: once a training forward ran, its backward reads only those, so the forward
     * copies (the routed experts' parameter count in bytes) need not wait for it. A later forward
     * with these weights is refused.
     */
    public void closeForward() {
        for (NDArray a : new NDArray[] {w13[0], w13[1], w2[0], w2[1]}) {
            a.close();
        }
        forwardClosed = true;
    }

    /**
     * Returns whether the copies the forward GEMMs read are still open ({@link #closeForward}).
     *
     * @return false once closed
     */
    public boolean hasForward() {
        return !forwardClosed;
    }

    /** Checks that the weights are on the call's device. */
    void checkDevice(GemmArrays arrays) {
        NativeMemory.checkDevice(w13()[0], "weights", arrays.device(), "'x'");
    }

    NDArray[] w13() {
        checkForward();
        return w13;
    }

    NDArray[] w2() {
        checkForward();
        return w2;
    }

    private void checkForward() {
        if (forwardClosed) {
            throw new IllegalStateException(
                    "the forward GEMMs' quantised weights were closed (closeForward): quantise the"
                            + " weights again for another forward");
        }
    }

    NDArray[] w13t() {
        return w13t;
    }

    NDArray[] w2t() {
        return w2t;
    }

    /**
     * Returns every quantised array still open (elements and scales), e.g. to close them early.
     *
     * @return the arrays
     */
    public NDList arrays() {
        NDList all = new NDList();
        if (!forwardClosed) {
            all.addAll(new NDList(w13[0], w13[1], w2[0], w2[1]));
        }
        if (w13t != null) {
            all.addAll(new NDList(w13t[0], w13t[1], w2t[0], w2t[1]));
        }
        return all;
    }
}
