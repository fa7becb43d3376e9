/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Training data as token batches: the embedded corpus, JSONL datasets, synthetic and random
 * sources, and the tokenizers that encode them.
 */
package dev.djlmoe.recipes.data;
