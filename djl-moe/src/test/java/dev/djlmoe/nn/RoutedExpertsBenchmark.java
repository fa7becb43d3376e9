package dev.djlmoe.nn;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.core.Linear;
import ai.djl.training.GradientCollector;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import java.util.Locale;
import java.util.Random;

/**
 * Forward + backward speed of {@link RoutedExperts} against DJL's own dense matrix products.
 *
 * <p>Prints, asserts nothing. Not matched by the default Surefire patterns; run it by name:
 *
 * <pre>
 * cd djl-moe &amp;&amp; mvn -B -ntp test -Dtest=RoutedExpertsBenchmark
 * </pre>
 *
 * System properties (defaults): {@code bench.tokens} 4096, {@code bench.topk} 6, {@code
 * bench.experts} 64, {@code bench.hidden} 1024, {@code bench.inter} 512, {@code bench.iters} 3.
 */
@Tag("benchmark")
class RoutedExpertsBenchmark {

    private static int prop(String name, int def) {
        return Integer.getInteger(name, def);
    }

    @Test
    void benchmark() {
        int t = prop("bench.tokens", 4096);
        int k = prop("bench.topk", 6);
        int el = prop("bench.experts", 64);
        int h = prop("bench.hidden", 1024);
        int i = prop("bench.inter", 512);
        int iters = prop("bench.iters", 3);
        long n = (long) t * k;
        double flops = 3.0 * 3 * 2 * n * h * i; // 3 GEMMs, forward + 2x backward
        System.out.printf(
                Locale.ROOT,
                "RoutedExperts benchmark: T=%d K=%d El=%d H=%d I=%d, threads=%s, %.1f GFLOP per"
                        + " forward+backward%n",
                t,
                k,
                el,
                h,
                i,
                System.getProperty("ai.djl.pytorch.num_threads"),
                flops / 1e9);
        try (NDManager manager = NDManager.newBaseManager()) {
            Random random = new Random(1);
            long[] idx = new long[(int) n];
            for (int r = 0; r < t; r++) {
                for (int s = 0; s < k; s++) {
                    long e;
                    boolean dup;
                    do {
                        e = random.nextInt(el);
                        dup = false;
                        for (int p = 0; p < s; p++) {
                            dup |= idx[r * k + p] == e;
                        }
                    } while (dup);
                    idx[r * k + s] = e;
                }
            }
            NDArray topkIdx = manager.create(idx, new Shape(t, k));
            NDArray x = leaf(manager.randomNormal(new Shape(t, h)));
            NDArray w = leaf(manager.randomUniform(0f, 1f, new Shape(t, k)));
            NDArray g =
                    leaf(
                            manager.randomNormal(
                                    0f,
                                    (float) (1 / Math.sqrt(h)),
                                    new Shape(el, i, h),
                                    DataType.FLOAT32));
            NDArray u =
                    leaf(
                            manager.randomNormal(
                                    0f,
                                    (float) (1 / Math.sqrt(h)),
                                    new Shape(el, i, h),
                                    DataType.FLOAT32));
            NDArray d =
                    leaf(
                            manager.randomNormal(
                                    0f,
                                    (float) (1 / Math.sqrt(i)),
                                    new Shape(el, h, i),
                                    DataType.FLOAT32));

            {
                double[] fwdBwd = new double[2];
                for (int it = -1; it < iters; it++) {
                    try (NDManager step = manager.newSubManager()) {
                        long t0 = System.nanoTime();
                        NDArray loss;
                        try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                            NDArray y =
                                    RoutedExperts.routedExperts(x, topkIdx, w, g, u, d)
                                            .singletonOrThrow();
                            loss = y.sum();
                            loss.getFloat(); // wait for the forward
                            long t1 = System.nanoTime();
                            gc.backward(loss);
                            g.getGradient().getFloat(0, 0, 0);
                            long t2 = System.nanoTime();
                            if (it >= 0) {
                                fwdBwd[0] += (t1 - t0) / 1e9;
                                fwdBwd[1] += (t2 - t1) / 1e9;
                            }
                        }
                        step.tempAttachAll(new NDList(loss));
                    }
                }
                double fwd = fwdBwd[0] / iters;
                double bwd = fwdBwd[1] / iters;
                System.out.printf(
                        Locale.ROOT,
                        "  routed experts: forward %.3f s, backward %.3f s, total %.3f s,"
                                + " %.1f GFLOP/s%n",
                        fwd,
                        bwd,
                        fwd + bwd,
                        flops / (fwd + bwd) / 1e9);
            }

            // DJL dense products of the same per-expert shapes: [N/El, H] x [H, I] etc., no routing
            int c = (int) (n / el);
            NDArray xe = leaf(manager.randomNormal(new Shape(c, h)));
            NDArray we = leaf(manager.randomNormal(new Shape(i, h)));
            NDArray de = leaf(manager.randomNormal(new Shape(h, i)));
            double dense = 0;
            for (int it = -1; it < iters; it++) {
                try (NDManager step = manager.newSubManager()) {
                    long t0 = System.nanoTime();
                    try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                        for (int e = 0; e < el; e++) {
                            NDArray a = Linear.linear(xe, we).singletonOrThrow(); // [c, I]
                            NDArray b = Linear.linear(xe, we).singletonOrThrow(); // [c, I]
                            NDArray y = Linear.linear(a.mul(b), de).singletonOrThrow(); // [c, H]
                            gc.backward(y.sum());
                            step.tempAttachAll(new NDList(a, b, y));
                        }
                        we.getGradient().getFloat(0, 0);
                    }
                    if (it >= 0) {
                        dense += (System.nanoTime() - t0) / 1e9;
                    }
                }
            }
            dense /= iters;
            System.out.printf(
                    Locale.ROOT,
                    "  dense DJL GEMMs, El x ([%d,%d]x[%d,%d] twice, [%d,%d]x[%d,%d])"
                            + " forward+backward: %.3f s, %.1f GFLOP/s%n",
                    c,
                    h,
                    h,
                    i,
                    c,
                    i,
                    i,
                    h,
                    dense,
                    flops / dense / 1e9);

            // one large GEMM of all N rows: the best DJL rate on this machine
            NDArray big = leaf(manager.randomNormal(new Shape(n, h)));
            double oneGemm = 0;
            for (int it = -1; it < iters; it++) {
                try (NDManager step = manager.newSubManager()) {
                    long t0 = System.nanoTime();
                    try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                        NDArray y = Linear.linear(big, we).singletonOrThrow();
                        gc.backward(y.sum());
                        we.getGradient().getFloat(0, 0);
                        step.tempAttachAll(new NDList(y));
                    }
                    if (it >= 0) {
                        oneGemm += (System.nanoTime() - t0) / 1e9;
                    }
                }
            }
            oneGemm /= iters;
            System.out.printf(
                    Locale.ROOT,
                    "  one dense GEMM [%d,%d]x[%d,%d] forward+backward: %.3f s, %.1f GFLOP/s%n",
                    n,
                    h,
                    h,
                    i,
                    oneGemm,
                    3.0 * 2 * n * h * i / oneGemm / 1e9);
        }
    }

    private static NDArray leaf(NDArray a) {
        a.setRequiresGradient(true);
        return a;
    }
}
