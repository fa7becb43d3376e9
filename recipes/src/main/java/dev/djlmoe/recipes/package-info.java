/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The pretraining recipe ({@link dev.djlmoe.recipes.Pretrain} and its options) and the flags it
 * shares with the other commands (device, precision, stop signal).
 */
package dev.djlmoe.recipes;
