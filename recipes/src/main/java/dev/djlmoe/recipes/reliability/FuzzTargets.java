/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.JsonException;
import dev.djlmoe.zoo.io.SafetensorsCheckpoint;
import dev.djlmoe.zoo.io.SafetensorsException;
import dev.djlmoe.zoo.io.SafetensorsFile;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import dev.djlmoe.zoo.io.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The parsers of untrusted input that {@code djl-moe fuzz} drives: the safetensors reader (a whole
 * file: length field, JSON header, data, then every tensor read back), the bounded JSON parser,
 * {@code config.json} interpretation and the shard index. Their clean refusals are {@link
 * SafetensorsException} / {@link JsonException} (and other {@link IOException}s) and, for
 * configuration values, {@link IllegalArgumentException}; everything else is a finding.
 */
public final class FuzzTargets {

    private FuzzTargets() {}

    /**
     * Returns every target, working in {@code dir} (a scratch directory the caller removes).
     *
     * @param dir scratch space for the files the targets read
     * @return the targets
     * @throws IOException if the seeds cannot be built
     */
    public static List<MutationFuzzer.Target> all(Path dir) throws IOException {
        List<MutationFuzzer.Target> t = new ArrayList<>();
        t.add(safetensors(dir));
        t.add(json());
        t.add(config());
        t.add(index(dir));
        return t;
    }

    private static boolean ioRefusal(Throwable e) {
        return e instanceof IOException;
    }

    /**
     * Builds safetensors seeds with the writer: every dtype, metadata, empty and multi-dimensional
     * tensors.
     */
    static List<byte[]> safetensorsSeeds(Path dir) throws IOException {
        List<byte[]> seeds = new ArrayList<>();
        Path p = dir.resolve("seed.safetensors");
        new SafetensorsWriter()
                .add("a", DType.F32, new long[] {2, 3}, new float[6])
                .add("b", DType.BF16, new long[] {4}, new float[] {1, -2, 3.5f, 0})
                .add("empty", DType.F32, new long[] {0, 5}, new float[0])
                .metadata("format", "pt")
                .write(p);
        seeds.add(Files.readAllBytes(p));
        Files.deleteIfExists(p);
        // The other dtypes, written by hand (the writer makes F32 and BF16 only).
        seeds.add(
                raw(
                        "{\"model.layers.0.mlp.experts.0.gate_proj.weight\":{\"dtype\":\"F16\","
                                + "\"shape\":[2,2],\"data_offsets\":[0,8]},"
                                + "\"w8\":{\"dtype\":\"F8_E4M3\","
                                + "\"shape\":[1,4],\"data_offsets\":[8,12]},"
                                + "\"w8_scale_inv\":{\"dtype\":\"F32\","
                                + "\"shape\":[1,1],\"data_offsets\":[12,16]}}",
                        16));
        seeds.add(
                raw(
                        "{\"__metadata__\":{\"format\":\"pt\"},\"ids\":{\"dtype\":\"I64\","
                            + "\"shape\":[3],\"data_offsets\":[0,24]},\"mask\":{\"dtype\":\"BOOL\","
                            + "\"shape\":[2],\"data_offsets\":[24,26]},\"d\":{\"dtype\":\"F64\","
                            + "\"shape\":[1],\"data_offsets\":[26,34]},"
                            + "\"e5\":{\"dtype\":\"F8_E5M2\","
                            + "\"shape\":[2],\"data_offsets\":[34,36]}}",
                        36));
        return seeds;
    }

    /** A safetensors file from a header text and {@code dataBytes} bytes of 0x3c. */
    private static byte[] raw(String header, int dataBytes) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        java.nio.ByteBuffer b =
                java.nio.ByteBuffer.allocate(8 + h.length + dataBytes)
                        .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        while (b.hasRemaining()) {
            b.put((byte) 0x3c);
        }
        return b.array();
    }

    static MutationFuzzer.Target safetensors(Path dir) throws IOException {
        List<byte[]> seeds = safetensorsSeeds(dir);
        Path file = dir.resolve("input.safetensors");
        return new MutationFuzzer.Target() {
            @Override
            public String name() {
                return "safetensors";
            }

            @Override
            public List<byte[]> seeds() {
                return seeds;
            }

            @Override
            public void run(byte[] input) throws Exception {
                Files.write(file, input);
                try (SafetensorsFile f = SafetensorsFile.open(file)) {
                    f.metadata().size();
                    for (TensorInfo ti : f.tensors().values()) {
                        if (ti.dtype().isFloating()) {
                            FloatBuffer fb = FloatBuffer.allocate((int) ti.numel());
                            f.readFloats(ti, 0, ti.numel(), fb);
                        } else {
                            f.readLongs(ti.name());
                        }
                        f.readRaw(ti.name());
                    }
                }
            }

            @Override
            public boolean isCleanRefusal(Throwable e) {
                return ioRefusal(e);
            }
        };
    }

    static MutationFuzzer.Target json() {
        List<byte[]> seeds = new ArrayList<>();
        seeds.add(
                "{\"a\": [1, 2.5, -3e-6, true, null, \"q\\\"\\u00e9\"], \"b\": {}}"
                        .getBytes(StandardCharsets.UTF_8));
        seeds.add(
                "{\"weight_map\": {\"x\": \"a.safetensors\"}, \"metadata\": {\"total_size\": 4}}"
                        .getBytes(StandardCharsets.UTF_8));
        seeds.add(
                "[[[[1]]], {\"k\": [{\"z\": -0.0}]}, \"\\ud83d\\ude00\"]"
                        .getBytes(StandardCharsets.UTF_8));
        return new MutationFuzzer.Target() {
            @Override
            public String name() {
                return "json";
            }

            @Override
            public List<byte[]> seeds() {
                return seeds;
            }

            @Override
            public void run(byte[] input) throws Exception {
                Object v = Json.parse(new String(input, StandardCharsets.UTF_8), "fuzz", 16);
                // What parses must write back and parse to the same value.
                Object again = Json.parse(Json.write(v), "fuzz (rewritten)", 16);
                if (!java.util.Objects.equals(normalise(v), normalise(again))) {
                    throw new IllegalStateException("write/parse round trip changed the value");
                }
            }

            @Override
            public boolean isCleanRefusal(Throwable e) {
                return e instanceof JsonException;
            }
        };
    }

    /** Doubles that print as integers (1.0) may come back as Longs: compare numerically. */
    private static Object normalise(Object v) {
        if (v instanceof Number n) {
            return n.doubleValue();
        }
        if (v instanceof List<?> l) {
            List<Object> out = new ArrayList<>();
            l.forEach(x -> out.add(normalise(x)));
            return out;
        }
        if (v instanceof java.util.Map<?, ?> m) {
            java.util.Map<Object, Object> out = new java.util.LinkedHashMap<>();
            m.forEach((k, x) -> out.put(k, normalise(x)));
            return out;
        }
        return v;
    }

    static MutationFuzzer.Target config() {
        List<byte[]> seeds = new ArrayList<>();
        for (String preset :
                new String[] {"tiny", "tiny-deepseek-v2", "tiny-qwen3-moe", "deepseek-v3-671b"}) {
            seeds.add(
                    Json.write(HfMoeConfig.preset(preset).toMap())
                            .getBytes(StandardCharsets.UTF_8));
        }
        return new MutationFuzzer.Target() {
            @Override
            public String name() {
                return "config";
            }

            @Override
            public List<byte[]> seeds() {
                return seeds;
            }

            @Override
            public void run(byte[] input) throws Exception {
                HfMoeConfig c =
                        HfMoeConfig.parse(
                                new String(input, StandardCharsets.UTF_8), "fuzz/config.json");
                c.toMap();
            }

            @Override
            public boolean isCleanRefusal(Throwable e) {
                return e instanceof JsonException || e instanceof IllegalArgumentException;
            }
        };
    }

    static MutationFuzzer.Target index(Path dir) throws IOException {
        Path ckpt = Files.createDirectories(dir.resolve("sharded"));
        new SafetensorsWriter()
                .add("x", DType.F32, new long[] {2}, new float[] {1, 2})
                .write(ckpt.resolve("a.safetensors"));
        new SafetensorsWriter()
                .add("y", DType.BF16, new long[] {1}, new float[] {3})
                .write(ckpt.resolve("b.safetensors"));
        List<byte[]> seeds =
                List.of(
                        ("{\"metadata\": {\"total_size\": 10}, \"weight_map\": "
                                        + "{\"x\": \"a.safetensors\", \"y\": \"b.safetensors\"}}")
                                .getBytes(StandardCharsets.UTF_8));
        Path indexFile = ckpt.resolve(SafetensorsCheckpoint.INDEX_FILE);
        return new MutationFuzzer.Target() {
            @Override
            public String name() {
                return "index";
            }

            @Override
            public List<byte[]> seeds() {
                return seeds;
            }

            @Override
            public void run(byte[] input) throws Exception {
                Files.write(indexFile, input);
                try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(ckpt)) {
                    for (String n : new String[] {"x", "y"}) {
                        if (c.has(n)) {
                            c.readFloats(n);
                        }
                    }
                } catch (UncheckedIOException e) {
                    throw e.getCause();
                }
            }

            @Override
            public boolean isCleanRefusal(Throwable e) {
                return ioRefusal(e);
            }
        };
    }
}
