/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import dev.djlmoe.recipes.bench.GpuPeak;
import dev.djlmoe.recipes.bench.TrainStepBench;
import dev.djlmoe.recipes.data.RandomTokenSource;
import dev.djlmoe.recipes.data.TokenBatch;
import dev.djlmoe.recipes.plan.TrainingPlan;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.Json;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bench step} on the CPU with the tiny model: the printed report and the JSON hold figures
 * that agree with each other, with {@link TrainingPlan}'s FLOP count and with the model's parameter
 * count; bad flags are named; the MFU arithmetic and the GPU peak table.
 */
class BenchStepTest {

    /** What one command printed on standard output, and its result. */
    record Printed(CliCall.Run run, String stdout) {}

    static Printed cli(String... args) {
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        PrintStream stdout = System.out;
        System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try {
            CliCall.Run r = CliCall.cli(args);
            return new Printed(r, printed.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(stdout);
        }
    }

    @Test
    void tinyModelOnTheCpuReportsConsistentFigures(@TempDir Path tmp) throws Exception {
        Path json = tmp.resolve("step.json");
        Printed p =
                cli(
                        "bench",
                        "step",
                        "--model",
                        "tiny",
                        "--layers",
                        "0",
                        "--batch",
                        "2",
                        "--seq-len",
                        "32",
                        "--device",
                        "cpu",
                        "--warmup",
                        "1",
                        "--steps",
                        "2",
                        "--json",
                        json.toString());
        assertEquals(0, p.run().code(), p.run().err() + p.stdout());
        Map<String, Object> m = Json.parseObject(Files.readString(json), json.toString());

        HfMoeConfig tiny = HfMoeConfig.preset("tiny");
        TrainingPlan plan = new TrainingPlan(tiny, 1, 2, 32, TrainingPrecision.FP32);
        assertEquals(
                plan.forwardFlopsPerTokenTotal(),
                ((Number) m.get("forward_flops_per_token")).longValue());
        assertEquals(
                3.0 * plan.forwardFlopsPerTokenTotal() * 64,
                ((Number) m.get("step_flops")).doubleValue(),
                1e-6);
        // The model as built has exactly the parameters its config counts.
        assertEquals(tiny.numParameters(), ((Number) m.get("parameters")).longValue());
        assertEquals(tiny.numParameters(), ((Number) m.get("parameters_config")).longValue());
        assertEquals(64L, ((Number) m.get("tokens_per_step")).longValue());

        List<?> ms = (List<?>) m.get("step_ms");
        assertEquals(2, ms.size());
        double sum = 0;
        for (Object v : ms) {
            double d = ((Number) v).doubleValue();
            assertTrue(d > 0 && d < 60_000, "step ms " + d);
            sum += d;
        }
        double mean = ((Number) m.get("mean_step_ms")).doubleValue();
        assertEquals(sum / 2, mean, 1e-9);
        double tps = ((Number) m.get("tokens_per_second")).doubleValue();
        assertTrue(tps > 0, "tokens/s " + tps);
        assertEquals(64 / (mean / 1e3), tps, 1e-6 * tps);
        assertEquals(
                3.0 * plan.forwardFlopsPerTokenTotal() * 64 / (mean / 1e3) / 1e12,
                ((Number) m.get("model_tflops_per_second")).doubleValue(),
                1e-9);

        // Random tokens over the whole vocabulary: an untrained model starts near ln V.
        List<?> losses = (List<?>) m.get("losses");
        assertEquals(3, losses.size());
        double first = ((Number) losses.get(0)).doubleValue();
        assertTrue(Math.abs(first - Math.log(tiny.vocabSize())) < 1.0, "first loss " + first);

        assertEquals("cpu()", m.get("device"));
        assertTrue(((String) m.get("device_name")).startsWith("CPU"), m.toString());
        assertEquals(false, m.get("tf32"));
        assertEquals(false, m.get("fused_adamw"));
        assertNull(m.get("mfu_bf16_peak"));
        assertNull(m.get("memory_in_use_after_bytes"));
        assertEquals("djl-moe bench step", m.get("benchmark"));

        String out = p.stdout();
        assertTrue(out.contains("bench step: tiny (deepseek_v3, 4 layers: 1 dense + 3 MoE"), out);
        assertTrue(
                out.contains(String.format(java.util.Locale.ROOT, "tokens/s      %,.0f", tps)),
                out);
        assertTrue(out.contains(TrainingPlan.flops(plan.stepFlopsPerRank()) + " per step"), out);
        assertTrue(out.contains("MFU           n/a"), out);
        assertTrue(out.contains("json          " + json), out);
    }

    @Test
    void badFlagsAreNamed() {
        Printed p = cli("bench", "step", "--model", "tiny", "--warmup", "0", "--device", "cpu");
        assertEquals(1, p.run().code());
        assertTrue(p.run().err().contains("--warmup 0 must be >= 1"), p.run().err());
        p = cli("bench", "step", "--model", "deepseek-v3-16b", "--layers", "1");
        assertEquals(1, p.run().code());
        assertTrue(
                p.run().err().contains("--layers 1: num_hidden_layers 1 leaves no MoE layer"),
                p.run().err());
        p = cli("bench", "step", "--model", "tiny", "--device", "tpu");
        assertEquals(1, p.run().code());
        assertTrue(p.run().err().contains("--device tpu is not cpu, gpu or auto"), p.run().err());
        p = cli("bench", "step", "--model", "tiny", "--peak-tflops", "fast");
        assertEquals(1, p.run().code());
        assertTrue(
                p.run().err().contains("--peak-tflops 'fast' is not BF16[,TF32]"), p.run().err());
        p = cli("bench", "ep", "--device", "gpu");
        assertEquals(1, p.run().code());
        assertTrue(
                p.run().err().contains("--device gpu: bench ep runs on the CPU only"),
                p.run().err());
    }

    @Test
    void mfuIsTheFlopRateOverThePeak() {
        HfMoeConfig cut = HfMoeConfig.preset("deepseek-v3-16b").withNumLayers(4);
        TrainStepBench.Options o =
                new TrainStepBench.Options(
                        "x", cut, 1, 4096, "gpu", TrainingPrecision.FP32, 3, 4, null, 1);
        GpuPeak h100 = GpuPeak.of("NVIDIA H100 80GB HBM3");
        TrainStepBench.Result r =
                new TrainStepBench.Result(
                        o,
                        Device.gpu(0),
                        "H100",
                        true,
                        true,
                        cut.numParameters(),
                        new double[] {150, 160, 170, 180},
                        new float[7],
                        0.1,
                        h100,
                        1L << 30,
                        40L << 30,
                        80L << 30,
                        null);
        double flops = new TrainingPlan(cut, 1, 1, 4096, TrainingPrecision.FP32).stepFlopsPerRank();
        assertEquals(165, r.meanMillis(), 1e-12);
        assertEquals(165, r.medianMillis(), 1e-12);
        assertEquals(4096 / 0.165, r.tokensPerSecond(), 1e-6);
        assertEquals(flops / 0.165 / 989.4e12, r.mfuBf16(), 1e-12);
        assertEquals(flops / 0.165 / 494.7e12, r.mfuTf32(), 1e-12);
        Map<String, Object> m = r.toMap();
        assertEquals(r.mfuBf16(), (Double) m.get("mfu_bf16_peak"), 0);
        assertEquals(40L << 30, m.get("memory_in_use_after_bytes"));
        assertEquals("H100 SXM", m.get("peak_gpu"));
    }

    @Test
    void gpuPeaksByNameAndFromTheFlag() {
        assertEquals(989.4e12, GpuPeak.of("NVIDIA H100 80GB HBM3").bf16(), 1);
        assertEquals(494.7e12, GpuPeak.of("NVIDIA H100 80GB HBM3").tf32(), 1);
        assertEquals("H100 PCIe", GpuPeak.of("NVIDIA H100 PCIe").gpu());
        assertEquals("H200 SXM", GpuPeak.of("NVIDIA H200").gpu());
        assertEquals("H200 NVL", GpuPeak.of("NVIDIA H200 NVL").gpu());
        assertEquals("A100", GpuPeak.of("NVIDIA A100-SXM4-80GB").gpu());
        assertNull(GpuPeak.of("Tesla T4"));
        assertEquals(50e12, GpuPeak.parse("100").tf32(), 1);
        assertEquals(494.7e12, GpuPeak.parse("989.4, 494.7").tf32(), 1);
        assertThrows(IllegalArgumentException.class, () -> GpuPeak.parse("1,2,3"));
        assertThrows(IllegalArgumentException.class, () -> GpuPeak.parse("-5"));
    }

    @Test
    void randomTokensAreDeterministicNextTokenPairs() {
        RandomTokenSource s = new RandomTokenSource(1000, 7);
        TokenBatch a = s.batch(3, 2, 50);
        TokenBatch b = s.batch(3, 2, 50);
        assertArrayEquals(a.inputs(), b.inputs());
        assertArrayEquals(a.labels(), b.labels());
        assertTrue(!java.util.Arrays.equals(a.inputs(), s.batch(4, 2, 50).inputs()));
        for (int r = 0; r < 2; r++) {
            for (int i = 0; i + 1 < 50; i++) {
                assertEquals(a.labels()[r * 50 + i], a.inputs()[r * 50 + i + 1]);
            }
        }
        long max = 0;
        for (long t : a.inputs()) {
            assertTrue(t >= 0 && t < 1000, "token " + t);
            max = Math.max(max, t);
        }
        assertTrue(max > 500, "tokens spread over the vocabulary: max " + max);
        assertEquals(Math.log(1000), s.unigramEntropy(), 1e-12);
        assertThrows(IllegalArgumentException.class, () -> new RandomTokenSource(1, 7));
    }
}
