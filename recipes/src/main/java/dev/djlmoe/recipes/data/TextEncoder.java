/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.data;

/** Turns text into token ids (a tokenizer, seen from the data pipeline). */
public interface TextEncoder {

    /**
     * Encodes text without adding special tokens.
     *
     * @param text the text
     * @return the ids
     */
    long[] encode(String text);

    /**
     * Returns the id appended after each document or response, or -1 for none.
     *
     * @return the end-of-sequence id
     */
    default long eosId() {
        return -1;
    }

    /**
     * Describes the tokenizer (for fingerprints and logs).
     *
     * @return a short description
     */
    String describe();
}
