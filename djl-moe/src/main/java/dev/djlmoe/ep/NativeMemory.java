/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
     * Returns the address of an output array's own storage, after the checks of {@link
     * #address}: native writes there must reach the array. DJL hands out a private copy of a
     * non-contiguous array's data, so one bit of the first element is flipped through one view of
     * the data and looked for through another (only the tensor's own storage shows it; a copy
     * starts from the original), then put back.
     *
     * @param array the array native code will write
     * @param name the argument name, for error messages
     * @param dtype the required data type
     * @return the data address (0 for an empty array)
     * @throws IllegalArgumentException naming the argument when device or dtype is wrong, or when
     *     native writes would land in a copy
     */
    public static long outputAddress(NDArray array, String name, DataType dtype) {
        long address = address(array, name, dtype);
        if (address == 0) {
            return 0L;
        }
        ByteBuffer first = array.toByteBuffer(true).order(ByteOrder.nativeOrder());
        int bits = first.getInt(first.position());
        first.putInt(first.position(), bits ^ 1);
        ByteBuffer second = array.toByteBuffer(true).order(ByteOrder.nativeOrder());
        boolean own = second.getInt(second.position()) == (bits ^ 1);
        first.putInt(first.position(), bits);
        if (!own) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' with shape " + array.getShape()
                            + " is not contiguous: native code would write into a copy (pass a"
                            + " contiguous array, e.g. one returned by an earlier call)");
        }
        return address;
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
