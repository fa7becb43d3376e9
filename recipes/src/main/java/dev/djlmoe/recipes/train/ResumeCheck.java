/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Compares a job with the checkpoint it resumes from: the command, the settings that decide the
 * numbers, the data, the model and the step must match; a new step count or EP size only warns.
 */
public final class ResumeCheck {

    private ResumeCheck() {}

    /**
     * Checks a job against a checkpoint's state.
     *
     * @param state the checkpoint's training state
     * @param job the job that resumes
     * @param ckpt the checkpoint directory (for messages and its config.json)
     * @param worldSize this run's EP size
     * @return warnings for the run's log (a changed step count or EP size)
     * @throws IllegalArgumentException naming the flag that differs, both values and the fix
     * @throws IOException when the checkpoint's config.json cannot be read
     */
    public static List<String> check(
            TrainingCheckpoint.State state, Pretrain.Job job, Path ckpt, int worldSize)
            throws IOException {
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

    /** Whether a stored setting equals the current one (numbers as doubles or as floats). */
    private static boolean same(Object a, Object b) {
        if (a instanceof Number x && b instanceof Number y) {
            return x.doubleValue() == y.doubleValue()
                    || (float) x.doubleValue() == (float) y.doubleValue();
        }
        return Objects.equals(a, b);
    }
}
