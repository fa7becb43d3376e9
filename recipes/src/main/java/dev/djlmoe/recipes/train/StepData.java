/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.dataset.Batch;
import ai.djl.training.listener.TrainingListener.BatchData;
import dev.djlmoe.train.StepResult;
import java.util.Map;

/**
 * What {@link ai.djl.training.listener.TrainingListener#onTrainingBatch} receives after each step
 * of the loop: DJL's {@link BatchData} over this rank's share of the global batch (its inputs and
 * labels in {@link #getBatch()}, progress = the step's index, total = the run's steps), plus the
 * step's index and figures for the recipe's own listeners. The labels and predictions maps are
 * empty: the loop keeps no forward output, so DJL evaluator listeners see no training batches (they
 * do see the held-out batches, through {@code onValidationBatch}).
 *
 * @see ai.djl.training.listener.TrainingListener
 */
public final class StepData extends BatchData {

    private final long step;
    private final StepResult result;

    /**
     * Creates the data of a finished step.
     *
     * @param batch this rank's share of the step's batch
     * @param step the step's index, from 0
     * @param result the step's figures
     */
    public StepData(Batch batch, long step, StepResult result) {
        super(batch, Map.of(), Map.of());
        this.step = step;
        this.result = result;
    }

    /**
     * Returns the step's index.
     *
     * @return the index, from 0 (the step number shown to users is one more)
     */
    public long step() {
        return step;
    }

    /**
     * Returns the step's figures (loss and gradient norm over all ranks, timings, expert loads).
     *
     * @return the figures
     */
    public StepResult result() {
        return result;
    }
}
