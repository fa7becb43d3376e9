/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * What the process group ({@code dev.djlmoe.dist}) and the EP buffers ({@code dev.djlmoe.ep}) both
 * stand on: one native call's error buffer and status translation ({@link
 * dev.djlmoe.core.NativeCall}), the data addresses of NDArrays without copying ({@link
 * dev.djlmoe.core.NativeMemory}, {@link dev.djlmoe.core.TorchMemory}), and the exceptions of native
 * failures ({@link dev.djlmoe.core.EpException}, {@link dev.djlmoe.core.EpTimeoutException}, {@link
 * dev.djlmoe.core.EpPeerException}). It depends on neither of them.
 */
package dev.djlmoe.core;
