/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.Device;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.EpBuffer;
import dev.djlmoe.ep.WireFormat;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The feed-through of dispatched FP8 rows into the expert GEMMs: when the dispatch wire and the
 * experts' precision are the same block-scaled FP8 format ({@link WireFormat#FP8} with {@link
 * ExpertPrecision#FP8}, {@link WireFormat#MXFP8} with {@link ExpertPrecision#MXFP8}) and the native
 * GEMMs run ({@link ExpertGemmPath}), {@link MoeLayer} dispatches into wire rows ({@link
 * EpBuffer#dispatchWire}) and the gate/up GEMM reads their bytes as they arrived: no widening to
 * float32 on receipt, no second quantisation pass, and the backward keeps the wire rows (about a
 * quarter of the float rows' bytes) instead of the float rows, decoding them for the weight
 * gradient only. The results are those of the float path bit for bit (the GEMM's quantisation of
 * the decoded rows gives back the wire's bytes).
 *
 * <p>On by default where it applies; the system property {@value #PROPERTY}{@code =false} turns it
 * off (for comparisons).
 */
public final class WireFeed {

    /**
     * The system property that turns the feed-through off: {@code true} (default) or {@code false}.
     */
    public static final String PROPERTY = "djlmoe.expert.wirefeed";

    private static final AtomicLong FEEDS = new AtomicLong();

    private WireFeed() {}

    /**
     * Returns how many MoE layer forwards in this process have fed wire rows to their experts.
     *
     * @return the count
     */
    public static long feeds() {
        return FEEDS.get();
    }

    /** Counts one forward that fed wire rows. */
    static void count() {
        FEEDS.incrementAndGet();
    }

    /**
     * Returns whether the feed-through is allowed ({@value #PROPERTY}).
     *
     * @return true unless the property says {@code false}
     * @throws IllegalArgumentException when the property is neither {@code true} nor {@code false}
     */
    public static boolean enabled() {
        String v = System.getProperty(PROPERTY, "true").trim().toLowerCase(Locale.ROOT);
        return switch (v) {
            case "true", "" -> true;
            case "false" -> false;
            default ->
                    throw new IllegalArgumentException(
                            "system property " + PROPERTY + " = '" + v + "' is not true or false");
        };
    }

    /**
     * Returns whether the rows of a dispatch wire feed experts of a precision as they are.
     *
     * @param wire the dispatch wire
     * @param precision the experts' GEMM numerics
     * @return true for FP8 with FP8 and MXFP8 with MXFP8
     */
    public static boolean matches(WireFormat wire, ExpertPrecision precision) {
        return (wire == WireFormat.FP8 && precision == ExpertPrecision.FP8)
                || (wire == WireFormat.MXFP8 && precision == ExpertPrecision.MXFP8);
    }

    /**
     * Returns whether a MoE layer's dispatch feeds its experts' GEMMs its wire rows.
     *
     * @param wire the dispatch wire
     * @param experts the routed experts
     * @param device the arrays' device
     * @param tape the step's tape, or null
     * @return true when the feed-through is on, the formats match, the native GEMMs run and the
     *     device's EP backend keeps wire rows
     */
    static boolean applies(WireFormat wire, RoutedExperts experts, Device device, Tape tape) {
        return matches(wire, experts.getPrecision())
                && enabled()
                && EpBuffer.hasWireRows(device)
                && RoutedExperts.useNative(experts.getGemmPath(), device, tape);
    }
}
