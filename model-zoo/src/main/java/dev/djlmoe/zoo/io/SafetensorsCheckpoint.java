/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The safetensors weights of a Hugging Face checkpoint directory: one {@code model.safetensors}, or
 * shards listed in {@code model.safetensors.index.json} (its {@code weight_map}), every file
 * memory-mapped ({@link SafetensorsFile}).
 *
 * <p>Reads widen F16, BF16 and FP8 to float32. An {@code F8_E4M3} weight {@code X.weight} that has
 * a companion {@code X.weight_scale_inv} (DeepSeek-V3's block quantisation) is dequantised on read:
 * {@code w[i, j] = q[i, j] * scale_inv[i / bm, j / bn]} with blocks of {@code [bm, bn]} (128 x 128
 * unless the checkpoint's {@code quantization_config.weight_block_size} says otherwise); partial
 * edge blocks use their block's scale.
 */
public final class SafetensorsCheckpoint implements AutoCloseable {

    /** The single-file weights name. */
    public static final String SINGLE_FILE = "model.safetensors";

    /** The shard index name. */
    public static final String INDEX_FILE = "model.safetensors.index.json";

    /** Suffix of DeepSeek-V3 FP8 block scales. */
    public static final String SCALE_SUFFIX = "_scale_inv";

    private static final long MAX_INDEX_BYTES = 256L << 20;

    private final Path dir;
    private final List<SafetensorsFile> files;
    private final Map<String, SafetensorsFile> owner;
    private int[] blockSize = {128, 128};

    private SafetensorsCheckpoint(
            Path dir, List<SafetensorsFile> files, Map<String, SafetensorsFile> owner) {
        this.dir = dir;
        this.files = files;
        this.owner = owner;
    }

    /**
     * Opens the weights of a checkpoint directory.
     *
     * @param dir the directory holding {@code model.safetensors} or {@code
     *     model.safetensors.index.json} and its shards
     * @return the open checkpoint
     * @throws SafetensorsException naming the file and the problem (no weights, a bad index, a
     *     shard that lacks a tensor the index puts there, a tensor in two shards)
     * @throws IOException if a file cannot be read
     */
    public static SafetensorsCheckpoint open(Path dir) throws IOException {
        return open(dir, SafetensorsFile.DEFAULT_WINDOW);
    }

    /**
     * Opens the weights of a checkpoint directory with a given mapping window.
     *
     * @param dir the directory
     * @param windowSize the mapping window in bytes
     * @return the open checkpoint
     * @throws IOException as {@link #open(Path)}
     */
    public static SafetensorsCheckpoint open(Path dir, int windowSize) throws IOException {
        Path index = dir.resolve(INDEX_FILE);
        Path single = dir.resolve(SINGLE_FILE);
        List<SafetensorsFile> files = new ArrayList<>();
        Map<String, SafetensorsFile> owner = new LinkedHashMap<>();
        try {
            if (Files.isRegularFile(index)) {
                Map<String, String> weightMap = readIndex(index);
                Map<String, SafetensorsFile> byName = new LinkedHashMap<>();
                for (String f : new java.util.LinkedHashSet<>(weightMap.values())) {
                    Path p = dir.resolve(f);
                    if (!Files.isRegularFile(p)) {
                        throw new SafetensorsException(
                                index
                                        + ": lists shard '"
                                        + f
                                        + "', which does not exist in "
                                        + dir);
                    }
                    SafetensorsFile sf = SafetensorsFile.open(p, windowSize);
                    files.add(sf);
                    byName.put(f, sf);
                }
                for (Map.Entry<String, String> e : weightMap.entrySet()) {
                    SafetensorsFile sf = byName.get(e.getValue());
                    if (!sf.tensors().containsKey(e.getKey())) {
                        throw new SafetensorsException(
                                index
                                        + ": puts tensor '"
                                        + e.getKey()
                                        + "' in "
                                        + e.getValue()
                                        + ", but that shard has no such tensor");
                    }
                    owner.put(e.getKey(), sf);
                }
                for (SafetensorsFile sf : files) {
                    for (String name : sf.tensors().keySet()) {
                        SafetensorsFile o = owner.get(name);
                        if (o != null && o != sf) {
                            throw new SafetensorsException(
                                    "tensor '"
                                            + name
                                            + "' is in both "
                                            + o.path()
                                            + " and "
                                            + sf.path());
                        }
                        owner.putIfAbsent(name, sf);
                    }
                }
            } else if (Files.isRegularFile(single)) {
                SafetensorsFile sf = SafetensorsFile.open(single, windowSize);
                files.add(sf);
                for (String name : sf.tensors().keySet()) {
                    owner.put(name, sf);
                }
            } else {
                throw new SafetensorsException(
                        dir
                                + ": no "
                                + SINGLE_FILE
                                + " and no "
                                + INDEX_FILE
                                + ": not a safetensors checkpoint directory");
            }
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile sf : files) {
                sf.close();
            }
            throw e;
        }
        return new SafetensorsCheckpoint(dir, files, Collections.unmodifiableMap(owner));
    }

    /** Escapes control characters, so a hostile name cannot garble a message. */
    private static String printable(String s) {
        StringBuilder b = new StringBuilder();
        s.chars()
                .forEach(
                        c ->
                                b.append(
                                        c < 0x20 || c == 0x7f
                                                ? String.format("\\u%04x", c)
                                                : String.valueOf((char) c)));
        return b.toString();
    }

    private static Map<String, String> readIndex(Path index) throws IOException {
        long size = Files.size(index);
        if (size > MAX_INDEX_BYTES) {
            throw new SafetensorsException(
                    index
                            + ": "
                            + size
                            + " bytes, more than the "
                            + MAX_INDEX_BYTES
                            + " accepted for a shard index");
        }
        Map<String, Object> root;
        try {
            Json.checkHeap(size, index.toString());
            root =
                    Json.parseObject(
                            Files.readString(index, StandardCharsets.UTF_8), index.toString());
        } catch (JsonException e) {
            throw new SafetensorsException(e.getMessage(), e);
        }
        Object wm = root.get("weight_map");
        if (!(wm instanceof Map)) {
            throw new SafetensorsException(
                    index + ": \"weight_map\" must be an object, found " + Json.typeName(wm));
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<?, ?> e : ((Map<?, ?>) wm).entrySet()) {
            if (!(e.getValue() instanceof String)) {
                throw new SafetensorsException(
                        index
                                + ": weight_map[\""
                                + e.getKey()
                                + "\"] must be a file name, found "
                                + Json.typeName(e.getValue()));
            }
            String f = (String) e.getValue();
            boolean valid =
                    !f.isEmpty()
                            && !f.contains("/")
                            && !f.contains("\\")
                            && !f.equals("..")
                            && !f.equals(".")
                            && f.chars().allMatch(c -> c >= 0x20);
            if (valid) {
                try {
                    // A lone UTF-16 surrogate (a JSON escape can make one) cannot become a path:
                    // it would surface as an unchecked InvalidPathException.
                    index.resolveSibling(f);
                } catch (java.nio.file.InvalidPathException ex) {
                    valid = false;
                }
            }
            if (!valid) {
                throw new SafetensorsException(
                        index
                                + ": weight_map[\""
                                + printable(String.valueOf(e.getKey()))
                                + "\"] = '"
                                + printable(f)
                                + "' is not a plain file name in the checkpoint directory");
            }
            out.put((String) e.getKey(), f);
        }
        return out;
    }

    /**
     * Sets the FP8 block size used for {@code weight_scale_inv} dequantisation (default 128 x 128).
     *
     * @param rows block rows
     * @param cols block columns
     * @return this checkpoint
     */
    public SafetensorsCheckpoint setBlockSize(int rows, int cols) {
        if (rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException(
                    "block size must be positive, got [" + rows + ", " + cols + "]");
        }
        this.blockSize = new int[] {rows, cols};
        return this;
    }

    /**
     * Returns the checkpoint directory.
     *
     * @return the directory
     */
    public Path dir() {
        return dir;
    }

    /**
     * Returns every tensor name.
     *
     * @return the names
     */
    public Set<String> names() {
        return owner.keySet();
    }

    /**
     * Returns whether the checkpoint has a tensor.
     *
     * @param name the tensor name
     * @return true if present
     */
    public boolean has(String name) {
        return owner.containsKey(name);
    }

    /**
     * Returns a tensor's entry.
     *
     * @param name the tensor name
     * @return the entry
     * @throws SafetensorsException naming the checkpoint if the tensor is missing
     */
    public TensorInfo info(String name) throws SafetensorsException {
        SafetensorsFile sf = owner.get(name);
        if (sf == null) {
            throw new SafetensorsException(dir + ": missing tensor '" + name + "'");
        }
        return sf.tensors().get(name);
    }

    /**
     * Returns the shape a tensor has as float32 (the same as stored).
     *
     * @param name the tensor name
     * @param expected the expected shape
     * @return the entry
     * @throws SafetensorsException naming the tensor, its file, the expected and the found shape
     */
    public TensorInfo checkShape(String name, long[] expected) throws SafetensorsException {
        TensorInfo ti = info(name);
        if (!Arrays.equals(ti.shape(), expected)) {
            throw new SafetensorsException(
                    "tensor '"
                            + name
                            + "' in "
                            + ti.file()
                            + " has shape "
                            + ti.shapeString()
                            + ", expected "
                            + Arrays.toString(expected));
        }
        return ti;
    }

    /**
     * Returns whether a tensor is block-quantised FP8 with a {@code _scale_inv} companion.
     *
     * @param name the tensor name
     * @return true if it is dequantised on read
     * @throws SafetensorsException if the tensor is missing
     */
    public boolean isBlockQuantised(String name) throws SafetensorsException {
        return info(name).dtype() == DType.F8_E4M3 && owner.containsKey(name + SCALE_SUFFIX);
    }

    /**
     * Reads elements {@code [first, first + count)} of a tensor as float32 into {@code dst}
     * (dequantising block-quantised FP8).
     *
     * @param name the tensor name
     * @param first the first element (row-major)
     * @param count how many elements
     * @param dst the destination; its position advances by {@code count}
     * @throws IOException naming the file and tensor on any error
     */
    public void readFloats(String name, long first, long count, FloatBuffer dst)
            throws IOException {
        TensorInfo ti = info(name);
        SafetensorsFile sf = owner.get(name);
        if (!isBlockQuantised(name)) {
            sf.readFloats(ti, first, count, dst);
            return;
        }
        if (ti.shape().length != 2) {
            throw new SafetensorsException(
                    "FP8 tensor '"
                            + name
                            + "' in "
                            + ti.file()
                            + " has shape "
                            + ti.shapeString()
                            + ", expected 2 dimensions for block dequantisation");
        }
        long rows = ti.shape()[0];
        long cols = ti.shape()[1];
        long br = blockSize[0];
        long bc = blockSize[1];
        long[] scaleShape = {(rows + br - 1) / br, (cols + bc - 1) / bc};
        String scaleName = name + SCALE_SUFFIX;
        TensorInfo si = checkShape(scaleName, scaleShape);
        if (si.numel() > Integer.MAX_VALUE - 8) {
            throw new SafetensorsException("scale tensor '" + scaleName + "' is too large");
        }
        float[] scale = new float[(int) si.numel()];
        owner.get(scaleName).readFloats(si, 0, si.numel(), FloatBuffer.wrap(scale));
        int start = dst.position();
        sf.readFloats(ti, first, count, dst);
        for (long i = 0; i < count; i++) {
            long flat = first + i;
            long r = flat / cols;
            long c = flat % cols;
            int p = (int) (start + i);
            dst.put(p, dst.get(p) * scale[(int) ((r / br) * scaleShape[1] + c / bc)]);
        }
    }

    /**
     * Reads a whole tensor as float32 after checking its shape.
     *
     * @param name the tensor name
     * @param expected the expected shape
     * @param dst the destination; its position advances by the element count
     * @throws IOException naming the file and tensor on any error
     */
    public void readFloats(String name, long[] expected, FloatBuffer dst) throws IOException {
        TensorInfo ti = checkShape(name, expected);
        readFloats(name, 0, ti.numel(), dst);
    }

    /**
     * Reads a whole tensor as float32.
     *
     * @param name the tensor name
     * @return the values
     * @throws IOException naming the file and tensor on any error
     */
    public float[] readFloats(String name) throws IOException {
        TensorInfo ti = info(name);
        if (ti.numel() > Integer.MAX_VALUE - 8) {
            throw new SafetensorsException(
                    "tensor '"
                            + name
                            + "' in "
                            + ti.file()
                            + " has "
                            + ti.numel()
                            + " elements, too many for one Java array");
        }
        float[] out = new float[(int) ti.numel()];
        readFloats(name, 0, ti.numel(), FloatBuffer.wrap(out));
        return out;
    }

    @Override
    public void close() throws IOException {
        IOException first = null;
        for (SafetensorsFile sf : files) {
            try {
                sf.close();
            } catch (IOException e) {
                if (first == null) {
                    first = e;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }
}
