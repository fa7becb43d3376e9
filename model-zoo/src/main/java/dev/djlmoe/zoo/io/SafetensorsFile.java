/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A memory-mapped, read-only safetensors file.
 *
 * <p>The format: 8 bytes little-endian header length N, N bytes of UTF-8 JSON mapping each tensor
 * name to {@code {"dtype", "shape", "data_offsets": [begin, end]}} (plus an optional {@code
 * "__metadata__"} map of strings), then the data section. The header is validated completely at
 * {@link #open}: its length against the file size and a limit, its JSON (bounded depth), every
 * dtype, shape (non-negative, no overflow) and byte range (inside the data section, of exactly
 * {@code numel * size} bytes, not overlapping another tensor). No memory is allocated from a
 * declared size before it is checked against the file, so a lying header fails with a message
 * instead of an out-of-memory error.
 *
 * <p>The data are read through {@link FileChannel#map} windows of at most {@code windowSize} bytes
 * (1 GiB by default), mapped lazily, so files and tensors larger than 2 GiB work. Reads copy (and
 * widen to float32) into caller buffers; the file is never written.
 *
 * <p>Instances are safe for concurrent reads.
 */
public final class SafetensorsFile implements AutoCloseable {

    /** The largest header accepted (the reference implementation's limit). */
    public static final long MAX_HEADER_BYTES = 100L << 20;

    /** Default mapping window: 1 GiB. */
    public static final int DEFAULT_WINDOW = 1 << 30;

    private static final int STAGING = 1 << 20;
    private static final int MAX_HEADER_DEPTH = 8;

    private final Path path;
    private final FileChannel channel;
    private final long fileSize;
    private final long dataStart;
    private final int windowSize;
    private final ByteBuffer[] windows;
    private final Map<String, TensorInfo> tensors;
    private final Map<String, String> metadata;

    private SafetensorsFile(
            Path path,
            FileChannel channel,
            long fileSize,
            long dataStart,
            int windowSize,
            Map<String, TensorInfo> tensors,
            Map<String, String> metadata) {
        this.path = path;
        this.channel = channel;
        this.fileSize = fileSize;
        this.dataStart = dataStart;
        this.windowSize = windowSize;
        long dataLen = fileSize - dataStart;
        this.windows = new ByteBuffer[(int) Math.max(1, (dataLen + windowSize - 1) / windowSize)];
        this.tensors = tensors;
        this.metadata = metadata;
    }

    /**
     * Opens and validates a safetensors file.
     *
     * @param path the file
     * @return the open file
     * @throws SafetensorsException naming the file and what is wrong with it
     * @throws IOException if the file cannot be read
     */
    public static SafetensorsFile open(Path path) throws IOException {
        return open(path, DEFAULT_WINDOW);
    }

    /**
     * Opens and validates a safetensors file with a given mapping window (tests use small windows
     * to exercise reads that cross window boundaries).
     *
     * @param path the file
     * @param windowSize the largest mapped region, in bytes, positive
     * @return the open file
     * @throws SafetensorsException naming the file and what is wrong with it
     * @throws IOException if the file cannot be read
     */
    public static SafetensorsFile open(Path path, int windowSize) throws IOException {
        if (windowSize <= 0) {
            throw new IllegalArgumentException("windowSize must be positive, got " + windowSize);
        }
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
        try {
            long size = ch.size();
            if (size < 8) {
                throw new SafetensorsException(
                        path
                                + ": truncated file: "
                                + size
                                + " bytes, a safetensors file needs at least 8 (the header"
                                + " length)");
            }
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0);
            long headerLen = lenBuf.getLong(0);
            if (headerLen < 2 || headerLen > MAX_HEADER_BYTES) {
                throw new SafetensorsException(
                        path
                                + ": bad header length "
                                + Long.toUnsignedString(headerLen)
                                + ": expected 2.."
                                + MAX_HEADER_BYTES
                                + " bytes");
            }
            if (8 + headerLen > size) {
                throw new SafetensorsException(
                        path
                                + ": header length "
                                + headerLen
                                + " runs past the end of the file ("
                                + size
                                + " bytes): truncated file or a header length that lies");
            }
            try {
                Json.checkHeap(headerLen, path + ": header");
            } catch (JsonException e) {
                throw new SafetensorsException(e.getMessage(), e);
            }
            ByteBuffer hb = ByteBuffer.allocate((int) headerLen);
            readFully(ch, hb, 8);
            String json;
            try {
                json =
                        StandardCharsets.UTF_8
                                .newDecoder()
                                .onMalformedInput(CodingErrorAction.REPORT)
                                .onUnmappableCharacter(CodingErrorAction.REPORT)
                                .decode(hb.flip())
                                .toString();
            } catch (CharacterCodingException e) {
                throw new SafetensorsException(path + ": header is not valid UTF-8", e);
            }
            if (!json.startsWith("{")) {
                throw new SafetensorsException(
                        path + ": header does not start with '{' (not a safetensors file?)");
            }
            Object parsed;
            try {
                parsed = Json.parse(json, path + " header", MAX_HEADER_DEPTH);
            } catch (JsonException e) {
                throw new SafetensorsException(e.getMessage(), e);
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> header = (Map<String, Object>) parsed;
            long dataStart = 8 + headerLen;
            Map<String, String> meta = new LinkedHashMap<>();
            Map<String, TensorInfo> infos = parseHeader(path, header, size - dataStart, meta);
            return new SafetensorsFile(
                    path,
                    ch,
                    size,
                    dataStart,
                    windowSize,
                    Collections.unmodifiableMap(infos),
                    Collections.unmodifiableMap(meta));
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private static Map<String, TensorInfo> parseHeader(
            Path path, Map<String, Object> header, long dataLen, Map<String, String> meta)
            throws SafetensorsException {
        Map<String, TensorInfo> infos = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : header.entrySet()) {
            String name = e.getKey();
            Object v = e.getValue();
            if ("__metadata__".equals(name)) {
                if (!(v instanceof Map)) {
                    throw new SafetensorsException(
                            path
                                    + ": __metadata__ must be an object of strings, found "
                                    + Json.typeName(v));
                }
                for (Map.Entry<?, ?> m : ((Map<?, ?>) v).entrySet()) {
                    if (!(m.getValue() instanceof String)) {
                        throw new SafetensorsException(
                                path
                                        + ": __metadata__."
                                        + m.getKey()
                                        + " must be a string, found "
                                        + Json.typeName(m.getValue()));
                    }
                    meta.put((String) m.getKey(), (String) m.getValue());
                }
                continue;
            }
            String where = path + ": tensor '" + name + "'";
            if (!(v instanceof Map)) {
                throw new SafetensorsException(
                        where + ": expected an object, found " + Json.typeName(v));
            }
            Map<?, ?> t = (Map<?, ?>) v;
            Object dt = t.get("dtype");
            if (!(dt instanceof String)) {
                throw new SafetensorsException(where + ": missing or non-string \"dtype\"");
            }
            DType dtype = DType.fromName((String) dt);
            if (dtype == null) {
                throw new SafetensorsException(
                        where
                                + ": unknown dtype \""
                                + dt
                                + "\": expected one of "
                                + java.util.Arrays.toString(DType.values()));
            }
            long[] shape = longArray(t.get("shape"), where, "shape");
            long numel = 1;
            for (long d : shape) {
                if (d < 0) {
                    throw new SafetensorsException(
                            where
                                    + ": negative dimension "
                                    + d
                                    + " in shape "
                                    + java.util.Arrays.toString(shape));
                }
                try {
                    numel = Math.multiplyExact(numel, d);
                } catch (ArithmeticException ex) {
                    throw new SafetensorsException(
                            where
                                    + ": shape "
                                    + java.util.Arrays.toString(shape)
                                    + " has more than 2^63 elements");
                }
            }
            long need;
            try {
                need = Math.multiplyExact(numel, (long) dtype.size());
            } catch (ArithmeticException ex) {
                throw new SafetensorsException(
                        where
                                + ": shape "
                                + java.util.Arrays.toString(shape)
                                + " of "
                                + dtype
                                + " needs more than 2^63 bytes");
            }
            long[] off = longArray(t.get("data_offsets"), where, "data_offsets");
            if (off.length != 2) {
                throw new SafetensorsException(
                        where
                                + ": data_offsets must be [begin, end], found "
                                + java.util.Arrays.toString(off));
            }
            long begin = off[0];
            long end = off[1];
            if (begin < 0 || end < begin) {
                throw new SafetensorsException(
                        where
                                + ": bad data_offsets ["
                                + begin
                                + ", "
                                + end
                                + "]: expected 0 <= begin <= end");
            }
            if (end - begin != need) {
                throw new SafetensorsException(
                        where
                                + ": data_offsets ["
                                + begin
                                + ", "
                                + end
                                + "] span "
                                + (end - begin)
                                + " bytes, but "
                                + dtype
                                + " "
                                + java.util.Arrays.toString(shape)
                                + " needs "
                                + need);
            }
            if (end > dataLen) {
                throw new SafetensorsException(
                        where
                                + ": data ends at byte "
                                + end
                                + " of the data section, but the file"
                                + " has only "
                                + dataLen
                                + " data bytes (truncated file?)");
            }
            for (Object k : t.keySet()) {
                if (!"dtype".equals(k) && !"shape".equals(k) && !"data_offsets".equals(k)) {
                    throw new SafetensorsException(where + ": unexpected field \"" + k + "\"");
                }
            }
            infos.put(name, new TensorInfo(path, name, dtype, shape, begin, end));
        }
        List<TensorInfo> sorted = new ArrayList<>(infos.values());
        sorted.sort(Comparator.comparingLong(TensorInfo::begin).thenComparingLong(TensorInfo::end));
        TensorInfo prev = null;
        for (TensorInfo ti : sorted) {
            if (ti.byteSize() == 0) {
                continue;
            }
            if (prev != null && ti.begin() < prev.end()) {
                throw new SafetensorsException(
                        path
                                + ": tensors '"
                                + prev.name()
                                + "' ["
                                + prev.begin()
                                + ", "
                                + prev.end()
                                + ") and '"
                                + ti.name()
                                + "' ["
                                + ti.begin()
                                + ", "
                                + ti.end()
                                + ") overlap");
            }
            prev = ti;
        }
        return infos;
    }

    private static long[] longArray(Object v, String where, String field)
            throws SafetensorsException {
        if (!(v instanceof List)) {
            throw new SafetensorsException(
                    where
                            + ": \""
                            + field
                            + "\" must be an array of integers, found "
                            + Json.typeName(v));
        }
        List<?> l = (List<?>) v;
        if (l.size() > 64) {
            throw new SafetensorsException(
                    where + ": \"" + field + "\" has " + l.size() + " entries (at most 64)");
        }
        long[] out = new long[l.size()];
        for (int i = 0; i < out.length; i++) {
            Object o = l.get(i);
            if (!(o instanceof Long)) {
                throw new SafetensorsException(
                        where + ": \"" + field + "\"[" + i + "] must be an integer, found " + o);
            }
            out[i] = (Long) o;
        }
        return out;
    }

    private static void readFully(FileChannel ch, ByteBuffer dst, long position)
            throws IOException {
        long p = position;
        while (dst.hasRemaining()) {
            int n = ch.read(dst, p);
            if (n < 0) {
                throw new SafetensorsException("unexpected end of file at byte " + p);
            }
            p += n;
        }
    }

    /**
     * Returns the path of this file.
     *
     * @return the path
     */
    public Path path() {
        return path;
    }

    /**
     * Returns the tensors, in header order.
     *
     * @return name to info
     */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /**
     * Returns the {@code __metadata__} strings.
     *
     * @return the metadata, possibly empty
     */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * Returns one tensor's entry.
     *
     * @param name the tensor name
     * @return the entry
     * @throws SafetensorsException if the file has no such tensor
     */
    public TensorInfo info(String name) throws SafetensorsException {
        TensorInfo ti = tensors.get(name);
        if (ti == null) {
            throw new SafetensorsException(path + ": no tensor '" + name + "'");
        }
        return ti;
    }

    private synchronized ByteBuffer window(int idx) throws IOException {
        ByteBuffer w = windows[idx];
        if (w == null) {
            long start = dataStart + (long) idx * windowSize;
            long len = Math.min(windowSize, fileSize - start);
            w = channel.map(FileChannel.MapMode.READ_ONLY, start, len);
            windows[idx] = w;
        }
        return w;
    }

    /**
     * Copies raw bytes of the data section into {@code dst} (its remaining bytes).
     *
     * @param dataOffset offset in the data section
     * @param dst the destination
     * @throws IOException if the mapping fails
     */
    void copyRaw(long dataOffset, ByteBuffer dst) throws IOException {
        long off = dataOffset;
        while (dst.hasRemaining()) {
            int idx = (int) (off / windowSize);
            int inWin = (int) (off % windowSize);
            ByteBuffer w = window(idx).duplicate();
            int n = Math.min(dst.remaining(), w.capacity() - inWin);
            if (n <= 0) {
                throw new SafetensorsException(path + ": read past the end of the data section");
            }
            w.position(inWin).limit(inWin + n);
            dst.put(w);
            off += n;
        }
    }

    /**
     * Reads a range of a floating-point tensor's elements, widened (or narrowed, for F64) to
     * float32, into {@code dst} starting at its position.
     *
     * @param ti the tensor (from this file)
     * @param firstElement the first element, in row-major order
     * @param count how many elements
     * @param dst the destination; its position advances by {@code count}
     * @throws SafetensorsException if the dtype is not floating point or the range is outside the
     *     tensor
     * @throws IOException if the file cannot be read
     */
    public void readFloats(TensorInfo ti, long firstElement, long count, FloatBuffer dst)
            throws IOException {
        if (!ti.dtype().isFloating()) {
            throw new SafetensorsException(
                    path
                            + ": tensor '"
                            + ti.name()
                            + "' has dtype "
                            + ti.dtype()
                            + ", expected a floating-point dtype (F32, F16, BF16, F8_E4M3, F64)");
        }
        checkRange(ti, firstElement, count);
        if (dst.remaining() < count) {
            throw new IllegalArgumentException(
                    "destination has room for " + dst.remaining() + " floats, need " + count);
        }
        int es = ti.dtype().size();
        ByteBuffer staging = ByteBuffer.allocate(STAGING).order(ByteOrder.LITTLE_ENDIAN);
        long off = ti.begin() + firstElement * es;
        long left = count;
        while (left > 0) {
            int n = (int) Math.min(left, STAGING / es);
            staging.clear().limit(n * es);
            copyRaw(off, staging);
            staging.flip();
            decode(ti.dtype(), staging, n, dst);
            off += (long) n * es;
            left -= n;
        }
    }

    private static void decode(DType dtype, ByteBuffer src, int n, FloatBuffer dst) {
        switch (dtype) {
            case F32:
                dst.put(src.asFloatBuffer().limit(n));
                break;
            case F64:
                for (int i = 0; i < n; i++) {
                    dst.put((float) src.getDouble(i * 8));
                }
                break;
            case BF16:
                for (int i = 0; i < n; i++) {
                    dst.put(DType.bf16ToFloat(src.getShort(i * 2)));
                }
                break;
            case F16:
                for (int i = 0; i < n; i++) {
                    dst.put(DType.halfToFloat(src.getShort(i * 2)));
                }
                break;
            case F8_E4M3:
                for (int i = 0; i < n; i++) {
                    dst.put(DType.e4m3ToFloat(src.get(i)));
                }
                break;
            case F8_E5M2:
                for (int i = 0; i < n; i++) {
                    dst.put(DType.e5m2ToFloat(src.get(i)));
                }
                break;
            default:
                throw new IllegalStateException("not a floating dtype: " + dtype);
        }
    }

    /**
     * Reads a whole floating-point tensor as float32.
     *
     * @param name the tensor name
     * @return the values, row-major
     * @throws SafetensorsException if the tensor is missing, not floating point or has more than
     *     2^31 - 1 elements
     * @throws IOException if the file cannot be read
     */
    public float[] readFloats(String name) throws IOException {
        TensorInfo ti = info(name);
        if (ti.numel() > Integer.MAX_VALUE - 8) {
            throw new SafetensorsException(
                    path
                            + ": tensor '"
                            + name
                            + "' has "
                            + ti.numel()
                            + " elements, too many for one Java array: read it in ranges");
        }
        float[] out = new float[(int) ti.numel()];
        readFloats(ti, 0, ti.numel(), FloatBuffer.wrap(out));
        return out;
    }

    /**
     * Reads a whole integer tensor (I64, I32, I16, I8, U8, BOOL) as longs.
     *
     * @param name the tensor name
     * @return the values, row-major
     * @throws SafetensorsException if the tensor is missing or not an integer tensor
     * @throws IOException if the file cannot be read
     */
    public long[] readLongs(String name) throws IOException {
        TensorInfo ti = info(name);
        if (ti.dtype().isFloating()) {
            throw new SafetensorsException(
                    path
                            + ": tensor '"
                            + name
                            + "' has dtype "
                            + ti.dtype()
                            + ", expected an integer dtype");
        }
        if (ti.numel() > (1 << 27)) {
            throw new SafetensorsException(
                    path + ": tensor '" + name + "' has " + ti.numel() + " elements, too many");
        }
        int n = (int) ti.numel();
        ByteBuffer raw = ByteBuffer.allocate((int) ti.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        copyRaw(ti.begin(), raw);
        long[] out = new long[n];
        for (int i = 0; i < n; i++) {
            switch (ti.dtype()) {
                case I64:
                    out[i] = raw.getLong(i * 8);
                    break;
                case I32:
                    out[i] = raw.getInt(i * 4);
                    break;
                case I16:
                    out[i] = raw.getShort(i * 2);
                    break;
                case I8:
                    out[i] = raw.get(i);
                    break;
                default: // U8, BOOL
                    out[i] = raw.get(i) & 0xFF;
                    break;
            }
        }
        return out;
    }

    /**
     * Reads a tensor's raw bytes (for tests and tools).
     *
     * @param name the tensor name
     * @return the little-endian bytes
     * @throws IOException if the tensor is missing, too large or the file cannot be read
     */
    public byte[] readRaw(String name) throws IOException {
        TensorInfo ti = info(name);
        if (ti.byteSize() > Integer.MAX_VALUE - 8) {
            throw new SafetensorsException(path + ": tensor '" + name + "' is too large");
        }
        byte[] out = new byte[(int) ti.byteSize()];
        copyRaw(ti.begin(), ByteBuffer.wrap(out));
        return out;
    }

    private void checkRange(TensorInfo ti, long first, long count) throws SafetensorsException {
        if (first < 0 || count < 0 || first + count > ti.numel()) {
            throw new SafetensorsException(
                    path
                            + ": tensor '"
                            + ti.name()
                            + "': elements ["
                            + first
                            + ", "
                            + (first + count)
                            + ") are outside its "
                            + ti.numel()
                            + " elements");
        }
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    @Override
    public String toString() {
        return "SafetensorsFile(" + path + ", " + tensors.size() + " tensors)";
    }
}
