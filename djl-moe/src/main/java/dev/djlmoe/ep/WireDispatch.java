/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;

/**
 * What one rank receives from a dispatch that keeps the rows in their wire form ({@link
 * EpBuffer#dispatchWire(NDArray, NDArray, NDArray, int, int, WireFormat)}): as {@link
 * DispatchResult}, with the rows as {@link WireRows} instead of float32.
 *
 * @param recv {@code [R, rowBytes]} uint8 wire rows, ordered by source rank then source token index
 * @param recvTopkIdx {@code [R, K]} int64 local expert ids in {@code [0, E/W)} or -1
 * @param recvTopkWeights {@code [R, K]} float32, zero where the expert is not local (null when no
 *     weights were dispatched)
 * @param recvTokensPerExpert {@code [E/W]} rows per local expert, padded to the alignment
 * @param handle the routing, for combine and cached dispatch (owned by the caller)
 */
public record WireDispatch(
        WireRows recv,
        NDArray recvTopkIdx,
        NDArray recvTopkWeights,
        int[] recvTokensPerExpert,
        EpHandle handle) {}
