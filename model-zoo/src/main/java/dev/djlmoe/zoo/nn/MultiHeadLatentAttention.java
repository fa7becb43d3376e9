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

/**
 * Multi-head Latent Attention (DeepSeek-V2/V3), causal, with decoupled RoPE.
 *
 * <p>With {@code N} heads, {@code dn = qk_nope_head_dim}, {@code dr = qk_rope_head_dim}, {@code dv
 * = v_head_dim}, {@code r = kv_lora_rank}:
 *
 * <pre>
 *   q            = q_b(RMSNorm_qa(q_a(x)))  or  q_proj(x)         [B, S, N, dn + dr]
 *   [c, k_rot]   = kv_a_proj_with_mqa(x)                          [B, S, r], [B, S, dr]
 *   [k_nope, v]  = kv_b(RMSNorm_kva(c))                           [B, S, N, dn + dv]
 *   score(i, j)  = (q_nope_i . k_nope_j + rope(q_rot)_i . rope(k_rot)_j) * scale, j &lt;= i
 *   y            = o_proj(softmax(score) v)                        [B, S, H]
 * </pre>
 *
 * The rotary key is shared by all heads; the rotary embedding has size {@code dr}. The two latent
 * norms use epsilon 1e-6 (as transformers). {@code scale} is {@code (dn + dr)^-0.5}, times {@code
 * mscale^2} under YaRN (the caller passes it).
 *
 * <p>Children (Hugging Face names): {@code q_proj} or {@code q_a_proj}, {@code q_a_layernorm},
 * {@code q_b_proj}; {@code kv_a_proj_with_mqa}, {@code kv_a_layernorm}, {@code kv_b_proj}, {@code
 * o_proj}. {@code q_a_proj}, {@code kv_a_proj_with_mqa} and {@code o_proj} have a bias when {@code
 * attention_bias}.
 *
 * <p>Input {@code x [B, S, H]} float32; output {@code [B, S, H]}.
 */
public final class MultiHeadLatentAttention extends CausalAttention {

    private static final byte VERSION = 1;
    private static final float LATENT_NORM_EPS = 1e-6f;

    private final int numHeads;
    private final long qLoraRank;
    private final long kvLoraRank;
    private final long nope;
    private final long rope;
    private final long vDim;
    private final double scale;
    private final Linear qProj;
    private final Linear qaProj;
    private final RmsNorm qaNorm;
    private final Linear qbProj;
    private final Linear kvaProj;
    private final RmsNorm kvaNorm;
    private final Linear kvbProj;
    private final Linear oProj;

    private MultiHeadLatentAttention(Builder b) {
        super(VERSION, b);
        numHeads = b.numHeads;
        qLoraRank = b.qLoraRank;
        kvLoraRank = b.kvLoraRank;
        nope = b.qkNopeHeadDim;
        rope = b.qkRopeHeadDim;
        vDim = b.vHeadDim;
        scale = b.scale > 0 ? b.scale : 1.0 / Math.sqrt(nope + rope);
        long qk = nope + rope;
        if (qLoraRank > 0) {
            qProj = null;
            qaProj = addChildBlock("q_a_proj", linear(qLoraRank, b.bias));
            qaNorm =
                    addChildBlock(
                            "q_a_layernorm", RmsNorm.builder().optEps(LATENT_NORM_EPS).build());
            qbProj = addChildBlock("q_b_proj", linear(numHeads * qk, false));
        } else {
            qProj = addChildBlock("q_proj", linear(numHeads * qk, false));
            qaProj = null;
            qaNorm = null;
            qbProj = null;
        }
        kvaProj = addChildBlock("kv_a_proj_with_mqa", linear(kvLoraRank + rope, b.bias));
        kvaNorm =
                addChildBlock("kv_a_layernorm", RmsNorm.builder().optEps(LATENT_NORM_EPS).build());
        kvbProj = addChildBlock("kv_b_proj", linear(numHeads * (nope + vDim), false));
        oProj = addChildBlock("o_proj", linear(hiddenSize, b.bias));
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
     * Returns the softmax scale.
     *
     * @return the scale
     */
    public double getScale() {
        return scale;
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray x = inputs.singletonOrThrow(); // [B, S, H]
        long s = x.getShape().get(1);
        NDList q = query(ps, x, training);
        NDList latent = latent(ps, x, training);
        NDManager m = x.getManager();
        NDArray[] cs = rotary.cosSinOnDevice(m, s);
        NDArray qRot = rotate(q.get(1), cs);
        NDArray kRot = rotate(latent.get(1), cs);
        NDArray mask = GroupedQueryAttention.mask(m, s, 0);
        return attend(ps, q.get(0), qRot, latent.get(0), kRot, mask, training);
    }

    /**
     * The incremental (KV-cached) forward: attends the new tokens to every cached position of their
     * sequence and appends their latent and rotary key to the cache (inference only). The cache
     * keeps what MLA compresses to: the normalised latent {@code c} (slot 0, {@code [B, 1,
     * capacity, r]}) and the rotated shared key (slot 1, {@code [B, 1, capacity, dr]}); {@code
     * kv_b} expands the latent of the visible positions at each call.
     *
     * @param ps the parameter store
     * @param x {@code [B, S, H]} the new tokens' inputs
     * @param cache the cache
     * @param layer this attention's layer index in the cache
     * @param start {@code [B]} the position of each sequence's first new token
     * @return {@code [B, S, H]}
     */
    @Override
    public NDArray forwardCached(
            ParameterStore ps, NDArray x, KvCache cache, int layer, long[] start) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        NDList q = query(ps, x, false);
        NDList latent = latent(ps, x, false);
        NDManager m = x.getManager();
        NDArray[] cs = KvCache.rope(rotary, m, start, s);
        NDArray qRot = rotate(q.get(1), cs);
        NDArray kRot = rotate(latent.get(1), cs);
        NDArray lat = cache.append(layer, 0, latent.get(0).reshape(b, 1, s, kvLoraRank), start);
        NDArray keyRot = cache.append(layer, 1, kRot, start); // [B, 1, L, dr]
        long l = lat.getShape().get(2);
        NDArray mask = KvCache.mask(m, start, s, l, 0);
        return attend(ps, q.get(0), qRot, lat.reshape(b, l, kvLoraRank), keyRot, mask, false)
                .head();
    }

    /** The query heads {@code [B, N, S, dn]} and their rotary part {@code [B, N, S, dr]}. */
    private NDList query(ParameterStore ps, NDArray x, boolean training) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        NDArray q;
        if (qProj != null) {
            q = qProj.forward(ps, new NDList(x), training).head();
        } else {
            NDArray qa = qaProj.forward(ps, new NDList(x), training).head();
            qa = qaNorm.forward(ps, new NDList(qa), training).head();
            q = qbProj.forward(ps, new NDList(qa), training).head();
        }
        q = q.reshape(b, s, numHeads, nope + rope).transpose(0, 2, 1, 3); // [B, N, S, dn+dr]
        return q.split(new long[] {nope}, 3);
    }

    /** The normalised latent {@code [B, S, r]} and the shared rotary key {@code [B, 1, S, dr]}. */
    private NDList latent(ParameterStore ps, NDArray x, boolean training) {
        long b = x.getShape().get(0);
        long s = x.getShape().get(1);
        NDArray ckv = kvaProj.forward(ps, new NDList(x), training).head(); // [B, S, r+dr]
        NDList ckvParts = ckv.split(new long[] {kvLoraRank}, 2);
        NDArray latent = kvaNorm.forward(ps, new NDList(ckvParts.get(0)), training).head();
        return new NDList(latent, ckvParts.get(1).reshape(b, 1, s, rope));
    }

    /**
     * Expands the latent of L positions with {@code kv_b}, attends and applies {@code o_proj}.
     *
     * @param qNope {@code [B, N, S, dn]}
     * @param qRot {@code [B, N, S, dr]}, rotated
     * @param latent {@code [B, L, r]}
     * @param kRot {@code [B, 1, L, dr]}, rotated
     * @param mask the additive mask
     */
    private NDList attend(
            ParameterStore ps,
            NDArray qNope,
            NDArray qRot,
            NDArray latent,
            NDArray kRot,
            NDArray mask,
            boolean training) {
        long b = latent.getShape().get(0);
        long l = latent.getShape().get(1);
        NDArray kv =
                kvbProj.forward(ps, new NDList(latent), training)
                        .head()
                        .reshape(b, l, numHeads, nope + vDim)
                        .transpose(0, 2, 1, 3); // [B, N, L, dn+dv]
        NDList kvParts = kv.split(new long[] {nope}, 3);
        // One product over [nope | rope] (as the score's two terms summed): one [B, N, S, L]
        // matrix instead of two and their sum. The shared rotary key serves every head.
        NDArray kRotHeads = kRot.broadcast(b, numHeads, l, rope); // [B, N, L, dr]
        NDArray query = NDArrays.concat(new NDList(qNope, qRot), 3); // [B, N, S, dn+dr]
        NDArray key = NDArrays.concat(new NDList(kvParts.get(0), kRotHeads), 3); // [B, N, L, dn+dr]
        NDArray merged = AttentionCore.attend(query, key, scale, mask, kvParts.get(1));
        kRotHeads.close();
        query.close();
        key.close();
        return oProj.forward(ps, new NDList(merged), training);
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape h = new Shape(-1L, hiddenSize);
        if (qProj != null) {
            qProj.initialize(manager, dataType, h);
        } else {
            qaProj.initialize(manager, dataType, h);
            qaNorm.initialize(manager, dataType, new Shape(-1L, qLoraRank));
            qbProj.initialize(manager, dataType, new Shape(-1L, qLoraRank));
        }
        kvaProj.initialize(manager, dataType, h);
        kvaNorm.initialize(manager, dataType, new Shape(-1L, kvLoraRank));
        kvbProj.initialize(manager, dataType, new Shape(-1L, kvLoraRank));
        oProj.initialize(manager, dataType, new Shape(-1L, (long) numHeads * vDim));
    }

    /** Builds a {@link MultiHeadLatentAttention}. */
    public static final class Builder extends CausalAttention.BaseBuilder<Builder> {
        private int numHeads;
        private long qLoraRank;
        private long kvLoraRank;
        private long qkNopeHeadDim;
        private long qkRopeHeadDim;
        private long vHeadDim;
        private double scale;

        Builder() {}

        @Override
        Builder self() {
            return this;
        }

        /**
         * Sets the number of heads N (required).
         *
         * @param n N
         * @return this builder
         */
        public Builder setNumHeads(int n) {
            numHeads = n;
            return this;
        }

        /**
         * Sets the latent sizes and head sizes (required).
         *
         * @param kvLoraRank {@code kv_lora_rank}
         * @param qkNopeHeadDim {@code qk_nope_head_dim}
         * @param qkRopeHeadDim {@code qk_rope_head_dim}
         * @param vHeadDim {@code v_head_dim}
         * @return this builder
         */
        public Builder setDims(
                long kvLoraRank, long qkNopeHeadDim, long qkRopeHeadDim, long vHeadDim) {
            this.kvLoraRank = kvLoraRank;
            this.qkNopeHeadDim = qkNopeHeadDim;
            this.qkRopeHeadDim = qkRopeHeadDim;
            this.vHeadDim = vHeadDim;
            return this;
        }

        /**
         * Sets {@code q_lora_rank} (default 0: a plain {@code q_proj}).
         *
         * @param rank the query latent size
         * @return this builder
         */
        public Builder optQLoraRank(long rank) {
            qLoraRank = rank;
            return this;
        }

        /**
         * Sets the softmax scale (default {@code (dn + dr)^-0.5}).
         *
         * @param scale the scale
         * @return this builder
         */
        public Builder optScale(double scale) {
            this.scale = scale;
            return this;
        }

        /**
         * Builds the block.
         *
         * @return the block
         */
        public MultiHeadLatentAttention build() {
            if (hiddenSize <= 0
                    || numHeads <= 0
                    || kvLoraRank <= 0
                    || qkNopeHeadDim < 0
                    || qkRopeHeadDim <= 0
                    || vHeadDim <= 0
                    || qLoraRank < 0) {
                throw new IllegalArgumentException(
                        "MultiHeadLatentAttention: sizes must be positive: hidden="
                                + hiddenSize
                                + " heads="
                                + numHeads
                                + " kv_lora="
                                + kvLoraRank
                                + " nope="
                                + qkNopeHeadDim
                                + " rope="
                                + qkRopeHeadDim
                                + " v="
                                + vHeadDim
                                + " q_lora="
                                + qLoraRank);
            }
            checkRotary("MultiHeadLatentAttention", qkRopeHeadDim);
            return new MultiHeadLatentAttention(this);
        }
    }
}
