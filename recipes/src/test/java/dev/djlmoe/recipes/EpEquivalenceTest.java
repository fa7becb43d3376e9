/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.testing.TestDevice;
import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Expert parallelism changes where experts live, not the numbers: the pretrain recipe on the {@code
 * HfMoeForCausalLm} of the {@code tiny} preset (MLA attention, 3 MoE layers of 8 experts) with W =
 * 2 and W = 4 ranks (spawned JVMs over cpu-shm, the global batch split over the ranks) against W =
 * 1 holding every expert.
 *
 * <ul>
 *   <li>step 1: the same loss and the same gradient for every parameter, expert gradients gathered
 *       per global expert from the ranks' shards, to float32 tolerance ({@link #GRAD_TOL} of the
 *       tensor's largest magnitude; the differences come only from the order of float sums over
 *       tokens);
 *   <li>{@link #STEPS} steps of the recipe (AdamW, warm-up and cosine decay, global-norm clipping,
 *       aux-loss-free bias updates): loss curves within {@link #CURVE_TOL};
 *   <li>what must agree across ranks does, bitwise: dense parameters and router biases after the
 *       run, averaged dense gradients, the reported loss;
 *   <li>20 repeats of one training step are bit-identical (W = 4, bf16 dispatch and combine), the
 *       last 10 under GC pressure.
 * </ul>
 *
 * <p>On a GPU ({@code -Ddjlmoe.test.device=gpu}, see {@link TestDevice}) the same comparisons run
 * with every rank on the GPU (ranks share GPU 0 on a one-GPU host, the CUDA backend of the EP
 * buffer between them) and the same bounds, at W = 1 and W = 2 only (the repeats too); each run
 * checks that every rank trained on the device it was meant to.
 */
class EpEquivalenceTest {

    /** Steps of the loss-curve comparison. */
    static final int STEPS = 100;

    static final int BATCH = 8;
    static final int SEQ = 32;

    /** Step 1: |loss_W - loss_1| <= LOSS_TOL * loss_1. */
    static final double LOSS_TOL = 2e-6;

    /** Step 1: max |g_W - g_1| <= GRAD_TOL * max |g_1|, per parameter. */
    static final double GRAD_TOL = 1e-5;

    /**
     * Curves: |loss_W(s) - loss_1(s)| <= CURVE_TOL at every step s. Measured: within 1e-6 over the
     * 100 steps (float rounding only). A routing near-tie that flips differently at W ranks would
     * jump by ~1e-3 and stay; the failure message then shows whether the first MoE layer's expert
     * loads split at that step. (Before the fix described in {@code Autograd.scalar}, GC-freed
     * scalars made curves jump by 1e-2 at random steps.)
     */
    static final double CURVE_TOL = 1e-4;

    /** Steps of the long run (W = 1 and W = 2 only), with its own learning-rate schedule. */
    static final int LONG_STEPS = 300;

    /** Window of the long run's moving averages. */
    static final int LONG_WINDOW = 25;

    /**
     * Long run: the moving averages of the loss over {@link #LONG_WINDOW} steps stay within this
     * (absolute; the loss falls from about 6 to about 1.5) at every step, and the last window's
     * averages within a third of it. Exact agreement does not last hundreds of steps: rounding
     * differences of 1e-7 (other summation orders over ranks) are amplified by training, and a
     * routing near-tie that flips moves the curves apart by 1e-3 to 1e-2 for a while. Measured
     * here: first step over 1e-4 at 210, largest single-step difference 0.0059, averages within
     * 5.1e-4 (with a 200-step schedule: first over 1e-4 at 65, largest single step 0.025). What
     * this guards is that no drift or instability accumulates: the curves tell the same story.
     */
    static final double LONG_TOL = 0.01;

    /**
     * Long run: the first steps still agree exactly (within {@link #CURVE_TOL}): rounding
     * differences need many steps to grow (measured: first over 1e-4 at step 210, at 65 with a
     * 200-step schedule), while a rank-dependent bug (local instead of global expert loads for the
     * balancing bias, say) parts the curves within a few steps.
     */
    static final int LONG_EXACT_STEPS = 50;

    private static final Map<Integer, MultiRank.Result> RUNS = new ConcurrentHashMap<>();
    private static final Map<Integer, MultiRank.Result> LONG_RUNS = new ConcurrentHashMap<>();

    /** The EP sizes compared with W = 1: 2 and 4 on the CPU, 2 on a GPU. */
    static IntStream worldSizes() {
        return TestDevice.isGpu() ? IntStream.of(2) : IntStream.of(2, 4);
    }

    /** Every rank of a run wrote the device it trained on: the one this test run is about. */
    private static void assertDevices(MultiRank.Result r) {
        for (int rank = 0; rank < r.worldSize(); rank++) {
            String expected = TestDevice.rankDevice(rank).toString();
            assertEquals(
                    expected,
                    lines(r, "device-rank" + rank + ".txt").get(0).trim(),
                    r.name() + ": the device rank " + rank + " trained on");
        }
    }

    private static MultiRank.Result longRun(int w) {
        return curve(LONG_RUNS, "long-w", LONG_STEPS, Duration.ofMinutes(6), w);
    }

    private static MultiRank.Result curveRun(int w) {
        return curve(RUNS, "curve-w", STEPS, Duration.ofMinutes(4), w);
    }

    /**
     * The training curve of {@code steps} steps at EP size {@code w}, run once per test run and
     * kept in {@code runs}; every rank succeeded, left no segment and trained on its device.
     */
    private static synchronized MultiRank.Result curve(
            Map<Integer, MultiRank.Result> runs, String name, int steps, Duration timeout, int w) {
        return runs.computeIfAbsent(
                w,
                k -> {
                    MultiRank.Result r =
                            MultiRank.builder(EquivalenceRank.class, k)
                                    .args(
                                            "curve",
                                            Integer.toString(steps),
                                            Integer.toString(BATCH),
                                            Integer.toString(SEQ))
                                    .timeout(timeout)
                                    .rankTimeoutMillis(60_000)
                                    .name(name + k)
                                    .env("EQ_TRACE", System.getenv().getOrDefault("EQ_TRACE", ""))
                                    .run();
                    r.assertAllSucceeded();
                    assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
                    assertDevices(r);
                    return r;
                });
    }

    record Grad(boolean expert, long[] shape, float[] values) {}

    private static Map<String, Grad> readGradients(Path file) {
        Map<String, Grad> out = new LinkedHashMap<>();
        try (DataInputStream in =
                new DataInputStream(new BufferedInputStream(Files.newInputStream(file)))) {
            int n = in.readInt();
            for (int i = 0; i < n; i++) {
                String name = in.readUTF();
                boolean expert = in.readBoolean();
                long[] shape = new long[in.readInt()];
                for (int j = 0; j < shape.length; j++) {
                    shape[j] = in.readLong();
                }
                float[] v = new float[in.readInt()];
                for (int j = 0; j < v.length; j++) {
                    v[j] = in.readFloat();
                }
                out.put(name, new Grad(expert, shape, v));
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }

    private static float[] losses(MultiRank.Result r, int rank) {
        try {
            List<String> lines = Files.readAllLines(r.file("losses-rank" + rank + ".txt"));
            float[] out = new float[lines.size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = Float.parseFloat(lines.get(i));
            }
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static List<String> lines(MultiRank.Result r, String file) {
        try {
            return Files.readAllLines(r.file(file));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @ParameterizedTest(name = "W = {0}")
    @MethodSource("worldSizes")
    void oneStepGivesTheLossAndGradientsOfOneRank(int w) throws IOException {
        MultiRank.Result one = curveRun(1);
        MultiRank.Result many = curveRun(w);
        float l1 = Float.parseFloat(Files.readString(one.file("loss1-rank0.txt")));
        float lw = Float.parseFloat(Files.readString(many.file("loss1-rank0.txt")));
        assertTrue(
                Math.abs(lw - l1) <= LOSS_TOL * Math.abs(l1),
                "step-1 loss " + lw + " at W=" + w + " vs " + l1 + " at W=1");

        Map<String, Grad> ref = readGradients(one.file("grads-rank0.bin"));
        List<Map<String, Grad>> ranks = new ArrayList<>();
        for (int r = 0; r < w; r++) {
            ranks.add(readGradients(many.file("grads-rank" + r + ".bin")));
        }
        assertEquals(ref.keySet(), ranks.get(0).keySet(), "parameter names");
        int experts = 0;
        double worst = 0;
        String worstName = "";
        for (Map.Entry<String, Grad> e : ref.entrySet()) {
            String name = e.getKey();
            Grad g1 = e.getValue();
            float[] gathered;
            if (g1.expert()) {
                experts++;
                // The ranks' shards [E/W, ...] in rank order are the global [E, ...] tensor.
                gathered = new float[g1.values().length];
                int at = 0;
                for (int r = 0; r < w; r++) {
                    Grad shard = ranks.get(r).get(name);
                    assertTrue(shard.expert(), name);
                    assertEquals(g1.shape()[0] / w, shard.shape()[0], name + " shard rows");
                    System.arraycopy(shard.values(), 0, gathered, at, shard.values().length);
                    at += shard.values().length;
                }
                assertEquals(gathered.length, at, name + " gathered size");
            } else {
                gathered = ranks.get(0).get(name).values();
                for (int r = 1; r < w; r++) {
                    assertTrue(
                            java.util.Arrays.equals(gathered, ranks.get(r).get(name).values()),
                            name
                                    + ": averaged dense gradient differs between rank 0 and rank "
                                    + r);
                }
            }
            double scale = 0;
            double diff = 0;
            for (int i = 0; i < gathered.length; i++) {
                scale = Math.max(scale, Math.abs(g1.values()[i]));
                diff = Math.max(diff, Math.abs((double) gathered[i] - g1.values()[i]));
            }
            assertTrue(scale > 0, name + " has an all-zero gradient at W=1: the test is vacuous");
            double rel = diff / scale;
            if (rel > worst) {
                worst = rel;
                worstName = name;
            }
            assertTrue(
                    rel <= GRAD_TOL,
                    String.format(
                            Locale.ROOT,
                            "%s: max |g_W - g_1| = %.3g, %.3g of max |g_1| = %.3g (W=%d)",
                            name,
                            diff,
                            rel,
                            scale,
                            w));
        }
        assertTrue(experts >= 3, "only " + experts + " expert parameters compared");
        System.out.printf(
                Locale.ROOT,
                "W=%d step 1: loss %.7f vs %.7f; %d gradients (%d expert) within %.1e, worst %.2e"
                        + " (%s)%n",
                w,
                lw,
                l1,
                ref.size(),
                experts,
                GRAD_TOL,
                worst,
                worstName);
    }

    @ParameterizedTest(name = "W = {0}")
    @MethodSource("worldSizes")
    void lossCurvesMatchOneRank(int w) {
        float[] ref = losses(curveRun(1), 0);
        MultiRank.Result many = curveRun(w);
        float[] got = losses(many, 0);
        assertEquals(STEPS, ref.length);
        assertEquals(STEPS, got.length);
        for (int r = 1; r < w; r++) {
            assertTrue(
                    java.util.Arrays.equals(got, losses(many, r)),
                    "rank " + r + " reports another loss curve than rank 0");
        }
        double worst = 0;
        int at = 0;
        for (int s = 0; s < STEPS; s++) {
            double d = Math.abs(got[s] - ref[s]);
            if (d > worst) {
                worst = d;
                at = s;
            }
        }
        if (worst > CURVE_TOL) {
            int first = 0;
            while (Math.abs(got[first] - ref[first]) <= CURVE_TOL) {
                first++;
            }
            List<String> l1 = lines(curveRun(1), "loads-rank0.txt");
            List<String> lw = lines(many, "loads-rank0.txt");
            throw new AssertionError(
                    String.format(
                            Locale.ROOT,
                            "W=%d: loss differs by %.3g at step %d (%.5f vs %.5f at W=1); first"
                                + " step over %.1e: %d%n  W=1 loss, grad norm, first-layer loads:"
                                + " %s%n  W=%d: %s",
                            w,
                            worst,
                            at + 1,
                            got[at],
                            ref[at],
                            CURVE_TOL,
                            first + 1,
                            l1.get(first),
                            w,
                            lw.get(first)));
        }
        assertTrue(
                ref[STEPS - 1] < ref[0] - 0.5,
                "the model did not learn: " + ref[0] + " -> " + ref[STEPS - 1]);
        System.out.printf(
                Locale.ROOT,
                "W=%d: %d-step loss curve within %.4f of W=1 (worst %.2e at step %d; %.4f ->"
                        + " %.4f)%n",
                w,
                STEPS,
                CURVE_TOL,
                worst,
                at + 1,
                got[0],
                got[STEPS - 1]);
    }

    @Test
    void aFewHundredStepsTellTheSameStory() {
        float[] ref = losses(longRun(1), 0);
        float[] got = losses(longRun(2), 0);
        assertEquals(LONG_STEPS, ref.length);
        assertEquals(LONG_STEPS, got.length);
        double worstAvg = 0;
        int worstAt = 0;
        double sum1 = 0;
        double sum2 = 0;
        double lastGap = 0;
        int firstOver = -1;
        double worstStep = 0;
        for (int s = 0; s < LONG_STEPS; s++) {
            sum1 += ref[s];
            sum2 += got[s];
            if (s >= LONG_WINDOW) {
                sum1 -= ref[s - LONG_WINDOW];
                sum2 -= got[s - LONG_WINDOW];
            }
            double d = Math.abs(got[s] - ref[s]);
            worstStep = Math.max(worstStep, d);
            if (firstOver < 0 && d > CURVE_TOL) {
                firstOver = s + 1;
            }
            if (s >= LONG_WINDOW - 1) {
                double gap = Math.abs(sum2 - sum1) / LONG_WINDOW;
                lastGap = gap;
                if (gap > worstAvg) {
                    worstAvg = gap;
                    worstAt = s + 1;
                }
            }
        }
        String figures =
                String.format(
                        Locale.ROOT,
                        "W=2 vs W=1 over %d steps: %d-step averages within %.2e (worst at step %d),"
                            + " last window %.2e; largest single-step difference %.3g, first over"
                            + " %.0e at step %d; loss %.4f -> %.4f (W=1 %.4f -> %.4f)",
                        LONG_STEPS,
                        LONG_WINDOW,
                        worstAvg,
                        worstAt,
                        lastGap,
                        worstStep,
                        CURVE_TOL,
                        firstOver,
                        got[0],
                        got[LONG_STEPS - 1],
                        ref[0],
                        ref[LONG_STEPS - 1]);
        System.out.println(figures);
        assertTrue(firstOver < 0 || firstOver > LONG_EXACT_STEPS, figures);
        assertTrue(worstAvg <= LONG_TOL, figures);
        assertTrue(lastGap <= LONG_TOL / 3, figures);
        assertTrue(ref[LONG_STEPS - 1] < ref[0] - 1.0, "the model did not learn: " + figures);
    }

    @ParameterizedTest(name = "W = {0}")
    @MethodSource("worldSizes")
    void replicatedStateAgreesAcrossRanks(int w) throws IOException {
        MultiRank.Result many = curveRun(w);
        String first = Files.readString(many.file("replicated-rank0.txt"));
        assertTrue(first.contains("replicated parameters"), first);
        for (int r = 1; r < w; r++) {
            assertEquals(
                    first,
                    Files.readString(many.file("replicated-rank" + r + ".txt")),
                    "rank " + r + " holds other replicated state than rank 0");
        }
    }

    @Test
    void twentyRepeatsOfOneStepAreBitIdenticalEvenUnderGcPressure() {
        int w = TestDevice.isGpu() ? 2 : 4;
        MultiRank.Result r =
                MultiRank.builder(EquivalenceRank.class, w)
                        .args("repeat", "20", Integer.toString(BATCH), Integer.toString(SEQ))
                        .timeout(Duration.ofMinutes(3))
                        .rankTimeoutMillis(60_000)
                        .name("repeat-w" + w)
                        .run();
        r.assertAllSucceeded();
        for (int rank = 0; rank < w; rank++) {
            assertEquals(
                    TestDevice.device().toString(),
                    lines(r, "device-rank" + rank + ".txt").get(0).trim(),
                    "the device rank " + rank + " trained on");
            assertTrue(r.output(rank).contains("repeat: 20 identical"), r.describeRank(rank));
        }
    }
}
