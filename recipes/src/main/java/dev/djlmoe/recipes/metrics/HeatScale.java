/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.awt.Color;
import java.awt.Paint;
import org.jfree.chart.renderer.PaintScale;

/**
 * The expert-load heat map's colours: from near black (no tokens) through purple and orange to pale
 * yellow (the largest share), so a hot expert is brighter than a cold one.
 */
final class HeatScale implements PaintScale {

    /** Colour stops at 0, 1/4, 1/2, 3/4 and 1 of the scale. */
    private static final int[][] STOPS = {
        {0x00, 0x00, 0x04},
        {0x57, 0x10, 0x6E},
        {0xBC, 0x37, 0x54},
        {0xF9, 0x8E, 0x09},
        {0xFC, 0xFF, 0xA4}
    };

    private final double upper;

    /**
     * A scale from 0 to {@code upper}.
     *
     * @param upper the value drawn in the brightest colour
     * @throws IllegalArgumentException when {@code upper} is not positive and finite
     */
    HeatScale(double upper) {
        if (!(upper > 0) || Double.isInfinite(upper)) {
            throw new IllegalArgumentException("upper " + upper + " must be positive and finite");
        }
        this.upper = upper;
    }

    @Override
    public double getLowerBound() {
        return 0;
    }

    @Override
    public double getUpperBound() {
        return upper;
    }

    @Override
    public Paint getPaint(double value) {
        double t = Double.isNaN(value) ? 0 : Math.max(0, Math.min(1, value / upper));
        double at = t * (STOPS.length - 1);
        int k = Math.min(STOPS.length - 2, (int) at);
        double f = at - k;
        int[] a = STOPS[k];
        int[] b = STOPS[k + 1];
        return new Color(mix(a[0], b[0], f), mix(a[1], b[1], f), mix(a[2], b[2], f));
    }

    private static int mix(int a, int b, double f) {
        return (int) Math.round(a + (b - a) * f);
    }
}
