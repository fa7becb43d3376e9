/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nativeep.NativeGemm;
import org.bytedeco.javacpp.BytePointer;
import org.junit.jupiter.api.Test;

/**
 * The binding of the grouped FP8 GEMMs' CUDA entry points on a machine without a GPU (CI): the
 * plug-in (or its stand-in) loads, no GEMM has run on this thread, and a call fails with a status
 * and a message instead of crashing. The GPU run is {@code dev.djlmoe.gemm.Fp8ExpertGemmsGpuTest}.
 */
class NativeGemmCudaTest {

    @Test
    void callsWithoutADeviceFailWithAMessage() throws Exception {
        int[] tier = new int[1];
        Thread t = new Thread(() -> tier[0] = NativeGemmCuda.nep_cuda_gemm_last_tier());
        t.start();
        t.join();
        assertEquals(NativeGemmCuda.NEP_GEMM_TIER_NONE, tier[0]);
        if (CudaEpBuffer.deviceCount() > 0) {
            return; // a GPU machine: the djl-moe GPU tests cover it
        }
        try (BytePointer err = new BytePointer(CudaCall.CAPACITY)) {
            int s =
                    NativeGemmCuda.nep_cuda_gemm_quantize_rows(
                            0,
                            NativeGemm.NEP_GEMM_FP8_BLOCK,
                            16,
                            1,
                            2,
                            32,
                            48,
                            0,
                            err,
                            err.capacity());
            assertNotEquals(NativeEp.NEP_OK, s);
            String m = CudaCall.message(err);
            assertTrue(!m.isEmpty(), "a message with status " + s);
        }
    }
}
