/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import dev.djlmoe.autograd.Tape;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Emulated DeepSeek-V3 FP8 numerics against a float64 reference written with loops: {@code scale =
 * max(amax, 448 * 2^-126) / 448} over a 1 x 128 tile or a 128 x 128 block, elements e4m3 (ties to
 * even, saturating at 448). The implementation multiplies by a float32 reciprocal of the scale, so
 * values may differ from the reference by float32 rounding of the scale (tolerance {@code 1e-6
 * |ref|}), never by a step of e4m3.
 */
class Fp8BlockNumericsTest extends ManagerPerTest {

    private static final double FLOOR = 448 * Math.pow(2, -126);

    /** FP8 of the rectangle rows [r0, r1) x columns [c0, c1) of a row-major matrix (float64). */
    static void fp8Region(
            float[] in, double[] out, int base, int cols, int r0, int r1, int c0, int c1) {
        double amax = 0;
        for (int r = r0; r < r1; r++) {
            for (int c = c0; c < c1; c++) {
                double a = Math.abs(in[base + r * cols + c]);
                if (Double.isFinite(a)) {
                    amax = Math.max(amax, a);
                }
            }
        }
        double scale = Math.max(amax, FLOOR) / 448;
        for (int r = r0; r < r1; r++) {
            for (int c = c0; c < c1; c++) {
                float v = in[base + r * cols + c];
                out[base + r * cols + c] =
                        Float.isFinite(v) ? Mxfp8NumericsTest.e4m3(v / scale) * scale : Double.NaN;
            }
        }
    }

    /** Reference of {@link Fp8BlockNumerics#roundTripTiles}: [rows, d], tiles of 1 x 128. */
    static double[] tilesRef(float[] x, int rows, int d) {
        double[] out = new double[x.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < d; c += 128) {
                fp8Region(x, out, 0, d, r, r + 1, c, Math.min(d, c + 128));
            }
        }
        return out;
    }

    /** Reference of {@link Fp8BlockNumerics#roundTripBlocks}: [m, n, k], blocks of 128 x 128. */
    static double[] blocksRef(float[] w, int m, int n, int k) {
        double[] out = new double[w.length];
        for (int i = 0; i < m; i++) {
            for (int r = 0; r < n; r += 128) {
                for (int c = 0; c < k; c += 128) {
                    fp8Region(
                            w, out, i * n * k, k, r, Math.min(n, r + 128), c, Math.min(k, c + 128));
                }
            }
        }
        return out;
    }

    /** Gaussian values whose magnitude changes every 50 elements (scales differ between tiles). */
    private static float[] values(Random random, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (random.nextGaussian() * Math.pow(10, (i / 50) % 7 - 3));
        }
        return v;
    }

    private static void assertMatches(double[] ref, float[] got, String what) {
        assertEquals(ref.length, got.length, what + " length");
        for (int i = 0; i < ref.length; i++) {
            if (Double.isNaN(ref[i])) {
                assertTrue(Float.isNaN(got[i]), what + " element " + i + " is " + got[i]);
            } else {
                assertEquals(ref[i], got[i], Math.abs(ref[i]) * 1e-6, what + " element " + i);
            }
        }
    }

    @Test
    void e4m3RoundsToNearestEvenAndSaturates() {
        float[] cases = {
            0f,
            -0f,
            1.0625f,
            1.1875f,
            3.3f,
            -0.3f,
            447f,
            448f,
            460f,
            1e6f,
            -1e6f,
            0x1p-7f,
            0x1p-9f,
            0x1p-10f,
            0x1.8p-10f,
            0x1p-11f,
            0x1.4p-8f,
            240f,
            248f,
            256f,
            Float.MIN_VALUE
        };
        for (float v : cases) {
            assertEquals(Mxfp8NumericsTest.e4m3(v), Fp8BlockNumerics.e4m3(v), 0, "e4m3(" + v + ")");
        }
        Random random = new Random(1);
        for (int i = 0; i < 100_000; i++) {
            float v = (float) (random.nextGaussian() * Math.pow(2, random.nextInt(30) - 15));
            assertEquals(Mxfp8NumericsTest.e4m3(v), Fp8BlockNumerics.e4m3(v), 0, "e4m3(" + v + ")");
        }
        assertEquals(1.0f, Fp8BlockNumerics.e4m3(1.0625f), 0f, "a tie goes to the even neighbour");
        assertEquals(1.25f, Fp8BlockNumerics.e4m3(1.1875f), 0f, "a tie goes to the even neighbour");
        assertEquals(-448f, Fp8BlockNumerics.e4m3(-1e6f), 0f, "saturates");
        assertTrue(Float.isNaN(Fp8BlockNumerics.e4m3(Float.POSITIVE_INFINITY)), "no infinity");
    }

    @Test
    void tilesMatchTheReferenceOnAnOddWidthWithAZeroTile() {
        int rows = 5;
        int d = 300; // tiles of 128, 128 and 44
        float[] x = values(new Random(2), rows * d);
        for (int c = 128; c < 256; c++) {
            x[2 * d + c] = 0f; // row 2's middle tile
        }
        x[4 * d + 7] = 3e-39f; // a subnormal float in a tile of small values
        float[] q =
                Fp8BlockNumerics.roundTripTiles(manager.create(x, new Shape(rows, d)))
                        .toFloatArray();
        assertMatches(tilesRef(x, rows, d), q, "tiles");
        for (int c = 128; c < 256; c++) {
            assertEquals(0f, q[2 * d + c], 0f, "zero tile element " + c);
        }
    }

    @Test
    void blocksMatchTheReferenceOnOddSizesWithAZeroBlock() {
        int m = 2;
        int n = 150; // blocks of 128 and 22 rows
        int k = 200; // blocks of 128 and 72 columns
        float[] w = values(new Random(3), m * n * k);
        for (int r = 0; r < 128; r++) {
            for (int c = 128; c < k; c++) {
                w[n * k + r * k + c] = 0f; // matrix 1, block (0, 1)
            }
        }
        float[] q =
                Fp8BlockNumerics.roundTripBlocks(manager.create(w, new Shape(m, n, k)))
                        .toFloatArray();
        assertMatches(blocksRef(w, m, n, k), q, "blocks");
        for (int r = 0; r < 128; r++) {
            for (int c = 128; c < k; c++) {
                assertEquals(0f, q[n * k + r * k + c], 0f, "zero block row " + r + " col " + c);
            }
        }
    }

    @Test
    void aBlockSharesOneScaleOverItsRows() {
        // Row 0 holds 1000, the other rows values near 1e-3: their own 1 x 128 tiles would keep
        // three mantissa bits, the block's scale (1000 / 448) flushes them to zero.
        int n = 4;
        int k = 128;
        float[] w = new float[n * k];
        java.util.Arrays.fill(w, 1.1e-3f);
        w[0] = 1000f;
        NDArray a = manager.create(w, new Shape(n, k));
        float[] blocks = Fp8BlockNumerics.roundTripBlocks(a).toFloatArray();
        float[] tiles = Fp8BlockNumerics.roundTripTiles(a).toFloatArray();
        assertEquals(1000f, blocks[0], 1000 * 0.07, "the largest element keeps its magnitude");
        assertEquals(0f, blocks[k + 5], 0f, "1.1e-3 under a block scale of 1000/448");
        assertEquals(1.1e-3f, tiles[k + 5], 1.1e-3 * 0.07, "1.1e-3 under its own tile scale");
    }

    @Test
    void nonFiniteElementsBecomeNaNAndLeaveTheirNeighboursAlone() {
        int n = 3;
        int k = 130;
        float[] w = values(new Random(4), n * k);
        float[] finite = w.clone();
        w[5] = Float.NaN;
        w[k + 6] = Float.POSITIVE_INFINITY;
        w[2 * k + 129] = Float.NEGATIVE_INFINITY;
        finite[5] = 0f;
        finite[k + 6] = 0f;
        finite[2 * k + 129] = 0f;
        NDArray a = manager.create(w, new Shape(n, k));
        NDArray clean = manager.create(finite, new Shape(n, k));
        for (boolean blocks : new boolean[] {true, false}) {
            float[] q =
                    (blocks
                                    ? Fp8BlockNumerics.roundTripBlocks(a)
                                    : Fp8BlockNumerics.roundTripTiles(a))
                            .toFloatArray();
            float[] want =
                    (blocks
                                    ? Fp8BlockNumerics.roundTripBlocks(clean)
                                    : Fp8BlockNumerics.roundTripTiles(clean))
                            .toFloatArray();
            String what = blocks ? "blocks" : "tiles";
            for (int i = 0; i < w.length; i++) {
                if (Float.isFinite(w[i])) {
                    assertEquals(want[i], q[i], 0f, what + " element " + i);
                } else {
                    assertTrue(Float.isNaN(q[i]), what + " element " + i + " is " + q[i]);
                }
            }
        }
    }

    @Test
    void blocksNeedTwoAxesOfFloat32() {
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> Fp8BlockNumerics.roundTripBlocks(manager.ones(new Shape(7))));
        assertTrue(
                e.getMessage().contains("[..., N, K]") && e.getMessage().contains("(7)"),
                e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                Fp8BlockNumerics.roundTripBlocks(
                                        manager.ones(new Shape(2, 2), DataType.FLOAT64)));
        assertTrue(e.getMessage().contains("float32"), e.getMessage());
        assertEquals(
                new Shape(3, 0, 5),
                Fp8BlockNumerics.roundTripBlocks(manager.ones(new Shape(3, 0, 5))).getShape());
    }

    @Test
    void fakeQuantizePassesGradientsStraightThrough() {
        try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            NDArray x = manager.create(new float[] {1.0f, 1.0625f, 3.3f, -0.3f}, new Shape(2, 2));
            x.setRequiresGradient(true);
            NDArray q =
                    Fp8BlockNumerics.fakeQuantizeBlocks(x)
                            .add(Fp8BlockNumerics.fakeQuantizeTiles(x));
            float[] v = q.toFloatArray();
            assertTrue(v[1] != 2 * 1.0625f, "1.0625 under the block scale 3.3 / 448 is rounded");
            gc.backward(q.mul(manager.create(new float[] {1, 2, 3, 4}, new Shape(2, 2))).sum());
            assertArrayEquals(new float[] {2, 4, 6, 8}, x.getGradient().toFloatArray(), 0f);
        }
    }

    @Test
    void quantizeGradientRoundsTheIncomingGradientInTilesThroughTheTape() {
        int d = 200;
        float[] g = values(new Random(6), d);
        try (GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = new Tape()) {
            NDArray x = manager.ones(new Shape(1, d));
            x.setRequiresGradient(true);
            NDArray y = Fp8BlockNumerics.quantizeGradient(tape, x.mul(1f));
            tape.backward(y.mul(manager.create(g, new Shape(1, d))).sum());
            assertMatches(tilesRef(g, 1, d), x.getGradient().toFloatArray(), "gradient");
        }
        NDArray plain = manager.ones(new Shape(1, d));
        assertTrue(plain == Fp8BlockNumerics.quantizeGradient(null, plain), "no tape: identity");
    }

    @Test
    void fp8ExpertsStayCloseToFp32AndDifferFromItAndFromMxfp8() {
        Engine.getInstance().setRandomSeed(3);
        int rows = 16;
        int h = 192; // tiles of 128 and 64
        int i = 160;
        NDArray x = manager.randomNormal(new Shape(rows, h));
        long[] idx = new long[rows * 2];
        for (int r = 0; r < idx.length; r++) {
            idx[r] = (r * 5 + r / 3) % 4;
        }
        NDArray topk = manager.create(idx, new Shape(rows, 2));
        NDArray w = manager.randomUniform(0.2f, 1f, new Shape(rows, 2));
        NDArray g = manager.randomNormal(0, 0.1f, new Shape(4, i, h), DataType.FLOAT32);
        NDArray u = manager.randomNormal(0, 0.1f, new Shape(4, i, h), DataType.FLOAT32);
        NDArray d = manager.randomNormal(0, 0.1f, new Shape(4, h, i), DataType.FLOAT32);
        float[] fp32 = RoutedExperts.routedExperts(x, topk, w, g, u, d).head().toFloatArray();
        float[] fp8 =
                RoutedExperts.routedExperts(x, topk, w, g, u, d, ExpertPrecision.FP8)
                        .head()
                        .toFloatArray();
        float[] mx =
                RoutedExperts.routedExperts(x, topk, w, g, u, d, ExpertPrecision.MXFP8)
                        .head()
                        .toFloatArray();
        double rel = relative(fp8, fp32);
        assertTrue(rel > 1e-3 && rel < 0.1, "relative difference to fp32 " + rel);
        assertTrue(relative(fp8, mx) > 1e-4, "fp8 and mxfp8 round differently");
    }

    private static double relative(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - b[i]) * (double) (a[i] - b[i]);
            den += b[i] * (double) b[i];
        }
        return Math.sqrt(num / den);
    }
}
