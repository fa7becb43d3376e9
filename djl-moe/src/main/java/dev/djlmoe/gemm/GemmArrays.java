/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;

/**
 * The memory contract of the op: inputs checked (dtype, shape, device) and read in place when
 * contiguous, outputs allocated through DJL on the call's device.
 */
final class GemmArrays {

    private final NDManager manager;
    private final Device device;

    GemmArrays(NDManager manager, Device device) {
        this.manager = manager;
        this.device = device;
    }

    Device device() {
        return device;
    }

    NDManager manager() {
        return manager;
    }

    /** A new uninitialised array on the call's device, owned by the call's manager. */
    NDArray alloc(Shape shape, DataType dtype) {
        return TorchMemory.empty(manager, shape, dtype, device);
    }

    /** A new byte array of {@code bytes} bytes (quantised elements or scales). */
    NDArray bytes(long... shape) {
        return alloc(new Shape(shape), DataType.UINT8);
    }

    /**
     * Checks an input and returns it, or a contiguous copy of it.
     *
     * @param array the input
     * @param name its argument name
     * @param shape the shape it must have
     * @param reference what fixed the call's device, for the message
     * @return the array to read
     */
    NDArray input(NDArray array, String name, Shape shape, String reference) {
        if (array == null) {
            throw new IllegalArgumentException("argument '" + name + "' must not be null");
        }
        if (array.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException(
                    "argument '" + name + "' must be float32, got " + array.getDataType());
        }
        if (!array.getShape().equals(shape)) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' must have shape "
                            + shape
                            + ", got "
                            + array.getShape());
        }
        NativeMemory.checkDevice(array, name, device, reference);
        if (array.getShape().size() == 0 || TorchMemory.isContiguous(array, name)) {
            return array;
        }
        return TorchMemory.toContiguous(array, name);
    }

    /** The data address of an array this op allocated or checked. */
    static long address(NDArray array, String name) {
        return TorchMemory.dataAddress(array, name, array.getDataType());
    }
}
