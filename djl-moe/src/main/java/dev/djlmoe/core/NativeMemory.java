/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.bytedeco.javacpp.Pointer;

/**
 * Reads the data address of an NDArray without copying (the memory contract with DJL).
 *
 * <p>CPU: {@code toByteBuffer(true)} aliases the storage of a contiguous CPU tensor; for a
 * non-contiguous one DJL first makes a contiguous copy owned by the same manager, so the address is
 * never a mis-read of strided memory.
 *
 * <p>GPU: {@link #gpuAddress} is the device address of the tensor's storage, read through libtorch
 * (no copy); it refuses a non-contiguous array, which {@link #contiguous} turns into a contiguous
 * copy first. Every array of one call must be on the same device ({@link #checkDevice}).
 *
 * <p>The NDArray (and its manager) must stay open while native code holds the address.
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
                    "argument '"
                            + name
                            + "': DJL did not expose a direct buffer of "
                            + bytes
                            + " bytes (got "
                            + buf.capacity()
                            + ")");
        }
        try (Pointer p = new Pointer(buf)) {
            return p.address() + buf.position();
        }
    }

    /**
     * Returns the address of an output array's own storage, after the checks of {@link #address}:
     * native writes there must reach the array. DJL hands out a private copy of a non-contiguous
     * array's data, so one bit of the first element is flipped through one view of the data and
     * looked for through another (only the tensor's own storage shows it; a copy starts from the
     * original), then put back.
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
                    "argument '"
                            + name
                            + "' with shape "
                            + array.getShape()
                            + " is not contiguous: native code would write into a copy (pass a"
                            + " contiguous array, e.g. one returned by an earlier call)");
        }
        return address;
    }

    /**
     * Checks that an array is on the device of the other arrays of its call: a CPU array among GPU
     * arrays, a GPU array among CPU arrays, or GPUs of two indices are refused.
     *
     * @param array the array
     * @param name the argument name
     * @param device the device of the call
     * @param reference what fixed the call's device, for the message (e.g. {@code "'x'"})
     * @throws IllegalArgumentException naming the argument and both devices
     */
    public static void checkDevice(NDArray array, String name, Device device, String reference) {
        Device d = array.getDevice();
        if (!sameDevice(d, device)) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' is on device "
                            + d
                            + " but "
                            + reference
                            + " is on "
                            + device
                            + ": every array of one call must be on the same device"
                            + " (CPU arrays run on the CPU engine, GPU arrays on the CUDA"
                            + " plug-in)");
        }
    }

    /**
     * Returns whether two devices are the same: any two CPU devices are, other devices when their
     * type and index agree.
     *
     * @param a a device
     * @param b another device
     * @return true when the same
     */
    public static boolean sameDevice(Device a, Device b) {
        if (Device.Type.CPU.equals(a.getDeviceType())) {
            return Device.Type.CPU.equals(b.getDeviceType());
        }
        return a.equals(b);
    }

    /**
     * Returns the array itself when its tensor is contiguous, else a contiguous copy on its device,
     * attached to its manager (close it once native code is done with it). Works for arrays of
     * DJL's PyTorch engine on any device.
     *
     * @param array the array
     * @param name the argument name, for error messages
     * @return {@code array} or a contiguous copy
     */
    public static NDArray contiguous(NDArray array, String name) {
        if (array.getShape().size() == 0 || TorchMemory.isContiguous(array, name)) {
            return array;
        }
        return TorchMemory.toContiguous(array, name);
    }

    /**
     * Returns the device address of a contiguous GPU array's storage (no copy), after checking its
     * device and dtype. The array's own storage is what native code reads and writes, so the
     * address serves inputs and outputs alike; a non-contiguous array is refused (pass an input
     * through {@link #contiguous} first).
     *
     * @param array the array, of DJL's PyTorch engine
     * @param name the argument name, for error messages
     * @param dtype the required data type
     * @param device the GPU of the call
     * @return the device address (0 for an empty array)
     * @throws IllegalArgumentException naming the argument when its device, dtype or layout is
     *     wrong
     */
    public static long gpuAddress(NDArray array, String name, DataType dtype, Device device) {
        checkGpuArray(array, name, dtype, device);
        if (array.getShape().size() == 0) {
            return 0L;
        }
        if (!TorchMemory.isContiguous(array, name)) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' with shape "
                            + array.getShape()
                            + " on "
                            + device
                            + " is not contiguous: native code reads and writes an array's own"
                            + " row-major storage (pass a contiguous array, e.g. one returned by"
                            + " an earlier call)");
        }
        return TorchMemory.dataAddress(array, name, dtype);
    }

    /**
     * Checks that a GPU call's array is on the call's GPU and has the required dtype.
     *
     * @param array the array
     * @param name the argument name, for error messages
     * @param dtype the required data type
     * @param device the GPU of the call
     * @throws IllegalArgumentException naming the argument when its device or dtype is wrong
     */
    public static void checkGpuArray(NDArray array, String name, DataType dtype, Device device) {
        if (!device.isGpu()) {
            throw new IllegalArgumentException(
                    "argument '" + name + "': device " + device + " is not a GPU");
        }
        checkDevice(array, name, device, "the call");
        if (array.getDataType() != dtype) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' has dtype "
                            + array.getDataType()
                            + ", expected "
                            + dtype);
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
                    "argument '"
                            + name
                            + "' is on device "
                            + device
                            + "; the cpu-shm and loopback transports take CPU tensors");
        }
    }
}
