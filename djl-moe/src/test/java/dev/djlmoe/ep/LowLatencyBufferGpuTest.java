/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * One {@link LowLatencyBuffer} at W = 1 with both backends: the same inputs (uneven routing, {@code
 * -1} slots, a hot expert) dispatched and combined as CPU arrays (CPU engine) and as GPU arrays
 * (CUDA plug-in) on every wire. Received rows, counts, source tokens and ranges must be the same
 * bits; the combined sums agree to float32 rounding (the two engines may contract the weighted sum
 * differently). Then the hook on a GPU and the named errors of mixed devices. Skipped without a
 * GPU.
 */
class LowLatencyBufferGpuTest extends CpuGpuFixture {

    private static final int TM = 64;
    private static final int H = 512;
    private static final int E = 16;
    private static final int K = 4;

    private static LowLatencyBuffer buffer;

    @BeforeAll
    static void setUp() {
        if (group != null) {
            buffer = LowLatencyBuffer.create(group, TM, H, E, K, WireFormat.FP32, 30_000);
        }
    }

    @AfterAll
    static void tearDown() {
        if (buffer != null) {
            buffer.close();
            buffer = null;
        }
    }

    @ParameterizedTest
    @EnumSource(WireFormat.class)
    void dispatchAndCombineOnTheGpuEqualTheCpuEngine(WireFormat wire) {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            int tokens = 50;
            RoutingData d = new RoutingData(700 + wire.ordinal(), tokens, K, E, 0.2, 3);
            float[] x = RoutingData.randomRows(710 + wire.ordinal(), tokens, H, 2f);
            NDArray idxC = c.create(d.idx, new Shape(tokens, K));
            NDArray idxG = g.create(d.idx, new Shape(tokens, K));
            NDArray wC = c.create(d.weights, new Shape(tokens, K));
            NDArray wG = g.create(d.weights, new Shape(tokens, K));
            LowLatencyDispatch dc =
                    buffer.dispatch(c.create(x, new Shape(tokens, H)), idxC, wire, false);
            LowLatencyDispatch dg =
                    buffer.dispatch(g.create(x, new Shape(tokens, H)), idxG, wire, false);
            try (LowLatencyHandle hc = dc.handle();
                    LowLatencyHandle hg = dg.handle()) {
                assertEquals(Device.gpu(0), buffer.cudaDevice());
                assertEquals(Device.gpu(0), dg.recvX().getDevice());
                assertEquals(Device.gpu(0), hg.device());
                int[] counts = dc.recvCount().toIntArray();
                assertArrayEquals(counts, dg.recvCount().toIntArray());
                assertArrayEquals(counts, hg.recvCount());
                assertArrayEquals(hc.srcInfo(), hg.srcInfo());
                assertArrayEquals(hc.layoutRange(), hg.layoutRange());
                assertEquals(hc.numTokens(), hg.numTokens());
                assertEquals(hc.numTopk(), hg.numTopk());
                float[] rc = dc.recvX().toFloatArray();
                float[] rg = dg.recvX().toFloatArray();
                long rows = (long) TM * buffer.worldSize();
                for (int e = 0; e < counts.length; e++) {
                    for (long r = 0; r < counts[e]; r++) {
                        int at = (int) ((e * rows + r) * H);
                        for (int ch = 0; ch < H; ch++) {
                            if (Float.floatToRawIntBits(rc[at + ch])
                                    != Float.floatToRawIntBits(rg[at + ch])) {
                                fail(
                                        wire
                                                + ": recv_x of local expert "
                                                + e
                                                + ", row "
                                                + r
                                                + ", channel "
                                                + ch
                                                + ": CPU "
                                                + rc[at + ch]
                                                + ", GPU "
                                                + rg[at + ch]);
                            }
                        }
                    }
                }
                // The same y on both (rows past the counts are not read).
                float[] y = new float[rc.length];
                for (int i = 0; i < y.length; i++) {
                    y[i] = Float.isFinite(rc[i]) ? rc[i] * 0.5f + 0.25f : 0f;
                }
                Shape ys = new Shape(counts.length, rows, H);
                NDArray outC = buffer.combine(c.create(y, ys), idxC, wC, hc, wire);
                NDArray outG = buffer.combine(g.create(y, ys), idxG, wG, hg, wire);
                assertEquals(Device.gpu(0), outG.getDevice());
                close(wire + " combine", outC.toFloatArray(), outG.toFloatArray());
                buffer.synchronize();
            }
        }
    }

    @Test
    void theHookOfAGpuSendReturnsAtOnce() {
        try (NDManager g = gpuManager.newSubManager()) {
            int tokens = 9;
            RoutingData d = new RoutingData(720, tokens, K, E, 0.1, -1);
            NDArray idx = g.create(d.idx, new Shape(tokens, K));
            NDArray w = g.create(d.weights, new Shape(tokens, K));
            NDArray x = g.create(RoutingData.randomRows(721, tokens, H, 1f), new Shape(tokens, H));
            try (LowLatencyHook<LowLatencyDispatch> hook =
                    buffer.dispatchSend(x, idx, WireFormat.BF16, false)) {
                assertTrue(hook.isReady());
                assertEquals(-1, hook.rowsSent());
                assertEquals(-1, hook.bytesSent());
                LowLatencyDispatch r = hook.await();
                assertTrue(hook.isDone());
                try (LowLatencyHandle h = r.handle();
                        LowLatencyHook<NDArray> c =
                                buffer.combineSend(r.recvX(), idx, w, h, WireFormat.BF16)) {
                    assertTrue(c.callIndex() > hook.callIndex());
                    NDArray out = c.await();
                    assertEquals(new Shape(tokens, H), out.getShape());
                    buffer.synchronize();
                }
            }
            // An abandoned send releases its half: later calls still work.
            buffer.dispatchSend(x, idx, WireFormat.BF16, false).close();
            try (LowLatencyHandle h = buffer.dispatch(x, idx, WireFormat.BF16, false).handle()) {
                assertEquals(tokens, h.numTokens());
            }
        }
    }

    @Test
    void mixedDevicesAreNamedErrors() {
        try (NDManager c = cpuManager.newSubManager();
                NDManager g = gpuManager.newSubManager()) {
            int tokens = 6;
            RoutingData d = new RoutingData(730, tokens, K, E, 0.1, -1);
            NDArray idxC = c.create(d.idx, new Shape(tokens, K));
            NDArray idxG = g.create(d.idx, new Shape(tokens, K));
            NDArray wG = g.create(d.weights, new Shape(tokens, K));
            NDArray xG = g.create(RoutingData.randomRows(731, tokens, H, 1f), new Shape(tokens, H));
            assertMessage(
                    () -> buffer.dispatchSend(xG, idxC, WireFormat.BF16, false),
                    "'topk_idx'",
                    "cpu()",
                    "'x'",
                    "gpu(0)");
            LowLatencyDispatch r = buffer.dispatch(xG, idxG, WireFormat.BF16, false);
            try (LowLatencyHandle h = r.handle()) {
                NDArray yC = c.zeros(r.recvX().getShape());
                assertMessage(
                        () -> buffer.combineSend(yC, idxG, wG, h, WireFormat.BF16),
                        "'y'",
                        "cpu()",
                        "gpu(0)");
                assertMessage(
                        () -> buffer.combineSend(r.recvX(), idxC, wG, h, WireFormat.BF16),
                        "'topk_idx'",
                        "cpu()",
                        "gpu(0)");
                NDArray out = buffer.combine(r.recvX(), idxG, wG, h, WireFormat.BF16);
                assertEquals(Device.gpu(0), out.getDevice());
            }
        }
    }

    /** Agreement to float32 rounding of a sum of K weighted terms. */
    private static void close(String what, float[] expected, float[] actual) {
        assertEquals(expected.length, actual.length, what + ": length");
        for (int i = 0; i < expected.length; i++) {
            double tol = 1e-5 * Math.max(1.0, Math.abs(expected[i]));
            if (!(Math.abs(expected[i] - actual[i]) <= tol)) {
                fail(what + ": element " + i + ": CPU " + expected[i] + ", GPU " + actual[i]);
            }
        }
    }

    private static void assertMessage(Executable call, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message '" + e.getMessage() + "' lacks " + p);
        }
    }
}
