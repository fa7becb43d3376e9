/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.NativeEp;

import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;

/**
 * The routing of one low-latency dispatch as the receiving (expert) rank saw it: for each received
 * row its source token and top-k slot, and which rows came from which rank. {@link
 * LowLatencyBuffer#combine} sends the expert outputs back along it.
 *
 * <p>Owned by the caller (close it when the combine is done) and valid only with the {@link
 * LowLatencyBuffer} whose dispatch made it. It holds its own copy of the routing, so any number of
 * handles may be kept; only the number of pending receives is limited (two).
 */
public final class LowLatencyHandle implements AutoCloseable {

    private final LowLatencyBuffer owner;
    private NativeEp.nep_ll_handle handle;
    private final long numTokens;
    private final int numTopk;
    private final int numLocalExperts;
    private final int worldSize;
    private final long maxTokensPerRank;
    private final long hidden;

    LowLatencyHandle(LowLatencyBuffer owner, NativeEp.nep_ll_handle handle) {
        this.owner = owner;
        this.handle = handle;
        numTokens = NativeEp.nep_ll_handle_num_tokens(handle);
        numTopk = NativeEp.nep_ll_handle_num_topk(handle);
        numLocalExperts = NativeEp.nep_ll_handle_num_local_experts(handle);
        worldSize = NativeEp.nep_ll_handle_world_size(handle);
        maxTokensPerRank = NativeEp.nep_ll_handle_max_tokens_per_rank(handle);
        hidden = NativeEp.nep_ll_handle_hidden(handle);
    }

    /**
     * Returns the native handle after checking that it is open and belongs to {@code buffer}.
     *
     * @param buffer the buffer that wants to use it
     * @return the native handle
     */
    NativeEp.nep_ll_handle nativeHandle(LowLatencyBuffer buffer) {
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is closed");
        }
        if (buffer != owner) {
            throw new IllegalArgumentException(
                    "argument 'handle' was made by another LowLatencyBuffer; combine needs the"
                        + " buffer whose dispatch produced it");
        }
        return handle;
    }

    /**
     * Returns T, the tokens this rank dispatched.
     *
     * @return the number of source tokens
     */
    public long numTokens() {
        return numTokens;
    }

    /**
     * Returns K, the top-k slots of this rank's dispatch.
     *
     * @return K
     */
    public int numTopk() {
        return numTopk;
    }

    /**
     * Returns E / W.
     *
     * @return the local expert count
     */
    public int numLocalExperts() {
        return numLocalExperts;
    }

    /**
     * Returns W.
     *
     * @return the world size
     */
    public int worldSize() {
        return worldSize;
    }

    /**
     * Returns the buffer's max_tokens_per_rank.
     *
     * @return the per-rank token capacity
     */
    public long maxTokensPerRank() {
        return maxTokensPerRank;
    }

    /**
     * Returns H.
     *
     * @return the hidden size
     */
    public long hidden() {
        return hidden;
    }

    /**
     * Returns the valid rows per local expert (the dispatch's {@code recv_count}).
     *
     * @return {@code [E/W]} counts
     */
    public int[] recvCount() {
        int[] out = new int[numLocalExperts];
        try (IntPointer p = new IntPointer(Math.max(1, numLocalExperts))) {
            NativeEp.nep_ll_handle_recv_count(open(), p);
            p.get(out);
        }
        return out;
    }

    /**
     * Returns, for every row of every local expert, the index of its token on its source rank
     * ({@code -1} past the expert's count).
     *
     * @return {@code [E/W * W * max_tokens_per_rank]}, row-major {@code [E/W, W * Tm]}
     */
    public int[] srcInfo() {
        long n = (long) numLocalExperts * worldSize * maxTokensPerRank;
        int[] out = new int[Math.toIntExact(n)];
        try (IntPointer p = new IntPointer(Math.max(1, n))) {
            NativeEp.nep_ll_handle_src_info(open(), p);
            p.get(out);
        }
        return out;
    }

    /**
     * Returns where each source rank's rows are: {@code (begin << 32) | count} per local expert and
     * source rank, as DeepEP's {@code packed_recv_layout_range}.
     *
     * @return {@code [E/W * W]}, row-major {@code [E/W, W]}
     */
    public long[] layoutRange() {
        long[] out = new long[numLocalExperts * worldSize];
        try (LongPointer p = new LongPointer(Math.max(1, out.length))) {
            NativeEp.nep_ll_handle_layout_range(open(), p);
            p.get(out);
        }
        return out;
    }

    private NativeEp.nep_ll_handle open() {
        if (handle == null) {
            throw new IllegalStateException("the low-latency handle is closed");
        }
        return handle;
    }

    /**
     * Returns whether {@link #close()} was called.
     *
     * @return true when closed
     */
    public boolean isClosed() {
        return handle == null;
    }

    @Override
    public void close() {
        if (handle != null) {
            NativeEp.nep_ll_handle_destroy(handle);
            handle = null;
        }
    }
}
