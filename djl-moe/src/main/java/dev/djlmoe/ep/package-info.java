/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The EP API: {@link dev.djlmoe.ep.EpBuffer} (layout, dispatch and combine with DeepEP's
 * normal-mode semantics) and {@link dev.djlmoe.ep.LowLatencyBuffer} (decoding), each over a backend
 * picked by the arrays' device (the CPU engine or the CUDA plug-in); their differentiable forms on
 * a tape ({@link dev.djlmoe.ep.EpAutograd}); and a rank's EP context ({@link
 * dev.djlmoe.ep.EpContext}: process group, buffer, device).
 */
package dev.djlmoe.ep;
