/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
import java.io.RandomAccessFile;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/**
 * Table-driven hostile files: safetensors files (truncated, lying header lengths, overlapping and
 * out-of-range offsets, unknown dtypes, huge declared shapes, malformed JSON and JSON bombs), shard
 * indexes and {@code config.json}. Each case names the exception type and the parts its message
 * must hold (the file, the field, the value, the limit); the bombs also check that no allocation in
 * proportion to a declared size happens. The last test reads valid files again and prints the count
 * of cases tried.
 */
class HostileFilesTest {

    private static final Path FIXTURES = Paths.get("src/test/fixtures/hf");
    private static final Map<String, Integer> TRIED = new LinkedHashMap<>();

    @TempDir static Path tmp;

    private record Case(
            String area,
            String name,
            Class<? extends Throwable> type,
            Executable call,
            String... parts) {}

    private static void check(Case c) {
        Throwable e = assertThrows(c.type(), c.call(), c.name());
        String m = e.getMessage();
        assertTrue(m != null && !m.isBlank(), c.name() + ": empty message");
        for (String p : c.parts()) {
            assertTrue(m.contains(p), c.name() + ": message '" + m + "' lacks '" + p + "'");
        }
        TRIED.merge(c.area(), 1, Integer::sum);
    }

    // ---- file builders ------------------------------------------------------------------------

    private static int counter;

    private static Path file(long headerLen, byte[] header, int dataBytes) throws IOException {
        ByteBuffer b =
                ByteBuffer.allocate(8 + header.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(headerLen).put(header);
        Path p = tmp.resolve("f" + (counter++) + ".safetensors");
        Files.write(p, b.array());
        return p;
    }

    private static Path file(String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        return file(h.length, h, dataBytes);
    }

    /** A file whose header length field says {@code headerLen}, sparse (nothing written). */
    private static Path sparse(long headerLen) throws IOException {
        Path p = tmp.resolve("sparse" + (counter++) + ".safetensors");
        try (RandomAccessFile f = new RandomAccessFile(p.toFile(), "rw")) {
            f.write(
                    ByteBuffer.allocate(8)
                            .order(ByteOrder.LITTLE_ENDIAN)
                            .putLong(headerLen)
                            .array());
            f.setLength(8 + headerLen);
        }
        return p;
    }

    private static String t(String name, String dtype, String shape, String offsets) {
        return "\""
                + name
                + "\":{\"dtype\":\""
                + dtype
                + "\",\"shape\":"
                + shape
                + ",\"data_offsets\":"
                + offsets
                + "}";
    }

    private static Executable open(Path p) {
        return () -> SafetensorsFile.open(p).close();
    }

    private static Case st(String name, Path p, String... parts) {
        String[] all = new String[parts.length + 1];
        all[0] = p.toString();
        System.arraycopy(parts, 0, all, 1, parts.length);
        return new Case("safetensors", name, SafetensorsException.class, open(p), all);
    }

    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean())
                .getCurrentThreadAllocatedBytes();
    }

    /** Opens a file (expected to be refused), then checks what opening it allocated. */
    private static Executable openAllocatingAtMost(Path file, long maxBytes) {
        return () -> {
            long before = allocatedBytes();
            try {
                SafetensorsFile.open(file).close();
            } finally {
                long used = allocatedBytes() - before;
                assertTrue(
                        used <= maxBytes,
                        "opening " + file + " allocated " + used + " bytes, more than " + maxBytes);
            }
        };
    }

    // ---- the table ----------------------------------------------------------------------------

    private static List<Case> cases() throws IOException {
        List<Case> c = new ArrayList<>();
        String okA = t("a", "F32", "[2]", "[0,8]");
        // Truncation and lying lengths.
        Path empty = tmp.resolve("empty.safetensors");
        Files.write(empty, new byte[0]);
        c.add(st("empty file", empty, "truncated file: 0 bytes", "at least 8"));
        Path seven = tmp.resolve("seven.safetensors");
        Files.write(seven, new byte[7]);
        c.add(st("7 bytes", seven, "truncated file: 7 bytes", "at least 8"));
        c.add(
                st(
                        "header length 0",
                        file(0, new byte[0], 0),
                        "bad header length 0",
                        "2.." + SafetensorsFile.MAX_HEADER_BYTES));
        c.add(st("header length 1", file(1, "{".getBytes(), 0), "bad header length 1"));
        c.add(
                st(
                        "header length over 100 MB",
                        sparse(SafetensorsFile.MAX_HEADER_BYTES + 1),
                        "bad header length " + (SafetensorsFile.MAX_HEADER_BYTES + 1),
                        "2.." + SafetensorsFile.MAX_HEADER_BYTES));
        c.add(
                st(
                        "header length -1 (2^64 - 1)",
                        file(-1, "{}".getBytes(), 0),
                        "bad header length 18446744073709551615"));
        c.add(
                st(
                        "header length Long.MIN",
                        file(Long.MIN_VALUE, "{}".getBytes(), 0),
                        "bad header length 9223372036854775808"));
        c.add(
                st(
                        "header length past the end",
                        file(1 << 20, ("{" + okA + "}").getBytes(), 8),
                        "header length 1048576 runs past the end of the file",
                        "bytes)"));
        c.add(
                st(
                        "data section truncated",
                        file("{" + okA + "}", 5),
                        "tensor 'a'",
                        "data ends at byte 8",
                        "only 5 data bytes"));
        // JSON bomb by size alone: refused from the length field, before any allocation.
        long heapLimit = Runtime.getRuntime().maxMemory() / 2 / Json.HEAP_BYTES_PER_TEXT_BYTE;
        if (heapLimit < SafetensorsFile.MAX_HEADER_BYTES) {
            Path bomb = sparse(heapLimit + 1);
            c.add(
                    new Case(
                            "safetensors",
                            "header larger than this heap can parse",
                            SafetensorsException.class,
                            openAllocatingAtMost(bomb, 4 << 20),
                            bomb.toString(),
                            (heapLimit + 1) + " bytes of JSON",
                            "limit of " + heapLimit + " bytes",
                            "-Xmx"));
        }
        // Encoding and JSON syntax.
        c.add(
                st(
                        "not UTF-8",
                        file(4, new byte[] {'{', (byte) 0xff, (byte) 0xfe, '}'}, 0),
                        "not valid UTF-8"));
        c.add(st("not an object", file("[1,2]", 0), "does not start with '{'"));
        c.add(
                st(
                        "truncated JSON",
                        file("{\"a\": [1, 2", 0),
                        "invalid JSON at offset",
                        "unexpected end of input"));
        c.add(
                st(
                        "trailing content",
                        file("{} {}", 0),
                        "invalid JSON at offset 3",
                        "trailing content"));
        c.add(st("duplicate key", file("{" + okA + "," + okA + "}", 8), "duplicate key \"a\""));
        StringBuilder deep = new StringBuilder("{\"a\":");
        deep.append("[".repeat(100_000));
        c.add(st("nesting 100000 deep", file(deep.toString(), 0), "nesting deeper than 8"));
        c.add(
                st(
                        "number of 500 digits",
                        file("{\"a\":" + "9".repeat(500) + "}", 0),
                        "number literal longer than 400 characters"));
        c.add(
                st(
                        "control character in a string",
                        file("{\"a\u0001\":1}", 0),
                        "control character in string"));
        c.add(st("bad escape", file("{\"a\\x\":1}", 0), "bad escape '\\x'"));
        c.add(st("bad unicode escape", file("{\"a\\u12G4\":1}", 0), "bad hex digit"));
        c.add(st("lone literal", file("{\"a\":tru}", 0), "unexpected token"));
        // Entries.
        c.add(
                st(
                        "unknown dtype",
                        file("{" + t("a", "F7", "[1]", "[0,1]") + "}", 1),
                        "tensor 'a'",
                        "unknown dtype \"F7\"",
                        "expected one of",
                        "F32"));
        c.add(
                st(
                        "dtype missing",
                        file("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                        "tensor 'a'",
                        "missing or non-string \"dtype\""));
        c.add(
                st(
                        "dtype a number",
                        file("{\"a\":{\"dtype\":7,\"shape\":[1]," + "\"data_offsets\":[0,4]}}", 4),
                        "missing or non-string \"dtype\""));
        c.add(
                st(
                        "entry not an object",
                        file("{\"a\":[1,2,3]}", 0),
                        "tensor 'a'",
                        "expected an object, found array"));
        c.add(
                st(
                        "unexpected field",
                        file(
                                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
                                        + "\"data_offsets\":[0,4],\"extra\":1}}",
                                4),
                        "unexpected field \"extra\""));
        c.add(
                st(
                        "metadata not an object",
                        file("{\"__metadata__\":[1]}", 0),
                        "__metadata__ must be an object of strings, found array"));
        c.add(
                st(
                        "metadata value not a string",
                        file("{\"__metadata__\":{\"k\":1}}", 0),
                        "__metadata__.k must be a string, found number"));
        // Shapes.
        c.add(
                st(
                        "negative dimension",
                        file("{" + t("a", "F32", "[2,-1]", "[0,4]") + "}", 4),
                        "negative dimension -1",
                        "[2, -1]"));
        c.add(
                st(
                        "shape not an array",
                        file("{" + t("a", "F32", "\"4\"", "[0,16]") + "}", 16),
                        "\"shape\" must be an array of integers, found string"));
        c.add(
                st(
                        "fractional dimension",
                        file("{" + t("a", "F32", "[1.5]", "[0,4]") + "}", 4),
                        "\"shape\"[0] must be an integer, found 1.5"));
        c.add(
                st(
                        "65 dimensions",
                        file("{" + t("a", "F32", "[" + "1,".repeat(64) + "1]", "[0,4]") + "}", 4),
                        "\"shape\" has 65 entries",
                        "at most 64"));
        c.add(
                st(
                        "element count overflows",
                        file("{" + t("a", "F32", "[4294967296,4294967296]", "[0,4]") + "}", 4),
                        "[4294967296, 4294967296]",
                        "more than 2^63 elements"));
        c.add(
                st(
                        "byte count overflows",
                        file("{" + t("a", "F64", "[2305843009213693952]", "[0,8]") + "}", 8),
                        "F64",
                        "needs more than 2^63 bytes"));
        c.add(
                st(
                        "huge declared shape, tiny file",
                        file("{" + t("a", "F32", "[100000,100000]", "[0,40000000000]") + "}", 4),
                        "data ends at byte 40000000000",
                        "only 4 data bytes"));
        // Offsets.
        c.add(
                st(
                        "span differs from shape",
                        file("{" + t("a", "F32", "[3]", "[0,8]") + "}", 12),
                        "data_offsets [0, 8] span 8 bytes",
                        "[3] needs 12"));
        c.add(
                st(
                        "reversed offsets",
                        file("{" + t("a", "F32", "[0]", "[8,4]") + "}", 12),
                        "bad data_offsets [8, 4]",
                        "0 <= begin <= end"));
        c.add(
                st(
                        "negative offset",
                        file("{" + t("a", "F32", "[1]", "[-4,0]") + "}", 4),
                        "bad data_offsets [-4, 0]"));
        c.add(
                st(
                        "three offsets",
                        file("{" + t("a", "F32", "[1]", "[0,4,8]") + "}", 8),
                        "data_offsets must be [begin, end]",
                        "[0, 4, 8]"));
        c.add(
                st(
                        "offset beyond a double",
                        file("{" + t("a", "F32", "[1]", "[0,1e400]") + "}", 4),
                        "invalid JSON",
                        "number 1e400 is beyond the range of a double"));
        c.add(
                st(
                        "offset beyond 2^63",
                        file("{" + t("a", "F32", "[1]", "[0,18446744073709551616]") + "}", 4),
                        "\"data_offsets\"[1] must be an integer, found 1.8446744073709552E19"));
        c.add(
                st(
                        "offset past the data",
                        file("{" + t("a", "F32", "[4]", "[4,20]") + "}", 16),
                        "data ends at byte 20",
                        "only 16 data bytes"));
        c.add(
                st(
                        "overlapping tensors",
                        file(
                                "{"
                                        + t("a", "F32", "[2]", "[0,8]")
                                        + ","
                                        + t("b", "F32", "[2]", "[4,12]")
                                        + "}",
                                12),
                        "'a' [0, 8)",
                        "'b' [4, 12)",
                        "overlap"));
        // A bomb small enough for this heap: parsed (or refused) with bounded allocation.
        StringBuilder objs = new StringBuilder("{\"a\":[");
        while (objs.length() < (2 << 20)) {
            objs.append("{},");
        }
        objs.append("{}]}");
        Path objBomb = file(objs.toString(), 0);
        c.add(
                new Case(
                        "safetensors",
                        "2 MiB of empty objects",
                        SafetensorsException.class,
                        openAllocatingAtMost(
                                objBomb, Json.HEAP_BYTES_PER_TEXT_BYTE * (2L << 20) * 5 / 4),
                        "tensor 'a'",
                        "expected an object, found array"));
        // Reads of a valid file outside what it declares.
        Path good = tmp.resolve("good.safetensors");
        new SafetensorsWriter()
                .add("w", DType.F32, new long[] {2, 2}, new float[] {1, 2, 3, 4})
                .write(good);
        c.add(
                new Case(
                        "safetensors",
                        "missing tensor",
                        SafetensorsException.class,
                        () -> {
                            try (SafetensorsFile f = SafetensorsFile.open(good)) {
                                f.readFloats("zz");
                            }
                        },
                        "no tensor 'zz'"));
        c.add(
                new Case(
                        "safetensors",
                        "element range outside the tensor",
                        SafetensorsException.class,
                        () -> {
                            try (SafetensorsFile f = SafetensorsFile.open(good)) {
                                TensorInfo ti = f.info("w");
                                f.readFloats(ti, 2, 10, java.nio.FloatBuffer.allocate(10));
                            }
                        },
                        "'w'",
                        "elements [2, 12)",
                        "outside its 4 elements"));
        c.add(
                new Case(
                        "safetensors",
                        "integers read from floats",
                        SafetensorsException.class,
                        () -> {
                            try (SafetensorsFile f = SafetensorsFile.open(good)) {
                                f.readLongs("w");
                            }
                        },
                        "'w'",
                        "dtype F32",
                        "integer dtype"));
        c.add(
                new Case(
                        "safetensors",
                        "destination too small",
                        IllegalArgumentException.class,
                        () -> {
                            try (SafetensorsFile f = SafetensorsFile.open(good)) {
                                f.readFloats(f.info("w"), 0, 4, java.nio.FloatBuffer.allocate(3));
                            }
                        },
                        "room for 3 floats",
                        "need 4"));

        // ---- shard indexes
        c.add(
                index(
                        "weight_map not an object",
                        "{\"weight_map\": [1]}",
                        null,
                        "\"weight_map\" must be an object",
                        "array"));
        c.add(
                index(
                        "file name not a string",
                        "{\"weight_map\": {\"w\": 5}}",
                        null,
                        "weight_map[\"w\"] must be a file name",
                        "found number"));
        c.add(
                index(
                        "missing shard",
                        "{\"weight_map\": {\"w\": \"b.safetensors\"}}",
                        null,
                        "'b.safetensors', which does not exist"));
        c.add(
                index(
                        "path traversal",
                        "{\"weight_map\": {\"w\": \"../good.safetensors\"}}",
                        null,
                        "not a plain file name"));
        c.add(
                index(
                        "NUL in a file name",
                        "{\"weight_map\": {\"w\": \"a.safetensors\\u0000x\"}}",
                        null,
                        "'a.safetensors\\u0000x'",
                        "not a plain file name"));
        c.add(
                index(
                        "lone surrogate in a file name",
                        "{\"weight_map\": {\"w\": \"a\\ud800.safetensors\"}}",
                        null,
                        "not a plain file name"));
        c.add(
                index(
                        "absolute path",
                        "{\"weight_map\": {\"w\": \"/etc/passwd\"}}",
                        null,
                        "not a plain file name"));
        c.add(
                index(
                        "tensor not in its shard",
                        "{\"weight_map\": {\"zz\": \"a.safetensors\"}}",
                        null,
                        "'zz'",
                        "no such tensor"));
        c.add(index("index not JSON", "{\"weight_map\": ", null, "invalid JSON"));
        c.add(index("index of 257 MiB", null, 257L << 20, "bytes, more than the 268435456"));
        if (heapLimit < (256L << 20)) {
            c.add(
                    index(
                            "index larger than this heap can parse",
                            null,
                            heapLimit + 1,
                            "limit of " + heapLimit + " bytes",
                            "-Xmx"));
        }
        Path emptyDir = Files.createDirectories(tmp.resolve("emptydir"));
        c.add(
                new Case(
                        "index",
                        "no weights at all",
                        SafetensorsException.class,
                        () -> SafetensorsCheckpoint.open(emptyDir).close(),
                        "no model.safetensors"));

        // ---- config.json
        String base = Files.readString(FIXTURES.resolve("deepseek_v3_tied/config.json"));
        c.add(config("not JSON", "{\"hidden_size\": ", JsonException.class, "invalid JSON"));
        c.add(
                config(
                        "top level array",
                        "[1]",
                        JsonException.class,
                        "expected a JSON object at the top level, found array"));
        c.add(
                config(
                        "hidden_size a string",
                        base.replace("\"hidden_size\": 32", "\"hidden_size\": \"32\""),
                        IllegalArgumentException.class,
                        "hidden_size",
                        "a positive integer",
                        "found string 32"));
        c.add(
                config(
                        "hidden_size negative",
                        base.replace("\"hidden_size\": 32", "\"hidden_size\": -32"),
                        IllegalArgumentException.class,
                        "hidden_size",
                        "positive",
                        "-32"));
        c.add(
                config(
                        "num_hidden_layers beyond int32",
                        base.replace(
                                "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 4294967296"),
                        IllegalArgumentException.class,
                        "num_hidden_layers",
                        "32-bit",
                        "4294967296"));
        c.add(
                config(
                        "hidden_size fractional",
                        base.replace("\"hidden_size\": 32", "\"hidden_size\": 32.5"),
                        IllegalArgumentException.class,
                        "hidden_size",
                        "32.5"));
        c.add(
                config(
                        "vocab_size missing",
                        base.replace("\"vocab_size\": 80", "\"x\": 1"),
                        IllegalArgumentException.class,
                        "vocab_size",
                        "found nothing"));
        c.add(
                config(
                        "unknown model_type",
                        base.replace("\"deepseek_v3\"", "\"gpt9\""),
                        IllegalArgumentException.class,
                        "model_type",
                        "gpt9"));
        c.add(
                config(
                        "top-k above the experts",
                        base.replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9"),
                        IllegalArgumentException.class,
                        "9",
                        "8"));
        c.add(
                config(
                        "groups not dividing the experts",
                        base.replace("\"n_group\": 1", "\"n_group\": 3"),
                        IllegalArgumentException.class,
                        "n_group",
                        "numExperts=8",
                        "numGroups=3"));
        c.add(
                config(
                        "unknown rope type",
                        base.replace("\"rope_type\": \"default\"", "\"rope_type\": \"warp\""),
                        IllegalArgumentException.class,
                        "rope_type",
                        "warp"));
        c.add(
                config(
                        "rope_theta a string",
                        base.replace("\"rope_theta\": 10000.0", "\"rope_theta\": \"big\""),
                        IllegalArgumentException.class,
                        "rope_theta",
                        "finite number",
                        "found string big"));
        c.add(
                config(
                        "rope_theta beyond double",
                        base.replace("\"rope_theta\": 10000.0", "\"rope_theta\": -1e400"),
                        JsonException.class,
                        "-1e400",
                        "beyond the range of a double"));
        // A config that declares a huge shape over a real, small checkpoint: refused by the
        // shape check of the first tensor, before anything of the declared size is allocated.
        Path liar = Files.createDirectories(tmp.resolve("liar"));
        for (Path f : Files.newDirectoryStream(FIXTURES.resolve("deepseek_v3_tied"))) {
            Files.copy(f, liar.resolve(f.getFileName().toString()));
        }
        Files.writeString(
                liar.resolve("config.json"),
                base.replace("\"vocab_size\": 80", "\"vocab_size\": 1099511627776"));
        c.add(
                new Case(
                        "config",
                        "huge vocab_size over a small checkpoint",
                        IOException.class,
                        () -> {
                            try (ai.djl.ndarray.NDManager m =
                                    ai.djl.ndarray.NDManager.newBaseManager()) {
                                dev.djlmoe.zoo.hf.HfCheckpoints.load(liar, m, null);
                            }
                        },
                        "model.embed_tokens.weight",
                        "1099511627776",
                        "80"));
        Path bigCfgDir = Files.createDirectories(tmp.resolve("bigcfg"));
        try (RandomAccessFile f =
                new RandomAccessFile(bigCfgDir.resolve("config.json").toFile(), "rw")) {
            f.setLength(HfMoeConfig.MAX_CONFIG_BYTES + 1);
        }
        c.add(
                new Case(
                        "config",
                        "config.json over 4 MiB",
                        IOException.class,
                        () -> HfMoeConfig.load(bigCfgDir),
                        "config.json",
                        (HfMoeConfig.MAX_CONFIG_BYTES + 1) + " bytes",
                        "" + HfMoeConfig.MAX_CONFIG_BYTES));
        c.add(
                new Case(
                        "config",
                        "no config.json",
                        IOException.class,
                        () -> HfMoeConfig.load(emptyDir),
                        "no config.json"));
        return c;
    }

    private static Case index(String name, String text, Long sparseBytes, String... parts)
            throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("idx" + (counter++)));
        new SafetensorsWriter()
                .add("w", DType.F32, new long[] {1}, new float[] {1})
                .write(dir.resolve("a.safetensors"));
        Path idx = dir.resolve(SafetensorsCheckpoint.INDEX_FILE);
        if (text != null) {
            Files.writeString(idx, text);
        } else {
            try (RandomAccessFile f = new RandomAccessFile(idx.toFile(), "rw")) {
                f.setLength(sparseBytes);
            }
        }
        String[] all = new String[parts.length + 1];
        all[0] = idx.toString();
        System.arraycopy(parts, 0, all, 1, parts.length);
        return new Case(
                "index",
                name,
                SafetensorsException.class,
                () -> SafetensorsCheckpoint.open(dir).close(),
                all);
    }

    private static Case config(
            String name, String text, Class<? extends Throwable> type, String... parts) {
        String[] all = new String[parts.length + 1];
        all[0] = "bad/config.json";
        System.arraycopy(parts, 0, all, 1, parts.length);
        return new Case(
                "config", name, type, () -> HfMoeConfig.parse(text, "bad/config.json"), all);
    }

    @TestFactory
    Stream<DynamicNode> everyHostileFileIsRefusedByNameValueAndLimit() throws IOException {
        List<Case> cases = cases();
        List<DynamicNode> nodes = new ArrayList<>();
        for (Case c : cases) {
            nodes.add(DynamicTest.dynamicTest(c.area() + ": " + c.name(), () -> check(c)));
        }
        nodes.add(
                DynamicTest.dynamicTest(
                        "valid files still load after every refusal",
                        () -> {
                            try (SafetensorsFile f =
                                    SafetensorsFile.open(FIXTURES.resolve("dtypes.safetensors"))) {
                                for (TensorInfo ti : f.tensors().values()) {
                                    if (ti.dtype().isFloating()) {
                                        assertEquals(ti.numel(), f.readFloats(ti.name()).length);
                                    } else {
                                        assertEquals(ti.numel(), f.readLongs(ti.name()).length);
                                    }
                                }
                            }
                            try (SafetensorsCheckpoint ck =
                                    SafetensorsCheckpoint.open(
                                            FIXTURES.resolve("qwen3_moe_sharded"))) {
                                assertTrue(ck.has("model.embed_tokens.weight"));
                            }
                            HfMoeConfig cfg =
                                    HfMoeConfig.load(FIXTURES.resolve("deepseek_v3_tied"));
                            assertEquals(
                                    32,
                                    cfg.toMap().get("hidden_size") instanceof Number n
                                            ? n.intValue()
                                            : -1);
                            int total = TRIED.values().stream().mapToInt(Integer::intValue).sum();
                            System.out.println(
                                    "hostile-file suite: " + total + " cases tried " + TRIED);
                            assertEquals(
                                    cases.size(),
                                    total,
                                    "every case must have run and passed: " + TRIED);
                        }));
        return nodes.stream();
    }
}
