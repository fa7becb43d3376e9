/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The {@code launch} command's machinery: it spawns the local ranks with the torchrun environment,
 * forwards their output with a rank prefix and watches the parent process.
 */
package dev.djlmoe.recipes.launch;
