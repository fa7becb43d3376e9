/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.Batch;
import ai.djl.training.listener.TrainingListener.BatchData;
import ai.djl.training.listener.TrainingListenerAdapter;
import ai.djl.translate.Batchifier;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.util.Map;

/**
 * Measures the loss on the data's held-out part when a run finishes all its steps: {@link #BATCHES}
 * global batches, forward only, every rank its share, the mean over ranks recorded in {@link
 * TrainingRun#heldOutLoss()}. A DJL training listener that uses {@code onTrainingEnd}; it shows
 * each held-out batch to the trainer's own listeners through {@code onValidationBatch} (this rank's
 * labels and logits), so a DJL evaluator listener accumulates the held-out loss too.
 */
public final class HeldOutEvaluationListener extends TrainingListenerAdapter {

    /** Global batches of held-out data evaluated at the end of a run. */
    public static final int BATCHES = 8;

    private static final org.slf4j.Logger LOGGER =
            org.slf4j.LoggerFactory.getLogger(HeldOutEvaluationListener.class);

    private final TrainingRun run;

    /**
     * Creates the listener of a run.
     *
     * @param run the run
     */
    public HeldOutEvaluationListener(TrainingRun run) {
        this.run = run;
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        TokenSource held = run.job().data().heldOut();
        if (!run.stopped() && held != null && !run.losses().isEmpty()) {
            run.heldOutMeasured(evaluate(trainer, held));
        }
    }

    /** Mean loss over held-out batches (forward only, every rank its share). */
    private double evaluate(Trainer trainer, TokenSource held) {
        PretrainOptions opts = run.opts();
        try {
            held.checkBatch(opts.batch(), opts.seqLen());
        } catch (IllegalArgumentException e) {
            LOGGER.info("no held-out evaluation: {}", e.getMessage());
            return Double.NaN;
        }
        ProcessGroup group = run.session().group();
        double sum = 0;
        for (int i = 0; i < BATCHES; i++) {
            TokenBatch b =
                    held.batch(i, opts.batch(), opts.seqLen())
                            .shard(group.rank(), group.worldSize());
            try (NDManager sm = trainer.getManager().newSubManager()) {
                Shape shape = new Shape(b.batch(), b.seqLen());
                NDList data = new NDList(sm.create(b.inputs(), shape));
                NDArray labels = sm.create(b.labels(), shape);
                NDArray logits = trainer.evaluate(data).head();
                NDArray loss = CausalLmLoss.crossEntropy(logits, labels);
                loss.attach(sm);
                logits.attach(sm);
                try (NDArray v = sm.create(new float[] {loss.getFloat()})) {
                    if (group.worldSize() > 1) {
                        group.allReduceSum(v);
                    }
                    sum += v.getFloat() / group.worldSize();
                }
                showValidationBatch(trainer, sm, data, labels, logits, i);
            }
        }
        return sum / BATCHES;
    }

    private static void showValidationBatch(
            Trainer trainer, NDManager sm, NDList data, NDArray labels, NDArray logits, int i) {
        NDList labelList = new NDList(labels);
        Batch batch =
                new Batch(
                        sm,
                        data,
                        labelList,
                        (int) labels.getShape().get(0),
                        Batchifier.STACK,
                        Batchifier.STACK,
                        i,
                        BATCHES);
        Device device = logits.getDevice();
        BatchData bd =
                new BatchData(batch, Map.of(device, labelList), Map.of(device, new NDList(logits)));
        trainer.notifyListeners(listener -> listener.onValidationBatch(trainer, bd));
    }
}
