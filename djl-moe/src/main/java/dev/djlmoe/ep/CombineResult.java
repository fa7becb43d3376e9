/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;

/**
 * What a combine returns to the source rank.
 *
 * @param out {@code [T, H]} float32: for each token the fp32 sum of the rows sent back by every
 *     rank that received it (zeros for a token sent nowhere)
 * @param outWeights {@code [T, K]} float32 combined the same way, or null
 */
public record CombineResult(NDArray out, NDArray outWeights) {}
