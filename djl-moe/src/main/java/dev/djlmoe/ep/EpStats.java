/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

/**
 * Running totals of the communication done by one {@link EpBuffer}: calls, bytes put on the wire by
 * this rank and wall time, for dispatch and combine. Read and reset by the training loop to log EP
 * bytes and time per step.
 */
public final class EpStats {

    private long dispatchCalls;
    private long dispatchBytes;
    private long dispatchNanos;
    private long combineCalls;
    private long combineBytes;
    private long combineNanos;

    synchronized void addDispatch(long bytes, long nanos) {
        dispatchCalls++;
        dispatchBytes += bytes;
        dispatchNanos += nanos;
    }

    synchronized void addCombine(long bytes, long nanos) {
        combineCalls++;
        combineBytes += bytes;
        combineNanos += nanos;
    }

    /**
     * Returns the number of dispatch calls (fresh and cached).
     *
     * @return the count
     */
    public synchronized long dispatchCalls() {
        return dispatchCalls;
    }

    /**
     * Returns the wire bytes of the rows this rank dispatched.
     *
     * @return bytes
     */
    public synchronized long dispatchBytes() {
        return dispatchBytes;
    }

    /**
     * Returns the wall time spent in dispatch (notify included).
     *
     * @return nanoseconds
     */
    public synchronized long dispatchNanos() {
        return dispatchNanos;
    }

    /**
     * Returns the number of combine calls.
     *
     * @return the count
     */
    public synchronized long combineCalls() {
        return combineCalls;
    }

    /**
     * Returns the wire bytes of the rows this rank sent back in combine.
     *
     * @return bytes
     */
    public synchronized long combineBytes() {
        return combineBytes;
    }

    /**
     * Returns the wall time spent in combine.
     *
     * @return nanoseconds
     */
    public synchronized long combineNanos() {
        return combineNanos;
    }

    /**
     * Returns dispatch plus combine time.
     *
     * @return nanoseconds
     */
    public synchronized long totalNanos() {
        return dispatchNanos + combineNanos;
    }

    /**
     * Returns dispatch plus combine bytes.
     *
     * @return bytes
     */
    public synchronized long totalBytes() {
        return dispatchBytes + combineBytes;
    }

    /** Sets every total to zero. */
    public synchronized void reset() {
        dispatchCalls = 0;
        dispatchBytes = 0;
        dispatchNanos = 0;
        combineCalls = 0;
        combineBytes = 0;
        combineNanos = 0;
    }
}
