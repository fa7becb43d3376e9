/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Training checkpoints: what a resumed run needs (weights, optimizer state, step, data position)
 * written under a temporary name and renamed, with a manifest.
 */
package dev.djlmoe.recipes.checkpoint;
