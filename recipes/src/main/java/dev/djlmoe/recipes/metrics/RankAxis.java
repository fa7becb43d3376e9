/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.awt.Graphics2D;
import java.awt.geom.Rectangle2D;
import java.util.ArrayList;
import java.util.List;
import org.jfree.chart.axis.AxisState;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.axis.NumberTick;
import org.jfree.chart.ui.RectangleEdge;
import org.jfree.chart.ui.TextAnchor;

/**
 * A vertical axis beside an expert axis that names the rank holding each block of experts: one
 * label "rank r" at the middle of experts {@code [r * perRank, (r + 1) * perRank)}.
 */
final class RankAxis extends NumberAxis {

    /** The most rank labels drawn; with more ranks every k-th is labelled. */
    static final int MAX_LABELS = 16;

    private final int ranks;
    private final int perRank;

    /**
     * An axis for {@code ranks * perRank} experts, drawn from -0.5 to {@code ranks * perRank -
     * 0.5}.
     *
     * @param ranks the EP size
     * @param perRank experts per rank
     * @throws IllegalArgumentException when either is below 1
     */
    RankAxis(int ranks, int perRank) {
        super(null);
        if (ranks < 1 || perRank < 1) {
            throw new IllegalArgumentException(
                    "ranks " + ranks + " and perRank " + perRank + " must be >= 1");
        }
        this.ranks = ranks;
        this.perRank = perRank;
        setRange(-0.5, ranks * perRank - 0.5);
        setAutoRange(false);
        setTickMarksVisible(false);
    }

    /**
     * The middle of rank r's experts on the expert axis.
     *
     * @param r the rank
     * @return {@code r * perRank + (perRank - 1) / 2}
     */
    double centre(int r) {
        return r * perRank + (perRank - 1) / 2.0;
    }

    @Override
    @SuppressWarnings("rawtypes")
    public List refreshTicks(
            Graphics2D g2, AxisState state, Rectangle2D dataArea, RectangleEdge edge) {
        List<NumberTick> ticks = new ArrayList<>();
        int every = (ranks + MAX_LABELS - 1) / MAX_LABELS;
        TextAnchor anchor =
                edge == RectangleEdge.LEFT ? TextAnchor.CENTER_RIGHT : TextAnchor.CENTER_LEFT;
        for (int r = 0; r < ranks; r += every) {
            ticks.add(new NumberTick(centre(r), "rank " + r, anchor, anchor, 0.0));
        }
        return ticks;
    }
}
