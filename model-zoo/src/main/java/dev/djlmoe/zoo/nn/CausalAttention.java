/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.core.Linear;

/**
 * What the causal attention blocks here share besides {@link AttentionCore}: the model width, the
 * rotary embedding and how it turns queries and keys, the output shape, and the builder settings of
 * the same names.
 */
abstract class CausalAttention extends AbstractBlock implements CachedAttention {

    /** The model width H. */
    final long hiddenSize;

    /** The rotary embedding. */
    final RotaryEmbedding rotary;

    /**
     * Creates the block.
     *
     * @param version the block's parameter-file version
     * @param b the builder's shared settings
     */
    CausalAttention(byte version, BaseBuilder<?> b) {
        super(version);
        hiddenSize = b.hiddenSize;
        rotary = b.rotary;
    }

    /**
     * A projection.
     *
     * @param units its output size
     * @param bias whether it has a bias
     * @return the (uninitialised) block
     */
    static Linear linear(long units, boolean bias) {
        return Linear.builder().setUnits(units).optBias(bias).build();
    }

    /**
     * Turns queries or keys with the rotary embedding.
     *
     * @param x {@code [..., S, d]}
     * @param cosSin the cosines and sines of the positions, as {@link RotaryEmbedding#cosSin} or
     *     {@link KvCache#rope} give them
     * @return the rotated {@code x}
     */
    NDArray rotate(NDArray x, NDArray[] cosSin) {
        return RotaryEmbedding.apply(x, cosSin[0], cosSin[1], rotary.settings().layout());
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0]};
    }

    /**
     * The settings every attention builder has.
     *
     * @param <T> the concrete builder
     */
    abstract static class BaseBuilder<T extends BaseBuilder<T>> {
        long hiddenSize;
        boolean bias;
        RotaryEmbedding rotary;

        BaseBuilder() {}

        /**
         * Returns this builder as its own type.
         *
         * @return this
         */
        abstract T self();

        /**
         * Sets the model width H (required).
         *
         * @param h H
         * @return this builder
         */
        public T setHiddenSize(long h) {
            hiddenSize = h;
            return self();
        }

        /**
         * Sets the rotary embedding (required; the block's documentation names its size).
         *
         * @param rotary the shared rotary embedding
         * @return this builder
         */
        public T setRotary(RotaryEmbedding rotary) {
            this.rotary = rotary;
            return self();
        }

        /**
         * Sets {@code attention_bias} (default false); the block's documentation names the
         * projections that get a bias.
         *
         * @param bias {@code attention_bias}
         * @return this builder
         */
        public T optBias(boolean bias) {
            this.bias = bias;
            return self();
        }

        /**
         * Refuses a missing rotary embedding or one of the wrong size.
         *
         * @param block the block's name, for the message
         * @param dim the size the block rotates
         * @throws IllegalArgumentException naming the block and the size
         */
        void checkRotary(String block, long dim) {
            if (rotary == null || rotary.settings().dim() != dim) {
                throw new IllegalArgumentException(
                        block + ": setRotary needs a rotary embedding of size " + dim);
            }
        }
    }
}
