/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.WireFormat;

/**
 * How the MoE layers of a model exchange tokens in low-latency mode during decoding ({@link
 * MoeLayer#forwardLowLatency}): the {@link LowLatencyBuffer} shared by the layers (one rank's;
 * every rank runs the same layers in the same order), the wire formats, and the time spent in the
 * low-latency dispatch and combine (send plus receive; the work overlapped between them, the shared
 * experts, is not counted).
 *
 * <p>Not thread-safe: one decoding loop per rank.
 */
public final class LowLatencyMoe {

    private final LowLatencyBuffer buffer;
    private final WireFormat dispatchWire;
    private final WireFormat combineWire;
    private final boolean roundScale;
    private long dispatchNanos;
    private long combineNanos;
    private long calls;

    /**
     * Creates the settings.
     *
     * @param buffer the rank's low-latency buffer (hidden size and experts of the model)
     * @param dispatchWire the wire format of dispatch ({@link WireFormat#FP8} as DeepEP, or
     *     bf16/fp32)
     * @param combineWire the wire format of combine (bf16 as DeepEP, or fp32)
     * @param roundScale with an FP8 dispatch: power-of-two scales
     */
    public LowLatencyMoe(
            LowLatencyBuffer buffer,
            WireFormat dispatchWire,
            WireFormat combineWire,
            boolean roundScale) {
        if (buffer == null) {
            throw new IllegalArgumentException("argument 'buffer' is null");
        }
        if (dispatchWire == null || combineWire == null) {
            throw new IllegalArgumentException(
                    "the dispatch and combine wire formats are required");
        }
        if (roundScale && dispatchWire != WireFormat.FP8) {
            throw new IllegalArgumentException(
                    "argument 'round_scale' needs an FP8 dispatch wire, not " + dispatchWire);
        }
        this.buffer = buffer;
        this.dispatchWire = dispatchWire;
        this.combineWire = combineWire;
        this.roundScale = roundScale;
    }

    /**
     * Returns the buffer.
     *
     * @return the low-latency buffer
     */
    public LowLatencyBuffer buffer() {
        return buffer;
    }

    /**
     * Returns the dispatch wire format.
     *
     * @return the format
     */
    public WireFormat dispatchWire() {
        return dispatchWire;
    }

    /**
     * Returns the combine wire format.
     *
     * @return the format
     */
    public WireFormat combineWire() {
        return combineWire;
    }

    /**
     * Returns whether FP8 dispatch rounds its scales to powers of two.
     *
     * @return round_scale
     */
    public boolean roundScale() {
        return roundScale;
    }

    /**
     * Returns the nanoseconds spent in low-latency dispatch (send and receive) so far.
     *
     * @return dispatch time
     */
    public long dispatchNanos() {
        return dispatchNanos;
    }

    /**
     * Returns the nanoseconds spent in low-latency combine (send and receive) so far.
     *
     * @return combine time
     */
    public long combineNanos() {
        return combineNanos;
    }

    /**
     * Returns the MoE layer calls made so far.
     *
     * @return the layer calls
     */
    public long calls() {
        return calls;
    }

    /** Sets the timers and the call count to zero. */
    public void resetTimers() {
        dispatchNanos = 0;
        combineNanos = 0;
        calls = 0;
    }

    void record(long dispatch, long combine) {
        dispatchNanos += dispatch;
        combineNanos += combine;
        calls++;
    }
}
