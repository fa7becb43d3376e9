/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import java.util.Collections;
import java.util.HashSet;
import java.util.Set;

/**
 * Reads the keys of {@code qwen3_moe} as transformers does: grouped-query attention ({@code
 * head_dim}, default {@code hidden_size / num_attention_heads}) with half-split RoPE; {@code
 * num_experts} (or {@code num_local_experts}), softmax top-k with {@code norm_topk_prob} (default
 * false), no shared experts; MoE layers chosen by {@code decoder_sparse_step} and {@code
 * mlp_only_layers}; a sliding window only when {@code use_sliding_window}.
 */
final class Qwen3MoeConfigReader {

    private Qwen3MoeConfigReader() {}

    /**
     * Reads this family's settings.
     *
     * @param keys the file's keys
     * @param v the settings to fill (the shared keys already read)
     */
    static void read(ConfigKeys keys, ConfigValues v) {
        v.headDim =
                keys.has("head_dim") && !keys.isNull("head_dim")
                        ? keys.posLong("head_dim")
                        : v.hiddenSize / v.numHeads;
        v.qkRopeHeadDim = v.headDim;
        v.numExperts =
                keys.has("num_experts")
                        ? keys.posInt("num_experts")
                        : keys.posInt("num_local_experts");
        v.decoderSparseStep = keys.posInt("decoder_sparse_step", 1);
        Set<Integer> only = new HashSet<>();
        if (keys.has("mlp_only_layers") && !keys.isNull("mlp_only_layers")) {
            for (Object o : keys.list("mlp_only_layers")) {
                if (!(o instanceof Long)) {
                    throw keys.fail("mlp_only_layers must hold integers, found " + o);
                }
                only.add(((Long) o).intValue());
            }
        }
        v.mlpOnlyLayers = Collections.unmodifiableSet(only);
        v.normTopkProb = keys.bool("norm_topk_prob", false);
        boolean sliding = keys.bool("use_sliding_window", false);
        v.slidingWindow =
                sliding && keys.has("sliding_window") && !keys.isNull("sliding_window")
                        ? keys.posInt("sliding_window")
                        : 0;
    }
}
