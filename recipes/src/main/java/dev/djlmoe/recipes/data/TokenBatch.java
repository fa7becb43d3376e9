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
public record TokenBatch(long[] inputs, long[] labels, int batch, int seqLen) {

    /**
     * Returns rank {@code rank}'s contiguous share of the sequences.
     *
     * @param rank this rank
     * @param worldSize the ranks sharing the batch (must divide B)
     * @return {@code B / worldSize} sequences
     */
    public TokenBatch shard(int rank, int worldSize) {
        if (batch % worldSize != 0) {
            throw new IllegalArgumentException(
                    "batch " + batch + " is not divisible by the world size " + worldSize);
        }
        if (worldSize == 1) {
            return this;
        }
        int per = batch / worldSize;
        int from = rank * per * seqLen;
        int to = from + per * seqLen;
        return new TokenBatch(
                java.util.Arrays.copyOfRange(inputs, from, to),
                java.util.Arrays.copyOfRange(labels, from, to),
                per,
                seqLen);
    }
}
