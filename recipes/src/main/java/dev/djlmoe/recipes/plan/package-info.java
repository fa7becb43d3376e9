/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The training plan: what one training step costs per expert-parallel rank (memory, FLOPs, EP
 * traffic) before renting hardware.
 */
package dev.djlmoe.recipes.plan;
