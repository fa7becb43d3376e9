/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.core.EpPeerException;
import dev.djlmoe.core.EpTimeoutException;

/**
 * The receive phase of a low-latency dispatch or combine whose send phase has returned: other work
 * runs between the send and {@link #await()}, which waits for every rank's data and returns the
 * result (DeepEP's {@code return_recv_hook}).
 *
 * <p>At most two hooks of one {@link LowLatencyBuffer} may be pending at once (the buffer is double
 * buffered); a third send fails until one of them is awaited or closed. Closing a hook that was
 * never awaited abandons its receive (the data is dropped and the buffer released). On a GPU the
 * receive is enqueued on the stream libtorch uses, so {@link #await()} returns at once and DJL's
 * operations on the result run after it; a failure on the device is reported by a later call. Not
 * thread-safe.
 *
 * @param <R> the result: {@link LowLatencyDispatch} or the combined {@code NDArray}
 */
public final class LowLatencyHook<R> implements AutoCloseable {

    private LowLatencyOp<R> op;
    private final long callIndex;
    private final long rowsSent;
    private final long bytesSent;
    private R result;
    private boolean done;

    LowLatencyHook(LowLatencyOp<R> op) {
        this.op = op;
        callIndex = op.callIndex();
        rowsSent = op.rowsSent();
        bytesSent = op.bytesSent();
    }

    /**
     * Returns whether {@link #await()} would complete without waiting (every rank has sent; on a
     * GPU always, since the receive only enqueues work on the stream).
     *
     * @return true when the data of every rank has arrived
     */
    public boolean isReady() {
        return op != null && !done && op.ready();
    }

    /**
     * Returns whether the receive has completed.
     *
     * @return true after a successful {@link #await()}
     */
    public boolean isDone() {
        return done;
    }

    /**
     * Returns the call's number in the buffer's sequence of low-latency calls (1-based).
     *
     * @return the call index
     */
    public long callIndex() {
        return callIndex;
    }

    /**
     * Returns the messages (dispatch: one per selected (token, expert) pair) or rows (combine) this
     * rank sent, or -1 on a GPU, where the count stays on the device.
     *
     * @return the rows sent, or -1
     */
    public long rowsSent() {
        return rowsSent;
    }

    /**
     * Returns the bytes this rank sent, message headers included, or -1 on a GPU.
     *
     * @return the bytes sent, or -1
     */
    public long bytesSent() {
        return bytesSent;
    }

    /**
     * Completes the receive: waits (bounded by the buffer's timeout) for every rank's data and
     * returns the result; later calls return the same result.
     *
     * @return the result
     * @throws EpTimeoutException when a rank's data does not arrive in time (naming it)
     * @throws EpPeerException when a rank failed or exited
     * @throws IllegalStateException when the hook was closed
     */
    public R await() {
        if (done) {
            return result;
        }
        if (op == null) {
            throw new IllegalStateException("the low-latency hook is closed");
        }
        result = op.receive();
        done = true;
        op.release();
        op = null;
        return result;
    }

    /**
     * Same as {@link #await()}.
     *
     * @return the result
     */
    public R complete() {
        return await();
    }

    /** Releases the native op; a receive that was never completed is abandoned. */
    @Override
    public void close() {
        if (op != null) {
            op.release();
            op = null;
        }
    }
}
