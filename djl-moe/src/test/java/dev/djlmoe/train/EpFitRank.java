/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.SequentialBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.ArrayDataset;
import ai.djl.training.evaluator.Accuracy;
import ai.djl.training.listener.SaveModelTrainingListener;
import ai.djl.training.listener.TrainingListener;
import ai.djl.training.listener.TrainingListenerAdapter;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;

/**
 * One rank of {@link EpFitTest}: a user-style DJL model (linear, {@link MoeLayer}, linear
 * classifier) trained with {@link EpFit#fit} on an {@code ArrayDataset}, with DJL's logging,
 * evaluator and checkpoint listeners and a counting listener. Writes {@code fit-w{W}-r{r}.txt} to
 * the run's directory: listener call counts, the loss each training batch's listeners saw (computed
 * from their global labels and predictions), DJL's training result and the checkpoint files.
 */
public final class EpFitRank {

    static final int FEATURES = 8;
    static final int HIDDEN = 16;
    static final int CLASSES = 4;
    static final int EXPERTS = 4;
    static final int TRAIN_ROWS = 64;
    static final int VALIDATE_ROWS = 32;
    static final int BATCH = 16;
    static final int EPOCHS = 4;

    private EpFitRank() {}

    /** Counts listener calls and records the loss of every global training batch. */
    static final class Recorder extends TrainingListenerAdapter {
        int epochs;
        int trainBatches;
        int validateBatches;
        long labelRows;
        final List<Float> losses = new ArrayList<>();

        @Override
        public void onEpoch(Trainer trainer) {
            epochs++;
        }

        @Override
        public void onTrainingBatch(Trainer trainer, BatchData data) {
            trainBatches++;
            NDList labels = data.getLabels().values().iterator().next();
            NDList preds = data.getPredictions().values().iterator().next();
            labelRows += labels.head().getShape().get(0);
            try (NDArray loss = trainer.getLoss().evaluate(labels, preds)) {
                losses.add(loss.getFloat());
            }
        }

        @Override
        public void onValidationBatch(Trainer trainer, BatchData data) {
            validateBatches++;
        }
    }

    /** The same features and labels on every rank: the label is the arg-max of a projection. */
    static ArrayDataset dataset(NDManager m, int rows, long seed) {
        Random r = new Random(seed);
        float[] x = new float[rows * FEATURES];
        long[] y = new long[rows];
        Random pr = new Random(7);
        float[][] proj = new float[FEATURES][CLASSES];
        for (float[] row : proj) {
            for (int c = 0; c < CLASSES; c++) {
                row[c] = (float) pr.nextGaussian();
            }
        }
        for (int i = 0; i < rows; i++) {
            double best = Double.NEGATIVE_INFINITY;
            for (int f = 0; f < FEATURES; f++) {
                x[i * FEATURES + f] = (float) r.nextGaussian();
            }
            for (int c = 0; c < CLASSES; c++) {
                double s = 0;
                for (int f = 0; f < FEATURES; f++) {
                    s += x[i * FEATURES + f] * proj[f][c];
                }
                if (s > best) {
                    best = s;
                    y[i] = c;
                }
            }
        }
        return new ArrayDataset.Builder()
                .setData(m.create(x, new Shape(rows, FEATURES)))
                .optLabels(m.create(y))
                .setSampling(BATCH, false)
                .build();
    }

    /**
     * Entry point of a rank.
     *
     * @param args unused
     * @throws Exception on failure (the exit code tells the harness)
     */
    public static void main(String[] args) throws Exception {
        MultiRank.watchParent();
        RankEnvironment env = RankEnvironment.fromSystem();
        try (ProcessGroup group = ProcessGroups.create(env);
                EpContext ctx = EpContext.builder().setProcessGroup(group).build();
                Model model = Model.newInstance("fit", Device.cpu(), "PyTorch");
                NDManager m = NDManager.newBaseManager()) {
            SequentialBlock net =
                    new SequentialBlock()
                            .add(Linear.builder().setUnits(HIDDEN).build())
                            .add(
                                    MoeLayer.builder()
                                            .setHiddenSize(HIDDEN)
                                            .setExpertIntermediateSize(16)
                                            .setRouter(
                                                    MoeRouter.builder()
                                                            .setNumExperts(EXPERTS)
                                                            .setTopK(2)
                                                            .optCorrectionBias(true))
                                            .optNumSharedExperts(1)
                                            .optContext(ctx)
                                            .build())
                            .add(Linear.builder().setUnits(CLASSES).build());
            model.setBlock(net);
            Recorder recorder = new Recorder();
            String tag = "w" + group.worldSize() + "-r" + group.rank();
            Path ckpt = MultiRank.outDir().resolve("ckpt-" + tag);
            DefaultTrainingConfig config =
                    new DefaultTrainingConfig(Loss.softmaxCrossEntropyLoss())
                            .addEvaluator(new Accuracy())
                            .optOptimizer(
                                    Optimizer.adam()
                                            .optLearningRateTracker(Tracker.fixed(1e-2f))
                                            .build())
                            .optDevices(new Device[] {Device.cpu()})
                            .addTrainingListeners(TrainingListener.Defaults.logging())
                            .addTrainingListeners(
                                    new SaveModelTrainingListener(ckpt.toString(), null, 1))
                            .addTrainingListeners(recorder);
            try (Trainer trainer = model.newTrainer(config)) {
                trainer.initialize(new Shape(BATCH, FEATURES));
                ParameterInit.reinitialize(net, 2024);
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optMaxGradNorm(1f)
                                .optBiasUpdateRate(1e-3f)
                                .build();
                EpFit.fit(ep, EPOCHS, dataset(m, TRAIN_ROWS, 1), dataset(m, VALIDATE_ROWS, 2));
                List<String> out = new ArrayList<>();
                out.add(
                        String.format(
                                Locale.ROOT,
                                "counts %d %d %d %d",
                                recorder.epochs,
                                recorder.trainBatches,
                                recorder.validateBatches,
                                recorder.labelRows));
                for (float l : recorder.losses) {
                    out.add("loss " + l);
                }
                Map<String, Float> result =
                        new TreeMap<>(trainer.getTrainingResult().getEvaluations());
                result.forEach((k, v) -> out.add("result " + k + " " + v));
                try (var files = Files.list(ckpt)) {
                    files.map(p -> "file " + p.getFileName()).sorted().forEach(out::add);
                }
                Files.write(MultiRank.outDir().resolve("fit-" + tag + ".txt"), out);
            }
            group.barrier();
        }
        System.out.println("fit: OK");
        System.out.flush();
        System.exit(0);
    }
}
