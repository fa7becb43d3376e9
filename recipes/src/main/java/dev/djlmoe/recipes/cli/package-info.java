/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The {@code djl-moe} command line: {@link dev.djlmoe.recipes.cli.Main} and one class per command
 * (pretrain, finetune, launch, bench, plan, plot, decode, fuzz, soak, study).
 */
package dev.djlmoe.recipes.cli;
