/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/** Greedy decoding with the KV cache and the low-latency EP mode. */
package dev.djlmoe.recipes.decode;
