/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.Device;
import ai.djl.ndarray.NDList;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.Batch;
import ai.djl.training.dataset.Dataset;
import ai.djl.training.evaluator.Evaluator;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.listener.TrainingListener.BatchData;
import ai.djl.translate.TranslateException;
import dev.djlmoe.dist.ProcessGroup;
import java.io.IOException;
import java.util.Map;

/**
 * The expert-parallel counterpart of DJL's {@code EasyTrain}: fits a model over DJL {@link
 * Dataset}s with {@link EpTrainer}'s step and the DJL trainer's own {@link TrainingListener}s and
 * {@link Evaluator}s, so an existing DJL pipeline (its datasets, logging, evaluator and checkpoint
 * listeners) drives EP training by calling {@code EpFit.fit} where it called {@code EasyTrain.fit}.
 *
 * <p>Every rank runs the same loop over the same datasets, which must therefore give every rank the
 * same sequence of global batches (a deterministic sampler, or a random one seeded alike on every
 * rank). Each rank trains on its own share of every global batch ({@link BatchShard}: rank {@code
 * r} of {@code W} takes rows {@code [floor(r B / W), floor((r + 1) B / W))}); the step weighs every
 * rank's loss alike, so with {@code B} divisible by {@code W} the update is the one of the whole
 * batch on one rank.
 *
 * <p>Listeners see the whole global batch: the labels and predictions in {@link BatchData} are
 * gathered from all ranks (bit for bit the one-rank arrays), so the trainer's evaluators, updated
 * by DJL's {@code EvaluatorTrainingListener}, accumulate the same figures on every rank. Each
 * listener is called as in {@code EasyTrain}: {@code onTrainingBatch} once per global training
 * batch after the optimizer step, {@code onValidationBatch} once per global validation batch,
 * {@code onEpoch} once per epoch after validation. Listeners that write files (DJL's {@code
 * SaveModelTrainingListener}) run on every rank: give each rank its own directory, since rank
 * {@code r} holds only its experts.
 */
public final class EpFit {

    private EpFit() {}

    /**
     * Trains for {@code epochs} epochs over {@code trainSet}, validating on {@code validateSet}
     * after each (collective: every rank calls it alike).
     *
     * @param ep the EP training step over the DJL trainer
     * @param epochs the number of epochs
     * @param trainSet the training data (global batches)
     * @param validateSet the validation data, or null
     * @throws IOException when a dataset cannot be read
     * @throws TranslateException when a dataset cannot be batched
     */
    public static void fit(EpTrainer ep, int epochs, Dataset trainSet, Dataset validateSet)
            throws IOException, TranslateException {
        if (epochs < 0) {
            throw new IllegalArgumentException("epochs " + epochs + " must be >= 0");
        }
        Trainer trainer = ep.trainer();
        for (int epoch = 0; epoch < epochs; epoch++) {
            for (Batch batch : trainer.iterateDataset(trainSet)) {
                try {
                    trainBatch(ep, batch);
                } finally {
                    batch.close();
                }
            }
            evaluateDataset(ep, validateSet);
            trainer.notifyListeners(listener -> listener.onEpoch(trainer));
        }
    }

    /**
     * Trains on this rank's share of one global batch (forward, staged backward, gradient
     * averaging, optimizer), then shows the trainer's listeners the global batch.
     *
     * @param ep the EP training step
     * @param batch the global batch, the same on every rank
     * @return the step's figures
     */
    public static StepResult trainBatch(EpTrainer ep, Batch batch) {
        Trainer trainer = ep.trainer();
        BatchShard shard = shardOf(ep, batch);
        Device device = trainer.getDevices()[0];
        NDList data = shard.take(batch.getData(), device);
        NDList labels = shard.take(batch.getLabels(), device);
        NDList[] preds = new NDList[1];
        StepResult result = ep.stepWithPredictions(data, labels, p -> preds[0] = p);
        notify(ep, shard, batch, labels, preds[0], true);
        return result;
    }

    /**
     * Runs the model in inference mode on this rank's share of one global validation batch and
     * shows the trainer's listeners the global batch.
     *
     * @param ep the EP training step
     * @param batch the global batch, the same on every rank
     */
    public static void validateBatch(EpTrainer ep, Batch batch) {
        Trainer trainer = ep.trainer();
        BatchShard shard = shardOf(ep, batch);
        Device device = trainer.getDevices()[0];
        NDList data = shard.take(batch.getData(), device);
        NDList labels = shard.take(batch.getLabels(), device);
        NDList preds = trainer.evaluate(data);
        notify(ep, shard, batch, labels, preds, false);
    }

    /**
     * Validates on every global batch of a dataset.
     *
     * @param ep the EP training step
     * @param validateSet the dataset, or null for none
     * @throws IOException when the dataset cannot be read
     * @throws TranslateException when the dataset cannot be batched
     */
    public static void evaluateDataset(EpTrainer ep, Dataset validateSet)
            throws IOException, TranslateException {
        if (validateSet == null) {
            return;
        }
        for (Batch batch : ep.trainer().iterateDataset(validateSet)) {
            try {
                validateBatch(ep, batch);
            } finally {
                batch.close();
            }
        }
    }

    private static BatchShard shardOf(EpTrainer ep, Batch batch) {
        ProcessGroup group = ep.group();
        int rank = group == null ? 0 : group.rank();
        int worldSize = group == null ? 1 : group.worldSize();
        return new BatchShard(batch.getData().head().getShape().get(0), rank, worldSize);
    }

    private static void notify(
            EpTrainer ep,
            BatchShard shard,
            Batch batch,
            NDList labels,
            NDList preds,
            boolean training) {
        ProcessGroup group = ep.group();
        NDList globalLabels = shard.gather(labels, group, batch.getManager());
        NDList globalPreds = shard.gather(preds, group, batch.getManager());
        Device device = globalPreds.head().getDevice();
        BatchData data =
                new BatchData(batch, Map.of(device, globalLabels), Map.of(device, globalPreds));
        Trainer trainer = ep.trainer();
        if (training) {
            trainer.notifyListeners(listener -> listener.onTrainingBatch(trainer, data));
        } else {
            trainer.notifyListeners(listener -> listener.onValidationBatch(trainer, data));
        }
    }
}
