/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.ParameterStore;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.WireFormat;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * {@link MoeLayer#forwardLowLatency} on one rank (loopback buffer) against the layer's plain
 * forward with every expert local: equal within 1e-5 relative with fp32 wires, DeepEP's calc_diff
 * below 1e-5 with bf16 wires and 9e-4 with an fp8 dispatch; a hot expert (router bias), shared
 * experts, {@code [B, S, H]} input, zero tokens; more tokens than max_tokens_per_rank and a buffer
 * of another shape are refused with messages naming them; the timers count every call.
 */
class MoeLayerLowLatencyTest {

    private static final int H = 64;
    private static final int I = 32;
    private static final int E = 8;
    private static final int K = 3;
    private static final int TM = 12;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static LowLatencyBuffer buffer;
    private static MoeLayer layer;

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager();
        group = new LocalProcessGroup();
        buffer = LowLatencyBuffer.create(group, TM, H, E, K, WireFormat.FP32, 10_000);
        layer =
                MoeLayer.builder()
                        .setHiddenSize(H)
                        .setExpertIntermediateSize(I)
                        .setRouter(
                                MoeRouter.builder()
                                        .setNumExperts(E)
                                        .setTopK(K)
                                        .optCorrectionBias(true))
                        .optNumSharedExperts(1)
                        .build();
        Engine.getInstance().setRandomSeed(42);
        layer.initialize(manager, DataType.FLOAT32, new Shape(TM, H));
        // A hot expert: the router bias favours expert 5 in every top-k.
        layer.getGate().getCorrectionBias().getArray().set(new NDIndex(5), 10.0f);
    }

    @AfterAll
    static void tearDown() {
        buffer.close();
        group.close();
        manager.close();
    }

    private static NDArray input(NDManager m, long seed, Shape shape) {
        Random r = new Random(seed);
        float[] x = new float[(int) shape.size()];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        return m.create(x, shape);
    }

    private static double calcDiff(float[] got, float[] want) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < got.length; i++) {
            double a = got[i] + 1.0;
            double b = want[i] + 1.0;
            num += a * b;
            den += a * a + b * b;
        }
        return den == 0 ? 0 : 1.0 - 2.0 * num / den;
    }

    private static float[][] both(Shape shape, long seed, LowLatencyMoe ll) {
        try (NDManager m = manager.newSubManager()) {
            ParameterStore ps = new ParameterStore(m, false);
            NDArray u = input(m, seed, shape);
            NDArray want = layer.forward(ps, new NDList(u), false).head();
            NDArray got = layer.forwardLowLatency(ps, u, ll);
            assertEquals(shape, got.getShape());
            return new float[][] {got.toFloatArray(), want.toFloatArray()};
        }
    }

    @Test
    void fp32WiresEqualThePlainForward() {
        LowLatencyMoe ll = new LowLatencyMoe(buffer, WireFormat.FP32, WireFormat.FP32, false);
        for (Shape s : new Shape[] {new Shape(TM, H), new Shape(2, 5, H), new Shape(1, H)}) {
            float[][] r = both(s, s.size(), ll);
            for (int i = 0; i < r[0].length; i++) {
                assertEquals(r[1][i], r[0][i], 1e-5 * (1 + Math.abs(r[1][i])), s + " element " + i);
            }
        }
        assertEquals(3, ll.calls());
        assertTrue(ll.dispatchNanos() > 0 && ll.combineNanos() > 0);
        ll.resetTimers();
        assertEquals(0, ll.calls());
    }

    @Test
    void narrowWiresMeetDeepEpBounds() {
        float[][] bf16 =
                both(
                        new Shape(TM, H),
                        7,
                        new LowLatencyMoe(buffer, WireFormat.BF16, WireFormat.BF16, false));
        assertTrue(calcDiff(bf16[0], bf16[1]) < 1e-5, "bf16 " + calcDiff(bf16[0], bf16[1]));
        float[][] fp8 =
                both(
                        new Shape(TM, H),
                        8,
                        new LowLatencyMoe(buffer, WireFormat.FP8, WireFormat.BF16, true));
        assertTrue(calcDiff(fp8[0], fp8[1]) < 9e-4, "fp8 " + calcDiff(fp8[0], fp8[1]));
    }

    @Test
    void zeroTokensGiveAnEmptyOutput() {
        try (NDManager m = manager.newSubManager()) {
            NDArray out =
                    layer.forwardLowLatency(
                            new ParameterStore(m, false),
                            m.zeros(new Shape(0, H)),
                            new LowLatencyMoe(buffer, WireFormat.BF16, WireFormat.BF16, false));
            assertEquals(new Shape(0, H), out.getShape());
        }
    }

    @Test
    void badInputsAreRefusedByName() {
        LowLatencyMoe ll = new LowLatencyMoe(buffer, WireFormat.BF16, WireFormat.BF16, false);
        try (NDManager m = manager.newSubManager();
                LowLatencyBuffer other = LowLatencyBuffer.create(group, TM, H, 2 * E, K)) {
            ParameterStore ps = new ParameterStore(m, false);
            IllegalArgumentException e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> layer.forwardLowLatency(ps, m.zeros(new Shape(TM + 1, H)), ll));
            assertTrue(
                    e.getMessage()
                            .contains(
                                    "argument 'x' has 13 rows (tokens), more than"
                                            + " max_tokens_per_rank = 12"),
                    e.getMessage());
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () ->
                                    layer.forwardLowLatency(
                                            ps,
                                            m.zeros(new Shape(2, H)),
                                            new LowLatencyMoe(
                                                    other,
                                                    WireFormat.BF16,
                                                    WireFormat.BF16,
                                                    false)));
            assertTrue(
                    e.getMessage()
                            .contains(
                                    "(E = 16, H = 64, rank 0 of 1) does not match this"
                                            + " MoeLayer (E = 8"),
                    e.getMessage());
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () -> layer.forwardLowLatency(ps, m.zeros(new Shape(2, H + 1)), ll));
            assertTrue(e.getMessage().contains("expected last axis 64"), e.getMessage());
            e =
                    assertThrows(
                            IllegalArgumentException.class,
                            () ->
                                    new LowLatencyMoe(
                                            buffer, WireFormat.BF16, WireFormat.BF16, true));
            assertTrue(e.getMessage().contains("needs an FP8 dispatch wire"), e.getMessage());
        }
        // Still usable after the refusals.
        float[][] r =
                both(
                        new Shape(4, H),
                        9,
                        new LowLatencyMoe(buffer, WireFormat.FP32, WireFormat.FP32, false));
        assertTrue(calcDiff(r[0], r[1]) < 1e-12);
    }
}
