/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.nativeep.cuda.NativeGemmCuda;
import dev.djlmoe.nn.ExpertGemmPath;
import dev.djlmoe.nn.WireFeed;
import dev.djlmoe.testing.TestDevice;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Training the tiny preset with the routed experts' GEMMs on the native FP8 path ({@link
 * ExpertGemmPath}).
 *
 * <p>CPU (CI): with {@code djlmoe.expert.gemms=native} the native CPU oracle runs the expert FFN
 * and its backward through the tape; over {@value #CPU_STEPS} steps every loss stays within {@value
 * #CPU_BOUND} nat of the DJL emulation of the same precision (they round differently in places, see
 * {@code RoutedExpertsNativeGemmTest}), and the losses are not bit-equal (the native path ran).
 *
 * <p>With the FP8 (MXFP8) wire and FP8 (MXFP8) experts the dispatch feeds its wire rows to the
 * GEMMs ({@link WireFeed}); over {@value #FEED_STEPS} steps the losses equal, bit for bit, those of
 * the same run with the feed-through off (float rows, quantised again by the GEMM path).
 *
 * <p>GPU ({@code bin/gpu-java-tests}): fp8 and mxfp8 run the CUDA tensor-core GEMMs by default;
 * over {@value #GPU_STEPS} steps the final loss (mean of the last {@value #TAIL} steps) is within
 * {@value #GPU_BOUND} relative of fp32's.
 */
class Fp8NativeTrainingTest {

    static final int CPU_STEPS = 20;
    static final int FEED_STEPS = 8;
    static final double CPU_BOUND = 0.02;
    static final int GPU_STEPS = 300;
    static final int TAIL = 10;
    static final double GPU_BOUND = 0.005;

    @ParameterizedTest
    @EnumSource(
            value = TrainingPrecision.class,
            names = {"FP8", "MXFP8"})
    void nativeCpuPathTrainsLikeTheEmulation(TrainingPrecision p, @TempDir Path dir) {
        List<Float> emulated = withPath("emulated", () -> train(p, dir.resolve("e"), CPU_STEPS));
        List<Float> nat = withPath("native", () -> train(p, dir.resolve("n"), CPU_STEPS));
        assertNotEquals(emulated, nat, "the native path ran");
        for (int i = 0; i < CPU_STEPS; i++) {
            double gap = Math.abs(nat.get(i) - emulated.get(i));
            assertTrue(
                    gap < CPU_BOUND,
                    p
                            + " step "
                            + (i + 1)
                            + ": native "
                            + nat.get(i)
                            + " vs emulated "
                            + emulated.get(i));
        }
        assertTrue(nat.get(CPU_STEPS - 1) < nat.get(0) - 0.5, "learns: " + nat);
    }

    @ParameterizedTest
    @EnumSource(
            value = TrainingPrecision.class,
            names = {"FP8", "MXFP8"})
    void wireRowsFedToTheGemmsTrainBitForBitLikeFloatRows(TrainingPrecision p, @TempDir Path dir) {
        long before = WireFeed.feeds();
        List<Float> fed = withPath("native", () -> train(p, dir.resolve("fed"), FEED_STEPS));
        long fedLayers = WireFeed.feeds() - before;
        List<Float> floats =
                withPath(
                        "native",
                        () ->
                                withProperty(
                                        WireFeed.PROPERTY,
                                        "false",
                                        () -> train(p, dir.resolve("float"), FEED_STEPS)));
        assertTrue(fedLayers >= FEED_STEPS, "the wire rows fed the GEMMs: " + fedLayers);
        assertEquals(fedLayers, WireFeed.feeds() - before, "switched off by " + WireFeed.PROPERTY);
        assertEquals(floats, fed, p + ": losses with and without the feed-through");
    }

    @Test
    void onGpuWireRowsFedToTheGemmsTrainBitForBitLikeFloatRows(@TempDir Path dir) {
        TestDevice.assumeGpu("the GPU twin of the wire-row feed-through's bit-for-bit training");
        for (TrainingPrecision p :
                new TrainingPrecision[] {TrainingPrecision.FP8, TrainingPrecision.MXFP8}) {
            String tag = p.flag();
            List<Float> floats =
                    withProperty(
                            WireFeed.PROPERTY,
                            "false",
                            () -> train(p, dir.resolve(tag + "-float"), FEED_STEPS));
            List<Float> again =
                    withProperty(
                            WireFeed.PROPERTY,
                            "false",
                            () -> train(p, dir.resolve(tag + "-float2"), FEED_STEPS));
            Assumptions.assumeTrue(
                    floats.equals(again),
                    "two GPU runs without the feed-through differ ("
                            + floats
                            + " vs "
                            + again
                            + "): libtorch's GPU kernels are not deterministic here");
            long before = WireFeed.feeds();
            List<Float> fed = train(p, dir.resolve(tag + "-fed"), FEED_STEPS);
            assertTrue(WireFeed.feeds() - before >= FEED_STEPS, "the wire rows fed the GEMMs");
            assertEquals(floats, fed, tag + ": GPU losses with and without the feed-through");
        }
    }

    @Test
    void onGpuFp8AndMxfp8EndWithinHalfAPercentOfFp32(@TempDir Path dir) {
        TestDevice.assumeGpu("300 training steps with the CUDA FP8 expert GEMMs");
        double fp32 = tailMean(train(TrainingPrecision.FP32, dir.resolve("fp32"), GPU_STEPS));
        for (TrainingPrecision p :
                new TrainingPrecision[] {TrainingPrecision.FP8, TrainingPrecision.MXFP8}) {
            double q = tailMean(train(p, dir.resolve(p.flag()), GPU_STEPS));
            int tier = NativeGemmCuda.nep_cuda_gemm_last_tier();
            assertTrue(
                    tier == NativeGemmCuda.NEP_GEMM_TIER_MMA
                            || tier == NativeGemmCuda.NEP_GEMM_TIER_WGMMA,
                    "the expert GEMMs ran on the GPU's tensor cores (tier " + tier + ")");
            double gap = Math.abs(q - fp32) / fp32;
            System.out.println(p.flag() + " final loss " + q + ", fp32 " + fp32 + ", gap " + gap);
            assertTrue(gap < GPU_BOUND, p.flag() + " " + q + " vs fp32 " + fp32 + ": " + gap);
        }
    }

    private static List<Float> withPath(String path, java.util.function.Supplier<List<Float>> run) {
        return withProperty(ExpertGemmPath.PROPERTY, path, run);
    }

    private static List<Float> withProperty(
            String key, String value, java.util.function.Supplier<List<Float>> run) {
        String old = System.getProperty(key);
        System.setProperty(key, value);
        try {
            return run.get();
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    private static List<Float> train(TrainingPrecision precision, Path runDir, int steps) {
        return TinyRuns.losses(
                PretrainOptions.defaults()
                        .withSteps(steps)
                        .withRunDir(runDir)
                        .withLogEvery(steps)
                        .withPrecision(precision)
                        .withDevice(TestDevice.flag()));
    }

    private static double tailMean(List<Float> losses) {
        return TinyRuns.tailMean(losses, TAIL);
    }
}
