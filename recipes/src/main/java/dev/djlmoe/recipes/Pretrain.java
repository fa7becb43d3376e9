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
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.CosineTracker;
import ai.djl.training.tracker.Tracker;
import ai.djl.training.tracker.WarmUpTracker;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.ParameterInit;
import dev.djlmoe.train.ProgressBar;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.model.MoeCausalLm;
import dev.djlmoe.zoo.model.MoeModelConfig;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** Pre-trains an MoE language model with the EP training step and reports the loss curve. */
public final class Pretrain {

    private Pretrain() {}

    /**
     * What a run produced.
     *
     * @param losses the loss of every step
     * @param firstLoss loss of the first step
     * @param finalLoss mean loss of the last 10% of steps
     * @param tokensPerSecond tokens per second over the run
     * @param epShare share of step time spent in EP dispatch and combine
     */
    public record Result(
            List<Float> losses,
            float firstLoss,
            float finalLoss,
            double tokensPerSecond,
            double epShare) {}

    /**
     * Runs pre-training on one rank.
     *
     * @param config the model
     * @param source the data
     * @param opts the run settings
     * @param out where progress goes
     * @return the loss curve and figures
     */
    public static Result run(
            MoeModelConfig config, TokenSource source, PretrainOptions opts, PrintStream out) {
        return run(config, source, opts, out, StopSignal.none());
    }

    /**
     * Runs pre-training on this rank, stopping early (on every rank at the same step) when {@code
     * stop} is raised on any rank.
     *
     * @param config the model
     * @param source the data
     * @param opts the run settings
     * @param out where progress goes
     * @param stop polled between steps
     * @return the loss curve and figures
     */
    public static Result run(
            MoeModelConfig config,
            TokenSource source,
            PretrainOptions opts,
            PrintStream out,
            StopSignal stop) {
        return run(config, source, opts, out, stop, null);
    }

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
    }

    /**
     * Runs pre-training on this rank like {@link #run(MoeModelConfig, TokenSource,
     * PretrainOptions, PrintStream, StopSignal)} and shows every step to an observer.
     *
     * @param config the model
     * @param source the data
     * @param opts the run settings
     * @param out where progress goes
     * @param stop polled between steps
     * @param observer sees each step's gradients and figures, or null
     * @return the loss curve and figures
     */
    public static Result run(
            MoeModelConfig config,
            TokenSource source,
            PretrainOptions opts,
            PrintStream out,
            StopSignal stop,
            StepObserver observer) {
        try {
            return runChecked(config, source, opts, out, stop, observer);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static Result runChecked(
            MoeModelConfig config,
            TokenSource source,
            PretrainOptions opts,
            PrintStream out,
            StopSignal stop,
            StepObserver observer)
            throws IOException {
        opts.validate();
        if (config.vocabSize() != source.vocabSize()) {
            config = config.withVocabSize(source.vocabSize());
        }
        Engine.getInstance().setRandomSeed((int) opts.seed());
        RankEnvironment env = RankEnvironment.fromSystem();
        if (opts.batch() % env.worldSize() != 0) {
            throw new IllegalArgumentException(
                    "--batch " + opts.batch() + " is not divisible by the EP world size "
                            + env.worldSize());
        }
        if (config.numExperts() % env.worldSize() != 0) {
            throw new IllegalArgumentException(
                    "the model's " + config.numExperts() + " experts are not divisible by the EP"
                            + " world size " + env.worldSize());
        }
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
                Model model = Model.newInstance("moe-lm", Device.cpu(), "PyTorch")) {
            model.setBlock(new MoeCausalLm(config, ctx, opts.precision().experts()));
            Tracker lr =
                    WarmUpTracker.builder()
                            .optWarmUpSteps(opts.warmupSteps())
                            .optWarmUpBeginValue(opts.learningRate() / 100f)
                            .setMainTracker(
                                    CosineTracker.builder()
                                            .setBaseValue(opts.learningRate())
                                            .optFinalValue(opts.learningRate() / 10f)
                                            .setMaxUpdates(Math.max(1, opts.steps()))
                                            .build())
                            .build();
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.adamW()
                                            .optLearningRateTracker(lr)
                                            .optWeightDecays(0.01f)
                                            .build())
                            .optDevices(new Device[] {Device.cpu()});
            try (Trainer trainer = model.newTrainer(tc)) {
                int localBatch = opts.batch() / group.worldSize();
                trainer.initialize(new Shape(localBatch, opts.seqLen()));
                ParameterInit.reinitialize(model.getBlock(), opts.seed());
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optMaxGradNorm(opts.maxGradNorm())
                                .optBiasUpdateRate(opts.biasUpdateRate())
                                .build();
                log.printf(
                        Locale.ROOT,
                        "model: %d layers, H=%d, %d experts (top-%d, %d shared), %d parameters per rank;"
                                + " EP world size %d, precision %s%n",
                        config.numLayers(),
                        config.hiddenSize(),
                        config.numExperts(),
                        config.topK(),
                        config.numSharedExperts(),
                        countParameters(model),
                        group.worldSize(),
                        opts.useEp() ? opts.precision().flag() : "none (local)");
                log.printf(
                        Locale.ROOT,
                        "data: unigram baseline %.4f nats/token%n",
                        source.unigramEntropy());
                ProgressBar bar =
                        new ProgressBar(log, opts.steps(), System.console() != null, opts.logEvery());
                List<Float> losses = new ArrayList<>();
                List<StepRecord> records = new ArrayList<>();
                MetricsFile metrics =
                        lead && opts.runDir() != null
                                ? new MetricsFile(opts.runDir().resolve("metrics.jsonl"))
                                : null;
                long tokens = 0;
                long nanos = 0;
                long epNanos = 0;
                boolean warned = false;
                for (int step = 0; step < opts.steps(); step++) {
                    if (stopAgreed(group, stop, trainer.getManager())) {
                        log.printf(Locale.ROOT, "stopping at step %d on request%n", step);
                        break;
                    }
                    TokenBatch b =
                            source.batch(step, opts.batch(), opts.seqLen())
                                    .shard(group.rank(), group.worldSize());
                    StepResult r;
                    try (NDManager sm = trainer.getManager().newSubManager()) {
                        Shape shape = new Shape(b.batch(), b.seqLen());
                        NDList data = new NDList(sm.create(b.inputs(), shape));
                        NDList labels = new NDList(sm.create(b.labels(), shape));
                        if (observer == null) {
                            r = ep.step(data, labels);
                        } else {
                            int at = step;
                            r = ep.stepWithGradientHook(data, labels,
                                    g -> observer.gradients(at, ep, g));
                        }
                    }
                    if (observer != null) {
                        observer.stepDone(step, ep, r);
                    }
                    losses.add(r.loss());
                    StepRecord rec =
                            new StepRecord(
                                    step + 1,
                                    r.loss(),
                                    lr.getNewValue(step + 1),
                                    r.gradNorm(),
                                    r.tokens() * group.worldSize() / (r.stepNanos() / 1e9),
                                    r.epBytes(),
                                    r.epNanos() / 1e6,
                                    r.maxLoadImbalance(),
                                    r.expertLoad());
                    records.add(rec);
                    if (metrics != null) {
                        metrics.write(rec);
                    }
                    if (r.epShare() > 0.2 && step >= 2 && !warned) {
                        warned = true;
                        log.printf(
                                Locale.ROOT,
                                "warning: EP communication took %.0f%% of step %d (over 20%% of"
                                        + " the step): fewer ranks per host or a narrower wire"
                                        + " format may pay%n",
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
                }
                if (metrics != null) {
                    metrics.close();
                    Plots.lossCurves(
                            Map.of("pretrain", records), "djl-moe pretrain",
                            opts.runDir().resolve("loss.png"));
                    Plots.expertLoad(
                            records, "expert load, first MoE layer",
                            opts.runDir().resolve("expert-load.png"));
                    log.println("wrote " + opts.runDir().resolve("metrics.jsonl") + ", loss.png,"
                            + " expert-load.png");
                }
                int tail = Math.max(1, losses.size() / 10);
                float fin = 0;
                for (int i = losses.size() - tail; i < losses.size(); i++) {
                    fin += losses.get(i);
                }
                fin /= tail;
                double tps = nanos == 0 ? 0 : tokens / (nanos / 1e9);
                Result res =
                        new Result(losses, losses.get(0), fin, tps,
                                nanos == 0 ? 0 : (double) epNanos / nanos);
                log.printf(
                        Locale.ROOT,
                        "done: loss %.4f -> %.4f (unigram baseline %.4f), %.0f tokens/s, EP %.1f%%"
                                + " of step time%n",
                        res.firstLoss(),
                        res.finalLoss(),
                        source.unigramEntropy(),
                        res.tokensPerSecond(),
                        100 * res.epShare());
                return res;
            }
        }
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
