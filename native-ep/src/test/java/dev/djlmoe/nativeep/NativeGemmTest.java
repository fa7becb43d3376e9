/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.junit.jupiter.api.Test;

/**
 * The binding of the grouped FP8 GEMMs' CPU entry points: sizes, the K-grouped padding, a GEMM
 * whose quantised inputs are exact (so its result is known by hand), and a refused argument's
 * message.
 */
class NativeGemmTest {

    private static final int FP8 = NativeGemm.NEP_GEMM_FP8_BLOCK;
    private static final int MX = NativeGemm.NEP_GEMM_MXFP8;

    @Test
    void sizesFollowTheHeader() {
        assertTrue(NativeGemm.nep_gemm_abi_version() >= 1);
        assertEquals(8, NativeGemm.nep_gemm_row_scale_bytes(FP8, 130)); // 2 fp32 tiles
        assertEquals(5, NativeGemm.nep_gemm_row_scale_bytes(MX, 130)); // 5 E8M0 bytes
        assertEquals(-1, NativeGemm.nep_gemm_row_scale_bytes(7, 130));
        // [2, 200, 130]: 2 x 2 x 2 blocks of 4 bytes; MXFP8 transposed: 2 x 130 x ceil(200/32)
        assertEquals(32, NativeGemm.nep_gemm_weight_scale_bytes(FP8, 2, 200, 130, 0));
        assertEquals(2 * 130 * 7, NativeGemm.nep_gemm_weight_scale_bytes(MX, 2, 200, 130, 1));
    }

    @Test
    void paddedRowsRoundEachGroupUpToTheTokenTile() {
        long[] mp = new long[1];
        long[] p = new long[4];
        try (BytePointer err = new BytePointer(512)) {
            int s =
                    NativeGemm.nep_gemm_padded_rows(
                            3, new long[] {0, 1, 1, 130}, mp, p, err, err.capacity());
            assertEquals(NativeEp.NEP_OK, s);
        }
        assertEquals(128 + 0 + 256, mp[0]);
        assertArrayEquals(new long[] {0, 128, 128, 384}, p);
    }

    @Test
    void aGemmOfExactlyRepresentableInputsGivesTheHandResult() {
        // x = [1, 2] and w = [4, 0.5] are e4m3 values times their scales exactly
        try (FloatPointer x = new FloatPointer(1f, 2f);
                FloatPointer w = new FloatPointer(4f, 0.5f);
                BytePointer qx = new BytePointer(2);
                BytePointer sx = new BytePointer(4);
                BytePointer qw = new BytePointer(2);
                BytePointer sw = new BytePointer(4);
                FloatPointer c = new FloatPointer(1);
                BytePointer err = new BytePointer(512)) {
            long cap = err.capacity();
            assertEquals(
                    0,
                    NativeGemm.nep_gemm_quantize_rows(
                            FP8, x.address(), 1, 2, qx.address(), sx.address(), err, cap));
            assertEquals(
                    0,
                    NativeGemm.nep_gemm_quantize_weights(
                            FP8, w.address(), 1, 1, 2, 0, qw.address(), sw.address(), err, cap));
            assertEquals(
                    0,
                    NativeGemm.nep_gemm_grouped_m(
                            FP8,
                            1,
                            1,
                            2,
                            1,
                            new long[] {0, 1},
                            qx.address(),
                            0,
                            sx.address(),
                            0,
                            qw.address(),
                            sw.address(),
                            c.address(),
                            NativeGemm.NEP_GEMM_OUT_FP32,
                            err,
                            cap));
            assertEquals(5.0, c.get(0), 1e-6);
        }
    }

    /** The NUL-terminated message. */
    static String text(BytePointer err) {
        int n = 0;
        while (n < err.capacity() && err.get(n) != 0) {
            n++;
        }
        byte[] b = new byte[n];
        err.get(b, 0, n);
        return new String(b, StandardCharsets.UTF_8);
    }

    @Test
    void aRefusedArgumentIsNamedInTheMessage() {
        try (BytePointer err = new BytePointer(512)) {
            int s = NativeGemm.nep_gemm_quantize_rows(9, 0, 1, 2, 0, 0, err, err.capacity());
            assertEquals(NativeEp.NEP_ERR_INVALID_ARGUMENT, s);
            String m = text(err);
            assertTrue(m.contains("format"), m);
        }
    }
}
