/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.OutputStream;
import java.io.PrintStream;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/**
 * Expert-parallel communication and training-step benchmark, one process per rank (start it with
 * {@code djl-moe launch --nproc-per-node W bench ep}). Prints figures; asserts nothing.
 *
 * <p><b>Dispatch and combine</b> at DeepEP's token shape (default 4096 tokens per rank, H = 7168,
 * top-8 of 256 experts, uniform random routing) for every wire format. For each operation:
 *
 * <ul>
 *   <li>time: per iteration, each rank's time from a barrier to the end of the call, and of that
 *       the slowest rank (a collective ends with its slowest rank); then the median over the
 *       iterations. The rows the bound applies to ({@code dispatch}: cached dispatch, {@code
 *       combine}) write into output arrays reused from call to call ({@link
 *       EpBuffer#dispatch(NDArray, EpHandle, WireFormat, NDArray)}, {@link
 *       EpBuffer#combine(NDArray, EpHandle, WireFormat, NDArray)}), as the memcpy that sets the
 *       bound writes into a destination touched before timing; {@code disp-new} and {@code
 *       comb-new} are the same calls into new arrays, whose first-touch page faults (the kernel
 *       zero-fills every 4 KiB page) are not copies and are not in the bound; {@code +notify} is a
 *       fresh dispatch (layout, count exchange and new outputs included);
 *   <li>payload GB/s: the wire bytes of the rows a rank receives in dispatch (and sends back in
 *       combine), {@code R * row_bytes(wire)}, averaged over ranks, over that time (DeepEP's
 *       per-rank logical bandwidth);
 *   <li>copy bound: the cpu-shm transport moves each row twice through memory: the sender encodes
 *       it from the fp32 tensor into a shared ring (reads {@code 4H} bytes, writes {@code b} wire
 *       bytes), the receiver decodes it into its fp32 tensor (reads {@code b}, writes {@code 4H};
 *       combine's additions also read the accumulator). Counting a memcpy of n bytes as n, a rank
 *       that sends S rows and receives R rows must copy {@code (S + R)(4H + b) / 2} bytes in
 *       dispatch. The bandwidth is measured in the same iterations: each one starts with a 256 MiB
 *       memcpy on every rank at once, timed as the operations are (barrier to the end of the
 *       slowest rank's copy), so a machine whose memory bandwidth drifts (shared hosts) moves the
 *       bound with the operations, and the copy also evicts the caches the previous call warmed.
 *       The bound of an iteration is the largest rank's bytes over that iteration's bandwidth; the
 *       column shows its median;
 *   <li>ratio: per iteration, bound time over measured time (1.0 = as fast as memcpy moving the
 *       same bytes); the median over the iterations.
 * </ul>
 *
 * <p><b>Training step</b>: the tiny model's EP training step ({@link Pretrain}) with the global
 * batch split over the ranks: tokens per second over all ranks and the share of step time spent in
 * EP dispatch and combine (forward and backward), after warm-up steps.
 *
 * <p>Everything here runs on the CPU (the cpu-shm transport), whatever the engine's default device:
 * the bound is a host memcpy. The CUDA kernels have their own benchmark ({@code
 * native-ep/bench/run_gpu.sh bench:2}) and the GPU training step {@code bench step}.
 */
public final class EpBench {

    /**
     * Benchmark settings.
     *
     * @param tokens tokens per rank
     * @param hidden H
     * @param topk K
     * @param experts E
     * @param iters timed iterations per operation
     * @param wires wire formats to measure
     * @param trainSteps training steps (0 = skip the training benchmark)
     * @param trainBatch global batch of the training benchmark (sequences)
     * @param trainSeqLen sequence length of the training benchmark
     */
    public record Options(
            int tokens,
            int hidden,
            int topk,
            int experts,
            int iters,
            List<WireFormat> wires,
            int trainSteps,
            int trainBatch,
            int trainSeqLen) {

        /**
         * DeepEP's normal-mode benchmark shape on this machine's ranks.
         *
         * @return the defaults
         */
        public static Options defaults() {
            return new Options(4096, 7168, 8, 256, 5, List.of(WireFormat.values()), 30, 16, 64);
        }
    }

    private static final long MEMCPY_BYTES = 256L << 20;

    private EpBench() {}

    /**
     * Runs the benchmark on this rank; rank 0 prints.
     *
     * @param o the settings
     * @param out where rank 0's figures go
     */
    public static void run(Options o, PrintStream out) {
        RankEnvironment env = RankEnvironment.fromSystem();
        PrintStream log = env.rank() == 0 ? out : new PrintStream(OutputStream.nullOutputStream());
        if (o.experts() % env.worldSize() != 0) {
            throw new IllegalArgumentException(
                    "--experts "
                            + o.experts()
                            + " is not divisible by the world size "
                            + env.worldSize());
        }
        log.printf(
                Locale.ROOT,
                "EP benchmark: W=%d ranks on one host (cpu-shm%s), %d CPU cores%n",
                env.worldSize(),
                env.worldSize() == 1 ? ": loopback for W=1" : "",
                Runtime.getRuntime().availableProcessors());
        try (ProcessGroup group = ProcessGroups.create(env);
                EpBuffer buffer = EpBuffer.create(group);
                NDManager m = NDManager.newBaseManager(Device.cpu());
                CopyProbe probe = new CopyProbe()) {
            communication(o, group, buffer, m, probe, log);
        }
        if (o.trainSteps() > 0) {
            training(o, env, log);
        }
    }

    /**
     * The memcpy that sets the bound: {@code MEMCPY_BYTES} from one native buffer to another, both
     * touched (and copied once) before the first timed copy.
     */
    private static final class CopyProbe implements AutoCloseable {
        private final BytePointer src = new BytePointer(MEMCPY_BYTES);
        private final BytePointer dst = new BytePointer(MEMCPY_BYTES);

        CopyProbe() {
            Pointer.memset(src, 1, MEMCPY_BYTES);
            Pointer.memset(dst, 2, MEMCPY_BYTES);
            seconds();
        }

        /** Copies once; returns the seconds it took. */
        double seconds() {
            long t0 = System.nanoTime();
            Pointer.memcpy(dst, src, MEMCPY_BYTES);
            return (System.nanoTime() - t0) / 1e9;
        }

        @Override
        public void close() {
            src.close();
            dst.close();
        }
    }

    private static void communication(
            Options o,
            ProcessGroup group,
            EpBuffer buffer,
            NDManager m,
            CopyProbe probe,
            PrintStream log) {
        int w = group.worldSize();
        int t = o.tokens();
        int h = o.hidden();
        int k = o.topk();
        int e = o.experts();
        Engine.getInstance().setRandomSeed(1 + group.rank());
        NDArray x = m.randomNormal(new Shape(t, h));
        Random r = new Random(17 + group.rank());
        long[] idx = new long[t * k];
        float[] wts = new float[t * k];
        for (int i = 0; i < t; i++) {
            boolean[] used = new boolean[e];
            for (int j = 0; j < k; j++) {
                int c;
                do {
                    c = r.nextInt(e);
                } while (used[c]);
                used[c] = true;
                idx[i * k + j] = c;
                wts[i * k + j] = r.nextFloat();
            }
        }
        NDArray topk = m.create(idx, new Shape(t, k));
        NDArray weights = m.create(wts, new Shape(t, k));
        try (EpHandle handle = buffer.notify(topk, e, 1)) {
            long sent = handle.numSent();
            long recv = handle.numRecv();
            long reached = 0; // tokens sent to at least one rank
            for (boolean[] row : handle.isTokenInRank()) {
                for (boolean b : row) {
                    if (b) {
                        reached++;
                        break;
                    }
                }
            }
            double[] sentAll = gather(group, sent);
            double[] recvAll = gather(group, recv);
            log.printf(
                    Locale.ROOT,
                    "shape: %d tokens/rank, H=%d, top-%d of %d experts (%d per rank), uniform"
                            + " routing; rows per rank: sent %.0f, received %.0f (mean), %d timed"
                            + " iterations%n",
                    t,
                    h,
                    k,
                    e,
                    e / w,
                    mean(sentAll),
                    mean(recvAll),
                    o.iters());
            log.printf(
                    Locale.ROOT,
                    "%-6s %-8s %9s %9s %8s %9s %7s%n",
                    "wire",
                    "op",
                    "time ms",
                    "payload",
                    "GB/s",
                    "bound ms",
                    "ratio");
            for (WireFormat wire : o.wires()) {
                long rb = NativeEp.nep_wire_row_bytes(wire.code(), h);
                double fp = 4.0 * h;
                // Bytes (memcpy-equivalent) each rank must copy.
                double dispatchCopy = (sent + recv) * (fp + rb) / 2;
                double combineCopy = (sent + recv) * (fp + rb) / 2 + (sent - reached) * fp / 2;
                double[] copy = new double[o.iters()];
                double[] fresh = new double[o.iters()];
                double[] cached = new double[o.iters()];
                double[] comb = new double[o.iters()];
                double[] cachedNew = new double[o.iters()];
                double[] combNew = new double[o.iters()];
                // Reused outputs, touched once before timing, as memcpy's destination is.
                NDArray recvOut = m.zeros(new Shape(recv, h));
                NDArray combOut = m.zeros(new Shape(t, h));
                try {
                    for (int it = -1; it < o.iters(); it++) {
                        try (NDManager sm = m.newSubManager()) {
                            group.barrier();
                            double copied = probe.seconds();
                            group.barrier();
                            long t0 = System.nanoTime();
                            buffer.dispatch(x, handle, wire, recvOut);
                            long t1 = System.nanoTime();
                            group.barrier();
                            long t2 = System.nanoTime();
                            buffer.combine(recvOut, handle, wire, combOut);
                            long t3 = System.nanoTime();
                            group.barrier();
                            long t4 = System.nanoTime();
                            DispatchResult d = buffer.dispatch(x, topk, weights, e, 1, wire);
                            long t5 = System.nanoTime();
                            d.handle().close();
                            d.recvX().close();
                            group.barrier();
                            long t6 = System.nanoTime();
                            NDArray y = buffer.dispatch(x, handle, wire);
                            long t7 = System.nanoTime();
                            group.barrier();
                            long t8 = System.nanoTime();
                            CombineResult c = buffer.combine(y, null, handle, wire);
                            long t9 = System.nanoTime();
                            c.out().close();
                            y.close();
                            if (it >= 0) {
                                copy[it] = copied;
                                cached[it] = (t1 - t0) / 1e9;
                                comb[it] = (t3 - t2) / 1e9;
                                fresh[it] = (t5 - t4) / 1e9;
                                cachedNew[it] = (t7 - t6) / 1e9;
                                combNew[it] = (t9 - t8) / 1e9;
                            }
                        }
                    }
                } finally {
                    recvOut.close();
                    combOut.close();
                }
                // The same per-rank work without a peer: encode S rows into a ring-slot-sized
                // buffer and decode them out, into a warm (reused) and a fresh output tensor.
                long rows = Math.max(sent, recv);
                double[] warmOut = new double[o.iters()];
                double[] freshOut = new double[o.iters()];
                try (NDManager sm = m.newSubManager()) {
                    NDArray warm = sm.zeros(new Shape(rows, h));
                    codecPass(x, rows, wire, warm); // touches every page
                    for (int it = 0; it < o.iters(); it++) {
                        group.barrier();
                        warmOut[it] = codecPass(x, rows, wire, warm);
                        group.barrier();
                        long t0 = System.nanoTime();
                        try (NDArray cold = sm.create(new Shape(rows, h), DataType.FLOAT32)) {
                            codecPass(x, rows, wire, cold);
                        }
                        freshOut[it] = (System.nanoTime() - t0) / 1e9;
                    }
                }
                double tWarm = max(gather(group, median(warmOut)));
                double tFreshOut = max(gather(group, median(freshOut)));
                double payload = mean(recvAll) * rb;
                // Per iteration: the slowest rank's copy and the bound it sets for the largest
                // rank's bytes.
                double[] copyMax = slowest(group, copy);
                double[] dBound = new double[o.iters()];
                double[] cBound = new double[o.iters()];
                double dBytes = max(gather(group, dispatchCopy));
                double cBytes = max(gather(group, combineCopy));
                for (int it = 0; it < o.iters(); it++) {
                    dBound[it] = dBytes * copyMax[it] / MEMCPY_BYTES;
                    cBound[it] = cBytes * copyMax[it] / MEMCPY_BYTES;
                }
                row(log, wire, "dispatch", slowest(group, cached), payload, dBound);
                row(log, wire, "combine", slowest(group, comb), payload, cBound);
                row(log, wire, "+notify", slowest(group, fresh), payload, dBound);
                row(log, wire, "disp-new", slowest(group, cachedNew), payload, dBound);
                row(log, wire, "comb-new", slowest(group, combNew), payload, cBound);
                log.printf(
                        Locale.ROOT,
                        "%-6s %-8s %9.2f GB/s per rank, all ranks copying 256 MiB at once (median"
                                + " of the iterations; min %.2f, max %.2f)%n",
                        wire.name().toLowerCase(Locale.ROOT),
                        "memcpy",
                        MEMCPY_BYTES / median(copyMax) / 1e9,
                        MEMCPY_BYTES / max(copyMax) / 1e9,
                        MEMCPY_BYTES / min(copyMax) / 1e9);
                log.printf(
                        Locale.ROOT,
                        "%-6s %-8s %9.1f ms with a reused output, %.1f ms with a fresh one: the"
                                + " codec and copies of a dispatch without a peer%n",
                        wire.name().toLowerCase(Locale.ROOT),
                        "no-peer",
                        tWarm * 1e3,
                        tFreshOut * 1e3);
            }
            log.println(
                    "  dispatch: cached (data only), combine: both into reused outputs (the bound"
                        + " applies to them); +notify: fresh dispatch, layout and count exchange"
                        + " and new outputs included; disp-new, comb-new: dispatch and combine into"
                        + " new outputs (first-touch page faults included); payload = MB received"
                        + " per rank (dispatch) or sent back (combine)");
        } finally {
            x.close();
            topk.close();
            weights.close();
        }
    }

    /**
     * Encodes {@code rows} rows (cycling over x), a ring slot's worth at a time, into a scratch
     * buffer and decodes them into {@code out}, as the two ends of the transport do; returns
     * seconds.
     */
    private static double codecPass(NDArray x, long rows, WireFormat wire, NDArray out) {
        long t = x.getShape().get(0);
        long h = x.getShape().get(1);
        long rb = NativeEp.nep_wire_row_bytes(wire.code(), h);
        long chunk = Math.max(1, Math.min(t, (256 * 1024) / rb));
        long xa = NativeMemory.address(x, "x", DataType.FLOAT32);
        long oa = NativeMemory.address(out, "out", DataType.FLOAT32);
        try (BytePointer scratch = new BytePointer(chunk * rb);
                NativeCall call = new NativeCall()) {
            long t0 = System.nanoTime();
            for (long done = 0; done < rows; ) {
                long src = done % t;
                long n = Math.min(chunk, Math.min(rows - done, t - src));
                call.check(
                        NativeEp.nep_encode_rows(
                                wire.code(),
                                xa + src * h * 4,
                                n,
                                h,
                                scratch.address(),
                                call.err(),
                                call.cap()),
                        "encode");
                call.check(
                        NativeEp.nep_decode_rows(
                                wire.code(),
                                scratch.address(),
                                n,
                                h,
                                oa + done * h * 4,
                                call.err(),
                                call.cap()),
                        "decode");
                done += n;
            }
            return (System.nanoTime() - t0) / 1e9;
        }
    }

    /**
     * Prints one operation's row from its per-iteration slowest-rank times and bounds (seconds):
     * median time, payload GB/s at that time, median bound, median of the per-iteration ratios.
     */
    private static void row(
            PrintStream log,
            WireFormat wire,
            String op,
            double[] s,
            double payload,
            double[] bound) {
        double[] ratio = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            ratio[i] = bound[i] / s[i];
        }
        double t = median(s);
        log.printf(
                Locale.ROOT,
                "%-6s %-8s %9.1f %7.0fMB %8.2f %9.1f %7.2f%n",
                wire.name().toLowerCase(Locale.ROOT),
                op,
                t * 1e3,
                payload / 1e6,
                payload / t / 1e9,
                median(bound) * 1e3,
                median(ratio));
    }

    private static void training(Options o, RankEnvironment env, PrintStream log) {
        PretrainOptions d = PretrainOptions.defaults();
        PretrainOptions opts =
                new PretrainOptions(
                                o.trainSteps(),
                                o.trainBatch(),
                                o.trainSeqLen(),
                                d.learningRate(),
                                d.warmupSteps(),
                                d.maxGradNorm(),
                                d.biasUpdateRate(),
                                d.precision(),
                                d.seed(),
                                true,
                                Math.max(1, o.trainSteps()),
                                null)
                        .withDevice("cpu");
        int skip = Math.min(5, o.trainSteps() / 3);
        long[] sums = new long[3]; // tokens, step ns, EP ns after warm-up
        Pretrain.StepObserver observer =
                new Pretrain.StepObserver() {
                    @Override
                    public void stepDone(int step, EpTrainer trainer, StepResult r) {
                        if (step >= skip) {
                            sums[0] += r.tokens() * env.worldSize();
                            sums[1] += r.stepNanos();
                            sums[2] += r.epNanos();
                        }
                    }
                };
        Pretrain.run(
                HfMoeConfig.preset("tiny"),
                new SyntheticBigramSource(256, 4, d.seed()),
                opts,
                new PrintStream(OutputStream.nullOutputStream()),
                StopSignal.none(),
                observer);
        double tps = sums[0] / (sums[1] / 1e9);
        log.printf(
                Locale.ROOT,
                "training step (tiny model, global batch %d x %d tokens, W=%d): %.0f tokens/s,"
                        + " EP dispatch+combine %.1f%% of step time (steps %d-%d of %d)%n",
                o.trainBatch(),
                o.trainSeqLen(),
                env.worldSize(),
                tps,
                100.0 * sums[2] / sums[1],
                skip + 1,
                o.trainSteps(),
                o.trainSteps());
    }

    /** Every rank's array ({@code a} has the same length on every rank), indexed by rank. */
    private static double[][] gather(ProcessGroup group, double[] a) {
        int w = group.worldSize();
        try (NDManager m = NDManager.newBaseManager(Device.cpu())) {
            double[] all = new double[w * a.length]; // this rank's slice set, the others zero
            System.arraycopy(a, 0, all, group.rank() * a.length, a.length);
            NDArray arr = m.create(all);
            group.allReduceSum(arr);
            double[] sum = arr.toDoubleArray();
            double[][] out = new double[w][];
            for (int r = 0; r < w; r++) {
                out[r] = Arrays.copyOfRange(sum, r * a.length, (r + 1) * a.length);
            }
            return out;
        }
    }

    /** Every rank's value, in rank order. */
    private static double[] gather(ProcessGroup group, double v) {
        double[][] all = gather(group, new double[] {v});
        double[] out = new double[all.length];
        for (int r = 0; r < all.length; r++) {
            out[r] = all[r][0];
        }
        return out;
    }

    /** Per iteration, the largest value over the ranks ({@code a} indexed by iteration). */
    private static double[] slowest(ProcessGroup group, double[] a) {
        double[] out = new double[a.length];
        Arrays.fill(out, Double.NEGATIVE_INFINITY);
        for (double[] rank : gather(group, a)) {
            for (int i = 0; i < a.length; i++) {
                out[i] = Math.max(out[i], rank[i]);
            }
        }
        return out;
    }

    private static double median(double[] a) {
        double[] c = a.clone();
        Arrays.sort(c);
        return c[c.length / 2];
    }

    private static double mean(double[] a) {
        return Arrays.stream(a).average().orElse(0);
    }

    private static double min(double[] a) {
        return Arrays.stream(a).min().orElse(0);
    }

    private static double max(double[] a) {
        return Arrays.stream(a).max().orElse(0);
    }
}
