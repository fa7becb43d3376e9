/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;

/**
 * The key/value cache of a decoder for incremental decoding: per attention layer up to two arrays
 * {@code [B, h, capacity, d]} (what each attention kind keeps: {@link GroupedQueryAttention} the
 * rotated keys and the values of its kv heads; {@link MultiHeadLatentAttention} the normalised
 * latent {@code [B, 1, capacity, kv_lora_rank]} and the rotated shared key {@code [B, 1, capacity,
 * qk_rope_head_dim]}).
 *
 * <p>Sequences of one batch may be at different positions: a call writes the new tokens of sequence
 * b at positions {@code start[b] .. start[b] + S - 1} and each query at position p sees the keys at
 * positions {@code <= p} (within the sliding window, if any). Keys that were never written or
 * belong to padding beyond a sequence's end are masked, so right-padded prompts may be prefilled
 * together. The arrays belong to a manager of the cache (closed with it), are allocated on first
 * use and are float32.
 */
public final class KvCache implements AutoCloseable {

    private final NDManager manager;
    private final int batch;
    private final int capacity;
    private final NDArray[][] arrays;

    /**
     * Creates an empty cache.
     *
     * @param parent the manager whose sub-manager will own the arrays
     * @param numLayers the decoder layers
     * @param batch B, the sequences
     * @param capacity the most positions a sequence may reach (prompt plus generated tokens)
     */
    public KvCache(NDManager parent, int numLayers, int batch, int capacity) {
        if (numLayers < 1 || batch < 1 || capacity < 1) {
            throw new IllegalArgumentException(
                    "KvCache: layers = "
                            + numLayers
                            + ", batch = "
                            + batch
                            + ", capacity = "
                            + capacity
                            + ": all must be >= 1");
        }
        this.manager = parent.newSubManager();
        this.batch = batch;
        this.capacity = capacity;
        this.arrays = new NDArray[numLayers][2];
    }

    /**
     * Returns B.
     *
     * @return the number of sequences
     */
    public int batch() {
        return batch;
    }

    /**
     * Returns the most positions a sequence may reach.
     *
     * @return the capacity
     */
    public int capacity() {
        return capacity;
    }

    /**
     * Checks the start positions of a call of S new tokens per sequence.
     *
     * @param start {@code [B]} the position of each sequence's first new token
     * @param s S
     * @return the keys visible to the call: {@code max_b(start[b] + S)}
     */
    public long checkStart(long[] start, long s) {
        if (start == null || start.length != batch) {
            throw new IllegalArgumentException(
                    "argument 'start' has "
                            + (start == null ? "null" : start.length)
                            + " entries, expected one per sequence ("
                            + batch
                            + ")");
        }
        long end = 0;
        for (int b = 0; b < batch; b++) {
            if (start[b] < 0 || start[b] + s > capacity) {
                throw new IllegalArgumentException(
                        "sequence "
                                + b
                                + " writes positions "
                                + start[b]
                                + " .. "
                                + (start[b] + s - 1)
                                + ", outside the cache capacity "
                                + capacity);
            }
            end = Math.max(end, start[b] + s);
        }
        return end;
    }

    /**
     * Writes the new entries of one layer and returns everything a query may read.
     *
     * @param layer the decoder layer
     * @param slot 0 or 1: which of the layer's arrays
     * @param values {@code [B, h, S, d]} float32 new entries
     * @param start {@code [B]} the position of each sequence's first new entry
     * @return {@code [B, h, L, d]} the cached entries at positions {@code 0 .. L-1}, {@code L =
     *     max_b(start[b] + S)}
     */
    public NDArray append(int layer, int slot, NDArray values, long[] start) {
        Shape vs = values.getShape();
        if (vs.dimension() != 4 || vs.get(0) != batch) {
            throw new IllegalArgumentException(
                    "KvCache values have shape " + vs + ", expected [" + batch + ", h, S, d]");
        }
        long s = vs.get(2);
        long end = checkStart(start, s);
        NDArray a = arrays[layer][slot];
        if (a == null) {
            a = manager.zeros(new Shape(batch, vs.get(1), capacity, vs.get(3)), DataType.FLOAT32);
            arrays[layer][slot] = a;
        } else if (a.getShape().get(1) != vs.get(1) || a.getShape().get(3) != vs.get(3)) {
            throw new IllegalArgumentException(
                    "KvCache layer "
                            + layer
                            + " slot "
                            + slot
                            + " holds "
                            + a.getShape()
                            + ", the new values are "
                            + vs);
        }
        for (int b = 0; b < batch; b++) {
            NDArray row = values.get(new NDIndex("{}:{}", b, b + 1));
            a.set(new NDIndex("{}:{}, :, {}:{}, :", b, b + 1, start[b], start[b] + s), row);
        }
        return a.get(new NDIndex(":, :, :{}, :", end));
    }

    /**
     * The additive attention mask of a call: {@code [B, 1, S, L]}, 0 where the query of sequence b
     * at position {@code start[b] + i} may see key position j ({@code j <= start[b] + i}, and
     * {@code j > start[b] + i - window} with a window), {@code -inf} elsewhere.
     *
     * @param m where to create it
     * @param start {@code [B]} first positions
     * @param s S new tokens per sequence
     * @param l L visible key positions
     * @param window the sliding window, 0 for none
     * @return the mask
     */
    public static NDArray mask(NDManager m, long[] start, long s, long l, int window) {
        int b = start.length;
        float[] mask = new float[(int) (b * s * l)];
        for (int q = 0; q < b; q++) {
            for (int i = 0; i < s; i++) {
                long p = start[q] + i;
                for (int j = 0; j < l; j++) {
                    boolean visible = j <= p && (window <= 0 || j > p - window);
                    if (!visible) {
                        mask[(int) ((q * s + i) * l + j)] = Float.NEGATIVE_INFINITY;
                    }
                }
            }
        }
        return m.create(mask, new Shape(b, 1, s, l));
    }

    /**
     * The rotary tables at each new token's own position: {@code {cos, sin}}, each {@code [B, 1, S,
     * d/2]}, for {@link RotaryEmbedding#apply} on {@code [B, heads, S, d]}.
     *
     * @param rotary the model's rotary embedding
     * @param m where to create them
     * @param start {@code [B]} first positions
     * @param s S
     * @return {cos, sin}
     */
    public static NDArray[] rope(RotaryEmbedding rotary, NDManager m, long[] start, long s) {
        long end = 0;
        for (long p : start) {
            end = Math.max(end, p + s);
        }
        NDArray[] table = rotary.cosSin(m, end); // [P, d/2]
        long half = table[0].getShape().get(1);
        long[] pos = new long[(int) (start.length * s)];
        for (int b = 0; b < start.length; b++) {
            for (int i = 0; i < s; i++) {
                pos[(int) (b * s + i)] = start[b] + i;
            }
        }
        NDArray idx = m.create(pos);
        Shape out = new Shape(start.length, 1, s, half);
        return new NDArray[] {table[0].get(idx).reshape(out), table[1].get(idx).reshape(out)};
    }

    /** Frees the cached arrays. */
    @Override
    public void close() {
        manager.close();
    }
}
