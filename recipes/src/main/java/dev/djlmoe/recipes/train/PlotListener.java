/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.RunMetrics;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.Supplier;

/**
 * Draws a run's {@code loss.png} (training and held-out loss against the unigram baseline) and
 * {@code expert-load.png} (every MoE layer's expert loads) on rank 0 at the end of the run, from
 * the records {@link MetricsListener} kept, which must therefore end before this one. A Java
 * runtime without {@code java.desktop} draws nothing and says so; the metrics stand. A DJL training
 * listener that uses {@code onTrainingEnd} only.
 */
public final class PlotListener extends TrainingListenerAdapter {

    private final TrainingRun run;
    private final Path runDir;
    private final Path metricsPath;
    private final Supplier<RunMetrics> records;

    /**
     * Creates the listener of a run.
     *
     * @param run the run
     * @param runDir where the plots go
     * @param metricsPath the metrics file (named in the log)
     * @param records the run's records at the end
     */
    public PlotListener(
            TrainingRun run, Path runDir, Path metricsPath, Supplier<RunMetrics> records) {
        this.run = run;
        this.runDir = runDir;
        this.metricsPath = metricsPath;
        this.records = records;
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        RunMetrics all = records.get();
        if (all.steps().isEmpty()) {
            return;
        }
        String command = run.job().command();
        try {
            Plots.loss(Map.of(command, all), "djl-moe " + command, runDir.resolve("loss.png"));
            Plots.expertLoad(
                    all.steps(), "expert load per MoE layer", runDir.resolve("expert-load.png"));
            run.log().println("wrote " + metricsPath + ", loss.png, expert-load.png");
        } catch (LinkageError e) {
            // A Java runtime without java.desktop (a jlink-ed one on a GPU host) draws
            // nothing; the run and its metrics stand.
            run.log()
                    .println(
                            "wrote "
                                    + metricsPath
                                    + "; no plots: this Java runtime lacks "
                                    + "java.desktop ("
                                    + e
                                    + "); draw them later with 'djl-moe plot'");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
