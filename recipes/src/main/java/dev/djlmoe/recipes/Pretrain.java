/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import ai.djl.ndarray.NDArray;
import ai.djl.training.listener.TrainingListener;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.recipes.train.CheckpointListener;
import dev.djlmoe.recipes.train.HeldOutEvaluationListener;
import dev.djlmoe.recipes.train.JobChecks;
import dev.djlmoe.recipes.train.MetricsListener;
import dev.djlmoe.recipes.train.ModelExportListener;
import dev.djlmoe.recipes.train.PlotListener;
import dev.djlmoe.recipes.train.ProgressListener;
import dev.djlmoe.recipes.train.ResumePlan;
import dev.djlmoe.recipes.train.TrainingLoop;
import dev.djlmoe.recipes.train.TrainingRun;
import dev.djlmoe.recipes.train.TrainingSession;
import dev.djlmoe.train.CheckpointableAdamW;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The training job of {@code pretrain} and {@code finetune}: an MoE language model trained with the
 * EP training step ({@link EpTrainer}), AdamW ({@link CheckpointableAdamW}) with warm-up and cosine
 * decay, metrics, plots, checkpoints and exact resume. A run validates the job ({@link JobChecks}),
 * sets up ({@link ResumePlan}, {@link TrainingSession}) and runs the step loop ({@link
 * TrainingLoop}) with one DJL training listener per concern: metrics, progress, checkpoints, the
 * exported model, held-out evaluation and plots. The job may add DJL {@link TrainingListener}s of
 * its own ({@link Job#withListeners}).
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

    /** Global batches of held-out data evaluated at the end of a run (when the data have any). */
    public static final int HELD_OUT_BATCHES = HeldOutEvaluationListener.BATCHES;

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
     * @param listeners DJL training listeners of the job's own, given to the DJL trainer: they get
     *     {@code onTrainingBegin} and {@code onTrainingEnd} from it, {@code onTrainingBatch} after
     *     every step (the batch is this rank's share; no labels or predictions), {@code
     *     onValidationBatch} for each held-out batch (this rank's labels and logits) and {@code
     *     onEpoch} once when the run finishes all its steps
     */
    public record Job(
            String command,
            HfMoeConfig config,
            Path initFrom,
            TokenSource data,
            PretrainOptions opts,
            Path output,
            List<Path> extraFiles,
            Map<String, Object> extra,
            List<TrainingListener> listeners) {

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
            listeners = listeners == null ? List.of() : List.copyOf(listeners);
        }

        /**
         * A job without listeners of its own.
         *
         * @param command {@code pretrain} or {@code finetune}
         * @param config the Hugging Face model configuration
         * @param initFrom a Hugging Face checkpoint to start from, or null
         * @param data the training data
         * @param opts the settings
         * @param output where the trained model goes, or null
         * @param extraFiles files copied into every checkpoint and the output
         * @param extra more facts recorded in checkpoints
         */
        public Job(
                String command,
                HfMoeConfig config,
                Path initFrom,
                TokenSource data,
                PretrainOptions opts,
                Path output,
                List<Path> extraFiles,
                Map<String, Object> extra) {
            this(command, config, initFrom, data, opts, output, extraFiles, extra, List.of());
        }

        /**
         * Returns a copy of this job with more DJL training listeners of its own.
         *
         * @param more the listeners
         * @return the new job
         */
        public Job withListeners(TrainingListener... more) {
            List<TrainingListener> all = new ArrayList<>(listeners);
            all.addAll(Arrays.asList(more));
            return new Job(command, config, initFrom, data, opts, output, extraFiles, extra, all);
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
        try {
            return train(job, out, stop, observer, env);
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

    // ---- checks before any rank starts -----------------------------------------------------

    /**
     * Checks that a job can run at an EP size, before any process group is formed ({@link
     * JobChecks#checkJob}).
     *
     * @param job the job
     * @param worldSize W
     * @throws IllegalArgumentException naming the setting, its value and the limit
     */
    public static void checkJob(Job job, int worldSize) {
        JobChecks.checkJob(job, worldSize);
    }

    /**
     * Checks the settings that depend on the EP size alone ({@link JobChecks#checkEpSize}).
     *
     * @param opts the settings
     * @param experts the model's routed experts E
     * @param worldSize W
     * @throws IllegalArgumentException naming the setting, its value and the EP sizes that work
     */
    public static void checkEpSize(PretrainOptions opts, int experts, int worldSize) {
        JobChecks.checkEpSize(opts, experts, worldSize);
    }

    /**
     * Checks that a count splits evenly over the ranks ({@link JobChecks#checkDivides}).
     *
     * @param what what is split, with its count, e.g. {@code "the model's 8 routed experts"}
     * @param count the count
     * @param worldSize the EP size W
     * @param why how the ranks share it, e.g. {@code "each rank holds E / W experts"}
     * @throws IllegalArgumentException naming both numbers and the EP sizes that work
     */
    public static void checkDivides(String what, int count, int worldSize, String why) {
        JobChecks.checkDivides(what, count, worldSize, why);
    }

    // ---- the run ---------------------------------------------------------------------------

    /** Validates, sets up, runs the loop with the run's listeners and reports. */
    private static Result train(
            Job job, PrintStream out, StopSignal stop, StepObserver observer, RankEnvironment env)
            throws IOException {
        JobChecks.checkJob(job, env.worldSize());
        ResumePlan plan = ResumePlan.prepare(job, env);
        PrintStream log = env.rank() == 0 ? out : new PrintStream(OutputStream.nullOutputStream());
        try (TrainingSession session = TrainingSession.open(job, plan, env)) {
            printSetUp(job, session, plan, log);
            TrainingRun run = new TrainingRun(job, session, log);
            new TrainingLoop(run, listeners(run), stop, observer).run();
            return report(run);
        }
    }

    /**
     * The run's own listeners in step order (they end in reverse order: the checkpoint first, the
     * plots last, after the held-out loss was measured and recorded).
     */
    private static List<TrainingListener> listeners(TrainingRun run) {
        PretrainOptions opts = run.opts();
        List<TrainingListener> l = new ArrayList<>();
        if (run.lead() && opts.runDir() != null) {
            Path metricsPath = opts.runDir().resolve("metrics.jsonl");
            MetricsListener metrics = new MetricsListener(run, metricsPath);
            l.add(new PlotListener(run, opts.runDir(), metricsPath, metrics::records));
            l.add(metrics);
        }
        l.add(new ProgressListener(run));
        l.add(new HeldOutEvaluationListener(run));
        if (run.job().output() != null) {
            l.add(new ModelExportListener(run, run.job().output()));
        }
        Path ckptRoot = opts.effectiveCheckpointDir();
        if (ckptRoot != null) {
            l.add(new CheckpointListener(run, ckptRoot));
        }
        return l;
    }

    private static void printSetUp(
            Job job, TrainingSession session, ResumePlan plan, PrintStream log) {
        PretrainOptions opts = job.opts();
        HfMoeConfig cfg = job.config();
        log.printf(
                Locale.ROOT,
                "model: %s, %d layers, H=%d, %d experts (top-%d, %d shared), %,d"
                        + " parameters per rank; EP size %d, precision %s%n",
                cfg.family().modelType(),
                cfg.numLayers(),
                cfg.hiddenSize(),
                cfg.numExperts(),
                cfg.topK(),
                cfg.numSharedExperts(),
                session.parametersPerRank(),
                session.group().worldSize(),
                opts.useEp() ? opts.precision().flag() : "none (local)");
        if (job.initFrom() != null) {
            log.println("weights: " + job.initFrom());
        }
        log.println("data: " + job.data().describe());
        log.printf(
                Locale.ROOT,
                "data: unigram baseline %.4f nats/token (the loss of predicting each token"
                        + " from its frequency alone)%n",
                job.data().unigramEntropy());
        for (String w : plan.warnings()) {
            log.println("warning: " + w);
        }
        if (plan.from() != null) {
            log.printf(
                    Locale.ROOT,
                    "resumed from %s at step %d of %d%n",
                    plan.from(),
                    session.start(),
                    opts.steps());
        }
    }

    /** The run's figures, and the closing lines of its log. */
    private static Result report(TrainingRun run) {
        List<Float> losses = new ArrayList<>(run.losses());
        PrintStream log = run.log();
        TokenSource source = run.job().data();
        if (losses.isEmpty()) {
            log.printf(
                    Locale.ROOT,
                    "done: no steps run (at step %d of %d)%n",
                    run.step(),
                    run.opts().steps());
            return new Result(
                    losses,
                    Float.NaN,
                    Float.NaN,
                    0,
                    0,
                    run.start(),
                    run.step(),
                    run.stopped(),
                    source.unigramEntropy(),
                    run.heldOutLoss(),
                    run.lastCheckpoint());
        }
        int tail = Math.max(1, losses.size() / 10);
        float fin = 0;
        for (int i = losses.size() - tail; i < losses.size(); i++) {
            fin += losses.get(i);
        }
        fin /= tail;
        Result res =
                new Result(
                        losses,
                        losses.get(0),
                        fin,
                        run.tokensPerSecond(),
                        run.epShare(),
                        run.start(),
                        run.step(),
                        run.stopped(),
                        source.unigramEntropy(),
                        run.heldOutLoss(),
                        run.lastCheckpoint());
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
        double heldOut = run.heldOutLoss();
        if (!Double.isNaN(heldOut)) {
            double heldUnigram = source.heldOut().unigramEntropy();
            double below = heldUnigram - heldOut;
            log.printf(
                    Locale.ROOT,
                    "held-out loss %.4f nats/token vs unigram baseline %.4f (%.2f nats %s)%n",
                    heldOut,
                    heldUnigram,
                    Math.abs(below),
                    below >= 0 ? "below" : "above");
        }
        return res;
    }
}
