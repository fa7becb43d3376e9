/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.EpContext;

/**
 * Where the blocks of this package find the staged backward's tape: the running training step's
 * tape of their {@link EpContext}, and nowhere else. A block never receives a tape through its
 * forward arguments, so a caller cannot hand it a stale or foreign one.
 */
final class StepTape {

    private StepTape() {}

    /**
     * Returns the tape a block records on in this forward pass.
     *
     * @param context the block's EP context, or null without expert parallelism
     * @param training whether the forward pass is a training one
     * @param block the block's name, for the exception
     * @return the context's active tape in a training forward, else null
     * @throws IllegalStateException in a training forward that autograd records, with a context but
     *     no active tape (the step did not go through {@code EpContext.beginTape()})
     */
    static Tape of(EpContext context, boolean training, String block) {
        if (!training || context == null) {
            return null;
        }
        Tape tape = context.tape();
        if (tape == null && Autograd.isRecording()) {
            throw new IllegalStateException(
                    block
                            + " runs in training mode with expert parallelism but no tape is"
                            + " active: run the step through EpTrainer or EpContext.beginTape()");
        }
        return tape;
    }
}
