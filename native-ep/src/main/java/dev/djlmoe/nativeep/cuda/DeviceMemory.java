/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.ShortPointer;

/**
 * Device memory allocated by the plug-in (cudaMalloc on one device), with synchronous copies from
 * and to Java arrays. For callers that have no CUDA runtime of their own; a DJL GPU tensor's
 * address can be passed to {@link CudaEpBuffer} directly instead.
 */
public final class DeviceMemory implements AutoCloseable {

    private final int device;
    private final long bytes;
    private long address;

    private DeviceMemory(int device, long bytes, long address) {
        this.device = device;
        this.bytes = bytes;
        this.address = address;
    }

    /**
     * Allocates.
     *
     * @param device the CUDA device
     * @param bytes the size (0 allocates one byte)
     * @return the memory
     */
    public static DeviceMemory allocate(int device, long bytes) {
        try (CudaCall call = new CudaCall();
                LongPointer out = new LongPointer(1)) {
            call.check(
                    NativeEpCuda.nep_cuda_malloc(device, bytes, out, call.err(), call.cap()),
                    "cudaMalloc");
            return new DeviceMemory(device, bytes, out.get());
        }
    }

    /**
     * @return the device address
     */
    public long address() {
        if (address == 0) {
            throw new IllegalStateException("device memory is freed");
        }
        return address;
    }

    /**
     * @return the size in bytes
     */
    public long bytes() {
        return bytes;
    }

    /**
     * Fills every byte with a value (e.g. to poison outputs before a kernel).
     *
     * @param value the byte
     */
    public void fill(int value) {
        CudaCall.run(
                "cudaMemset",
                (err, cap) ->
                        NativeEpCuda.nep_cuda_memset(device, address(), value, bytes, err, cap));
    }

    private void copyIn(Pointer p, long n) {
        if (n > bytes) {
            throw new IllegalArgumentException(n + " bytes do not fit in " + bytes);
        }
        memcpy(address(), p.address(), n, "upload");
    }

    private void copyOut(Pointer p, long n) {
        if (n > bytes) {
            throw new IllegalArgumentException(n + " bytes exceed " + bytes);
        }
        memcpy(p.address(), address(), n, "download");
    }

    private void memcpy(long dst, long src, long n, String operation) {
        CudaCall.run(
                operation,
                (err, cap) -> NativeEpCuda.nep_cuda_memcpy(device, dst, src, n, err, cap));
    }

    /**
     * @param v values to copy to the start of this memory
     */
    public void upload(float[] v) {
        try (FloatPointer p = new FloatPointer(v)) {
            copyIn(p, 4L * v.length);
        }
    }

    /**
     * @param v values to copy to the start of this memory
     */
    public void upload(long[] v) {
        try (LongPointer p = new LongPointer(v)) {
            copyIn(p, 8L * v.length);
        }
    }

    /**
     * @param v values to copy to the start of this memory
     */
    public void upload(short[] v) {
        try (ShortPointer p = new ShortPointer(v)) {
            copyIn(p, 2L * v.length);
        }
    }

    /**
     * @param v receives the first {@code v.length} values of this memory
     */
    public void download(float[] v) {
        try (FloatPointer p = new FloatPointer(v.length)) {
            copyOut(p, 4L * v.length);
            p.get(v);
        }
    }

    /**
     * @param v receives the first {@code v.length} values of this memory
     */
    public void download(long[] v) {
        try (LongPointer p = new LongPointer(v.length)) {
            copyOut(p, 8L * v.length);
            p.get(v);
        }
    }

    /**
     * @param v receives the first {@code v.length} values of this memory
     */
    public void download(int[] v) {
        try (IntPointer p = new IntPointer(v.length)) {
            copyOut(p, 4L * v.length);
            p.get(v);
        }
    }

    /**
     * @param v receives the first {@code v.length} bytes of this memory
     */
    public void download(byte[] v) {
        try (BytePointer p = new BytePointer(v.length)) {
            copyOut(p, v.length);
            p.get(v);
        }
    }

    @Override
    public void close() {
        if (address != 0) {
            long a = address;
            try {
                CudaCall.run(
                        "cudaFree", (err, cap) -> NativeEpCuda.nep_cuda_free(device, a, err, cap));
            } finally {
                address = 0;
            }
        }
    }
}
