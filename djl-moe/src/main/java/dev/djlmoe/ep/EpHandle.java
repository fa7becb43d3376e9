/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;

/**
 * The routing of one dispatch: prefix matrix, send lists and received source indices. A later
 * cached dispatch or a combine reuses it without recomputing the layout; the backward of both EP
 * operations uses it too.
 *
 * <p>Owned by the {@link EpBuffer} that created it and valid until {@link #close()}, with arrays on
 * the {@link #device()} of the dispatch that made it (the CPU engine's routing for CPU arrays, the
 * CUDA plug-in's for GPU arrays). Counts are host values; on a GPU the source indices are written
 * by the first dispatch with the handle.
 */
public final class EpHandle implements AutoCloseable {

    private final EpBuffer owner;
    private final Device device;
    private final EpRouting routing;
    private long numSent = -1;

    EpHandle(EpBuffer owner, Device device, EpRouting routing) {
        this.owner = owner;
        this.device = device;
        this.routing = routing;
    }

    /**
     * Returns the backend's routing after checking that the handle is open and belongs to {@code
     * buffer}.
     *
     * @param buffer the buffer that wants to use it
     * @return the routing
     */
    EpRouting routing(EpBuffer buffer) {
        EpChecks.checkHandle(
                routing.isClosed(),
                owner,
                buffer,
                "argument 'handle' was created by another EpBuffer; a handle is valid only"
                        + " with the buffer that created it");
        return routing;
    }

    /**
     * Returns the device of the dispatch that made this handle; the arrays of every call that uses
     * it must be there.
     *
     * @return the device
     */
    public Device device() {
        return device;
    }

    /**
     * Returns T, the tokens this rank dispatched.
     *
     * @return the number of source tokens
     */
    public long numTokens() {
        return routing.numTokens();
    }

    /**
     * Returns R, the tokens this rank received.
     *
     * @return the number of received rows
     */
    public long numRecv() {
        return routing.numRecv();
    }

    /**
     * Returns K, the top-k slots per token.
     *
     * @return K
     */
    public int numTopk() {
        return routing.numTopk();
    }

    /**
     * Returns E, the number of experts over all ranks.
     *
     * @return E
     */
    public int numExperts() {
        return routing.numExperts();
    }

    /**
     * Returns E / W, the experts held by this rank.
     *
     * @return the local expert count
     */
    public int numLocalExperts() {
        return routing.numLocalExperts();
    }

    /**
     * Returns W.
     *
     * @return the world size
     */
    public int worldSize() {
        return routing.worldSize();
    }

    /**
     * Returns the rows received per local expert.
     *
     * @param aligned true for counts padded up to the dispatch's expert alignment
     * @return {@code [E/W]} counts
     */
    public int[] recvTokensPerExpert(boolean aligned) {
        return open().recvTokensPerExpert(aligned);
    }

    /**
     * Returns the rank prefix matrix: {@code [i][j]} = tokens sent by ranks {@code 0..i} to rank
     * {@code j}. Received rows from source rank i occupy {@code [m[i-1][me], m[i][me])}.
     *
     * @return {@code [W][W]}
     */
    public int[][] rankPrefixMatrix() {
        int w = routing.worldSize();
        int[] flat = open().rankPrefixMatrix();
        int[][] m = new int[w][w];
        for (int i = 0; i < w; i++) {
            System.arraycopy(flat, i * w, m[i], 0, w);
        }
        return m;
    }

    /**
     * Returns, for each received row, the index of its token on the source rank.
     *
     * @return {@code [R]}
     * @throws IllegalStateException on a GPU before the first dispatch with this handle
     */
    public int[] recvSrcIdx() {
        return open().recvSrcIdx();
    }

    /**
     * Returns the rows this rank sends in a dispatch (token-rank pairs), computed once from the
     * rank prefix matrix (host values on both backends).
     *
     * @return the number of sent rows
     */
    public long numSent() {
        if (numSent < 0) {
            int w = routing.worldSize();
            int me = owner.rank();
            int[] m = open().rankPrefixMatrix();
            long sent = 0;
            for (int j = 0; j < w; j++) {
                sent += m[me * w + j] - (me > 0 ? m[(me - 1) * w + j] : 0);
            }
            numSent = sent;
        }
        return numSent;
    }

    /**
     * Returns whether each of this rank's tokens goes to each rank (on a GPU, a copy from the
     * device).
     *
     * @return {@code [T][W]}
     */
    public boolean[][] isTokenInRank() {
        int w = routing.worldSize();
        int t = (int) routing.numTokens();
        byte[] flat = open().isTokenInRank();
        boolean[][] out = new boolean[t][w];
        for (int i = 0; i < t; i++) {
            for (int r = 0; r < w; r++) {
                out[i][r] = flat[i * w + r] != 0;
            }
        }
        return out;
    }

    private EpRouting open() {
        if (routing.isClosed()) {
            throw new IllegalStateException("the handle is closed");
        }
        return routing;
    }

    /**
     * Returns whether {@link #close()} was called (or the buffer was closed, which releases the GPU
     * handles it still holds).
     *
     * @return true when closed
     */
    public boolean isClosed() {
        return routing.isClosed();
    }

    @Override
    public void close() {
        routing.close();
    }
}
