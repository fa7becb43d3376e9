/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The routed experts' SwiGLU feed-forward with the native grouped FP8 GEMMs ({@code
 * nativeep/gemm_api.h}) on DJL NDArrays: CPU arrays run the CPU entry points (the plain oracle),
 * GPU arrays the CUDA plug-in's tensor-core kernels on libtorch's stream. {@link
 * dev.djlmoe.gemm.Fp8ExpertGemms} is the op; {@link dev.djlmoe.gemm.GemmFormat} names the two
 * block-scaled formats.
 */
package dev.djlmoe.gemm;
