/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A DeepSeek-V3 checkpoint whose routed experts are FP8 E4M3 with 128x128 {@code weight_scale_inv}
 * blocks (the layout of the released DeepSeek-V3 weights) loads to exactly the dequantised values:
 * the same logits as an F32 checkpoint of those values.
 */
class Fp8CheckpointTest {

    @TempDir Path tmp;

    /** Nearest E4M3 ("fn") byte of a value in [-448, 448] (ties to even by brute force). */
    static byte toE4m3(float v) {
        int best = 0;
        float bestErr = Float.MAX_VALUE;
        for (int b = 0; b < 256; b++) {
            float f = DType.e4m3ToFloat((byte) b);
            if (Float.isNaN(f)) {
                continue;
            }
            float err = Math.abs(f - v);
            if (err < bestErr || (err == bestErr && (b & 1) == 0)) {
                best = b;
                bestErr = err;
            }
        }
        return (byte) best;
    }

    @Test
    void fp8ExpertsLoadAsTheirDequantisedValues() throws IOException {
        String name = "deepseek_v3_qlora_yarn";
        Path fp8 = tmp.resolve("fp8");
        Path ref = tmp.resolve("ref");
        Files.createDirectories(fp8);
        Files.createDirectories(ref);
        Files.copy(Fixtures.dir(name).resolve("config.json"), fp8.resolve("config.json"));
        Files.copy(Fixtures.dir(name).resolve("config.json"), ref.resolve("config.json"));
        Map<String, Object> header = new LinkedHashMap<>();
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        SafetensorsWriter refWriter = new SafetensorsWriter();
        int quantised = 0;
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(Fixtures.dir(name))) {
            for (String t : new TreeSet<>(c.names())) {
                long[] shape = c.info(t).shape();
                float[] v = c.readFloats(t);
                if (!t.contains(".mlp.experts.")) {
                    put(header, data, t, "F32", shape, f32(v));
                    refWriter.add(t, DType.F32, shape, v);
                    continue;
                }
                // one partial block: scale = amax / 448
                float amax = 0;
                for (float x : v) {
                    amax = Math.max(amax, Math.abs(x));
                }
                float scale = amax / 448f;
                byte[] q = new byte[v.length];
                float[] deq = new float[v.length];
                for (int i = 0; i < v.length; i++) {
                    q[i] = toE4m3(v[i] / scale);
                    deq[i] = DType.e4m3ToFloat(q[i]) * scale;
                }
                put(header, data, t, "F8_E4M3", shape, q);
                put(
                        header,
                        data,
                        t + "_scale_inv",
                        "F32",
                        new long[] {1, 1},
                        f32(new float[] {scale}));
                refWriter.add(t, DType.F32, shape, deq);
                quantised++;
            }
        }
        assertTrue(quantised > 0);
        byte[] h = Json.writeCompact(header).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length);
        ByteArrayOutputStream file = new ByteArrayOutputStream();
        file.write(len.array());
        file.write(h);
        file.write(data.toByteArray());
        Files.write(fp8.resolve(SafetensorsCheckpoint.SINGLE_FILE), file.toByteArray());
        refWriter.write(ref.resolve(SafetensorsCheckpoint.SINGLE_FILE));

        Fixtures.Expected exp = Fixtures.expected(name);
        float[] a = HfCheckpointsTest.run(fp8, exp.ids(), exp.idsShape());
        float[] b = HfCheckpointsTest.run(ref, exp.ids(), exp.idsShape());
        assertArrayEquals(b, a, "FP8 + scale_inv loads as its dequantised float32 values");
        assertTrue(Fixtures.relativeError(a, exp.logits()) < 0.5, "and stays near the original");
    }

    private static byte[] f32(float[] v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            b.putFloat(x);
        }
        return b.array();
    }

    private static void put(
            Map<String, Object> header,
            ByteArrayOutputStream data,
            String name,
            String dtype,
            long[] shape,
            byte[] bytes) {
        Map<String, Object> t = new LinkedHashMap<>();
        t.put("dtype", dtype);
        List<Object> s = new java.util.ArrayList<>();
        for (long d : shape) {
            s.add(d);
        }
        t.put("shape", s);
        long begin = data.size();
        t.put("data_offsets", List.of(begin, begin + bytes.length));
        header.put(name, t);
        data.write(bytes, 0, bytes.length);
    }
}
