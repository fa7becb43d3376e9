/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import dev.djlmoe.nativeep.cuda.CudaEpException;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Dispatch into wire rows on the CPU engine ({@link EpBuffer#dispatchWire}): the received bytes are
 * the codec's encoding of the source rows and decode to the float dispatch bit for bit, with one
 * rank (loopback) and two processes (cpu-shm); bad input is refused with named exceptions.
 */
class WireRowsTest {

    @Test
    void oneRankMatchesTheCodecAndTheFloatDispatch() {
        try (NDManager manager = NDManager.newBaseManager(Device.cpu());
                LocalProcessGroup group = new LocalProcessGroup();
                EpBuffer buffer = EpBuffer.create(group)) {
            assertTrue(WireRowsCheck.run(group, manager, buffer) > 0);
        }
    }

    @Test
    void twoRanksMatchTheCodecAndTheFloatDispatch() {
        OracleRun.assertEveryRankPrints(
                WireRowsCheck.class,
                2,
                List.of(
                        "ok FP8 hidden 256",
                        "ok FP8 hidden 200",
                        "ok MXFP8 hidden 256",
                        "ok MXFP8 hidden 200",
                        "wire rows: OK"));
    }

    @ParameterizedTest
    @EnumSource(
            value = WireFormat.class,
            names = {"FP32", "BF16"})
    void unscaledWiresAreRefusedBeforeAnythingIsSent(WireFormat wire) {
        try (NDManager m = NDManager.newBaseManager(Device.cpu());
                LocalProcessGroup group = new LocalProcessGroup();
                EpBuffer buffer = EpBuffer.create(group)) {
            NDArray x = m.ones(new Shape(3, 64));
            NDArray idx = m.create(new long[] {0, 1, -1, 2, 3, 0}, new Shape(3, 2));
            IllegalArgumentException e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> buffer.dispatchWire(x, idx, null, 4, 1, wire));
            assertEquals(
                    "argument 'wire' = "
                            + wire
                            + " has no wire-row form: only FP8 and MXFP8 rows are kept as they"
                            + " arrive",
                    e.getMessage());
            assertEquals(0, buffer.stats().dispatchCalls(), "nothing was sent");
            try (EpHandle h = buffer.notify(idx, 4, 1)) {
                assertThrows(IllegalArgumentException.class, () -> buffer.dispatchWire(x, h, wire));
            }
        }
    }

    /**
     * The CUDA plug-in's wire-row entry points check their arguments on the host, before any GPU
     * work: without a GPU the refusals come back as named errors all the same (with the CPU-only
     * stand-in library, every call reports that the plug-in is not built in).
     */
    @Test
    void cudaWireRowEntryPointsRefuseBadArgumentsByName() {
        long a = 4096;
        RuntimeException wire =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaEpBuffer.decodeWireRows(0, 1, a, 4, 256, 512, a, 0));
        RuntimeException size =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaEpBuffer.decodeWireRows(0, 2, a, 4, 256, 260, a, 0));
        RuntimeException hidden =
                assertThrows(
                        RuntimeException.class,
                        () -> CudaEpBuffer.decodeWireRows(0, 3, a, 4, 204, 224, a, 0));
        if (wire instanceof CudaEpException u && u.status() == NativeEp.NEP_ERR_UNSUPPORTED) {
            return; // the stand-in plug-in of a build without nvcc
        }
        // NEP_ERR_INVALID_ARGUMENT comes back as IllegalArgumentException.
        assertTrue(wire instanceof IllegalArgumentException, wire.toString());
        assertTrue(size instanceof IllegalArgumentException, size.toString());
        assertTrue(hidden instanceof IllegalArgumentException, hidden.toString());
        assertTrue(
                wire.getMessage().contains("wire=1 has no wire rows to decode"), wire.getMessage());
        assertTrue(
                size.getMessage()
                        .contains(
                                "row_bytes=260 must equal the GPU wire row size of hidden=256,"
                                        + " 272"),
                size.getMessage());
        assertTrue(
                hidden.getMessage().contains("hidden=204 must be a positive multiple of 8"),
                hidden.getMessage());
    }

    @Test
    void wireRowsRefuseAWrongDtypeOrShape() {
        try (NDManager m = NDManager.newBaseManager(Device.cpu())) {
            NDArray f = m.zeros(new Shape(2, 68), DataType.FLOAT32);
            IllegalArgumentException dtype =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> WireRows.packed(f, WireFormat.FP8, 64));
            assertEquals("argument 'rows' must be uint8, got float32", dtype.getMessage());
            NDArray b = m.zeros(new Shape(2, 64), DataType.UINT8);
            IllegalArgumentException shape =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> WireRows.packed(b, WireFormat.FP8, 64));
            assertEquals(
                    "argument 'rows' must have shape [R, 68], got (2, 64)", shape.getMessage());
            IllegalArgumentException wire =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> WireRows.packed(b, WireFormat.BF16, 32));
            assertTrue(wire.getMessage().contains("BF16 has no wire-row form"), wire.getMessage());
            IllegalArgumentException scales =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> new WireRows(b, WireFormat.MXFP8, 64, 64, 64));
            assertEquals(
                    "argument 'rowBytes' = 64 cannot hold the 2 scale bytes from scaleOffset = 64",
                    scales.getMessage());
            NDArray padded = m.zeros(new Shape(2, 96), DataType.UINT8);
            WireRows gpuLayout = new WireRows(padded, WireFormat.FP8, 64, 96, 80);
            IllegalArgumentException unpacked =
                    assertThrows(IllegalArgumentException.class, gpuLayout::decode);
            assertTrue(unpacked.getMessage().contains("packed layout"), unpacked.getMessage());
        }
    }
}
