/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.gemm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.nativeep.cuda.NativeGemmCuda;
import dev.djlmoe.testing.TestDevice;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The op on a GPU (the CUDA plug-in's tensor-core kernels) against the float64 loops over the GPU's
 * own quantised inputs (bound {@value #GPU_BOUND} times the sum of |a b|, native-ep's gemm_test
 * bound of 2^-10: the FP8 tensor core's accumulator keeps about 14 bits, so each of a 128-block's
 * four k32 steps may lose up to 2^-13 of the block's sum of |a b| before the fp32 promotion; the
 * fused SwiGLU steps within 3e-5 relative, the GPU's exp being within a few ulp) and against the
 * CPU native path on the same inputs (relative Frobenius norm {@value #CPU_BOUND}: the GPU's exp
 * may differ from the CPU's in the last bit, so h, dy13 and rarely one of their e4m3 bytes differ).
 * Both formats; ragged groups with an empty and a hot expert, one token. Skips without {@code
 * -Ddjlmoe.test.device=gpu}.
 */
class Fp8ExpertGemmsGpuTest {

    static final double GPU_BOUND = 1e-3;
    static final double CPU_BOUND = 5e-3;

    private NDManager manager;

    @BeforeEach
    void open() {
        TestDevice.assumeGpu("the CUDA FP8 grouped GEMMs against the CPU path");
        manager = NDManager.newBaseManager(Device.cpu());
    }

    @AfterEach
    void close() {
        if (manager != null) {
            manager.close();
        }
    }

    @ParameterizedTest
    @MethodSource("dev.djlmoe.gemm.Fp8ExpertGemmsTest#cases")
    void gpuMatchesTheOracleAndTheCpuPath(GemmFormat f, int[] sizes, int h, int in) {
        Device gpu = TestDevice.device();
        Engine.getInstance().setRandomSeed(9);
        long[] off = Fp8ExpertGemmsTest.offsets(sizes);
        int groups = sizes.length;
        long m = off[groups];
        NDArray x = manager.randomNormal(new Shape(m, h));
        NDArray gate = manager.randomNormal(0, 0.1f, new Shape(groups, in, h), DataType.FLOAT32);
        NDArray up = manager.randomNormal(0, 0.1f, new Shape(groups, in, h), DataType.FLOAT32);
        NDArray w2 = manager.randomNormal(0, 0.1f, new Shape(groups, h, in), DataType.FLOAT32);
        NDArray dy = manager.randomNormal(new Shape(m, h));
        NDArray w13 = NDArrays.concat(new NDList(gate, up), 1);

        QuantizedWeights qc = QuantizedWeights.quantize(manager, f, w13, w2, true);
        Fp8ExpertGemms.Forward fc = Fp8ExpertGemms.forward(x, off, qc);
        Fp8ExpertGemms.Gradients gc = Fp8ExpertGemms.backward(fc, dy);

        NDArray xg = x.toDevice(gpu, true);
        QuantizedWeights qg =
                QuantizedWeights.quantize(
                        manager, f, w13.toDevice(gpu, true), w2.toDevice(gpu, true), true);
        Fp8ExpertGemms.Forward fg = Fp8ExpertGemms.forward(xg, off, qg);
        Fp8ExpertGemms.Gradients gg = Fp8ExpertGemms.backward(fg, dy.toDevice(gpu, true));
        assertEquals(gpu, fg.y().getDevice());
        assertEquals(gpu, gg.dw13().getDevice());
        int tier = NativeGemmCuda.nep_cuda_gemm_last_tier();
        assertTrue(
                tier == NativeGemmCuda.NEP_GEMM_TIER_MMA
                        || tier == NativeGemmCuda.NEP_GEMM_TIER_WGMMA,
                "the GEMMs ran on one of the GPU tiers, not " + tier);

        Fp8ExpertGemms.Gradients onCpu =
                new Fp8ExpertGemms.Gradients(
                        cpu(gg.dx()), cpu(gg.dw13()), cpu(gg.dw2()), cpu(gg.dh()), cpu(gg.dy13()));
        GemmOracle.checkAll(
                f,
                off,
                x,
                w13,
                w2,
                dy,
                cpu(fg.y13()),
                cpu(fg.h()),
                cpu(fg.y()),
                onCpu,
                GPU_BOUND,
                3e-5);

        NDArray[][] pairs = {
            {fc.y(), fg.y()}, {gc.dx(), gg.dx()}, {gc.dw13(), gg.dw13()}, {gc.dw2(), gg.dw2()}
        };
        for (NDArray[] p : pairs) {
            double r = relative(cpu(p[1]).toFloatArray(), p[0].toFloatArray());
            assertTrue(r < CPU_BOUND, f + ": GPU vs CPU relative " + r);
        }
    }

    private static NDArray cpu(NDArray a) {
        return a.toDevice(Device.cpu(), true);
    }

    private static double relative(float[] got, float[] ref) {
        double num = 0;
        double den = 1e-30;
        for (int i = 0; i < ref.length; i++) {
            double d = (double) got[i] - ref[i];
            num += d * d;
            den += (double) ref[i] * ref[i];
        }
        return Math.sqrt(num / den);
    }
}
