/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Block;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.LowLatencyMoe;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.profile.StepPhases;
import dev.djlmoe.zoo.nn.CachedAttention;
import dev.djlmoe.zoo.nn.KvCache;
import dev.djlmoe.zoo.nn.RmsNorm;

/**
 * One pre-norm decoder layer: {@code h = x + attn(norm1(x)); out = h + mlp(norm2(h))}, where the
 * MLP is dense or an MoE layer.
 *
 * <p>Input and output {@code [B, S, H]}. Children (Hugging Face names): {@code self_attn}, {@code
 * mlp}, {@code input_layernorm}, {@code post_attention_layernorm}. In a training step with an EP
 * tape, the layer cuts the graph at its input and before the MLP so each backward walk stays inside
 * one layer. For decoding, {@link #forwardCached} runs new tokens against a {@link KvCache}.
 */
public final class DecoderLayer extends AbstractBlock {

    private static final byte VERSION = 1;

    private final long hiddenSize;
    private final EpContext context;
    private final CachedAttention selfAttn;
    private final Block mlp;
    private final RmsNorm inputNorm;
    private final RmsNorm postAttnNorm;

    /**
     * Creates a layer.
     *
     * @param hiddenSize H
     * @param attention the self-attention block ({@code [B, S, H] -> [B, S, H]}, also cached)
     * @param mlp the dense or MoE block ({@code [B, S, H] -> [B, S, H]})
     * @param rmsEps RMSNorm epsilon
     * @param context the EP context whose tape the layer cuts at, or null
     */
    public DecoderLayer(
            long hiddenSize,
            CachedAttention attention,
            Block mlp,
            float rmsEps,
            EpContext context) {
        super(VERSION);
        this.hiddenSize = hiddenSize;
        this.context = context;
        selfAttn = addChildBlock("self_attn", attention);
        this.mlp = addChildBlock("mlp", mlp);
        inputNorm = addChildBlock("input_layernorm", RmsNorm.builder().optEps(rmsEps).build());
        postAttnNorm =
                addChildBlock("post_attention_layernorm", RmsNorm.builder().optEps(rmsEps).build());
    }

    /**
     * Returns the MLP block (dense or MoE).
     *
     * @return the MLP
     */
    public Block getMlp() {
        return mlp;
    }

    /**
     * Returns the self-attention block ({@code self_attn}).
     *
     * @return the attention
     */
    public CachedAttention getSelfAttention() {
        return selfAttn;
    }

    /**
     * Returns the norm before attention ({@code input_layernorm}).
     *
     * @return the norm
     */
    public RmsNorm getInputNorm() {
        return inputNorm;
    }

    /**
     * Returns the norm before the MLP ({@code post_attention_layernorm}).
     *
     * @return the norm
     */
    public RmsNorm getPostAttentionNorm() {
        return postAttnNorm;
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        Tape tape = training && context != null ? context.tape() : null;
        NDArray x = inputs.singletonOrThrow(); // [B, S, H]
        if (tape != null) {
            x = tape.cut(x);
        }
        NDArray h;
        try (StepPhases.Scope p = StepPhases.enter("attention")) {
            NDArray a =
                    selfAttn.forward(
                                    ps,
                                    new NDList(
                                            inputNorm.forward(ps, new NDList(x), training).head()),
                                    training)
                            .head();
            h = x.add(a);
        }
        if (tape != null) {
            h = tape.cut(h);
        }
        try (StepPhases.Scope p = StepPhases.enter("mlp")) {
            NDArray u;
            try (StepPhases.Scope n = StepPhases.enter("norm")) {
                u = postAttnNorm.forward(ps, new NDList(h), training).head();
            }
            NDArray m = mlp.forward(ps, new NDList(u), training).head();
            return new NDList(h.add(m));
        }
    }

    /**
     * The incremental forward of this layer (inference, with a KV cache): attention through {@link
     * CachedAttention#forwardCached}; the MLP's ordinary forward, or {@link
     * MoeLayer#forwardLowLatency} for an MoE MLP when {@code lowLatency} is given.
     *
     * @param ps the parameter store
     * @param x {@code [B, S, H]} the new tokens' hidden states
     * @param cache the model's cache
     * @param layer this layer's index in the cache
     * @param start {@code [B]} the position of each sequence's first new token
     * @param lowLatency the low-latency MoE exchange, or null for the normal forward
     * @return {@code [B, S, H]}
     */
    public NDArray forwardCached(
            ParameterStore ps,
            NDArray x,
            KvCache cache,
            int layer,
            long[] start,
            LowLatencyMoe lowLatency) {
        NDArray a = inputNorm.forward(ps, new NDList(x), false).head();
        NDArray h = x.add(selfAttn.forwardCached(ps, a, cache, layer, start));
        NDArray u = postAttnNorm.forward(ps, new NDList(h), false).head();
        NDArray m;
        if (lowLatency != null && mlp instanceof MoeLayer moe) {
            m = moe.forwardLowLatency(ps, u, lowLatency);
        } else {
            m = mlp.forward(ps, new NDList(u), false).head();
        }
        return h.add(m);
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape in = inputShapes[0];
        inputNorm.initialize(manager, dataType, in);
        postAttnNorm.initialize(manager, dataType, in);
        selfAttn.initialize(manager, dataType, in);
        mlp.initialize(manager, dataType, in);
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0]};
    }

    /**
     * Returns H.
     *
     * @return the hidden size
     */
    public long getHiddenSize() {
        return hiddenSize;
    }
}
