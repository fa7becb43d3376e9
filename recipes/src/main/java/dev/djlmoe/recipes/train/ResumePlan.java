/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Where a run starts: the checkpoint it resumes (checked against the job) or a fresh start, with
 * the checkpoint directory tidied first (leftovers of an interrupted save removed, an earlier run's
 * checkpoints moved aside so a fresh run never replaces them).
 *
 * @param from the checkpoint to resume from, or null for a fresh start
 * @param state that checkpoint's training state, or null
 * @param warnings what the run's log should say about it
 */
public record ResumePlan(Path from, TrainingCheckpoint.State state, List<String> warnings) {

    /**
     * Prepares the start of a job on this rank (rank 0 alone touches the checkpoint directory).
     *
     * @param job the job
     * @param env this rank's place in the job
     * @return the plan
     * @throws IOException when a checkpoint cannot be read or moved
     * @throws IllegalArgumentException when the resumed checkpoint does not fit the job, or the
     *     model to fine-tune from is missing
     */
    public static ResumePlan prepare(Pretrain.Job job, RankEnvironment env) throws IOException {
        Path ckptRoot = job.opts().effectiveCheckpointDir();
        Path from = null;
        TrainingCheckpoint.State state = null;
        List<String> warnings = new ArrayList<>();
        if (env.rank() == 0 && ckptRoot != null) {
            // What a killed job's interrupted save left (never taken for a checkpoint).
            warnings.addAll(TrainingCheckpoint.removeLeftovers(ckptRoot));
        }
        if (job.opts().resume() != null) {
            from = TrainingCheckpoint.resolve(job.opts().resume(), warnings);
            state = TrainingCheckpoint.readState(from);
            warnings.addAll(ResumeCheck.check(state, job, from, env.worldSize()));
        }
        if (env.rank() == 0 && from == null && ckptRoot != null) {
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
        return new ResumePlan(from, state, List.copyOf(warnings));
    }
}
