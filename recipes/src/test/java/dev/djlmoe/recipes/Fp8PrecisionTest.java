/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.recipes.plan.TrainingPlan;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --precision fp8}: the FP8 dispatch wire with DeepSeek-V3's block-scaled FP8 expert GEMMs
 * (emulated). The tiny preset trained for {@value #STEPS} steps at fp8 ends within {@value #BOUND}
 * nat of the same run at fp32 (mean loss over the last {@value #TAIL} steps), and its losses are
 * not fp32's (the rounding runs).
 */
class Fp8PrecisionTest {

    static final int STEPS = 60;
    static final int TAIL = 10;
    static final double BOUND = 0.05;

    @Test
    void fp8ParsesToTheFp8WireAndFp8ExpertGemms() {
        TrainingPrecision p = TrainingPrecision.parse("fp8");
        assertEquals(TrainingPrecision.FP8, p);
        assertEquals(TrainingPrecision.FP8, TrainingPrecision.parse("FP8"));
        assertEquals("fp8", p.flag());
        assertEquals(WireFormat.FP8, p.wire());
        assertEquals(ExpertPrecision.FP8, p.experts());
        assertEquals(128, p.expertAlignment());
        assertEquals(ExpertPrecision.FP32, TrainingPrecision.parse("fp8-wire").experts());
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> TrainingPrecision.parse("fp4"));
        assertTrue(
                e.getMessage().contains("'fp4'")
                        && e.getMessage().contains("mxfp8")
                        && e.getMessage().endsWith(", fp8"),
                e.getMessage());
    }

    @Test
    void planNamesTheFp8ExpertGemms() {
        String r =
                new TrainingPlan(
                                HfMoeConfig.preset("deepseek-v3-16b"),
                                8,
                                1,
                                4096,
                                TrainingPrecision.FP8)
                        .report("deepseek-v3-16b", 141);
        assertTrue(r.contains("routed experts (FP8)"), r);
        assertTrue(r.contains("fp8: 44.7% of the step's FLOPs"), r);
        assertTrue(r.contains("(fp8, 2112 B per row)"), r); // 2048 + 4 * 16
    }

    @Test
    void tinyModelAtFp8TrainsWithinTheBoundOfFp32(@TempDir Path dir) throws Exception {
        List<Float> fp32 = train(TrainingPrecision.FP32, dir.resolve("fp32"));
        List<Float> fp8 = train(TrainingPrecision.FP8, dir.resolve("fp8"));
        double a = tailMean(fp32);
        double b = tailMean(fp8);
        assertTrue(b < fp8.get(0) - 1.0, "fp8 learns: first " + fp8.get(0) + ", last " + b);
        assertTrue(
                Math.abs(b - a) < BOUND,
                "fp8 tail loss " + b + " vs fp32 " + a + ": gap " + (b - a) + " over " + BOUND);
        assertNotEquals(fp32, fp8, "fp8 rounds: its losses are not fp32's");
    }

    private static List<Float> train(TrainingPrecision precision, Path runDir) {
        return TinyRuns.losses(
                PretrainOptions.defaults()
                        .withSteps(STEPS)
                        .withRunDir(runDir)
                        .withLogEvery(STEPS)
                        .withPrecision(precision));
    }

    private static double tailMean(List<Float> losses) {
        return TinyRuns.tailMean(losses, TAIL);
    }
}
