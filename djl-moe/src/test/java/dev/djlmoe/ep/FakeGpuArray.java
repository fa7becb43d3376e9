/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.lang.reflect.Proxy;

/**
 * NDArrays that claim to live on GPU 0 (none needs to exist): only their metadata works, so the
 * argument checks that run before any GPU work can be tested on a CPU-only host.
 */
public final class FakeGpuArray {

    private FakeGpuArray() {}

    /**
     * Makes an array whose device, shape, dtype, manager, size, equality and string work; every
     * other method throws {@link UnsupportedOperationException}.
     *
     * @param manager what {@code getManager()} returns
     * @param shape its shape
     * @param type its dtype
     * @return the array
     */
    public static NDArray of(NDManager manager, Shape shape, DataType type) {
        return (NDArray)
                Proxy.newProxyInstance(
                        NDArray.class.getClassLoader(),
                        new Class<?>[] {NDArray.class},
                        (proxy, method, args) ->
                                switch (method.getName()) {
                                    case "getDevice" -> Device.gpu(0);
                                    case "getShape" -> shape;
                                    case "getDataType" -> type;
                                    case "getManager" -> manager;
                                    case "toString" -> "NDArray(gpu(0), " + shape + ")";
                                    case "hashCode" -> System.identityHashCode(proxy);
                                    case "equals" -> proxy == args[0];
                                    case "size" -> shape.size();
                                    default ->
                                            throw new UnsupportedOperationException(
                                                    "a fake GPU array cannot " + method.getName());
                                });
    }
}
