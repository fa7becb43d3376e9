/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import dev.djlmoe.dist.LocalProcessGroup;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The low-latency buffer on one rank (loopback) against a plain Java oracle: counts per expert
 * equal the selections, every row carries its source (an index channel and the source info), {@code
 * -1} slots are never sent, combine equals {@code x · Σ_k w_k} (bit-exact on the fp32 wire,
 * DeepEP's calc_diff bounds on bf16 and FP8), the hook splits send and receive around other work,
 * two results may be pending, normal and low-latency modes alternate, and every argument is checked
 * with a message naming it.
 */
class LowLatencyBufferTest {

    private static final int TM = 12;
    private static final int H = 256;
    private static final int E = 8;
    private static final int K = 3;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static LowLatencyBuffer buffer;

    @BeforeAll
    static void setUp() {
        // CPU arrays on every host: this is the CPU engine's test (on a GPU host DJL's default
        // device is the GPU, whose backend LowLatencyBufferGpuTest compares with this one).
        manager = NDManager.newBaseManager(Device.cpu());
        group = new LocalProcessGroup();
        buffer = LowLatencyBuffer.create(group, TM, H, E, K, WireFormat.FP32, 10_000);
    }

    @AfterAll
    static void tearDown() {
        buffer.close();
        group.close();
        manager.close();
    }

    /** x rows: random data, the last channel the token index (exact in every wire format). */
    private static float[] rows(long seed, int tokens) {
        float[] x = RoutingData.randomRows(seed, tokens, H, 1f);
        for (int t = 0; t < tokens; t++) {
            x[t * H + H - 1] = t;
        }
        return x;
    }

    private static double calcDiff(float[] got, double[] want) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < got.length; i++) {
            double a = got[i] + 1.0;
            double b = want[i] + 1.0;
            num += a * b;
            den += a * a + b * b;
        }
        return 1.0 - 2.0 * num / den;
    }

    /** Checks one dispatch result against the routing: counts, sources, rows (exact when fp32). */
    private static void checkDispatch(
            RoutingData d, float[] x, LowLatencyDispatch r, WireFormat wire) {
        int n = TM; // W * TM rows per expert with W = 1
        int[] count = r.recvCount().toIntArray();
        int[] fromHandle = r.handle().recvCount();
        assertArrayEquals(count, fromHandle);
        assertArrayEquals(d.tokensPerExpert(), count, "counts per expert = selections");
        int[] src = r.handle().srcInfo();
        long[] range = r.handle().layoutRange();
        float[] rx = r.recvX().toFloatArray();
        for (int e = 0; e < E; e++) {
            assertEquals((long) count[e], range[e], "layout range of expert " + e);
            int row = 0;
            for (int t = 0; t < d.tokens; t++) {
                for (int k = 0; k < d.topk; k++) {
                    if (d.idx[t * d.topk + k] != e) {
                        continue;
                    }
                    int at = e * n + row;
                    assertEquals(t, src[at], "source of expert " + e + " row " + row);
                    float index = rx[at * H + H - 1];
                    if (wire == WireFormat.FP32 || wire == WireFormat.BF16) {
                        assertEquals(t, index, "index channel of expert " + e + " row " + row);
                    } else { // e4m3: 3 mantissa bits, the block scale shared with the data
                        assertEquals(
                                t, index, 0.07 * t, "index channel of expert " + e + " row " + row);
                    }
                    for (int c = 0; c < H && wire == WireFormat.FP32; c++) {
                        assertEquals(x[t * H + c], rx[at * H + c]);
                    }
                    row++;
                }
            }
            if (row < n) {
                assertEquals(-1, src[e * n + row], "source info past the count");
            }
        }
    }

    /** out against x · Σ_k w_k (identity experts): exact fp32 sums or calc_diff below tol. */
    private static void checkCombine(
            RoutingData d, float[] x, NDArray out, WireFormat wire, double tol) {
        float[] o = out.toFloatArray();
        assertEquals(d.tokens * H, o.length);
        double[] ideal = new double[o.length];
        for (int t = 0; t < d.tokens; t++) {
            float[] acc = new float[H];
            boolean first = true;
            for (int k = 0; k < d.topk; k++) {
                if (d.idx[t * d.topk + k] < 0) {
                    continue;
                }
                float w = d.weights[t * d.topk + k];
                for (int c = 0; c < H; c++) {
                    acc[c] = first ? w * x[t * H + c] : acc[c] + w * x[t * H + c];
                    ideal[t * H + c] += (double) w * x[t * H + c];
                }
                first = false;
            }
            if (wire == WireFormat.FP32) {
                for (int c = 0; c < H; c++) {
                    assertEquals(acc[c], o[t * H + c], "token " + t + " channel " + c);
                }
            }
        }
        double diff = calcDiff(o, ideal);
        assertTrue(diff < tol, "calc_diff " + diff + " >= " + tol + " on " + wire);
    }

    private void roundTrip(long seed, WireFormat wire, boolean roundScale, double tol) {
        try (NDManager m = manager.newSubManager()) {
            RoutingData d = new RoutingData(seed, TM, K, E, 0.25, 2);
            float[] x = rows(seed + 1, d.tokens);
            NDArray xa = m.create(x, new Shape(d.tokens, H));
            NDArray idx = m.create(d.idx, new Shape(d.tokens, K));
            NDArray w = m.create(d.weights, new Shape(d.tokens, K));
            LowLatencyDispatch r = buffer.dispatch(xa, idx, wire, roundScale);
            try (LowLatencyHandle h = r.handle()) {
                assertEquals(new Shape(E, TM, H), r.recvX().getShape());
                assertEquals(DataType.INT32, r.recvCount().getDataType());
                checkDispatch(d, x, r, wire);
                NDArray out =
                        buffer.combine(
                                r.recvX(),
                                idx,
                                w,
                                h,
                                wire == WireFormat.FP32 ? wire : WireFormat.BF16);
                checkCombine(d, x, out, wire, tol);
            }
        }
    }

    @Test
    void fp32WireIsExactEndToEnd() {
        roundTrip(1, WireFormat.FP32, false, 1e-12);
    }

    @Test
    void bf16WireMeetsDeepEpBound() {
        roundTrip(2, WireFormat.BF16, false, 1e-5);
    }

    @Test
    void fp8WireMeetsDeepEpBoundWithAndWithoutPowerOfTwoScales() {
        roundTrip(3, WireFormat.FP8, false, 9e-4);
        roundTrip(4, WireFormat.FP8, true, 9e-4);
        roundTrip(5, WireFormat.MXFP8, false, 9e-4);
    }

    @Test
    void maskedSlotsAreNeverSentAndTokensRoutedNowhereCombineToZero() {
        try (NDManager m = manager.newSubManager()) {
            RoutingData d = new RoutingData(6, 9, K, E, 0.5, -1);
            for (int k = 0; k < K; k++) {
                d.idx[k] = -1; // token 0 goes nowhere
            }
            int selected = 0;
            for (long e : d.idx) {
                selected += e >= 0 ? 1 : 0;
            }
            float[] x = rows(7, d.tokens);
            NDArray idx = m.create(d.idx, new Shape(d.tokens, K));
            try (LowLatencyHook<LowLatencyDispatch> hook =
                    buffer.dispatchSend(
                            m.create(x, new Shape(d.tokens, H)), idx, WireFormat.BF16, false)) {
                assertEquals(selected, hook.rowsSent(), "one message per selected (token, expert)");
                LowLatencyDispatch r = hook.await();
                try (LowLatencyHandle h = r.handle()) {
                    checkDispatch(d, x, r, WireFormat.BF16);
                    try (LowLatencyHook<NDArray> c =
                            buffer.combineSend(
                                    r.recvX(),
                                    idx,
                                    m.create(d.weights, new Shape(d.tokens, K)),
                                    h,
                                    WireFormat.BF16)) {
                        assertEquals(selected, c.rowsSent());
                        float[] out = c.await().toFloatArray();
                        for (int ch = 0; ch < H; ch++) {
                            assertEquals(0f, out[ch]);
                        }
                    }
                }
            }
        }
    }

    @Test
    void hookSplitsSendAndReceiveAroundOtherWorkAndNormalMode() {
        try (NDManager m = manager.newSubManager();
                EpBuffer normal = EpBuffer.create(group)) {
            RoutingData d = new RoutingData(8, TM, K, E, 0.2, 1);
            float[] x = rows(9, d.tokens);
            NDArray xa = m.create(x, new Shape(d.tokens, H));
            NDArray idx = m.create(d.idx, new Shape(d.tokens, K));
            NDArray w = m.create(d.weights, new Shape(d.tokens, K));
            LowLatencyHook<LowLatencyDispatch> hook =
                    buffer.dispatchSend(xa, idx, WireFormat.FP32, false);
            assertTrue(hook.isReady()); // loopback: this rank is the only source
            assertFalse(hook.isDone());
            // Other work between send and receive: DJL math and a normal-mode dispatch/combine.
            NDArray work = xa.matMul(xa.transpose()).sum();
            assertTrue(Float.isFinite(work.getFloat()));
            DispatchResult nd = normal.dispatch(xa, idx, w, E, 1, WireFormat.FP32);
            try (EpHandle nh = nd.handle()) {
                normal.combine(nd.recvX(), null, nh, WireFormat.FP32);
            }
            LowLatencyDispatch r = hook.complete();
            assertTrue(hook.isDone());
            assertEquals(r, hook.await(), "await after completion returns the same result");
            hook.close();
            try (LowLatencyHandle h = r.handle()) {
                checkDispatch(d, x, r, WireFormat.FP32);
                LowLatencyHook<NDArray> c =
                        buffer.combineSend(r.recvX(), idx, w, h, WireFormat.FP32);
                DispatchResult nd2 = normal.dispatch(xa, idx, w, E, 1, WireFormat.FP32);
                nd2.handle().close();
                checkCombine(d, x, c.await(), WireFormat.FP32, 1e-12);
                c.close();
            }
        }
    }

    @Test
    void twoResultsMayBePendingAndAThirdSendIsRefused() {
        try (NDManager m = manager.newSubManager()) {
            RoutingData a = new RoutingData(10, 7, K, E, 0.2, -1);
            RoutingData b = new RoutingData(11, TM, K, E, 0.2, 3);
            float[] xa = rows(12, a.tokens);
            float[] xb = rows(13, b.tokens);
            NDArray ia = m.create(a.idx, new Shape(a.tokens, K));
            NDArray ib = m.create(b.idx, new Shape(b.tokens, K));
            LowLatencyHook<LowLatencyDispatch> ha =
                    buffer.dispatchSend(
                            m.create(xa, new Shape(a.tokens, H)), ia, WireFormat.FP32, false);
            LowLatencyHook<LowLatencyDispatch> hb =
                    buffer.dispatchSend(
                            m.create(xb, new Shape(b.tokens, H)), ib, WireFormat.FP32, false);
            assertEquals(ha.callIndex() + 1, hb.callIndex());
            IllegalArgumentException third =
                    assertThrows(
                            IllegalArgumentException.class,
                            () ->
                                    buffer.dispatchSend(
                                            m.create(xa, new Shape(a.tokens, H)),
                                            ia,
                                            WireFormat.FP32,
                                            false));
            assertTrue(
                    third.getMessage()
                            .contains(
                                    "low-latency call "
                                            + ha.callIndex()
                                            + " (a dispatch) still awaits its receive"),
                    third.getMessage());
            LowLatencyDispatch rb = hb.await();
            LowLatencyDispatch ra = ha.await();
            try (LowLatencyHandle h1 = ra.handle();
                    LowLatencyHandle h2 = rb.handle()) {
                checkDispatch(a, xa, ra, WireFormat.FP32);
                checkDispatch(b, xb, rb, WireFormat.FP32);
                LowLatencyHook<NDArray> ca =
                        buffer.combineSend(
                                ra.recvX(),
                                ia,
                                m.create(a.weights, new Shape(a.tokens, K)),
                                h1,
                                WireFormat.FP32);
                LowLatencyHook<NDArray> cb =
                        buffer.combineSend(
                                rb.recvX(),
                                ib,
                                m.create(b.weights, new Shape(b.tokens, K)),
                                h2,
                                WireFormat.FP32);
                checkCombine(b, xb, cb.await(), WireFormat.FP32, 1e-12);
                checkCombine(a, xa, ca.await(), WireFormat.FP32, 1e-12);
                ca.close();
                cb.close();
            }
            ha.close();
            hb.close();
            // A closed hook that was never awaited abandons its receive and frees its buffer.
            LowLatencyHook<LowLatencyDispatch> dropped =
                    buffer.dispatchSend(
                            m.create(xa, new Shape(a.tokens, H)), ia, WireFormat.FP32, false);
            dropped.close();
            assertThrows(IllegalStateException.class, dropped::await);
            roundTrip(14, WireFormat.FP32, false, 1e-12);
            roundTrip(15, WireFormat.FP32, false, 1e-12);
        }
    }

    private static void assertRefused(String part, Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::execute);
        assertTrue(
                e.getMessage().contains(part),
                "message '" + e.getMessage() + "' lacks '" + part + "'");
    }

    /** The JUnit executable without its checked exception. */
    private interface Executable {
        void execute();
    }

    @Test
    void everyArgumentIsCheckedWithAMessageNamingIt() {
        try (NDManager m = manager.newSubManager()) {
            NDArray x = m.zeros(new Shape(TM + 1, H));
            NDArray idx = m.zeros(new Shape(TM + 1, K), DataType.INT64);
            assertRefused(
                    "argument 'x' has 13 rows (tokens), more than max_tokens_per_rank = 12",
                    () -> buffer.dispatchSend(x, idx, WireFormat.BF16, false));
            NDArray x2 = m.zeros(new Shape(2, H));
            NDArray i2 = m.create(new long[] {0, 1, 2, 3, 4, 5}, new Shape(2, K));
            assertRefused(
                    "columns, but the buffer's hidden size is 256",
                    () ->
                            buffer.dispatchSend(
                                    m.zeros(new Shape(2, H + 1)), i2, WireFormat.BF16, false));
            assertRefused(
                    "outside [1, max_topk = 3]",
                    () ->
                            buffer.dispatchSend(
                                    x2,
                                    m.zeros(new Shape(2, 4), DataType.INT64),
                                    WireFormat.BF16,
                                    false));
            assertRefused(
                    "argument 'topk_idx' has dtype",
                    () ->
                            buffer.dispatchSend(
                                    x2, i2.toType(DataType.INT32, false), WireFormat.BF16, false));
            assertRefused(
                    "needs wire FP8", () -> buffer.dispatchSend(x2, i2, WireFormat.BF16, true));
            assertRefused(
                    "argument 'wire' is null", () -> buffer.dispatchSend(x2, i2, null, false));
            // Value checks happen natively and arrive as IllegalArgumentException too.
            assertRefused(
                    "topk_idx[1][2] = 8 is outside [-1, 8)",
                    () ->
                            buffer.dispatchSend(
                                    x2,
                                    m.create(new long[] {0, 1, 2, 3, 4, 8}, new Shape(2, K)),
                                    WireFormat.BF16,
                                    false));
            assertRefused(
                    "selects expert 1 twice",
                    () ->
                            buffer.dispatchSend(
                                    x2,
                                    m.create(new long[] {0, 1, 1, 3, 4, 5}, new Shape(2, K)),
                                    WireFormat.BF16,
                                    false));
            try (LowLatencyBuffer narrow =
                    LowLatencyBuffer.create(group, 4, H, E, K, WireFormat.FP8, 1000)) {
                assertRefused(
                        "needs 512 bytes per row but this LowLatencyBuffer was created for FP8 (264"
                                + " bytes per row)",
                        () -> narrow.dispatchSend(x2, i2, WireFormat.BF16, false));
                assertEquals(4, narrow.maxTokensPerRank());
                assertEquals(1, narrow.worldSize());
                assertEquals(E, narrow.numLocalExperts());
                assertTrue(narrow.bytesPerRank() > 0);
                // A handle of another buffer is refused by this one.
                LowLatencyDispatch r = narrow.dispatch(x2, i2, WireFormat.FP8, false);
                try (LowLatencyHandle h = r.handle()) {
                    assertRefused(
                            "made by another LowLatencyBuffer",
                            () ->
                                    buffer.combineSend(
                                            m.zeros(new Shape(E, TM, H)),
                                            i2,
                                            m.zeros(new Shape(2, K)),
                                            h,
                                            WireFormat.BF16));
                    assertRefused(
                            "argument 'y' has shape (8, 12, 256), expected (8, 4, 256)",
                            () ->
                                    narrow.combineSend(
                                            m.zeros(new Shape(E, TM, H)),
                                            i2,
                                            m.zeros(new Shape(2, K)),
                                            h,
                                            WireFormat.BF16));
                    NDArray y = m.zeros(new Shape(E, 4, H));
                    assertRefused(
                            "topk_idx[0][1] = 2 differs from the dispatched routing",
                            () ->
                                    narrow.combineSend(
                                            y,
                                            m.create(
                                                    new long[] {0, 2, 1, 3, 4, 5}, new Shape(2, K)),
                                            m.zeros(new Shape(2, K)),
                                            h,
                                            WireFormat.FP8));
                    assertRefused(
                            "but the handle's dispatch had (2, 3)",
                            () ->
                                    narrow.combineSend(
                                            y,
                                            m.zeros(new Shape(1, K), DataType.INT64),
                                            m.zeros(new Shape(1, K)),
                                            h,
                                            WireFormat.FP8));
                    assertRefused(
                            "argument 'topk_weights' has shape (2, 2)",
                            () ->
                                    narrow.combineSend(
                                            y, i2, m.zeros(new Shape(2, 2)), h, WireFormat.FP8));
                    assertRefused(
                            "argument 'handle' is null",
                            () ->
                                    narrow.combineSend(
                                            y, i2, m.zeros(new Shape(2, K)), null, WireFormat.FP8));
                    NDArray out = narrow.combine(y, i2, m.ones(new Shape(2, K)), h, WireFormat.FP8);
                    assertEquals(new Shape(2, H), out.getShape());
                }
                assertRefused(
                        "argument 'handle' is closed",
                        () ->
                                narrow.combineSend(
                                        m.zeros(new Shape(E, 4, H)),
                                        i2,
                                        m.zeros(new Shape(2, K)),
                                        r.handle(),
                                        WireFormat.FP8));
            }
            assertRefused(
                    "argument 'max_tokens_per_rank' = 0",
                    () -> LowLatencyBuffer.create(group, 0, H, E, K));
            assertRefused(
                    "argument 'num_experts' = 0 must be a positive multiple",
                    () -> LowLatencyBuffer.create(group, 4, H, 0, K));
            assertRefused(
                    "argument 'max_topk' = 9 is outside [1, num_experts = 8]",
                    () -> LowLatencyBuffer.create(group, 4, H, E, 9));
            assertRefused(
                    "argument 'group' is null", () -> LowLatencyBuffer.create(null, 4, H, E, K));
            LowLatencyBuffer closed = LowLatencyBuffer.create(group, 4, H, E, K);
            closed.close();
            assertThrows(
                    IllegalStateException.class,
                    () -> closed.dispatchSend(x2, i2, WireFormat.BF16, false));
            // The buffer is still usable after all the refusals.
            roundTrip(16, WireFormat.FP32, false, 1e-12);
        }
    }

    @Test
    void zeroTokensWork() {
        try (NDManager m = manager.newSubManager()) {
            LowLatencyDispatch r =
                    buffer.dispatch(
                            m.zeros(new Shape(0, H)),
                            m.zeros(new Shape(0, K), DataType.INT64),
                            WireFormat.BF16,
                            false);
            try (LowLatencyHandle h = r.handle()) {
                assertArrayEquals(new int[E], r.recvCount().toIntArray());
                NDArray out =
                        buffer.combine(
                                r.recvX(),
                                m.zeros(new Shape(0, K), DataType.INT64),
                                m.zeros(new Shape(0, K)),
                                h,
                                WireFormat.BF16);
                assertEquals(new Shape(0, H), out.getShape());
            }
        }
    }
}
