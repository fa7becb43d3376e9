/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.model;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Block;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.SwiGluMlp;
import dev.djlmoe.zoo.hf.DecoderLayer;
import dev.djlmoe.zoo.nn.CausalSelfAttention;
import dev.djlmoe.zoo.nn.RmsNorm;
import dev.djlmoe.zoo.nn.TokenEmbedding;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * A decoder-only MoE language model: token embedding, {@link DecoderLayer}s (causal attention +
 * dense or MoE MLP), final RMSNorm, LM head.
 *
 * <p>Input {@code ids [B, S]} int64; output {@code logits [B, S, V]} float32. With an {@link
 * EpContext}, each MoE layer holds only this rank's {@code E / W} experts.
 *
 * @deprecated the project's first model, kept only until its last caller moves; use {@link
 *     dev.djlmoe.zoo.hf.HfMoeForCausalLm} with {@link dev.djlmoe.zoo.hf.HfMoeConfig#preset
 *     HfMoeConfig.preset("tiny")} (the same tiny DeepSeek-V3 layout, with MLA attention).
 */
@Deprecated
public final class MoeCausalLm extends AbstractBlock {

    private static final byte VERSION = 1;

    private final MoeModelConfig config;
    private final TokenEmbedding embed;
    private final List<DecoderLayer> layers = new ArrayList<>();
    private final RmsNorm norm;
    private final Linear lmHead;

    /**
     * Builds the model.
     *
     * @param config the settings (validated)
     * @param context the EP context, or null for one rank with plain autograd
     */
    public MoeCausalLm(MoeModelConfig config, EpContext context) {
        this(config, context, ExpertPrecision.FP32);
    }

    /**
     * Builds the model with a choice of expert GEMM numerics.
     *
     * @param config the settings (validated)
     * @param context the EP context, or null for one rank with plain autograd
     * @param precision the routed experts' GEMM numerics
     */
    public MoeCausalLm(MoeModelConfig config, EpContext context, ExpertPrecision precision) {
        super(VERSION);
        config.validate();
        this.config = config;
        embed =
                addChildBlock(
                        "embed_tokens",
                        new TokenEmbedding(config.vocabSize(), config.hiddenSize(), config.initStd()));
        for (int i = 0; i < config.numLayers(); i++) {
            Block attn =
                    CausalSelfAttention.builder()
                            .setHiddenSize(config.hiddenSize())
                            .setNumHeads(config.numHeads())
                            .optRopeTheta(config.ropeTheta())
                            .build();
            Block mlp;
            if (i < config.firstKDense()) {
                mlp =
                        SwiGluMlp.builder()
                                .setHiddenSize(config.hiddenSize())
                                .setIntermediateSize(config.denseIntermediateSize())
                                .build();
            } else {
                mlp =
                        MoeLayer.builder()
                                .setHiddenSize(config.hiddenSize())
                                .setExpertIntermediateSize(config.moeIntermediateSize())
                                .setRouter(config.routerBuilder())
                                .optNumSharedExperts(config.numSharedExperts())
                                .optSeqAuxAlpha(config.seqAuxAlpha())
                                .optContext(context)
                                .optExpertPrecision(precision)
                                .build();
            }
            layers.add(
                    addChildBlock(
                            "layers_" + i,
                            new DecoderLayer(
                                    config.hiddenSize(), attn, mlp, config.rmsNormEps(), context)));
        }
        norm = addChildBlock("norm", RmsNorm.builder().optEps(config.rmsNormEps()).build());
        lmHead =
                config.tieWordEmbeddings()
                        ? null
                        : addChildBlock(
                                "lm_head",
                                Linear.builder().setUnits(config.vocabSize()).optBias(false).build());
    }

    /**
     * Returns the settings.
     *
     * @return the configuration
     */
    public MoeModelConfig getConfig() {
        return config;
    }

    /**
     * Returns the decoder layers.
     *
     * @return the layers, bottom first
     */
    public List<DecoderLayer> getLayers() {
        return Collections.unmodifiableList(layers);
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray ids = inputs.head(); // [B, S]
        NDArray h = embed.forward(ps, new NDList(ids), training).head(); // [B, S, H]
        for (DecoderLayer layer : layers) {
            h = layer.forward(ps, new NDList(h), training).head();
        }
        h = norm.forward(ps, new NDList(h), training).head();
        NDArray logits;
        if (lmHead != null) {
            logits = lmHead.forward(ps, new NDList(h), training).head();
        } else {
            NDArray table = ps.getValue(embed.getWeight(), h.getDevice(), training);
            NDArray tableT = table.transpose(); // [H, V]
            tableT.attach(h.getManager()); // a view made per step: not the table's manager's
            logits = h.matMul(tableT); // [B, S, V]
        }
        return new NDList(logits);
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
}
