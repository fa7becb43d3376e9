/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.train.StepResult;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The state of a run that the loop and its listeners share (DJL's {@code onTrainingEnd} carries
 * only the trainer, so the listeners read here how the run ended): the job, the session, where rank
 * 0's log goes, the steps done, whether the run was stopped, the losses and throughput so far, and
 * what the end-of-run listeners produced (the last checkpoint, the held-out loss).
 */
public final class TrainingRun {

    private final Pretrain.Job job;
    private final TrainingSession session;
    private final PrintStream log;
    private final List<Float> losses = new ArrayList<>();
    private long step;
    private boolean stopped;
    private long tokens;
    private long nanos;
    private long epNanos;
    private Path lastCheckpoint;
    private double heldOutLoss = Double.NaN;

    /**
     * Creates the state of a run that starts at the session's first step.
     *
     * @param job the job
     * @param session what it trains with
     * @param log where this rank's progress goes (a null stream on ranks other than 0)
     */
    public TrainingRun(Pretrain.Job job, TrainingSession session, PrintStream log) {
        this.job = job;
        this.session = session;
        this.log = log;
        this.step = session.start();
    }

    /**
     * Returns the job.
     *
     * @return the job
     */
    public Pretrain.Job job() {
        return job;
    }

    /**
     * Returns the job's settings.
     *
     * @return the options
     */
    public PretrainOptions opts() {
        return job.opts();
    }

    /**
     * Returns what the run trains with.
     *
     * @return the session
     */
    public TrainingSession session() {
        return session;
    }

    /**
     * Returns where progress goes.
     *
     * @return rank 0's output, a null stream elsewhere
     */
    public PrintStream log() {
        return log;
    }

    /**
     * Returns whether this is rank 0, the one that writes metrics and plots.
     *
     * @return true on rank 0
     */
    public boolean lead() {
        return session.group().rank() == 0;
    }

    /**
     * Returns the EP size.
     *
     * @return W
     */
    public int worldSize() {
        return session.group().worldSize();
    }

    /**
     * Returns the steps done before this process started.
     *
     * @return 0, or the resumed checkpoint's step
     */
    public long start() {
        return session.start();
    }

    /**
     * Returns the steps done so far (the next step's index).
     *
     * @return the steps done
     */
    public long step() {
        return step;
    }

    /**
     * Returns whether the run was stopped before its last step.
     *
     * @return true after a stop request
     */
    public boolean stopped() {
        return stopped;
    }

    /**
     * Returns the loss of every step this process ran.
     *
     * @return the losses, in step order (read-only)
     */
    public List<Float> losses() {
        return Collections.unmodifiableList(losses);
    }

    /**
     * Returns the tokens per second over the steps this process ran.
     *
     * @return tokens per second over all ranks, or 0 before any step
     */
    public double tokensPerSecond() {
        return nanos == 0 ? 0 : tokens / (nanos / 1e9);
    }

    /**
     * Returns the share of step time spent in EP dispatch and combine.
     *
     * @return the share in [0, 1], or 0 before any step
     */
    public double epShare() {
        return nanos == 0 ? 0 : (double) epNanos / nanos;
    }

    /**
     * Returns the last checkpoint written.
     *
     * @return the checkpoint, or null
     */
    public Path lastCheckpoint() {
        return lastCheckpoint;
    }

    /**
     * Returns the loss on held-out data at the end.
     *
     * @return the loss, or NaN when not measured
     */
    public double heldOutLoss() {
        return heldOutLoss;
    }

    /**
     * Records a finished step (the loop calls it).
     *
     * @param result the step's figures
     */
    void stepDone(StepResult result) {
        losses.add(result.loss());
        tokens += result.tokens() * worldSize();
        nanos += result.stepNanos();
        epNanos += result.epNanos();
        step++;
    }

    /** Records that the run stops before its last step (the loop calls it). */
    void stop() {
        stopped = true;
    }

    /**
     * Records a checkpoint written.
     *
     * @param checkpoint its directory
     */
    void checkpointWritten(Path checkpoint) {
        lastCheckpoint = checkpoint;
    }

    /**
     * Records the held-out loss.
     *
     * @param loss the loss (NaN when the held-out data could not be evaluated)
     */
    void heldOutMeasured(double loss) {
        heldOutLoss = loss;
    }
}
