/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListener.BatchData;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.train.ProgressBar;
import dev.djlmoe.train.StepResult;
import java.util.Locale;

/**
 * Shows a run's progress: a bar redrawn in place on a terminal, a plain line every {@code
 * --log-every} steps elsewhere (loss, throughput, gradient norm, EP share, expert load), and a
 * one-time note when EP communication takes over a fifth of a step. A DJL training listener that
 * uses {@code onTrainingBatch} only, with the step from {@link StepData}.
 */
public final class ProgressListener extends TrainingListenerAdapter {

    private final TrainingRun run;
    private final ProgressBar bar;
    private boolean warned;

    /**
     * Creates the listener of a run.
     *
     * @param run the run (its log and step range)
     */
    public ProgressListener(TrainingRun run) {
        this.run = run;
        this.bar =
                new ProgressBar(
                        run.log(),
                        run.opts().steps(),
                        System.console() != null,
                        run.opts().logEvery(),
                        run.start());
    }

    @Override
    public void onTrainingBatch(Trainer trainer, BatchData batchData) {
        if (!(batchData instanceof StepData s)) {
            return;
        }
        long step = s.step();
        StepResult r = s.result();
        if (r.epShare() > 0.2 && step >= run.start() + 2 && !warned) {
            warned = true;
            run.log()
                    .printf(
                            Locale.ROOT,
                            "note: EP communication took %.0f%% of step %d (over 20%% of the"
                                    + " step): fewer ranks per host or a narrower wire format"
                                    + " may pay%n",
                            100 * r.epShare(),
                            step + 1);
        }
        bar.update(
                step + 1,
                r.loss(),
                r.tokens() * run.worldSize(),
                String.format(
                        Locale.ROOT,
                        "gnorm %.2f | EP %.1f%% | load max/mean %.2f",
                        r.gradNorm(),
                        100 * r.epShare(),
                        r.maxLoadImbalance()));
    }
}
