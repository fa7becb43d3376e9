/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.ScoreFunction;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.nn.RotaryEmbedding;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
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
    private final Family family;
    private final long vocabSize;
    private final long hiddenSize;
    private final long intermediateSize;
    private final long moeIntermediateSize;
    private final int numLayers;
    private final int numHeads;
    private final int numKvHeads;
    private final long headDim;
    private final long qLoraRank;
    private final long kvLoraRank;
    private final long qkNopeHeadDim;
    private final long qkRopeHeadDim;
    private final long vHeadDim;
    private final int numExperts;
    private final int numSharedExperts;
    private final int topK;
    private final int numGroups;
    private final int topkGroup;
    private final String topkMethod;
    private final boolean normTopkProb;
    private final float routedScalingFactor;
    private final int firstKDenseReplace;
    private final int decoderSparseStep;
    private final Set<Integer> mlpOnlyLayers;
    private final float rmsNormEps;
    private final boolean tieWordEmbeddings;
    private final boolean attentionBias;
    private final boolean ropeInterleave;
    private final int slidingWindow;
    private final RotaryEmbedding.Settings rope;
    private final int[] fp8BlockSize;
    private final float initializerRange;

    private HfMoeConfig(Map<String, Object> raw, String source) {
        this.raw = raw;
        Reader r = new Reader(raw, source);
        String type = r.str("model_type", null);
        Family fam = null;
        for (Family f : Family.values()) {
            if (f.modelType.equals(type)) {
                fam = f;
            }
        }
        if (fam == null) {
            throw new IllegalArgumentException(
                    source + ": model_type \"" + type
                            + "\" is not supported: expected deepseek_v3, deepseek_v2 or qwen3_moe");
        }
        family = fam;
        vocabSize = r.posLong("vocab_size");
        hiddenSize = r.posLong("hidden_size");
        intermediateSize = r.posLong("intermediate_size");
        moeIntermediateSize = r.posLong("moe_intermediate_size");
        numLayers = r.posInt("num_hidden_layers");
        numHeads = r.posInt("num_attention_heads");
        numKvHeads = r.has("num_key_value_heads") ? r.posInt("num_key_value_heads") : numHeads;
        String act = r.str("hidden_act", "silu");
        if (!"silu".equals(act) && !"swish".equals(act)) {
            throw new IllegalArgumentException(
                    source + ": hidden_act \"" + act + "\" is not supported: expected \"silu\"");
        }
        if (r.bool("mlp_bias", false)) {
            throw new IllegalArgumentException(source + ": mlp_bias = true is not supported");
        }
        rmsNormEps = (float) r.num("rms_norm_eps", 1e-6);
        tieWordEmbeddings = r.bool("tie_word_embeddings", false);
        attentionBias = r.bool("attention_bias", false);
        initializerRange = (float) r.num("initializer_range", 0.02);
        if (family.isMla()) {
            qLoraRank = r.isNull("q_lora_rank") ? 0 : r.posLong("q_lora_rank");
            kvLoraRank = r.posLong("kv_lora_rank");
            qkNopeHeadDim = r.posLong("qk_nope_head_dim");
            qkRopeHeadDim = r.posLong("qk_rope_head_dim");
            vHeadDim = r.posLong("v_head_dim");
            headDim = qkRopeHeadDim;
            numExperts = r.posInt("n_routed_experts");
            numSharedExperts = r.isNull("n_shared_experts") ? 0 : r.nonNegInt("n_shared_experts");
            firstKDenseReplace = r.nonNegInt("first_k_dense_replace", 0);
            decoderSparseStep = 1;
            mlpOnlyLayers = Collections.emptySet();
            numGroups = r.isNull("n_group") ? 1 : r.posInt("n_group");
            topkGroup = r.isNull("topk_group") ? 1 : r.posInt("topk_group");
            routedScalingFactor = (float) r.num("routed_scaling_factor", 1.0);
            ropeInterleave = family == Family.DEEPSEEK_V2 || r.bool("rope_interleave", true);
            if (family == Family.DEEPSEEK_V3) {
                topkMethod = "noaux_tc";
                normTopkProb = r.bool("norm_topk_prob", true);
            } else {
                topkMethod = r.str("topk_method", "greedy");
                if (!"greedy".equals(topkMethod) && !"group_limited_greedy".equals(topkMethod)) {
                    throw new IllegalArgumentException(
                            source + ": topk_method \"" + topkMethod + "\" is not supported for"
                                    + " deepseek_v2: expected greedy or group_limited_greedy");
                }
                normTopkProb = false;
            }
            slidingWindow = 0;
        } else {
            qLoraRank = 0;
            kvLoraRank = 0;
            qkNopeHeadDim = 0;
            vHeadDim = 0;
            headDim = r.has("head_dim") && !r.isNull("head_dim")
                    ? r.posLong("head_dim") : hiddenSize / numHeads;
            qkRopeHeadDim = headDim;
            numExperts = r.has("num_experts") ? r.posInt("num_experts")
                    : r.posInt("num_local_experts");
            numSharedExperts = 0;
            firstKDenseReplace = 0;
            decoderSparseStep = r.posInt("decoder_sparse_step", 1);
            Set<Integer> only = new HashSet<>();
            if (r.has("mlp_only_layers") && !r.isNull("mlp_only_layers")) {
                for (Object o : r.list("mlp_only_layers")) {
                    if (!(o instanceof Long)) {
                        throw new IllegalArgumentException(
                                source + ": mlp_only_layers must hold integers, found " + o);
                    }
                    only.add(((Long) o).intValue());
                }
            }
            mlpOnlyLayers = Collections.unmodifiableSet(only);
            numGroups = 1;
            topkGroup = 1;
            topkMethod = "greedy";
            normTopkProb = r.bool("norm_topk_prob", false);
            routedScalingFactor = 1f;
            ropeInterleave = false;
            boolean sliding = r.bool("use_sliding_window", false);
            slidingWindow = sliding && r.has("sliding_window") && !r.isNull("sliding_window")
                    ? r.posInt("sliding_window") : 0;
        }
        topK = r.posInt("num_experts_per_tok");
        if (topK > numExperts) {
            throw new IllegalArgumentException(
                    source + ": num_experts_per_tok = " + topK + " exceeds the " + numExperts
                            + " routed experts");
        }
        if (numHeads % numKvHeads != 0) {
            throw new IllegalArgumentException(
                    source + ": num_attention_heads = " + numHeads
                            + " is not a multiple of num_key_value_heads = " + numKvHeads);
        }
        if (qkRopeHeadDim % 2 != 0) {
            throw new IllegalArgumentException(
                    source + ": the rotary dimension " + qkRopeHeadDim + " must be even");
        }
        rope = readRope(r, source, family.isMla() ? qkRopeHeadDim : headDim);
        int[] block = {128, 128};
        Object q = raw.get("quantization_config");
        if (q instanceof Map && ((Map<?, ?>) q).get("weight_block_size") instanceof List) {
            List<?> l = (List<?>) ((Map<?, ?>) q).get("weight_block_size");
            if (l.size() == 2 && l.get(0) instanceof Long && l.get(1) instanceof Long) {
                block = new int[] {((Long) l.get(0)).intValue(), ((Long) l.get(1)).intValue()};
            }
        }
        fp8BlockSize = block;
        // Router settings are validated here, not at the first forward.
        try {
            routerBuilder().buildConfig();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                    source + ": router settings (n_routed_experts or num_experts, "
                            + "num_experts_per_tok, n_group, topk_group, routed_scaling_factor): "
                            + e.getMessage(),
                    e);
        }
    }

    private RotaryEmbedding.Settings readRope(Reader r, String source, long dim) {
        Map<String, Object> params = null;
        double theta;
        if (r.has("rope_parameters") && r.raw.get("rope_parameters") instanceof Map) {
            params = r.map("rope_parameters");
            Object t = params.get("rope_theta");
            if (t != null && !(t instanceof Number && Double.isFinite(((Number) t).doubleValue()))) {
                // Never fall back to a default silently: the file says something else.
                throw new IllegalArgumentException(
                        source + ": rope_parameters.rope_theta must be a finite number, found "
                                + Json.typeName(t) + " " + t);
            }
            theta = t instanceof Number ? ((Number) t).doubleValue() : r.num("rope_theta", 10000);
        } else {
            theta = r.num("rope_theta", 10000);
            if (r.has("rope_scaling") && r.raw.get("rope_scaling") instanceof Map) {
                params = r.map("rope_scaling");
            }
        }
        String type = "default";
        if (params != null) {
            Object t = params.containsKey("rope_type") ? params.get("rope_type") : params.get("type");
            if (t instanceof String) {
                type = (String) t;
            }
        }
        long maxPos = r.has("max_position_embeddings")
                ? r.posLong("max_position_embeddings") : 4096;
        RotaryEmbedding.Settings s =
                new RotaryEmbedding.Settings(
                        (int) dim,
                        theta,
                        type,
                        params == null ? Map.of() : params,
                        maxPos,
                        ropeInterleave
                                ? RotaryEmbedding.Layout.INTERLEAVED
                                : RotaryEmbedding.Layout.HALF_SPLIT);
        try {
            s.validate();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
        return s;
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
        Path file = Files.isDirectory(path) ? path.resolve("config.json") : path;
        if (!Files.isRegularFile(file)) {
            throw new IOException(file + ": no config.json");
        }
        long size = Files.size(file);
        if (size > MAX_CONFIG_BYTES) {
            throw new IOException(file + ": " + size + " bytes, larger than the "
                    + MAX_CONFIG_BYTES + " accepted for config.json");
        }
        return parse(Files.readString(file, StandardCharsets.UTF_8), file.toString());
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
        return new HfMoeConfig(Json.parseObject(json, source), source);
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
     * Returns a named preset.
     *
     * <ul>
     *   <li>{@code deepseek-v3-671b}: DeepSeek-V3 (61 layers, 3 dense, 256 routed experts of
     *       which 8 active in 4 of 8 groups, 1 shared, q-LoRA 1536, kv-LoRA 512, YaRN x40).
     *   <li>{@code deepseek-v3-16b}: the TorchTitan 16B shape: dim 2048, 27 layers with 1 dense,
     *       64 routed experts, 6 active, 2 shared, MoE width 1408, dense width 10944, 16 heads,
     *       MLA kv-LoRA 512 without q-LoRA, RoPE 64 + nope 128, v 128, vocab 102400.
     *   <li>{@code tiny}: a 4-layer DeepSeek-V3 for tests and the embedded default.
     *   <li>{@code tiny-deepseek-v2}, {@code tiny-qwen3-moe}: tiny models of the other families.
     * </ul>
     *
     * @param name the preset name
     * @return the configuration
     * @throws IllegalArgumentException for an unknown name
     */
    public static HfMoeConfig preset(String name) {
        Map<String, Object> m = new LinkedHashMap<>();
        switch (name.toLowerCase(Locale.ROOT)) {
            case "deepseek-v3-671b":
                deepseekV3(m, 129280, 7168, 18432, 2048, 61, 3, 128, 256, 8, 1, 8, 4, 2.5);
                m.put("q_lora_rank", 1536L);
                m.put("kv_lora_rank", 512L);
                m.put("qk_nope_head_dim", 128L);
                m.put("qk_rope_head_dim", 64L);
                m.put("v_head_dim", 128L);
                m.put("max_position_embeddings", 163840L);
                m.put("num_nextn_predict_layers", 1L);
                Map<String, Object> yarn = new LinkedHashMap<>();
                yarn.put("rope_type", "yarn");
                yarn.put("rope_theta", 10000.0);
                yarn.put("factor", 40.0);
                yarn.put("original_max_position_embeddings", 4096L);
                yarn.put("beta_fast", 32L);
                yarn.put("beta_slow", 1L);
                yarn.put("mscale", 1.0);
                yarn.put("mscale_all_dim", 1.0);
                m.put("rope_parameters", yarn);
                break;
            case "deepseek-v3-16b":
                deepseekV3(m, 102400, 2048, 10944, 1408, 27, 1, 16, 64, 6, 2, 1, 1, 1.0);
                m.put("q_lora_rank", null);
                m.put("kv_lora_rank", 512L);
                m.put("qk_nope_head_dim", 128L);
                m.put("qk_rope_head_dim", 64L);
                m.put("v_head_dim", 128L);
                m.put("max_position_embeddings", 4096L);
                m.put("rope_parameters", defaultRope(10000.0));
                break;
            case "tiny":
                deepseekV3(m, 256, 64, 128, 32, 4, 1, 4, 8, 2, 1, 4, 2, 1.0);
                m.put("q_lora_rank", 32L);
                m.put("kv_lora_rank", 32L);
                m.put("qk_nope_head_dim", 16L);
                m.put("qk_rope_head_dim", 8L);
                m.put("v_head_dim", 16L);
                m.put("max_position_embeddings", 512L);
                m.put("rope_parameters", defaultRope(10000.0));
                break;
            case "tiny-deepseek-v2":
                deepseekV3(m, 256, 64, 128, 32, 3, 1, 4, 8, 2, 2, 1, 1, 1.0);
                m.put("model_type", "deepseek_v2");
                m.put("architectures", List.of("DeepseekV2ForCausalLM"));
                m.put("topk_method", "greedy");
                m.put("norm_topk_prob", false);
                m.put("q_lora_rank", null);
                m.put("kv_lora_rank", 32L);
                m.put("qk_nope_head_dim", 16L);
                m.put("qk_rope_head_dim", 8L);
                m.put("v_head_dim", 16L);
                m.put("max_position_embeddings", 512L);
                m.put("rope_parameters", defaultRope(10000.0));
                break;
            case "tiny-qwen3-moe":
                m.put("architectures", List.of("Qwen3MoeForCausalLM"));
                m.put("model_type", "qwen3_moe");
                m.put("vocab_size", 256L);
                m.put("hidden_size", 64L);
                m.put("intermediate_size", 128L);
                m.put("moe_intermediate_size", 32L);
                m.put("num_hidden_layers", 3L);
                m.put("num_attention_heads", 4L);
                m.put("num_key_value_heads", 2L);
                m.put("head_dim", 16L);
                m.put("num_experts", 8L);
                m.put("num_experts_per_tok", 2L);
                m.put("norm_topk_prob", true);
                m.put("decoder_sparse_step", 1L);
                m.put("mlp_only_layers", new ArrayList<>(List.of(0L)));
                m.put("rms_norm_eps", 1e-6);
                m.put("hidden_act", "silu");
                m.put("tie_word_embeddings", false);
                m.put("attention_bias", false);
                m.put("max_position_embeddings", 512L);
                m.put("rope_parameters", defaultRope(1000000.0));
                break;
            default:
                throw new IllegalArgumentException(
                        "unknown preset \"" + name + "\": expected deepseek-v3-671b,"
                                + " deepseek-v3-16b, tiny, tiny-deepseek-v2 or tiny-qwen3-moe");
        }
        return new HfMoeConfig(m, "preset " + name);
    }

    private static Map<String, Object> defaultRope(double theta) {
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("rope_type", "default");
        r.put("rope_theta", theta);
        return r;
    }

    private static void deepseekV3(
            Map<String, Object> m,
            long vocab,
            long hidden,
            long dense,
            long moe,
            long layers,
            long firstDense,
            long heads,
            long experts,
            long topK,
            long shared,
            long groups,
            long topkGroup,
            double scale) {
        m.put("architectures", List.of("DeepseekV3ForCausalLM"));
        m.put("model_type", "deepseek_v3");
        m.put("vocab_size", vocab);
        m.put("hidden_size", hidden);
        m.put("intermediate_size", dense);
        m.put("moe_intermediate_size", moe);
        m.put("num_hidden_layers", layers);
        m.put("first_k_dense_replace", firstDense);
        m.put("num_attention_heads", heads);
        m.put("num_key_value_heads", heads);
        m.put("n_routed_experts", experts);
        m.put("num_experts_per_tok", topK);
        m.put("n_shared_experts", shared);
        m.put("n_group", groups);
        m.put("topk_group", topkGroup);
        m.put("routed_scaling_factor", scale);
        m.put("norm_topk_prob", true);
        m.put("hidden_act", "silu");
        m.put("rms_norm_eps", 1e-6);
        m.put("tie_word_embeddings", false);
        m.put("attention_bias", false);
        m.put("rope_interleave", true);
        m.put("initializer_range", 0.02);
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
            throw new IllegalArgumentException(
                    "num_hidden_layers " + numLayers + " must be >= 1");
        }
        Map<String, Object> changes = new LinkedHashMap<>();
        changes.put("num_hidden_layers", (long) numLayers);
        if (!mlpOnlyLayers.isEmpty()) {
            List<Long> kept = new ArrayList<>();
            for (int i : new TreeSet<>(mlpOnlyLayers)) {
                if (i < numLayers) {
                    kept.add((long) i);
                }
            }
            changes.put("mlp_only_layers", kept);
        }
        HfMoeConfig cut = with(changes);
        if (cut.numMoeLayers() == 0) {
            String why = family.isMla()
                    ? "the first first_k_dense_replace = " + firstKDenseReplace
                            + " layers are dense; use more than " + firstKDenseReplace + " layers"
                    : "layers " + new TreeSet<>(mlpOnlyLayers) + " are dense"
                            + " (mlp_only_layers) and decoder_sparse_step is " + decoderSparseStep;
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
        Map<String, Object> m = new LinkedHashMap<>(raw);
        m.putIfAbsent("architectures", List.of(family.architecture()));
        m.putIfAbsent("torch_dtype", "float32");
        return m;
    }

    /**
     * Returns the {@code config.json} text.
     *
     * @return indented JSON
     */
    public String toJson() {
        return Json.write(toMap()) + "\n";
    }

    /**
     * Whether decoder layer {@code i} has an MoE MLP (else a dense SwiGLU MLP).
     *
     * @param i the layer index
     * @return true for an MoE layer
     */
    public boolean isMoeLayer(int i) {
        if (family.isMla()) {
            return i >= firstKDenseReplace;
        }
        return !mlpOnlyLayers.contains(i) && numExperts > 0 && (i + 1) % decoderSparseStep == 0;
    }

    /**
     * Returns the number of MoE layers.
     *
     * @return the count
     */
    public int numMoeLayers() {
        int n = 0;
        for (int i = 0; i < numLayers; i++) {
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
        MoeRouter.Builder b = MoeRouter.builder().setNumExperts(numExperts).setTopK(topK);
        switch (family) {
            case DEEPSEEK_V3:
                b.optScoreFunction(ScoreFunction.SIGMOID)
                        .optCorrectionBias(true)
                        .optNormTopkProb(normTopkProb)
                        .optRoutedScalingFactor(routedScalingFactor);
                if (numGroups > 1) {
                    b.optNumGroups(numGroups).optTopkGroup(topkGroup);
                }
                break;
            case DEEPSEEK_V2:
                b.optScoreFunction(ScoreFunction.SOFTMAX)
                        .optNormTopkProb(false)
                        .optRoutedScalingFactor(routedScalingFactor);
                if ("group_limited_greedy".equals(topkMethod) && numGroups > 1) {
                    b.optNumGroups(numGroups).optTopkGroup(topkGroup).optGroupScoreTopN(1);
                }
                break;
            default:
                b.optScoreFunction(ScoreFunction.SOFTMAX).optNormTopkProb(normTopkProb);
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
        if (!family.isMla()) {
            return 1.0 / Math.sqrt(headDim);
        }
        double s = 1.0 / Math.sqrt(qkNopeHeadDim + qkRopeHeadDim);
        if (!"default".equals(rope.type())) {
            double mAll = rope.number("mscale_all_dim", 0);
            if (mAll != 0) {
                double m = RotaryEmbedding.yarnMscale(rope.number("factor", 1), mAll);
                s = s * m * m;
            }
        }
        return s;
    }

    /**
     * Counts the parameters of the model (all experts, no MTP modules).
     *
     * @return the number of parameters
     */
    public long numParameters() {
        return denseParameters() + routedExpertParameters();
    }

    /**
     * Counts the parameters of all routed experts.
     *
     * @return {@code moe_layers * E * 3 * H * I}
     */
    public long routedExpertParameters() {
        return (long) numMoeLayers() * numExperts * 3L * hiddenSize * moeIntermediateSize;
    }

    /**
     * Counts every parameter that is not a routed expert (embeddings, attention, norms, dense
     * MLPs, shared experts, routers and correction biases, head).
     *
     * @return the count
     */
    public long denseParameters() {
        long h = hiddenSize;
        long n = vocabSize * h; // embed_tokens
        if (!tieWordEmbeddings) {
            n += vocabSize * h;
        }
        n += h; // final norm
        long attn = attentionParameters();
        for (int i = 0; i < numLayers; i++) {
            n += 2 * h + attn;
            if (isMoeLayer(i)) {
                n += (long) numExperts * h; // router
                if (family == Family.DEEPSEEK_V3) {
                    n += numExperts; // correction bias
                }
                n += 3L * h * moeIntermediateSize * numSharedExperts;
            } else {
                n += 3L * h * intermediateSize;
            }
        }
        return n;
    }

    /**
     * Counts the parameters of one attention block.
     *
     * @return the count
     */
    public long attentionParameters() {
        long h = hiddenSize;
        long nh = numHeads;
        if (family.isMla()) {
            long qk = qkNopeHeadDim + qkRopeHeadDim;
            long n = 0;
            if (qLoraRank > 0) {
                n += h * qLoraRank + qLoraRank + qLoraRank * nh * qk;
                if (attentionBias) {
                    n += qLoraRank;
                }
            } else {
                n += h * nh * qk;
            }
            n += h * (kvLoraRank + qkRopeHeadDim) + kvLoraRank;
            n += kvLoraRank * nh * (qkNopeHeadDim + vHeadDim);
            n += nh * vHeadDim * h;
            if (attentionBias) {
                n += kvLoraRank + qkRopeHeadDim + h;
            }
            return n;
        }
        long kv = numKvHeads;
        long n = h * nh * headDim + 2 * h * kv * headDim + nh * headDim * h + 2 * headDim;
        if (attentionBias) {
            n += nh * headDim + 2 * kv * headDim + h;
        }
        return n;
    }

    // ---- accessors -------------------------------------------------------------------------

    /**
     * Returns the family.
     *
     * @return the family
     */
    public Family family() {
        return family;
    }

    /** @return {@code vocab_size} */
    public long vocabSize() {
        return vocabSize;
    }

    /** @return {@code hidden_size} */
    public long hiddenSize() {
        return hiddenSize;
    }

    /** @return {@code intermediate_size}, the dense MLP width */
    public long intermediateSize() {
        return intermediateSize;
    }

    /** @return {@code moe_intermediate_size}, the width of one expert */
    public long moeIntermediateSize() {
        return moeIntermediateSize;
    }

    /** @return {@code num_hidden_layers} */
    public int numLayers() {
        return numLayers;
    }

    /** @return {@code num_attention_heads} */
    public int numHeads() {
        return numHeads;
    }

    /** @return {@code num_key_value_heads} */
    public int numKvHeads() {
        return numKvHeads;
    }

    /** @return the head size of grouped-query attention (the rotary size for MLA) */
    public long headDim() {
        return headDim;
    }

    /** @return {@code q_lora_rank}, 0 for none */
    public long qLoraRank() {
        return qLoraRank;
    }

    /** @return {@code kv_lora_rank} */
    public long kvLoraRank() {
        return kvLoraRank;
    }

    /** @return {@code qk_nope_head_dim} */
    public long qkNopeHeadDim() {
        return qkNopeHeadDim;
    }

    /** @return {@code qk_rope_head_dim} */
    public long qkRopeHeadDim() {
        return qkRopeHeadDim;
    }

    /** @return {@code v_head_dim} */
    public long vHeadDim() {
        return vHeadDim;
    }

    /** @return the number of routed experts */
    public int numExperts() {
        return numExperts;
    }

    /** @return {@code n_shared_experts} (0 for none) */
    public int numSharedExperts() {
        return numSharedExperts;
    }

    /** @return {@code num_experts_per_tok} */
    public int topK() {
        return topK;
    }

    /** @return {@code n_group} */
    public int numGroups() {
        return numGroups;
    }

    /** @return {@code topk_group} */
    public int topkGroup() {
        return topkGroup;
    }

    /** @return {@code norm_topk_prob} as the family's router applies it */
    public boolean normTopkProb() {
        return normTopkProb;
    }

    /** @return {@code routed_scaling_factor} */
    public float routedScalingFactor() {
        return routedScalingFactor;
    }

    /** @return {@code first_k_dense_replace} */
    public int firstKDenseReplace() {
        return firstKDenseReplace;
    }

    /** @return {@code rms_norm_eps} */
    public float rmsNormEps() {
        return rmsNormEps;
    }

    /** @return {@code tie_word_embeddings} */
    public boolean tieWordEmbeddings() {
        return tieWordEmbeddings;
    }

    /** @return {@code attention_bias} */
    public boolean attentionBias() {
        return attentionBias;
    }

    /** @return the sliding window of attention, 0 for none */
    public int slidingWindow() {
        return slidingWindow;
    }

    /** @return the rotary embedding settings */
    public RotaryEmbedding.Settings rope() {
        return rope;
    }

    /** @return the FP8 block size of {@code weight_scale_inv} dequantisation */
    public int[] fp8BlockSize() {
        return fp8BlockSize.clone();
    }

    /** @return {@code initializer_range} */
    public float initializerRange() {
        return initializerRange;
    }

    @Override
    public String toString() {
        return family.modelType() + "{layers=" + numLayers + ", hidden=" + hiddenSize + ", experts="
                + numExperts + ", topK=" + topK + ", params=" + numParameters() + "}";
    }

    /** Typed access to config keys with errors that name the key. */
    private static final class Reader {
        private final Map<String, Object> raw;
        private final String source;

        Reader(Map<String, Object> raw, String source) {
            this.raw = raw;
            this.source = source;
        }

        boolean has(String key) {
            return raw.containsKey(key);
        }

        boolean isNull(String key) {
            return raw.get(key) == null;
        }

        private IllegalArgumentException bad(String key, String expected) {
            Object v = raw.get(key);
            return new IllegalArgumentException(
                    source + ": " + key + " must be " + expected + ", found "
                            + (raw.containsKey(key) ? Json.typeName(v) + " " + v : "nothing"));
        }

        String str(String key, String dflt) {
            Object v = raw.get(key);
            if (v == null) {
                if (dflt == null) {
                    throw bad(key, "a string");
                }
                return dflt;
            }
            if (!(v instanceof String)) {
                throw bad(key, "a string");
            }
            return (String) v;
        }

        long posLong(String key) {
            Object v = raw.get(key);
            if (!(v instanceof Long) || (Long) v <= 0) {
                throw bad(key, "a positive integer");
            }
            return (Long) v;
        }

        int posInt(String key) {
            long v = posLong(key);
            if (v > Integer.MAX_VALUE) {
                throw bad(key, "a positive 32-bit integer");
            }
            return (int) v;
        }

        int posInt(String key, int dflt) {
            return raw.get(key) == null ? dflt : posInt(key);
        }

        int nonNegInt(String key) {
            Object v = raw.get(key);
            if (!(v instanceof Long) || (Long) v < 0 || (Long) v > Integer.MAX_VALUE) {
                throw bad(key, "a non-negative integer");
            }
            return ((Long) v).intValue();
        }

        int nonNegInt(String key, int dflt) {
            return raw.get(key) == null ? dflt : nonNegInt(key);
        }

        double num(String key, double dflt) {
            Object v = raw.get(key);
            if (v == null) {
                return dflt;
            }
            if (!(v instanceof Number) || !Double.isFinite(((Number) v).doubleValue())) {
                throw bad(key, "a finite number");
            }
            return ((Number) v).doubleValue();
        }

        boolean bool(String key, boolean dflt) {
            Object v = raw.get(key);
            if (v == null) {
                return dflt;
            }
            if (!(v instanceof Boolean)) {
                throw bad(key, "true or false");
            }
            return (Boolean) v;
        }

        List<?> list(String key) {
            Object v = raw.get(key);
            if (!(v instanceof List)) {
                throw bad(key, "an array");
            }
            return (List<?>) v;
        }

        @SuppressWarnings("unchecked")
        Map<String, Object> map(String key) {
            Object v = raw.get(key);
            if (!(v instanceof Map)) {
                throw bad(key, "an object");
            }
            return (Map<String, Object>) v;
        }
    }
}
