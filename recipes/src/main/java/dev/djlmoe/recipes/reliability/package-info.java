/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Bounded fuzzing of the native argument checks and codecs, soaking, and fault injection for the
 * reliability tests.
 */
package dev.djlmoe.recipes.reliability;
