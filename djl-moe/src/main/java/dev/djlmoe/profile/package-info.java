/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * Profiling of the training step: {@link dev.djlmoe.profile.StepPhases} times the named phases of
 * one step (forward of each layer and of the MoE path, loss, the staged backward, gradients,
 * optimizer) with the device waited for at each boundary. Nothing is measured, and nothing waits,
 * unless a recorder was started on the step's thread.
 */
package dev.djlmoe.profile;
