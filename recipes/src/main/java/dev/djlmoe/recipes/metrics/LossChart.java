/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Shape;
import java.awt.geom.Path2D;
import java.util.Locale;
import java.util.Map;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.DatasetRenderingOrder;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/**
 * The loss chart of one or more runs: each run's training loss against step, its unigram baseline
 * as a dashed horizontal line (the loss of predicting each token from its frequency alone: a model
 * below it has learnt more than token frequencies) and its held-out evaluations as markers.
 */
final class LossChart {

    /** Loss curve colours, one per run in order (then repeated). */
    private static final Color[] RUN_COLOURS = {
        new Color(0xD6, 0x27, 0x28), new Color(0x1F, 0x77, 0xB4), new Color(0x2C, 0xA0, 0x2C),
        new Color(0x94, 0x67, 0xBD), new Color(0xFF, 0x7F, 0x0E), new Color(0x8C, 0x56, 0x4B)
    };

    /** The unigram baseline's colour (a single run; with several, each run's colour). */
    static final Color BASELINE = new Color(0x40, 0x40, 0x40);

    /** The side of a held-out marker in pixels. */
    static final int MARKER = 12;

    private LossChart() {}

    /** The colour of run i's loss curve. */
    static Color runColour(int i) {
        return RUN_COLOURS[i % RUN_COLOURS.length];
    }

    /** The colour of run i's held-out markers: its loss colour, darker. */
    static Color heldOutColour(int i) {
        return runColour(i).darker();
    }

    /** The colour of run i's baseline line. */
    static Color baselineColour(int i, int runs) {
        return runs == 1 ? BASELINE : runColour(i);
    }

    /**
     * Builds the chart.
     *
     * @param runs run name to its metrics, in legend order
     * @param title the chart title
     * @return the chart (dataset 0: losses, 1: baselines, 2: held-out points)
     */
    static JFreeChart create(Map<String, RunMetrics> runs, String title) {
        XYSeriesCollection losses = new XYSeriesCollection();
        XYSeriesCollection baselines = new XYSeriesCollection();
        XYSeriesCollection heldOut = new XYSeriesCollection();
        XYLineAndShapeRenderer lossRenderer = new XYLineAndShapeRenderer(true, false);
        XYLineAndShapeRenderer baseRenderer = new XYLineAndShapeRenderer(true, false);
        XYLineAndShapeRenderer heldRenderer = new XYLineAndShapeRenderer(false, true);
        boolean one = runs.size() == 1;
        int i = 0;
        for (Map.Entry<String, RunMetrics> e : runs.entrySet()) {
            String name = e.getKey();
            RunMetrics m = e.getValue();
            XYSeries s = new XYSeries(one ? "training loss" : name);
            long first = Long.MAX_VALUE;
            long last = Long.MIN_VALUE;
            for (StepRecord r : m.steps()) {
                first = Math.min(first, r.step());
                last = Math.max(last, r.step());
                if (Double.isFinite(r.loss())) {
                    s.add(r.step(), r.loss());
                }
            }
            losses.addSeries(s);
            lossRenderer.setSeriesPaint(losses.getSeriesCount() - 1, runColour(i));
            lossRenderer.setSeriesStroke(losses.getSeriesCount() - 1, new BasicStroke(1.5f));
            double base = m.unigramBaseline();
            if (Double.isFinite(base) && first <= last) {
                XYSeries b =
                        new XYSeries(
                                String.format(
                                        Locale.ROOT,
                                        "%sunigram baseline (%.3f)",
                                        one ? "" : name + " ",
                                        base));
                b.add(first, base);
                b.add(last, base);
                baselines.addSeries(b);
                int k = baselines.getSeriesCount() - 1;
                baseRenderer.setSeriesPaint(k, baselineColour(i, runs.size()));
                baseRenderer.setSeriesStroke(
                        k,
                        new BasicStroke(
                                2f,
                                BasicStroke.CAP_BUTT,
                                BasicStroke.JOIN_MITER,
                                10f,
                                new float[] {8f, 4f},
                                0f));
            }
            if (!m.heldOut().isEmpty()) {
                XYSeries h = new XYSeries(one ? "held-out loss" : name + " held-out");
                for (HeldOutRecord r : m.heldOut()) {
                    if (Double.isFinite(r.loss())) {
                        h.add(r.step(), r.loss());
                    }
                }
                heldOut.addSeries(h);
                int k = heldOut.getSeriesCount() - 1;
                heldRenderer.setSeriesPaint(k, heldOutColour(i));
                heldRenderer.setSeriesShape(k, diamond(MARKER));
            }
            i++;
        }
        NumberAxis x = new NumberAxis("step");
        x.setAutoRangeIncludesZero(false);
        NumberAxis y = new NumberAxis("loss (nats/token)");
        y.setAutoRangeIncludesZero(false);
        XYPlot plot = new XYPlot(losses, x, y, lossRenderer);
        plot.setDataset(1, baselines);
        plot.setRenderer(1, baseRenderer);
        plot.setDataset(2, heldOut);
        plot.setRenderer(2, heldRenderer);
        // Later datasets on top: held-out markers over the loss curve.
        plot.setDatasetRenderingOrder(DatasetRenderingOrder.FORWARD);
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinePaint(new Color(0xDD, 0xDD, 0xDD));
        plot.setRangeGridlinePaint(new Color(0xDD, 0xDD, 0xDD));
        JFreeChart chart = new JFreeChart(title, JFreeChart.DEFAULT_TITLE_FONT, plot, true);
        chart.setBackgroundPaint(Color.WHITE);
        return chart;
    }

    /** A diamond of the given width and height, centred on the origin. */
    private static Shape diamond(int size) {
        double h = size / 2.0;
        Path2D.Double p = new Path2D.Double();
        p.moveTo(0, -h);
        p.lineTo(h, 0);
        p.lineTo(0, h);
        p.lineTo(-h, 0);
        p.closePath();
        return p;
    }
}
