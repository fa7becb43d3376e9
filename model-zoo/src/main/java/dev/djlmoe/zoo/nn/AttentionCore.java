/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import dev.djlmoe.autograd.Autograd;

/** The steps every attention kind here shares once its scores are computed. */
final class AttentionCore {

    private AttentionCore() {}

    /**
     * Softmax attention of scaled queries over keys and values, heads merged: {@code softmax(q k^T
     * scale + mask) v}.
     *
     * <p>The scale multiplies the queries ({@code [B, N, S, dk]}) rather than the scores ({@code
     * [B, N, S, L]}): at 16 heads x 4096 tokens a pass over the scores is 1 GiB read and written,
     * forward and backward, against 48 MiB for the queries.
     *
     * @param queries {@code [B, N, S, dk]}
     * @param keys {@code [B, N, L, dk]}
     * @param scale the softmax scale
     * @param mask the additive mask, broadcast against the scores
     * @param values {@code [B, N, L, dv]}
     * @return {@code [B, S, N * dv]}
     */
    static NDArray attend(
            NDArray queries, NDArray keys, double scale, NDArray mask, NDArray values) {
        long b = queries.getShape().get(0);
        long n = queries.getShape().get(1);
        long s = queries.getShape().get(2);
        long dv = values.getShape().get(3);
        // Autograd.scalar, not mul(Number): DJL's Number overloads free the scalar autograd keeps.
        NDArray scaledQ = queries.mul(Autograd.scalar(queries, scale));
        NDArray keysT = keys.transpose(0, 1, 3, 2);
        NDArray scores = scaledQ.matMul(keysT); // [B, N, S, L]
        NDArray masked = scores.add(mask);
        NDArray probs = masked.softmax(-1);
        NDArray ctx = probs.matMul(values); // [B, N, S, dv]
        NDArray moved = ctx.transpose(0, 2, 1, 3);
        NDArray out = moved.reshape(b, s, n * dv);
        // [B, N, S, L] arrays, the largest of a training step's forward (1 GiB each per layer at
        // 16 heads x 4096 tokens): autograd keeps only the softmax's output for the backward, so
        // the scores and their masked copy are freed now, not with the step's arrays. (Closing a
        // handle never frees what autograd saved: it holds its own reference.)
        scaledQ.close();
        keysT.close();
        scores.close();
        masked.close();
        probs.close();
        moved.close();
        ctx.close();
        return out;
    }

    /**
     * Repeats each of G key/value heads for the {@code N / G} query heads it serves: {@code [B, G,
     * L, d] -> [B, G, group, L, d] -> [B, N, L, d]}; head h uses kv head {@code h / group}.
     *
     * @param kv {@code [B, G, L, d]}
     * @param group {@code N / G}
     * @return {@code [B, N, L, d]}, or {@code kv} itself when the group is 1
     */
    static NDArray repeatKv(NDArray kv, int group) {
        if (group == 1) {
            return kv;
        }
        long b = kv.getShape().get(0);
        long g = kv.getShape().get(1);
        long l = kv.getShape().get(2);
        long d = kv.getShape().get(3);
        return kv.expandDims(2).repeat(2, group).reshape(b, g * group, l, d);
    }
}
