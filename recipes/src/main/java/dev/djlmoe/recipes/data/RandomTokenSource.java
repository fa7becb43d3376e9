/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

import java.util.SplittableRandom;

/**
 * Tokens drawn uniformly at random from the whole vocabulary, for benchmarks: every sequence is
 * {@code seqLen + 1} random tokens, the inputs its first {@code seqLen} and the labels its last
 * {@code seqLen} (next-token prediction, every position counted). A step's batch depends only on
 * the seed and the step. Nothing can be learned from it: its unigram baseline is {@code ln V}.
 */
public final class RandomTokenSource implements TokenSource {

    private final int vocab;
    private final long seed;

    /**
     * Creates a source.
     *
     * @param vocab V, at least 2
     * @param seed fixes the tokens of every step
     * @throws IllegalArgumentException naming the vocabulary size when it is below 2
     */
    public RandomTokenSource(int vocab, long seed) {
        if (vocab < 2) {
            throw new IllegalArgumentException("vocabulary size " + vocab + " must be >= 2");
        }
        this.vocab = vocab;
        this.seed = seed;
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public TokenBatch batch(long step, int batch, int seqLen) {
        if (batch < 1 || seqLen < 1) {
            throw new IllegalArgumentException(
                    "batch " + batch + " and sequence length " + seqLen + " must be >= 1");
        }
        SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + step);
        long[] inputs = new long[batch * seqLen];
        long[] labels = new long[batch * seqLen];
        for (int b = 0; b < batch; b++) {
            long prev = r.nextInt(vocab);
            for (int s = 0; s < seqLen; s++) {
                long next = r.nextInt(vocab);
                inputs[b * seqLen + s] = prev;
                labels[b * seqLen + s] = next;
                prev = next;
            }
        }
        return new TokenBatch(inputs, labels, batch, seqLen);
    }

    @Override
    public double unigramEntropy() {
        return Math.log(vocab);
    }

    @Override
    public String describe() {
        return "uniformly random tokens (V=" + vocab + ", seed " + seed + ")";
    }

    @Override
    public String fingerprint() {
        return "random-tokens:v" + vocab + ":s" + seed;
    }
}
