/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * A run's metrics ({@code metrics.jsonl}: step and held-out records, expert loads) and the plots
 * drawn from them (loss, expert-load heat map).
 */
package dev.djlmoe.recipes.metrics;
