/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * The Java binding of the CUDA plug-in on a machine without a GPU (CI): the plug-in loads (it links
 * the CUDA runtime statically and needs no driver to load), sees no device, and every call that
 * needs one fails with a message instead of crashing. The GPU run itself is {@link
 * CudaEpJavaCheck}, on the GPU machine.
 */
class NativeEpCudaTest {

    @Test
    void pluginLoadsAndReportsItsAbi() {
        assertEquals(2, NativeEpCuda.nep_cuda_abi_version());
        assertTrue(CudaEpBuffer.deviceCount() >= 0);
    }

    @Test
    void withoutADeviceCallsFailWithAMessage() {
        if (CudaEpBuffer.deviceCount() > 0) {
            return;  // a GPU machine: CudaEpJavaCheck covers it
        }
        RuntimeException e =
                assertThrows(RuntimeException.class, () -> CudaEpBuffer.create(0, 1, 0, 256L << 20, 0));
        assertTrue(e.getMessage().contains("device=0") || e.getMessage().contains("without its CUDA plug-in"), e.getMessage());
        assertThrows(RuntimeException.class, () -> DeviceMemory.allocate(0, 1024));
    }

    @Test
    void invalidArgumentsNameTheValue() {
        RuntimeException e =
                assertThrows(RuntimeException.class, () -> CudaEpBuffer.create(0, 0, 0, 256L << 20, 0));
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(e instanceof IllegalArgumentException, e.toString());
            assertTrue(e.getMessage().contains("world_size=0"), e.getMessage());
        }
    }
}
