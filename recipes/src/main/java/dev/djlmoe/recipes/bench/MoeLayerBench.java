/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.RoutedExperts;
import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;

/**
 * MoE layer forward+backward on one rank (EP buffer with the loopback transport, staged backward)
 * against DJL's own dense {@code matMul} at the per-expert shape and against a naive layer that
 * runs every expert on every token with masks. Prints figures; asserts nothing.
 *
 * <p>On a GPU the EP buffer takes its CUDA backend (one rank), and every timing ends by waiting for
 * the device's queued work (a one-element copy to the host), so asynchronous kernels are not
 * mistaken for finished ones.
 */
public final class MoeLayerBench {

    /**
     * Benchmark size.
     *
     * @param tokens T
     * @param hidden H
     * @param experts E
     * @param topk K
     * @param width expert intermediate size I
     * @param iters timed iterations (median reported)
     * @param naive also time the naive masked layer
     */
    public record Size(
            int tokens, int hidden, int experts, int topk, int width, int iters, boolean naive) {
        /**
         * The size the foundation issue names: T=4096, H=1024, E=64, K=6, I=512.
         *
         * @return the size
         */
        public static Size standard() {
            return new Size(4096, 1024, 64, 6, 512, 5, true);
        }
    }

    /**
     * What was measured.
     *
     * @param layerSeconds median forward+backward time of the EP layer
     * @param tokensPerSecond T over that time
     * @param expertFlopsPerSecond routed-expert FLOPs (fwd+bwd) over that time
     * @param denseFlopsPerSecond DJL matMul FLOP rate at the per-expert shape
     * @param efficiency expert rate over dense rate
     * @param naiveSeconds median time of the naive masked layer (NaN if not run)
     * @param speedupOverNaive naive time over EP layer time
     */
    public record Result(
            double layerSeconds,
            double tokensPerSecond,
            double expertFlopsPerSecond,
            double denseFlopsPerSecond,
            double efficiency,
            double naiveSeconds,
            double speedupOverNaive) {}

    private MoeLayerBench() {}

    /**
     * Runs the benchmark on the engine's default device.
     *
     * @param size the size
     * @param out where the figures go
     * @return the figures
     */
    public static Result run(Size size, PrintStream out) {
        return run(size, Engine.getInstance().defaultDevice(), out);
    }

    /**
     * Runs the benchmark on a device.
     *
     * @param size the size
     * @param device where the layer, its inputs and the dense product live
     * @param out where the figures go
     * @return the figures
     */
    public static Result run(Size size, Device device, PrintStream out) {
        int t = size.tokens();
        int h = size.hidden();
        int e = size.experts();
        int k = size.topk();
        int i = size.width();
        Engine.getInstance().setRandomSeed(3);
        try (NDManager m = NDManager.newBaseManager(device);
                LocalProcessGroup g = new LocalProcessGroup();
                EpContext ctx = EpContext.builder().setProcessGroup(g).build()) {
            MoeLayer layer =
                    MoeLayer.builder()
                            .setHiddenSize(h)
                            .setExpertIntermediateSize(i)
                            .setRouter(MoeRouter.builder().setNumExperts(e).setTopK(k))
                            .optContext(ctx)
                            .build();
            layer.initialize(m, DataType.FLOAT32, new Shape(t, h));
            ParameterStore ps = new ParameterStore(m, false);
            NDArray x = m.randomNormal(new Shape(t, h));
            NDArray probe = m.zeros(new Shape(1));
            // Warm up, then time forward + staged backward of the EP layer.
            double[] times = new double[size.iters()];
            for (int it = -1; it < size.iters(); it++) {
                try (NDManager sm = m.newSubManager()) {
                    NDArray u = x.duplicate();
                    u.attach(sm);
                    u.setRequiresGradient(true);
                    long t0 = System.nanoTime();
                    long fwd;
                    try (GradientCollector gc = Engine.getInstance().newGradientCollector();
                            Tape tape = ctx.beginTape()) {
                        NDArray y = layer.forward(ps, new NDList(u), true).head();
                        NDArray loss = y.sum();
                        loss.getFloat();
                        fwd = System.nanoTime();
                        tape.backward(loss);
                    }
                    probe.toFloatArray(); // waits for the device
                    if (System.getenv("DJL_MOE_BENCH_VERBOSE") != null) {
                        out.printf(
                                Locale.ROOT,
                                "  iter %d: forward %.1f ms, backward %.1f ms%n",
                                it,
                                (fwd - t0) / 1e6,
                                (System.nanoTime() - fwd) / 1e6);
                    }
                    if (it >= 0) {
                        times[it] = (System.nanoTime() - t0) / 1e9;
                    }
                }
                zeroGradients(layer);
            }
            double layerSec = median(times);
            double pairs = (double) t * k;
            double expertFlops = pairs * 18.0 * h * i; // 3 GEMMs forward (2HI each), 2x in backward
            double dense =
                    denseMatMulRate(m, probe, (int) Math.max(1, Math.round(pairs / e)), h, i);
            double naiveSec = Double.NaN;
            if (size.naive()) {
                naiveSec = naiveLayer(m, probe, layer, x, Math.max(1, size.iters() / 2));
            }
            Result r =
                    new Result(
                            layerSec,
                            t / layerSec,
                            expertFlops / layerSec,
                            dense,
                            expertFlops / layerSec / dense,
                            naiveSec,
                            naiveSec / layerSec);
            out.printf(
                    Locale.ROOT,
                    "MoE layer fwd+bwd, T=%d H=%d E=%d K=%d I=%d, %s:%n",
                    t,
                    h,
                    e,
                    k,
                    i,
                    device.isGpu()
                            ? "on " + device
                            : Runtime.getRuntime().availableProcessors() + " CPU cores");
            out.printf(
                    Locale.ROOT,
                    "  EP layer        %8.1f ms  %9.0f tokens/s  %6.1f GFLOP/s (experts)%n",
                    layerSec * 1e3,
                    r.tokensPerSecond(),
                    r.expertFlopsPerSecond() / 1e9);
            out.printf(
                    Locale.ROOT,
                    "  dense matMul    [%d x %d] x [%d x %d]: %6.1f GFLOP/s%n",
                    Math.round(pairs / e),
                    h,
                    h,
                    i,
                    dense / 1e9);
            out.printf(
                    Locale.ROOT,
                    "  efficiency      %.2f (expert FLOP rate / dense matMul rate)%n",
                    r.efficiency());
            if (size.naive()) {
                out.printf(
                        Locale.ROOT,
                        "  naive layer     %8.1f ms  (every expert on every token, masked)%n",
                        naiveSec * 1e3);
                out.printf(
                        Locale.ROOT,
                        "  speed-up        %.2fx over the naive layer%n",
                        r.speedupOverNaive());
            }
            return r;
        }
    }

    /**
     * Median FLOP rate of x [n, h] @ w^T [h, i] (forward GEMM), timed in groups of products that
     * end with one wait for the device (on a GPU one product takes less than the wait).
     */
    private static double denseMatMulRate(NDManager m, NDArray probe, int n, int h, int i) {
        try (NDManager sm = m.newSubManager()) {
            NDArray a = sm.randomNormal(new Shape(n, h));
            NDArray w = sm.randomNormal(new Shape(i, h));
            NDArray wt = w.transpose();
            int groups = 7;
            int perGroup = 10;
            double[] ts = new double[groups];
            for (int g = -1; g < groups; g++) {
                probe.toFloatArray();
                long t0 = System.nanoTime();
                for (int r = 0; r < perGroup; r++) {
                    a.matMul(wt).close();
                }
                probe.toFloatArray(); // waits for the products
                if (g >= 0) {
                    ts[g] = (System.nanoTime() - t0) / 1e9 / perGroup;
                }
            }
            return 2.0 * n * h * i / median(ts);
        }
    }

    /** Naive layer: every expert on every token, outputs masked by the routing coefficients. */
    private static double naiveLayer(
            NDManager m, NDArray probe, MoeLayer layer, NDArray x, int iters) {
        RoutedExperts ex = layer.getExperts();
        NDArray gp = ex.getParameters().get(RoutedExperts.GATE_PROJ).getArray();
        NDArray up = ex.getParameters().get(RoutedExperts.UP_PROJ).getArray();
        NDArray dp = ex.getParameters().get(RoutedExperts.DOWN_PROJ).getArray();
        NDArray gw = layer.getGate().getWeight().getArray();
        int e = layer.getRouterConfig().getNumExperts();
        double[] ts = new double[iters];
        for (int it = 0; it < iters; it++) {
            try (NDManager sm = m.newSubManager()) {
                NDArray u = x.duplicate();
                u.attach(sm);
                u.setRequiresGradient(true);
                long t0 = System.nanoTime();
                try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                    NDList r = MoeRouter.route(u, gw, null, layer.getRouterConfig());
                    NDArray coef =
                            r.get(0)
                                    .oneHot(e)
                                    .toType(DataType.FLOAT32, false)
                                    .mul(r.get(1).expandDims(2))
                                    .sum(new int[] {1}); // [T, E]
                    NDArray out = null;
                    for (int j = 0; j < e; j++) {
                        NDArray a = u.matMul(gp.get(j).transpose());
                        NDArray b = u.matMul(up.get(j).transpose());
                        NDArray y =
                                a.mul(Activation.sigmoid(a)).mul(b).matMul(dp.get(j).transpose());
                        NDArray term = y.mul(coef.get(new NDIndex(":, {}:{}", j, j + 1)));
                        out = out == null ? term : out.add(term);
                    }
                    gc.backward(out.sum());
                }
                probe.toFloatArray(); // waits for the device
                ts[it] = (System.nanoTime() - t0) / 1e9;
            }
            zeroGradients(layer);
        }
        return median(ts);
    }

    private static void zeroGradients(MoeLayer layer) {
        for (var p : layer.getParameters()) {
            if (p.getValue().requiresGradient()) {
                NDArray g = p.getValue().getArray().getGradient();
                g.subi(g);
            }
        }
    }

    private static double median(double[] a) {
        double[] c = a.clone();
        Arrays.sort(c);
        return c[c.length / 2];
    }
}
