package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.NormalInitializer;
import ai.djl.util.PairList;

/**
 * A dense SwiGLU feed-forward block {@code y = down(silu(gate(x)) * up(x))} without biases, as in
 * Llama and DeepSeek's dense layers and shared experts ({@code DeepseekV3MLP}).
 *
 * <p>For DeepSeek-V3's shared experts use one block of intermediate size {@code n_shared_experts *
 * moe_intermediate_size}.
 *
 * <p>Parameters (names and shapes as the Hugging Face {@code *.weight} tensors):
 *
 * <ul>
 *   <li>{@code gate_proj}: [I, H]
 *   <li>{@code up_proj}: [I, H]
 *   <li>{@code down_proj}: [H, I]
 * </ul>
 *
 * <p>Each is initialised from a normal distribution with standard deviation {@code 1/sqrt(fan_in)}
 * (H for gate/up, I for down) unless {@link #setInitializer} says otherwise.
 *
 * <p>Shapes: input x [..., H] float32, output y [..., H] float32.
 *
 * <p>The block should be constructed using {@link SwiGluMlp.Builder}.
 */
public class SwiGluMlp extends AbstractBlock {

    /** Name of the gate projection parameter. */
    public static final String GATE_PROJ = "gate_proj";

    /** Name of the up projection parameter. */
    public static final String UP_PROJ = "up_proj";

    /** Name of the down projection parameter. */
    public static final String DOWN_PROJ = "down_proj";

    private static final byte VERSION = 1;

    private final long hiddenSize;
    private final long intermediateSize;
    private final Parameter gateProj;
    private final Parameter upProj;
    private final Parameter downProj;

    /**
     * Creates the block; use {@link #builder()}.
     *
     * @param builder the validated builder
     */
    @SuppressWarnings("this-escape")
    protected SwiGluMlp(Builder builder) {
        super(VERSION);
        hiddenSize = builder.hiddenSize;
        intermediateSize = builder.intermediateSize;
        float inStd = (float) (1.0 / Math.sqrt(hiddenSize));
        float downStd = (float) (1.0 / Math.sqrt(intermediateSize));
        gateProj = addParameter(weight(GATE_PROJ, inStd, new Shape(intermediateSize, hiddenSize)));
        upProj = addParameter(weight(UP_PROJ, inStd, new Shape(intermediateSize, hiddenSize)));
        downProj =
                addParameter(weight(DOWN_PROJ, downStd, new Shape(hiddenSize, intermediateSize)));
    }

    static Parameter weight(String name, float std, Shape shape) {
        return Parameter.builder()
                .setName(name)
                .setType(Parameter.Type.WEIGHT)
                .optInitializer(new NormalInitializer(std))
                .optShape(shape)
                .build();
    }

    /**
     * Returns the hidden size H.
     *
     * @return the hidden size
     */
    public long getHiddenSize() {
        return hiddenSize;
    }

    /**
     * Returns the intermediate size I.
     *
     * @return the intermediate size
     */
    public long getIntermediateSize() {
        return intermediateSize;
    }

    /** {@inheritDoc} */
    @Override
    protected NDList forwardInternal(
            ParameterStore parameterStore,
            NDList inputs,
            boolean training,
            PairList<String, Object> params) {
        NDArray x = inputs.get(0);
        return swiGlu(
                x,
                parameterStore.getValue(gateProj, x.getDevice(), training),
                parameterStore.getValue(upProj, x.getDevice(), training),
                parameterStore.getValue(downProj, x.getDevice(), training));
    }

    /** {@inheritDoc} */
    @Override
    public Shape[] getOutputShapes(Shape[] inputs) {
        return new Shape[] {inputs[0]};
    }

    /** {@inheritDoc} */
    @Override
    protected void beforeInitialize(Shape... inputShapes) {
        super.beforeInitialize(inputShapes);
        Shape input = inputShapes[0];
        if (input.dimension() < 1 || input.get(input.dimension() - 1) != hiddenSize) {
            throw new IllegalArgumentException(
                    "SwiGluMlp input must have shape [..., " + hiddenSize + "], got " + input);
        }
    }

    /**
     * Applies SwiGLU: {@code y = (silu(x gate^T) * (x up^T)) down^T}.
     *
     * @param x input: [..., H] float32
     * @param gateProj gate_proj: [I, H]
     * @param upProj up_proj: [I, H]
     * @param downProj down_proj: [H, I]
     * @return output y: [..., H]
     * @throws IllegalArgumentException on a wrong shape or type
     */
    public static NDList swiGlu(NDArray x, NDArray gateProj, NDArray upProj, NDArray downProj) {
        Shape xs = x.getShape();
        if (x.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException("x must be float32, got " + x.getDataType());
        }
        if (gateProj.getShape().dimension() != 2) {
            throw new IllegalArgumentException(
                    "gateProj must have shape [I, H], got " + gateProj.getShape());
        }
        long i = gateProj.getShape().get(0);
        long h = gateProj.getShape().get(1);
        if (xs.dimension() < 1 || xs.get(xs.dimension() - 1) != h) {
            throw new IllegalArgumentException("x must have shape [..., " + h + "], got " + xs);
        }
        if (!upProj.getShape().equals(new Shape(i, h))) {
            throw new IllegalArgumentException(
                    "upProj must have shape [" + i + ", " + h + "], got " + upProj.getShape());
        }
        if (!downProj.getShape().equals(new Shape(h, i))) {
            throw new IllegalArgumentException(
                    "downProj must have shape [" + h + ", " + i + "], got " + downProj.getShape());
        }
        return new NDList(swiGluUnchecked(x, gateProj, upProj, downProj));
    }

    /**
     * SwiGLU without argument checks; closes its temporaries (autograd keeps what it needs).
     *
     * @param x input: [..., H]
     * @param gateProj gate_proj: [I, H]
     * @param upProj up_proj: [I, H]
     * @param downProj down_proj: [H, I]
     * @return y: [..., H]
     */
    static NDArray swiGluUnchecked(NDArray x, NDArray gateProj, NDArray upProj, NDArray downProj) {
        NDArray gate = Linear.linear(x, gateProj).singletonOrThrow(); // [..., I]
        NDArray up = Linear.linear(x, upProj).singletonOrThrow(); // [..., I]
        NDArray sg = silu(gate); // [..., I]
        NDArray act = sg.mul(up); // [..., I]
        sg.close();
        gate.close();
        up.close();
        NDArray y = Linear.linear(act, downProj).singletonOrThrow(); // [..., H]
        act.close();
        return y;
    }

    /**
     * SiLU (swish with beta 1): {@code x * sigmoid(x)}.
     *
     * @param x input
     * @return {@code x * sigmoid(x)}, a new array
     */
    static NDArray silu(NDArray x) {
        NDArray sig = x.getNDArrayInternal().sigmoid();
        NDArray out = sig.mul(x);
        sig.close();
        return out;
    }

    /**
     * Creates a builder to build a {@code SwiGluMlp}.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /** The Builder to construct a {@link SwiGluMlp}. */
    public static final class Builder {

        private long hiddenSize;
        private long intermediateSize;

        Builder() {}

        /**
         * Sets the hidden size H (input and output width). Required.
         *
         * @param hiddenSize the hidden size, at least 1
         * @return this Builder
         */
        public Builder setHiddenSize(long hiddenSize) {
            this.hiddenSize = hiddenSize;
            return this;
        }

        /**
         * Sets the intermediate size I. Required.
         *
         * @param intermediateSize the intermediate size, at least 1
         * @return this Builder
         */
        public Builder setIntermediateSize(long intermediateSize) {
            this.intermediateSize = intermediateSize;
            return this;
        }

        /**
         * Returns the constructed {@code SwiGluMlp}.
         *
         * @return the constructed {@code SwiGluMlp}
         * @throws IllegalArgumentException naming the argument and its value if a size is not
         *     positive
         */
        public SwiGluMlp build() {
            if (hiddenSize < 1) {
                throw new IllegalArgumentException("hiddenSize must be >= 1, got " + hiddenSize);
            }
            if (intermediateSize < 1) {
                throw new IllegalArgumentException(
                        "intermediateSize must be >= 1, got " + intermediateSize);
            }
            return new SwiGluMlp(this);
        }
    }
}
