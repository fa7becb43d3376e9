/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import java.util.Arrays;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The GPU twin of {@link WireRowsTest} at W = 1: the same inputs (uneven routing, -1 slots, a hot
 * expert; a rank with no tokens) dispatched into wire rows by the CUDA plug-in and by the CPU
 * engine. Each GPU row holds the CPU codec's bytes (elements at [0, H), scales at roundup(H, 16);
 * the padding is not compared), decoding the GPU rows on the GPU gives the GPU float dispatch bit
 * for bit, the top-k, weights and counts agree, and a cached wire dispatch does the same; BF16 is
 * refused by name. Skipped without a GPU; {@code bin/gpu-java-tests} runs it.
 */
class WireRowsGpuTest extends EpBufferGpuFixture {

    private static final int E = 16;
    private static final int K = 4;

    @ParameterizedTest
    @EnumSource(
            value = WireFormat.class,
            names = {"FP8", "MXFP8"})
    void gpuWireRowsHoldTheCodecBytesAndDecodeToTheFloatDispatch(WireFormat wire) {
        for (int tokens : new int[] {301, 0}) {
            for (int hidden : new int[] {512, 384}) {
                check(wire, tokens, hidden);
            }
        }
    }

    private static void check(WireFormat wire, int tokens, int hidden) {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            RoutingData d = new RoutingData(40 + tokens + hidden, tokens, K, E, 0.2, 5);
            float[] x = RoutingData.randomRows(41 + hidden, tokens, hidden, 2f);
            float[] x2 = RoutingData.randomRows(42 + hidden, tokens, hidden, 0.01f);
            NDArray xCpu = c.create(x, new Shape(tokens, hidden));
            NDArray xGpu = g.create(x, new Shape(tokens, hidden));
            NDArray x2Gpu = g.create(x2, new Shape(tokens, hidden));
            NDArray idxGpu = g.create(d.idx, new Shape(tokens, K));
            NDArray wGpu = g.create(d.weights, new Shape(tokens, K));
            NDArray idxCpu = c.create(d.idx, new Shape(tokens, K));
            NDArray wCpu = c.create(d.weights, new Shape(tokens, K));
            WireDispatch cpu = buffer.dispatchWire(xCpu, idxCpu, wCpu, E, 32, wire);
            WireDispatch gpu = buffer.dispatchWire(xGpu, idxGpu, wGpu, E, 32, wire);
            DispatchResult gpuFloat = buffer.dispatch(xGpu, idxGpu, wGpu, E, 32, wire);
            try (EpHandle hc = cpu.handle();
                    EpHandle hg = gpu.handle();
                    EpHandle hf = gpuFloat.handle()) {
                String what = wire + " T " + tokens + " H " + hidden;
                WireRows rows = gpu.recv();
                assertTrue(rows.rows().getDevice().isGpu(), what + ": rows on the GPU");
                assertEquals(DataType.UINT8, rows.rows().getDataType());
                assertEquals((hidden + 15) / 16 * 16, rows.scaleOffset(), what);
                assertEquals(0, rows.rowBytes() % 16, what + ": rows padded to 16 bytes");
                sameWireBytes(what, cpu.recv(), rows);
                assertArrayEquals(
                        cpu.recvTopkIdx().toLongArray(), gpu.recvTopkIdx().toLongArray(), what);
                assertArrayEquals(
                        bits(cpu.recvTopkWeights().toFloatArray()),
                        bits(gpu.recvTopkWeights().toFloatArray()),
                        what);
                assertArrayEquals(cpu.recvTokensPerExpert(), gpu.recvTokensPerExpert(), what);
                try (NDArray decoded = rows.decode()) {
                    assertEquals(Device.gpu(0), decoded.getDevice());
                    assertArrayEquals(
                            bits(gpuFloat.recvX().toFloatArray()),
                            bits(decoded.toFloatArray()),
                            what + ": decoded GPU wire rows against the GPU float dispatch");
                }
                WireRows cached = buffer.dispatchWire(x2Gpu, hg, wire);
                NDArray cachedFloat = buffer.dispatch(x2Gpu, hf, wire);
                try (NDArray decoded = cached.decode()) {
                    assertArrayEquals(
                            bits(cachedFloat.toFloatArray()),
                            bits(decoded.toFloatArray()),
                            what + ": cached");
                }
                assertThrows(
                        IllegalArgumentException.class,
                        () -> buffer.dispatchWire(xGpu, hg, WireFormat.BF16));
            }
        }
    }

    /** Elements and scales of each GPU row equal the CPU engine's packed row. */
    private static void sameWireBytes(String what, WireRows cpu, WireRows gpu) {
        long rows = cpu.numRows();
        assertEquals(rows, gpu.numRows(), what + ": rows");
        byte[] c = cpu.rows().toByteArray();
        byte[] g = gpu.rows().toByteArray();
        int h = (int) cpu.hidden();
        int scaleBytes = (int) (cpu.rowBytes() - h);
        int crb = (int) cpu.rowBytes();
        int grb = (int) gpu.rowBytes();
        int gso = (int) gpu.scaleOffset();
        for (int r = 0; r < rows; r++) {
            assertArrayEquals(
                    Arrays.copyOfRange(c, r * crb, r * crb + h),
                    Arrays.copyOfRange(g, r * grb, r * grb + h),
                    what + ": elements of row " + r);
            assertArrayEquals(
                    Arrays.copyOfRange(c, r * crb + h, r * crb + h + scaleBytes),
                    Arrays.copyOfRange(g, r * grb + gso, r * grb + gso + scaleBytes),
                    what + ": scales of row " + r);
        }
    }

    private static int[] bits(float[] v) {
        return WireRowsCheck.bits(v);
    }
}
