/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

/**
 * Reads the keys of the DeepSeek families ({@code deepseek_v3}, {@code deepseek_v2}) as
 * transformers does: Multi-head Latent Attention sizes, {@code first_k_dense_replace} dense layers,
 * shared experts, group-limited routing; for V3 the sigmoid router with {@code norm_topk_prob}
 * (default true) and {@code rope_interleave} (default true); for V2 the {@code topk_method} ({@code
 * greedy} or {@code group_limited_greedy}), interleaved RoPE and weights never renormalised
 * (transformers ignores {@code norm_topk_prob} there).
 */
final class DeepseekConfigReader {

    private DeepseekConfigReader() {}

    /**
     * Reads this family's settings.
     *
     * @param keys the file's keys
     * @param v the settings to fill ({@link ConfigValues#family} already set)
     */
    static void read(ConfigKeys keys, ConfigValues v) {
        v.qLoraRank = keys.isNull("q_lora_rank") ? 0 : keys.posLong("q_lora_rank");
        v.kvLoraRank = keys.posLong("kv_lora_rank");
        v.qkNopeHeadDim = keys.posLong("qk_nope_head_dim");
        v.qkRopeHeadDim = keys.posLong("qk_rope_head_dim");
        v.vHeadDim = keys.posLong("v_head_dim");
        v.headDim = v.qkRopeHeadDim;
        v.numExperts = keys.posInt("n_routed_experts");
        v.numSharedExperts =
                keys.isNull("n_shared_experts") ? 0 : keys.nonNegInt("n_shared_experts");
        v.firstKDenseReplace = keys.nonNegInt("first_k_dense_replace", 0);
        v.numGroups = keys.isNull("n_group") ? 1 : keys.posInt("n_group");
        v.topkGroup = keys.isNull("topk_group") ? 1 : keys.posInt("topk_group");
        v.routedScalingFactor = (float) keys.num("routed_scaling_factor", 1.0);
        boolean v2 = v.family == HfMoeConfig.Family.DEEPSEEK_V2;
        v.ropeInterleave = v2 || keys.bool("rope_interleave", true);
        if (!v2) {
            v.topkMethod = "noaux_tc";
            v.normTopkProb = keys.bool("norm_topk_prob", true);
            return;
        }
        v.topkMethod = keys.str("topk_method", "greedy");
        if (!"greedy".equals(v.topkMethod) && !"group_limited_greedy".equals(v.topkMethod)) {
            throw keys.fail(
                    "topk_method \""
                            + v.topkMethod
                            + "\" is not supported for"
                            + " deepseek_v2: expected greedy or group_limited_greedy");
        }
        v.normTopkProb = false;
    }
}
