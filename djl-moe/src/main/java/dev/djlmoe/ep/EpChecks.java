/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeMemory;

/** Argument checks that {@link EpBuffer} and {@link LowLatencyBuffer} share. */
final class EpChecks {

    private EpChecks() {}

    /**
     * Checks a 2-D array of the given dtype and returns its {rows, cols}.
     *
     * @param a the array
     * @param name the argument's name, for the message
     * @param dtype the dtype it must have
     * @return {rows, cols}
     * @throws IllegalArgumentException naming the argument when it is null, not 2-D or of another
     *     dtype
     */
    static long[] checkMatrix(NDArray a, String name, DataType dtype) {
        if (a == null) {
            throw new IllegalArgumentException("argument '" + name + "' is null");
        }
        Shape s = a.getShape();
        if (s.dimension() != 2) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' has shape " + s + ", expected 2 dimensions");
        }
        if (a.getDataType() != dtype) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' has dtype " + a.getDataType() + ", expected " + dtype);
        }
        return new long[] {s.get(0), s.get(1)};
    }

    /**
     * Checks a 2-D array of the given dtype and shape.
     *
     * @param a the array
     * @param name the argument's name, for the message
     * @param dtype the dtype it must have
     * @param rows the rows it must have
     * @param cols the columns it must have
     * @param why appended to the message of a wrong shape (empty, or where the shape comes from)
     * @throws IllegalArgumentException naming the argument, its shape and the one expected
     */
    static void checkMatrix(
            NDArray a, String name, DataType dtype, long rows, long cols, String why) {
        long[] s = checkMatrix(a, name, dtype);
        if (s[0] != rows || s[1] != cols) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' has shape "
                            + a.getShape()
                            + ", expected ("
                            + rows
                            + ", "
                            + cols
                            + ")"
                            + why);
        }
    }

    /**
     * Returns the refusal of an array on a device that is neither the CPU nor a GPU.
     *
     * @param argument the argument's name
     * @param device its device
     * @param owner the buffer class that refuses it
     * @return the exception to throw
     */
    static IllegalArgumentException unsupportedDevice(
            String argument, Device device, String owner) {
        return new IllegalArgumentException(
                "argument '"
                        + argument
                        + "' is on device "
                        + device
                        + "; "
                        + owner
                        + " takes CPU arrays (CPU engine) or GPU arrays (CUDA plug-in)");
    }

    /**
     * Checks that an array is on the GPU of a buffer's CUDA backend (one rank drives one GPU).
     *
     * @param argument the argument's name
     * @param device its device
     * @param gpu the GPU of the buffer's CUDA backend
     * @param owner the buffer class, for the message
     * @param hint appended inside the message's parentheses (empty, or what to do)
     * @throws IllegalArgumentException naming the argument and both devices
     */
    static void checkSameGpu(
            String argument, Device device, Device gpu, String owner, String hint) {
        if (!NativeMemory.sameDevice(gpu, device)) {
            throw new IllegalArgumentException(
                    "argument '"
                            + argument
                            + "' is on device "
                            + device
                            + " but this "
                            + owner
                            + "'s CUDA buffer is on "
                            + gpu
                            + " (one rank drives one GPU"
                            + hint
                            + ")");
        }
    }

    /**
     * Checks that a handle's routing is open and that the buffer using it is the one that made it.
     *
     * @param closed whether the routing is closed
     * @param owner the buffer that made the handle
     * @param buffer the buffer that wants to use it
     * @param foreign the message when the buffers differ
     * @throws IllegalArgumentException naming argument 'handle'
     */
    static void checkHandle(boolean closed, Object owner, Object buffer, String foreign) {
        if (closed) {
            throw new IllegalArgumentException("argument 'handle' is closed");
        }
        if (buffer != owner) {
            throw new IllegalArgumentException(foreign);
        }
    }
}
