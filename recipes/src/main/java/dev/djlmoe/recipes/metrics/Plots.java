/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.category.DefaultCategoryDataset;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** PNG plots of a run: loss curves and expert load. */
public final class Plots {

    static {
        System.setProperty("java.awt.headless", "true");
    }

    private Plots() {}

    /**
     * Draws loss against step, one line per named run.
     *
     * @param runs run name to its records
     * @param title the chart title
     * @param png the output file
     * @throws IOException when the file cannot be written
     */
    public static void lossCurves(Map<String, List<StepRecord>> runs, String title, Path png)
            throws IOException {
        XYSeriesCollection data = new XYSeriesCollection();
        for (Map.Entry<String, List<StepRecord>> e : runs.entrySet()) {
            XYSeries s = new XYSeries(e.getKey());
            for (StepRecord r : e.getValue()) {
                if (Double.isFinite(r.loss())) {
                    s.add(r.step(), r.loss());
                }
            }
            data.addSeries(s);
        }
        JFreeChart chart =
                ChartFactory.createXYLineChart(
                        title, "step", "loss (nats/token)", data, PlotOrientation.VERTICAL, true,
                        false, false);
        save(chart, png);
    }

    /**
     * Draws the selections each expert received over the run (first MoE layer, all ranks).
     *
     * @param records the run's records
     * @param title the chart title
     * @param png the output file
     * @throws IOException when the file cannot be written
     */
    public static void expertLoad(List<StepRecord> records, String title, Path png)
            throws IOException {
        long[] total = null;
        for (StepRecord r : records) {
            long[] l = r.expertLoad();
            if (total == null) {
                total = new long[l.length];
            }
            for (int i = 0; i < Math.min(l.length, total.length); i++) {
                total[i] += l[i];
            }
        }
        DefaultCategoryDataset data = new DefaultCategoryDataset();
        if (total != null) {
            for (int i = 0; i < total.length; i++) {
                data.addValue(total[i], "selections", Integer.toString(i));
            }
        }
        JFreeChart chart =
                ChartFactory.createBarChart(
                        title, "expert", "tokens routed", data, PlotOrientation.VERTICAL, false,
                        false, false);
        save(chart, png);
    }

    private static void save(JFreeChart chart, Path png) throws IOException {
        Path parent = png.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        ChartUtils.saveChartAsPNG(png.toFile(), chart, 900, 500);
    }
}
