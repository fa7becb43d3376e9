/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import dev.djlmoe.core.EpException;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/**
 * The GPU kernels' Java side on a CPU: every entry point passes each argument to the native
 * parameter of the same name (the plug-in checks shapes before it looks for a device, so one bad
 * value per call comes back named, which a swapped pair of arguments would not), and failures come
 * back as named exceptions carrying the operation. Needs the real plug-in (built with nvcc): with
 * the CPU-only stand-in every call says that instead, and the argument checks are skipped.
 */
class CudaGemmKernelsTest {

    private static final int FP8 = GemmFormat.FP8_BLOCK.code();
    private static final int MX = GemmFormat.MXFP8.code();
    private static final long A = 4096; // 16-byte aligned; never dereferenced (refused first)

    private final CudaGemmKernels k = new CudaGemmKernels(0);

    @Test
    void failuresAreNamedExceptionsWithTheOperation() {
        RuntimeException e =
                assertThrows(RuntimeException.class, () -> k.quantizeRows(FP8, A, 2, 0, A, A));
        assertTrue(
                e instanceof IllegalArgumentException || e instanceof EpException,
                e.getClass().getName());
        assertTrue(e.getMessage().startsWith("GPU 0: FP8 quantise rows: "), e.getMessage());
    }

    @Test
    void everyArgumentReachesItsNativeParameter() {
        assumePlugin();
        long[] off = {0, 2, 4};
        refused("format=7", () -> k.quantizeRows(7, A, 2, 8, A, A));
        refused("m=-1", () -> k.quantizeRows(FP8, A, -1, 8, A, A));
        refused("k=0", () -> k.quantizeRows(MX, A, 2, 0, A, A));
        refused("x=4097", () -> k.quantizeRows(MX, 4097, 2, 8, A, A));

        refused("num_groups=0", () -> k.quantizeWeights(FP8, A, 0, 8, 8, false, A, A));
        refused("n=0", () -> k.quantizeWeights(FP8, A, 2, 0, 8, true, A, A));
        refused("k=0", () -> k.quantizeWeights(MX, A, 2, 8, 0, false, A, A));
        refused("w=4097", () -> k.quantizeWeights(MX, 4097, 2, 8, 8, false, A, A));

        refused("m=-1", () -> k.quantizeRowsTGrouped(FP8, A, -1, 8, off, A, A));
        refused("c=0", () -> k.quantizeRowsTGrouped(FP8, A, 4, 0, off, A, A));
        refused("exceeds m=3", () -> k.quantizeRowsTGrouped(MX, A, 3, 8, off, A, A));

        refused("m=-1", () -> k.swigluQuantizeRows(FP8, A, -1, 8, A, A, A));
        refused("inter=0", () -> k.swigluQuantizeRows(FP8, A, 2, 0, A, A, A));
        refused("h_out=4098", () -> k.swigluQuantizeRows(MX, A, 2, 8, 4098, A, A));

        refused("m=-1", () -> k.dswigluQuantizeRows(FP8, A, A, -1, 8, A, A, A));
        refused("inter=0", () -> k.dswigluQuantizeRows(FP8, A, A, 2, 0, A, A, A));
        refused("dh=4097", () -> k.dswigluQuantizeRows(MX, A, 4097, 2, 8, A, A, A));
        refused("dy_out=4098", () -> k.dswigluQuantizeRows(MX, A, A, 2, 8, 4098, A, A));

        refused("n=0", () -> k.groupedM(FP8, 0, 8, 4, off, A, A, A, A, A));
        refused("k=0", () -> k.groupedM(FP8, 8, 0, 4, off, A, A, A, A, A));
        refused("m=-1", () -> k.groupedM(MX, 8, 8, -1, off, A, A, A, A, A));
        refused("exceeds m=3", () -> k.groupedM(MX, 8, 8, 3, off, A, A, A, A, A));
        refused("sa=4098", () -> k.groupedM(FP8, 8, 8, 4, off, A, 4098, A, A, A));
        refused("sb=4098", () -> k.groupedM(FP8, 8, 8, 4, off, A, A, A, 4098, A));
        refused("c=4098", () -> k.groupedM(FP8, 8, 8, 4, off, A, A, A, A, 4098));

        refused("n=0", () -> k.groupedK(FP8, 0, 8, off, A, A, A, A, A));
        refused("k=0", () -> k.groupedK(FP8, 8, 0, off, A, A, A, A, A));
        refused("sa=4098", () -> k.groupedK(FP8, 8, 8, off, A, 4098, A, A, A));
        refused("sb=4098", () -> k.groupedK(FP8, 8, 8, off, A, A, A, 4098, A));
        refused("c=4098", () -> k.groupedK(MX, 8, 8, off, A, A, A, A, 4098));
    }

    @Test
    void aMissingDeviceIsRefusedBeforeAnyLaunch() {
        assumePlugin();
        assumeFalse(CudaEpBuffer.deviceCount() > 0, "a GPU is visible");
        refused("device=0", () -> k.groupedM(FP8, 8, 8, 4, new long[] {0, 2, 4}, A, A, A, A, A));
    }

    /** Skips where libnativeep_cuda is the stand-in built without nvcc. */
    private void assumePlugin() {
        try {
            k.quantizeRows(FP8, A, 2, 0, A, A);
        } catch (RuntimeException e) {
            assumeFalse(
                    e.getMessage().contains("built without its CUDA plug-in"),
                    "the CPU-only stand-in of the CUDA plug-in");
        }
    }

    private static void refused(String part, Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(part), "wanted '" + part + "' in: " + e.getMessage());
    }
}
