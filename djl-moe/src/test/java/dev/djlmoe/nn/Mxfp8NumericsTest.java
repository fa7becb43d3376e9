/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import dev.djlmoe.autograd.Tape;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** Emulated MXFP8 numerics against a float64 reference of the OCP MX v1.0 rounding. */
class Mxfp8NumericsTest {

    /** e4m3fn rounding to nearest even, saturating at 448 (float64 reference). */
    static double e4m3(double v) {
        double a = Math.abs(v);
        if (a == 0) {
            return 0;
        }
        double step = a < 0x1p-6 ? 0x1p-9 : Math.pow(2, Math.floor(Math.log(a) / Math.log(2)) - 3);
        double q = Math.rint(a / step) * step; // rint rounds half to even
        return Math.copySign(Math.min(q, 448), v);
    }

    /** MXFP8 of one row, blocks of 32 along it (float64 reference). */
    static double[] mxfp8(float[] row) {
        double[] out = new double[row.length];
        for (int b = 0; b < row.length; b += 32) {
            int end = Math.min(row.length, b + 32);
            double amax = 0;
            for (int i = b; i < end; i++) {
                amax = Math.max(amax, Math.abs(row[i]));
            }
            int e = amax == 0 ? -127 : (int) Math.floor(Math.log(amax) / Math.log(2)) - 8;
            e = Math.max(-127, Math.min(127, e));
            double scale = Math.pow(2, e);
            for (int i = b; i < end; i++) {
                out[i] = e4m3(row[i] / scale) * scale;
            }
        }
        return out;
    }

    @Test
    void roundTripMatchesTheReference() {
        Random r = new Random(5);
        int rows = 7;
        int d = 96;
        float[] x = new float[rows * d];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(5) - 2));
        }
        try (NDManager m = NDManager.newBaseManager()) {
            float[] q = Mxfp8Numerics.roundTrip(m.create(x, new Shape(rows, d))).toFloatArray();
            for (int row = 0; row < rows; row++) {
                float[] one = new float[d];
                System.arraycopy(x, row * d, one, 0, d);
                double[] ref = mxfp8(one);
                for (int i = 0; i < d; i++) {
                    assertEquals(
                            ref[i],
                            q[row * d + i],
                            Math.abs(ref[i]) * 1e-6,
                            "row " + row + " element " + i + " of " + one[i]);
                }
            }
        }
    }

    @Test
    void fakeQuantizeRoundsValuesAndPassesGradientsStraightThrough() {
        try (NDManager m = NDManager.newBaseManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            NDArray x = m.create(new float[] {1.0f, 1.0625f, 3.3f, -0.3f}, new Shape(1, 4));
            x.setRequiresGradient(true);
            NDArray q = Mxfp8Numerics.fakeQuantize(x);
            float[] v = q.toFloatArray();
            assertEquals(
                    1.0f,
                    v[1],
                    0f,
                    "1.0625 is between e4m3 neighbours 1.0 and 1.125: ties to even");
            assertTrue(v[2] != 3.3f, "3.3 is not representable");
            gc.backward(q.mul(m.create(new float[] {1, 2, 3, 4}, new Shape(1, 4))).sum());
            assertArrayEquals(new float[] {1, 2, 3, 4}, x.getGradient().toFloatArray(), 0f);
        }
    }

    @Test
    void quantizeGradientRoundsTheIncomingGradientThroughTheTape() {
        try (NDManager m = NDManager.newBaseManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = new Tape()) {
            NDArray x = m.create(new float[] {1, 1, 1, 1}, new Shape(1, 4));
            x.setRequiresGradient(true);
            NDArray y = Mxfp8Numerics.quantizeGradient(tape, x.mul(1f));
            float[] g = {1.0625f, 3.3f, -0.3f, 2f};
            tape.backward(y.mul(m.create(g, new Shape(1, 4))).sum());
            double[] ref = mxfp8(g);
            float[] got = x.getGradient().toFloatArray();
            for (int i = 0; i < 4; i++) {
                assertEquals(ref[i], got[i], 1e-7, "gradient " + i);
            }
        }
    }

    @Test
    void mxfp8ExpertsStayCloseToFp32AndDifferFromIt() {
        try (NDManager m = NDManager.newBaseManager()) {
            Engine.getInstance().setRandomSeed(3);
            NDArray x = m.randomNormal(new Shape(16, 64));
            NDArray idx =
                    m.create(
                            new long[] {
                                0, 1, 1, 2, 2, 3, 3, 0, 0, 2, 1, 3, 2, 0, 3, 1, 0, 1, 1, 2, 2, 3, 3,
                                0, 0, 2, 1, 3, 2, 0, 3, 1
                            },
                            new Shape(16, 2));
            NDArray w = m.randomUniform(0.2f, 1f, new Shape(16, 2));
            NDArray g =
                    m.randomNormal(
                            0, 0.1f, new Shape(4, 32, 64), ai.djl.ndarray.types.DataType.FLOAT32);
            NDArray u =
                    m.randomNormal(
                            0, 0.1f, new Shape(4, 32, 64), ai.djl.ndarray.types.DataType.FLOAT32);
            NDArray d =
                    m.randomNormal(
                            0, 0.1f, new Shape(4, 64, 32), ai.djl.ndarray.types.DataType.FLOAT32);
            float[] fp32 = RoutedExperts.routedExperts(x, idx, w, g, u, d).head().toFloatArray();
            float[] mx =
                    RoutedExperts.routedExperts(x, idx, w, g, u, d, ExpertPrecision.MXFP8)
                            .head()
                            .toFloatArray();
            double num = 0;
            double den = 0;
            for (int i = 0; i < fp32.length; i++) {
                num += (fp32[i] - mx[i]) * (double) (fp32[i] - mx[i]);
                den += fp32[i] * (double) fp32[i];
            }
            double rel = Math.sqrt(num / den);
            assertTrue(rel > 1e-3 && rel < 0.1, "relative difference " + rel);
        }
    }
}
