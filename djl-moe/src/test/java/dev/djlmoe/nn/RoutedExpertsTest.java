package dev.djlmoe.nn;

import static dev.djlmoe.nn.NnTestSupport.assertClose;
import static dev.djlmoe.nn.NnTestSupport.gaussian;
import static dev.djlmoe.nn.NnTestSupport.widen;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * RoutedExperts against a dense masked reference built from plain DJL ops and against float64
 * loops. Gradient tolerance: |got - want| <= 1e-5 + 1e-4 |want| (float32, different summation
 * order).
 */
class RoutedExpertsTest extends ManagerPerTest {

    private static final double ATOL = 1e-5;
    private static final double RTOL = 1e-4;

    /** Every expert on every row; the weight of expert e in row r is sum_k w[r,k] [idx[r,k]==e]. */
    static NDArray denseReference(
            NDArray x, NDArray idx, NDArray w, NDArray g, NDArray u, NDArray d) {
        long experts = g.getShape().get(0);
        NDArray y = null;
        for (int e = 0; e < experts; e++) {
            NDArray gate = x.matMul(g.get(e).transpose()); // [R, I]
            NDArray up = x.matMul(u.get(e).transpose()); // [R, I]
            NDArray act = gate.mul(gate.getNDArrayInternal().sigmoid()).mul(up);
            NDArray ye = act.matMul(d.get(e).transpose()); // [R, H]
            NDArray m = w.mul(idx.eq(e).toType(DataType.FLOAT32, false)).sum(new int[] {1}, true);
            NDArray term = ye.mul(m);
            y = y == null ? term : y.add(term);
        }
        return y;
    }

    /** Float64 loops of the same formula. */
    static double[] loopReference(
            double[] x,
            long[] idx,
            double[] w,
            double[] g,
            double[] u,
            double[] d,
            int rows,
            int k,
            int h,
            int i) {
        double[] y = new double[rows * h];
        for (int r = 0; r < rows; r++) {
            for (int s = 0; s < k; s++) {
                int e = (int) idx[r * k + s];
                if (e < 0) {
                    continue;
                }
                double[] act = new double[i];
                for (int a = 0; a < i; a++) {
                    double gate = 0;
                    double up = 0;
                    for (int j = 0; j < h; j++) {
                        gate += g[(e * i + a) * h + j] * x[r * h + j];
                        up += u[(e * i + a) * h + j] * x[r * h + j];
                    }
                    act[a] = gate / (1 + Math.exp(-gate)) * up;
                }
                for (int j = 0; j < h; j++) {
                    double o = 0;
                    for (int a = 0; a < i; a++) {
                        o += d[(e * h + j) * i + a] * act[a];
                    }
                    y[r * h + j] += w[r * k + s] * o;
                }
            }
        }
        return y;
    }

    /** Inputs of one case; leaves for autograd are fresh copies. */
    private final class Case {
        final NDArray x;
        final NDArray idx;
        final NDArray w;
        final NDArray g;
        final NDArray u;
        final NDArray d;

        Case(long[] idxData, int rows, int k, int experts, int h, int i, long seed) {
            Random random = new Random(seed);
            x = gaussian(manager, random, new Shape(rows, h), 1.0);
            idx = manager.create(idxData, new Shape(rows, k));
            w = gaussian(manager, random, new Shape(rows, k), 1.0);
            g = gaussian(manager, random, new Shape(experts, i, h), 1 / Math.sqrt(h));
            u = gaussian(manager, random, new Shape(experts, i, h), 1 / Math.sqrt(h));
            d = gaussian(manager, random, new Shape(experts, h, i), 1 / Math.sqrt(i));
        }

        NDList leaves() {
            NDList list = new NDList();
            for (NDArray a : new NDArray[] {x, w, g, u, d}) {
                NDArray copy = a.duplicate();
                copy.setRequiresGradient(true);
                list.add(copy);
            }
            return list;
        }
    }

    /** Runs forward and backward of loss = sum(y * c); returns y and the five gradients. */
    private NDList runWithGradients(Case c, boolean reference, long seed) {
        NDList leaves = c.leaves();
        NDArray y;
        try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            if (reference) {
                y =
                        denseReference(
                                leaves.get(0),
                                c.idx,
                                leaves.get(1),
                                leaves.get(2),
                                leaves.get(3),
                                leaves.get(4));
            } else {
                y =
                        RoutedExperts.routedExperts(
                                        leaves.get(0),
                                        c.idx,
                                        leaves.get(1),
                                        leaves.get(2),
                                        leaves.get(3),
                                        leaves.get(4))
                                .singletonOrThrow();
            }
            NDArray cot = gaussian(manager, new Random(seed), y.getShape(), 1.0);
            gc.backward(y.mul(cot).sum());
        }
        NDList out = new NDList(y.stopGradient());
        for (NDArray leaf : leaves) {
            out.add(leaf.getGradient());
        }
        return out;
    }

    private static final String[] NAMES = {"y", "dx", "dweights", "dgate", "dup", "ddown"};

    private void compareWithDense(Case c, long seed) {
        NDList want = runWithGradients(c, true, seed);
        NDList got = runWithGradients(c, false, seed);
        for (int n = 0; n < NAMES.length; n++) {
            assertClose(NAMES[n], want.get(n), got.get(n), ATOL, RTOL);
        }
    }

    private static long[] randomIdx(Random random, int rows, int k, int experts, int skip) {
        long[] idx = new long[rows * k];
        for (int r = 0; r < rows; r++) {
            for (int s = 0; s < k; s++) {
                long e;
                boolean dup;
                do {
                    e = random.nextInt(experts + 1) - 1; // -1 or an expert
                    dup = false;
                    for (int p = 0; p < s; p++) {
                        dup |= e >= 0 && idx[r * k + p] == e;
                    }
                } while (e == skip || dup);
                idx[r * k + s] = e;
            }
        }
        return idx;
    }

    @Test
    void tinyCaseMatchesFloat64Loops() {
        int rows = 5;
        int k = 2;
        int experts = 3;
        int h = 4;
        int i = 6;
        long[] idx = {0, 2, -1, 1, -1, -1, 2, 0, 1, 0};
        Case c = new Case(idx, rows, k, experts, h, i, 1);
        NDArray y = RoutedExperts.routedExperts(c.x, c.idx, c.w, c.g, c.u, c.d).singletonOrThrow();
        double[] want =
                loopReference(
                        widen(c.x),
                        idx,
                        widen(c.w),
                        widen(c.g),
                        widen(c.u),
                        widen(c.d),
                        rows,
                        k,
                        h,
                        i);
        assertClose("y", want, y.toFloatArray(), 1e-6, 1e-5);
        float[] row2 = Arrays.copyOfRange(y.toFloatArray(), 2 * h, 3 * h);
        assertArrayEquals(new float[h], row2, "a row with no local expert gives zeros");
    }

    @Test
    void forwardAndGradientsMatchDenseReference() {
        // some -1 slots, rows with no local slot, and expert 3 receiving no rows
        int rows = 40;
        int k = 3;
        int experts = 6;
        long[] idx = randomIdx(new Random(2), rows, k, experts, 3);
        Arrays.fill(idx, 0, k, -1); // row 0 has no local expert
        Case c = new Case(idx, rows, k, experts, 16, 24, 3);
        compareWithDense(c, 4);
        NDList got = runWithGradients(c, false, 4);
        assertEquals(0f, got.get(3).get(3).abs().sum().getFloat(), "no gradient for idle expert");
        assertEquals(0f, got.get(2).get(0).abs().sum().getFloat(), "weights of -1 slots");
    }

    @Test
    void hotExpertReceivingEveryRow() {
        int rows = 24;
        int k = 2;
        long[] idx = new long[rows * k];
        for (int r = 0; r < rows; r++) {
            idx[r * k] = 2;
            idx[r * k + 1] = -1;
        }
        Case c = new Case(idx, rows, k, 4, 8, 12, 5);
        compareWithDense(c, 6);
        NDList got = runWithGradients(c, false, 6);
        for (int e : new int[] {0, 1, 3}) {
            assertEquals(0f, got.get(3).get(e).abs().sum().getFloat(), "idle expert " + e);
            assertEquals(0f, got.get(5).get(e).abs().sum().getFloat(), "idle expert " + e);
        }
        assertTrue(got.get(3).get(2).abs().sum().getFloat() > 0, "hot expert has a gradient");
    }

    @Test
    void noLocalSlotAtAllGivesZerosAndZeroGradients() {
        int rows = 6;
        int k = 2;
        long[] idx = new long[rows * k];
        Arrays.fill(idx, -1);
        Case c = new Case(idx, rows, k, 3, 8, 4, 7);
        NDList got = runWithGradients(c, false, 8);
        for (int n = 0; n < NAMES.length; n++) {
            assertEquals(0f, got.get(n).abs().sum().getFloat(), NAMES[n]);
        }
        assertEquals(new Shape(rows, 8), got.get(0).getShape());
    }

    @Test
    void emptyInputGivesEmptyOutput() {
        Case c = new Case(new long[0], 0, 2, 3, 8, 4, 9);
        NDArray y = RoutedExperts.routedExperts(c.x, c.idx, c.w, c.g, c.u, c.d).singletonOrThrow();
        assertEquals(new Shape(0, 8), y.getShape());
    }

    @Test
    void blockHasStackedHuggingFaceParameters() {
        int experts = 4;
        int h = 64;
        int i = 32;
        RoutedExperts block =
                RoutedExperts.builder()
                        .setNumExperts(experts)
                        .setHiddenSize(h)
                        .setIntermediateSize(i)
                        .build();
        block.initialize(
                manager, DataType.FLOAT32, new Shape(10, h), new Shape(10, 2), new Shape(10, 2));
        assertEquals(
                Arrays.asList(
                        RoutedExperts.GATE_PROJ, RoutedExperts.UP_PROJ, RoutedExperts.DOWN_PROJ),
                block.getParameters().keys());
        NDArray g = block.getParameters().get(RoutedExperts.GATE_PROJ).getArray();
        NDArray u = block.getParameters().get(RoutedExperts.UP_PROJ).getArray();
        NDArray d = block.getParameters().get(RoutedExperts.DOWN_PROJ).getArray();
        assertEquals(new Shape(experts, i, h), g.getShape());
        assertEquals(new Shape(experts, i, h), u.getShape());
        assertEquals(new Shape(experts, h, i), d.getShape());
        assertEquals(1 / Math.sqrt(h), std(g), 0.05 / Math.sqrt(h), "gate_proj std");
        assertEquals(1 / Math.sqrt(i), std(d), 0.05 / Math.sqrt(i), "down_proj std");

        Random random = new Random(10);
        NDArray x = gaussian(manager, random, new Shape(10, h), 1.0);
        NDArray idx = manager.create(randomIdx(random, 10, 2, experts, -2), new Shape(10, 2));
        NDArray w = gaussian(manager, random, new Shape(10, 2), 1.0);
        NDArray y =
                block.forward(new ParameterStore(manager, false), new NDList(x, idx, w), false)
                        .singletonOrThrow();
        assertClose("block", denseReference(x, idx, w, g, u, d), y, ATOL, RTOL);
    }

    private static double std(NDArray a) {
        double[] v = widen(a);
        double mean = Arrays.stream(v).average().orElse(0);
        return Math.sqrt(Arrays.stream(v).map(z -> (z - mean) * (z - mean)).sum() / v.length);
    }

    @Test
    void rejectsBadIdsAndShapes() {
        Case c = new Case(new long[] {0, 3, 1, -1}, 2, 2, 3, 4, 5, 11);
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> RoutedExperts.routedExperts(c.x, c.idx, c.w, c.g, c.u, c.d));
        assertTrue(
                e.getMessage().contains("got 3") && e.getMessage().contains("[-1, 3)"),
                e.getMessage());
        NDArray minusTwo = manager.create(new long[] {0, -2, 1, -1}, new Shape(2, 2));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> RoutedExperts.routedExperts(c.x, minusTwo, c.w, c.g, c.u, c.d));
        assertTrue(e.getMessage().contains("got -2"), e.getMessage());
        NDArray ok = manager.create(new long[] {0, 2, 1, -1}, new Shape(2, 2));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                RoutedExperts.routedExperts(
                                        c.x, ok, manager.ones(new Shape(2, 3)), c.g, c.u, c.d));
        assertTrue(e.getMessage().contains("topkWeights"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> RoutedExperts.routedExperts(c.x, ok, c.w, c.g, c.u, c.g));
        assertTrue(e.getMessage().contains("downProj"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(0)
                                        .setHiddenSize(4)
                                        .setIntermediateSize(4)
                                        .build());
        assertTrue(e.getMessage().contains("numExperts") && e.getMessage().contains("0"));
    }
}
