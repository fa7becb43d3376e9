package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Random;

/** Shared helpers of the {@code dev.djlmoe.nn} tests: random data and tolerant comparisons. */
final class NnTestSupport {

    private NnTestSupport() {}

    /** Gaussian floats with the given standard deviation. */
    static float[] gaussian(Random random, int n, double std) {
        float[] out = new float[n];
        for (int i = 0; i < n; i++) {
            out[i] = (float) (random.nextGaussian() * std);
        }
        return out;
    }

    static NDArray gaussian(NDManager manager, Random random, Shape shape, double std) {
        return manager.create(gaussian(random, (int) shape.size(), std), shape);
    }

    /** Widens floats to doubles. */
    static double[] widen(NDArray array) {
        float[] f = array.toType(DataType.FLOAT32, false).toFloatArray();
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            d[i] = f[i];
        }
        return d;
    }

    /**
     * Asserts {@code |actual - expected| <= atol + rtol * |expected|} element-wise, naming the
     * worst element.
     */
    static void assertClose(
            String what, double[] expected, float[] actual, double atol, double rtol) {
        assertEquals(expected.length, actual.length, what + ": length");
        double worst = -1;
        int worstAt = -1;
        for (int i = 0; i < expected.length; i++) {
            double err = Math.abs(actual[i] - expected[i]);
            double excess = err - (atol + rtol * Math.abs(expected[i]));
            if (!(excess <= 0) && (worstAt < 0 || excess > worst)) {
                worst = excess;
                worstAt = i;
            }
        }
        if (worstAt >= 0) {
            fail(
                    what
                            + ": element "
                            + worstAt
                            + " expected "
                            + expected[worstAt]
                            + " got "
                            + actual[worstAt]
                            + " (atol "
                            + atol
                            + ", rtol "
                            + rtol
                            + ")");
        }
    }

    static void assertClose(
            String what, float[] expected, float[] actual, double atol, double rtol) {
        double[] e = new double[expected.length];
        for (int i = 0; i < e.length; i++) {
            e[i] = expected[i];
        }
        assertClose(what, e, actual, atol, rtol);
    }

    static void assertClose(
            String what, NDArray expected, NDArray actual, double atol, double rtol) {
        assertEquals(expected.getShape(), actual.getShape(), what + ": shape");
        assertClose(what, expected.toFloatArray(), actual.toFloatArray(), atol, rtol);
    }

    static double sigmoid(double x) {
        return 1.0 / (1.0 + Math.exp(-x));
    }
}
