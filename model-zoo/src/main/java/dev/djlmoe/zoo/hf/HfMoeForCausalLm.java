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
import ai.djl.nn.Parameter;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.nn.LowLatencyMoe;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.RoutedExperts;
import dev.djlmoe.nn.SwiGluMlp;
import dev.djlmoe.profile.StepPhases;
import dev.djlmoe.zoo.nn.CachedAttention;
import dev.djlmoe.zoo.nn.GroupedQueryAttention;
import dev.djlmoe.zoo.nn.KvCache;
import dev.djlmoe.zoo.nn.MultiHeadLatentAttention;
import dev.djlmoe.zoo.nn.RmsNorm;
import dev.djlmoe.zoo.nn.RotaryEmbedding;
import dev.djlmoe.zoo.nn.TokenEmbedding;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A Hugging Face Mixture-of-Experts causal language model (DeepSeek-V3, DeepSeek-V2, Qwen3-MoE) as
 * a DJL block, built from an {@link HfMoeConfig} by {@link #builder()}.
 *
 * <pre>
 *   h = embed_tokens(ids)                                    [B, S, H]
 *   for each layer: h = h + attn(RMSNorm(h)); h = h + mlp(RMSNorm(h))
 *   logits = lm_head(RMSNorm(h))   (or h . embed_tokens^T when tied)   [B, S, V]
 * </pre>
 *
 * Attention is {@link MultiHeadLatentAttention} for the DeepSeek families and {@link
 * GroupedQueryAttention} with q/k norm for Qwen3-MoE; the MLP of a layer is a dense {@link
 * SwiGluMlp} or a {@link MoeLayer} ({@link HfMoeConfig#isMoeLayer}). With an {@link EpContext}
 * every MoE layer holds only this rank's {@code E / W} experts and exchanges tokens through the EP
 * buffer. Decoder layers are {@link DecoderLayer}s, which cut the EP tape at their input and before
 * the MLP.
 *
 * <p>Input {@code ids [B, S]} int64; output {@code logits [B, S, V]} float32. Parameter names in
 * Hugging Face form: {@link #hfTensors()}. For decoding, {@link #forwardCached} runs new tokens
 * against a {@link KvCache} (from {@link #newCache}), optionally with low-latency MoE layers.
 */
public final class HfMoeForCausalLm extends AbstractBlock {

    private static final byte VERSION = 1;

    /**
     * One Hugging Face tensor and where it lives in this model.
     *
     * @param name the Hugging Face name ({@code model.layers.3.mlp.experts.17.up_proj.weight})
     * @param parameter the parameter holding it
     * @param expertSlot for a routed expert: its slice of the stacked parameter (local index); -1
     *     when the tensor is the whole parameter
     * @param shape the tensor's shape in the checkpoint
     */
    public record HfTensor(String name, Parameter parameter, int expertSlot, long[] shape) {}

    private final HfMoeConfig config;
    private final EpContext context;
    private final RotaryEmbedding rotary;
    private final TokenEmbedding embed;
    private final List<DecoderLayer> layers = new ArrayList<>();
    private final RmsNorm norm;
    private final Linear lmHead;

    private HfMoeForCausalLm(Builder builder) {
        super(VERSION);
        this.config = builder.config;
        this.context = builder.context;
        rotary = new RotaryEmbedding(config.rope());
        embed =
                addChildBlock(
                        "embed_tokens",
                        new TokenEmbedding(
                                config.vocabSize(),
                                config.hiddenSize(),
                                config.initializerRange()));
        for (int i = 0; i < config.numLayers(); i++) {
            Block mlp;
            if (config.isMoeLayer(i)) {
                mlp =
                        MoeLayer.builder()
                                .setHiddenSize(config.hiddenSize())
                                .setExpertIntermediateSize(config.moeIntermediateSize())
                                .setRouter(config.routerBuilder())
                                .optNumSharedExperts(config.numSharedExperts())
                                .optSeqAuxAlpha(builder.seqAuxAlpha)
                                .optContext(context)
                                .optExpertPrecision(builder.precision)
                                .build();
            } else {
                mlp =
                        SwiGluMlp.builder()
                                .setHiddenSize(config.hiddenSize())
                                .setIntermediateSize(config.intermediateSize())
                                .build();
            }
            DecoderLayer layer =
                    new DecoderLayer(
                            config.hiddenSize(), attention(), mlp, config.rmsNormEps(), context);
            layers.add(addChildBlock("layers_" + i, layer));
        }
        norm = addChildBlock("norm", RmsNorm.builder().optEps(config.rmsNormEps()).build());
        lmHead =
                config.tieWordEmbeddings()
                        ? null
                        : addChildBlock(
                                "lm_head",
                                Linear.builder()
                                        .setUnits(config.vocabSize())
                                        .optBias(false)
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

    private CachedAttention attention() {
        if (config.family().isMla()) {
            return MultiHeadLatentAttention.builder()
                    .setHiddenSize(config.hiddenSize())
                    .setNumHeads(config.numHeads())
                    .setDims(
                            config.kvLoraRank(),
                            config.qkNopeHeadDim(),
                            config.qkRopeHeadDim(),
                            config.vHeadDim())
                    .optQLoraRank(config.qLoraRank())
                    .optBias(config.attentionBias())
                    .optScale(config.attentionScale())
                    .setRotary(rotary)
                    .build();
        }
        return GroupedQueryAttention.builder()
                .setHiddenSize(config.hiddenSize())
                .setHeads(config.numHeads(), config.numKvHeads(), config.headDim())
                .optBias(config.attentionBias())
                .optQkNorm(config.rmsNormEps())
                .optSlidingWindow(config.slidingWindow())
                .setRotary(rotary)
                .build();
    }

    /**
     * Returns the configuration.
     *
     * @return the configuration
     */
    public HfMoeConfig getConfig() {
        return config;
    }

    /**
     * Returns the EP context, or null.
     *
     * @return the context
     */
    public EpContext getContext() {
        return context;
    }

    /**
     * Returns the decoder layers.
     *
     * @return the layers
     */
    public List<DecoderLayer> getLayers() {
        return Collections.unmodifiableList(layers);
    }

    /**
     * Returns the MoE layers (in layer order).
     *
     * @return the MoE layers
     */
    public List<MoeLayer> getMoeLayers() {
        List<MoeLayer> out = new ArrayList<>();
        for (DecoderLayer l : layers) {
            if (l.getMlp() instanceof MoeLayer) {
                out.add((MoeLayer) l.getMlp());
            }
        }
        return out;
    }

    /**
     * Lists every tensor of this rank's part of the model under its Hugging Face name: all dense
     * parameters, and the routed experts this rank holds ({@code experts.{g}} for global ids g from
     * {@link MoeLayer#firstLocalExpert()}).
     *
     * @return the tensors, in checkpoint order
     */
    public List<HfTensor> hfTensors() {
        List<HfTensor> out = new ArrayList<>();
        add(out, "model.embed_tokens.weight", embed.getWeight());
        for (int i = 0; i < layers.size(); i++) {
            String p = "model.layers." + i + ".";
            DecoderLayer layer = layers.get(i);
            addChildren(out, p + "self_attn.", layer.getSelfAttention());
            Block mlp = layer.getMlp();
            if (mlp instanceof MoeLayer) {
                MoeLayer moe = (MoeLayer) mlp;
                MoeRouter gate = moe.getGate();
                add(out, p + "mlp.gate.weight", gate.getWeight());
                if (gate.getCorrectionBias() != null) {
                    add(out, p + "mlp.gate.e_score_correction_bias", gate.getCorrectionBias());
                }
                RoutedExperts ex = moe.getExperts();
                int first = moe.firstLocalExpert();
                long h = config.hiddenSize();
                long inter = config.moeIntermediateSize();
                Parameter gp = ex.getParameters().get(RoutedExperts.GATE_PROJ);
                Parameter up = ex.getParameters().get(RoutedExperts.UP_PROJ);
                Parameter dp = ex.getParameters().get(RoutedExperts.DOWN_PROJ);
                for (int e = 0; e < ex.getNumExperts(); e++) {
                    String ep = p + "mlp.experts." + (first + e) + ".";
                    out.add(new HfTensor(ep + "gate_proj.weight", gp, e, new long[] {inter, h}));
                    out.add(new HfTensor(ep + "up_proj.weight", up, e, new long[] {inter, h}));
                    out.add(new HfTensor(ep + "down_proj.weight", dp, e, new long[] {h, inter}));
                }
                if (moe.getSharedExperts() != null) {
                    addSwiGlu(out, p + "mlp.shared_experts.", moe.getSharedExperts());
                }
            } else {
                addSwiGlu(out, p + "mlp.", (SwiGluMlp) mlp);
            }
            add(out, p + "input_layernorm.weight", normWeight(layer.getInputNorm()));
            add(
                    out,
                    p + "post_attention_layernorm.weight",
                    normWeight(layer.getPostAttentionNorm()));
        }
        add(out, "model.norm.weight", normWeight(norm));
        if (lmHead != null) {
            add(out, "lm_head.weight", lmHead.getParameters().get("weight"));
        }
        return out;
    }

    private static Parameter normWeight(RmsNorm norm) {
        return norm.getParameters().get("weight");
    }

    private static void add(List<HfTensor> out, String name, Parameter p) {
        out.add(new HfTensor(name, p, -1, null));
    }

    /** Adds a SwiGLU MLP's three weights as {@code prefix + "gate_proj.weight"} etc. */
    private static void addSwiGlu(List<HfTensor> out, String prefix, SwiGluMlp mlp) {
        for (String n :
                new String[] {SwiGluMlp.GATE_PROJ, SwiGluMlp.UP_PROJ, SwiGluMlp.DOWN_PROJ}) {
            add(out, prefix + n + ".weight", mlp.getParameters().get(n));
        }
    }

    /** Adds the direct parameters of every child, named {@code prefix + child + "." + param}. */
    private static void addChildren(List<HfTensor> out, String prefix, Block block) {
        for (var p : block.getDirectParameters()) {
            add(out, prefix + p.getKey(), p.getValue());
        }
        for (var c : block.getChildren()) {
            String child = c.getKey().substring(2); // DJL's "NN" order prefix
            for (var p : c.getValue().getDirectParameters()) {
                add(out, prefix + child + "." + p.getKey(), p.getValue());
            }
        }
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray ids = inputs.head(); // [B, S]
        if (ids.getShape().dimension() != 2) {
            throw new IllegalArgumentException(
                    "token ids must have shape [B, S], got " + ids.getShape());
        }
        if (ids.getDataType() == DataType.INT32
                || ids.getDataType() == DataType.INT8
                || ids.getDataType() == DataType.UINT8) {
            ids = ids.toType(DataType.INT64, false);
        }
        NDArray h;
        try (StepPhases.Scope p = StepPhases.enter("embedding")) {
            h = embed.forward(ps, new NDList(ids), training).head(); // [B, S, H]
        }
        for (int i = 0; i < layers.size(); i++) {
            try (StepPhases.Scope p =
                    StepPhases.recording() ? StepPhases.enter("layer " + i) : null) {
                h = layers.get(i).forward(ps, new NDList(h), training).head();
            }
        }
        NDArray logits;
        try (StepPhases.Scope p = StepPhases.enter("head")) {
            h = norm.forward(ps, new NDList(h), training).head();
            if (lmHead != null) {
                logits = lmHead.forward(ps, new NDList(h), training).head();
            } else {
                NDArray table = ps.getValue(embed.getWeight(), h.getDevice(), training);
                NDArray tableT = table.transpose(); // [H, V]
                tableT.attach(h.getManager());
                logits = h.matMul(tableT);
            }
        }
        return new NDList(logits);
    }

    /**
     * Creates an empty key/value cache for {@link #forwardCached}.
     *
     * @param manager the manager whose sub-manager owns the cache
     * @param batch B sequences
     * @param capacity the most positions a sequence reaches (prompt plus generated tokens)
     * @return the cache (close it when done)
     */
    public KvCache newCache(NDManager manager, int batch, int capacity) {
        return new KvCache(manager, layers.size(), batch, capacity);
    }

    /**
     * The incremental forward (inference, with a KV cache): runs S new tokens of each sequence, the
     * one of sequence b at positions {@code start[b] .. start[b] + S - 1}, attending to the cached
     * positions before them, and appends their keys and values to the cache. Prefill a batch of
     * right-padded prompts with {@code start = 0} (logits at padding positions are meaningless;
     * later calls overwrite the padding), then decode one token per sequence per call with {@code
     * start[b]} = the tokens sequence b holds.
     *
     * <p>The MoE layers run their normal forward (with an EP context: the normal-mode {@code
     * EpBuffer} dispatch and combine) when {@code lowLatency} is null, and {@link
     * MoeLayer#forwardLowLatency} otherwise (every rank then needs {@code B · S <=
     * max_tokens_per_rank}). Collective with EP: every rank makes the same calls.
     *
     * @param ps the parameter store
     * @param ids {@code [B, S]} int64 token ids
     * @param cache the cache from {@link #newCache}
     * @param start {@code [B]} the position of each sequence's first new token
     * @param lowLatency the low-latency MoE exchange, or null for the normal forward
     * @return {@code logits [B, S, V]} float32
     */
    public NDArray forwardCached(
            ParameterStore ps, NDArray ids, KvCache cache, long[] start, LowLatencyMoe lowLatency) {
        if (ids.getShape().dimension() != 2 || ids.getShape().get(0) != cache.batch()) {
            throw new IllegalArgumentException(
                    "argument 'ids' has shape "
                            + ids.getShape()
                            + ", expected ["
                            + cache.batch()
                            + ", S] (the cache's batch)");
        }
        if (ids.getDataType() != DataType.INT64) {
            ids = ids.toType(DataType.INT64, false);
        }
        cache.checkStart(start, ids.getShape().get(1));
        NDArray h = embed.forward(ps, new NDList(ids), false).head(); // [B, S, H]
        for (int i = 0; i < layers.size(); i++) {
            h = layers.get(i).forwardCached(ps, h, cache, i, start, lowLatency);
        }
        h = norm.forward(ps, new NDList(h), false).head();
        if (lmHead != null) {
            return lmHead.forward(ps, new NDList(h), false).head();
        }
        NDArray table = ps.getValue(embed.getWeight(), h.getDevice(), false);
        return h.matMul(table.transpose());
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape ids = inputShapes[0];
        Shape hidden = ids.add(config.hiddenSize());
        embed.initialize(manager, dataType, ids);
        for (DecoderLayer layer : layers) {
            layer.initialize(manager, dataType, hidden);
        }
        norm.initialize(manager, dataType, hidden);
        if (lmHead != null) {
            lmHead.initialize(manager, dataType, hidden);
        }
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0].add(config.vocabSize())};
    }

    /** Builds an {@link HfMoeForCausalLm}. */
    public static final class Builder {
        private HfMoeConfig config;
        private EpContext context;
        private float seqAuxAlpha;
        private ExpertPrecision precision = ExpertPrecision.FP32;

        Builder() {}

        /**
         * Sets the configuration (required).
         *
         * @param config the model's configuration
         * @return this builder
         */
        public Builder setConfig(HfMoeConfig config) {
            this.config = config;
            return this;
        }

        /**
         * Sets the EP context: every MoE layer then holds only this rank's {@code E / W} experts
         * (default none: all experts local).
         *
         * @param context the EP context, or null
         * @return this builder
         */
        public Builder optContext(EpContext context) {
            this.context = context;
            return this;
        }

        /**
         * Sets the weight of the MoE layers' sequence-wise balance loss (default 0: off).
         *
         * @param alpha the weight, finite and non-negative
         * @return this builder
         */
        public Builder optSeqAuxAlpha(float alpha) {
            this.seqAuxAlpha = alpha;
            return this;
        }

        /**
         * Sets the routed experts' GEMM numerics (default {@link ExpertPrecision#FP32}; the MXFP8
         * and FP8 emulations for training studies).
         *
         * @param precision the numerics
         * @return this builder
         */
        public Builder optExpertPrecision(ExpertPrecision precision) {
            this.precision = precision;
            return this;
        }

        /**
         * Builds the model (parameters uninitialised; see {@link HfCheckpoints} to load weights).
         *
         * @return the model
         * @throws IllegalArgumentException when the configuration is missing, the balance-loss
         *     weight is negative or not finite, or the EP world size does not divide the experts
         */
        public HfMoeForCausalLm build() {
            if (config == null) {
                throw new IllegalArgumentException("HfMoeForCausalLm: setConfig is required");
            }
            if (!(seqAuxAlpha >= 0) || Float.isInfinite(seqAuxAlpha)) {
                throw new IllegalArgumentException(
                        "HfMoeForCausalLm: seqAuxAlpha "
                                + seqAuxAlpha
                                + " must be finite and >= 0");
            }
            if (precision == null) {
                throw new IllegalArgumentException(
                        "HfMoeForCausalLm: optExpertPrecision needs a precision, got null");
            }
            if (context != null && config.numExperts() % context.group().worldSize() != 0) {
                throw new IllegalArgumentException(
                        "n_routed_experts = "
                                + config.numExperts()
                                + " is not divisible by the EP world size "
                                + context.group().worldSize());
            }
            return new HfMoeForCausalLm(this);
        }
    }
}
