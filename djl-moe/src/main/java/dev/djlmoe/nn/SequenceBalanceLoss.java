package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.autograd.Autograd;

/**
 * DeepSeek-V3's complementary sequence-wise balance loss (section 2.1.2).
 *
 * <p>For every sequence b of length S, with {@code E} routed experts and {@code K} experts per
 * token:
 *
 * <pre>
 *   f_i  = E / (K * S) * #{(t, k) : t in sequence b, topk_idx[t, k] == i}    (no gradient)
 *   s'_t = s_t / sum_j s_{t, j}                                              (per-token normalised)
 *   P_i  = (1 / S) * sum_{t in b} s'_{t, i}
 *   L_b  = alpha * sum_i f_i * P_i
 * </pre>
 *
 * and the result is the mean of {@code L_b} over the B sequences (as Megatron's {@code
 * sequence_load_balancing_loss_func} computes per sample). With perfectly balanced routing {@code
 * sum_i f_i P_i = 1}. The loss is differentiable with respect to {@code scores} (the unbiased
 * router scores, output 2 of {@link MoeRouter}); {@code f} is counted on the host.
 */
public final class SequenceBalanceLoss {

    private SequenceBalanceLoss() {}

    /**
     * Computes the sequence-wise balance loss.
     *
     * @param scores unbiased router scores: [B * S, E] or [B, S, E] float32, tokens of a sequence
     *     contiguous (row {@code b * S + t})
     * @param topkIdx the experts each token picked: [B * S, K] or [B, S, K] int64 (or int32), in
     *     [-1, E); -1 entries count for nothing
     * @param batch B, the number of sequences
     * @param seqLen S, the tokens per sequence
     * @param topK K, the experts per token (the {@code K} in {@code f_i}'s normaliser)
     * @param alpha the loss weight (1e-4 in DeepSeek-V3)
     * @return the loss: a scalar float32 NDArray
     * @throws IllegalArgumentException on a wrong shape, type or index
     */
    public static NDArray compute(
            NDArray scores, NDArray topkIdx, int batch, int seqLen, int topK, float alpha) {
        if (batch < 1 || seqLen < 1 || topK < 1) {
            throw new IllegalArgumentException(
                    "batch, seqLen and topK must be >= 1, got batch="
                            + batch
                            + ", seqLen="
                            + seqLen
                            + ", topK="
                            + topK);
        }
        if (!Float.isFinite(alpha)) {
            throw new IllegalArgumentException("alpha must be finite, got " + alpha);
        }
        Shape ss = scores.getShape();
        if (scores.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException(
                    "scores must be float32, got " + scores.getDataType());
        }
        long tokens = (long) batch * seqLen;
        boolean flat = ss.dimension() == 2 && ss.get(0) == tokens;
        boolean batched = ss.dimension() == 3 && ss.get(0) == batch && ss.get(1) == seqLen;
        if (!flat && !batched) {
            throw new IllegalArgumentException(
                    "scores must have shape ["
                            + tokens
                            + ", E] or ["
                            + batch
                            + ", "
                            + seqLen
                            + ", E], got "
                            + ss);
        }
        int e = (int) ss.get(ss.dimension() - 1);
        if (topkIdx.size() != tokens * topK
                || topkIdx.getShape().get(topkIdx.getShape().dimension() - 1) != topK) {
            throw new IllegalArgumentException(
                    "topkIdx must have shape ["
                            + tokens
                            + ", "
                            + topK
                            + "], got "
                            + topkIdx.getShape());
        }
        long[] idx = MoeRouter.toLongs(topkIdx, "topkIdx");
        float[] f = new float[batch * e];
        float unit = (float) e / ((float) topK * seqLen);
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < seqLen * topK; i++) {
                int flatIdx = b * seqLen * topK + i;
                long x = idx[flatIdx];
                if (x < -1 || x >= e) {
                    throw new IllegalArgumentException(
                            "topkIdx must be in [-1, " + e + "), got " + x + " at flat " + flatIdx);
                }
                if (x >= 0) {
                    f[b * e + (int) x] += unit;
                }
            }
        }
        NDManager manager = scores.getManager();
        NDArray fArr =
                manager.create(f, new Shape(batch, e)).toDevice(scores.getDevice(), false); // [B,E]
        NDArray s = scores.reshape(batch, seqLen, e);
        NDArray normalised = s.div(s.sum(new int[] {2}, true)); // [B, S, E], rows sum to 1
        NDArray p = normalised.mean(new int[] {1}); // [B, E]
        NDArray mean = fArr.mul(p).sum(new int[] {1}).mean();
        // Autograd.scalar, not mul(Number): DJL's Number overloads free the scalar autograd keeps.
        return mean.mul(Autograd.scalar(mean, alpha)); // scalar
    }
}
