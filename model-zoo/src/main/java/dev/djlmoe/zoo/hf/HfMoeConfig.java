/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.ScoreFunction;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.nn.RotaryEmbedding;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The configuration of a Hugging Face Mixture-of-Experts causal language model, read from (and
 * written back as) the checkpoint's {@code config.json}.
 *
 * <p>Three families, chosen by {@code model_type}, each following what the transformers library
 * does with the same file:
 *
 * <ul>
 *   <li>{@code deepseek_v3} (DeepSeek-V3/V3.1, Kimi-K2 layout, Moonlight): Multi-head Latent
 *       Attention with or without {@code q_lora_rank}, RoPE on interleaved pairs ({@code
 *       rope_interleave}, default true), YaRN with mscale; {@code first_k_dense_replace} dense
 *       layers, then MoE layers with shared experts; sigmoid router with {@code
 *       e_score_correction_bias}, group-limited top-k ({@code n_group}, {@code topk_group}), {@code
 *       norm_topk_prob}, {@code routed_scaling_factor}.
 *   <li>{@code deepseek_v2} (DeepSeek-V2/V2-Lite): the same attention; softmax router, {@code
 *       topk_method} {@code greedy} or {@code group_limited_greedy} (group score = max), weights
 *       times {@code routed_scaling_factor} and never renormalised (transformers ignores {@code
 *       norm_topk_prob} here).
 *   <li>{@code qwen3_moe}: grouped-query attention with per-head q/k RMSNorm and half-split RoPE;
 *       softmax top-k with {@code norm_topk_prob}; no shared experts; MoE layers chosen by {@code
 *       decoder_sparse_step} and {@code mlp_only_layers}.
 * </ul>
 *
 * <p>RoPE settings come from {@code rope_parameters} (transformers 5) or {@code rope_theta} +
 * {@code rope_scaling} (older files). Presets: {@link #preset(String)} with {@code
 * deepseek-v3-671b}, {@code deepseek-v3-16b}, {@code tiny}, {@code tiny-deepseek-v2}, {@code
 * tiny-qwen3-moe}.
 */
public final class HfMoeConfig {

    /** The model families. */
    public enum Family {
        /** {@code model_type = "deepseek_v3"}. */
        DEEPSEEK_V3("deepseek_v3", "DeepseekV3ForCausalLM"),
        /** {@code model_type = "deepseek_v2"}. */
        DEEPSEEK_V2("deepseek_v2", "DeepseekV2ForCausalLM"),
        /** {@code model_type = "qwen3_moe"}. */
        QWEN3_MOE("qwen3_moe", "Qwen3MoeForCausalLM");

        private final String modelType;
        private final String architecture;

        Family(String modelType, String architecture) {
            this.modelType = modelType;
            this.architecture = architecture;
        }

        /**
         * Returns the {@code model_type} string.
         *
         * @return the model type
         */
        public String modelType() {
            return modelType;
        }

        /**
         * Returns the transformers class name written to {@code architectures}.
         *
         * @return the architecture
         */
        public String architecture() {
            return architecture;
        }

        /**
         * Whether the family uses Multi-head Latent Attention.
         *
         * @return true for the DeepSeek families
         */
        public boolean isMla() {
            return this != QWEN3_MOE;
        }
    }

    /** Largest config.json accepted. */
    public static final long MAX_CONFIG_BYTES = 4L << 20;

    private final Map<String, Object> raw;
    private final ConfigValues v;

    private HfMoeConfig(Map<String, Object> raw, String source) {
        this.raw = raw;
        this.v = ConfigValues.read(new ConfigKeys(raw, source));
        // Router settings are validated here, not at the first forward.
        try {
            routerBuilder().buildConfig();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    source
                            + ": router settings (n_routed_experts or num_experts, "
                            + "num_experts_per_tok, n_group, topk_group, routed_scaling_factor): "
                            + e.getMessage(),
                    e);
        }
    }

    /** Builds a configuration from keys this class owns from now on. */
    static HfMoeConfig of(Map<String, Object> raw, String source) {
        return new HfMoeConfig(raw, source);
    }

    /**
     * Reads {@code config.json} from a checkpoint directory (or the file itself).
     *
     * @param path the directory or the file
     * @return the configuration
     * @throws IOException if the file is missing, too large or not valid JSON
     * @throws IllegalArgumentException naming the key if a setting is missing or unsupported
     */
    public static HfMoeConfig load(Path path) throws IOException {
        return HfConfigJson.load(path);
    }

    /**
     * Parses the text of a {@code config.json}.
     *
     * @param json the text
     * @param source where it came from, for messages
     * @return the configuration
     * @throws JsonException if the text is not a JSON object
     */
    public static HfMoeConfig parse(String json, String source) throws JsonException {
        return HfConfigJson.parse(json, source);
    }

    /**
     * Builds a configuration from a {@code config.json} map.
     *
     * @param config the keys and values
     * @return the configuration
     */
    public static HfMoeConfig fromMap(Map<String, Object> config) {
        return new HfMoeConfig(new LinkedHashMap<>(config), "config");
    }

    /**
     * Returns a named preset (a {@code config.json} kept as a resource of this module).
     *
     * <ul>
     *   <li>{@code deepseek-v3-671b}: DeepSeek-V3 (61 layers, 3 dense, 256 routed experts of which
     *       8 active in 4 of 8 groups, 1 shared, q-LoRA 1536, kv-LoRA 512, YaRN x40).
     *   <li>{@code deepseek-v3-16b}: the TorchTitan 16B shape: dim 2048, 27 layers with 1 dense, 64
     *       routed experts, 6 active, 2 shared, MoE width 1408, dense width 10944, 16 heads, MLA
     *       kv-LoRA 512 without q-LoRA, RoPE 64 + nope 128, v 128, vocab 102400.
     *   <li>{@code tiny}: a 4-layer DeepSeek-V3 for tests and the embedded default.
     *   <li>{@code tiny-deepseek-v2}, {@code tiny-qwen3-moe}: tiny models of the other families.
     * </ul>
     *
     * @param name the preset name (any case)
     * @return the configuration
     * @throws IllegalArgumentException for an unknown name
     */
    public static HfMoeConfig preset(String name) {
        return new HfMoeConfig(ConfigPresets.load(name), "preset " + name);
    }

    /**
     * Returns the names {@link #preset} knows.
     *
     * @return the names
     */
    public static List<String> presetNames() {
        return ConfigPresets.NAMES;
    }

    /**
     * Returns a copy with some {@code config.json} keys replaced.
     *
     * @param changes keys and new values
     * @return the new configuration
     */
    public HfMoeConfig with(Map<String, Object> changes) {
        Map<String, Object> m = new LinkedHashMap<>(raw);
        m.putAll(changes);
        return new HfMoeConfig(m, "config");
    }

    /**
     * Returns a copy with another number of decoder layers ({@code num_hidden_layers}); every other
     * setting stays. Layer i keeps its kind: the first {@code first_k_dense_replace} layers stay
     * dense, so {@code deepseek-v3-16b} cut to 4 layers has 1 dense and 3 MoE layers; for {@code
     * qwen3_moe}, entries of {@code mlp_only_layers} at or past the new count are dropped. More
     * layers than the configuration has continue its pattern.
     *
     * @param numLayers the new layer count, at least 1
     * @return the new configuration
     * @throws IllegalArgumentException naming the count and the limit when it is below 1 or leaves
     *     no MoE layer (for DeepSeek families: at most {@code first_k_dense_replace} layers)
     */
    public HfMoeConfig withNumLayers(int numLayers) {
        if (numLayers < 1) {
            throw new IllegalArgumentException("num_hidden_layers " + numLayers + " must be >= 1");
        }
        Map<String, Object> changes = new LinkedHashMap<>();
        changes.put("num_hidden_layers", (long) numLayers);
        if (!v.mlpOnlyLayers.isEmpty()) {
            List<Long> kept = new ArrayList<>();
            for (int i : new TreeSet<>(v.mlpOnlyLayers)) {
                if (i < numLayers) {
                    kept.add((long) i);
                }
            }
            changes.put("mlp_only_layers", kept);
        }
        HfMoeConfig cut = with(changes);
        if (cut.numMoeLayers() == 0) {
            String why =
                    v.family.isMla()
                            ? "the first first_k_dense_replace = "
                                    + v.firstKDenseReplace
                                    + " layers are dense; use more than "
                                    + v.firstKDenseReplace
                                    + " layers"
                            : "layers "
                                    + new TreeSet<>(v.mlpOnlyLayers)
                                    + " are dense"
                                    + " (mlp_only_layers) and decoder_sparse_step is "
                                    + v.decoderSparseStep;
            throw new IllegalArgumentException(
                    "num_hidden_layers " + numLayers + " leaves no MoE layer: " + why);
        }
        return cut;
    }

    /**
     * Returns the {@code config.json} content (the keys read, in their order, plus any others the
     * file had), for saving.
     *
     * @return the keys and values
     */
    public Map<String, Object> toMap() {
        return HfConfigJson.toMap(raw, v.family);
    }

    /**
     * Returns the {@code config.json} text.
     *
     * @return indented JSON
     */
    public String toJson() {
        return HfConfigJson.write(toMap());
    }

    /**
     * Whether decoder layer {@code i} has an MoE MLP (else a dense SwiGLU MLP).
     *
     * @param i the layer index
     * @return true for an MoE layer
     */
    public boolean isMoeLayer(int i) {
        if (v.family.isMla()) {
            return i >= v.firstKDenseReplace;
        }
        return !v.mlpOnlyLayers.contains(i)
                && v.numExperts > 0
                && (i + 1) % v.decoderSparseStep == 0;
    }

    /**
     * Returns the number of MoE layers.
     *
     * @return the count
     */
    public int numMoeLayers() {
        int n = 0;
        for (int i = 0; i < v.numLayers; i++) {
            if (isMoeLayer(i)) {
                n++;
            }
        }
        return n;
    }

    /**
     * Returns the router of the MoE layers as this family's transformers code routes.
     *
     * @return a router builder
     */
    public MoeRouter.Builder routerBuilder() {
        MoeRouter.Builder b = MoeRouter.builder().setNumExperts(v.numExperts).setTopK(v.topK);
        switch (v.family) {
            case DEEPSEEK_V3:
                b.optScoreFunction(ScoreFunction.SIGMOID)
                        .optCorrectionBias(true)
                        .optNormTopkProb(v.normTopkProb)
                        .optRoutedScalingFactor(v.routedScalingFactor);
                if (v.numGroups > 1) {
                    b.optNumGroups(v.numGroups).optTopkGroup(v.topkGroup);
                }
                break;
            case DEEPSEEK_V2:
                b.optScoreFunction(ScoreFunction.SOFTMAX)
                        .optNormTopkProb(false)
                        .optRoutedScalingFactor(v.routedScalingFactor);
                if ("group_limited_greedy".equals(v.topkMethod) && v.numGroups > 1) {
                    b.optNumGroups(v.numGroups).optTopkGroup(v.topkGroup).optGroupScoreTopN(1);
                }
                break;
            default:
                b.optScoreFunction(ScoreFunction.SOFTMAX).optNormTopkProb(v.normTopkProb);
                break;
        }
        return b;
    }

    /**
     * Returns the softmax scale of attention: {@code head_dim^-0.5}, for MLA times {@code
     * mscale(factor, mscale_all_dim)^2} when RoPE is scaled (transformers' {@code
     * yarn_apply_mscale}).
     *
     * @return the scale
     */
    public double attentionScale() {
        if (!v.family.isMla()) {
            return 1.0 / Math.sqrt(v.headDim);
        }
        double s = 1.0 / Math.sqrt(v.qkNopeHeadDim + v.qkRopeHeadDim);
        if (!"default".equals(v.rope.type())) {
            double mAll = v.rope.number("mscale_all_dim", 0);
            if (mAll != 0) {
                double m = RotaryEmbedding.yarnMscale(v.rope.number("factor", 1), mAll);
                s = s * m * m;
            }
        }
        return s;
    }

    /**
     * Counts the parameters of the model (all experts, no MTP modules); see {@link
     * MemoryPlan#parameters}.
     *
     * @return the number of parameters
     */
    public long numParameters() {
        return MemoryPlan.parameters(this);
    }

    /**
     * Counts the parameters of all routed experts; see {@link MemoryPlan#routedExpertParameters}.
     *
     * @return {@code moe_layers * E * 3 * H * I}
     */
    public long routedExpertParameters() {
        return MemoryPlan.routedExpertParameters(this);
    }

    /**
     * Counts every parameter that is not a routed expert; see {@link MemoryPlan#denseParameters}.
     *
     * @return the count
     */
    public long denseParameters() {
        return MemoryPlan.denseParameters(this);
    }

    /**
     * Counts the parameters of one attention block; see {@link MemoryPlan#attentionParameters}.
     *
     * @return the count
     */
    public long attentionParameters() {
        return MemoryPlan.attentionParameters(this);
    }

    // ---- accessors -------------------------------------------------------------------------

    /**
     * Returns the family.
     *
     * @return the family
     */
    public Family family() {
        return v.family;
    }

    /**
     * @return {@code vocab_size}
     */
    public long vocabSize() {
        return v.vocabSize;
    }

    /**
     * @return {@code hidden_size}
     */
    public long hiddenSize() {
        return v.hiddenSize;
    }

    /**
     * @return {@code intermediate_size}, the dense MLP width
     */
    public long intermediateSize() {
        return v.intermediateSize;
    }

    /**
     * @return {@code moe_intermediate_size}, the width of one expert
     */
    public long moeIntermediateSize() {
        return v.moeIntermediateSize;
    }

    /**
     * @return {@code num_hidden_layers}
     */
    public int numLayers() {
        return v.numLayers;
    }

    /**
     * @return {@code num_attention_heads}
     */
    public int numHeads() {
        return v.numHeads;
    }

    /**
     * @return {@code num_key_value_heads}
     */
    public int numKvHeads() {
        return v.numKvHeads;
    }

    /**
     * @return the head size of grouped-query attention (the rotary size for MLA)
     */
    public long headDim() {
        return v.headDim;
    }

    /**
     * @return {@code q_lora_rank}, 0 for none
     */
    public long qLoraRank() {
        return v.qLoraRank;
    }

    /**
     * @return {@code kv_lora_rank}
     */
    public long kvLoraRank() {
        return v.kvLoraRank;
    }

    /**
     * @return {@code qk_nope_head_dim}
     */
    public long qkNopeHeadDim() {
        return v.qkNopeHeadDim;
    }

    /**
     * @return {@code qk_rope_head_dim}
     */
    public long qkRopeHeadDim() {
        return v.qkRopeHeadDim;
    }

    /**
     * @return {@code v_head_dim}
     */
    public long vHeadDim() {
        return v.vHeadDim;
    }

    /**
     * @return the number of routed experts
     */
    public int numExperts() {
        return v.numExperts;
    }

    /**
     * @return {@code n_shared_experts} (0 for none)
     */
    public int numSharedExperts() {
        return v.numSharedExperts;
    }

    /**
     * @return {@code num_experts_per_tok}
     */
    public int topK() {
        return v.topK;
    }

    /**
     * @return {@code n_group}
     */
    public int numGroups() {
        return v.numGroups;
    }

    /**
     * @return {@code topk_group}
     */
    public int topkGroup() {
        return v.topkGroup;
    }

    /**
     * @return {@code norm_topk_prob} as the family's router applies it
     */
    public boolean normTopkProb() {
        return v.normTopkProb;
    }

    /**
     * @return {@code routed_scaling_factor}
     */
    public float routedScalingFactor() {
        return v.routedScalingFactor;
    }

    /**
     * @return {@code first_k_dense_replace}
     */
    public int firstKDenseReplace() {
        return v.firstKDenseReplace;
    }

    /**
     * @return {@code rms_norm_eps}
     */
    public float rmsNormEps() {
        return v.rmsNormEps;
    }

    /**
     * @return {@code tie_word_embeddings}
     */
    public boolean tieWordEmbeddings() {
        return v.tieWordEmbeddings;
    }

    /**
     * @return {@code attention_bias}
     */
    public boolean attentionBias() {
        return v.attentionBias;
    }

    /**
     * @return the sliding window of attention, 0 for none
     */
    public int slidingWindow() {
        return v.slidingWindow;
    }

    /**
     * @return the rotary embedding settings
     */
    public RotaryEmbedding.Settings rope() {
        return v.rope;
    }

    /**
     * @return the FP8 block size of {@code weight_scale_inv} dequantisation
     */
    public int[] fp8BlockSize() {
        return v.fp8BlockSize.clone();
    }

    /**
     * @return {@code initializer_range}
     */
    public float initializerRange() {
        return v.initializerRange;
    }

    @Override
    public String toString() {
        return v.family.modelType()
                + "{layers="
                + v.numLayers
                + ", hidden="
                + v.hiddenSize
                + ", experts="
                + v.numExperts
                + ", topK="
                + v.topK
                + ", params="
                + numParameters()
                + "}";
    }
}
