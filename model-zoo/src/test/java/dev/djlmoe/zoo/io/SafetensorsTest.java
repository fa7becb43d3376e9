/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The safetensors reader and writer: dtypes, FP8 dequantisation, big files and bad files. */
class SafetensorsTest {

    private static final Path DTYPES = Paths.get("src/test/fixtures/hf/dtypes.safetensors");

    @TempDir Path tmp;

    // ---- dtypes against torch's own conversions (fixture written by generate_fixtures.py) ----

    @Test
    void widensLikeTorch() throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(DTYPES)) {
            assertEquals(DType.BF16, f.info("bf16").dtype());
            assertArrayEquals(f.readFloats("bf16_f32"), f.readFloats("bf16"));
            assertEquals(DType.F16, f.info("f16").dtype());
            assertArrayEquals(f.readFloats("f16_f32"), f.readFloats("f16"));
            assertArrayEquals(f.readFloats("f16_special_f32"), f.readFloats("f16_special"));
            assertEquals(DType.F64, f.info("f64").dtype());
            assertArrayEquals(f.readFloats("f32"), f.readFloats("f64"));
            assertEquals(DType.F8_E4M3, f.info("e4m3_all").dtype());
            float[] all = f.readFloats("e4m3_all");
            float[] ref = f.readFloats("e4m3_all_f32");
            for (int i = 0; i < 256; i++) {
                assertEquals(Float.isNaN(ref[i]), Float.isNaN(all[i]), "NaN of e4m3 byte " + i);
                if (!Float.isNaN(ref[i])) {
                    assertEquals(ref[i], all[i], "e4m3 byte " + i);
                }
            }
        }
    }

    @Test
    void fp8BlockDequantisationMatchesTorch() throws IOException {
        Path dir = tmp.resolve("fp8");
        Files.createDirectories(dir);
        Files.copy(DTYPES, dir.resolve("model.safetensors"));
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dir)) {
            assertTrue(c.isBlockQuantised("layer.weight"));
            float[] got = c.readFloats("layer.weight");
            float[] ref = c.readFloats("layer.weight_dequant");
            assertEquals(200 * 300, got.length);
            assertArrayEquals(ref, got, "dequantised [200, 300] with partial edge blocks");
            // a range read that starts inside a block row
            FloatBuffer fb = FloatBuffer.allocate(500);
            c.readFloats("layer.weight", 130 * 300 + 7, 500, fb);
            for (int i = 0; i < 500; i++) {
                assertEquals(ref[130 * 300 + 7 + i], fb.get(i));
            }
            // a wrong scale shape is named
            c.setBlockSize(64, 64);
            SafetensorsException e =
                    assertThrows(SafetensorsException.class, () -> c.readFloats("layer.weight"));
            assertTrue(e.getMessage().contains("layer.weight_scale_inv"), e.getMessage());
            assertTrue(e.getMessage().contains("expected [4, 5]"), e.getMessage());
        }
    }

    @Test
    void bf16RoundingMatchesTorch() throws IOException {
        try (SafetensorsFile f = SafetensorsFile.open(DTYPES)) {
            float[] src = f.readFloats("round_src");
            byte[] ref = f.readRaw("round_bf16");
            ByteBuffer rb = ByteBuffer.wrap(ref).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < src.length; i++) {
                if (Float.isNaN(src[i])) {
                    // torch's vectorised path writes 0xFFFF, its scalar path 0x7FC0: any NaN
                    assertTrue(Float.isNaN(DType.bf16ToFloat(rb.getShort(2 * i))));
                    assertTrue(Float.isNaN(DType.bf16ToFloat(DType.floatToBf16(src[i]))));
                    continue;
                }
                assertEquals(
                        rb.getShort(2 * i),
                        DType.floatToBf16(src[i]),
                        "bf16 of 0x" + Integer.toHexString(Float.floatToRawIntBits(src[i])));
            }
        }
    }

    // ---- writer --------------------------------------------------------------------------

    @Test
    void writerRoundTripF32AndBf16() throws IOException {
        Random r = new Random(1);
        float[] a = new float[3 * 1000];
        for (int i = 0; i < a.length; i++) {
            a[i] = (float) r.nextGaussian();
        }
        Path p = tmp.resolve("w.safetensors");
        new SafetensorsWriter()
                .add("a", DType.F32, new long[] {3, 1000}, a)
                .add("b", DType.BF16, new long[] {3000}, a)
                .add("empty", DType.F32, new long[] {0, 4}, new float[0])
                .write(p);
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(List.of(p), s.toList(), "only the target remains, no temporary file");
        }
        // 63-byte windows: elements straddle window boundaries
        try (SafetensorsFile f = SafetensorsFile.open(p, 63)) {
            assertEquals("pt", f.metadata().get("format"));
            assertArrayEquals(a, f.readFloats("a"));
            float[] b = f.readFloats("b");
            for (int i = 0; i < a.length; i++) {
                assertEquals(DType.bf16ToFloat(DType.floatToBf16(a[i])), b[i]);
            }
            assertEquals(0, f.readFloats("empty").length);
            assertEquals(0, (8 + f.info("a").begin()) % 4, "header padded to 8 bytes");
        }
    }

    @Test
    void failedWriteLeavesTheOldFile() throws IOException {
        Path p = tmp.resolve("keep.safetensors");
        new SafetensorsWriter().add("x", DType.F32, new long[] {2}, new float[] {1, 2}).write(p);
        byte[] before = Files.readAllBytes(p);
        SafetensorsWriter w =
                new SafetensorsWriter()
                        .add(
                                "y",
                                DType.F32,
                                new long[] {4},
                                () -> {
                                    throw new IOException("disk on fire");
                                });
        assertThrows(IOException.class, () -> w.write(p));
        assertArrayEquals(before, Files.readAllBytes(p));
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(1, s.count(), "the temporary file is removed");
        }
    }

    /** A file over 2 GiB (sparse): tensors past the 2 GiB mark read through their windows. */
    @Test
    void readsFilesLargerThan2GiB() throws IOException {
        long gap = (1L << 31) + 4096;
        String header =
                "{\"big\":{\"dtype\":\"F8_E4M3\",\"shape\":["
                        + gap
                        + "],\"data_offsets\":[0,"
                        + gap
                        + "]},\"tail\":{\"dtype\":\"BF16\","
                        + "\"shape\":[3],\"data_offsets\":["
                        + gap
                        + ","
                        + (gap + 6)
                        + "]}}";
        Path p = tmp.resolve("big.safetensors");
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        try (RandomAccessFile raf = new RandomAccessFile(p.toFile(), "rw")) {
            ByteBuffer len =
                    ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length);
            raf.write(len.array());
            raf.write(h);
            long dataStart = 8 + h.length;
            raf.seek(dataStart + (1L << 30)); // first byte of the second 1 GiB window
            raf.write(0x38); // e4m3 1.0
            raf.seek(dataStart + (1L << 31) + 10); // past 2 GiB
            raf.write(0x40); // e4m3 2.0
            raf.seek(dataStart + gap);
            ByteBuffer tail = ByteBuffer.allocate(6).order(ByteOrder.LITTLE_ENDIAN);
            tail.putShort(DType.floatToBf16(1.5f))
                    .putShort(DType.floatToBf16(-2f))
                    .putShort(DType.floatToBf16(3.25f));
            raf.write(tail.array());
        }
        assertTrue(Files.size(p) > (1L << 31));
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            assertArrayEquals(new float[] {1.5f, -2f, 3.25f}, f.readFloats("tail"));
            FloatBuffer fb = FloatBuffer.allocate(2);
            f.readFloats(f.info("big"), (1L << 30) - 1, 2, fb);
            assertArrayEquals(new float[] {0f, 1f}, fb.array(), "across the 1 GiB window edge");
            fb.clear();
            f.readFloats(f.info("big"), (1L << 31) + 10, 2, fb);
            assertArrayEquals(new float[] {2f, 0f}, fb.array(), "past 2 GiB");
            SafetensorsException e =
                    assertThrows(SafetensorsException.class, () -> f.readFloats("big"));
            assertTrue(e.getMessage().contains("too many for one Java array"), e.getMessage());
        }
    }

    // ---- bad files ---------------------------------------------------------------------------

    private Path file(String name, long headerLen, String header, int dataBytes)
            throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(headerLen).put(h);
        Path p = tmp.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    private Path file(String name, String header, int dataBytes) throws IOException {
        return file(name, header.getBytes(StandardCharsets.UTF_8).length, header, dataBytes);
    }

    private String error(Path p) {
        SafetensorsException e =
                assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(p).close());
        assertTrue(e.getMessage().contains(p.toString()), "names the file: " + e.getMessage());
        return e.getMessage();
    }

    @Test
    void truncatedFiles() throws IOException {
        Path tiny = tmp.resolve("tiny.safetensors");
        Files.write(tiny, new byte[] {1, 2, 3});
        assertTrue(error(tiny).contains("truncated file: 3 bytes"));
        String hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
        String msg = error(file("short.safetensors", hdr, 10));
        assertTrue(msg.contains("tensor 'w'") && msg.contains("only 10 data bytes"), msg);
    }

    @Test
    void headerLengthThatLies() throws IOException {
        String hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        String msg = error(file("lie.safetensors", 1L << 20, hdr, 4));
        assertTrue(msg.contains("header length 1048576 runs past the end"), msg);
        msg = error(file("huge.safetensors", Long.MAX_VALUE, hdr, 4));
        assertTrue(msg.contains("bad header length"), msg);
        msg = error(file("neg.safetensors", -5, hdr, 4));
        assertTrue(msg.contains("bad header length"), msg);
    }

    @Test
    void overlappingAndOutOfRangeOffsets() throws IOException {
        String overlap =
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
        String msg = error(file("overlap.safetensors", overlap, 12));
        assertTrue(msg.contains("'a'") && msg.contains("'b'") && msg.contains("overlap"), msg);
        String span = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
        msg = error(file("span.safetensors", span, 12));
        assertTrue(msg.contains("span 8 bytes") && msg.contains("needs 12"), msg);
        String back = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}";
        assertTrue(error(file("back.safetensors", back, 12)).contains("bad data_offsets"));
    }

    @Test
    void unknownDtypeAndHugeShapes() throws IOException {
        String unk = "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}";
        String msg = error(file("unk.safetensors", unk, 1));
        assertTrue(msg.contains("unknown dtype \"F7\""), msg);
        String huge =
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                        + "\"data_offsets\":[0,4]}}";
        msg = error(file("huge.safetensors", huge, 4));
        assertTrue(msg.contains("more than 2^63"), msg);
        String big =
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[100000,100000],"
                        + "\"data_offsets\":[0,40000000000]}}";
        msg = error(file("big.safetensors", big, 4));
        assertTrue(msg.contains("only 4 data bytes"), "no allocation attempted: " + msg);
        String neg = "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}";
        assertTrue(error(file("neg.safetensors", neg, 4)).contains("negative dimension"));
    }

    @Test
    void malformedJsonAndBombs() throws IOException {
        assertTrue(error(file("junk.safetensors", "{\"a\": [1, 2", 0)).contains("invalid JSON"));
        StringBuilder deep = new StringBuilder("{\"a\":");
        for (int i = 0; i < 100_000; i++) {
            deep.append('[');
        }
        String msg = error(file("deep.safetensors", deep.toString(), 0));
        assertTrue(msg.contains("nesting deeper than"), msg);
        assertTrue(error(file("notobj.safetensors", "[1]", 0)).contains("does not start with '{'"));
        String dup =
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        + "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
        assertTrue(error(file("dup.safetensors", dup, 8)).contains("duplicate key \"a\""));
        byte[] bad = {(byte) 0xff, (byte) 0xfe};
        Path p = tmp.resolve("utf.safetensors");
        ByteBuffer b = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(2).put(bad);
        Files.write(p, b.array());
        assertTrue(error(p).contains("not valid UTF-8"));
    }

    @Test
    void shardedIndexErrors() throws IOException {
        Path dir = tmp.resolve("sharded");
        Files.createDirectories(dir);
        new SafetensorsWriter()
                .add("x", DType.F32, new long[] {1}, new float[] {1})
                .write(dir.resolve("a.safetensors"));
        String index = "{\"weight_map\": {\"x\": \"a.safetensors\", \"y\": \"b.safetensors\"}}";
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_FILE), index);
        SafetensorsException e =
                assertThrows(SafetensorsException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(
                e.getMessage().contains("'b.safetensors', which does not exist"), e.getMessage());
        Files.writeString(
                dir.resolve(SafetensorsCheckpoint.INDEX_FILE),
                "{\"weight_map\": {\"x\": \"a.safetensors\", \"z\": \"a.safetensors\"}}");
        e = assertThrows(SafetensorsException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("'z'") && e.getMessage().contains("no such tensor"));
        Files.writeString(
                dir.resolve(SafetensorsCheckpoint.INDEX_FILE),
                "{\"weight_map\": {\"x\": \"../a.safetensors\"}}");
        e = assertThrows(SafetensorsException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("not a plain file name"), e.getMessage());
        Path empty = tmp.resolve("empty");
        Files.createDirectories(empty);
        e = assertThrows(SafetensorsException.class, () -> SafetensorsCheckpoint.open(empty));
        assertTrue(e.getMessage().contains("no model.safetensors"), e.getMessage());
    }

    @Test
    void jsonWriterAndParserAgree() throws IOException {
        String text = "{\"a\": [1, 2.5, -3e-6, true, null, \"q\\\"\\u00e9\"], \"b\": {}}";
        Object v = Json.parse(text, "t", 8);
        Object again = Json.parse(Json.write(v), "t2", 8);
        assertEquals(v, again);
        assertEquals(1L, ((List<?>) ((java.util.Map<?, ?>) v).get("a")).get(0));
    }
}
