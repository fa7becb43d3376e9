/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;

/**
 * Rotary position embeddings (DJL has none).
 *
 * @deprecated used only by the deprecated {@link CausalSelfAttention}; use {@link
 *     RotaryEmbedding}.
 */
@Deprecated
public final class Rope {

    private Rope() {}

    /**
     * Returns cos and sin tables for positions {@code 0..s-1}, in the half-split layout (the
     * frequency of channel {@code i} and {@code i + d/2} is the same).
     *
     * @param manager the manager for the arrays
     * @param s positions
     * @param d rotary dimension (even)
     * @param theta the base
     * @return {@code {cos [S, d], sin [S, d]}}
     */
    public static NDArray[] cosSin(NDManager manager, long s, long d, float theta) {
        int half = (int) (d / 2);
        float[] cos = new float[(int) (s * d)];
        float[] sin = new float[(int) (s * d)];
        for (int p = 0; p < s; p++) {
            for (int i = 0; i < half; i++) {
                double invFreq = Math.pow(theta, -2.0 * i / d);
                double a = p * invFreq;
                float c = (float) Math.cos(a);
                float sn = (float) Math.sin(a);
                cos[(int) (p * d + i)] = c;
                cos[(int) (p * d + i + half)] = c;
                sin[(int) (p * d + i)] = sn;
                sin[(int) (p * d + i + half)] = sn;
            }
        }
        return new NDArray[] {
            manager.create(cos, new Shape(s, d)), manager.create(sin, new Shape(s, d))
        };
    }

    /**
     * Rotates {@code x} in the half-split layout: {@code x * cos + rotate_half(x) * sin}.
     *
     * @param x {@code [..., S, d]}
     * @param cos {@code [S, d]}
     * @param sin {@code [S, d]}
     * @return {@code [..., S, d]}
     */
    public static NDArray applyHalfSplit(NDArray x, NDArray cos, NDArray sin) {
        int axis = x.getShape().dimension() - 1;
        long d = x.getShape().get(axis);
        NDArray[] halves = x.split(new long[] {d / 2}, axis).toArray(new NDArray[0]);
        NDArray rotated = halves[1].neg().concat(halves[0], axis);
        return x.mul(cos).add(rotated.mul(sin));
    }
}
