/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.util.Locale;

/**
 * The element types of the safetensors format, with the conversions to and from float32 that the
 * reader and writer use (DJL tensors here are always float32).
 */
public enum DType {
    /** IEEE float64. */
    F64(8, true),
    /** IEEE float32. */
    F32(4, true),
    /** IEEE float16. */
    F16(2, true),
    /** bfloat16: the upper 16 bits of a float32. */
    BF16(2, true),
    /** OCP FP8 E4M3 ("fn": no infinities, 0x7f/0xff are NaN, max 448). */
    F8_E4M3(1, true),
    /** OCP FP8 E5M2 (the upper byte of a float16). */
    F8_E5M2(1, true),
    /** int64. */
    I64(8, false),
    /** int32. */
    I32(4, false),
    /** int16. */
    I16(2, false),
    /** int8. */
    I8(1, false),
    /** uint8. */
    U8(1, false),
    /** bool, one byte. */
    BOOL(1, false);

    private static final float[] E4M3 = new float[256];

    static {
        for (int b = 0; b < 256; b++) {
            int sign = (b >> 7) & 1;
            int exp = (b >> 3) & 0xF;
            int man = b & 0x7;
            float v;
            if (exp == 0xF && man == 0x7) {
                v = Float.NaN;
            } else if (exp == 0) {
                v = man / 8f * (float) Math.pow(2, -6);
            } else {
                v = (1 + man / 8f) * (float) Math.pow(2, exp - 7);
            }
            E4M3[b] = sign == 1 ? -v : v;
        }
    }

    private final int size;
    private final boolean floating;

    DType(int size, boolean floating) {
        this.size = size;
        this.floating = floating;
    }

    /**
     * Returns the size of one element in bytes.
     *
     * @return bytes per element
     */
    public int size() {
        return size;
    }

    /**
     * Returns whether this is a floating-point type (readable as float32).
     *
     * @return true for F64, F32, F16, BF16 and the FP8 types
     */
    public boolean isFloating() {
        return floating;
    }

    /**
     * Parses the safetensors spelling of a dtype ({@code "F32"}, {@code "BF16"}, {@code "F8_E4M3"},
     * ...).
     *
     * @param name the name in the header
     * @return the dtype, or null if unknown
     */
    public static DType fromName(String name) {
        if (name == null) {
            return null;
        }
        try {
            return valueOf(name.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    /**
     * Widens a bfloat16 bit pattern to float32 (exact).
     *
     * @param bits the 16 bits
     * @return the value
     */
    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /**
     * Rounds a float32 to bfloat16 the way PyTorch does: to nearest, ties to even; every NaN
     * becomes the quiet NaN 0x7FC0; overflow gives infinity.
     *
     * @param f the value
     * @return the bfloat16 bits
     */
    public static short floatToBf16(float f) {
        if (Float.isNaN(f)) {
            return (short) 0x7FC0;
        }
        int bits = Float.floatToRawIntBits(f);
        int rounding = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    /**
     * Widens an IEEE float16 bit pattern to float32 (exact, subnormals and NaN included).
     *
     * @param bits the 16 bits
     * @return the value
     */
    public static float halfToFloat(short bits) {
        int h = bits & 0xFFFF;
        int sign = (h >>> 15) << 31;
        int exp = (h >>> 10) & 0x1F;
        int man = h & 0x3FF;
        if (exp == 0x1F) {
            return Float.intBitsToFloat(sign | 0x7F800000 | (man << 13));
        }
        if (exp == 0) {
            float v = man * 0x1p-24f;
            return sign != 0 ? -v : v;
        }
        return Float.intBitsToFloat(sign | ((exp - 15 + 127) << 23) | (man << 13));
    }

    /**
     * Widens an FP8 E4M3 ("fn") byte to float32 (exact).
     *
     * @param b the byte
     * @return the value
     */
    public static float e4m3ToFloat(byte b) {
        return E4M3[b & 0xFF];
    }

    /**
     * Widens an FP8 E5M2 byte to float32 (exact).
     *
     * @param b the byte
     * @return the value
     */
    public static float e5m2ToFloat(byte b) {
        return halfToFloat((short) ((b & 0xFF) << 8));
    }
}
