/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

/**
 * A low-latency send awaiting its receive, as a backend keeps it (the CPU engine's {@code
 * nep_ll_op} or the CUDA plug-in's op), behind the public {@link LowLatencyHook}.
 *
 * @param <R> the result of the receive
 */
interface LowLatencyOp<R> {

    /**
     * Returns the call's number in the buffer's sequence of low-latency calls (1-based).
     *
     * @return the call index
     */
    long callIndex();

    /**
     * Returns the messages or rows this rank sent, or -1 where the count stays on the device.
     *
     * @return the rows sent, or -1
     */
    long rowsSent();

    /**
     * Returns the bytes this rank sent, or -1 where the count stays on the device.
     *
     * @return the bytes sent, or -1
     */
    long bytesSent();

    /**
     * Returns whether the receive would complete without the host waiting.
     *
     * @return true when ready
     */
    boolean ready();

    /**
     * Completes the receive and returns its result; on failure the op stays pending.
     *
     * @return the result
     */
    R receive();

    /** Releases the op; a pending receive is abandoned (its half of the buffer is released). */
    void release();
}
