/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.autograd;

import ai.djl.ndarray.NDList;

/**
 * The vector-Jacobian product of an operation recorded on a {@link Tape}.
 *
 * <p>Given the gradients of the operation's recorded outputs (one per output, never null: outputs
 * that received no gradient get zeros), returns one gradient per recorded input, in order; an entry
 * may be {@code null} when that input gets no gradient.
 */
@FunctionalInterface
public interface Vjp {

    /**
     * Computes the gradients of the inputs.
     *
     * @param outputGrads gradients of the outputs, shaped like the outputs
     * @return gradients of the inputs, shaped like the inputs (entries may be null)
     */
    NDList apply(NDList outputGrads);
}
