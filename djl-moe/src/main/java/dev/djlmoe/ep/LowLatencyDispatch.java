/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;

/**
 * What one rank receives from a low-latency dispatch.
 *
 * @param recvX {@code [E/W, W * max_tokens_per_rank, H]} float32: the rows of local expert e are
 *     {@code recvX[e, 0 : recvCount[e]]}, ordered by source rank, then source token; later rows are
 *     unspecified (not written)
 * @param recvCount {@code [E/W]} int32 valid rows per local expert
 * @param handle the routing, for {@link LowLatencyBuffer#combine}; owned by the caller
 */
public record LowLatencyDispatch(NDArray recvX, NDArray recvCount, LowLatencyHandle handle) {}
