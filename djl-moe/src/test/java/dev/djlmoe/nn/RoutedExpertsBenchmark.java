package dev.djlmoe.nn;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.core.Linear;
import ai.djl.training.GradientCollector;
import java.util.Locale;
import java.util.Random;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

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
 *
 * <p>Three measurements alternate within every iteration, so that other load on shared cores slows
 * them alike:
 *
 * <ol>
 *   <li>routed experts: {@link RoutedExperts#routedExperts} on T rows with K distinct random
 *       experts each, loss = sum(y), backward to x, weights and the three stacked parameters;
 *   <li>dense per-expert GEMMs: El times the same three products at the average per-expert shape
 *       [T*K/El, H], with the same forward + backward FLOPs and no routing;
 *   <li>one dense GEMM [T*K, H] x [H, I], forward + backward: the best rate DJL reaches here.
 * </ol>
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
        int c = (int) (n / el);
        double flops = 3.0 * 3 * 2 * n * h * i; // 3 GEMMs; backward = 2 GEMMs per forward GEMM
        double oneGemmFlops = 3.0 * 2 * n * h * i;
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
            NDArray g = leaf(normal(manager, 1 / Math.sqrt(h), new Shape(el, i, h)));
            NDArray u = leaf(normal(manager, 1 / Math.sqrt(h), new Shape(el, i, h)));
            NDArray d = leaf(normal(manager, 1 / Math.sqrt(i), new Shape(el, h, i)));
            NDArray xe = leaf(manager.randomNormal(new Shape(c, h)));
            NDArray we = leaf(normal(manager, 1 / Math.sqrt(h), new Shape(i, h)));
            NDArray de = leaf(normal(manager, 1 / Math.sqrt(i), new Shape(h, i)));
            NDArray big = leaf(manager.randomNormal(new Shape(n, h)));

            double routedFwd = 0;
            double routedBwd = 0;
            double dense = 0;
            double oneGemm = 0;
            for (int it = -1; it < iters; it++) {
                double[] routed = routed(manager, x, topkIdx, w, g, u, d);
                double denseTime = densePerExpert(manager, el, xe, we, de);
                double oneTime = oneGemm(manager, big, we);
                if (it >= 0) {
                    routedFwd += routed[0] / iters;
                    routedBwd += routed[1] / iters;
                    dense += denseTime / iters;
                    oneGemm += oneTime / iters;
                }
            }
            double routedTotal = routedFwd + routedBwd;
            System.out.printf(
                    Locale.ROOT,
                    "  routed experts: forward %.3f s, backward %.3f s, total %.3f s, %.1f"
                            + " GFLOP/s%n",
                    routedFwd,
                    routedBwd,
                    routedTotal,
                    flops / routedTotal / 1e9);
            System.out.printf(
                    Locale.ROOT,
                    "  dense DJL GEMMs, El x ([%d,%d]x[%d,%d] twice, [%d,%d]x[%d,%d]),"
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
            System.out.printf(
                    Locale.ROOT,
                    "  one dense GEMM [%d,%d]x[%d,%d], forward+backward: %.3f s, %.1f GFLOP/s%n",
                    n,
                    h,
                    h,
                    i,
                    oneGemm,
                    oneGemmFlops / oneGemm / 1e9);
            System.out.printf(
                    Locale.ROOT,
                    "  routed rate / per-expert dense rate = %.2f; routed rate / one-GEMM rate ="
                            + " %.2f%n",
                    dense / routedTotal,
                    (flops / routedTotal) / (oneGemmFlops / oneGemm));
        }
    }

    private static double[] routed(
            NDManager manager,
            NDArray x,
            NDArray topkIdx,
            NDArray w,
            NDArray g,
            NDArray u,
            NDArray d) {
        try (NDManager step = manager.newSubManager()) {
            long t0 = System.nanoTime();
            long t1;
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                NDArray y = RoutedExperts.routedExperts(x, topkIdx, w, g, u, d).singletonOrThrow();
                NDArray loss = y.sum();
                loss.getFloat(); // wait for the forward
                t1 = System.nanoTime();
                gc.backward(loss);
                g.getGradient().getFloat(0, 0, 0);
                step.tempAttachAll(new NDList(y, loss));
            }
            long t2 = System.nanoTime();
            return new double[] {(t1 - t0) / 1e9, (t2 - t1) / 1e9};
        }
    }

    private static double densePerExpert(
            NDManager manager, int el, NDArray xe, NDArray we, NDArray de) {
        try (NDManager step = manager.newSubManager()) {
            long t0 = System.nanoTime();
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                for (int e = 0; e < el; e++) {
                    NDArray a = Linear.linear(xe, we).singletonOrThrow(); // [c, I]
                    NDArray b = Linear.linear(xe, we).singletonOrThrow(); // [c, I]
                    NDArray ab = a.mul(b); // [c, I]
                    NDArray y = Linear.linear(ab, de).singletonOrThrow(); // [c, H]
                    NDArray loss = y.sum();
                    gc.backward(loss);
                    step.tempAttachAll(new NDList(a, b, ab, y, loss));
                }
                we.getGradient().getFloat(0, 0);
            }
            return (System.nanoTime() - t0) / 1e9;
        }
    }

    private static double oneGemm(NDManager manager, NDArray big, NDArray we) {
        try (NDManager step = manager.newSubManager()) {
            long t0 = System.nanoTime();
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                NDArray y = Linear.linear(big, we).singletonOrThrow();
                NDArray loss = y.sum();
                gc.backward(loss);
                we.getGradient().getFloat(0, 0);
                step.tempAttachAll(new NDList(y, loss));
            }
            return (System.nanoTime() - t0) / 1e9;
        }
    }

    private static NDArray normal(NDManager manager, double std, Shape shape) {
        return manager.randomNormal(0f, (float) std, shape, DataType.FLOAT32);
    }

    private static NDArray leaf(NDArray a) {
        a.setRequiresGradient(true);
        return a;
    }
}
