/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The DJL blocks of the decoder around the MoE layers: multi-head latent attention (DeepSeek) and
 * grouped-query attention (Qwen3-MoE) with their cached forms for decoding, rotary embeddings,
 * RMSNorm, the token embedding and the causal language-model loss.
 */
package dev.djlmoe.zoo.nn;
