/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import java.time.Duration;

/**
 * Argument checks of {@link EpBuffer}, some of them shared with {@link LowLatencyBuffer}; none
 * needs a buffer's state.
 */
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

    /**
     * Checks {@code x} of a dispatch's data phase against the handle's routing: float32 {@code [T,
     * H]} on the handle's device with T its tokens, and H fit for the wire.
     *
     * @return H
     */
    static long checkRoutedX(NDArray x, EpHandle handle, WireFormat wire) {
        long[] xs = checkMatrix(x, "x", DataType.FLOAT32);
        Device device = handle.device();
        NativeMemory.checkDevice(x, "x", device, "'handle' (its dispatch)");
        if (xs[0] != handle.numTokens()) {
            throw new IllegalArgumentException(
                    "argument 'x' has "
                            + xs[0]
                            + " rows but the handle routes "
                            + handle.numTokens()
                            + " tokens");
        }
        checkHidden(xs[1], wire, device);
        return xs[1];
    }

    /**
     * Checks that dispatch into wire rows runs for arrays on a device ({@link
     * EpBuffer#hasWireRows}).
     */
    static void checkWireRowsDevice(Device device) {
        if (!EpBuffer.hasWireRows(device)) {
            throw new UnsupportedOperationException(
                    "dispatch into wire rows is not available on " + device + " yet");
        }
    }

    /**
     * Checks a caller's output array: float32, shape {@code [rows, cols]}, on the call's device,
     * its own contiguous storage (DJL hands native code a private copy of a non-contiguous CPU
     * array, and native code reads a GPU array's storage as row-major, so rows written there would
     * be lost or scattered) and no overlap with the input.
     */
    static void checkOutput(
            NDArray out,
            String name,
            long rows,
            long cols,
            NDArray input,
            String inputName,
            Device device) {
        checkMatrix(out, name, DataType.FLOAT32, rows, cols, "");
        NativeMemory.checkDevice(out, name, device, "'handle' (its dispatch)");
        NativeMemory.checkDevice(input, inputName, device, "'handle' (its dispatch)");
        if (rows * cols == 0) {
            return;
        }
        long o;
        long i;
        if (device.isGpu()) {
            o = NativeMemory.gpuAddress(out, name, DataType.FLOAT32, device);
            if (!TorchMemory.isContiguous(input, inputName)) {
                return; // the kernel will read a contiguous copy: no overlap possible
            }
            i = NativeMemory.gpuAddress(input, inputName, DataType.FLOAT32, device);
        } else {
            o = NativeMemory.outputAddress(out, name, DataType.FLOAT32);
            i = NativeMemory.address(input, inputName, DataType.FLOAT32);
        }
        long ob = rows * cols * 4;
        long ib = input.getShape().size() * 4;
        if (i != 0 && o < i + ib && i < o + ob) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' shares memory with '"
                            + inputName
                            + "': the output must not overlap the input");
        }
    }

    /** Checks that E is positive and a multiple of the world size. */
    static void checkExperts(int numExperts, int worldSize) {
        if (numExperts <= 0) {
            throw new IllegalArgumentException(
                    "argument 'num_experts' = " + numExperts + " must be positive");
        }
        if (numExperts % worldSize != 0) {
            throw new IllegalArgumentException(
                    "argument 'num_experts' = "
                            + numExperts
                            + " is not divisible by the world size "
                            + worldSize);
        }
    }

    /** Checks that the per-expert alignment is at least 1. */
    static void checkAlignment(int expertAlignment) {
        if (expertAlignment < 1) {
            throw new IllegalArgumentException(
                    "argument 'expert_alignment' = " + expertAlignment + " must be >= 1");
        }
    }

    /** Checks that a wire format is given. */
    static void checkWire(WireFormat wire) {
        if (wire == null) {
            throw new IllegalArgumentException("argument 'wire' is null");
        }
    }

    /**
     * Checks that H is positive, fits the wire format's scaling block and, on a GPU, the plug-in.
     */
    static void checkHidden(long hidden, WireFormat wire, Device device) {
        if (hidden <= 0) {
            throw new IllegalArgumentException("hidden size " + hidden + " must be positive");
        }
        if (NativeEp.nep_wire_row_bytes(wire.code(), hidden) < 0) {
            throw new IllegalArgumentException(
                    "hidden size "
                            + hidden
                            + " is not supported by wire format "
                            + wire
                            + " (scaling block of "
                            + wire.blockSize()
                            + " channels)");
        }
        if (device.isGpu()) {
            CudaBackend.checkHidden(hidden, wire);
        }
    }

    /** Checks topk_idx [T, K] int64 (T must equal expectedRows unless negative). */
    static long[] checkTopk(NDArray topkIdx, long expectedRows, int numExperts) {
        long[] tk = checkMatrix(topkIdx, "topk_idx", DataType.INT64);
        if (expectedRows >= 0 && tk[0] != expectedRows) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has " + tk[0] + " rows but 'x' has " + expectedRows);
        }
        if (tk[1] < 1) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has K = " + tk[1] + " columns, expected >= 1");
        }
        if (tk[1] > numExperts) {
            throw new IllegalArgumentException(
                    "argument 'topk_idx' has K = "
                            + tk[1]
                            + " columns, more than num_experts = "
                            + numExperts);
        }
        return tk;
    }

    /**
     * The checks of a fresh dispatch's arguments before its notify, the wire format's aside; with
     * {@code wireRows}, that the arrays' device has the wire-row dispatch.
     *
     * @param worldSize W, of which E must be a multiple
     * @return the shape of {@code x}
     */
    static long[] checkDispatch(
            int worldSize,
            NDArray x,
            NDArray topkIdx,
            NDArray topkWeights,
            int numExperts,
            int expertAlignment,
            boolean wireRows) {
        checkExperts(numExperts, worldSize);
        long[] xs = checkMatrix(x, "x", DataType.FLOAT32);
        long[] tk = checkTopk(topkIdx, xs[0], numExperts);
        Device device = x.getDevice();
        if (wireRows) {
            checkWireRowsDevice(device);
        }
        NativeMemory.checkDevice(topkIdx, "topk_idx", device, "'x'");
        if (topkWeights != null) {
            checkMatrix(
                    topkWeights, "topk_weights", DataType.FLOAT32, tk[0], tk[1], " like topk_idx");
            NativeMemory.checkDevice(topkWeights, "topk_weights", device, "'x'");
        }
        checkAlignment(expertAlignment);
        return xs;
    }

    /**
     * Checks that a handle is given.
     *
     * @throws IllegalArgumentException naming argument 'handle' when it is null
     */
    static void checkHandleGiven(EpHandle handle) {
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is null");
        }
    }

    /**
     * Returns the routing of a handle that is given, open and made by {@code buffer}.
     *
     * @throws IllegalArgumentException naming argument 'handle' otherwise
     */
    static EpRouting routing(EpHandle handle, EpBuffer buffer) {
        checkHandleGiven(handle);
        return handle.routing(buffer);
    }

    /**
     * Checks {@code y} of a combine against the handle's routing: float32 {@code [R, H]} on the
     * handle's device with R its received rows.
     *
     * @return the shape of {@code y}
     */
    static long[] checkRoutedY(NDArray y, EpHandle handle) {
        long[] ys = checkMatrix(y, "y", DataType.FLOAT32);
        NativeMemory.checkDevice(y, "y", handle.device(), "'handle' (its dispatch)");
        if (ys[0] != handle.numRecv()) {
            throw new IllegalArgumentException(
                    "argument 'y' has "
                            + ys[0]
                            + " rows, expected "
                            + handle.numRecv()
                            + " (one per received token)");
        }
        return ys;
    }

    /**
     * Checks the settings of an {@link EpBuffer.Builder}.
     *
     * @throws IllegalArgumentException naming the setting, its value and the limit
     */
    static void checkSettings(
            ProcessGroup group, long cudaBufferBytes, Integer numSms, Duration timeout) {
        if (group == null) {
            throw new IllegalArgumentException(
                    "EpBuffer.Builder: argument 'group' is null (setGroup is required)");
        }
        if (cudaBufferBytes < EpBuffer.MIN_CUDA_BUFFER_BYTES) {
            throw new IllegalArgumentException(
                    "EpBuffer.Builder: argument 'cudaBufferBytes' = "
                            + cudaBufferBytes
                            + " is below the minimum "
                            + EpBuffer.MIN_CUDA_BUFFER_BYTES
                            + " (64 MiB)");
        }
        if (numSms != null && (numSms < 1 || numSms > EpBuffer.MAX_NUM_SMS)) {
            throw new IllegalArgumentException(
                    "EpBuffer.Builder: argument 'numSms' = "
                            + numSms
                            + " is outside [1, "
                            + EpBuffer.MAX_NUM_SMS
                            + "]");
        }
        if (timeout != null) {
            if (timeout.isNegative() || timeout.isZero()) {
                throw new IllegalArgumentException(
                        "EpBuffer.Builder: argument 'timeout' = " + timeout + " must be positive");
            }
            try {
                if (timeout.toMillis() < 1) {
                    throw new IllegalArgumentException(
                            "EpBuffer.Builder: argument 'timeout' = " + timeout + " is below 1 ms");
                }
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException(
                        "EpBuffer.Builder: argument 'timeout' = "
                                + timeout
                                + " exceeds Long.MAX_VALUE ms",
                        e);
            }
        }
    }
}
