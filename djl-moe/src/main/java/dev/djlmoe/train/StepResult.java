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
 * @param expertLoad selections per expert of the first MoE layer in this step, over all ranks
 *     (empty without MoE layers)
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
        long[] expertLoad) {

    /**
     * Returns the share of the step spent in EP communication.
     *
     * @return {@code epNanos / stepNanos}
     */
    public double epShare() {
        return stepNanos == 0 ? 0 : (double) epNanos / stepNanos;
    }
}
