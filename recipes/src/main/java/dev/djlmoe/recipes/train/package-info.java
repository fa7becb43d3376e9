/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The training loop behind {@code pretrain} and {@code finetune}, in parts: the checks that run
 * before any rank starts ({@link dev.djlmoe.recipes.train.JobChecks}, {@link
 * dev.djlmoe.recipes.train.ResumeCheck}), the set-up ({@link dev.djlmoe.recipes.train.ResumePlan},
 * {@link dev.djlmoe.recipes.train.TrainingSession}), the step loop ({@link
 * dev.djlmoe.recipes.train.TrainingLoop}) and one DJL {@link
 * ai.djl.training.listener.TrainingListener} per concern: metrics, progress, checkpoints, the
 * exported model, held-out evaluation and plots.
 */
package dev.djlmoe.recipes.train;
