/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

/**
 * How rows travel between ranks during dispatch and combine.
 *
 * <p>DJL tensors stay float32 on both ends; the wire format only decides the bytes moved and the
 * rounding applied in transit. Combine always accumulates in fp32 at the receiver.
 */
public enum WireFormat {
    /** 4 bytes per channel, exact. */
    FP32(0, 1),
    /** bfloat16, 2 bytes per channel, round to nearest even. */
    BF16(1, 1),
    /** FP8 e4m3 with one fp32 scale per 128 channels ({@code scale = amax / 448}). */
    FP8(2, 128),
    /** MXFP8 (OCP MX v1.0): e4m3 elements with one E8M0 power-of-two scale per 32 channels. */
    MXFP8(3, 32);

    private final int code;
    private final int blockSize;

    WireFormat(int code, int blockSize) {
        this.code = code;
        this.blockSize = blockSize;
    }

    /**
     * Returns the code the native library uses for this format.
     *
     * @return the native code
     */
    public int code() {
        return code;
    }

    /**
     * Returns the number of channels that share one scale (1 for unscaled formats).
     *
     * @return the scaling block size
     */
    public int blockSize() {
        return blockSize;
    }

    /**
     * Parses a format name such as {@code "bf16"} or {@code "mxfp8"} (case-insensitive).
     *
     * @param name the name
     * @return the format
     * @throws IllegalArgumentException naming the value and the accepted names
     */
    public static WireFormat fromName(String name) {
        for (WireFormat f : values()) {
            if (f.name().equalsIgnoreCase(name)) {
                return f;
            }
        }
        throw new IllegalArgumentException(
                "wire format '" + name + "' is not one of fp32, bf16, fp8, mxfp8");
    }
}
