/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nn.ExpertPrecision;
import java.util.StringJoiner;

/**
 * The {@code --precision} of a run: what travels on the dispatch wire and how the experts' GEMMs
 * round. DJL tensors stay float32 throughout.
 */
public enum TrainingPrecision {
    /** fp32 everywhere. */
    FP32("fp32", WireFormat.FP32, ExpertPrecision.FP32, 1),
    /** bf16 on the dispatch wire, fp32 GEMMs. */
    BF16_WIRE("bf16-wire", WireFormat.BF16, ExpertPrecision.FP32, 1),
    /** FP8 (e4m3, 1x128 fp32 scales) on the dispatch wire, fp32 GEMMs. */
    FP8_WIRE("fp8-wire", WireFormat.FP8, ExpertPrecision.FP32, 1),
    /**
     * MXFP8 on the dispatch wire and MXFP8 expert GEMMs (native on GPU, emulated on CPU), with
     * per-expert token groups padded to 32.
     */
    MXFP8("mxfp8", WireFormat.MXFP8, ExpertPrecision.MXFP8, 32),
    /**
     * FP8 on the dispatch wire and DeepSeek-V3's block-scaled FP8 expert GEMMs (native on GPU,
     * emulated on CPU): e4m3 with fp32 scales per 1x128 activation and gradient tile and per
     * 128x128 weight block, with per-expert token groups padded to 128 (the row tile of FP8 grouped
     * GEMMs).
     */
    FP8("fp8", WireFormat.FP8, ExpertPrecision.FP8, 128);

    private final String flag;
    private final WireFormat wire;
    private final ExpertPrecision experts;
    private final int alignment;

    TrainingPrecision(String flag, WireFormat wire, ExpertPrecision experts, int alignment) {
        this.flag = flag;
        this.wire = wire;
        this.experts = experts;
        this.alignment = alignment;
    }

    /**
     * Returns the command-line spelling.
     *
     * @return e.g. {@code "bf16-wire"}
     */
    public String flag() {
        return flag;
    }

    /**
     * Returns the dispatch wire format.
     *
     * @return the wire format
     */
    public WireFormat wire() {
        return wire;
    }

    /**
     * Returns the expert GEMM numerics.
     *
     * @return the numerics
     */
    public ExpertPrecision experts() {
        return experts;
    }

    /**
     * Returns the padding of per-expert token counts.
     *
     * @return the alignment
     */
    public int expertAlignment() {
        return alignment;
    }

    /**
     * Parses a {@code --precision} value.
     *
     * @param s the value
     * @return the precision
     * @throws IllegalArgumentException naming the value and the accepted ones
     */
    public static TrainingPrecision parse(String s) {
        for (TrainingPrecision p : values()) {
            if (p.flag.equalsIgnoreCase(s)) {
                return p;
            }
        }
        StringJoiner names = new StringJoiner(", ");
        for (TrainingPrecision p : values()) {
            names.add(p.flag);
        }
        throw new IllegalArgumentException("--precision '" + s + "' is not one of " + names);
    }
}
