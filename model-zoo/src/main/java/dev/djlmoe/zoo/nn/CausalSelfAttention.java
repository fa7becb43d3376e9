/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;

/**
 * Plain multi-head causal self-attention with rotary position embeddings (half-split layout), no
 * biases: {@code o_proj(softmax(q k^T / sqrt(d) + causal) v)}.
 *
 * <p>Input {@code [B, S, H]}, output {@code [B, S, H]}. Children {@code q_proj}, {@code k_proj},
 * {@code v_proj}, {@code o_proj} ({@code [H, H]} each).
 *
 * @deprecated used only by the deprecated {@code MoeCausalLm}; the Hugging Face model uses {@link
 *     MultiHeadLatentAttention} or {@link GroupedQueryAttention} with {@link RotaryEmbedding}.
 */
@Deprecated
public final class CausalSelfAttention extends AbstractBlock {

    private static final byte VERSION = 1;

    private final int numHeads;
    private final long hiddenSize;
    private final float ropeTheta;
    private final Linear qProj;
    private final Linear kProj;
    private final Linear vProj;
    private final Linear oProj;

    private CausalSelfAttention(Builder b) {
        super(VERSION);
        numHeads = b.numHeads;
        hiddenSize = b.hiddenSize;
        ropeTheta = b.ropeTheta;
        qProj = addChildBlock("q_proj", Linear.builder().setUnits(hiddenSize).optBias(false).build());
        kProj = addChildBlock("k_proj", Linear.builder().setUnits(hiddenSize).optBias(false).build());
        vProj = addChildBlock("v_proj", Linear.builder().setUnits(hiddenSize).optBias(false).build());
        oProj = addChildBlock("o_proj", Linear.builder().setUnits(hiddenSize).optBias(false).build());
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
        NDArray x = inputs.singletonOrThrow(); // [B, S, H]
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        long d = hiddenSize / numHeads;
        NDArray q = heads(qProj.forward(ps, new NDList(x), training).head(), b, s, d);
        NDArray k = heads(kProj.forward(ps, new NDList(x), training).head(), b, s, d);
        NDArray v = heads(vProj.forward(ps, new NDList(x), training).head(), b, s, d);
        NDManager m = x.getManager();
        NDArray[] cosSin = Rope.cosSin(m, s, d, ropeTheta); // [S, d] each
        q = Rope.applyHalfSplit(q, cosSin[0], cosSin[1]);
        k = Rope.applyHalfSplit(k, cosSin[0], cosSin[1]);
        // Autograd.scalar, not mul(Number): DJL's Number overloads free the scalar autograd keeps.
        NDArray qk = q.matMul(k.transpose(0, 1, 3, 2));
        NDArray scores = qk.mul(Autograd.scalar(qk, 1.0 / Math.sqrt(d))); // [B, N, S, S]
        scores = scores.add(causalMask(m, s));
        NDArray ctx = scores.softmax(-1).matMul(v); // [B, N, S, d]
        NDArray merged = ctx.transpose(0, 2, 1, 3).reshape(b, s, hiddenSize);
        return oProj.forward(ps, new NDList(merged), training);
    }

    /** [B, S, H] -> [B, N, S, d]. */
    private NDArray heads(NDArray x, long b, long s, long d) {
        return x.reshape(b, s, numHeads, d).transpose(0, 2, 1, 3);
    }

    /**
     * Returns the additive causal mask: 0 on and below the diagonal, -inf above.
     *
     * @param manager the manager for the array
     * @param s sequence length
     * @return {@code [S, S]} float32
     */
    public static NDArray causalMask(NDManager manager, long s) {
        float[] mask = new float[(int) (s * s)];
        for (int i = 0; i < s; i++) {
            for (int j = i + 1; j < s; j++) {
                mask[(int) (i * s + j)] = Float.NEGATIVE_INFINITY;
            }
        }
        return manager.create(mask, new Shape(s, s));
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape flat = new Shape(-1L, hiddenSize);
        qProj.initialize(manager, dataType, flat);
        kProj.initialize(manager, dataType, flat);
        vProj.initialize(manager, dataType, flat);
        oProj.initialize(manager, dataType, flat);
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0]};
    }

    /** Builds a {@link CausalSelfAttention}. */
    public static final class Builder {
        private int numHeads;
        private long hiddenSize;
        private float ropeTheta = 10000f;

        Builder() {}

        /**
         * Sets the model width H (required).
         *
         * @param hiddenSize H
         * @return this builder
         */
        public Builder setHiddenSize(long hiddenSize) {
            this.hiddenSize = hiddenSize;
            return this;
        }

        /**
         * Sets the number of heads (required; must divide H, head size even).
         *
         * @param numHeads the head count
         * @return this builder
         */
        public Builder setNumHeads(int numHeads) {
            this.numHeads = numHeads;
            return this;
        }

        /**
         * Sets the RoPE base (default 10000).
         *
         * @param theta the base
         * @return this builder
         */
        public Builder optRopeTheta(float theta) {
            this.ropeTheta = theta;
            return this;
        }

        /**
         * Builds the block.
         *
         * @return the block
         */
        public CausalSelfAttention build() {
            if (hiddenSize <= 0) {
                throw new IllegalArgumentException(
                        "CausalSelfAttention: hidden size " + hiddenSize + " must be positive");
            }
            if (numHeads <= 0 || hiddenSize % numHeads != 0 || (hiddenSize / numHeads) % 2 != 0) {
                throw new IllegalArgumentException(
                        "CausalSelfAttention: num heads " + numHeads + " must divide hidden size "
                                + hiddenSize + " into an even head size");
            }
            return new CausalSelfAttention(this);
        }
    }
}
