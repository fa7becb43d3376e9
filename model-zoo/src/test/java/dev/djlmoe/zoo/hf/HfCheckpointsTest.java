/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.NormalInitializer;
import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsException;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import dev.djlmoe.zoo.io.TensorInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeSet;
import java.util.function.BiFunction;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Save and load of Hugging Face checkpoints: round trips, name mapping, bad checkpoints. */
class HfCheckpointsTest {

    @TempDir Path tmp;

    static float[] logits(HfMoeForCausalLm model, NDManager m, long[] ids, long[] shape) {
        try (NDManager sub = m.newSubManager()) {
            NDArray x = sub.create(ids, new Shape(shape));
            NDArray out =
                    model.forward(new ParameterStore(sub, false), new NDList(x), false).head();
            return out.toFloatArray();
        }
    }

    static float[] run(Path dir, long[] ids, long[] shape) throws IOException {
        try (NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model = HfCheckpoints.load(dir, m, null);
            return logits(model, m, ids, shape);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny", "tiny-deepseek-v2", "tiny-qwen3-moe"})
    void randomModelSaveLoadGivesIdenticalLogits(String preset) throws IOException {
        HfMoeConfig cfg =
                preset.equals("tiny")
                        ? HfMoeConfig.preset(preset).with(Map.of("tie_word_embeddings", true))
                        : HfMoeConfig.preset(preset);
        long[] ids = new long[2 * 7];
        Random r = new Random(3);
        for (int i = 0; i < ids.length; i++) {
            ids[i] = r.nextInt((int) cfg.vocabSize());
        }
        long[] shape = {2, 7};
        Path dir = tmp.resolve(preset);
        float[] before;
        try (NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model = HfMoeForCausalLm.builder().setConfig(cfg).build();
            model.setInitializer(new NormalInitializer(0.2f), p -> true);
            model.initialize(m, DataType.FLOAT32, new Shape(2, 7));
            before = logits(model, m, ids, shape);
            HfCheckpoints.save(model, dir);
            try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dir)) {
                List<String> expectedNames = new ArrayList<>();
                for (HfMoeForCausalLm.HfTensor t : model.hfTensors()) {
                    expectedNames.add(t.name());
                }
                assertEquals(new TreeSet<>(expectedNames), new TreeSet<>(c.names()));
                assertEquals(cfg.tieWordEmbeddings(), !c.has("lm_head.weight"));
            }
        }
        assertEquals(
                cfg.toMap().get("model_type"), HfMoeConfig.load(dir).toMap().get("model_type"));
        float[] after = run(dir, ids, shape);
        assertArrayEquals(before, after, "float32 save/load is exact");
    }

    /** A transformers checkpoint saved by us keeps every name and value. */
    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3_qlora_yarn", "qwen3_moe_sharded", "deepseek_v2_lite"})
    void huggingFaceNamesAndValuesSurviveASave(String name) throws IOException {
        Path out = tmp.resolve(name);
        try (NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model = HfCheckpoints.load(Fixtures.dir(name), m, null);
            HfCheckpoints.save(model, out);
        }
        try (SafetensorsCheckpoint a = SafetensorsCheckpoint.open(Fixtures.dir(name));
                SafetensorsCheckpoint b = SafetensorsCheckpoint.open(out)) {
            assertEquals(new TreeSet<>(a.names()), new TreeSet<>(b.names()));
            for (String t : a.names()) {
                assertArrayEquals(a.info(t).shape(), b.info(t).shape(), t);
                assertArrayEquals(a.readFloats(t), b.readFloats(t), t);
            }
        }
        Fixtures.Expected exp = Fixtures.expected(name);
        float[] got = run(out, exp.ids(), exp.idsShape());
        assertTrue(Fixtures.relativeError(got, exp.logits()) < 1e-4);
    }

    @Test
    void bf16SaveIsReadBack() throws IOException {
        String name = "qwen3_moe_tied_bias";
        Path out = tmp.resolve("bf16");
        try (NDManager m = NDManager.newBaseManager()) {
            HfCheckpoints.save(HfCheckpoints.load(Fixtures.dir(name), m, null), out, DType.BF16);
        }
        try (SafetensorsCheckpoint a = SafetensorsCheckpoint.open(Fixtures.dir(name));
                SafetensorsCheckpoint b = SafetensorsCheckpoint.open(out)) {
            assertEquals(new TreeSet<>(a.names()), new TreeSet<>(b.names()));
            for (String t : a.names()) {
                assertEquals(DType.BF16, b.info(t).dtype(), t);
                float[] orig = a.readFloats(t);
                float[] back = b.readFloats(t);
                for (int i = 0; i < orig.length; i++) {
                    assertEquals(DType.bf16ToFloat(DType.floatToBf16(orig[i])), back[i], t);
                }
            }
        }
        // and the model loads from it (routing may flip on rounded weights: no tight bound)
        Fixtures.Expected exp = Fixtures.expected(name);
        float[] got = run(out, exp.ids(), exp.idsShape());
        assertEquals(exp.logits().length, got.length);
        assertTrue(Fixtures.relativeError(got, exp.logits()) < 0.5);
    }

    /** Copies a checkpoint into one model.safetensors, changing tensors on the way. */
    static void rewrite(
            Path src,
            Path dst,
            BiFunction<String, float[], float[]> change,
            Map<String, long[]> add)
            throws IOException {
        Files.createDirectories(dst);
        Files.copy(src.resolve("config.json"), dst.resolve("config.json"));
        SafetensorsWriter w = new SafetensorsWriter();
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(src)) {
            for (String n : new TreeSet<>(c.names())) {
                TensorInfo ti = c.info(n);
                float[] v = change.apply(n, c.readFloats(n));
                if (v == null) {
                    continue;
                }
                long[] shape = v.length == ti.numel() ? ti.shape() : new long[] {v.length};
                w.add(n, DType.F32, shape, v);
            }
        }
        for (Map.Entry<String, long[]> e : add.entrySet()) {
            long n = 1;
            for (long d : e.getValue()) {
                n *= d;
            }
            w.add(e.getKey(), DType.F32, e.getValue(), new float[(int) n]);
        }
        w.write(dst.resolve(SafetensorsCheckpoint.SINGLE_FILE));
    }

    private String loadError(Path dir) {
        SafetensorsException e =
                assertThrows(
                        SafetensorsException.class,
                        () -> {
                            try (NDManager m = NDManager.newBaseManager()) {
                                HfCheckpoints.load(dir, m, null);
                            }
                        });
        return e.getMessage();
    }

    @Test
    void missingTensorIsNamed() throws IOException {
        Path d = tmp.resolve("missing");
        String gone = "model.layers.1.mlp.experts.3.up_proj.weight";
        rewrite(
                Fixtures.dir("deepseek_v3_qlora_yarn"),
                d,
                (n, v) -> n.equals(gone) ? null : v,
                Map.of());
        String msg = loadError(d);
        assertTrue(msg.contains("missing 1 tensor(s)") && msg.contains(gone), msg);
    }

    @Test
    void shapeMismatchNamesExpectedAndFound() throws IOException {
        Path d = tmp.resolve("shape");
        String bad = "model.layers.0.self_attn.kv_b_proj.weight";
        rewrite(
                Fixtures.dir("deepseek_v3_qlora_yarn"),
                d,
                (n, v) -> n.equals(bad) ? new float[v.length - 16] : v,
                Map.of());
        String msg = loadError(d);
        assertTrue(
                msg.contains(bad)
                        && msg.contains("has shape [1776]")
                        && msg.contains("expected [112, 16]"),
                msg);
    }

    @Test
    void unexpectedTensorsFailStrictLoadsButMtpLayersAreIgnored() throws IOException {
        Path mtp = tmp.resolve("mtp");
        rewrite(
                Fixtures.dir("deepseek_v3_qlora_yarn"),
                mtp,
                (n, v) -> v,
                Map.of(
                        "model.layers.3.eh_proj.weight",
                        new long[] {32, 64},
                        "model.layers.3.mlp.experts.0.gate_proj.weight",
                        new long[] {16, 32}));
        Fixtures.Expected exp = Fixtures.expected("deepseek_v3_qlora_yarn");
        assertTrue(
                Fixtures.relativeError(run(mtp, exp.ids(), exp.idsShape()), exp.logits()) < 1e-4);
        Path extra = tmp.resolve("extra");
        rewrite(
                Fixtures.dir("deepseek_v3_qlora_yarn"),
                extra,
                (n, v) -> v,
                Map.of("model.layers.0.self_attn.surprise.weight", new long[] {2}));
        String msg = loadError(extra);
        assertTrue(msg.contains("1 unexpected tensor(s)") && msg.contains("surprise"), msg);
        // the DJL factory is lenient by default: it logs and loads
        try (NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model =
                    HfMoeForCausalLm.builder().setConfig(HfMoeConfig.load(extra)).build();
            HfCheckpoints.loadWeights(model, extra, m, false);
            assertTrue(model.isInitialized());
        }
    }

    /** Experts stored fused ([E, 2I, H] gate_up_proj, [E, H, I] down_proj) load the same. */
    @Test
    void fusedExpertLayoutLoads() throws IOException {
        String name = "qwen3_moe_sharded";
        HfMoeConfig cfg = HfMoeConfig.load(Fixtures.dir(name));
        int e = cfg.numExperts();
        int inter = (int) cfg.moeIntermediateSize();
        int h = (int) cfg.hiddenSize();
        Path d = tmp.resolve("fused");
        Files.createDirectories(d);
        Files.copy(Fixtures.dir(name).resolve("config.json"), d.resolve("config.json"));
        SafetensorsWriter w = new SafetensorsWriter();
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(Fixtures.dir(name))) {
            for (String n : new TreeSet<>(c.names())) {
                if (!n.contains(".mlp.experts.")) {
                    w.add(n, DType.F32, c.info(n).shape(), c.readFloats(n));
                }
            }
            for (int layer = 0; layer < cfg.numLayers(); layer++) {
                if (!cfg.isMoeLayer(layer)) {
                    continue;
                }
                String p = "model.layers." + layer + ".mlp.experts.";
                float[] gateUp = new float[e * 2 * inter * h];
                float[] down = new float[e * h * inter];
                for (int x = 0; x < e; x++) {
                    float[] g = c.readFloats(p + x + ".gate_proj.weight");
                    float[] u = c.readFloats(p + x + ".up_proj.weight");
                    float[] dn = c.readFloats(p + x + ".down_proj.weight");
                    System.arraycopy(g, 0, gateUp, x * 2 * inter * h, g.length);
                    System.arraycopy(u, 0, gateUp, x * 2 * inter * h + g.length, u.length);
                    System.arraycopy(dn, 0, down, x * h * inter, dn.length);
                }
                w.add(p + "gate_up_proj", DType.F32, new long[] {e, 2L * inter, h}, gateUp);
                w.add(p + "down_proj", DType.F32, new long[] {e, h, inter}, down);
            }
        }
        w.write(d.resolve(SafetensorsCheckpoint.SINGLE_FILE));
        Fixtures.Expected exp = Fixtures.expected(name);
        assertTrue(Fixtures.relativeError(run(d, exp.ids(), exp.idsShape()), exp.logits()) < 1e-4);
    }

    @Test
    void configErrorsNameTheKey() {
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> HfMoeConfig.preset("tiny").with(Map.of("model_type", "llama")));
        assertTrue(e.getMessage().contains("model_type \"llama\""), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> HfMoeConfig.preset("tiny").with(Map.of("num_experts_per_tok", 99L)));
        assertTrue(e.getMessage().contains("num_experts_per_tok = 99"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> HfMoeConfig.preset("tiny").with(Map.of("hidden_size", "big")));
        assertTrue(
                e.getMessage().contains("hidden_size must be a positive integer"), e.getMessage());
        assertFalse(HfMoeConfig.preset("tiny").isMoeLayer(0));
    }
}
