/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.WireFormat;

/**
 * Emulated block-scaled FP8 rounding for float32 tensors, as DeepSeek-V3 trains its GEMMs: e4m3
 * elements (round to nearest even, saturating at 448) with fp32 scales, activations and gradients
 * in tiles of 1 x 128 along the reduction axis, weights in blocks of 128 x 128.
 *
 * <p>The scale rule is the FP8 wire's: {@code scale = max(amax, 448 * 2^-126) / 448} with {@code
 * amax} the largest finite magnitude in the tile or block, elements {@code e4m3(x * (448 /
 * max(amax, 448 * 2^-126)))}, decoded as {@code element * scale}; an all-zero tile or block decodes
 * to exact zeros. Tiles go through the native FP8 codec that dispatch uses, so the GEMM inputs and
 * the wire round alike; blocks apply the same rule to every element of a 128 x 128 square. A shape
 * that is not a multiple of 128 gets shorter last tiles and blocks with their own scales (nothing
 * is padded). Non-finite input is propagated as the wire does: e4m3 has no infinity, so NaN and
 * infinite elements become NaN and are left out of {@code amax}, and the other elements of their
 * tile or block keep their precision.
 */
public final class Fp8BlockNumerics {

    /** Elements per activation tile along the reduction axis, and the side of a weight block. */
    public static final int BLOCK = 128;

    private static final float E4M3_MAX = 448f;

    /** The floor of amax in the scale rule, which keeps {@code amax / 448} a normal float. */
    private static final float AMAX_FLOOR = E4M3_MAX * 0x1p-126f;

    private Fp8BlockNumerics() {}

    /**
     * Returns {@code x} rounded to FP8 in tiles of 1 x 128 along its last axis (no gradient).
     *
     * @param x a float32 array {@code [..., D]}
     * @return a new array, same shape
     */
    public static NDArray roundTripTiles(NDArray x) {
        return WireRounding.roundTrip(x, WireFormat.FP8);
    }

    /**
     * Returns {@code w} rounded to FP8 in blocks of 128 x 128 over its last two axes, each matrix
     * of a stack on its own (no gradient).
     *
     * @param w a float32 array {@code [..., N, K]}
     * @return a new array, same shape and device
     * @throws IllegalArgumentException if {@code w} has fewer than two axes, is not float32 or has
     *     more than {@code Integer.MAX_VALUE} elements
     */
    public static NDArray roundTripBlocks(NDArray w) {
        Shape s = w.getShape();
        if (s.dimension() < 2) {
            throw new IllegalArgumentException(
                    "w must have at least 2 axes [..., N, K], got shape " + s);
        }
        if (w.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException("w must be float32, got " + w.getDataType());
        }
        if (s.size() > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(
                    "w has "
                            + s.size()
                            + " elements, more than the "
                            + Integer.MAX_VALUE
                            + " the block rounding handles");
        }
        if (!Device.Type.CPU.equals(w.getDevice().getDeviceType())) {
            // Rounded on the host: the same bits as a CPU array.
            try (NDArray host = w.stopGradient().toDevice(Device.cpu(), true);
                    NDArray q = roundTripBlocks(host)) {
                return q.toDevice(w.getDevice(), true);
            }
        }
        int rows = (int) s.get(s.dimension() - 2);
        int cols = (int) s.get(s.dimension() - 1);
        float[] v = w.stopGradient().toFloatArray();
        int matrix = rows * cols;
        for (int base = 0; matrix > 0 && base < v.length; base += matrix) {
            for (int r0 = 0; r0 < rows; r0 += BLOCK) {
                for (int c0 = 0; c0 < cols; c0 += BLOCK) {
                    roundBlock(
                            v,
                            base,
                            cols,
                            r0,
                            Math.min(rows, r0 + BLOCK),
                            c0,
                            Math.min(cols, c0 + BLOCK));
                }
            }
        }
        return w.getManager().create(v, s);
    }

    /**
     * Fake-quantises an activation with a straight-through gradient: the value is rounded in 1 x
     * 128 tiles along the last axis, the gradient passes unchanged.
     *
     * @param x a float32 array in the graph, {@code [..., D]}
     * @return the rounded array, in the graph
     */
    public static NDArray fakeQuantizeTiles(NDArray x) {
        NDArray q = roundTripTiles(x);
        return x.add(q.sub(x.stopGradient()));
    }

    /**
     * Fake-quantises a weight with a straight-through gradient: the value is rounded in 128 x 128
     * blocks over the last two axes, the gradient passes unchanged.
     *
     * @param w a float32 array in the graph, {@code [..., N, K]}
     * @return the rounded array, in the graph
     */
    public static NDArray fakeQuantizeBlocks(NDArray w) {
        NDArray q = roundTripBlocks(w);
        return w.add(q.sub(w.stopGradient()));
    }

    /**
     * Identity in the forward pass; in the staged backward the gradient flowing back through the
     * result is rounded in 1 x 128 tiles along its last axis (the reduction axis of the backward
     * GEMM that this gradient enters with the weights).
     *
     * @param tape the step's tape; null leaves gradients unrounded
     * @param x an array in the graph
     * @return the array to use downstream
     */
    public static NDArray quantizeGradient(Tape tape, NDArray x) {
        return WireRounding.roundGradient(tape, x, WireFormat.FP8);
    }

    /** Rounds rows [r0, r1) x columns [c0, c1) of the row-major matrix at {@code base}. */
    private static void roundBlock(float[] v, int base, int cols, int r0, int r1, int c0, int c1) {
        float amax = AMAX_FLOOR;
        for (int r = r0; r < r1; r++) {
            for (int i = base + r * cols + c0, end = base + r * cols + c1; i < end; i++) {
                float a = Math.abs(v[i]);
                if (a <= Float.MAX_VALUE && a > amax) { // false for NaN and infinity
                    amax = a;
                }
            }
        }
        float scale = amax / E4M3_MAX;
        float factor = E4M3_MAX / amax;
        for (int r = r0; r < r1; r++) {
            for (int i = base + r * cols + c0, end = base + r * cols + c1; i < end; i++) {
                v[i] = e4m3(v[i] * factor) * scale;
            }
        }
    }

    /**
     * Rounds to the nearest e4m3fn value, ties to even, saturating finite values at 448; NaN and
     * infinity give NaN (e4m3fn has no infinity).
     */
    static float e4m3(float v) {
        if (!Float.isFinite(v)) {
            return Float.NaN;
        }
        float a = Math.min(Math.abs(v), E4M3_MAX);
        // Three mantissa bits: the step in binade [2^e, 2^(e+1)) is 2^(e-3); below 2^-6 (the
        // subnormals) it stays 2^-9. Dividing by a power of two is exact, rint rounds half to even.
        int e = Math.max(Math.getExponent(a), -6);
        float step = Math.scalb(1f, e - 3);
        return Math.copySign((float) Math.rint(a / step) * step, v);
    }
}
