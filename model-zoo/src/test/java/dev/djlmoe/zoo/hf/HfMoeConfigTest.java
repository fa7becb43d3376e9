/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.zoo.nn.RotaryEmbedding;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** config.json parsing: transformers 5 and legacy spellings, presets, writing back. */
class HfMoeConfigTest {

    @TempDir Path tmp;

    private static final String LEGACY_V3 =
            "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 80, \"hidden_size\": 32,"
                    + " \"intermediate_size\": 48, \"moe_intermediate_size\": 16,"
                    + " \"num_hidden_layers\": 3, \"num_attention_heads\": 4,"
                    + " \"num_key_value_heads\": 4, \"n_routed_experts\": 8,"
                    + " \"num_experts_per_tok\": 3, \"n_group\": 4, \"topk_group\": 2,"
                    + " \"n_shared_experts\": 1, \"first_k_dense_replace\": 1,"
                    + " \"routed_scaling_factor\": 2.5, \"q_lora_rank\": 24, \"kv_lora_rank\": 16,"
                    + " \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 8, \"v_head_dim\": 12,"
                    + " \"max_position_embeddings\": 256, \"rope_theta\": 10000,"
                    + " \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\","
                    + " \"num_nextn_predict_layers\": 1, \"quantization_config\":"
                    + " {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 64]},"
                    + " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
                    + " \"original_max_position_embeddings\": 64, \"beta_fast\": 32,"
                    + " \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 0.8}}";

    @Test
    void legacyRopeScalingReadsLikeRopeParameters() throws IOException {
        HfMoeConfig legacy = HfMoeConfig.parse(LEGACY_V3, "legacy");
        HfMoeConfig v5 = HfMoeConfig.load(Fixtures.dir("deepseek_v3_qlora_yarn"));
        assertEquals("yarn", legacy.rope().type());
        RotaryEmbedding a = new RotaryEmbedding(legacy.rope());
        RotaryEmbedding b = new RotaryEmbedding(v5.rope());
        assertArrayEquals(b.invFreq(), a.invFreq());
        assertEquals(b.attentionFactor(), a.attentionFactor());
        assertEquals(v5.attentionScale(), legacy.attentionScale());
        double mscale = 0.1 * 0.8 * Math.log(4) + 1;
        assertEquals(mscale * mscale / Math.sqrt(24), legacy.attentionScale(), 1e-12);
        assertEquals((0.1 * Math.log(4) + 1) / mscale, a.attentionFactor(), 1e-12);
        assertArrayEquals(new int[] {128, 64}, legacy.fp8BlockSize());
    }

    @Test
    void writesBackWhatItRead() throws IOException {
        HfMoeConfig c = HfMoeConfig.load(Fixtures.dir("qwen3_moe_tied_bias"));
        assertEquals(8, c.numExperts()); // from num_local_experts
        assertEquals(2, c.numKvHeads());
        assertTrue(c.isMoeLayer(1) && !c.isMoeLayer(0) && !c.isMoeLayer(2)); // sparse step 2
        Path f = tmp.resolve("config.json");
        Files.writeString(f, c.toJson());
        HfMoeConfig again = HfMoeConfig.load(f);
        assertEquals(c.toMap(), again.toMap());
        for (String p :
                new String[] {
                    "deepseek-v3-671b",
                    "deepseek-v3-16b",
                    "tiny",
                    "tiny-deepseek-v2",
                    "tiny-qwen3-moe"
                }) {
            HfMoeConfig preset = HfMoeConfig.preset(p);
            assertEquals(preset.toMap(), HfMoeConfig.parse(preset.toJson(), p).toMap(), p);
        }
    }

    @Test
    void unsupportedSettingsAreNamed() {
        String bad = LEGACY_V3.replace("\"type\": \"yarn\"", "\"type\": \"longrope\"");
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> HfMoeConfig.parse(bad, "x"));
        assertTrue(e.getMessage().contains("rope_type \"longrope\""), e.getMessage());
        String v2 = LEGACY_V3.replace("deepseek_v3", "deepseek_v2").replace("noaux_tc", "mystery");
        e = assertThrows(IllegalArgumentException.class, () -> HfMoeConfig.parse(v2, "x"));
        assertTrue(e.getMessage().contains("topk_method \"mystery\""), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> HfMoeConfig.preset("gpt-5"));
    }

    @Test
    void layerCountOverrideKeepsTheDenseLayersFirst() throws IOException {
        HfMoeConfig full = HfMoeConfig.preset("deepseek-v3-16b");
        HfMoeConfig four = full.withNumLayers(4);
        HfMoeConfig three = full.withNumLayers(3);
        assertEquals(4, four.numLayers());
        assertEquals(3, four.numMoeLayers());
        assertTrue(!four.isMoeLayer(0) && four.isMoeLayer(1) && four.isMoeLayer(3));
        // Every layer past the first is an MoE layer of the same size: the 23 cut away account
        // for the whole difference, and the 4-layer model is the 2.25 B parameters of the GPU step
        // benchmark.
        long moeLayer = four.numParameters() - three.numParameters();
        assertEquals(full.numParameters() - four.numParameters(), 23 * moeLayer);
        assertTrue(
                four.numParameters() > 2_200_000_000L && four.numParameters() < 2_300_000_000L,
                "parameters " + four.numParameters());
        // Only num_hidden_layers changed, and the cut survives config.json.
        Map<String, Object> a = new LinkedHashMap<>(full.toMap());
        Map<String, Object> b = new LinkedHashMap<>(four.toMap());
        assertEquals(27L, a.remove("num_hidden_layers"));
        assertEquals(4L, b.remove("num_hidden_layers"));
        assertEquals(a, b);
        assertEquals(four.toMap(), HfMoeConfig.parse(four.toJson(), "cut").toMap());
        // More layers continue the pattern.
        assertEquals(5, HfMoeConfig.preset("tiny").withNumLayers(6).numMoeLayers());

        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> HfMoeConfig.preset("tiny").withNumLayers(0));
        assertTrue(e.getMessage().contains("num_hidden_layers 0 must be >= 1"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> full.withNumLayers(1));
        assertTrue(
                e.getMessage().contains("num_hidden_layers 1 leaves no MoE layer")
                        && e.getMessage().contains("first_k_dense_replace = 1"),
                e.getMessage());
    }

    @Test
    void layerCountOverrideDropsMlpOnlyLayersPastTheEnd() throws IOException {
        HfMoeConfig qwen = HfMoeConfig.preset("tiny-qwen3-moe"); // mlp_only_layers [0]
        assertEquals(List.of(0L), qwen.withNumLayers(2).toMap().get("mlp_only_layers"));
        assertEquals(1, qwen.withNumLayers(2).numMoeLayers());
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> qwen.withNumLayers(1));
        assertTrue(
                e.getMessage().contains("leaves no MoE layer")
                        && e.getMessage().contains("mlp_only_layers"),
                e.getMessage());
        HfMoeConfig wide = qwen.with(Map.of("mlp_only_layers", List.of(0L, 2L, 5L)));
        assertEquals(List.of(0L, 2L), wide.withNumLayers(4).toMap().get("mlp_only_layers"));
        assertEquals(2, wide.withNumLayers(4).numMoeLayers()); // layers 1 and 3
    }
}
