/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import ai.djl.training.Trainer;
import ai.djl.training.listener.TrainingListener.BatchData;
import ai.djl.training.listener.TrainingListenerAdapter;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Writes a run's checkpoints (collective: every rank writes its experts and optimizer state): every
 * {@code --checkpoint-every} steps before the last, and once more when the run ends or is stopped,
 * unless the last step was just saved. A checkpoint holds the exact weights, AdamW state and the
 * facts a resume checks (settings, data fingerprint, seeds). A DJL training listener: {@code
 * onTrainingBatch} (with the step from {@link StepData}) and {@code onTrainingEnd}; it records each
 * checkpoint in {@link TrainingRun#lastCheckpoint()}.
 */
public final class CheckpointListener extends TrainingListenerAdapter {

    private final TrainingRun run;
    private final Path root;
    private long lastSaved;

    /**
     * Creates the listener of a run.
     *
     * @param run the run
     * @param root the checkpoint directory
     */
    public CheckpointListener(TrainingRun run, Path root) {
        this.run = run;
        this.root = root;
        this.lastSaved = run.start();
    }

    @Override
    public void onTrainingBatch(Trainer trainer, BatchData batchData) {
        if (!(batchData instanceof StepData s)) {
            return;
        }
        PretrainOptions opts = run.opts();
        long done = s.step() + 1;
        if (opts.checkpointEvery() > 0
                && done % opts.checkpointEvery() == 0
                && done < opts.steps()) {
            Path saved = save(done);
            run.log().println("checkpoint: " + saved);
        }
    }

    @Override
    public void onTrainingEnd(Trainer trainer) {
        long step = run.step();
        if (step > lastSaved) {
            Path saved = save(step);
            run.log()
                    .println(
                            "checkpoint: "
                                    + saved
                                    + (step < run.opts().steps()
                                            ? "  (continue with --resume " + root + ")"
                                            : ""));
        }
    }

    private Path save(long step) {
        Pretrain.Job job = run.job();
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
        rng.put("next_step_seed", (long) TrainingLoop.stepSeed(o.seed(), step));
        Map<String, Object> extra = new LinkedHashMap<>(job.extra());
        extra.put("model", job.config().toString());
        TrainingCheckpoint.State state =
                new TrainingCheckpoint.State(
                        step,
                        run.worldSize(),
                        job.command(),
                        o.trajectorySettings(),
                        data,
                        rng,
                        extra);
        TrainingSession session = run.session();
        try {
            Path saved =
                    TrainingCheckpoint.save(
                            root,
                            state,
                            session.model(),
                            session.optimizer(),
                            session.group(),
                            job.extraFiles(),
                            o.keepCheckpoints());
            lastSaved = step;
            run.checkpointWritten(saved);
            return saved;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
