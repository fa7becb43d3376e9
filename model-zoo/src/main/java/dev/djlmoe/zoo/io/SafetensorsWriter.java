/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.types.DataType;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes a safetensors file (F32 or BF16 tensors) that Hugging Face's loaders read.
 *
 * <p>The file is written under a temporary name in the target directory, forced to disk and then
 * renamed over the target (atomically where the file system allows), so an interrupted write never
 * leaves a half-written file where a good one was. Tensor data are streamed: an {@link NDArray}
 * source is copied out one tensor at a time, float32 is rounded to bfloat16 to nearest-even as
 * PyTorch does.
 *
 * <pre>
 * new SafetensorsWriter().add("w", DType.F32, new long[] {2, 3}, floats).write(path);
 * </pre>
 */
public final class SafetensorsWriter {

    /** Produces a tensor's values, in row-major order, on demand. */
    @FunctionalInterface
    public interface FloatSource {
        /**
         * Returns the values.
         *
         * @return a buffer holding exactly the tensor's elements (position to limit)
         * @throws IOException if they cannot be produced
         */
        FloatBuffer get() throws IOException;
    }

    private record Entry(String name, DType dtype, long[] shape, FloatSource source) {}

    private final List<Entry> entries = new ArrayList<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    /** Creates a writer with {@code __metadata__ = {"format": "pt"}}. */
    public SafetensorsWriter() {
        metadata.put("format", "pt");
    }

    /**
     * Adds a metadata string.
     *
     * @param key the key
     * @param value the value
     * @return this writer
     */
    public SafetensorsWriter metadata(String key, String value) {
        metadata.put(key, value);
        return this;
    }

    /**
     * Adds a tensor from a float array.
     *
     * @param name the tensor name
     * @param dtype F32 or BF16
     * @param shape the shape; its product must equal {@code values.length}
     * @param values the values, row-major
     * @return this writer
     */
    public SafetensorsWriter add(String name, DType dtype, long[] shape, float[] values) {
        if (numel(shape) != values.length) {
            throw new IllegalArgumentException(
                    "tensor '"
                            + name
                            + "': shape "
                            + Arrays.toString(shape)
                            + " needs "
                            + numel(shape)
                            + " values, got "
                            + values.length);
        }
        return add(name, dtype, shape, () -> FloatBuffer.wrap(values));
    }

    /**
     * Adds a float32 NDArray (copied out when the file is written; keep it open until then).
     *
     * @param name the tensor name
     * @param dtype F32 or BF16
     * @param array the array
     * @return this writer
     */
    public SafetensorsWriter add(String name, DType dtype, NDArray array) {
        if (array.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException(
                    "tensor '" + name + "' is " + array.getDataType() + ", expected float32");
        }
        return add(
                name,
                dtype,
                array.getShape().getShape(),
                () -> {
                    ByteBuffer bb = array.toByteBuffer();
                    return bb.order(ByteOrder.nativeOrder()).asFloatBuffer();
                });
    }

    /**
     * Adds a tensor whose values are produced on demand.
     *
     * @param name the tensor name
     * @param dtype F32 or BF16
     * @param shape the shape
     * @param source produces the values when the file is written
     * @return this writer
     */
    public SafetensorsWriter add(String name, DType dtype, long[] shape, FloatSource source) {
        if (dtype != DType.F32 && dtype != DType.BF16) {
            throw new IllegalArgumentException(
                    "tensor '" + name + "': the writer supports F32 and BF16, got " + dtype);
        }
        if (name == null || name.isEmpty() || "__metadata__".equals(name)) {
            throw new IllegalArgumentException("bad tensor name '" + name + "'");
        }
        for (Entry e : entries) {
            if (e.name.equals(name)) {
                throw new IllegalArgumentException("tensor '" + name + "' added twice");
            }
        }
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException(
                        "tensor '" + name + "': negative dimension in " + Arrays.toString(shape));
            }
        }
        entries.add(new Entry(name, dtype, shape.clone(), source));
        return this;
    }

    /**
     * Returns the number of tensors added.
     *
     * @return the count
     */
    public int size() {
        return entries.size();
    }

    /**
     * Returns the total data bytes.
     *
     * @return bytes of tensor data
     */
    public long dataBytes() {
        long n = 0;
        for (Entry e : entries) {
            n += numel(e.shape) * e.dtype.size();
        }
        return n;
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /**
     * Writes the file: a temporary file next to {@code target}, then a rename over it.
     *
     * @param target the file to create or replace
     * @throws IOException if writing fails (the target is then left as it was)
     */
    public void write(Path target) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Map<String, Object> header = new LinkedHashMap<>();
        header.put("__metadata__", new LinkedHashMap<>(metadata));
        long offset = 0;
        for (Entry e : entries) {
            long bytes = numel(e.shape) * e.dtype.size();
            Map<String, Object> t = new LinkedHashMap<>();
            t.put("dtype", e.dtype.name());
            List<Object> shape = new ArrayList<>();
            for (long d : e.shape) {
                shape.add(d);
            }
            t.put("shape", shape);
            t.put("data_offsets", List.of(offset, offset + bytes));
            header.put(e.name, t);
            offset += bytes;
        }
        byte[] json = Json.writeCompact(header).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();
        Path tmp = newTempFile(dir, target);
        boolean ok = false;
        try (FileChannel ch =
                FileChannel.open(
                        tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            writeAll(ch, head);
            ByteBuffer out = ByteBuffer.allocateDirect(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
            for (Entry e : entries) {
                FloatBuffer src = e.source.get();
                long n = numel(e.shape);
                if (src.remaining() != n) {
                    throw new IOException(
                            "tensor '"
                                    + e.name
                                    + "': source gave "
                                    + src.remaining()
                                    + " values, shape "
                                    + Arrays.toString(e.shape)
                                    + " needs "
                                    + n);
                }
                while (src.hasRemaining()) {
                    if (e.dtype == DType.F32) {
                        int k = Math.min(src.remaining(), out.remaining() / 4);
                        FloatBuffer view = out.asFloatBuffer();
                        FloatBuffer part = src.duplicate();
                        part.limit(part.position() + k);
                        view.put(part);
                        src.position(src.position() + k);
                        out.position(out.position() + 4 * k);
                    } else {
                        int k = Math.min(src.remaining(), out.remaining() / 2);
                        for (int i = 0; i < k; i++) {
                            out.putShort(DType.floatToBf16(src.get()));
                        }
                    }
                    if (out.remaining() < 4) {
                        out.flip();
                        writeAll(ch, out);
                        out.clear();
                    }
                }
            }
            out.flip();
            writeAll(ch, out);
            ch.force(true);
            ok = true;
        } finally {
            if (!ok) {
                Files.deleteIfExists(tmp);
            }
        }
        try {
            replace(tmp, target);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
    }

    /** Renames a finished temporary file over the target: atomically where the file system can. */
    private static void replace(Path tmp, Path target) throws IOException {
        try {
            Files.move(
                    tmp,
                    target,
                    StandardCopyOption.ATOMIC_MOVE,
                    StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    /**
     * A new empty file {@code .NAME.<random>.tmp} next to the target. Unlike {@code
     * Files.createTempFile}, which makes every file owner-only (0600), it gets the permissions the
     * process's umask gives any new file, as the renamed result should.
     */
    private static Path newTempFile(Path dir, Path target) throws IOException {
        for (int attempt = 0; ; attempt++) {
            Path tmp =
                    dir.resolve(
                            "."
                                    + target.getFileName()
                                    + "."
                                    + Long.toUnsignedString(TEMP_NAMES.nextLong(), 36)
                                    + ".tmp");
            try {
                return Files.createFile(tmp);
            } catch (java.nio.file.FileAlreadyExistsException e) {
                if (attempt >= 100) {
                    throw e;
                }
            }
        }
    }

    private static final java.security.SecureRandom TEMP_NAMES = new java.security.SecureRandom();

    private static void writeAll(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /**
     * Writes a text file through a temporary name and a rename (for {@code config.json} and shard
     * indexes).
     *
     * @param target the file
     * @param text the content, written as UTF-8
     * @throws IOException if writing fails
     */
    public static void writeTextAtomically(Path target, String text) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        Path tmp = newTempFile(dir, target);
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                writeAll(ch, ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8)));
                ch.force(true);
            }
            replace(tmp, target);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
