/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Hugging Face MoE models: their {@code config.json} ({@link dev.djlmoe.zoo.hf.HfMoeConfig}, one
 * reader per family, named presets), the causal language model built from it ({@link
 * dev.djlmoe.zoo.hf.HfMoeForCausalLm}, its {@link dev.djlmoe.zoo.hf.DecoderLayer}s), checkpoint
 * loading by Hugging Face names ({@link dev.djlmoe.zoo.hf.HfCheckpoints}) and the memory plan and
 * parameter counts ({@link dev.djlmoe.zoo.hf.MemoryPlan}).
 */
package dev.djlmoe.zoo.hf;
