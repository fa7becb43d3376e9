/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.Trainer;
import ai.djl.training.dataset.Batch;
import ai.djl.training.listener.TrainingListener;
import ai.djl.translate.Batchifier;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import java.util.List;
import java.util.Locale;

/**
 * The step loop of a run: from the session's first step to {@code --steps}, each step on this
 * rank's share of the step's global batch, with the engine's random generator re-seeded from {@code
 * (seed, step)} first, so a resumed run repeats an uninterrupted one bit for bit.
 *
 * <p>The loop tells two sets of DJL {@link TrainingListener}s what happens. The run's own listeners
 * (metrics, progress, checkpoints, ...) get {@code onTrainingBegin} before the first step, {@code
 * onTrainingBatch} after each step (in the order given; the data is a {@link StepData}), and {@code
 * onTrainingEnd} when the loop ends by finishing or by a stop request, in reverse order, as nested
 * resources close: a listener given before another sees what the later one produced at the end.
 * After a failure they get no {@code onTrainingEnd} (no checkpoint of a failed step is written);
 * the ones that are {@link AutoCloseable} are closed in every case. The DJL trainer's own listeners
 * (those of the job) get {@code onTrainingBatch} after each step and {@code onEpoch} once when the
 * run has finished all its steps, through {@link Trainer#notifyListeners}; the trainer itself tells
 * them of the training's begin and end.
 *
 * <p>Between steps every rank learns whether any rank's stop signal was raised, so all stop at the
 * same step.
 */
public final class TrainingLoop {

    private final TrainingRun run;
    private final List<TrainingListener> listeners;
    private final StopSignal stop;
    private final Pretrain.StepObserver observer;

    /**
     * Creates the loop of a run.
     *
     * @param run the run
     * @param listeners the run's own listeners, in step order
     * @param stop polled between steps
     * @param observer sees each step's gradients and figures, or null
     */
    public TrainingLoop(
            TrainingRun run,
            List<TrainingListener> listeners,
            StopSignal stop,
            Pretrain.StepObserver observer) {
        this.run = run;
        this.listeners = List.copyOf(listeners);
        this.stop = stop;
        this.observer = observer;
    }

    /** Runs the steps (collective: every rank runs the loop alike). */
    public void run() {
        Trainer trainer = run.session().trainer();
        Throwable failure = null;
        try {
            for (TrainingListener l : listeners) {
                l.onTrainingBegin(trainer);
            }
            while (run.step() < run.opts().steps()) {
                if (stopAgreed(trainer.getManager())) {
                    run.log().printf(Locale.ROOT, "stopping at step %d on request%n", run.step());
                    run.stop();
                    break;
                }
                step(trainer);
            }
            for (int i = listeners.size() - 1; i >= 0; i--) {
                listeners.get(i).onTrainingEnd(trainer);
            }
            if (!run.stopped()) {
                trainer.notifyListeners(listener -> listener.onEpoch(trainer));
            }
        } catch (RuntimeException | Error e) {
            failure = e;
            throw e;
        } finally {
            closeListeners(failure);
        }
    }

    private void step(Trainer trainer) {
        PretrainOptions opts = run.opts();
        ProcessGroup group = run.session().group();
        EpTrainer ep = run.session().ep();
        long step = run.step();
        // Any random op in the step (none today; dropout one day) draws from a stream
        // that depends only on (seed, step), so a resumed run draws the same numbers.
        Engine.getInstance().setRandomSeed(stepSeed(opts.seed(), step));
        TokenBatch b =
                run.job()
                        .data()
                        .batch(step, opts.batch(), opts.seqLen())
                        .shard(group.rank(), group.worldSize());
        try (NDManager sm = trainer.getManager().newSubManager()) {
            Shape shape = new Shape(b.batch(), b.seqLen());
            NDList data = new NDList(sm.create(b.inputs(), shape));
            NDList labels = new NDList(sm.create(b.labels(), shape));
            StepResult r;
            if (observer == null || !observer.seesGradients()) {
                r = ep.step(data, labels);
            } else {
                r =
                        ep.stepWithGradientHook(
                                data, labels, g -> observer.gradients((int) step, ep, g));
            }
            if (observer != null) {
                observer.stepDone((int) step, ep, r);
            }
            run.stepDone(r);
            Batch batch =
                    new Batch(
                            sm,
                            data,
                            labels,
                            b.batch(),
                            Batchifier.STACK,
                            Batchifier.STACK,
                            step,
                            opts.steps());
            StepData done = new StepData(batch, step, r);
            for (TrainingListener l : listeners) {
                l.onTrainingBatch(trainer, done);
            }
            trainer.notifyListeners(listener -> listener.onTrainingBatch(trainer, done));
        }
    }

    /** Every rank learns whether any rank was asked to stop, so all stop at the same step. */
    private boolean stopAgreed(NDManager m) {
        ProcessGroup group = run.session().group();
        float mine = stop.requested() ? 1f : 0f;
        if (group.worldSize() == 1) {
            return mine > 0;
        }
        try (NDArray flag = m.create(new float[] {mine})) {
            group.allReduceSum(flag);
            return flag.getFloat() > 0;
        }
    }

    /** Closes the listeners that hold files; adds their failures to the loop's, if any. */
    private void closeListeners(Throwable failure) {
        RuntimeException first = null;
        for (int i = listeners.size() - 1; i >= 0; i--) {
            if (listeners.get(i) instanceof AutoCloseable c) {
                try {
                    c.close();
                } catch (Exception e) {
                    RuntimeException r =
                            e instanceof RuntimeException re ? re : new IllegalStateException(e);
                    if (failure != null) {
                        failure.addSuppressed(r);
                    } else if (first == null) {
                        first = r;
                    } else {
                        first.addSuppressed(r);
                    }
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    /**
     * The seed of the engine's generator for a step.
     *
     * @param seed the run's seed
     * @param step the step's index
     * @return the seed, non-negative
     */
    static int stepSeed(long seed, long step) {
        long h = seed * 0x9E3779B97F4A7C15L + step * 0xBF58476D1CE4E5B9L;
        h ^= h >>> 31;
        h *= 0x94D049BB133111EBL;
        h ^= h >>> 29;
        return (int) (h & 0x7FFFFFFF);
    }
}
