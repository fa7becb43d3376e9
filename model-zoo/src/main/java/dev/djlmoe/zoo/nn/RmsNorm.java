/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.ConstantInitializer;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;

/**
 * Root-mean-square layer normalisation: {@code y = x / sqrt(mean(x^2) + eps) * weight}, over the
 * last axis, computed in float32 (DJL has no RMSNorm).
 *
 * <p>Input {@code [..., H]}, output {@code [..., H]}; parameter {@code weight [H]} initialised to
 * ones.
 */
public final class RmsNorm extends AbstractBlock {

    private static final byte VERSION = 1;

    private final float eps;
    private final Parameter weight;

    private RmsNorm(Builder builder) {
        super(VERSION);
        eps = builder.eps;
        weight =
                addParameter(
                        Parameter.builder()
                                .setName("weight")
                                .setType(Parameter.Type.GAMMA)
                                .optInitializer(new ConstantInitializer(1f))
                                .build());
    }

    /**
     * Creates a builder.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray x = inputs.singletonOrThrow();
        return new NDList(rmsNorm(x, ps.getValue(weight, x.getDevice(), training), eps));
    }

    /**
     * Applies RMS normalisation.
     *
     * @param x {@code [..., H]}
     * @param weight {@code [H]}
     * @param eps added to the mean square
     * @return {@code [..., H]}
     */
    public static NDArray rmsNorm(NDArray x, NDArray weight, float eps) {
        NDArray ms = x.square().mean(new int[] {-1}, true); // [..., 1]
        return x.div(ms.add(Autograd.scalar(ms, eps)).sqrt()).mul(weight);
    }

    @Override
    public void prepare(Shape[] inputShapes) {
        Shape in = inputShapes[0];
        weight.setShape(new Shape(in.get(in.dimension() - 1)));
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0]};
    }

    /** Builds an {@link RmsNorm}. */
    public static final class Builder {
        private float eps = 1e-6f;

        Builder() {}

        /**
         * Sets epsilon (default 1e-6).
         *
         * @param eps a positive value
         * @return this builder
         */
        public Builder optEps(float eps) {
            this.eps = eps;
            return this;
        }

        /**
         * Builds the block.
         *
         * @return the block
         */
        public RmsNorm build() {
            if (!(eps > 0f)) {
                throw new IllegalArgumentException("RmsNorm: eps = " + eps + " must be > 0");
            }
            return new RmsNorm(this);
        }
    }
}
