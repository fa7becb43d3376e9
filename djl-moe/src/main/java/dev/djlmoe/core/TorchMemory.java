/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.core;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.engine.PtNDManager;
import ai.djl.pytorch.jni.JniUtils;
import dev.djlmoe.nativeep.NativeEp;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import org.bytedeco.javacpp.LongPointer;

/**
 * The libtorch side of the memory contract for arrays of DJL's PyTorch engine on any device: the
 * data address of a tensor's storage (a device address on a GPU) without a copy, whether the tensor
 * is contiguous, a contiguous copy, and an empty array on a given device.
 *
 * <p>DJL 0.36 has no public contiguity test; its package-private {@code
 * ai.djl.pytorch.jni.PyTorchLibrary} has one ({@code torchIsContiguous}, {@code
 * torchToContiguous}), reached here through reflection. If that fails (another DJL version, a
 * security manager) every method that needs it throws an {@link IllegalStateException} that says
 * so, rather than risk reading strided memory as if it were row-major.
 */
public final class TorchMemory {

    private static final String LIBRARY = "ai.djl.pytorch.jni.PyTorchLibrary";

    private TorchMemory() {}

    /**
     * Returns whether the array's tensor is contiguous (row-major, no gaps), so that its data
     * address spans exactly its elements.
     *
     * @param array the array
     * @param name the argument name, for error messages
     * @return true when contiguous
     */
    public static boolean isContiguous(NDArray array, String name) {
        PtNDArray pt = pytorch(array, name);
        Object r = invoke(Reflection.get().isContiguous, pt.getHandle());
        return (Boolean) r;
    }

    /**
     * Returns a contiguous copy of the array on its device, attached to the array's manager (the
     * caller may close it earlier). Meant for arrays that {@link #isContiguous} refused.
     *
     * @param array the array
     * @param name the argument name, for error messages
     * @return the new contiguous array
     */
    public static NDArray toContiguous(NDArray array, String name) {
        PtNDArray pt = pytorch(array, name);
        long handle = (Long) invoke(Reflection.get().toContiguous, pt.getHandle());
        return new PtNDArray(pt.getManager(), handle);
    }

    /**
     * Returns the address of the first element of the array's data (device memory for a GPU array),
     * without a copy and without checking contiguity.
     *
     * @param array the array, of DJL's PyTorch engine
     * @param name the argument name, for error messages
     * @param dtype the array's data type
     * @return the data address, 0 for an empty array
     * @throws IllegalArgumentException naming the argument when the data type has no native
     *     counterpart or libtorch refuses the tensor
     */
    public static long dataAddress(NDArray array, String name, DataType dtype) {
        PtNDArray pt = pytorch(array, name);
        if (array.getShape().size() == 0) {
            return 0L;
        }
        int type = elementType(dtype, name);
        try (NativeCall call = new NativeCall();
                LongPointer out = new LongPointer(1)) {
            call.check(
                    NativeEp.nep_torch_data_address(
                            pt.getHandle(), type, out, call.err(), call.cap()),
                    "data address of '" + name + "'");
            long address = out.get();
            if (address == 0) {
                throw new IllegalStateException(
                        "argument '"
                                + name
                                + "' with shape "
                                + array.getShape()
                                + ": libtorch returned a null data address");
            }
            return address;
        }
    }

    /**
     * Allocates an uninitialised array on a device, attached to {@code manager} whatever the
     * manager's own device is (an array moved to a GPU with {@code toDevice} keeps a CPU manager).
     *
     * @param manager the manager that owns the new array
     * @param shape the shape
     * @param dtype the data type
     * @param device the device
     * @return the array
     */
    public static NDArray empty(NDManager manager, Shape shape, DataType dtype, Device device) {
        if (NativeMemory.sameDevice(device, manager.getDevice())) {
            return manager.create(shape, dtype);
        }
        if (!(manager instanceof PtNDManager)) {
            return manager.create(shape, dtype, device);
        }
        return JniUtils.createEmptyNdArray(
                (PtNDManager) manager, shape, dtype, device, SparseFormat.DENSE);
    }

    private static PtNDArray pytorch(NDArray array, String name) {
        if (!(array instanceof PtNDArray)) {
            throw new IllegalArgumentException(
                    "argument '"
                            + name
                            + "' is a "
                            + array.getClass().getName()
                            + "; arrays passed to native code must come from DJL's PyTorch"
                            + " engine");
        }
        return (PtNDArray) array;
    }

    private static int elementType(DataType dtype, String name) {
        switch (dtype) {
            case FLOAT32:
                return NativeEp.NEP_TORCH_FLOAT32;
            case FLOAT16:
                return NativeEp.NEP_TORCH_FLOAT16;
            case FLOAT64:
                return NativeEp.NEP_TORCH_FLOAT64;
            case INT64:
                return NativeEp.NEP_TORCH_INT64;
            case INT32:
                return NativeEp.NEP_TORCH_INT32;
            case UINT8:
                return NativeEp.NEP_TORCH_UINT8;
            case BOOLEAN:
                return NativeEp.NEP_TORCH_BOOL;
            default:
                throw new IllegalArgumentException(
                        "argument '"
                                + name
                                + "' has dtype "
                                + dtype
                                + ", which has no native element type (float32, float16,"
                                + " float64, int64, int32, uint8, boolean)");
        }
    }

    private static Object invoke(Method method, long handle) {
        try {
            return method.invoke(Reflection.get().library, handle);
        } catch (IllegalAccessException e) {
            throw unavailable(method.getName(), e);
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException) {
                throw (RuntimeException) cause;
            }
            if (cause instanceof Error) {
                throw (Error) cause;
            }
            throw unavailable(method.getName(), cause);
        }
    }

    private static IllegalStateException unavailable(String member, Throwable cause) {
        return new IllegalStateException(
                "cannot reach "
                        + LIBRARY
                        + "."
                        + member
                        + " of DJL's PyTorch engine through"
                        + " reflection (DJL 0.36 is expected); without it a GPU array's"
                        + " contiguity cannot be checked: "
                        + cause,
                cause);
    }

    /** The reflective handles, looked up at first use. */
    private static final class Reflection {

        private static volatile Reflection instance;

        final Object library;
        final Method isContiguous;
        final Method toContiguous;

        private Reflection() throws ReflectiveOperationException {
            Class<?> c = Class.forName(LIBRARY);
            Field lib = c.getDeclaredField("LIB");
            lib.setAccessible(true);
            library = lib.get(null);
            isContiguous = c.getDeclaredMethod("torchIsContiguous", long.class);
            isContiguous.setAccessible(true);
            toContiguous = c.getDeclaredMethod("torchToContiguous", long.class);
            toContiguous.setAccessible(true);
            if (library == null) {
                throw new NoSuchFieldException(LIBRARY + ".LIB is null");
            }
        }

        static Reflection get() {
            Reflection r = instance;
            if (r == null) {
                try {
                    r = new Reflection();
                } catch (ReflectiveOperationException | RuntimeException e) {
                    throw unavailable("LIB, torchIsContiguous(long), torchToContiguous(long)", e);
                }
                instance = r;
            }
            return r;
        }
    }
}
