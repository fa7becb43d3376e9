/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

/**
 * Figures of one training step on one rank.
 *
 * @param loss the task loss averaged over all ranks (without auxiliary losses)
 * @param auxLoss the sum of the MoE layers' balance losses on this rank
 * @param gradNorm the global gradient norm before clipping, over all ranks' parameters
 * @param tokens tokens this rank processed
 * @param stepNanos wall time of the step
 * @param epNanos time spent in EP dispatch and combine (forward and backward)
 * @param epBytes wire bytes this rank sent in dispatch and combine
 * @param maxLoadImbalance over MoE layers, the largest {@code max load / mean load} of the step
 * @param layerLoads selections per expert of each MoE layer in this step, over all ranks: {@code
 *     layerLoads[i][e]} is expert e of the i-th MoE layer in forward order (no rows without MoE
 *     layers)
 */
public record StepResult(
        float loss,
        float auxLoss,
        float gradNorm,
        long tokens,
        long stepNanos,
        long epNanos,
        long epBytes,
        float maxLoadImbalance,
        long[][] layerLoads) {

    /**
     * Returns the selections per expert of the first MoE layer in this step, over all ranks.
     *
     * @return {@code layerLoads[0]}, or an empty array without MoE layers
     */
    public long[] expertLoad() {
        return layerLoads.length == 0 ? new long[0] : layerLoads[0];
    }

    /**
     * Returns the share of the step spent in EP communication.
     *
     * @return {@code epNanos / stepNanos}
     */
    public double epShare() {
        return stepNanos == 0 ? 0 : (double) epNanos / stepNanos;
    }
}
