/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Block;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.tracker.CosineTracker;
import ai.djl.training.tracker.Tracker;
import ai.djl.training.tracker.WarmUpTracker;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.recipes.metrics.ExpertLoads;
import dev.djlmoe.recipes.metrics.HeldOutRecord;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.RunMetrics;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.train.ProgressBar;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfCheckpoints;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.HfMoeForCausalLm;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;

/**
 * The training loop of {@code pretrain} and {@code finetune}: an MoE language model trained with
 * the EP training step ({@link EpTrainer}), AdamW ({@link CheckpointableAdamW}) with warm-up and
 * cosine decay, metrics, plots, checkpoints and exact resume.
 *
 * <p>Every rank runs this with the same arguments ({@code launch} or any torchrun-style launcher
 * sets the rank environment); each takes its share of the global batch and holds {@code E / W}
 * experts. Determinism: the batch of a step depends only on the step, the engine's random generator
 * is re-seeded from {@code (seed, step)} before every step, and a checkpoint holds the exact
 * float32 weights, AdamW moments and update counts (which drive the learning-rate schedule), and
 * the routers' correction biases (part of the weights) — so a resumed run repeats the numbers of an
 * uninterrupted one bit for bit.
 */
public final class Pretrain {

    private static final org.slf4j.Logger LOGGER =
            org.slf4j.LoggerFactory.getLogger(Pretrain.class);

    /** Global batches of held-out data evaluated at the end of a run (when the data have any). */
    public static final int HELD_OUT_BATCHES = 8;

    private Pretrain() {}

    /**
     * What a run produced (on rank 0; other ranks see the same losses).
     *
     * @param losses the loss of every step this process ran
     * @param firstLoss loss of the first step this process ran
     * @param finalLoss mean loss of the last 10% of the steps this process ran
     * @param tokensPerSecond tokens per second over the run
     * @param epShare share of step time spent in EP dispatch and combine
     * @param startStep steps done before this process started (0, or the resumed checkpoint's)
     * @param endStep steps done when this process stopped
     * @param stopped whether the run was stopped early (Ctrl-C / SIGTERM)
     * @param unigram the unigram baseline of the training data (nats per token)
     * @param heldOutLoss loss on held-out data at the end, or NaN when not measured
     * @param checkpoint the last checkpoint written, or null
     */
    public record Result(
            List<Float> losses,
            float firstLoss,
            float finalLoss,
            double tokensPerSecond,
            double epShare,
            long startStep,
            long endStep,
            boolean stopped,
            double unigram,
            double heldOutLoss,
            Path checkpoint) {}

    /** Sees each step of a run (tests, benchmarks). Every call happens on the training thread. */
    public interface StepObserver {
        /**
         * Receives the step's gradients after averaging over ranks and before clipping, in the
         * order of {@link EpTrainer#parameterNames()}; the arrays are valid during the call only.
         *
         * @param step the step index (from 0)
         * @param trainer the EP training step (model, names, expert parameters)
         * @param gradients the gradients
         */
        default void gradients(int step, EpTrainer trainer, List<NDArray> gradients) {}

        /**
         * Receives the figures of a finished step.
         *
         * @param step the step index (from 0)
         * @param trainer the EP training step
         * @param result the step's figures
         */
        default void stepDone(int step, EpTrainer trainer, StepResult result) {}

        /**
         * Whether {@link #gradients} is to be called: an observer that only times steps says no, so
         * the step runs exactly as without an observer.
         *
         * @return true (the default) to see the gradients
         */
        default boolean seesGradients() {
            return true;
        }
    }

    /**
     * A training job.
     *
     * @param command {@code pretrain} or {@code finetune} (recorded in checkpoints)
     * @param config the Hugging Face model configuration
     * @param initFrom a Hugging Face checkpoint to start from (fine-tuning), or null for a fresh
     *     initialisation from the seed
     * @param data the training data
     * @param opts the settings
     * @param output where the trained model goes at the end as a Hugging Face checkpoint, or null
     * @param extraFiles files copied into every checkpoint and the output (the tokenizer)
     * @param extra more facts recorded in checkpoints (e.g. where the model came from)
     */
    public record Job(
            String command,
            HfMoeConfig config,
            Path initFrom,
            TokenSource data,
            PretrainOptions opts,
            Path output,
            List<Path> extraFiles,
            Map<String, Object> extra) {

        /** Refuses a job without a command, model configuration, data or settings. */
        public Job {
            if (command == null || config == null || data == null || opts == null) {
                throw new IllegalArgumentException(
                        "Pretrain.Job: command, config, data and opts are required; got command="
                                + command
                                + ", config="
                                + (config == null ? "null" : "set")
                                + ", data="
                                + (data == null ? "null" : "set")
                                + ", opts="
                                + (opts == null ? "null" : "set"));
            }
            extraFiles = extraFiles == null ? List.of() : extraFiles;
            extra = extra == null ? Map.of() : extra;
        }

        /**
         * A pre-training job.
         *
         * @param config the model
         * @param data the data
         * @param opts the settings
         * @return the job
         */
        public static Job pretrain(HfMoeConfig config, TokenSource data, PretrainOptions opts) {
            return new Job("pretrain", config, null, data, opts, null, List.of(), Map.of());
        }
    }

    // ---- entry points ----------------------------------------------------------------------

    /**
     * Pre-trains a Hugging Face MoE model on this rank.
     *
     * @param config the model
     * @param source the data
     * @param opts the run settings
     * @param out where progress goes
     * @return the loss curve and figures
     */
    public static Result run(
            HfMoeConfig config, TokenSource source, PretrainOptions opts, PrintStream out) {
        return run(Job.pretrain(config, source, opts), out, StopSignal.none(), null);
    }

    /**
     * Runs a job on this rank (the rank environment comes from the process environment).
     *
     * @param job the job
     * @param out where rank 0's progress goes
     * @param stop polled between steps: when raised on any rank, every rank stops at the same step
     *     and a checkpoint is written
     * @param observer sees each step's gradients and figures, or null
     * @return the loss curve and figures
     */
    public static Result run(Job job, PrintStream out, StopSignal stop, StepObserver observer) {
        return run(job, out, stop, observer, RankEnvironment.fromSystem());
    }

    /**
     * Runs a job as the given rank.
     *
     * @param job the job
     * @param out where rank 0's progress goes
     * @param stop polled between steps
     * @param observer sees each step, or null
     * @param env this rank's place in the job
     * @return the loss curve and figures
     */
    public static Result run(
            Job job, PrintStream out, StopSignal stop, StepObserver observer, RankEnvironment env) {
        HfMoeConfig cfg = job.config();
        Arch arch =
                new Arch(
                        cfg.vocabSize(),
                        cfg.numExperts(),
                        cfg.numLayers(),
                        cfg.hiddenSize(),
                        cfg.topK(),
                        cfg.numSharedExperts(),
                        ctx ->
                                HfMoeForCausalLm.builder()
                                        .setConfig(cfg)
                                        .optContext(ctx)
                                        .optSeqAuxAlpha(job.opts().seqAuxAlpha())
                                        .optExpertPrecision(job.opts().precision().experts())
                                        .build());
        try {
            return train(job, arch, out, stop, observer, env);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Pre-trains a Hugging Face MoE model on this rank, stopping early (on every rank at the same
     * step) when {@code stop} is raised on any rank, and shows every step to an observer. Writes
     * checkpoints only where {@code opts} asks for them ({@link
     * PretrainOptions#effectiveCheckpointDir()}: none without a run or checkpoint directory).
     *
     * @param config the model, e.g. {@code HfMoeConfig.preset("tiny")}
     * @param source the data
     * @param opts the run settings
     * @param out where rank 0's progress goes
     * @param stop polled between steps
     * @param observer sees each step's gradients and figures, or null
     * @return the loss curve and figures (losses, tokens/s, EP share)
     */
    public static Result run(
            HfMoeConfig config,
            TokenSource source,
            PretrainOptions opts,
            PrintStream out,
            StopSignal stop,
            StepObserver observer) {
        return run(Job.pretrain(config, source, opts), out, stop, observer);
    }

    /** The model being trained, seen by the loop. */
    private record Arch(
            long vocab,
            int experts,
            int layers,
            long hidden,
            int topK,
            int shared,
            Function<EpContext, Block> build) {}

    // ---- checks before any rank starts -----------------------------------------------------

    /**
     * Checks that a job can run at an EP size, before any process group is formed.
     *
     * @param job the job
     * @param worldSize W
     * @throws IllegalArgumentException naming the setting, its value and the limit
     */
    public static void checkJob(Job job, int worldSize) {
        HfMoeConfig c = job.config();
        checkFits(job.opts(), worldSize, c.numExperts(), c.vocabSize(), job.data());
    }

    /**
     * Checks the settings that depend on the EP size alone (the launcher runs it before any rank
     * starts): the routed experts and the global batch must divide over the ranks, and {@code
     * --no-ep} needs one rank.
     *
     * @param opts the settings
     * @param experts the model's routed experts E
     * @param worldSize W
     * @throws IllegalArgumentException naming the setting, its value and the EP sizes that work
     */
    public static void checkEpSize(PretrainOptions opts, int experts, int worldSize) {
        checkDivides(
                "the model's " + experts + " routed experts",
                experts,
                worldSize,
                "each rank holds E / W experts");
        if (opts.batch() % worldSize != 0) {
            throw new IllegalArgumentException(
                    "--batch "
                            + opts.batch()
                            + " is not divisible by the EP size "
                            + worldSize
                            + " (each rank takes batch / W sequences)");
        }
        if (!opts.useEp() && worldSize > 1) {
            throw new IllegalArgumentException(
                    "--no-ep keeps every expert on one rank: run it without launch (EP size 1),"
                            + " not with "
                            + worldSize
                            + " ranks");
        }
    }

    /**
     * Checks that a count splits evenly over the ranks.
     *
     * @param what what is split, with its count, e.g. {@code "the model's 8 routed experts"}
     * @param count the count
     * @param worldSize the EP size W
     * @param why how the ranks share it, e.g. {@code "each rank holds E / W experts"}
     * @throws IllegalArgumentException naming both numbers and the EP sizes that work
     */
    public static void checkDivides(String what, int count, int worldSize, String why) {
        if (worldSize < 1 || count % worldSize != 0) {
            throw new IllegalArgumentException(
                    what
                            + " are not divisible by the EP size "
                            + worldSize
                            + " ("
                            + why
                            + "): use an EP size that divides "
                            + count
                            + epSizesDividing(count));
        }
    }

    /**
     * The EP sizes that divide a count, for messages.
     *
     * @param n the count
     * @return {@code " (1, 2, 4 or 8)"} for 8 (at most 16 sizes; empty for n below 2)
     */
    public static String epSizesDividing(int n) {
        List<String> d = new ArrayList<>();
        for (int i = 1; i <= n && d.size() < 16; i++) {
            if (n % i == 0) {
                d.add(Integer.toString(i));
            }
        }
        if (d.size() < 2) {
            return "";
        }
        return " ("
                + String.join(", ", d.subList(0, d.size() - 1))
                + " or "
                + d.get(d.size() - 1)
                + ")";
    }

    private static void checkFits(
            PretrainOptions opts, int worldSize, int experts, long vocab, TokenSource data) {
        opts.validate();
        checkEpSize(opts, experts, worldSize);
        if (vocab < data.vocabSize()) {
            throw new IllegalArgumentException(
                    "the model's vocab_size "
                            + vocab
                            + " is smaller than the data's vocabulary "
                            + data.vocabSize());
        }
        data.checkBatch(opts.batch(), opts.seqLen());
    }

    /** Compares the run's settings with a checkpoint's; returns warnings, throws on conflicts. */
    private static List<String> checkResume(
            TrainingCheckpoint.State state, Job job, Path ckpt, int worldSize) throws IOException {
        List<String> warnings = new ArrayList<>();
        if (!job.command().equals(state.command())) {
            throw new IllegalArgumentException(
                    "--resume "
                            + ckpt
                            + ": the checkpoint was written by '"
                            + state.command()
                            + "', not '"
                            + job.command()
                            + "'");
        }
        Map<String, Object> now = job.opts().trajectorySettings();
        List<String> conflicts = new ArrayList<>();
        for (Map.Entry<String, Object> e : now.entrySet()) {
            Object then = state.settings().get(e.getKey());
            if (!same(then, e.getValue())) {
                if ("steps".equals(e.getKey())) {
                    warnings.add(
                            "--steps "
                                    + e.getValue()
                                    + " differs from the checkpoint's run ("
                                    + then
                                    + "): the cosine schedule is stretched to the new length, so"
                                    + " the continuation is not what either uninterrupted run"
                                    + " gives");
                } else {
                    conflicts.add(
                            "--" + e.getKey() + " " + e.getValue() + " (checkpoint: " + then + ")");
                }
            }
        }
        if (!conflicts.isEmpty()) {
            throw new IllegalArgumentException(
                    "--resume "
                            + ckpt
                            + ": settings differ from the checkpoint's: "
                            + String.join(", ", conflicts)
                            + "; resume with the settings of the interrupted run");
        }
        Object fp = state.data().get("fingerprint");
        if (!job.data().fingerprint().equals(fp)) {
            throw new IllegalArgumentException(
                    "--resume "
                            + ckpt
                            + ": the data differ from the checkpoint's ("
                            + job.data().fingerprint()
                            + " vs "
                            + fp
                            + "); resume with the same --data");
        }
        HfMoeConfig saved = HfMoeConfig.load(ckpt);
        if (!saved.toJson().equals(job.config().toJson())) {
            throw new IllegalArgumentException(
                    "--resume "
                            + ckpt
                            + ": the model differs from the checkpoint's config.json"
                            + " ("
                            + saved
                            + " vs "
                            + job.config()
                            + "); resume with the same"
                            + " --model");
        }
        if (state.worldSize() != worldSize) {
            warnings.add(
                    "the checkpoint was written with EP size "
                            + state.worldSize()
                            + ", this run has "
                            + worldSize
                            + ": training continues, but sums over tokens run in another order, so"
                            + " the numbers are not bit-identical to an uninterrupted run");
        }
        if (state.step() > job.opts().steps()) {
            throw new IllegalArgumentException(
                    "--resume "
                            + ckpt
                            + ": the checkpoint is at step "
                            + state.step()
                            + ", beyond --steps "
                            + job.opts().steps());
        }
        return warnings;
    }

    private static boolean same(Object a, Object b) {
        if (a instanceof Number x && b instanceof Number y) {
            return x.doubleValue() == y.doubleValue()
                    || (float) x.doubleValue() == (float) y.doubleValue();
        }
        return Objects.equals(a, b);
    }

    // ---- the loop --------------------------------------------------------------------------

    private static Result train(
            Job job,
            Arch arch,
            PrintStream out,
            StopSignal stop,
            StepObserver observer,
            RankEnvironment env)
            throws IOException {
        PretrainOptions opts = job.opts();
        TokenSource source = job.data();
        int world = env.worldSize();
        checkFits(opts, world, arch.experts(), arch.vocab(), source);
        Path ckptRoot = opts.effectiveCheckpointDir();
        Path resumeFrom = null;
        TrainingCheckpoint.State resumed = null;
        List<String> warnings = new ArrayList<>();
        if (env.rank() == 0 && ckptRoot != null) {
            // What a killed job's interrupted save left (never taken for a checkpoint).
            warnings.addAll(TrainingCheckpoint.removeLeftovers(ckptRoot));
        }
        if (opts.resume() != null) {
            resumeFrom = TrainingCheckpoint.resolve(opts.resume(), warnings);
            resumed = TrainingCheckpoint.readState(resumeFrom);
            warnings.addAll(checkResume(resumed, job, resumeFrom, world));
        }
        if (env.rank() == 0 && resumeFrom == null && ckptRoot != null) {
            // A fresh run never replaces an earlier run's step-N: those move aside first.
            Path earlier = TrainingCheckpoint.setAsideEarlierRun(ckptRoot);
            if (earlier != null) {
                warnings.add(
                        ckptRoot
                                + " held the checkpoints of an earlier run: moved them to "
                                + earlier
                                + " (continue that run with --resume "
                                + earlier
                                + "); this"
                                + " run starts fresh and writes its own into "
                                + ckptRoot);
            }
        }
        if (job.initFrom() != null && !Files.isDirectory(job.initFrom())) {
            throw new IllegalArgumentException(
                    "--model " + job.initFrom() + ": no such checkpoint directory");
        }
        Engine.getInstance().setRandomSeed((int) opts.seed());
        Device device = DeviceFlag.resolve(opts.device(), env.localRank());
        boolean lead = env.rank() == 0;
        PrintStream log = lead ? out : new PrintStream(OutputStream.nullOutputStream());
        try (ProcessGroup group = ProcessGroups.create(env);
                EpContext ctx =
                        opts.useEp()
                                ? EpContext.builder()
                                        .setProcessGroup(group)
                                        .optDispatchWire(opts.precision().wire())
                                        .optExpertAlignment(opts.precision().expertAlignment())
                                        .build()
                                : null;
                Model model = Model.newInstance("moe-lm", device, "PyTorch")) {
            Block block = arch.build().apply(ctx);
            model.setBlock(block);
            HfMoeForCausalLm hfModel = block instanceof HfMoeForCausalLm h ? h : null;
            if (resumeFrom != null) {
                HfCheckpoints.loadWeights(hfModel, resumeFrom, model.getNDManager(), true);
            } else if (job.initFrom() != null) {
                HfCheckpoints.loadWeights(hfModel, job.initFrom(), model.getNDManager(), false);
            }
            Tracker lr = schedule(opts);
            CheckpointableAdamW optimizer =
                    CheckpointableAdamW.builder()
                            .optLearningRateTracker(lr)
                            .optWeightDecays(opts.weightDecay())
                            .build();
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(optimizer)
                            .optDevices(new Device[] {device});
            try (Trainer trainer = model.newTrainer(tc)) {
                int localBatch = opts.batch() / group.worldSize();
                trainer.initialize(new Shape(localBatch, opts.seqLen()));
                if (resumeFrom == null && job.initFrom() == null) {
                    ParameterInit.reinitialize(model.getBlock(), opts.seed());
                }
                long start = 0;
                if (resumeFrom != null) {
                    int restored =
                            TrainingCheckpoint.loadOptimizer(
                                    resumeFrom, hfModel, optimizer, group.rank());
                    start = resumed.step();
                    if (start > 0 && restored == 0) {
                        throw new IllegalArgumentException(
                                "--resume "
                                        + resumeFrom
                                        + ": the checkpoint of step "
                                        + start
                                        + " holds no optimizer state (optimizer-*.safetensors)");
                    }
                }
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optOptimizer(optimizer)
                                .optMaxGradNorm(opts.maxGradNorm())
                                .optBiasUpdateRate(opts.biasUpdateRate())
                                .build();
                log.printf(
                        Locale.ROOT,
                        "model: %s, %d layers, H=%d, %d experts (top-%d, %d shared), %,d"
                                + " parameters per rank; EP size %d, precision %s%n",
                        job.config().family().modelType(),
                        arch.layers(),
                        arch.hidden(),
                        arch.experts(),
                        arch.topK(),
                        arch.shared(),
                        countParameters(model),
                        group.worldSize(),
                        opts.useEp() ? opts.precision().flag() : "none (local)");
                if (job.initFrom() != null) {
                    log.println("weights: " + job.initFrom());
                }
                log.println("data: " + source.describe());
                log.printf(
                        Locale.ROOT,
                        "data: unigram baseline %.4f nats/token (the loss of predicting each token"
                                + " from its frequency alone)%n",
                        source.unigramEntropy());
                for (String w : warnings) {
                    log.println("warning: " + w);
                }
                if (resumeFrom != null) {
                    log.printf(
                            Locale.ROOT,
                            "resumed from %s at step %d of %d%n",
                            resumeFrom,
                            start,
                            opts.steps());
                }
                return loop(
                        job, arch, ep, trainer, optimizer, hfModel, group, lr, start, log, stop,
                        observer, ckptRoot);
            }
        }
    }

    private static Tracker schedule(PretrainOptions opts) {
        return WarmUpTracker.builder()
                .optWarmUpSteps(opts.warmupSteps())
                .optWarmUpBeginValue(opts.learningRate() / 100f)
                .setMainTracker(
                        CosineTracker.builder()
                                .setBaseValue(opts.learningRate())
                                .optFinalValue(opts.learningRate() / 10f)
                                .setMaxUpdates(Math.max(1, opts.steps()))
                                .build())
                .build();
    }

    private static Result loop(
            Job job,
            Arch arch,
            EpTrainer ep,
            Trainer trainer,
            CheckpointableAdamW optimizer,
            HfMoeForCausalLm hfModel,
            ProcessGroup group,
            Tracker lr,
            long start,
            PrintStream log,
            StopSignal stop,
            StepObserver observer,
            Path ckptRoot)
            throws IOException {
        PretrainOptions opts = job.opts();
        TokenSource source = job.data();
        boolean lead = group.rank() == 0;
        ProgressBar bar =
                new ProgressBar(
                        log, opts.steps(), System.console() != null, opts.logEvery(), start);
        List<Float> losses = new ArrayList<>();
        List<StepRecord> records = new ArrayList<>();
        List<HeldOutRecord> heldOutRecords = new ArrayList<>();
        Path metricsPath = opts.runDir() == null ? null : opts.runDir().resolve("metrics.jsonl");
        MetricsFile metrics = null;
        if (lead && metricsPath != null) {
            RunMetrics earlier = previousRecords(metricsPath, start);
            records.addAll(earlier.steps());
            heldOutRecords.addAll(earlier.heldOut());
            metrics = new MetricsFile(metricsPath);
        }
        int[] moeLayerIds = moeLayerIds(job.config(), ep.moeLayers().size());
        long tokens = 0;
        long nanos = 0;
        long epNanos = 0;
        boolean warned = false;
        boolean stopped = false;
        Path lastCheckpoint = null;
        long lastSaved = start;
        long step = start;
        try {
            for (; step < opts.steps(); step++) {
                if (stopAgreed(group, stop, trainer.getManager())) {
                    log.printf(Locale.ROOT, "stopping at step %d on request%n", step);
                    stopped = true;
                    break;
                }
                // Any random op in the step (none today; dropout one day) draws from a stream
                // that depends only on (seed, step), so a resumed run draws the same numbers.
                Engine.getInstance().setRandomSeed(stepSeed(opts.seed(), step));
                TokenBatch b =
                        source.batch(step, opts.batch(), opts.seqLen())
                                .shard(group.rank(), group.worldSize());
                StepResult r;
                try (NDManager sm = trainer.getManager().newSubManager()) {
                    Shape shape = new Shape(b.batch(), b.seqLen());
                    NDList data = new NDList(sm.create(b.inputs(), shape));
                    NDList labels = new NDList(sm.create(b.labels(), shape));
                    if (observer == null || !observer.seesGradients()) {
                        r = ep.step(data, labels);
                    } else {
                        int at = (int) step;
                        r =
                                ep.stepWithGradientHook(
                                        data, labels, g -> observer.gradients(at, ep, g));
                    }
                }
                if (observer != null) {
                    observer.stepDone((int) step, ep, r);
                }
                losses.add(r.loss());
                StepRecord rec =
                        new StepRecord(
                                step + 1,
                                r.loss(),
                                lr.getNewValue((int) step + 1),
                                r.gradNorm(),
                                r.tokens() * group.worldSize() / (r.stepNanos() / 1e9),
                                r.epBytes(),
                                r.epNanos() / 1e6,
                                r.maxLoadImbalance(),
                                r.expertLoad(),
                                source.unigramEntropy(),
                                r.layerLoads().length == 0
                                        ? null
                                        : new ExpertLoads(
                                                group.worldSize(), moeLayerIds, r.layerLoads()));
                records.add(rec);
                if (metrics != null) {
                    metrics.write(rec);
                }
                if (r.epShare() > 0.2 && step >= start + 2 && !warned) {
                    warned = true;
                    log.printf(
                            Locale.ROOT,
                            "note: EP communication took %.0f%% of step %d (over 20%% of the"
                                    + " step): fewer ranks per host or a narrower wire format"
                                    + " may pay%n",
                            100 * r.epShare(),
                            step + 1);
                }
                tokens += r.tokens() * group.worldSize();
                nanos += r.stepNanos();
                epNanos += r.epNanos();
                bar.update(
                        step + 1,
                        r.loss(),
                        r.tokens() * group.worldSize(),
                        String.format(
                                Locale.ROOT,
                                "gnorm %.2f | EP %.1f%% | load max/mean %.2f",
                                r.gradNorm(),
                                100 * r.epShare(),
                                r.maxLoadImbalance()));
                long done = step + 1;
                if (ckptRoot != null
                        && opts.checkpointEvery() > 0
                        && done % opts.checkpointEvery() == 0
                        && done < opts.steps()) {
                    lastCheckpoint = save(job, ckptRoot, done, hfModel, optimizer, group);
                    lastSaved = done;
                    log.println("checkpoint: " + lastCheckpoint);
                }
            }
        } finally {
            if (metrics != null) {
                metrics.close();
            }
        }
        if (ckptRoot != null && step > lastSaved) {
            lastCheckpoint = save(job, ckptRoot, step, hfModel, optimizer, group);
            log.println(
                    "checkpoint: "
                            + lastCheckpoint
                            + (step < opts.steps()
                                    ? "  (continue with --resume " + ckptRoot + ")"
                                    : ""));
        }
        if (!stopped && job.output() != null) {
            HfCheckpoints.save(hfModel, job.output());
            if (lead) {
                for (Path f : job.extraFiles()) {
                    Files.copy(
                            f,
                            job.output().resolve(f.getFileName().toString()),
                            StandardCopyOption.REPLACE_EXISTING);
                }
            }
            group.barrier();
            log.println("model: " + job.output() + " (Hugging Face checkpoint)");
        }
        double heldOut = Double.NaN;
        TokenSource held = source.heldOut();
        if (!stopped && held != null && !losses.isEmpty()) {
            heldOut = evaluate(trainer, held, opts, group);
            if (lead && metricsPath != null && !Double.isNaN(heldOut)) {
                HeldOutRecord h = new HeldOutRecord(step, heldOut, held.unigramEntropy());
                heldOutRecords.add(h);
                try (MetricsFile m = new MetricsFile(metricsPath)) {
                    m.write(h);
                }
            }
        }
        if (lead && metricsPath != null && !records.isEmpty()) {
            try {
                Plots.loss(
                        Map.of(job.command(), new RunMetrics(records, heldOutRecords)),
                        "djl-moe " + job.command(),
                        opts.runDir().resolve("loss.png"));
                Plots.expertLoad(
                        records,
                        "expert load per MoE layer",
                        opts.runDir().resolve("expert-load.png"));
                log.println("wrote " + metricsPath + ", loss.png, expert-load.png");
            } catch (LinkageError e) {
                // A Java runtime without java.desktop (a jlink-ed one on a GPU host) draws
                // nothing; the run and its metrics stand.
                log.println(
                        "wrote "
                                + metricsPath
                                + "; no plots: this Java runtime lacks "
                                + "java.desktop ("
                                + e
                                + "); draw them later with 'djl-moe plot'");
            }
        }
        if (losses.isEmpty()) {
            log.printf(Locale.ROOT, "done: no steps run (at step %d of %d)%n", step, opts.steps());
            return new Result(
                    losses,
                    Float.NaN,
                    Float.NaN,
                    0,
                    0,
                    start,
                    step,
                    stopped,
                    source.unigramEntropy(),
                    heldOut,
                    lastCheckpoint);
        }
        int tail = Math.max(1, losses.size() / 10);
        float fin = 0;
        for (int i = losses.size() - tail; i < losses.size(); i++) {
            fin += losses.get(i);
        }
        fin /= tail;
        double tps = nanos == 0 ? 0 : tokens / (nanos / 1e9);
        Result res =
                new Result(
                        losses,
                        losses.get(0),
                        fin,
                        tps,
                        nanos == 0 ? 0 : (double) epNanos / nanos,
                        start,
                        step,
                        stopped,
                        source.unigramEntropy(),
                        heldOut,
                        lastCheckpoint);
        log.printf(
                Locale.ROOT,
                "done: loss %.4f -> %.4f (%s); unigram baseline %.4f;"
                        + " %.0f tokens/s, EP %.1f%% of step time%n",
                res.firstLoss(),
                res.finalLoss(),
                tail == 1 ? "the last step" : "mean of the last " + tail + " steps",
                source.unigramEntropy(),
                res.tokensPerSecond(),
                100 * res.epShare());
        if (!Double.isNaN(heldOut)) {
            double below = held.unigramEntropy() - heldOut;
            log.printf(
                    Locale.ROOT,
                    "held-out loss %.4f nats/token vs unigram baseline %.4f (%.2f nats %s)%n",
                    heldOut,
                    held.unigramEntropy(),
                    Math.abs(below),
                    below >= 0 ? "below" : "above");
        }
        return res;
    }

    /** The seed of the engine's generator for a step. */
    static int stepSeed(long seed, long step) {
        long h = seed * 0x9E3779B97F4A7C15L + step * 0xBF58476D1CE4E5B9L;
        h ^= h >>> 31;
        h *= 0x94D049BB133111EBL;
        h ^= h >>> 29;
        return (int) (h & 0x7FFFFFFF);
    }

    private static Path save(
            Job job,
            Path root,
            long step,
            HfMoeForCausalLm model,
            CheckpointableAdamW optimizer,
            ProcessGroup group)
            throws IOException {
        PretrainOptions o = job.opts();
        Map<String, Object> data = new LinkedHashMap<>();
        data.put("description", job.data().describe());
        data.put("fingerprint", job.data().fingerprint());
        data.put("next_step", step);
        data.put("sequences_consumed", step * o.batch());
        data.put("tokens_consumed", step * o.batch() * o.seqLen());
        Map<String, Object> rng = new LinkedHashMap<>();
        rng.put("seed", o.seed());
        rng.put(
                "scheme",
                "the engine's generator is re-seeded before step s with"
                        + " hash(seed, s); data windows and order are drawn from (seed, s)");
        rng.put("next_step_seed", (long) stepSeed(o.seed(), step));
        Map<String, Object> extra = new LinkedHashMap<>(job.extra());
        extra.put("model", job.config().toString());
        TrainingCheckpoint.State state =
                new TrainingCheckpoint.State(
                        step,
                        group.worldSize(),
                        job.command(),
                        o.trajectorySettings(),
                        data,
                        rng,
                        extra);
        return TrainingCheckpoint.save(
                root, state, model, optimizer, group, job.extraFiles(), o.keepCheckpoints());
    }

    /**
     * The records (steps and held-out evaluations) of a resumed run's earlier steps, and the file
     * rewritten to hold only them.
     */
    private static RunMetrics previousRecords(Path metricsPath, long start) throws IOException {
        if (!Files.exists(metricsPath)) {
            return RunMetrics.of(List.of());
        }
        if (start == 0) {
            Files.delete(metricsPath); // a fresh run starts a fresh file
            return RunMetrics.of(List.of());
        }
        RunMetrics all = MetricsFile.readRun(metricsPath);
        List<StepRecord> steps = new ArrayList<>();
        List<HeldOutRecord> heldOut = new ArrayList<>();
        StringBuilder sb = new StringBuilder();
        for (StepRecord r : all.steps()) {
            if (r.step() <= start) {
                steps.add(r);
                sb.append(r.toJson()).append('\n');
            }
        }
        for (HeldOutRecord h : all.heldOut()) {
            if (h.step() <= start) {
                heldOut.add(h);
                sb.append(h.toJson()).append('\n');
            }
        }
        SafetensorsWriter.writeTextAtomically(metricsPath, sb.toString());
        return new RunMetrics(steps, heldOut);
    }

    /**
     * The model layer index of each MoE layer, in forward order (0, 1, ... when the config does not
     * say which layers are MoE layers or says otherwise than the model holds).
     */
    static int[] moeLayerIds(HfMoeConfig cfg, int moeLayers) {
        List<Integer> fromConfig = new ArrayList<>();
        for (int i = 0; cfg != null && i < cfg.numLayers(); i++) {
            if (cfg.isMoeLayer(i)) {
                fromConfig.add(i);
            }
        }
        int[] ids = new int[moeLayers];
        for (int i = 0; i < moeLayers; i++) {
            ids[i] = fromConfig.size() == moeLayers ? fromConfig.get(i) : i;
        }
        return ids;
    }

    /** Mean loss over held-out batches (forward only, every rank its share). */
    private static double evaluate(
            Trainer trainer, TokenSource held, PretrainOptions opts, ProcessGroup group) {
        try {
            held.checkBatch(opts.batch(), opts.seqLen());
        } catch (IllegalArgumentException e) {
            LOGGER.info("no held-out evaluation: {}", e.getMessage());
            return Double.NaN;
        }
        double sum = 0;
        for (int i = 0; i < HELD_OUT_BATCHES; i++) {
            TokenBatch b =
                    held.batch(i, opts.batch(), opts.seqLen())
                            .shard(group.rank(), group.worldSize());
            try (NDManager sm = trainer.getManager().newSubManager()) {
                Shape shape = new Shape(b.batch(), b.seqLen());
                NDList data = new NDList(sm.create(b.inputs(), shape));
                NDArray labels = sm.create(b.labels(), shape);
                NDArray logits = trainer.evaluate(data).head();
                NDArray loss = CausalLmLoss.crossEntropy(logits, labels);
                loss.attach(sm);
                logits.attach(sm);
                try (NDArray v = sm.create(new float[] {loss.getFloat()})) {
                    if (group.worldSize() > 1) {
                        group.allReduceSum(v);
                    }
                    sum += v.getFloat() / group.worldSize();
                }
            }
        }
        return sum / HELD_OUT_BATCHES;
    }

    /** Every rank learns whether any rank was asked to stop, so all stop at the same step. */
    private static boolean stopAgreed(ProcessGroup group, StopSignal stop, NDManager m) {
        float mine = stop.requested() ? 1f : 0f;
        if (group.worldSize() == 1) {
            return mine > 0;
        }
        try (NDArray flag = m.create(new float[] {mine})) {
            group.allReduceSum(flag);
            return flag.getFloat() > 0;
        }
    }

    private static long countParameters(Model model) {
        long n = 0;
        for (var p : model.getBlock().getParameters()) {
            if (p.getValue().isInitialized()) {
                n += p.getValue().getArray().size();
            }
        }
        return n;
    }
}
