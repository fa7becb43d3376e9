/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;

/**
 * Name, memory and SM count of one CUDA device, as the plug-in's CUDA runtime sees them ({@code
 * nep_cuda_device_info}): for reports such as benchmarks, which need the GPU's name to know its
 * peak FLOP rate and the memory in use to report a peak.
 *
 * @param device the device index
 * @param name the device name, e.g. {@code "NVIDIA H100 80GB HBM3"}
 * @param totalBytes the device's memory
 * @param freeBytes the memory no context or process holds ({@code cudaMemGetInfo}); {@code
 *     totalBytes - freeBytes} is what every process on the device holds, its CUDA contexts and the
 *     caching allocators' reservations included
 * @param smCount the number of streaming multiprocessors
 */
public record CudaDeviceInfo(
        int device, String name, long totalBytes, long freeBytes, int smCount) {

    private static final int NAME_CAPACITY = 256;

    /**
     * Asks the plug-in about a device (creating its primary CUDA context if none exists yet).
     *
     * @param device the device index
     * @return the facts
     * @throws IllegalArgumentException naming the index and the devices visible when it is out of
     *     range
     * @throws CudaEpException when the plug-in has no CUDA (a build without nvcc) or the runtime
     *     fails
     */
    public static CudaDeviceInfo query(int device) {
        try (CudaCall call = new CudaCall();
                BytePointer name = new BytePointer(NAME_CAPACITY);
                LongPointer total = new LongPointer(1);
                LongPointer free = new LongPointer(1);
                IntPointer sms = new IntPointer(1)) {
            name.put(0, (byte) 0);
            call.check(
                    NativeEpCuda.nep_cuda_device_info(
                            device, name, NAME_CAPACITY, total, free, sms, call.err(), call.cap()),
                    "device info of GPU " + device);
            return new CudaDeviceInfo(
                    device,
                    CudaCall.text(name, NAME_CAPACITY - 1),
                    total.get(),
                    free.get(),
                    sms.get());
        }
    }

    /**
     * Returns the memory in use on the device by every process and context.
     *
     * @return {@code totalBytes - freeBytes}
     */
    public long usedBytes() {
        return totalBytes - freeBytes;
    }
}
