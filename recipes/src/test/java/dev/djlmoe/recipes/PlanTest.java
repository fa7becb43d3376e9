/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.plan.TrainingPlan;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.hf.MemoryPlan;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code plan} for the README's headline example, {@code deepseek-v3-16b} at EP = 8 with MXFP8, 1 x
 * 4096 tokens per rank, against numbers worked out by hand from the preset (vocab 102400, H 2048,
 * 27 layers of which the first is dense with width 10944, 16 heads, MLA without q-LoRA: kv-LoRA
 * 512, nope 128, rope 64, v 128; 64 routed experts of width 1408, top-6, 2 shared).
 */
class PlanTest {

    private static final TrainingPlan PLAN =
            new TrainingPlan(
                    HfMoeConfig.preset("deepseek-v3-16b"), 8, 1, 4096, TrainingPrecision.MXFP8);

    @Test
    void memoryPerRankByHand() {
        // One layer's attention: q 2048*16*192 + kv_a 2048*576 + kv_a norm 512
        //   + kv_b 512*16*256 + o 16*128*2048 = 6,291,456 + 1,179,648 + 512 + 2,097,152
        //   + 4,194,304 = 13,763,072.
        long attention = 13_763_072L;
        // Dense part: embedding and head 2 * 102400 * 2048 = 419,430,400; final norm 2048;
        // 27 layers * (attention + two norms 4096); the dense MLP 3 * 2048 * 10944 = 67,239,936;
        // 26 MoE layers * (router 64 * 2048 + bias 64 + shared 2 * 3 * 2048 * 1408 = 17,301,504).
        long dense =
                419_430_400L
                        + 2_048L
                        + 27L * (attention + 4_096L)
                        + 67_239_936L
                        + 26L * (131_072L + 64L + 17_301_504L);
        assertEquals(1_311_634_560L, dense);
        // Routed experts: 26 * 64 * 3 * 2048 * 1408 = 14,394,851,328, an eighth per rank.
        long perRank = dense + 14_394_851_328L / 8;
        assertEquals(3_110_990_976L, perRank);
        MemoryPlan m = PLAN.memory();
        assertEquals(perRank, m.parametersPerRank());
        assertEquals(perRank - 26 * 64, m.gradientsPerRank(), "correction biases: no gradient");
        assertEquals(2 * (perRank - 26 * 64), m.optimizerStatePerRank());
        // Activations per token: outside the layers 2H + 2V = 208,896; attention per layer
        // 4H + N S + N(dn+dr) + N dr + (r_kv+dr) + r_kv + N(dn+dv) + dr + N dv
        //   = 8192 + 65536 + 3072 + 1024 + 576 + 512 + 4096 + 64 + 2048 = 85,120;
        // MoE MLP E + K H + 3 K I + 3 n_shared I = 64 + 12288 + 25344 + 8448 = 46,144;
        // dense MLP 3 * 10944 = 32,832.
        long perToken = 208_896L + 27L * 85_120L + 26L * 46_144L + 32_832L;
        assertEquals(3_739_712L, perToken);
        assertEquals(perToken * 4096, m.activationsPerRank());
        long bytes = 4 * (perRank + 3 * (perRank - 26 * 64) + perToken * 4096);
        assertEquals(111_047_277_056L, bytes);
        assertEquals(bytes, m.totalBytesPerRank());
    }

    @Test
    void stepFlopsByHand() {
        Map<String, Long> f = PLAN.forwardFlopsPerToken();
        // 2 FLOPs per multiply-add, per token, forward.
        assertEquals(
                2L * 27 * (6_291_456L + 1_179_648L + 2_097_152L + 4_194_304L),
                f.get("attention projections"));
        assertEquals(2L * 27 * (16 * 4096 * 192 + 16 * 4096 * 128), f.get("attention scores"));
        assertEquals(2L * 67_239_936L, f.get("dense MLP"));
        assertEquals(2L * 26 * 64 * 2048, f.get("router"));
        assertEquals(2L * 26 * 6 * 3 * 2048 * 1408, f.get("routed experts"));
        assertEquals(2L * 26 * 2 * 3 * 2048 * 1408, f.get("shared experts"));
        assertEquals(2L * 2048 * 102400, f.get("LM head"));
        assertEquals(6_035_079_168L, PLAN.forwardFlopsPerTokenTotal());
        // A step is forward + backward = 3 forwards of the rank's 4096 tokens.
        assertEquals(3.0 * 6_035_079_168L * 4096, PLAN.stepFlopsPerRank(), 1.0);
        assertEquals(74_159_052_816_384.0, PLAN.stepFlopsPerRank(), 1.0);
        assertEquals(8 * 74_159_052_816_384.0, PLAN.stepFlopsGlobal(), 8.0);
        assertEquals(2_699_034_624.0 / 6_035_079_168L, PLAN.expertFlopShare(), 1e-12);
    }

    @Test
    void epTrafficByHand() {
        // A token's 6 experts among 64, 8 per rank: P(a given rank holds none) =
        // C(56,6)/C(64,6) = (56*55*54*53*52*51)/(64*63*62*61*60*59).
        double miss = 23_377_273_920.0 / 53_981_544_960.0;
        double remote = 7 * (1 - miss);
        assertEquals(3.9686, remote, 1e-4);
        assertEquals(remote, PLAN.remoteRanksPerToken(), 1e-12);
        double rows = 4096 * remote * 26;
        Map<String, Double> b = PLAN.epBytesPerRank();
        assertEquals(rows * (2048 + 2048 / 32), b.get("dispatch (forward)"), 1.0);
        assertEquals(rows * 4 * 2048, b.get("combine (forward)"), 1.0);
        assertEquals(2 * rows * 4 * 2048, b.get("backward (both)"), 1.0);
        assertEquals(2112, TrainingPlan.rowBytes(WireFormat.MXFP8, 2048));
        assertEquals(2048 + 4 * 16, TrainingPlan.rowBytes(WireFormat.FP8, 2048));
        assertEquals(4096, TrainingPlan.rowBytes(WireFormat.BF16, 2048));
    }

    @Test
    void reportNamesTheFiguresAndExpertsMustDivide() {
        String r = PLAN.report("deepseek-v3-16b", 141);
        assertTrue(r.contains("3,110,990,976"), r);
        assertTrue(r.contains("103.42"), r); // GiB per rank
        assertTrue(r.contains("fits in 141 GiB"), r);
        assertTrue(r.contains("74.16 TFLOP"), r);
        assertTrue(r.contains("routed experts (MXFP8)"), r);
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () ->
                                new TrainingPlan(
                                        HfMoeConfig.preset("deepseek-v3-16b"),
                                        6,
                                        1,
                                        4096,
                                        TrainingPrecision.MXFP8));
        assertTrue(
                e.getMessage().contains("64 routed experts")
                        && e.getMessage().contains("EP size 6"),
                e.getMessage());
    }

    @Test
    void layersCutTheModelAndSaveConfigWritesIt(@TempDir Path tmp) throws Exception {
        Path file = tmp.resolve("cut").resolve("config.json");
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        PrintStream stdout = System.out;
        CliCall.Run r;
        System.setOut(new PrintStream(printed, true, StandardCharsets.UTF_8));
        try {
            r =
                    CliCall.cli(
                            "plan",
                            "--model",
                            "deepseek-v3-16b",
                            "--layers",
                            "4",
                            "--ep",
                            "1",
                            "--precision",
                            "fp32",
                            "--save-config",
                            file.toString());
        } finally {
            System.setOut(stdout);
        }
        assertEquals(0, r.code(), r.err());
        String out = printed.toString(StandardCharsets.UTF_8);
        HfMoeConfig saved = HfMoeConfig.load(file);
        assertEquals(4, saved.numLayers());
        assertEquals(3, saved.numMoeLayers());
        assertEquals(HfMoeConfig.preset("deepseek-v3-16b").withNumLayers(4).toMap(), saved.toMap());
        // Forward FLOPs per token of 1 dense + 3 MoE layers, by hand as in stepFlopsByHand.
        long perToken =
                2L * 4 * 13_762_560L
                        + 2L * 4 * (16 * 4096 * 192 + 16 * 4096 * 128)
                        + 2L * 67_239_936L
                        + 2L * 3 * 64 * 2048
                        + 2L * 3 * 6 * 3 * 2048 * 1408
                        + 2L * 3 * 2 * 3 * 2048 * 1408
                        + 2L * 2048 * 102400;
        TrainingPlan cut = new TrainingPlan(saved, 1, 1, 4096, TrainingPrecision.FP32);
        assertEquals(perToken, cut.forwardFlopsPerTokenTotal());
        assertTrue(out.contains("deepseek-v3-16b --layers 4 (deepseek_v3, 4 layers"), out);
        assertTrue(out.contains(TrainingPlan.flops(3.0 * perToken * 4096)), out);
        assertTrue(out.contains("config.json: " + file), out);

        r = CliCall.cli("plan", "--model", "deepseek-v3-16b", "--layers", "1");
        assertEquals(1, r.code());
        assertTrue(
                r.err().contains("--layers 1: num_hidden_layers 1 leaves no MoE layer"), r.err());
        r = CliCall.cli("pretrain", "--layers", "0");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("--layers 0: num_hidden_layers 0 must be >= 1"), r.err());
    }

    @Test
    void committedBenchmarkConfigIsTheCutPreset() throws Exception {
        // native-ep/bench/train_step_bench.sh falls back on this file when plan cannot run; the
        // torch baseline must train exactly what bench step trains.
        Path file = Path.of("..", "native-ep", "bench", "deepseek-v3-16b-4layers.config.json");
        assertEquals(
                HfMoeConfig.preset("deepseek-v3-16b").withNumLayers(4).toMap(),
                HfMoeConfig.load(file).toMap(),
                file
                        + " differs from the preset: regenerate it with djl-moe plan --model"
                        + " deepseek-v3-16b --layers 4 --save-config "
                        + file);
    }
}
