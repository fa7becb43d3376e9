/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The memory plan of the 16B preset against numbers computed by hand. */
class MemoryPlanTest {

    @Test
    void deepseekV3_16bAtEp8() {
        HfMoeConfig cfg = HfMoeConfig.preset("deepseek-v3-16b");
        // By hand (H 2048, 16 heads, nope 128, rope 64, v 128, kv_lora 512, V 102400):
        // embed + lm_head 2 * 102400 * 2048 = 419,430,400; final norm 2,048
        // attention/layer: q 2048*16*192 = 6,291,456; kv_a 2048*576 = 1,179,648; kv norm 512;
        //   kv_b 512*16*256 = 2,097,152; o 2048*2048 = 4,194,304 -> 13,763,072 (+ 2 norms 4,096)
        // 1 dense MLP 3*2048*10944 = 67,239,936
        // 26 MoE layers: router 131,072 + bias 64 + shared 3*2048*2816 = 17,301,504,
        //   routed 64*3*2048*1408 = 553,648,128
        assertEquals(13_763_072L, cfg.attentionParameters());
        long routed = 26L * 553_648_128L;
        long dense =
                419_430_400L
                        + 2_048L
                        + 27L * (13_763_072L + 4_096L)
                        + 67_239_936L
                        + 26L * (131_072L + 64L + 17_301_504L);
        assertEquals(14_394_851_328L, routed);
        assertEquals(1_311_634_560L, dense);
        assertEquals(15_706_485_888L, cfg.numParameters());

        MemoryPlan plan = new MemoryPlan(cfg, 8, 1, 4096);
        assertEquals(1_311_634_560L + 1_799_356_416L, plan.parametersPerRank());
        assertEquals(3_110_990_976L - 26L * 64, plan.gradientsPerRank());
        assertEquals(2 * (3_110_990_976L - 1_664L), plan.optimizerStatePerRank());
        // activations per token: attention+norms 4*2048 + 16*4096 + 3072 + 1024 + 576 + 512
        //   + 4096 + 64 + 2048 = 85,120 per layer; dense MLP 32,832; MoE 64 + 6*2048
        //   + 3*6*1408 + 3*2*1408 = 46,144; outside 2*2048 + 2*102400 = 208,896
        assertEquals(85_120L, plan.attentionActivationsPerToken());
        assertEquals(46_144L, plan.moeActivationsPerToken());
        long perToken = 27L * 85_120L + 32_832L + 26L * 46_144L + 208_896L;
        assertEquals(3_739_712L, perToken);
        assertEquals(perToken * 4096L, plan.activationsPerRank());
        long bytes = 4L * (3_110_990_976L + 3_110_989_312L + 6_221_978_624L + 15_317_860_352L);
        assertEquals(bytes, plan.totalBytesPerRank());
        String report = plan.report();
        System.out.print(report);
        assertTrue(report.contains("3,110,990,976"), report);
    }

    @Test
    void moreRanksHoldFewerExperts() {
        HfMoeConfig cfg = HfMoeConfig.preset("deepseek-v3-16b");
        long one = new MemoryPlan(cfg, 1, 1, 1024).parametersPerRank();
        long four = new MemoryPlan(cfg, 4, 1, 1024).parametersPerRank();
        assertEquals(cfg.routedExpertParameters() * 3 / 4, one - four);
        assertThrows(IllegalArgumentException.class, () -> new MemoryPlan(cfg, 3, 1, 1));
    }

    @Test
    void presetsHaveTheirShapes() {
        HfMoeConfig big = HfMoeConfig.preset("deepseek-v3-671b");
        assertEquals(61, big.numLayers());
        assertEquals(256, big.numExperts());
        // DeepSeek-V3: 671B parameters without the 14B multi-token-prediction module
        assertTrue(Math.abs(big.numParameters() - 671e9) < 2e9, "" + big.numParameters());
        HfMoeConfig s = HfMoeConfig.preset("deepseek-v3-16b");
        assertEquals(2048, s.hiddenSize());
        assertEquals(0, s.qLoraRank());
        assertEquals(26, s.numMoeLayers());
    }
}
