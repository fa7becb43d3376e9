/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import java.nio.ByteBuffer;
import org.bytedeco.javacpp.Pointer;

/**
 * Reads the data address of a CPU NDArray without copying (the memory contract with DJL).
 *
 * <p>{@code toByteBuffer(true)} aliases the storage of a contiguous CPU tensor; for a
 * non-contiguous one DJL first makes a contiguous copy owned by the same manager, so the address
 * is never a mis-read of strided memory. The NDArray (and its manager) must stay open while native
 * code holds the address.
 */
public final class NativeMemory {

    private NativeMemory() {}

    /**
     * Returns the address of an input array's contiguous data after checking device and dtype.
     *
     * @param array the array
     * @param name the argument name, for error messages
     * @param dtype the required data type
     * @return the data address (0 for an empty array)
     * @throws IllegalArgumentException naming the argument when device or dtype is wrong
     */
    public static long address(NDArray array, String name, DataType dtype) {
        checkCpu(array, name);
        if (array.getDataType() != dtype) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' has dtype "
                            + array.getDataType()
                            + ", expected "
                            + dtype);
        }
        long bytes = array.getShape().size() * dtype.getNumOfBytes();
        if (bytes == 0) {
            return 0L;
        }
        ByteBuffer buf = array.toByteBuffer(true);
        if (!buf.isDirect() || buf.capacity() < bytes) {
            throw new IllegalStateException(
                    "argument '" + name + "': DJL did not expose a direct buffer of " + bytes
                            + " bytes (got " + buf.capacity() + ")");
        }
        try (Pointer p = new Pointer(buf)) {
            return p.address() + buf.position();
        }
    }

    /**
     * Checks that an array lives on the CPU.
     *
     * @param array the array
     * @param name the argument name
     */
    public static void checkCpu(NDArray array, String name) {
        Device device = array.getDevice();
        if (!Device.Type.CPU.equals(device.getDeviceType())) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' is on device " + device
                            + "; the cpu-shm and loopback transports take CPU tensors");
        }
    }
}
