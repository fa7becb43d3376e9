/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.nn.Block;
import ai.djl.training.ParameterStore;

/**
 * A causal self-attention block that can also run incrementally against a {@link KvCache}, as
 * {@link MultiHeadLatentAttention} and {@link GroupedQueryAttention} do. Its ordinary forward maps
 * {@code [B, S, H]} to {@code [B, S, H]}.
 */
public interface CachedAttention extends Block {

    /**
     * The incremental (KV-cached) forward, for inference: attends the new tokens to every cached
     * position of their sequence and appends what this attention keeps of them to the cache.
     *
     * @param ps the parameter store
     * @param x {@code [B, S, H]} the new tokens' inputs
     * @param cache the cache
     * @param layer this attention's layer index in the cache
     * @param start {@code [B]} the position of each sequence's first new token
     * @return {@code [B, S, H]}
     */
    NDArray forwardCached(ParameterStore ps, NDArray x, KvCache cache, int layer, long[] start);
}
