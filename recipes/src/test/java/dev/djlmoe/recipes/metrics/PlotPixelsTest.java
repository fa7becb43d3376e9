/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.Color;
import java.awt.Dimension;
import java.awt.geom.Rectangle2D;
import java.awt.image.BufferedImage;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.jfree.chart.ChartRenderingInfo;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.ValueAxis;
import org.jfree.chart.plot.CombinedDomainXYPlot;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.ui.RectangleEdge;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The written PNGs hold what they claim, checked at pixel coordinates computed from the charts' own
 * axes: the heat map's hot experts are bright where they are hot, ranks are separated and named;
 * the loss plot's baseline and held-out markers sit at their values; older metrics plot.
 */
class PlotPixelsTest {

    private static final int E = 8;
    private static final int STEPS = 40;

    /** Layer 1: expert 5 hot for the whole run; layer 3: expert 0 hot in the second half. */
    private static List<StepRecord> hotRecords() {
        List<StepRecord> recs = new ArrayList<>();
        for (int s = 1; s <= STEPS; s++) {
            long[][] l = new long[2][E];
            for (int e = 0; e < E; e++) {
                l[0][e] = e == 5 ? 200 : 20;
                l[1][e] = e == 0 && s > STEPS / 2 ? 200 : 20;
            }
            recs.add(MetricsRecordsTest.step(s, 3.0, new ExpertLoads(2, new int[] {1, 3}, l)));
        }
        return recs;
    }

    private static double brightness(int rgb) {
        Color c = new Color(rgb);
        return 0.299 * c.getRed() + 0.587 * c.getGreen() + 0.114 * c.getBlue();
    }

    private static boolean near(int rgb, Color want, int tol) {
        Color c = new Color(rgb);
        return Math.abs(c.getRed() - want.getRed()) <= tol
                && Math.abs(c.getGreen() - want.getGreen()) <= tol
                && Math.abs(c.getBlue() - want.getBlue()) <= tol;
    }

    /** Pixel coordinates of a point on an XY plot drawn in a data area. */
    private static int px(ValueAxis x, RectangleEdge xEdge, double v, Rectangle2D a) {
        return (int) Math.floor(x.valueToJava2D(v, a, xEdge));
    }

    @Test
    void heatMapShowsEachLayersHotExpertAndTheRanks(@TempDir Path tmp) throws Exception {
        List<StepRecord> recs = hotRecords();
        Path png = tmp.resolve("expert-load.png");
        Plots.expertLoad(recs, "t", png);
        BufferedImage img = ImageIO.read(png.toFile());
        Dimension want = ExpertLoadChart.size(2, E);
        assertEquals(want.width, img.getWidth());
        assertEquals(want.height, img.getHeight());
        assertTrue(ExpertLoadChart.size(3, E).height > img.getHeight(), "a panel per layer");

        // The same chart, laid out at the same size, tells where every cell is.
        LoadGrid grid = LoadGrid.of(recs, ExpertLoadChart.MAX_COLUMNS);
        JFreeChart chart = ExpertLoadChart.create(grid, "t");
        ChartRenderingInfo info = new ChartRenderingInfo();
        chart.createBufferedImage(want.width, want.height, info);
        CombinedDomainXYPlot plot = (CombinedDomainXYPlot) chart.getXYPlot();
        List<XYPlot> layers = plot.getSubplots();
        assertEquals(2, layers.size());
        Rectangle2D a0 = info.getPlotInfo().getSubplotInfo(0).getDataArea();
        Rectangle2D a1 = info.getPlotInfo().getSubplotInfo(1).getDataArea();
        assertTrue(a1.getMinY() > a0.getMaxY(), "layer 3 below layer 1");
        XYPlot l0 = layers.get(0);
        XYPlot l1 = layers.get(1);
        int early = px(plot.getDomainAxis(), plot.getDomainAxisEdge(), 5, a0);
        int late = px(plot.getDomainAxis(), plot.getDomainAxisEdge(), STEPS - 5, a0);
        // Layer 1: expert 5's row is brighter than every other expert's, early and late.
        for (int x : new int[] {early, late}) {
            double hot = brightness(img.getRGB(x, y(l0, 5, a0)));
            for (int e = 0; e < E; e++) {
                int rgb = img.getRGB(x, y(l0, e, a0));
                assertFalse(near(rgb, Color.WHITE, 8), "cell of expert " + e + " drawn");
                if (e != 5) {
                    assertTrue(
                            hot > brightness(rgb) + 60,
                            "expert 5 " + hot + " vs expert " + e + " " + brightness(rgb));
                }
            }
        }
        // Layer 3: expert 0 turns hot in the second half only.
        double before = brightness(img.getRGB(early, y(l1, 0, a1)));
        double after = brightness(img.getRGB(late, y(l1, 0, a1)));
        assertTrue(after > before + 60, "expert 0 of layer 3: " + before + " -> " + after);
        assertTrue(after > brightness(img.getRGB(late, y(l1, 4, a1))) + 60);

        // Ranks: a white line between experts 3 and 4 (rank 0 | rank 1), none inside a block.
        for (int k = 0; k < 2; k++) {
            XYPlot p = layers.get(k);
            Rectangle2D a = k == 0 ? a0 : a1;
            int sep = y(p, 3.5, a);
            int x = px(plot.getDomainAxis(), plot.getDomainAxisEdge(), 10, a);
            assertTrue(
                    near(img.getRGB(x, sep), ExpertLoadChart.SEPARATOR, 40),
                    "separator at y " + sep + ": " + Integer.toHexString(img.getRGB(x, sep)));
            assertFalse(near(img.getRGB(x, y(p, 1.5, a)), ExpertLoadChart.SEPARATOR, 40));
            RankAxis ranks = (RankAxis) p.getRangeAxis(1);
            // Rank labels: dark text right of the data area at each block's middle.
            for (int r = 0; r < 2; r++) {
                int yr = y(p, ranks.centre(r), a);
                boolean text = false;
                for (int dx = 2; dx < 60 && !text; dx++) {
                    for (int dy = -3; dy <= 3 && !text; dy++) {
                        text = brightness(img.getRGB((int) a.getMaxX() + dx, yr + dy)) < 120;
                    }
                }
                assertTrue(text, "label of rank " + r + " in layer panel " + k);
            }
        }
        assertEquals(1.5, ((RankAxis) l0.getRangeAxis(1)).centre(0), 0);
    }

    private static int y(XYPlot p, double expert, Rectangle2D area) {
        return (int) Math.floor(p.getRangeAxis().valueToJava2D(expert, area, p.getRangeAxisEdge()));
    }

    @Test
    void lossPlotDrawsTheBaselineAndHeldOutPoints(@TempDir Path tmp) throws Exception {
        double baseline = 3.1;
        List<StepRecord> steps = new ArrayList<>();
        for (int s = 1; s <= 60; s++) {
            StepRecord r = MetricsRecordsTest.step(s, 2.0 + 3.5 * Math.exp(-s / 12.0), null);
            steps.add(
                    new StepRecord(
                            r.step(),
                            r.loss(),
                            r.lr(),
                            r.gradNorm(),
                            r.tokensPerSecond(),
                            r.epBytes(),
                            r.epMillis(),
                            r.loadImbalance(),
                            r.expertLoad(),
                            baseline,
                            null));
        }
        List<HeldOutRecord> held =
                List.of(new HeldOutRecord(30, 2.9, 3.0), new HeldOutRecord(60, 2.45, 3.0));
        Map<String, RunMetrics> runs = new LinkedHashMap<>();
        runs.put("pretrain", new RunMetrics(steps, held));
        Path png = tmp.resolve("loss.png");
        Plots.loss(runs, "t", png);
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(Plots.LOSS_WIDTH, img.getWidth());
        assertEquals(Plots.LOSS_HEIGHT, img.getHeight());

        JFreeChart chart = LossChart.create(runs, "t");
        ChartRenderingInfo info = new ChartRenderingInfo();
        chart.createBufferedImage(Plots.LOSS_WIDTH, Plots.LOSS_HEIGHT, info);
        XYPlot p = chart.getXYPlot();
        Rectangle2D a = info.getPlotInfo().getDataArea();
        // Held-out markers: their colour at their (step, loss).
        for (HeldOutRecord h : held) {
            int x = px(p.getDomainAxis(), p.getDomainAxisEdge(), h.step(), a);
            int yy =
                    (int)
                            Math.floor(
                                    p.getRangeAxis()
                                            .valueToJava2D(h.loss(), a, p.getRangeAxisEdge()));
            assertTrue(
                    near(img.getRGB(x, yy), LossChart.heldOutColour(0), 30),
                    "held-out marker at step "
                            + h.step()
                            + ": "
                            + Integer.toHexString(img.getRGB(x, yy)));
        }
        // The baseline: its colour along y(baseline) where the loss curve is elsewhere, and not
        // half a nat above.
        int yBase =
                (int) Math.floor(p.getRangeAxis().valueToJava2D(baseline, a, p.getRangeAxisEdge()));
        int yAbove =
                (int)
                        Math.floor(
                                p.getRangeAxis()
                                        .valueToJava2D(baseline + 0.5, a, p.getRangeAxisEdge()));
        int hits = 0;
        int tried = 0;
        for (int s = 20; s <= 60; s++) {
            if (Math.abs(steps.get(s - 1).loss() - baseline) < 0.3) {
                continue;
            }
            int x = px(p.getDomainAxis(), p.getDomainAxisEdge(), s, a);
            tried++;
            boolean hit = false;
            for (int dy = -2; dy <= 2; dy++) {
                hit |= near(img.getRGB(x, yBase + dy), LossChart.BASELINE, 40);
                assertFalse(
                        near(img.getRGB(x, yAbove + dy), LossChart.BASELINE, 40),
                        "baseline colour half a nat above the baseline at step " + s);
            }
            hits += hit ? 1 : 0;
        }
        assertTrue(tried > 20 && hits > tried / 2, "baseline drawn at " + hits + " of " + tried);
        // The legend names the curve, the baseline with its value and the held-out points.
        assertEquals(
                List.of("training loss", "unigram baseline (3.100)", "held-out loss"),
                labels(chart));
    }

    @Test
    void olderMetricsStillPlotWithANote(@TempDir Path tmp) throws Exception {
        List<StepRecord> old = new ArrayList<>();
        for (int s = 1; s <= 10; s++) {
            old.add(
                    new StepRecord(
                            s,
                            5.0 - 0.1 * s,
                            1e-3,
                            1.0,
                            1000,
                            10,
                            1.0,
                            1.2,
                            new long[] {3, 9, 4, 4}));
        }
        Path loss = tmp.resolve("loss.png");
        Path load = tmp.resolve("expert-load.png");
        Plots.lossCurves(Map.of("old", old), "t", loss);
        Plots.expertLoad(old, "t", load);
        BufferedImage img = ImageIO.read(load.toFile());
        assertEquals(ExpertLoadChart.size(1, 4).height, img.getHeight());
        LoadGrid grid = LoadGrid.of(old, ExpertLoadChart.MAX_COLUMNS);
        assertEquals(List.of("first MoE layer"), List.of(grid.layerNames()));
        assertTrue(
                grid.notes().get(0).contains("predate per-layer loads"), grid.notes().toString());
        JFreeChart chart = ExpertLoadChart.create(grid, "t");
        ChartRenderingInfo info = new ChartRenderingInfo();
        chart.createBufferedImage(img.getWidth(), img.getHeight(), info);
        XYPlot p = ((CombinedDomainXYPlot) chart.getXYPlot()).getSubplots().get(0);
        assertEquals(null, p.getRangeAxis(1), "no rank axis without a layout");
        Rectangle2D a = info.getPlotInfo().getSubplotInfo(0).getDataArea();
        int x =
                (int)
                        Math.floor(
                                chart.getXYPlot()
                                        .getDomainAxis()
                                        .valueToJava2D(
                                                5, a, chart.getXYPlot().getDomainAxisEdge()));
        assertTrue(
                brightness(img.getRGB(x, y(p, 1, a))) > brightness(img.getRGB(x, y(p, 0, a))) + 60,
                "expert 1 (9 of 20 selections) brighter than expert 0 (3)");
        BufferedImage l = ImageIO.read(loss.toFile());
        assertEquals(Plots.LOSS_WIDTH, l.getWidth());
        assertEquals(
                List.of("training loss"),
                labels(LossChart.create(Map.of("old", RunMetrics.of(old)), "t")));
    }

    private static List<String> labels(JFreeChart chart) {
        List<String> out = new ArrayList<>();
        var items = chart.getXYPlot().getLegendItems();
        for (int i = 0; i < items.getItemCount(); i++) {
            out.add(items.get(i).getLabel());
        }
        return out;
    }
}
