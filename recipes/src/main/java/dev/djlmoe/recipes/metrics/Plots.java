/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.awt.Dimension;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;

/**
 * PNG plots of a run, drawn headless: loss curves with the unigram baseline and held-out points
 * ({@code loss.png}), and expert load over time per MoE layer ({@code expert-load.png}). Nothing
 * from {@code java.desktop} appears in this class's signatures, so a caller on a Java runtime
 * without it meets the missing classes only inside these methods (as a {@link LinkageError} it can
 * catch).
 */
public final class Plots {

    static {
        System.setProperty("java.awt.headless", "true");
    }

    /** Width of the loss plot in pixels. */
    public static final int LOSS_WIDTH = 900;

    /** Height of the loss plot in pixels. */
    public static final int LOSS_HEIGHT = 500;

    private Plots() {}

    /**
     * Draws loss against step, one line per named run (no baselines or held-out points).
     *
     * @param runs run name to its records
     * @param title the chart title
     * @param png the output file
     * @throws IOException when the file cannot be written
     */
    public static void lossCurves(Map<String, List<StepRecord>> runs, String title, Path png)
            throws IOException {
        Map<String, RunMetrics> m = new LinkedHashMap<>();
        for (Map.Entry<String, List<StepRecord>> e : runs.entrySet()) {
            m.put(e.getKey(), RunMetrics.of(e.getValue()));
        }
        loss(m, title, png);
    }

    /**
     * Draws each run's training loss against step, its unigram baseline as a dashed horizontal line
     * (where its metrics record one) and its held-out losses as markers at the steps they were
     * measured, with a legend.
     *
     * @param runs run name to its metrics, in legend order
     * @param title the chart title
     * @param png the output file ({@link #LOSS_WIDTH} x {@link #LOSS_HEIGHT})
     * @throws IOException when the file cannot be written
     */
    public static void loss(Map<String, RunMetrics> runs, String title, Path png)
            throws IOException {
        save(LossChart.create(runs, title), png, new Dimension(LOSS_WIDTH, LOSS_HEIGHT));
    }

    /**
     * Draws expert load over the run as one heat map per MoE layer (step across, expert down,
     * colour the expert's share of its layer's routed tokens), with the ranks' blocks of experts
     * separated and named. Records without per-layer loads (older metrics files) give the first MoE
     * layer's heat map without ranks, and a note saying so.
     *
     * @param records the run's records
     * @param title the chart title
     * @param png the output file ({@code 900} pixels wide, a panel per layer high)
     * @throws IOException when the file cannot be written
     */
    public static void expertLoad(List<StepRecord> records, String title, Path png)
            throws IOException {
        LoadGrid grid = LoadGrid.of(records, ExpertLoadChart.MAX_COLUMNS);
        save(
                ExpertLoadChart.create(grid, title),
                png,
                ExpertLoadChart.size(grid.layerNames().length, grid.experts()));
    }

    private static void save(JFreeChart chart, Path png, Dimension size) throws IOException {
        Path parent = png.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        ChartUtils.saveChartAsPNG(png.toFile(), chart, size.width, size.height);
    }
}
