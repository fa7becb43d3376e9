/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

/**
 * One batch of next-token training data as flat row-major arrays.
 *
 * @param inputs {@code [B, S]} token ids
 * @param labels {@code [B, S]} next-token ids ({@code -100} where not counted)
 * @param batch B
 * @param seqLen S
 */
public record TokenBatch(long[] inputs, long[] labels, int batch, int seqLen) {}
