/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Expert-parallel training: the training step with its staged backward, gradient synchronisation
 * and clipping ({@link dev.djlmoe.train.EpTrainer}), the AdamW whose state is checkpointed ({@link
 * dev.djlmoe.train.CheckpointableAdamW}), parameter initialisation and the step's results.
 */
package dev.djlmoe.train;
