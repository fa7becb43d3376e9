/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.core.TorchMemory;
import java.util.ArrayList;
import java.util.List;

/**
 * The device addresses of one GPU call's arrays, and the contiguous copies made for its
 * non-contiguous inputs, which {@link #close()} releases once the call is enqueued.
 *
 * <p>Releasing a copy right after the launch is safe because the kernels run on the stream libtorch
 * allocates on (the legacy default stream): libtorch's caching allocator hands the memory to later
 * work of that stream only, which runs after the kernel that reads it.
 */
final class GpuArguments implements AutoCloseable {

    private final Device device;
    private final List<NDArray> copies = new ArrayList<>();

    /**
     * Starts the arguments of a call on a GPU.
     *
     * @param device the GPU
     */
    GpuArguments(Device device) {
        this.device = device;
    }

    /**
     * Returns the address of an input, made contiguous first if it is not (never mis-read).
     *
     * @param array the input, or null
     * @param name the argument name
     * @param dtype the required data type
     * @return the device address, 0 for null or empty
     */
    long input(NDArray array, String name, DataType dtype) {
        if (array == null) {
            return 0L;
        }
        NativeMemory.checkGpuArray(array, name, dtype, device);
        NDArray c = NativeMemory.contiguous(array, name);
        if (c != array) {
            copies.add(c);
        }
        // c is contiguous now: no second contiguity query.
        return TorchMemory.dataAddress(c, name, dtype);
    }

    /**
     * Returns the address of an output, which must be the array's own contiguous storage.
     *
     * @param array the output, or null
     * @param name the argument name
     * @param dtype the required data type
     * @return the device address, 0 for null or empty
     */
    long output(NDArray array, String name, DataType dtype) {
        return array == null ? 0L : NativeMemory.gpuAddress(array, name, dtype, device);
    }

    @Override
    public void close() {
        for (NDArray c : copies) {
            c.close();
        }
        copies.clear();
    }
}
