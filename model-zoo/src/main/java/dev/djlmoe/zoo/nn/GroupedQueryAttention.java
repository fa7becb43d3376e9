/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;

/**
 * Causal grouped-query attention with optional per-head q/k RMSNorm (Qwen3), RoPE and an optional
 * sliding window.
 *
 * <pre>
 *   q = RMSNorm_q(q_proj(x))  [B, N, S, d]    k = RMSNorm_k(k_proj(x))  [B, G, S, d]
 *   v = v_proj(x)             [B, G, S, d]    (each of the G kv heads serves N / G query heads)
 *   y = o_proj(softmax(rope(q) rope(k)^T / sqrt(d) + mask) v)
 * </pre>
 *
 * <p>Children (Hugging Face names): {@code q_proj}, {@code k_proj}, {@code v_proj}, {@code o_proj}
 * (biases when {@code attention_bias}), {@code q_norm}, {@code k_norm} (with q/k norm). The rotary
 * embedding has size {@code d}.
 *
 * <p>Input {@code x [B, S, H]} float32; output {@code [B, S, H]}.
 */
public final class GroupedQueryAttention extends CausalAttention {

    private static final byte VERSION = 1;

    private final int numHeads;
    private final int numKvHeads;
    private final long headDim;
    private final int slidingWindow;
    private final Linear qProj;
    private final Linear kProj;
    private final Linear vProj;
    private final Linear oProj;
    private final RmsNorm qNorm;
    private final RmsNorm kNorm;

    private GroupedQueryAttention(Builder b) {
        super(VERSION, b);
        numHeads = b.numHeads;
        numKvHeads = b.numKvHeads;
        headDim = b.headDim;
        slidingWindow = b.slidingWindow;
        qProj = addChildBlock("q_proj", linear(numHeads * headDim, b.bias));
        kProj = addChildBlock("k_proj", linear(numKvHeads * headDim, b.bias));
        vProj = addChildBlock("v_proj", linear(numKvHeads * headDim, b.bias));
        oProj = addChildBlock("o_proj", linear(hiddenSize, b.bias));
        if (b.qkNorm) {
            qNorm = addChildBlock("q_norm", RmsNorm.builder().optEps(b.eps).build());
            kNorm = addChildBlock("k_norm", RmsNorm.builder().optEps(b.eps).build());
        } else {
            qNorm = null;
            kNorm = null;
        }
    }

    /**
     * Creates a builder.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * The additive causal mask {@code [S, S]}: 0 where key j may be seen from query i ({@code j <=
     * i}, and {@code j > i - window} with a window), {@code -inf} elsewhere.
     *
     * @param manager where to create it
     * @param s the sequence length
     * @param window the sliding window, 0 for none
     * @return the mask
     */
    public static NDArray mask(NDManager manager, long s, int window) {
        if (s > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(
                    "sequence length " + s + " exceeds " + Integer.MAX_VALUE);
        }
        // Built by the engine where the manager lives (on a GPU: a few small kernels) rather than
        // filled on the host and copied over: at S = 4096 that was 64 MiB per layer and step.
        try (NDManager tmp = manager.newSubManager()) {
            NDArray pos = tmp.arange(0, (int) s, 1, DataType.INT64);
            NDArray query = pos.reshape(s, 1);
            NDArray key = pos.reshape(1, s);
            NDArray visible = key.lte(query);
            if (window > 0) {
                visible = visible.logicalAnd(key.gt(query.sub(Autograd.scalar(query, window))));
            }
            Shape shape = new Shape(s, s);
            NDArray mask =
                    NDArrays.where(
                            visible,
                            tmp.zeros(shape, DataType.FLOAT32),
                            tmp.full(shape, Float.NEGATIVE_INFINITY, DataType.FLOAT32));
            mask.attach(manager);
            return mask;
        }
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray x = inputs.singletonOrThrow(); // [B, S, H]
        long s = x.getShape().get(1);
        NDList qkv = project(ps, x, training);
        NDManager m = x.getManager();
        NDArray[] cs = rotary.cosSinOnDevice(m, s);
        NDArray q = rotate(qkv.get(0), cs);
        NDArray k = rotate(qkv.get(1), cs);
        return attend(ps, q, k, qkv.get(2), mask(m, s, slidingWindow), training);
    }

    /**
     * The incremental (KV-cached) forward: attends the new tokens to every cached position of their
     * sequence and appends their keys and values to the cache (inference only).
     *
     * @param ps the parameter store
     * @param x {@code [B, S, H]} the new tokens' inputs
     * @param cache the cache; this layer keeps rotated keys (slot 0) and values (slot 1), each
     *     {@code [B, G, capacity, d]}
     * @param layer this attention's layer index in the cache
     * @param start {@code [B]} the position of each sequence's first new token
     * @return {@code [B, S, H]}
     */
    @Override
    public NDArray forwardCached(
            ParameterStore ps, NDArray x, KvCache cache, int layer, long[] start) {
        long s = x.getShape().get(1);
        NDList qkv = project(ps, x, false);
        NDManager m = x.getManager();
        NDArray[] cs = KvCache.rope(rotary, m, start, s); // [B, 1, S, d/2]
        NDArray q = rotate(qkv.get(0), cs);
        NDArray k = rotate(qkv.get(1), cs);
        NDArray keys = cache.append(layer, 0, k, start); // [B, G, L, d]
        NDArray values = cache.append(layer, 1, qkv.get(2), start);
        long l = keys.getShape().get(2);
        NDArray mask = KvCache.mask(m, start, s, l, slidingWindow);
        return attend(ps, q, keys, values, mask, false).head();
    }

    /** {@code q [B, N, S, d]}, {@code k, v [B, G, S, d]}: projected, q and k normed per head. */
    private NDList project(ParameterStore ps, NDArray x, boolean training) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        NDArray q =
                qProj.forward(ps, new NDList(x), training).head().reshape(b, s, numHeads, headDim);
        NDArray k =
                kProj.forward(ps, new NDList(x), training)
                        .head()
                        .reshape(b, s, numKvHeads, headDim);
        NDArray v =
                vProj.forward(ps, new NDList(x), training)
                        .head()
                        .reshape(b, s, numKvHeads, headDim);
        if (qNorm != null) {
            q = qNorm.forward(ps, new NDList(q), training).head();
            k = kNorm.forward(ps, new NDList(k), training).head();
        }
        return new NDList(
                q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3));
    }

    /** Attends rotated queries to keys and values of G heads, then {@code o_proj}. */
    private NDList attend(
            ParameterStore ps, NDArray q, NDArray k, NDArray v, NDArray mask, boolean training) {
        int group = numHeads / numKvHeads;
        NDArray keys = AttentionCore.repeatKv(k, group);
        NDArray values = AttentionCore.repeatKv(v, group);
        NDArray merged = AttentionCore.attend(q, keys, 1.0 / Math.sqrt(headDim), mask, values);
        return oProj.forward(ps, new NDList(merged), training);
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape h = new Shape(-1L, hiddenSize);
        qProj.initialize(manager, dataType, h);
        kProj.initialize(manager, dataType, h);
        vProj.initialize(manager, dataType, h);
        oProj.initialize(manager, dataType, new Shape(-1L, numHeads * headDim));
        if (qNorm != null) {
            qNorm.initialize(manager, dataType, new Shape(-1L, headDim));
            kNorm.initialize(manager, dataType, new Shape(-1L, headDim));
        }
    }

    /** Builds a {@link GroupedQueryAttention}. */
    public static final class Builder extends CausalAttention.BaseBuilder<Builder> {
        private int numHeads;
        private int numKvHeads;
        private long headDim;
        private boolean qkNorm;
        private float eps = 1e-6f;
        private int slidingWindow;

        Builder() {}

        @Override
        Builder self() {
            return this;
        }

        /**
         * Sets the query heads N, key/value heads G and head size d (required; G divides N).
         *
         * @param numHeads N
         * @param numKvHeads G
         * @param headDim d
         * @return this builder
         */
        public Builder setHeads(int numHeads, int numKvHeads, long headDim) {
            this.numHeads = numHeads;
            this.numKvHeads = numKvHeads;
            this.headDim = headDim;
            return this;
        }

        /**
         * Adds per-head RMSNorm on q and k before RoPE (Qwen3), default off.
         *
         * @param eps the norms' epsilon
         * @return this builder
         */
        public Builder optQkNorm(float eps) {
            this.qkNorm = true;
            this.eps = eps;
            return this;
        }

        /**
         * Sets a sliding attention window (default 0: none).
         *
         * @param window keys within {@code window - 1} positions before the query are seen
         * @return this builder
         */
        public Builder optSlidingWindow(int window) {
            this.slidingWindow = window;
            return this;
        }

        /**
         * Builds the block.
         *
         * @return the block
         */
        public GroupedQueryAttention build() {
            if (hiddenSize <= 0
                    || numHeads <= 0
                    || numKvHeads <= 0
                    || headDim <= 0
                    || numHeads % numKvHeads != 0) {
                throw new IllegalArgumentException(
                        "GroupedQueryAttention: hidden="
                                + hiddenSize
                                + " heads="
                                + numHeads
                                + " kv_heads="
                                + numKvHeads
                                + " head_dim="
                                + headDim
                                + ": sizes must be positive and kv_heads must divide heads");
            }
            checkRotary("GroupedQueryAttention", headDim);
            return new GroupedQueryAttention(this);
        }
    }
}
