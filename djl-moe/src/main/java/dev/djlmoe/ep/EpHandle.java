/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.nativeep.NativeEp;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;

/**
 * The routing of one dispatch: prefix matrix, send lists and received source indices. A later
 * cached dispatch or a combine reuses it without recomputing the layout; the backward of both EP
 * operations uses it too.
 *
 * <p>Owned by the {@link EpBuffer} that created it and valid until {@link #close()}.
 */
public final class EpHandle implements AutoCloseable {

    private final EpBuffer owner;
    private NativeEp.nep_handle handle;
    private final long numTokens;
    private final long numRecv;
    private final int numTopk;
    private final int numExperts;
    private final int numLocalExperts;
    private final int worldSize;
    private long numSent = -1;

    EpHandle(EpBuffer owner, NativeEp.nep_handle handle) {
        this.owner = owner;
        this.handle = handle;
        numTokens = NativeEp.nep_handle_num_tokens(handle);
        numRecv = NativeEp.nep_handle_num_recv(handle);
        numTopk = NativeEp.nep_handle_num_topk(handle);
        numExperts = NativeEp.nep_handle_num_experts(handle);
        numLocalExperts = NativeEp.nep_handle_num_local_experts(handle);
        worldSize = NativeEp.nep_handle_world_size(handle);
    }

    /**
     * Returns the native handle after checking that it is open and belongs to {@code buffer}.
     *
     * @param buffer the buffer that wants to use it
     * @return the native handle
     */
    NativeEp.nep_handle nativeHandle(EpBuffer buffer) {
        if (handle == null) {
            throw new IllegalArgumentException("argument 'handle' is closed");
        }
        if (buffer != owner) {
            throw new IllegalArgumentException(
                    "argument 'handle' was created by another EpBuffer; a handle is valid only"
                            + " with the buffer that created it");
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
     * Returns R, the tokens this rank received.
     *
     * @return the number of received rows
     */
    public long numRecv() {
        return numRecv;
    }

    /**
     * Returns K, the top-k slots per token.
     *
     * @return K
     */
    public int numTopk() {
        return numTopk;
    }

    /**
     * Returns E, the number of experts over all ranks.
     *
     * @return E
     */
    public int numExperts() {
        return numExperts;
    }

    /**
     * Returns E / W, the experts held by this rank.
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
     * Returns the rows received per local expert.
     *
     * @param aligned true for counts padded up to the dispatch's expert alignment
     * @return {@code [E/W]} counts
     */
    public int[] recvTokensPerExpert(boolean aligned) {
        int[] out = new int[numLocalExperts];
        try (IntPointer p = new IntPointer(Math.max(1, numLocalExperts))) {
            NativeEp.nep_handle_recv_tokens_per_expert(open(), aligned ? 1 : 0, p);
            p.get(out);
        }
        return out;
    }

    /**
     * Returns the rank prefix matrix: {@code [i][j]} = tokens sent by ranks {@code 0..i} to rank
     * {@code j}. Received rows from source rank i occupy {@code [m[i-1][me], m[i][me])}.
     *
     * @return {@code [W][W]}
     */
    public int[][] rankPrefixMatrix() {
        int[] flat = new int[worldSize * worldSize];
        try (IntPointer p = new IntPointer(flat.length)) {
            NativeEp.nep_handle_rank_prefix_matrix(open(), p);
            p.get(flat);
        }
        int[][] m = new int[worldSize][worldSize];
        for (int i = 0; i < worldSize; i++) {
            System.arraycopy(flat, i * worldSize, m[i], 0, worldSize);
        }
        return m;
    }

    /**
     * Returns, for each received row, the index of its token on the source rank.
     *
     * @return {@code [R]}
     */
    public int[] recvSrcIdx() {
        int[] out = new int[(int) numRecv];
        if (numRecv > 0) {
            try (IntPointer p = new IntPointer(numRecv)) {
                NativeEp.nep_handle_recv_src_idx(open(), p);
                p.get(out);
            }
        }
        return out;
    }

    /**
     * Returns the rows this rank sends in a dispatch (token-rank pairs), computed once.
     *
     * @return the number of sent rows
     */
    public long numSent() {
        if (numSent < 0) {
            long n = numTokens * worldSize;
            long sent = 0;
            if (n > 0) {
                try (BytePointer p = new BytePointer(n)) {
                    NativeEp.nep_handle_is_token_in_rank(open(), p);
                    for (long i = 0; i < n; i++) {
                        sent += p.get(i) != 0 ? 1 : 0;
                    }
                }
            }
            numSent = sent;
        }
        return numSent;
    }

    /**
     * Returns whether each of this rank's tokens goes to each rank.
     *
     * @return {@code [T][W]}
     */
    public boolean[][] isTokenInRank() {
        boolean[][] out = new boolean[(int) numTokens][worldSize];
        long n = numTokens * worldSize;
        if (n > 0) {
            try (BytePointer p = new BytePointer(n)) {
                NativeEp.nep_handle_is_token_in_rank(open(), p);
                for (int t = 0; t < numTokens; t++) {
                    for (int r = 0; r < worldSize; r++) {
                        out[t][r] = p.get((long) t * worldSize + r) != 0;
                    }
                }
            }
        }
        return out;
    }

    private NativeEp.nep_handle open() {
        if (handle == null) {
            throw new IllegalStateException("the handle is closed");
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
            NativeEp.nep_handle_destroy(handle);
            handle = null;
        }
    }
}
