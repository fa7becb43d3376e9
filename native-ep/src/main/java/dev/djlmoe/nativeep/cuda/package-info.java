/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */

/**
 * The JavaCPP binding of the CUDA plug-in ({@code nativeep/cuda_api.h}, {@link
 * dev.djlmoe.nativeep.cuda.NativeEpCuda}), loaded only when a GPU is used, and its Java faces: the
 * normal-mode and low-latency buffers ({@link dev.djlmoe.nativeep.cuda.CudaEpBuffer}, {@link
 * dev.djlmoe.nativeep.cuda.CudaLowLatencyBuffer}), the one-pass AdamW ({@link
 * dev.djlmoe.nativeep.cuda.CudaAdamW}) and device queries ({@link
 * dev.djlmoe.nativeep.cuda.CudaDeviceInfo}).
 */
package dev.djlmoe.nativeep.cuda;
