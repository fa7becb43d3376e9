/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

/**
 * A deterministic stream of training batches: the batch of a step depends only on the step (and the
 * source's own settings), so a run's data position is its step and a resumed run reads exactly the
 * batches an uninterrupted one would.
 */
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

    /**
     * Describes the data for logs.
     *
     * @return a short description
     */
    default String describe() {
        return getClass().getSimpleName();
    }

    /**
     * Identifies the data and everything that decides which batch a step gets (content hash,
     * tokenizer, sampling settings); stored in checkpoints so that a resume on other data is
     * refused.
     *
     * @return an identifier
     */
    default String fingerprint() {
        return describe();
    }

    /**
     * Checks that the data can fill one batch.
     *
     * @param batch global batch in sequences
     * @param seqLen tokens per sequence
     * @throws IllegalArgumentException naming the data, its size and what one batch needs
     */
    default void checkBatch(int batch, int seqLen) {}

    /**
     * Returns held-out data from the same distribution (not seen in training), or null.
     *
     * @return the held-out source
     */
    default TokenSource heldOut() {
        return null;
    }
}
