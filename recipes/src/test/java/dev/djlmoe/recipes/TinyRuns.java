/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.djlmoe.recipes.data.CorpusSource;
import dev.djlmoe.recipes.data.TextCorpus;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

/** The precision tests' training run: the tiny preset on the embedded corpus, losses per step. */
final class TinyRuns {

    private TinyRuns() {}

    /**
     * Pre-trains the tiny preset on the embedded corpus (5% held out, seed 42) with {@code opts}.
     *
     * @param opts the run's options (steps, run directory, precision, device)
     * @return the loss of every step; fails the test, with the run's log, if a step is missing
     */
    static List<Float> losses(PretrainOptions opts) {
        CorpusSource src = new CorpusSource(TextCorpus.embedded(), 0.05, 42);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        Pretrain.Result r =
                Pretrain.run(
                        Pretrain.Job.pretrain(HfMoeConfig.preset("tiny"), src, opts),
                        new PrintStream(buf, true, StandardCharsets.UTF_8),
                        StopSignal.none(),
                        null);
        assertEquals(opts.steps(), r.losses().size(), buf.toString(StandardCharsets.UTF_8));
        return r.losses();
    }

    /** The mean of the last {@code tail} losses. */
    static double tailMean(List<Float> losses, int tail) {
        double sum = 0;
        for (int i = losses.size() - tail; i < losses.size(); i++) {
            sum += losses.get(i);
        }
        return sum / tail;
    }
}
