/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.EpContext;
import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The one way the routed experts find the staged backward's tape: the active tape of the {@link
 * EpContext} they were built with, read in a training forward.
 */
class RoutedExpertsTapeTest {

    private static final int EXPERTS = 3;
    private static final int H = 64;
    private static final int I = 32;
    private static final int ROWS = 12;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpContext context;

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager();
        group = new LocalProcessGroup();
        context = EpContext.builder().setProcessGroup(group).build();
    }

    @AfterAll
    static void tearDown() {
        context.close();
        group.close();
        manager.close();
    }

    private static RoutedExperts block(ExpertPrecision precision, EpContext ctx) {
        RoutedExperts b =
                RoutedExperts.builder()
                        .setNumExperts(EXPERTS)
                        .setHiddenSize(H)
                        .setIntermediateSize(I)
                        .optPrecision(precision)
                        .optContext(ctx)
                        .build();
        Engine.getInstance().setRandomSeed(11);
        b.initialize(
                manager,
                DataType.FLOAT32,
                new Shape(ROWS, H),
                new Shape(ROWS, 2),
                new Shape(ROWS, 2));
        return b;
    }

    private static NDList inputs(NDManager m) {
        Engine.getInstance().setRandomSeed(12);
        NDArray x = m.randomNormal(new Shape(ROWS, H));
        long[] idx = new long[ROWS * 2];
        for (int i = 0; i < idx.length; i++) {
            idx[i] = i % 5 == 4 ? -1 : (i * 7 + i / 2) % EXPERTS;
        }
        NDArray w = m.randomUniform(0.2f, 1f, new Shape(ROWS, 2));
        return new NDList(x, m.create(idx, new Shape(ROWS, 2)), w);
    }

    /** The gradient of x through the block's forward, with the context's tape when there is one. */
    private static float[] blockGradient(RoutedExperts block, boolean withTape) {
        try (NDManager m = manager.newSubManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            NDList in = inputs(m);
            NDArray x = in.get(0);
            x.setRequiresGradient(true);
            ParameterStore ps = new ParameterStore(m, false);
            if (withTape) {
                try (Tape tape = context.beginTape()) {
                    NDArray y = block.forward(ps, in, true).head();
                    assertTrue(tape.size() > 0, "the quantised block recorded on the tape");
                    tape.backward(y.mul(y).sum());
                }
            } else {
                NDArray y = block.forward(ps, in, true).head();
                gc.backward(y.mul(y).sum());
            }
            return x.getGradient().toFloatArray();
        }
    }

    @ParameterizedTest
    @EnumSource(
            value = ExpertPrecision.class,
            names = {"MXFP8", "FP8"})
    void blockRecordsOnItsContextsTapeAndMatchesTheFunctionalFormGivenThatTape(
            ExpertPrecision precision) {
        RoutedExperts block = block(precision, context);
        float[] viaContext = blockGradient(block, true);
        float[] viaArgument;
        try (NDManager m = manager.newSubManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = new Tape()) {
            NDList in = inputs(m);
            NDArray x = in.get(0);
            x.setRequiresGradient(true);
            NDArray y =
                    RoutedExperts.routedExperts(
                                    x,
                                    in.get(1),
                                    in.get(2),
                                    param(block, RoutedExperts.GATE_PROJ),
                                    param(block, RoutedExperts.UP_PROJ),
                                    param(block, RoutedExperts.DOWN_PROJ),
                                    precision,
                                    tape)
                            .head();
            tape.backward(y.mul(y).sum());
            viaArgument = x.getGradient().toFloatArray();
        }
        assertArrayEquals(viaArgument, viaContext, 0f);
        RoutedExperts unbound = block(precision, null);
        float[] straightThrough = blockGradient(unbound, false);
        assertFalse(
                Arrays.equals(straightThrough, viaContext),
                "rounding the backward GEMMs' gradient inputs changes the gradient");
    }

    @Test
    void inferenceAndFp32RecordNothing() {
        try (NDManager m = manager.newSubManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = context.beginTape()) {
            ParameterStore ps = new ParameterStore(m, false);
            block(ExpertPrecision.MXFP8, context).forward(ps, inputs(m), false);
            assertEquals(0, tape.size(), "an inference forward does not touch the tape");
            block(ExpertPrecision.FP32, context).forward(ps, inputs(m), true);
            assertEquals(0, tape.size(), "fp32 GEMMs have nothing to round");
        }
    }

    @Test
    void aRecordedTrainingForwardWithoutAnActiveTapeIsRefused() {
        RoutedExperts block = block(ExpertPrecision.MXFP8, context);
        try (NDManager m = manager.newSubManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            IllegalStateException e =
                    assertThrows(
                            IllegalStateException.class,
                            () -> block.forward(new ParameterStore(m, false), inputs(m), true));
            assertTrue(e.getMessage().contains("RoutedExperts"), e.getMessage());
            assertTrue(e.getMessage().contains("beginTape"), e.getMessage());
        }
    }

    private static NDArray param(RoutedExperts block, String name) {
        return block.getParameters().get(name).getArray();
    }
}
