/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import ai.djl.Device;

/**
 * The native quantisers and grouped GEMMs of one device, on raw addresses (see {@code
 * nativeep/gemm_api.h} for every argument); each call throws the native failure with its message.
 */
interface GemmKernels {

    void quantizeRows(int format, long x, long m, long k, long q, long s);

    void quantizeWeights(
            int format, long w, long g, long n, long k, boolean transpose, long q, long s);

    void quantizeRowsTGrouped(int format, long x, long m, long c, long[] offsets, long q, long s);

    void swigluQuantizeRows(int format, long y, long m, long inter, long hOut, long q, long s);

    void dswigluQuantizeRows(
            int format, long y, long dh, long m, long inter, long dyOut, long q, long s);

    /** The M-grouped GEMM on packed rows: the strided one with 0 (dense) for both strides. */
    default void groupedM(
            int format,
            long n,
            long k,
            long m,
            long[] offsets,
            long a,
            long sa,
            long b,
            long sb,
            long c) {
        groupedM(format, n, k, m, offsets, a, 0, sa, 0, b, sb, c);
    }

    /**
     * The M-grouped GEMM with row strides: {@code lda} and {@code ldsa} bytes between rows of the
     * elements and of the scales (0 = dense), as wire rows need.
     */
    void groupedM(
            int format,
            long n,
            long k,
            long m,
            long[] offsets,
            long a,
            long lda,
            long sa,
            long ldsa,
            long b,
            long sb,
            long c);

    void groupedK(
            int format, long n, long k, long[] offsets, long a, long sa, long b, long sb, long c);

    /**
     * Returns the kernels of a device: the CPU entry points for the CPU, the CUDA plug-in's on the
     * legacy default stream (libtorch's) for a GPU.
     *
     * @param device the arrays' device
     * @return the kernels
     */
    static GemmKernels of(Device device) {
        if (device.isGpu()) {
            return new CudaGemmKernels(device.getDeviceId());
        }
        return CpuGemmKernels.INSTANCE;
    }
}
