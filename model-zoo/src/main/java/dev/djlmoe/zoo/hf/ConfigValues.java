/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.nn.RotaryEmbedding;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The settings of an {@link HfMoeConfig} as read from {@code config.json}: the keys every family
 * shares are read here, the rest by the family's reader ({@link DeepseekConfigReader}, {@link
 * Qwen3MoeConfigReader}); then the settings are checked against each other. Filled once, while the
 * configuration is built, and never changed after.
 */
final class ConfigValues {
    HfMoeConfig.Family family;
    long vocabSize;
    long hiddenSize;
    long intermediateSize;
    long moeIntermediateSize;
    int numLayers;
    int numHeads;
    int numKvHeads;
    long headDim;
    long qLoraRank;
    long kvLoraRank;
    long qkNopeHeadDim;
    long qkRopeHeadDim;
    long vHeadDim;
    int numExperts;
    int numSharedExperts;
    int topK;
    int numGroups = 1;
    int topkGroup = 1;
    String topkMethod = "greedy";
    boolean normTopkProb;
    float routedScalingFactor = 1f;
    int firstKDenseReplace;
    int decoderSparseStep = 1;
    Set<Integer> mlpOnlyLayers = Collections.emptySet();
    float rmsNormEps;
    boolean tieWordEmbeddings;
    boolean attentionBias;
    boolean ropeInterleave;
    int slidingWindow;
    RotaryEmbedding.Settings rope;
    int[] fp8BlockSize;
    float initializerRange;

    private ConfigValues() {}

    /**
     * Reads and checks every setting.
     *
     * @param keys the file's keys
     * @return the settings
     * @throws IllegalArgumentException naming the file and the key of the first bad setting
     */
    static ConfigValues read(ConfigKeys keys) {
        ConfigValues v = new ConfigValues();
        String type = keys.str("model_type", null);
        for (HfMoeConfig.Family f : HfMoeConfig.Family.values()) {
            if (f.modelType().equals(type)) {
                v.family = f;
            }
        }
        if (v.family == null) {
            throw keys.fail(
                    "model_type \""
                            + type
                            + "\" is not supported: expected deepseek_v3, deepseek_v2 or"
                            + " qwen3_moe");
        }
        v.vocabSize = keys.posLong("vocab_size");
        v.hiddenSize = keys.posLong("hidden_size");
        v.intermediateSize = keys.posLong("intermediate_size");
        v.moeIntermediateSize = keys.posLong("moe_intermediate_size");
        v.numLayers = keys.posInt("num_hidden_layers");
        v.numHeads = keys.posInt("num_attention_heads");
        v.numKvHeads =
                keys.has("num_key_value_heads") ? keys.posInt("num_key_value_heads") : v.numHeads;
        String act = keys.str("hidden_act", "silu");
        if (!"silu".equals(act) && !"swish".equals(act)) {
            throw keys.fail("hidden_act \"" + act + "\" is not supported: expected \"silu\"");
        }
        if (keys.bool("mlp_bias", false)) {
            throw keys.fail("mlp_bias = true is not supported");
        }
        v.rmsNormEps = (float) keys.num("rms_norm_eps", 1e-6);
        v.tieWordEmbeddings = keys.bool("tie_word_embeddings", false);
        v.attentionBias = keys.bool("attention_bias", false);
        v.initializerRange = (float) keys.num("initializer_range", 0.02);
        if (v.family.isMla()) {
            DeepseekConfigReader.read(keys, v);
        } else {
            Qwen3MoeConfigReader.read(keys, v);
        }
        v.topK = keys.posInt("num_experts_per_tok");
        if (v.topK > v.numExperts) {
            throw keys.fail(
                    "num_experts_per_tok = "
                            + v.topK
                            + " exceeds the "
                            + v.numExperts
                            + " routed experts");
        }
        if (v.numHeads % v.numKvHeads != 0) {
            throw keys.fail(
                    "num_attention_heads = "
                            + v.numHeads
                            + " is not a multiple of num_key_value_heads = "
                            + v.numKvHeads);
        }
        if (v.qkRopeHeadDim % 2 != 0) {
            throw keys.fail("the rotary dimension " + v.qkRopeHeadDim + " must be even");
        }
        v.rope = readRope(keys, v.family.isMla() ? v.qkRopeHeadDim : v.headDim, v.ropeInterleave);
        v.fp8BlockSize = readFp8BlockSize(keys);
        return v;
    }

    /**
     * Reads RoPE from {@code rope_parameters} (transformers 5) or {@code rope_theta} + {@code
     * rope_scaling} (older files).
     */
    private static RotaryEmbedding.Settings readRope(
            ConfigKeys keys, long dim, boolean interleave) {
        Map<String, Object> params = null;
        double theta;
        if (keys.has("rope_parameters") && keys.get("rope_parameters") instanceof Map) {
            params = keys.map("rope_parameters");
            Object t = params.get("rope_theta");
            boolean finite = t instanceof Number && Double.isFinite(((Number) t).doubleValue());
            if (t != null && !finite) {
                // Never fall back to a default silently: the file says something else.
                throw keys.fail(
                        "rope_parameters.rope_theta must be a finite number, found "
                                + Json.typeName(t)
                                + " "
                                + t);
            }
            theta =
                    t instanceof Number
                            ? ((Number) t).doubleValue()
                            : keys.num("rope_theta", 10000);
        } else {
            theta = keys.num("rope_theta", 10000);
            if (keys.has("rope_scaling") && keys.get("rope_scaling") instanceof Map) {
                params = keys.map("rope_scaling");
            }
        }
        String type = "default";
        if (params != null) {
            Object t =
                    params.containsKey("rope_type") ? params.get("rope_type") : params.get("type");
            if (t instanceof String) {
                type = (String) t;
            }
        }
        long maxPos =
                keys.has("max_position_embeddings")
                        ? keys.posLong("max_position_embeddings")
                        : 4096;
        RotaryEmbedding.Settings s =
                new RotaryEmbedding.Settings(
                        (int) dim,
                        theta,
                        type,
                        params == null ? Map.of() : params,
                        maxPos,
                        interleave
                                ? RotaryEmbedding.Layout.INTERLEAVED
                                : RotaryEmbedding.Layout.HALF_SPLIT);
        try {
            s.validate();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(keys.source() + ": " + e.getMessage(), e);
        }
        return s;
    }

    /** {@code quantization_config.weight_block_size}, {@code [128, 128]} when absent. */
    private static int[] readFp8BlockSize(ConfigKeys keys) {
        Object q = keys.get("quantization_config");
        if (q instanceof Map && ((Map<?, ?>) q).get("weight_block_size") instanceof List) {
            List<?> l = (List<?>) ((Map<?, ?>) q).get("weight_block_size");
            if (l.size() == 2 && l.get(0) instanceof Long && l.get(1) instanceof Long) {
                return new int[] {((Long) l.get(0)).intValue(), ((Long) l.get(1)).intValue()};
            }
        }
        return new int[] {128, 128};
    }
}
