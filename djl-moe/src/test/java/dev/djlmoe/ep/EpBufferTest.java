/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.nativeep.NativeEp;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The EP buffer on one rank (loopback transport) against a plain Java oracle: layout counts, order
 * and provenance of received rows, local ids, zeroed weights, per-expert counts with alignment,
 * combine sums, cached dispatch, wire-format precision and argument checks.
 */
class EpBufferTest {

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpBuffer buffer;

    @BeforeAll
    static void setUp() {
        // CPU arrays on every host: this is the CPU engine's test (on a GPU host DJL's default
        // device is the GPU, whose backend EpBufferGpuTest compares with this one).
        manager = NDManager.newBaseManager(Device.cpu());
        group = new LocalProcessGroup();
        buffer = EpBuffer.create(group);
    }

    @AfterAll
    static void tearDown() {
        buffer.close();
        group.close();
        manager.close();
    }

    private static NDArray idxArray(NDManager m, RoutingData d) {
        return m.create(d.idx, new Shape(d.tokens, d.topk));
    }

    private static NDArray wArray(NDManager m, RoutingData d) {
        return m.create(d.weights, new Shape(d.tokens, d.topk));
    }

    @Test
    void layoutMatchesOracle() {
        try (NDManager m = manager.newSubManager()) {
            RoutingData d = new RoutingData(1, 97, 4, 16, 0.2, 3);
            EpLayout l = buffer.layout(idxArray(m, d), 16);
            int[] recv = d.receivedTokens();
            assertArrayEquals(new int[] {recv.length}, l.tokensPerRank().toIntArray());
            assertArrayEquals(d.tokensPerExpert(), l.tokensPerExpert().toIntArray());
            boolean[] inRank = l.isTokenInRank().toBooleanArray();
            assertEquals(d.tokens, inRank.length);
            int n = 0;
            for (int t = 0; t < d.tokens; t++) {
                boolean any = false;
                for (int k = 0; k < d.topk; k++) {
                    any |= d.idx[t * d.topk + k] >= 0;
                }
                assertEquals(any, inRank[t], "token " + t);
                n += any ? 1 : 0;
            }
            assertEquals(recv.length, n);
        }
    }

    @Test
    void dispatchDeliversRowsInOrderWithLocalIdsAndWeights() {
        try (NDManager m = manager.newSubManager()) {
            int h = 48;
            RoutingData d = new RoutingData(2, 61, 3, 8, 0.3, 5);
            float[] x = RoutingData.randomRows(3, d.tokens, h, 1f);
            DispatchResult r =
                    buffer.dispatch(
                            m.create(x, new Shape(d.tokens, h)),
                            idxArray(m, d),
                            wArray(m, d),
                            8,
                            1,
                            WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                int[] recv = d.receivedTokens();
                assertEquals(recv.length, handle.numRecv());
                assertArrayEquals(recv, handle.recvSrcIdx());
                assertArrayEquals(new int[][] {{recv.length}}, handle.rankPrefixMatrix());
                float[] rx = r.recvX().toFloatArray();
                long[] ri = r.recvTopkIdx().toLongArray();
                float[] rw = r.recvTopkWeights().toFloatArray();
                for (int i = 0; i < recv.length; i++) {
                    int t = recv[i];
                    for (int c = 0; c < h; c++) {
                        assertEquals(x[t * h + c], rx[i * h + c], "row " + i + " channel " + c);
                    }
                    for (int k = 0; k < d.topk; k++) {
                        long e = d.idx[t * d.topk + k];
                        assertEquals(e, ri[i * d.topk + k]);
                        assertEquals(e >= 0 ? d.weights[t * d.topk + k] : 0f, rw[i * d.topk + k]);
                    }
                }
                assertArrayEquals(d.tokensPerExpert(), r.recvTokensPerExpert());
            }
        }
    }

    @Test
    void deviceTimingIsReadFromTheEnvironmentAndNamedWhenBad() {
        assertFalse(EpBuffer.deviceTiming(java.util.Map.of()));
        assertFalse(EpBuffer.deviceTiming(java.util.Map.of(EpBuffer.TIMING_ENV, "")));
        assertFalse(EpBuffer.deviceTiming(java.util.Map.of(EpBuffer.TIMING_ENV, "host")));
        assertTrue(EpBuffer.deviceTiming(java.util.Map.of(EpBuffer.TIMING_ENV, " Device ")));
        assertMessage(
                () -> EpBuffer.deviceTiming(java.util.Map.of(EpBuffer.TIMING_ENV, "cuda-events")),
                EpBuffer.TIMING_ENV,
                "cuda-events",
                "host, device");
    }

    @Test
    void gpuAllReduceChoiceIsReadFromTheEnvironmentAndNamedWhenBad() {
        assertEquals(EpBuffer.GpuAllReduce.AUTO, EpBuffer.gpuAllReduce(java.util.Map.of()));
        assertEquals(
                EpBuffer.GpuAllReduce.NCCL,
                EpBuffer.gpuAllReduce(java.util.Map.of(EpBuffer.GPU_ALL_REDUCE_ENV, " NCCL")));
        assertEquals(
                EpBuffer.GpuAllReduce.HOST,
                EpBuffer.gpuAllReduce(java.util.Map.of(EpBuffer.GPU_ALL_REDUCE_ENV, "host")));
        assertMessage(
                () -> EpBuffer.gpuAllReduce(java.util.Map.of(EpBuffer.GPU_ALL_REDUCE_ENV, "mpi")),
                EpBuffer.GPU_ALL_REDUCE_ENV,
                "mpi",
                "auto, nccl, host");
    }

    @Test
    void allReduceSumOfOneRankLeavesTheArrayAndRefusesNull() {
        try (NDManager m = manager.newSubManager()) {
            NDArray a = m.create(new float[] {1f, -2f, 3.5f});
            buffer.allReduceSum(a);
            assertArrayEquals(new float[] {1f, -2f, 3.5f}, a.toFloatArray());
            assertMessage(() -> buffer.allReduceSum(null), "array", "null");
            assertEquals(null, buffer.gpuAllReducePath());
        }
    }

    @Test
    void deviceTimingStillCountsCallsAndBytesOnTheCpu() {
        try (EpBuffer timed = EpBuffer.builder().setGroup(group).optDeviceTiming(true).build();
                NDManager m = manager.newSubManager()) {
            assertTrue(timed.deviceTiming());
            RoutingData d = new RoutingData(2, 40, 2, 8, 0.1, 7);
            NDArray x =
                    m.create(RoutingData.randomRows(9, d.tokens, 32, 1f), new Shape(d.tokens, 32));
            DispatchResult r = timed.dispatch(x, idxArray(m, d), null, 8, 1, WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                timed.combine(r.recvX(), null, handle, WireFormat.FP32);
            }
            EpStats s = timed.stats();
            assertEquals(2, s.dispatchCalls()); // notify, then data
            assertEquals(1, s.combineCalls());
            assertTrue(s.dispatchBytes() > 0 && s.combineBytes() > 0);
            assertTrue(s.totalNanos() > 0);
        }
    }

    @Test
    void alignmentPadsPerExpertCounts() {
        try (NDManager m = manager.newSubManager()) {
            RoutingData d = new RoutingData(4, 50, 2, 4, 0.1, -1);
            NDArray x = m.zeros(new Shape(d.tokens, 32));
            DispatchResult r = buffer.dispatch(x, idxArray(m, d), null, 4, 32, WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                int[] raw = d.tokensPerExpert();
                int[] aligned = r.recvTokensPerExpert();
                assertArrayEquals(raw, handle.recvTokensPerExpert(false));
                for (int e = 0; e < raw.length; e++) {
                    assertEquals((raw[e] + 31) / 32 * 32, aligned[e], "expert " + e);
                }
            }
        }
    }

    @Test
    void combineSumsRowsBackAndRoundTripsWeights() {
        try (NDManager m = manager.newSubManager()) {
            int h = 40;
            RoutingData d = new RoutingData(5, 33, 4, 16, 0.35, -1);
            NDArray x =
                    m.create(RoutingData.randomRows(6, d.tokens, h, 1f), new Shape(d.tokens, h));
            DispatchResult r =
                    buffer.dispatch(x, idxArray(m, d), wArray(m, d), 16, 1, WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                NDArray y = r.recvX().mul(3f);
                CombineResult c = buffer.combine(y, r.recvTopkWeights(), handle, WireFormat.FP32);
                float[] out = c.out().toFloatArray();
                float[] xs = x.toFloatArray();
                float[] w = c.outWeights().toFloatArray();
                boolean[] sent = new boolean[d.tokens];
                for (int t : d.receivedTokens()) {
                    sent[t] = true;
                }
                for (int t = 0; t < d.tokens; t++) {
                    for (int ch = 0; ch < h; ch++) {
                        float expect = sent[t] ? xs[t * h + ch] * 3f : 0f;
                        assertEquals(expect, out[t * h + ch], "token " + t + " channel " + ch);
                    }
                    for (int k = 0; k < d.topk; k++) {
                        float expect = d.idx[t * d.topk + k] >= 0 ? d.weights[t * d.topk + k] : 0f;
                        assertEquals(expect, w[t * d.topk + k], "weight " + t + "," + k);
                    }
                }
            }
        }
    }

    @Test
    void cachedDispatchEqualsFreshDispatch() {
        try (NDManager m = manager.newSubManager()) {
            int h = 64;
            RoutingData d = new RoutingData(7, 45, 3, 8, 0.2, 1);
            NDArray x1 =
                    m.create(RoutingData.randomRows(8, d.tokens, h, 1f), new Shape(d.tokens, h));
            NDArray x2 =
                    m.create(RoutingData.randomRows(9, d.tokens, h, 2f), new Shape(d.tokens, h));
            DispatchResult r = buffer.dispatch(x1, idxArray(m, d), null, 8, 1, WireFormat.BF16);
            try (EpHandle handle = r.handle()) {
                NDArray cached = buffer.dispatch(x2, handle, WireFormat.BF16);
                DispatchResult fresh =
                        buffer.dispatch(x2, idxArray(m, d), null, 8, 1, WireFormat.BF16);
                try (EpHandle h2 = fresh.handle()) {
                    assertArrayEquals(fresh.recvX().toFloatArray(), cached.toFloatArray());
                }
            }
        }
    }

    @Test
    void bf16WireIsExactForBf16Values() {
        try (NDManager m = manager.newSubManager()) {
            int h = 96;
            RoutingData d = new RoutingData(10, 29, 2, 4, 0.1, -1);
            float[] x = RoutingData.bf16ExactRows(11, d.tokens, h);
            DispatchResult r =
                    buffer.dispatch(
                            m.create(x, new Shape(d.tokens, h)),
                            idxArray(m, d),
                            null,
                            4,
                            1,
                            WireFormat.BF16);
            try (EpHandle handle = r.handle()) {
                float[] rx = r.recvX().toFloatArray();
                int[] recv = d.receivedTokens();
                for (int i = 0; i < recv.length; i++) {
                    for (int c = 0; c < h; c++) {
                        assertEquals(x[recv[i] * h + c], rx[i * h + c]);
                    }
                }
                CombineResult c = buffer.combine(r.recvX(), null, handle, WireFormat.BF16);
                float[] out = c.out().toFloatArray();
                for (int t : recv) {
                    for (int ch = 0; ch < h; ch++) {
                        assertEquals(x[t * h + ch], out[t * h + ch]);
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(WireFormat.class)
    void wireFormatsStayWithinTheirErrorBound(WireFormat wire) {
        // Per element: bf16 half-ulp 2^-8; e4m3 half-ulp 2^-4. MXFP8's floor scale rule lets the
        // top of a block (|x| in (448, 512) x scale) clip at 448, up to 1/8 relative.
        double bound =
                switch (wire) {
                    case FP32 -> 0.0;
                    case BF16 -> 1.0 / 256;
                    case FP8 -> 1.0 / 16;
                    case MXFP8 -> 1.0 / 8;
                };
        double rmsBound = wire == WireFormat.MXFP8 ? 1.0 / 16 : bound;
        try (NDManager m = manager.newSubManager()) {
            int h = 256;
            RoutingData d = new RoutingData(12, 40, 2, 4, 0.0, -1);
            float[] x = RoutingData.randomRows(13, d.tokens, h, 3f);
            DispatchResult r =
                    buffer.dispatch(
                            m.create(x, new Shape(d.tokens, h)), idxArray(m, d), null, 4, 1, wire);
            try (EpHandle handle = r.handle()) {
                float[] rx = r.recvX().toFloatArray();
                double num = 0;
                double den = 0;
                double worstRel = 0;
                for (int i = 0; i < rx.length; i++) {
                    double e = (double) rx[i] - x[i];
                    num += e * e;
                    den += (double) x[i] * x[i];
                    if (Math.abs(x[i]) > 0.5) {
                        worstRel = Math.max(worstRel, Math.abs(e) / Math.abs(x[i]));
                    }
                }
                assertTrue(worstRel <= bound + 1e-12, wire + ": worst relative error " + worstRel);
                double rel = Math.sqrt(num / den);
                assertTrue(rel <= rmsBound, wire + ": relative L2 error " + rel);
                if (wire != WireFormat.FP32) {
                    assertTrue(rel > 0, wire + " should round random data");
                }
            }
        }
    }

    @Test
    void zeroTokensAndTokensRoutedNowhere() {
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.zeros(new Shape(0, 16));
            NDArray idx = m.zeros(new Shape(0, 2), DataType.INT64);
            DispatchResult r = buffer.dispatch(x, idx, null, 4, 1, WireFormat.FP32);
            try (EpHandle handle = r.handle()) {
                assertEquals(0, handle.numRecv());
                assertEquals(new Shape(0, 16), r.recvX().getShape());
                CombineResult c = buffer.combine(r.recvX(), null, handle, WireFormat.FP32);
                assertEquals(new Shape(0, 16), c.out().getShape());
            }
            NDArray x2 = m.ones(new Shape(3, 16));
            NDArray none = m.create(new long[] {-1, -1, -1, -1, -1, -1}, new Shape(3, 2));
            DispatchResult r2 = buffer.dispatch(x2, none, null, 4, 1, WireFormat.FP32);
            try (EpHandle handle = r2.handle()) {
                assertEquals(0, handle.numRecv());
                CombineResult c = buffer.combine(r2.recvX(), null, handle, WireFormat.FP32);
                assertArrayEquals(new float[48], c.out().toFloatArray());
            }
        }
    }

    @Test
    void nativeWritesAreSeenByDjl() {
        try (NDManager m = manager.newSubManager();
                NativeCall call = new NativeCall()) {
            float[] values = {1.5f, -2.25f, 3f, 0.125f};
            NDArray src = m.create(values, new Shape(1, 4));
            NDArray dst = m.zeros(new Shape(1, 4));
            long srcAddr = NativeMemory.address(src, "src", DataType.FLOAT32);
            long dstAddr = NativeMemory.address(dst, "dst", DataType.FLOAT32);
            try (NDArray wire = m.zeros(new Shape(16), DataType.UINT8)) {
                long wAddr = NativeMemory.address(wire, "wire", DataType.UINT8);
                call.check(
                        NativeEp.nep_encode_rows(
                                WireFormat.FP32.code(),
                                srcAddr,
                                1,
                                4,
                                wAddr,
                                call.err(),
                                call.cap()),
                        "encode");
                call.check(
                        NativeEp.nep_decode_rows(
                                WireFormat.FP32.code(),
                                wAddr,
                                1,
                                4,
                                dstAddr,
                                call.err(),
                                call.cap()),
                        "decode");
            }
            // dst was written by native code through the address DJL exposed: no copy back.
            assertArrayEquals(values, dst.toFloatArray());
            // A strided view is made contiguous first, never mis-read.
            NDArray wide = m.create(new float[] {1, 2, 3, 4, 5, 6}, new Shape(2, 3));
            NDArray col = wide.transpose();
            long addr = NativeMemory.address(col, "col", DataType.FLOAT32);
            NDArray out = m.zeros(new Shape(3, 2));
            call.check(
                    NativeEp.nep_decode_rows(
                            0,
                            addr,
                            3,
                            2,
                            NativeMemory.address(out, "out", DataType.FLOAT32),
                            call.err(),
                            call.cap()),
                    "decode");
            assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, out.toFloatArray());
        }
    }

    @Test
    void badArgumentsAreRefusedWithTheirNames() {
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.ones(new Shape(4, 8));
            NDArray idx = m.create(new long[] {0, 1, 2, 3, 1, 2, 3, 0}, new Shape(4, 2));
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x.toType(DataType.FLOAT64, false),
                                    idx,
                                    null,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'x'",
                    "float64");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    m.ones(new Shape(4, 2, 4)), idx, null, 4, 1, WireFormat.FP32),
                    "'x'",
                    "2 dimensions");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x,
                                    idx.toType(DataType.INT32, false),
                                    null,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "'topk_idx'",
                    "int32");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    m.ones(new Shape(5, 8)), idx, null, 4, 1, WireFormat.FP32),
                    "'topk_idx'",
                    "5");
            NDArray outOfRange = m.create(new long[] {0, 1, 2, 9, 1, 2, 3, 0}, new Shape(4, 2));
            assertMessage(
                    () -> buffer.dispatch(x, outOfRange, null, 4, 1, WireFormat.FP32),
                    "topk_idx",
                    "9");
            NDArray belowRange = m.create(new long[] {0, 1, 2, -2, 1, 2, 3, 0}, new Shape(4, 2));
            assertMessage(() -> buffer.layout(belowRange, 4), "topk_idx", "-2");
            NDArray dup = m.create(new long[] {0, 1, 2, 2, 1, 2, 3, 0}, new Shape(4, 2));
            assertMessage(() -> buffer.dispatch(x, dup, null, 4, 1, WireFormat.FP32), "2");
            assertMessage(
                    () -> buffer.dispatch(x, idx, null, 0, 1, WireFormat.FP32), "num_experts", "0");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x,
                                    m.zeros(new Shape(4, 5), DataType.INT64),
                                    null,
                                    4,
                                    1,
                                    WireFormat.FP32),
                    "K = 5",
                    "num_experts = 4");
            assertMessage(
                    () -> buffer.dispatch(x, idx, m.ones(new Shape(4, 3)), 4, 1, WireFormat.FP32),
                    "'topk_weights'");
            assertMessage(
                    () -> buffer.dispatch(x, idx, null, 4, 0, WireFormat.FP32), "expert_alignment");
            DispatchResult r = buffer.dispatch(x, idx, null, 4, 1, WireFormat.FP32);
            EpHandle handle = r.handle();
            assertMessage(
                    () -> buffer.combine(m.ones(new Shape(3, 8)), null, handle, WireFormat.FP32),
                    "'y'",
                    "3 rows");
            assertMessage(
                    () -> buffer.dispatch(m.ones(new Shape(2, 8)), handle, WireFormat.FP32),
                    "'x'",
                    "2 rows");
            try (LocalProcessGroup g2 = new LocalProcessGroup();
                    EpBuffer other = EpBuffer.create(g2)) {
                assertMessage(
                        () -> other.combine(r.recvX(), null, handle, WireFormat.FP32),
                        "another EpBuffer");
            }
            handle.close();
            assertTrue(handle.isClosed());
            assertMessage(() -> buffer.combine(r.recvX(), null, handle, WireFormat.FP32), "closed");
            // The library is still usable after every refusal.
            DispatchResult ok = buffer.dispatch(x, idx, null, 4, 1, WireFormat.FP32);
            try (EpHandle h2 = ok.handle()) {
                assertFalse(h2.isClosed());
                assertEquals(4, h2.numRecv());
            }
        }
    }

    @ParameterizedTest
    @EnumSource(WireFormat.class)
    void reusedOutputArraysGetTheSameRowsAsFreshOnes(WireFormat wire) {
        try (NDManager m = manager.newSubManager()) {
            int h = 300; // partial scaling blocks on the FP8 and MXFP8 wires
            RoutingData d = new RoutingData(11, 57, 4, 16, 0.3, 2);
            DispatchResult r =
                    buffer.dispatch(
                            m.create(
                                    RoutingData.randomRows(12, d.tokens, h, 1f),
                                    new Shape(d.tokens, h)),
                            idxArray(m, d),
                            null,
                            16,
                            1,
                            wire);
            try (EpHandle handle = r.handle()) {
                long rows = handle.numRecv();
                NDArray recv = m.full(new Shape(rows, h), Float.NaN); // poisoned, then reused
                NDArray out = m.full(new Shape(d.tokens, h), Float.NaN);
                for (int round = 0; round < 3; round++) {
                    NDArray x =
                            m.create(
                                    RoutingData.randomRows(20 + round, d.tokens, h, 1f + round),
                                    new Shape(d.tokens, h));
                    NDArray fresh = buffer.dispatch(x, handle, wire);
                    assertSame(recv, buffer.dispatch(x, handle, wire, recv));
                    assertArrayEquals(fresh.toFloatArray(), recv.toFloatArray(), "round " + round);
                    NDArray y = fresh.mul(0.5f + round);
                    NDArray freshOut = buffer.combine(y, null, handle, wire).out();
                    assertSame(out, buffer.combine(y, handle, wire, out));
                    assertArrayEquals(
                            freshOut.toFloatArray(), out.toFloatArray(), "round " + round);
                }
            }
        }
    }

    @Test
    void badOutputArraysAreRefusedWithTheirNames() {
        try (NDManager m = manager.newSubManager()) {
            int h = 8;
            NDArray x = m.ones(new Shape(4, h));
            NDArray idx = m.create(new long[] {0, 1, 2, 3, 1, 2, 3, 0}, new Shape(4, 2));
            DispatchResult r = buffer.dispatch(x, idx, null, 4, 1, WireFormat.FP32);
            EpHandle handle = r.handle();
            assertEquals(4, handle.numRecv());
            assertMessage(
                    () -> buffer.dispatch(x, handle, WireFormat.FP32, m.zeros(new Shape(3, h))),
                    "'out'",
                    "(3, 8)",
                    "expected (4, 8)");
            assertMessage(
                    () ->
                            buffer.dispatch(
                                    x,
                                    handle,
                                    WireFormat.FP32,
                                    m.zeros(new Shape(4, h), DataType.FLOAT64)),
                    "'out'",
                    "float64");
            assertMessage(() -> buffer.dispatch(x, handle, WireFormat.FP32, null), "'out'", "null");
            // A transposed view is not contiguous: DJL would hand native code a copy.
            NDArray transposed = m.zeros(new Shape(h, 4)).transpose();
            assertMessage(
                    () -> buffer.dispatch(x, handle, WireFormat.FP32, transposed),
                    "'out'",
                    "not contiguous");
            assertMessage(
                    () -> buffer.dispatch(x, handle, WireFormat.FP32, x),
                    "'out'",
                    "'x'",
                    "overlap");
            NDArray y = r.recvX();
            assertMessage(
                    () -> buffer.combine(y, handle, WireFormat.FP32, m.zeros(new Shape(4, h + 1))),
                    "'out'",
                    "expected (4, 8)");
            assertMessage(
                    () -> buffer.combine(y, handle, WireFormat.FP32, y), "'out'", "'y'", "overlap");
            handle.close();
            assertMessage(
                    () -> buffer.dispatch(x, handle, WireFormat.FP32, m.zeros(new Shape(4, h))),
                    "closed");
            // Still usable: a good reused output gets the rows.
            DispatchResult ok = buffer.dispatch(x, idx, null, 4, 1, WireFormat.FP32);
            try (EpHandle h2 = ok.handle()) {
                NDArray into = m.zeros(new Shape(4, h));
                buffer.dispatch(x.mul(2f), h2, WireFormat.FP32, into);
                assertArrayEquals(x.mul(2f).toFloatArray(), into.toFloatArray());
            }
        }
    }

    private static void assertMessage(Runnable call, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message '" + e.getMessage() + "' lacks " + p);
        }
    }
}
