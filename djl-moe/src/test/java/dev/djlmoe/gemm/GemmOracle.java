/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.nn.Fp8BlockNumerics;
import dev.djlmoe.nn.Mxfp8Numerics;

/**
 * Float64 references of the op's GEMMs, written with loops over the quantised inputs (values of the
 * e4m3 elements times their scales, from the DJL quantisers, which follow the native rules), and
 * the bound they are checked with.
 */
final class GemmOracle {

    /** Relative bound against the sum of |a b|: fp32 block sums and scale products. */
    static final double GEMM_BOUND = 4e-6;

    private GemmOracle() {}

    /** Quantised rows [M, K] (1 x 128 / 1 x 32 tiles along K), as float values. */
    static NDArray rows(GemmFormat f, NDArray x) {
        return f == GemmFormat.FP8_BLOCK
                ? Fp8BlockNumerics.fakeQuantizeTiles(x)
                : Mxfp8Numerics.fakeQuantize(x);
    }

    /** Quantised weights [G, N, K] as the forward GEMM reads them. */
    static NDArray weights(GemmFormat f, NDArray w) {
        return f == GemmFormat.FP8_BLOCK
                ? Fp8BlockNumerics.fakeQuantizeBlocks(w)
                : Mxfp8Numerics.fakeQuantize(w);
    }

    /** Quantised transposed weights [G, K, N] as the activation-gradient GEMM reads them. */
    static NDArray weightsT(GemmFormat f, NDArray w) {
        if (f == GemmFormat.FP8_BLOCK) {
            return Fp8BlockNumerics.fakeQuantizeBlocks(w).transpose(0, 2, 1);
        }
        return Mxfp8Numerics.fakeQuantize(w.transpose(0, 2, 1).duplicate());
    }

    /** Rows [M, C] quantised along the tokens of each group (tiles restart at a group's start). */
    static NDArray tokenTiles(GemmFormat f, NDArray x, long[] offsets) {
        NDList parts = new NDList();
        for (int g = 0; g + 1 < offsets.length; g++) {
            if (offsets[g + 1] == offsets[g]) {
                continue;
            }
            NDArray slice = x.get(offsets[g] + ":" + offsets[g + 1]).transpose().duplicate();
            parts.add(rows(f, slice).transpose());
        }
        if (parts.isEmpty()) {
            return x.zerosLike();
        }
        return ai.djl.ndarray.NDArrays.concat(parts, 0);
    }

    static double[] d(NDArray a) {
        float[] f = a.toFloatArray();
        double[] out = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            out[i] = f[i];
        }
        return out;
    }

    /** C[m, n] = sum_k a[m, k] b[g, n, k] for the rows of group g; also S = sum |a b|. */
    static double[][] groupedM(NDArray aq, NDArray bq, long[] offsets) {
        Shape bs = bq.getShape();
        int n = (int) bs.get(1);
        int k = (int) bs.get(2);
        int m = (int) aq.getShape().get(0);
        double[] a = d(aq);
        double[] b = d(bq);
        double[] c = new double[m * n];
        double[] s = new double[m * n];
        for (int g = 0; g + 1 < offsets.length; g++) {
            for (int r = (int) offsets[g]; r < offsets[g + 1]; r++) {
                for (int j = 0; j < n; j++) {
                    double acc = 0;
                    double abs = 0;
                    for (int t = 0; t < k; t++) {
                        double p = a[r * k + t] * b[(g * n + j) * k + t];
                        acc += p;
                        abs += Math.abs(p);
                    }
                    c[r * n + j] = acc;
                    s[r * n + j] = abs;
                }
            }
        }
        return new double[][] {c, s};
    }

    /** C[g, n, k] = sum over the rows m of group g of a[m, n] b[m, k]; also S = sum |a b|. */
    static double[][] groupedK(NDArray aq, NDArray bq, long[] offsets) {
        int n = (int) aq.getShape().get(1);
        int k = (int) bq.getShape().get(1);
        double[] a = d(aq);
        double[] b = d(bq);
        int groups = offsets.length - 1;
        double[] c = new double[groups * n * k];
        double[] s = new double[groups * n * k];
        for (int g = 0; g < groups; g++) {
            for (int r = (int) offsets[g]; r < offsets[g + 1]; r++) {
                for (int j = 0; j < n; j++) {
                    double aj = a[r * n + j];
                    for (int t = 0; t < k; t++) {
                        double p = aj * b[r * k + t];
                        c[(g * n + j) * k + t] += p;
                        s[(g * n + j) * k + t] += Math.abs(p);
                    }
                }
            }
        }
        return new double[][] {c, s};
    }

    /** Checks |got - ref| <= GEMM_BOUND * S elementwise. */
    static void assertGemm(String what, NDArray got, double[][] ref) {
        assertGemm(what, got, ref, GEMM_BOUND);
    }

    /** Checks |got - ref| <= bound * S elementwise. */
    static void assertGemm(String what, NDArray got, double[][] ref, double relBound) {
        float[] g = got.toFloatArray();
        assertTrue(g.length == ref[0].length, what + ": " + g.length + " vs " + ref[0].length);
        for (int i = 0; i < g.length; i++) {
            double err = Math.abs(g[i] - ref[0][i]);
            double bound = relBound * ref[1][i] + 1e-30;
            if (!(err <= bound)) {
                throw new AssertionError(
                        what
                                + "["
                                + i
                                + "] = "
                                + g[i]
                                + ", float64 reference "
                                + ref[0][i]
                                + ", error "
                                + err
                                + " > bound "
                                + bound);
            }
        }
    }

    /** h = silu(gate) up from y13 [M, 2I]. */
    static double[] swiglu(NDArray y13) {
        int m = (int) y13.getShape().get(0);
        int i2 = (int) y13.getShape().get(1);
        int in = i2 / 2;
        double[] y = d(y13);
        double[] h = new double[m * in];
        for (int r = 0; r < m; r++) {
            for (int j = 0; j < in; j++) {
                double g = y[r * i2 + j];
                h[r * in + j] = g / (1 + Math.exp(-g)) * y[r * i2 + in + j];
            }
        }
        return h;
    }

    /**
     * [dgate, dup] from y13 [M, 2I] and dh [M, I], and each element's rounding scale: float32 steps
     * round {@code 1 - sig} to an absolute error of order 2^-24 before {@code g} multiplies it, so
     * dgate's error scales with {@code |dh u| (1 + |g|)}, not with dgate (which cancels near g =
     * -1.28).
     */
    static double[][] dswiglu(NDArray y13, NDArray dhArr) {
        int m = (int) y13.getShape().get(0);
        int i2 = (int) y13.getShape().get(1);
        int in = i2 / 2;
        double[] y = d(y13);
        double[] dh = d(dhArr);
        double[] out = new double[m * i2];
        double[] scale = new double[m * i2];
        for (int r = 0; r < m; r++) {
            for (int j = 0; j < in; j++) {
                double g = y[r * i2 + j];
                double u = y[r * i2 + in + j];
                double sig = 1 / (1 + Math.exp(-g));
                double d = dh[r * in + j];
                out[r * i2 + j] = d * u * sig * (1 + g * (1 - sig));
                out[r * i2 + in + j] = d * g * sig;
                scale[r * i2 + j] = Math.abs(d * u) * (1 + Math.abs(g));
                scale[r * i2 + in + j] = Math.abs(out[r * i2 + in + j]);
            }
        }
        return new double[][] {out, scale};
    }

    /** Checks |got - ref| <= rel scale elementwise. */
    static void assertScaled(String what, NDArray got, double[] ref, double[] scale, double rel) {
        float[] g = got.toFloatArray();
        for (int i = 0; i < g.length; i++) {
            double err = Math.abs(g[i] - ref[i]);
            if (!(err <= rel * scale[i] + 1e-30)) {
                throw new AssertionError(
                        what
                                + "["
                                + i
                                + "] = "
                                + g[i]
                                + ", float64 reference "
                                + ref[i]
                                + ", error "
                                + err
                                + " > "
                                + rel
                                + " * "
                                + scale[i]);
            }
        }
    }

    /** Checks |got - ref| <= rel |ref| + abs elementwise. */
    static void assertClose(String what, NDArray got, double[] ref, double rel, double abs) {
        float[] g = got.toFloatArray();
        assertTrue(g.length == ref.length, what + ": " + g.length + " vs " + ref.length);
        for (int i = 0; i < g.length; i++) {
            double err = Math.abs(g[i] - ref[i]);
            if (!(err <= rel * Math.abs(ref[i]) + abs)) {
                throw new AssertionError(
                        what
                                + "["
                                + i
                                + "] = "
                                + g[i]
                                + ", float64 reference "
                                + ref[i]
                                + ", error "
                                + err);
            }
        }
    }

    /**
     * Checks a forward and its backward (CPU copies) against the float64 loops: every GEMM output
     * within {@code bound} times the sum of |a b|, the fused SwiGLU steps within {@code
     * swigluBound} relative (of dgate's rounding scale for the backward).
     */
    static void checkAll(
            GemmFormat f,
            long[] off,
            NDArray x,
            NDArray w13,
            NDArray w2,
            NDArray dy,
            NDArray y13,
            NDArray h,
            NDArray y,
            Fp8ExpertGemms.Gradients g,
            double bound,
            double swigluBound) {
        assertGemm("y13", y13, groupedM(rows(f, x), weights(f, w13), off), bound);
        assertClose("h", h, swiglu(y13), swigluBound, 1e-30);
        assertGemm("y", y, groupedM(rows(f, h), weights(f, w2), off), bound);
        assertGemm("dh", g.dh(), groupedM(rows(f, dy), weightsT(f, w2), off), bound);
        double[][] dy13 = dswiglu(y13, g.dh());
        assertScaled("dy13", g.dy13(), dy13[0], dy13[1], swigluBound);
        assertGemm("dx", g.dx(), groupedM(rows(f, g.dy13()), weightsT(f, w13), off), bound);
        assertGemm(
                "dW2",
                g.dw2(),
                groupedK(tokenTiles(f, dy, off), tokenTiles(f, h, off), off),
                bound);
        assertGemm(
                "dW13",
                g.dw13(),
                groupedK(tokenTiles(f, g.dy13(), off), tokenTiles(f, x, off), off),
                bound);
    }
}
