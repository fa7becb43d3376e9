/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.util.List;

/**
 * Everything a run's metrics file holds: the training steps and the held-out evaluations.
 *
 * @param steps the step records in step order
 * @param heldOut the held-out evaluations in step order (empty when none was measured)
 */
public record RunMetrics(List<StepRecord> steps, List<HeldOutRecord> heldOut) {

    /**
     * A run with steps only.
     *
     * @param steps the step records
     * @return the metrics, without held-out evaluations
     */
    public static RunMetrics of(List<StepRecord> steps) {
        return new RunMetrics(steps, List.of());
    }

    /**
     * Returns the unigram baseline of the training data, from the last step that recorded it.
     *
     * @return nats per token, or NaN when no step recorded it
     */
    public double unigramBaseline() {
        for (int i = steps.size() - 1; i >= 0; i--) {
            if (Double.isFinite(steps.get(i).unigramBaseline())) {
                return steps.get(i).unigramBaseline();
            }
        }
        return Double.NaN;
    }
}
