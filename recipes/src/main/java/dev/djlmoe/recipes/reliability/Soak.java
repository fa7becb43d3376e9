/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.ep.CombineResult;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.Pointer;

/**
 * A bounded soak of one rank: thousands of dispatch/combine steps with random layouts (tokens,
 * hidden size, experts, top-k, -1 slots, alignment, weights, cached dispatch) and random wire
 * formats, checked against the identity-expert oracle, run twice with the same seeds; then a short
 * training run of the {@code tiny} {@link HfMoeForCausalLm} (bf16 dispatch), also twice. Meanwhile
 * it samples the process's resident memory, native allocations (JavaCPP {@link
 * Pointer#physicalBytes()}, {@link Pointer#totalBytes()}, {@link Pointer#totalCount()}), open file
 * descriptors, mapped shared-memory segments and names in {@code /dev/shm}. It passes when every
 * step matched the oracle, both repeats hash to the same value, and every sampled quantity is flat
 * after warm-up.
 *
 * <p>Collective: every rank of the group runs it with the same settings. The layout of a step
 * (hidden size, wire, experts, top-k, alignment) comes from a seed shared by the ranks; each rank's
 * tokens and routing from its own seed.
 */
public final class Soak {

    /**
     * Settings.
     *
     * @param steps dispatch/combine steps per repeat
     * @param repeats how often the whole sequence runs (hashes must agree)
     * @param trainSteps steps of each training run (0 = none)
     * @param sampleEvery steps between memory samples
     * @param maxTokens the most tokens of one rank in one step
     * @param seed the seed of everything
     * @param rssToleranceMb the largest RSS growth after warm-up counted as flat
     * @param killRank with {@code killAtStep}: the rank that kills itself (fault injection)
     * @param killAtStep the step of the first repeat at which every rank runs a 32 MiB all-reduce
     *     and {@code killRank} is killed with SIGKILL a few milliseconds into it (-1 = never)
     */
    public record Options(
            int steps,
            int repeats,
            int trainSteps,
            int sampleEvery,
            int maxTokens,
            long seed,
            double rssToleranceMb,
            int killRank,
            int killAtStep) {

        /** Checks the settings. */
        public void validate() {
            if (steps < 1 || repeats < 1 || trainSteps < 0 || sampleEvery < 1 || maxTokens < 0) {
                throw new IllegalArgumentException(
                        "soak: --steps "
                                + steps
                                + ", --repeats "
                                + repeats
                                + " and --sample-every "
                                + sampleEvery
                                + " must be >= 1,"
                                + " --train-steps "
                                + trainSteps
                                + " and --max-tokens "
                                + maxTokens
                                + " >= 0");
            }
        }
    }

    /**
     * One memory sample.
     *
     * @param phase where it was taken
     * @param step the global step index
     * @param rssKb resident set (VmRSS)
     * @param physicalBytes JavaCPP's view of the resident memory
     * @param pointerBytes bytes held by live JavaCPP pointers
     * @param pointerCount live JavaCPP pointers
     * @param heapUsed Java heap in use after a GC
     * @param fds open file descriptors
     * @param segmentsMapped distinct {@code /dev/shm/nep-*} mappings of this process
     * @param segmentsLinked {@code nep-*} names in {@code /dev/shm}
     */
    public record Sample(
            String phase,
            long step,
            long rssKb,
            long physicalBytes,
            long pointerBytes,
            long pointerCount,
            long heapUsed,
            int fds,
            int segmentsMapped,
            int segmentsLinked) {}

    private final ProcessGroup group;
    private final Options opts;
    private final PrintStream out;
    private final List<Sample> samples = new ArrayList<>();
    private java.util.Set<String> fdsAtWarmup;
    private long globalStep;
    private long oracleFailures;
    private String firstOracleFailure;

    /**
     * Creates a soak over a process group.
     *
     * @param group the ranks (owned by the caller)
     * @param opts the settings
     * @param out where the report goes
     */
    public Soak(ProcessGroup group, Options opts, PrintStream out) {
        opts.validate();
        this.group = group;
        this.opts = opts;
        this.out = out;
    }

    /**
     * Runs the soak.
     *
     * @return true when it passed
     */
    public boolean run() {
        long t0 = System.nanoTime();
        int w = group.worldSize();
        List<Long> dispatchHashes = new ArrayList<>();
        long stepsDone = 0;
        try (EpBuffer buffer = EpBuffer.create(group);
                NDManager root = NDManager.newBaseManager()) {
            sample("start");
            for (int rep = 0; rep < opts.repeats(); rep++) {
                long hash = 0xcbf29ce484222325L;
                Random shared = new Random(opts.seed());
                Random mine = new Random(opts.seed() * 1_000_003L + group.rank());
                long begin = System.nanoTime();
                for (int step = 0; step < opts.steps(); step++) {
                    if (rep == 0 && step == opts.killAtStep()) {
                        killDuringAllReduce(root);
                    }
                    hash = step(buffer, root, shared, mine, hash, w);
                    stepsDone++;
                    globalStep++;
                    if (globalStep % opts.sampleEvery() == 0) {
                        sample("dispatch/combine");
                        if (fdsAtWarmup == null && globalStep >= warmupSteps()) {
                            fdsAtWarmup = fdTargets();
                        }
                    }
                }
                dispatchHashes.add(hash);
                out.printf(
                        Locale.ROOT,
                        "soak: rank %d repeat %d: %d dispatch/combine steps in"
                                + " %.1f s, output hash %016x%n",
                        group.rank(),
                        rep,
                        opts.steps(),
                        (System.nanoTime() - begin) / 1e9,
                        hash);
            }
        }
        List<Long> trainHashes = new ArrayList<>();
        for (int rep = 0; rep < (opts.trainSteps() > 0 ? opts.repeats() : 0); rep++) {
            trainHashes.add(train(rep));
        }
        sample("end");
        return report(dispatchHashes, trainHashes, stepsDone, (System.nanoTime() - t0) / 1e9);
    }

    /** Dispatch/combine steps counted as warm-up: the first 20% of all of them. */
    private long warmupSteps() {
        return (long) opts.steps() * opts.repeats() / 5;
    }

    // ---- one dispatch/combine step -------------------------------------------------------------

    private static final int[] HIDDEN = {1, 7, 32, 100, 128, 129, 256, 300, 1024};
    private static final int[] ALIGN = {1, 1, 4, 32};

    private long step(
            EpBuffer buffer, NDManager root, Random shared, Random mine, long hash, int w) {
        WireFormat wire = WireFormat.values()[shared.nextInt(4)];
        int hidden = HIDDEN[shared.nextInt(HIDDEN.length)];
        int experts = w * (1 << shared.nextInt(4));
        int topk = 1 + shared.nextInt(Math.min(8, experts));
        int align = ALIGN[shared.nextInt(ALIGN.length)];
        boolean weights = shared.nextBoolean();
        boolean cached = shared.nextInt(4) == 0;
        double minusOne = shared.nextDouble() * 0.3;
        int tokens = mine.nextInt(opts.maxTokens() + 1);
        long[] idx = new long[tokens * topk];
        float[] wts = new float[tokens * topk];
        int[] ranksOf = new int[tokens];
        int local = experts / w;
        int[] perm = new int[experts];
        for (int t = 0; t < tokens; t++) {
            for (int e = 0; e < experts; e++) {
                perm[e] = e;
            }
            boolean[] seen = new boolean[w];
            for (int k = 0; k < topk; k++) {
                int j = k + mine.nextInt(experts - k);
                int tmp = perm[k];
                perm[k] = perm[j];
                perm[j] = tmp;
                long e = mine.nextDouble() < minusOne ? -1 : perm[k];
                idx[t * topk + k] = e;
                wts[t * topk + k] = mine.nextFloat();
                if (e >= 0 && !seen[(int) (e / local)]) {
                    seen[(int) (e / local)] = true;
                    ranksOf[t]++;
                }
            }
        }
        float[] x = new float[tokens * hidden];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) mine.nextGaussian() * (1 << mine.nextInt(4));
        }
        try (NDManager m = root.newSubManager()) {
            NDArray xa = m.create(x, new Shape(tokens, hidden));
            NDArray ia = m.create(idx, new Shape(tokens, topk));
            NDArray wa = weights ? m.create(wts, new Shape(tokens, topk)) : null;
            DispatchResult d = buffer.dispatch(xa, ia, wa, experts, align, wire);
            try (EpHandle h = d.handle()) {
                NDArray recv = d.recvX();
                if (cached) {
                    recv = buffer.dispatch(xa, h, wire);
                }
                CombineResult c = buffer.combine(recv, d.recvTopkWeights(), h, wire);
                hash = fnv(hash, recv.toFloatArray());
                hash = fnv(hash, c.out().toFloatArray());
                if (d.recvTopkWeights() != null) {
                    hash = fnv(hash, d.recvTopkWeights().toFloatArray());
                }
                for (long v : d.recvTopkIdx().toLongArray()) {
                    hash = (hash ^ v) * 0x100000001b3L;
                }
                checkOracle(wire, x, ranksOf, hidden, c.out().toFloatArray());
            }
        }
        return hash;
    }

    /** With identity experts, combine(dispatch(x)) = x times the ranks the token went to. */
    private void checkOracle(WireFormat wire, float[] x, int[] ranksOf, int hidden, float[] out) {
        double rel =
                switch (wire) {
                    case FP32 -> 0;
                    case BF16 -> 1.0 / 256;
                    case FP8, MXFP8 -> 1.0 / 8;
                };
        for (int t = 0; t < ranksOf.length; t++) {
            float amax = 0;
            for (int c = 0; c < hidden; c++) {
                amax = Math.max(amax, Math.abs(x[t * hidden + c]));
            }
            for (int c = 0; c < hidden; c++) {
                // The receiver adds the ranks' copies in fp32, in rank order.
                float acc = 0f;
                for (int k = 0; k < ranksOf[t]; k++) {
                    acc += x[t * hidden + c];
                }
                double want = acc;
                double got = out[t * hidden + c];
                double tol = ranksOf[t] * (rel * Math.abs(x[t * hidden + c]) + rel * amax / 64);
                if (!(Math.abs(got - want) <= tol)) {
                    if (oracleFailures++ == 0) {
                        firstOracleFailure =
                                String.format(
                                        Locale.ROOT,
                                        "step %d wire %s token %d" + " channel %d: got %g, want %g",
                                        globalStep,
                                        wire,
                                        t,
                                        c,
                                        got,
                                        want);
                    }
                    return;
                }
            }
        }
    }

    private static long fnv(long h, float[] v) {
        for (float f : v) {
            h = (h ^ Float.floatToRawIntBits(f)) * 0x100000001b3L;
        }
        return h;
    }

    private void killDuringAllReduce(NDManager root) {
        boolean victim = group.rank() == opts.killRank();
        if (victim) {
            Thread t =
                    new Thread(
                            () -> {
                                try {
                                    Thread.sleep(5);
                                    out.println(
                                            "soak: rank "
                                                    + group.rank()
                                                    + " kills itself (SIGKILL) during"
                                                    + " an all-reduce");
                                    out.flush();
                                    new ProcessBuilder(
                                                    "sh",
                                                    "-c",
                                                    "kill -KILL " + ProcessHandle.current().pid())
                                            .start()
                                            .waitFor();
                                } catch (IOException | InterruptedException e) {
                                    // the run then ends without the fault and the caller sees exit
                                    // 0
                                }
                            },
                            "soak-fault");
            t.setDaemon(true);
            t.start();
        }
        try (NDArray big = root.ones(new Shape(8 << 20))) {
            for (int i = 0; i < 50; i++) {
                group.allReduceSum(big);
            }
        }
    }

    // ---- training
    // --------------------------------------------------------------------------------

    private long train(int rep) {
        HfMoeConfig config = HfMoeConfig.preset("tiny");
        SyntheticBigramSource source = new SyntheticBigramSource(256, 4, opts.seed());
        int batch = 4 * group.worldSize();
        int seqLen = 32;
        Engine.getInstance().setRandomSeed((int) opts.seed());
        long hash = 0xcbf29ce484222325L;
        long begin = System.nanoTime();
        List<Float> losses = new ArrayList<>();
        try (EpContext ctx =
                        EpContext.builder()
                                .setProcessGroup(group)
                                .optDispatchWire(TrainingPrecision.BF16_WIRE.wire())
                                .build();
                Model model = Model.newInstance("soak", Device.cpu(), "PyTorch")) {
            model.setBlock(
                    HfMoeForCausalLm.builder()
                            .setConfig(config)
                            .optContext(ctx)
                            .optSeqAuxAlpha(PretrainOptions.SEQ_AUX_ALPHA)
                            .optExpertPrecision(TrainingPrecision.BF16_WIRE.experts())
                            .build());
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.adamW()
                                            .optLearningRateTracker(Tracker.fixed(3e-3f))
                                            .build())
                            .optDevices(new Device[] {Device.cpu()});
            try (Trainer trainer = model.newTrainer(tc)) {
                int localBatch = batch / group.worldSize();
                trainer.initialize(new Shape(localBatch, seqLen));
                ParameterInit.reinitialize(model.getBlock(), opts.seed());
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optMaxGradNorm(1f)
                                .optBiasUpdateRate(1e-3f)
                                .build();
                for (int step = 0; step < opts.trainSteps(); step++) {
                    TokenBatch b =
                            source.batch(step, batch, seqLen)
                                    .shard(group.rank(), group.worldSize());
                    StepResult r;
                    try (NDManager sm = trainer.getManager().newSubManager()) {
                        Shape shape = new Shape(b.batch(), b.seqLen());
                        r =
                                ep.step(
                                        new NDList(sm.create(b.inputs(), shape)),
                                        new NDList(sm.create(b.labels(), shape)));
                    }
                    losses.add(r.loss());
                    hash = (hash ^ Float.floatToRawIntBits(r.loss())) * 0x100000001b3L;
                    globalStep++;
                    if (globalStep % Math.max(1, opts.sampleEvery() / 20) == 0) {
                        sample("training");
                    }
                }
            }
        }
        out.printf(
                Locale.ROOT,
                "soak: rank %d training run %d: %d steps in %.1f s, loss %.4f ->"
                        + " %.4f, loss hash %016x%n",
                group.rank(),
                rep,
                opts.trainSteps(),
                (System.nanoTime() - begin) / 1e9,
                losses.get(0),
                losses.get(losses.size() - 1),
                hash);
        return hash;
    }

    // ---- sampling and the verdict
    // ----------------------------------------------------------------

    private void sample(String phase) {
        System.gc();
        Runtime rt = Runtime.getRuntime();
        samples.add(
                new Sample(
                        phase,
                        globalStep,
                        rssKb(),
                        Pointer.physicalBytes(),
                        Pointer.totalBytes(),
                        Pointer.totalCount(),
                        rt.totalMemory() - rt.freeMemory(),
                        count(Paths.get("/proc/self/fd")),
                        mappedSegments(),
                        linkedSegments()));
    }

    private static long rssKb() {
        try {
            for (String l : Files.readAllLines(Paths.get("/proc/self/status"))) {
                if (l.startsWith("VmRSS:")) {
                    return Long.parseLong(l.replaceAll("[^0-9]", ""));
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return -1;
    }

    /** Where this process's file descriptors point (for the report of a drift). */
    private static java.util.Set<String> fdTargets() {
        java.util.Set<String> out = new java.util.TreeSet<>();
        try (Stream<Path> s = Files.list(Paths.get("/proc/self/fd"))) {
            s.forEach(
                    p -> {
                        try {
                            out.add(Files.readSymbolicLink(p).toString());
                        } catch (IOException e) {
                            // closed meanwhile (the directory stream's own descriptor)
                        }
                    });
        } catch (IOException e) {
            // no /proc
        }
        return out;
    }

    private static int count(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return (int) s.count();
        } catch (IOException e) {
            return -1;
        }
    }

    private static int mappedSegments() {
        try (Stream<String> lines = Files.lines(Paths.get("/proc/self/maps"))) {
            return (int)
                    lines.filter(l -> l.contains("/dev/shm/nep-"))
                            .map(l -> l.substring(l.indexOf("/dev/shm/nep-")))
                            .distinct()
                            .count();
        } catch (IOException e) {
            return -1;
        }
    }

    private static int linkedSegments() {
        try (Stream<Path> s = Files.list(Paths.get("/dev/shm"))) {
            return (int) s.filter(p -> p.getFileName().toString().startsWith("nep-")).count();
        } catch (IOException e) {
            return -1;
        }
    }

    private boolean report(
            List<Long> dispatchHashes, List<Long> trainHashes, long steps, double seconds) {
        int r = group.rank();
        out.printf(
                Locale.ROOT,
                "soak: rank %d samples (step, phase, RSS MiB, physical MiB, JavaCPP bytes/pointers,"
                        + " heap MiB after GC, fds, segments mapped/linked):%n",
                r);
        for (Sample s : samples) {
            out.printf(
                    Locale.ROOT,
                    "soak: rank %d   %6d %-16s %7.1f %7.1f %8d/%-4d %6.1f %4d %d/%d%n",
                    r,
                    s.step(),
                    s.phase(),
                    s.rssKb() / 1024.0,
                    s.physicalBytes() / 1048576.0,
                    s.pointerBytes(),
                    s.pointerCount(),
                    s.heapUsed() / 1048576.0,
                    s.fds(),
                    s.segmentsMapped(),
                    s.segmentsLinked());
        }
        // Warm-up: the first 20% of the dispatch/combine samples (JIT, arenas, DJL caches).
        List<Sample> dc =
                samples.stream().filter(s -> s.phase().equals("dispatch/combine")).toList();
        List<Sample> steady = dc.stream().filter(x -> x.step() >= warmupSteps()).toList();
        boolean ok = true;
        List<String> problems = new ArrayList<>();
        if (steady.size() >= 2) {
            Sample first = steady.get(0);
            // RSS moves by tens of MiB from step to step (tensor sizes vary): compare the means
            // of the first and last thirds of the steady samples, and show the range.
            int third = Math.max(1, steady.size() / 3);
            double head =
                    steady.subList(0, third).stream()
                            .mapToLong(Sample::rssKb)
                            .average()
                            .getAsDouble();
            double tail =
                    steady.subList(steady.size() - third, steady.size()).stream()
                            .mapToLong(Sample::rssKb)
                            .average()
                            .getAsDouble();
            long rssGrowKb = Math.round(tail - head);
            long rssMin = steady.stream().mapToLong(Sample::rssKb).min().getAsLong();
            long rssMax = steady.stream().mapToLong(Sample::rssKb).max().getAsLong();
            double slopeKbPerStep = slope(steady);
            long ptrBytesDrift =
                    steady.stream().mapToLong(Sample::pointerBytes).max().getAsLong()
                            - steady.stream().mapToLong(Sample::pointerBytes).min().getAsLong();
            long ptrCountDrift =
                    steady.stream().mapToLong(Sample::pointerCount).max().getAsLong()
                            - steady.stream().mapToLong(Sample::pointerCount).min().getAsLong();
            long heapGrow = steady.get(steady.size() - 1).heapUsed() - first.heapUsed();
            int fdDrift =
                    steady.stream().mapToInt(Sample::fds).max().getAsInt()
                            - steady.stream().mapToInt(Sample::fds).min().getAsInt();
            int segDrift =
                    steady.stream().mapToInt(Sample::segmentsMapped).max().getAsInt()
                            - steady.stream().mapToInt(Sample::segmentsMapped).min().getAsInt();
            out.printf(
                    Locale.ROOT,
                    "soak: rank %d after warm-up (%d samples, steps %d-%d): RSS %.1f-%.1f MiB, last"
                        + " third %+.1f MiB against the first (slope %.3f KiB/step), JavaCPP bytes"
                        + " drift %d, pointers drift %d, heap %+.1f MiB, fds drift %d, mapped"
                        + " segments drift %d%n",
                    r,
                    steady.size(),
                    first.step(),
                    steady.get(steady.size() - 1).step(),
                    rssMin / 1024.0,
                    rssMax / 1024.0,
                    rssGrowKb / 1024.0,
                    slopeKbPerStep,
                    ptrBytesDrift,
                    ptrCountDrift,
                    heapGrow / 1048576.0,
                    fdDrift,
                    segDrift);
            if (fdsAtWarmup != null) {
                java.util.Set<String> now = fdTargets();
                java.util.Set<String> added = new java.util.TreeSet<>(now);
                added.removeAll(fdsAtWarmup);
                java.util.Set<String> gone = new java.util.TreeSet<>(fdsAtWarmup);
                gone.removeAll(now);
                if (!added.isEmpty() || !gone.isEmpty()) {
                    out.printf(
                            Locale.ROOT,
                            "soak: rank %d descriptors since warm-up: opened %s," + " closed %s%n",
                            r,
                            added,
                            gone);
                }
            }
            if (rssGrowKb > opts.rssToleranceMb() * 1024) {
                problems.add(
                        "RSS grew by "
                                + rssGrowKb / 1024
                                + " MiB after warm-up (tolerance "
                                + opts.rssToleranceMb()
                                + ")");
            }
            if (ptrBytesDrift != 0 || ptrCountDrift != 0) {
                problems.add(
                        "JavaCPP allocations drift: "
                                + ptrBytesDrift
                                + " bytes, "
                                + ptrCountDrift
                                + " pointers");
            }
            // The JVM opens a file or two lazily (a jar, /dev/urandom): a leak grows further.
            if (fdDrift > 2 || segDrift != 0) {
                problems.add("file descriptors drift " + fdDrift + ", segments drift " + segDrift);
            }
            if (heapGrow > (16L << 20)) {
                problems.add("Java heap after GC grew by " + (heapGrow >> 20) + " MiB");
            }
        }
        // Training memory: the last training sample against the first of the last run.
        List<Sample> tr = samples.stream().filter(s -> s.phase().equals("training")).toList();
        if (tr.size() >= 6) {
            // The first training run is the warm-up of training; judge the last one like the
            // dispatch/combine phase: the mean of its last third against its first third.
            List<Sample> lastRun = tr.subList(tr.size() / 2, tr.size());
            int third = Math.max(1, lastRun.size() / 3);
            double head =
                    lastRun.subList(0, third).stream()
                            .mapToLong(Sample::rssKb)
                            .average()
                            .getAsDouble();
            double tail =
                    lastRun.subList(lastRun.size() - third, lastRun.size()).stream()
                            .mapToLong(Sample::rssKb)
                            .average()
                            .getAsDouble();
            long grow = Math.round(tail - head);
            out.printf(
                    Locale.ROOT,
                    "soak: rank %d training (last run): RSS last third %+.1f MiB"
                            + " against the first, JavaCPP bytes %d -> %d%n",
                    r,
                    grow / 1024.0,
                    lastRun.get(0).pointerBytes(),
                    lastRun.get(lastRun.size() - 1).pointerBytes());
            if (grow > opts.rssToleranceMb() * 1024) {
                problems.add("RSS grew by " + grow / 1024 + " MiB during the last training run");
            }
        }
        // One-time steps (a new malloc arena, a libtorch cache) are shown, not judged: a leak
        // shows as growth of the means above and in JavaCPP, heap, descriptor and segment counts.
        List<String> rises = new ArrayList<>();
        for (int i = 1; i < samples.size(); i++) {
            long d = samples.get(i).rssKb() - samples.get(i - 1).rssKb();
            // (dispatch/combine samples swing by tens of MiB with the step's tensor sizes)
            if (d > 16 * 1024 && samples.get(i).phase().equals("training")) {
                rises.add(
                        String.format(
                                Locale.ROOT,
                                "%+.1f MiB at step %d (%s)",
                                d / 1024.0,
                                samples.get(i).step(),
                                samples.get(i).phase()));
            }
        }
        if (!rises.isEmpty()) {
            out.printf(
                    Locale.ROOT,
                    "soak: rank %d training RSS rises over 16 MiB between two" + " samples: %s%n",
                    r,
                    rises);
        }
        Sample end = samples.get(samples.size() - 1);
        int expectedMapped = group.worldSize() > 1 ? group.worldSize() : 0;
        if (end.segmentsMapped() != expectedMapped) {
            problems.add(
                    "mapped segments at the end: "
                            + end.segmentsMapped()
                            + ", expected "
                            + expectedMapped
                            + " (the communicator's)");
        }
        if (dispatchHashes.stream().distinct().count() > 1) {
            problems.add("dispatch/combine outputs differ between repeats: " + dispatchHashes);
        }
        if (trainHashes.stream().distinct().count() > 1) {
            problems.add("training losses differ between repeats: " + trainHashes);
        }
        if (oracleFailures > 0) {
            problems.add(
                    oracleFailures + " steps differ from the oracle, first: " + firstOracleFailure);
        }
        ok = problems.isEmpty();
        out.printf(
                Locale.ROOT,
                "soak: rank %d %s: %d dispatch/combine steps, %d training steps,"
                        + " %.1f s; hashes %s / %s%s%n",
                r,
                ok ? "PASSED" : "FAILED",
                steps,
                opts.trainSteps() * trainHashes.size(),
                seconds,
                hex(dispatchHashes),
                hex(trainHashes),
                ok ? "" : ": " + String.join("; ", problems));
        return ok;
    }

    private static String hex(List<Long> v) {
        return v.stream().map(h -> String.format("%016x", h)).distinct().toList().toString();
    }

    /** Least-squares slope of RSS over steps, KiB per step. */
    private static double slope(List<Sample> s) {
        double n = s.size();
        double mx = s.stream().mapToDouble(Sample::step).sum() / n;
        double my = s.stream().mapToDouble(Sample::rssKb).sum() / n;
        double num = 0;
        double den = 0;
        for (Sample x : s) {
            num += (x.step() - mx) * (x.rssKb() - my);
            den += (x.step() - mx) * (x.step() - mx);
        }
        return den == 0 ? 0 : num / den;
    }

    /**
     * Returns the samples taken so far.
     *
     * @return the samples
     */
    public List<Sample> samples() {
        return samples;
    }
}
