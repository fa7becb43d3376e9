/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Dimension;
import java.awt.Font;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.CombinedDomainXYPlot;
import org.jfree.chart.plot.ValueMarker;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYBlockRenderer;
import org.jfree.chart.title.PaintScaleLegend;
import org.jfree.chart.title.TextTitle;
import org.jfree.chart.ui.RectangleEdge;
import org.jfree.data.xy.DefaultXYZDataset;

/**
 * Expert load over time as heat maps, one per MoE layer stacked over a shared step axis: x is the
 * step, y the expert (expert 0 at the top), the colour the expert's share of the tokens its layer
 * routed ({@link HeatScale}: brighter is hotter). Where the metrics record the EP layout, white
 * lines separate the ranks' blocks of experts and the right-hand axis names each block's rank.
 */
final class ExpertLoadChart {

    /** The image width in pixels. */
    static final int WIDTH = 900;

    /** The most step columns drawn; longer runs are binned. */
    static final int MAX_COLUMNS = 300;

    /** Pixels for the title, notes, step axis and margins. */
    private static final int FRAME = 150;

    /** The colour of the lines between the ranks' blocks of experts. */
    static final Color SEPARATOR = Color.WHITE;

    private ExpertLoadChart() {}

    /**
     * The image size for a number of MoE layers and experts: one panel per layer, each 6 pixels per
     * expert between 110 and 300 (60 to 300 with more than 16 layers).
     *
     * @param layers MoE layers drawn
     * @param experts experts per layer
     * @return width and height in pixels
     */
    static Dimension size(int layers, int experts) {
        int min = layers > 16 ? 60 : 110;
        int panel = Math.max(min, Math.min(300, 6 * experts));
        return new Dimension(WIDTH, FRAME + Math.max(1, layers) * panel);
    }

    /**
     * Builds the chart.
     *
     * @param grid the binned loads
     * @param title the chart title
     * @return the chart; its plot is a {@link CombinedDomainXYPlot} with one subplot per layer
     */
    static JFreeChart create(LoadGrid grid, String title) {
        NumberAxis steps = new NumberAxis("step");
        steps.setAutoRangeIncludesZero(false);
        CombinedDomainXYPlot plot = new CombinedDomainXYPlot(steps);
        plot.setGap(8);
        double upper = grid.maxShare() > 0 ? grid.maxShare() : 1;
        HeatScale scale = new HeatScale(upper);
        for (int i = 0; i < grid.layerNames().length; i++) {
            plot.add(layerPlot(grid, i, scale), 1);
        }
        if (grid.columns() > 0) {
            steps.setRange(
                    grid.firstStep() - 0.5,
                    grid.firstStep() + grid.columns() * grid.binSteps() - 0.5);
        }
        JFreeChart chart = new JFreeChart(title, JFreeChart.DEFAULT_TITLE_FONT, plot, false);
        chart.setBackgroundPaint(Color.WHITE);
        Font small = new Font(Font.SANS_SERIF, Font.PLAIN, 11);
        List<String> lines = new ArrayList<>();
        if (grid.experts() > 0) {
            lines.add(
                    String.format(
                            Locale.ROOT,
                            "colour: each expert's share of its layer's"
                                    + " routed tokens (balanced: 1/%d = %.3f)%s",
                            grid.experts(),
                            1.0 / grid.experts(),
                            grid.layout() == null
                                    ? ""
                                    : "; white lines separate the ranks' experts"));
        }
        lines.addAll(grid.notes());
        for (String line : lines) {
            chart.addSubtitle(new TextTitle(line, small));
        }
        if (grid.experts() > 0) {
            NumberAxis shareAxis = new NumberAxis("share");
            shareAxis.setRange(0, upper);
            PaintScaleLegend legend = new PaintScaleLegend(scale, shareAxis);
            legend.setPosition(RectangleEdge.RIGHT);
            legend.setStripWidth(12);
            legend.setMargin(4, 8, 4, 4);
            chart.addSubtitle(legend);
        }
        return chart;
    }

    private static XYPlot layerPlot(LoadGrid grid, int layer, HeatScale scale) {
        int experts = grid.experts();
        DefaultXYZDataset data = new DefaultXYZDataset();
        List<double[]> cells = new ArrayList<>();
        for (int c = 0; c < grid.columns(); c++) {
            for (int e = 0; e < experts; e++) {
                double v = grid.share()[layer][c][e];
                if (!Double.isNaN(v)) {
                    cells.add(new double[] {grid.centre(c), e, v});
                }
            }
        }
        double[][] xyz = new double[3][cells.size()];
        for (int k = 0; k < cells.size(); k++) {
            for (int d = 0; d < 3; d++) {
                xyz[d][k] = cells.get(k)[d];
            }
        }
        data.addSeries(grid.layerNames()[layer], xyz);
        XYBlockRenderer renderer = new XYBlockRenderer();
        renderer.setBlockWidth(grid.binSteps());
        renderer.setBlockHeight(1);
        renderer.setPaintScale(scale);
        NumberAxis expertAxis = new NumberAxis(grid.layerNames()[layer] + ": expert");
        expertAxis.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        expertAxis.setRange(-0.5, experts - 0.5);
        expertAxis.setInverted(true);
        XYPlot p = new XYPlot(data, null, expertAxis, renderer);
        p.setBackgroundPaint(Color.WHITE);
        p.setDomainGridlinesVisible(false);
        p.setRangeGridlinesVisible(false);
        ExpertLoads layout = grid.layout();
        if (layout != null) {
            RankAxis ranks = new RankAxis(layout.epSize(), layout.expertsPerRank());
            ranks.setInverted(true);
            p.setRangeAxis(1, ranks);
            for (int r = 1; r < layout.epSize(); r++) {
                ValueMarker m =
                        new ValueMarker(
                                r * layout.expertsPerRank() - 0.5, SEPARATOR, new BasicStroke(2f));
                p.addRangeMarker(m);
            }
        }
        return p;
    }
}
