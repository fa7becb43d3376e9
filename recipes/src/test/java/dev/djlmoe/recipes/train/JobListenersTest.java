/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.OutputStream;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A job's own DJL {@link TrainingListener}s see the run as DJL's {@code EasyTrain} would show it:
 * one begin and one end, one training batch per step (this rank's share, with its progress), one
 * validation batch per held-out batch with labels and predictions, and one epoch for a run that
 * finishes; a stopped run ends without an epoch.
 */
class JobListenersTest {

    static final int STEPS = 4;

    /** Counts the calls and what they carried. */
    static final class Counting extends TrainingListenerAdapter {
        int begin;
        int end;
        int epochs;
        int validation;
        final List<Long> progress = new ArrayList<>();
        final List<Long> steps = new ArrayList<>();
        final List<Integer> sizes = new ArrayList<>();
        boolean validationHasPredictions = true;

        @Override
        public void onTrainingBegin(Trainer trainer) {
            begin++;
        }

        @Override
        public void onTrainingEnd(Trainer trainer) {
            end++;
        }

        @Override
        public void onEpoch(Trainer trainer) {
            epochs++;
        }

        @Override
        public void onTrainingBatch(Trainer trainer, BatchData batchData) {
            progress.add(batchData.getBatch().getProgress());
            sizes.add(batchData.getBatch().getSize());
            if (batchData instanceof StepData s) {
                steps.add(s.step());
            }
        }

        @Override
        public void onValidationBatch(Trainer trainer, BatchData batchData) {
            validation++;
            validationHasPredictions &=
                    batchData.getPredictions().size() == 1
                            && batchData.getLabels().size() == 1
                            && batchData
                                            .getPredictions()
                                            .values()
                                            .iterator()
                                            .next()
                                            .head()
                                            .getShape()
                                            .dimension()
                                    == 3;
        }
    }

    private static PretrainOptions options() {
        return PretrainOptions.defaults()
                .withSteps(STEPS)
                .withBatch(8, 32)
                .withLearningRate(3e-3f, 1)
                .withRunDir(null)
                .withLogEvery(100)
                .withDevice("cpu");
    }

    private static Pretrain.Job job(TrainingListener l) {
        return Pretrain.Job.pretrain(
                        HfMoeConfig.preset("tiny"),
                        new CorpusSource(TextCorpus.embedded(), 0.05, 42),
                        options())
                .withListeners(l);
    }

    @Test
    void aFinishedRunShowsEveryStepAndTheHeldOutBatches() {
        Counting c = new Counting();
        Pretrain.Result r =
                Pretrain.run(
                        job(c),
                        new PrintStream(OutputStream.nullOutputStream()),
                        StopSignal.none(),
                        null);
        assertFalse(r.stopped());
        assertEquals(1, c.begin);
        assertEquals(1, c.end);
        assertEquals(1, c.epochs);
        assertEquals(List.of(0L, 1L, 2L, 3L), c.progress);
        assertEquals(List.of(0L, 1L, 2L, 3L), c.steps);
        assertEquals(List.of(8, 8, 8, 8), c.sizes);
        assertEquals(HeldOutEvaluationListener.BATCHES, c.validation);
        assertTrue(c.validationHasPredictions, "validation batches carry labels and logits");
        assertFalse(Double.isNaN(r.heldOutLoss()));
    }

    @Test
    void aStoppedRunEndsWithoutAnEpoch() {
        Counting c = new Counting();
        StopSignal stop = StopSignal.none();
        Pretrain.StepObserver obs =
                new Pretrain.StepObserver() {
                    @Override
                    public void stepDone(int step, EpTrainer t, StepResult res) {
                        if (step == 1) {
                            stop.request();
                        }
                    }

                    @Override
                    public boolean seesGradients() {
                        return false;
                    }
                };
        Pretrain.Result r =
                Pretrain.run(job(c), new PrintStream(OutputStream.nullOutputStream()), stop, obs);
        assertTrue(r.stopped());
        assertEquals(2, r.endStep());
        assertEquals(1, c.begin);
        assertEquals(1, c.end);
        assertEquals(0, c.epochs);
        assertEquals(List.of(0L, 1L), c.steps);
        assertEquals(0, c.validation);
        assertTrue(Double.isNaN(r.heldOutLoss()));
    }
}
