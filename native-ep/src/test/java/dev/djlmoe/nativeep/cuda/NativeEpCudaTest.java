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
        assertEquals(3, NativeEpCuda.nep_cuda_abi_version());
        assertTrue(CudaEpBuffer.deviceCount() >= 0);
    }

    @Test
    void withoutADeviceCallsFailWithAMessage() {
        if (CudaEpBuffer.deviceCount() > 0) {
            return; // a GPU machine: CudaEpJavaCheck covers it
        }
        RuntimeException e =
                assertThrows(
                        RuntimeException.class, () -> CudaEpBuffer.create(0, 1, 0, 256L << 20, 0));
        assertTrue(
                e.getMessage().contains("device=0")
                        || e.getMessage().contains("without its CUDA plug-in"),
                e.getMessage());
        assertThrows(RuntimeException.class, () -> DeviceMemory.allocate(0, 1024));
    }

    @Test
    void deviceInfoNamesABadIndexAndDescribesAGoodOne() {
        int n = CudaEpBuffer.deviceCount();
        RuntimeException e = assertThrows(RuntimeException.class, () -> CudaDeviceInfo.query(n));
        assertTrue(e.getMessage().contains("device info of GPU " + n), e.getMessage());
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(e instanceof IllegalArgumentException, e.toString());
            assertTrue(
                    e.getMessage().contains("device=" + n + " is outside [0, " + n + ")"),
                    e.getMessage());
        }
        if (n > 0) {
            CudaDeviceInfo info = CudaDeviceInfo.query(0);
            assertTrue(!info.name().isEmpty() && info.smCount() > 0, info.toString());
            assertTrue(
                    info.totalBytes() > 0
                            && info.freeBytes() <= info.totalBytes()
                            && info.usedBytes() > 0,
                    info.toString()); // at least this CUDA context
        }
    }

    @Test
    void adamWRefusesBadArgumentsByName() {
        CudaAdamW.Step step = new CudaAdamW.Step(1e-3f, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1f);
        RuntimeException e =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaAdamW.update(0, 16, 32, 48, 64, -1, step, false, 0));
        assertTrue(e.getMessage().contains("AdamW on GPU 0"), e.getMessage());
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(e instanceof IllegalArgumentException, e.toString());
            assertTrue(e.getMessage().contains("n=-1 is negative"), e.getMessage());
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> CudaAdamW.update(0, 16, 16, 48, 64, 8, step, false, 0));
            assertTrue(e.getMessage().contains("four different arrays"), e.getMessage());
            CudaAdamW.Step nan =
                    new CudaAdamW.Step(Float.NaN, 1e-3f, 0.01f, 0.9f, 0.999f, 1e-8f, 1f);
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> CudaAdamW.update(0, 16, 32, 48, 64, 8, nan, false, 0));
            assertTrue(e.getMessage().contains("lr=nan is not finite"), e.getMessage());
            int n = CudaEpBuffer.deviceCount();
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> CudaAdamW.update(n, 16, 32, 48, 64, 8, step, false, 0));
            assertTrue(
                    e.getMessage().contains("device=" + n + " is outside [0, " + n + ")"),
                    e.getMessage());
            // nothing to do: no call fails (the stand-in built without nvcc refuses every call)
            CudaAdamW.update(0, 0, 0, 0, 0, 0, step, false, 0);
        }
    }

    @Test
    void invalidArgumentsNameTheValue() {
        RuntimeException e =
                assertThrows(
                        RuntimeException.class, () -> CudaEpBuffer.create(0, 0, 0, 256L << 20, 0));
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(e instanceof IllegalArgumentException, e.toString());
            assertTrue(e.getMessage().contains("world_size=0"), e.getMessage());
        }
    }

    @Test
    void lowLatencyBindingReportsErrorsWithoutADevice() {
        try (org.bytedeco.javacpp.BytePointer err = new org.bytedeco.javacpp.BytePointer(1024);
                org.bytedeco.javacpp.PointerPointer<NativeEpCuda.nep_cuda_ll_buffer> out =
                        new org.bytedeco.javacpp.PointerPointer<>(1)) {
            int rc =
                    NativeEpCuda.nep_cuda_ll_buffer_create(
                            0, 0, 0, 128, 7168, 256, 8, 2, 0, out, err, 1024);
            String msg = err.getString();
            assertTrue(rc != 0, "world_size=0 must be refused");
            assertTrue(
                    msg.contains("world_size=0") || msg.contains("without its CUDA plug-in"), msg);
            if (CudaEpBuffer.deviceCount() == 0) {
                rc =
                        NativeEpCuda.nep_cuda_ll_buffer_create(
                                0, 1, 0, 128, 7168, 256, 8, 2, 0, out, err, 1024);
                msg = err.getString();
                assertTrue(rc != 0, "no device: create must fail");
                assertTrue(
                        msg.contains("device=0") || msg.contains("without its CUDA plug-in"), msg);
            }
            assertEquals(-1L, NativeEpCuda.nep_cuda_ll_buffer_max_tokens_per_rank(null));
            assertEquals(-1, NativeEpCuda.nep_cuda_ll_op_kind(null));
        }
    }

    @Test
    void lowLatencyWrapperRefusesBadArgumentsNamingThem() {
        RuntimeException e =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaLowLatencyBuffer.create(0, 1, 0, 0, 7168, 256, 8, 2, 0));
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(e instanceof IllegalArgumentException, e.toString());
            assertTrue(e.getMessage().contains("max_tokens_per_rank=0"), e.getMessage());
        }
        e =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaLowLatencyBuffer.create(0, 3, 0, 128, 7168, 256, 8, 2, 0));
        if (!e.getMessage().contains("without its CUDA plug-in")) {
            assertTrue(
                    e.getMessage()
                            .contains("num_experts=256 is not a positive multiple of world_size=3"),
                    e.getMessage());
        }
    }
}
