/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Benchmarks behind {@code djl-moe bench}: EP dispatch and combine, one MoE layer, and the training
 * step with its model FLOPs utilisation.
 */
package dev.djlmoe.recipes.bench;
