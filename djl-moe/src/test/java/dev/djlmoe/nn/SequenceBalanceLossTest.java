package dev.djlmoe.nn;

import static dev.djlmoe.nn.NnTestSupport.sigmoid;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import java.util.Random;
import org.junit.jupiter.api.Test;

class SequenceBalanceLossTest extends ManagerPerTest {

    private static final int B = 3;
    private static final int S = 7;
    private static final int E = 8;
    private static final int K = 2;

    /** Loop reference in float64, straight from the DeepSeek-V3 formula. */
    static double reference(double[] s, long[] idx, int b, int seq, int e, int k, double alpha) {
        double total = 0;
        for (int bi = 0; bi < b; bi++) {
            double seqLoss = 0;
            for (int i = 0; i < e; i++) {
                int count = 0;
                double p = 0;
                for (int t = 0; t < seq; t++) {
                    int row = bi * seq + t;
                    for (int kk = 0; kk < k; kk++) {
                        count += idx[row * k + kk] == i ? 1 : 0;
                    }
                    double rowSum = 0;
                    for (int j = 0; j < e; j++) {
                        rowSum += s[row * e + j];
                    }
                    p += s[row * e + i] / rowSum / seq;
                }
                double f = (double) e / (k * seq) * count;
                seqLoss += f * p;
            }
            total += alpha * seqLoss;
        }
        return total / b;
    }

    private double[] scores(Random random) {
        double[] s = new double[B * S * E];
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) sigmoid(random.nextGaussian());
        }
        return s;
    }

    /** Random distinct picks, skewed so expert 0 is overloaded and expert E-1 never picked. */
    private long[] picks(Random random) {
        long[] idx = new long[B * S * K];
        for (int row = 0; row < B * S; row++) {
            idx[row * K] = random.nextInt(3) == 0 ? 1 + random.nextInt(E - 2) : 0;
            long second;
            do {
                second = random.nextInt(E - 1);
            } while (second == idx[row * K]);
            idx[row * K + 1] = second;
        }
        return idx;
    }

    private NDArray toArray(double[] s, Shape shape) {
        float[] f = new float[s.length];
        for (int i = 0; i < f.length; i++) {
            f[i] = (float) s[i];
        }
        return manager.create(f, shape);
    }

    @Test
    void matchesLoopReferenceForFlatAndBatchedShapes() {
        Random random = new Random(3);
        double[] s = scores(random);
        long[] idx = picks(random);
        double expected = reference(s, idx, B, S, E, K, 1e-4);
        NDArray flat = toArray(s, new Shape(B * S, E));
        NDArray idxFlat = manager.create(idx, new Shape(B * S, K));
        float got = SequenceBalanceLoss.compute(flat, idxFlat, B, S, K, 1e-4f).getFloat();
        assertEquals(expected, got, 1e-6 * Math.abs(expected));
        float gotBatched =
                SequenceBalanceLoss.compute(
                                flat.reshape(B, S, E), idxFlat.reshape(B, S, K), B, S, K, 1e-4f)
                        .getFloat();
        assertEquals(expected, gotBatched, 1e-6 * Math.abs(expected));
    }

    @Test
    void perfectlyBalancedRoutingCostsAlpha() {
        // uniform scores and every expert picked equally often in each sequence: sum f_i P_i = 1
        int seq = 4;
        long[] idx = new long[2 * seq * K];
        for (int i = 0; i < idx.length; i++) {
            idx[i] = i % E;
        }
        NDArray s = manager.full(new Shape(2 * seq, E), 0.3f);
        float loss =
                SequenceBalanceLoss.compute(
                                s, manager.create(idx, new Shape(2 * seq, K)), 2, seq, K, 0.01f)
                        .getFloat();
        assertEquals(0.01f, loss, 1e-8f);
    }

    @Test
    void gradientMatchesFiniteDifferenceAndPushesLoadAway() {
        Random random = new Random(5);
        double[] s = scores(random);
        long[] idx = picks(random);
        float alpha = 0.1f;
        NDArray scoresArr = toArray(s, new Shape(B * S, E));
        scoresArr.setRequiresGradient(true);
        try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            NDArray loss =
                    SequenceBalanceLoss.compute(
                            scoresArr, manager.create(idx, new Shape(B * S, K)), B, S, K, alpha);
            gc.backward(loss);
        }
        float[] grad = scoresArr.getGradient().toFloatArray();
        // central difference of the float64 reference on a few scores
        double h = 1e-6;
        for (int flat : new int[] {0, 5, E + 3, 2 * S * E + E - 1}) {
            double[] plus = s.clone();
            double[] minus = s.clone();
            plus[flat] += h;
            minus[flat] -= h;
            double fd =
                    (reference(plus, idx, B, S, E, K, alpha)
                                    - reference(minus, idx, B, S, E, K, alpha))
                            / (2 * h);
            assertEquals(fd, grad[flat], 1e-5 * Math.abs(fd) + 1e-8, "d loss / d s at " + flat);
        }
        // direction: raising the overloaded expert 0's score raises the loss, raising the never
        // picked expert E-1's score lowers it (for every token)
        for (int row = 0; row < B * S; row++) {
            assertTrue(grad[row * E] > 0, "overloaded expert gradient at row " + row);
            assertTrue(grad[row * E + E - 1] < 0, "unused expert gradient at row " + row);
        }
    }

    @Test
    void rejectsWrongArguments() {
        NDArray s = manager.ones(new Shape(6, E));
        NDArray idx = manager.zeros(new Shape(6, K)).toType(DataType.INT64, false);
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> SequenceBalanceLoss.compute(s, idx, 2, 4, K, 1f));
        assertTrue(e.getMessage().contains("(6, 8)"), e.getMessage());
        NDArray bad =
                manager.create(new long[] {0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2}, new Shape(6, K));
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> SequenceBalanceLoss.compute(s, bad, 2, 3, K, 1f));
        assertTrue(e.getMessage().contains("got 8"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> SequenceBalanceLoss.compute(s, idx, 2, 3, 3, 1f));
        assertTrue(e.getMessage().contains("topkIdx"), e.getMessage());
    }
}
