/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.Device;

/**
 * The routing of one low-latency dispatch as the receiving (expert) rank saw it: for each received
 * row its source token and top-k slot, and which rows came from which rank. {@link
 * LowLatencyBuffer#combine} sends the expert outputs back along it.
 *
 * <p>Owned by the caller (close it when the combine is done) and valid only with the {@link
 * LowLatencyBuffer} whose dispatch made it. It holds its own copy of the routing, so any number of
 * handles may be kept; only the number of pending receives is limited (two). On a GPU (the CUDA
 * plug-in) the routing stays on the device and the handle is valid until a later dispatch send
 * reuses its half of the buffer (two dispatches later when every call is a dispatch); a combine
 * with a stale handle is refused, naming the calls.
 */
public final class LowLatencyHandle implements AutoCloseable {

    private final LowLatencyBuffer owner;
    private final Device device;
    private final LowLatencyRouting routing;
    private final long numTokens;
    private final int numTopk;
    private final int numLocalExperts;
    private final int worldSize;
    private final long maxTokensPerRank;
    private final long hidden;

    LowLatencyHandle(
            LowLatencyBuffer owner,
            Device device,
            long numTokens,
            int numTopk,
            int numLocalExperts,
            int worldSize,
            long maxTokensPerRank,
            long hidden,
            LowLatencyRouting routing) {
        this.owner = owner;
        this.device = device;
        this.numTokens = numTokens;
        this.numTopk = numTopk;
        this.numLocalExperts = numLocalExperts;
        this.worldSize = worldSize;
        this.maxTokensPerRank = maxTokensPerRank;
        this.hidden = hidden;
        this.routing = routing;
    }

    /**
     * Returns the backend's routing after checking that it is open and belongs to {@code buffer}.
     *
     * @param buffer the buffer that wants to use it
     * @return the routing
     */
    LowLatencyRouting routing(LowLatencyBuffer buffer) {
        EpChecks.checkHandle(
                routing.isClosed(),
                owner,
                buffer,
                "argument 'handle' was made by another LowLatencyBuffer; combine needs the"
                        + " buffer whose dispatch produced it");
        return routing;
    }

    /**
     * Returns the device of the dispatch that made this handle; its combine's arrays must be there.
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
        return open().recvCount();
    }

    /**
     * Returns, for every row of every local expert, the index of its token on its source rank
     * ({@code -1} past the expert's count).
     *
     * @return {@code [E/W * W * max_tokens_per_rank]}, row-major {@code [E/W, W * Tm]}
     */
    public int[] srcInfo() {
        return open().srcInfo();
    }

    /**
     * Returns where each source rank's rows are: {@code (begin << 32) | count} per local expert and
     * source rank, as DeepEP's {@code packed_recv_layout_range}.
     *
     * @return {@code [E/W * W]}, row-major {@code [E/W, W]}
     */
    public long[] layoutRange() {
        return open().layoutRange();
    }

    private LowLatencyRouting open() {
        if (routing.isClosed()) {
            throw new IllegalStateException("the low-latency handle is closed");
        }
        return routing;
    }

    /**
     * Returns whether {@link #close()} was called.
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
