/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.util.Map;

/**
 * A held-out evaluation in a run's metrics file: the loss on held-out data after a step.
 *
 * @param step the step after which it was measured, 1-based
 * @param loss the held-out loss in nats per token
 * @param unigramBaseline the unigram baseline of the held-out data, or NaN when unknown
 */
public record HeldOutRecord(long step, double loss, double unigramBaseline) {

    /** The field that marks a held-out line (step lines have {@code "loss"} instead). */
    static final String MARK = "held_out_loss";

    /**
     * Returns the record as one line of JSON.
     *
     * @return the JSON object, no newline
     */
    public String toJson() {
        return "{\"step\":"
                + step
                + ",\""
                + MARK
                + "\":"
                + StepRecord.num(loss)
                + ",\"held_out_unigram_baseline\":"
                + StepRecord.num(unigramBaseline)
                + "}";
    }

    /** Whether a parsed metrics line is a held-out line. */
    static boolean isHeldOut(Map<String, Object> o) {
        return o.containsKey(MARK);
    }

    /** The record of a parsed held-out line. */
    static HeldOutRecord fromJson(Map<String, Object> o) {
        return new HeldOutRecord(
                (long) StepRecord.field(o, "step"),
                StepRecord.field(o, MARK),
                o.containsKey("held_out_unigram_baseline")
                        ? StepRecord.field(o, "held_out_unigram_baseline")
                        : Double.NaN);
    }
}
