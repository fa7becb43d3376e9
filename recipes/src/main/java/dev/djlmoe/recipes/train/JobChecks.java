/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.train;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.util.ArrayList;
import java.util.List;

/** The checks of a training job that need no process group: settings, EP size, data and model. */
public final class JobChecks {

    private JobChecks() {}

    /**
     * Checks that a job can run at an EP size, before any process group is formed.
     *
     * @param job the job
     * @param worldSize W
     * @throws IllegalArgumentException naming the setting, its value and the limit
     */
    public static void checkJob(Pretrain.Job job, int worldSize) {
        HfMoeConfig c = job.config();
        PretrainOptions opts = job.opts();
        TokenSource data = job.data();
        opts.validate();
        checkEpSize(opts, c.numExperts(), worldSize);
        if (c.vocabSize() < data.vocabSize()) {
            throw new IllegalArgumentException(
                    "the model's vocab_size "
                            + c.vocabSize()
                            + " is smaller than the data's vocabulary "
                            + data.vocabSize());
        }
        data.checkBatch(opts.batch(), opts.seqLen());
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
}
