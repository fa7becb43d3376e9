/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

/** A deterministic stream of training batches. */
public interface TokenSource {

    /**
     * Returns the vocabulary size.
     *
     * @return V
     */
    int vocabSize();

    /**
     * Returns the batch of a step. The same step always gives the same batch, so runs are
     * reproducible and can resume at any step.
     *
     * @param step the step, 0-based
     * @param batch sequences in the batch
     * @param seqLen tokens per sequence
     * @return the batch
     */
    TokenBatch batch(long step, int batch, int seqLen);

    /**
     * Returns the entropy, in nats per token, of predicting each token from the token frequencies
     * alone: the loss a model that ignores context cannot beat.
     *
     * @return the unigram baseline
     */
    double unigramEntropy();
}
