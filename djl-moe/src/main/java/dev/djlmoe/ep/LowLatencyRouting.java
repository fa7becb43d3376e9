/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

/**
 * The routing of one low-latency dispatch as a backend keeps it, behind the public {@link
 * LowLatencyHandle}; the methods that return arrays copy to the host.
 */
interface LowLatencyRouting extends AutoCloseable {

    /**
     * Returns the rows received per local expert.
     *
     * @return {@code [E/W]}
     */
    int[] recvCount();

    /**
     * Returns each received row's source token, -1 past the counts.
     *
     * @return {@code [E/W * W * Tm]}
     */
    int[] srcInfo();

    /**
     * Returns {@code (begin << 32) | count} of the rows from each rank, per local expert.
     *
     * @return {@code [E/W * W]}
     */
    long[] layoutRange();

    /**
     * Returns whether the routing is released.
     *
     * @return true when closed
     */
    boolean isClosed();

    /** Releases the routing (idempotent). */
    @Override
    void close();
}
