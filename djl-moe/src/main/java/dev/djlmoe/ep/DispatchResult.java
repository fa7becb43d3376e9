/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;

/**
 * What one rank receives from a dispatch.
 *
 * @param recvX {@code [R, H]} float32 rows, ordered by source rank then source token index
 * @param recvTopkIdx {@code [R, K]} int64 local expert ids in {@code [0, E/W)} or -1 (null for a
 *     cached dispatch)
 * @param recvTopkWeights {@code [R, K]} float32, zero where the expert is not local (null when no
 *     weights were dispatched)
 * @param recvTokensPerExpert {@code [E/W]} rows per local expert, padded to the alignment
 * @param handle the routing, for combine and cached dispatch (shared, not owned, by a cached
 *     result)
 */
public record DispatchResult(
        NDArray recvX,
        NDArray recvTopkIdx,
        NDArray recvTopkWeights,
        int[] recvTokensPerExpert,
        EpHandle handle) {}
