/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListener.BatchData;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.recipes.metrics.ExpertLoads;
import dev.djlmoe.recipes.metrics.HeldOutRecord;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.RunMetrics;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes a run's {@code metrics.jsonl} on rank 0: one {@link StepRecord} per step (loss, learning
 * rate, gradient norm, throughput, EP traffic, every MoE layer's expert loads) and, at the end, the
 * held-out loss. A DJL training listener: {@code onTrainingBegin} keeps the records of a resumed
 * run's earlier steps (and drops any later ones, which the resumed run writes again), {@code
 * onTrainingBatch} takes the step from {@link StepData}, {@code onTrainingEnd} writes the held-out
 * record ({@link TrainingRun#heldOutLoss()}, measured by {@link HeldOutEvaluationListener}, which
 * must therefore end before this one) and closes the file.
 */
public final class MetricsListener extends TrainingListenerAdapter implements AutoCloseable {

    private final TrainingRun run;
    private final Path path;
    private final int[] moeLayerIds;
    private final List<StepRecord> steps = new ArrayList<>();
    private final List<HeldOutRecord> heldOut = new ArrayList<>();
    private MetricsFile file;

    /**
     * Creates the listener of a run.
     *
     * @param run the run
     * @param path the metrics file
     */
    public MetricsListener(TrainingRun run, Path path) {
        this.run = run;
        this.path = path;
        this.moeLayerIds = moeLayerIds(run.job().config(), run.session().ep().moeLayers().size());
    }

    /**
     * Returns the records of the whole run so far (a resumed run's earlier steps included).
     *
     * @return the step and held-out records
     */
    public RunMetrics records() {
        return new RunMetrics(List.copyOf(steps), List.copyOf(heldOut));
    }

    @Override
    public void onTrainingBegin(Trainer trainer) {
        try {
            RunMetrics earlier = previousRecords(path, run.start());
            steps.addAll(earlier.steps());
            heldOut.addAll(earlier.heldOut());
            file = new MetricsFile(path);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public void onTrainingBatch(Trainer trainer, BatchData batchData) {
        if (batchData instanceof StepData s) {
            StepRecord rec = record(s.step(), s.result());
            steps.add(rec);
            file.write(rec);
        }
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        double loss = run.heldOutLoss();
        if (!Double.isNaN(loss)) {
            HeldOutRecord h =
                    new HeldOutRecord(
                            run.step(), loss, run.job().data().heldOut().unigramEntropy());
            heldOut.add(h);
            file.write(h);
        }
        close();
    }

    /** Closes the file (also when the run fails before its end). */
    @Override
    public void close() {
        if (file != null) {
            try {
                file.close();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            } finally {
                file = null;
            }
        }
    }

    private StepRecord record(long step, StepResult r) {
        int world = run.worldSize();
        return new StepRecord(
                step + 1,
                r.loss(),
                run.session().learningRate().getNewValue((int) step + 1),
                r.gradNorm(),
                r.tokens() * world / (r.stepNanos() / 1e9),
                r.epBytes(),
                r.epNanos() / 1e6,
                r.maxLoadImbalance(),
                r.expertLoad(),
                run.job().data().unigramEntropy(),
                r.layerLoads().length == 0
                        ? null
                        : new ExpertLoads(world, moeLayerIds, r.layerLoads()));
    }

    /**
     * The records (steps and held-out evaluations) of a resumed run's earlier steps, and the file
     * rewritten to hold only them.
     */
    private static RunMetrics previousRecords(Path metricsPath, long start) throws IOException {
        if (!Files.exists(metricsPath)) {
            return RunMetrics.of(List.of());
        }
        if (start == 0) {
            Files.delete(metricsPath); // a fresh run starts a fresh file
            return RunMetrics.of(List.of());
        }
        RunMetrics all = MetricsFile.readRun(metricsPath);
        List<StepRecord> steps = new ArrayList<>();
        List<HeldOutRecord> heldOut = new ArrayList<>();
        StringBuilder sb = new StringBuilder();
        for (StepRecord r : all.steps()) {
            if (r.step() <= start) {
                steps.add(r);
                sb.append(r.toJson()).append('\n');
            }
        }
        for (HeldOutRecord h : all.heldOut()) {
            if (h.step() <= start) {
                heldOut.add(h);
                sb.append(h.toJson()).append('\n');
            }
        }
        SafetensorsWriter.writeTextAtomically(metricsPath, sb.toString());
        return new RunMetrics(steps, heldOut);
    }

    /**
     * The model layer index of each MoE layer, in forward order (0, 1, ... when the config does not
     * say which layers are MoE layers or says otherwise than the model holds).
     */
    static int[] moeLayerIds(HfMoeConfig cfg, int moeLayers) {
        List<Integer> fromConfig = new ArrayList<>();
        for (int i = 0; cfg != null && i < cfg.numLayers(); i++) {
            if (cfg.isMoeLayer(i)) {
                fromConfig.add(i);
            }
        }
        int[] ids = new int[moeLayers];
        for (int i = 0; i < moeLayers; i++) {
            ids[i] = fromConfig.size() == moeLayers ? fromConfig.get(i) : i;
        }
        return ids;
    }
}
