/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.autograd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.training.GradientCollector;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The tape on its own: an operation computed outside autograd (here: tripling, done on a detached
 * copy) with its VJP recorded, chained with ordinary DJL operations and cuts, gives the gradients
 * of the same computation done entirely in autograd.
 */
class TapeTest {

    private static float[] grad(boolean staged) {
        try (NDManager m = NDManager.newBaseManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = new Tape()) {
            NDArray w = m.create(new float[] {0.5f, -1f, 2f});
            w.setRequiresGradient(true);
            NDArray x = m.create(new float[] {1f, 2f, 3f});
            NDArray h = x.mul(w).tanh(); // in the graph
            NDArray y;
            if (staged) {
                NDArray hCut = tape.cut(h);
                // "native" op: y = 3 * h computed without autograd, backward = 3 * grad
                NDArray out = hCut.stopGradient().mul(3f);
                y =
                        tape.record(
                                        new NDList(hCut),
                                        new NDList(out),
                                        g -> new NDList(g.get(0).mul(3f)))
                                .head();
            } else {
                y = h.mul(3f);
            }
            // a branch that reaches h twice: through y and directly
            NDArray loss = y.square().sum().add(h.sum());
            if (staged) {
                tape.backward(loss);
            } else {
                gc.backward(loss);
            }
            return w.getGradient().toFloatArray();
        }
    }

    @Test
    void stagedBackwardEqualsPlainAutograd() {
        float[] plain = grad(false);
        float[] staged = grad(true);
        assertArrayEquals(plain, staged, 1e-6f);
        assertEquals(3, plain.length);
    }

    @Test
    void entriesRunInReverseOrderAndUnusedOutputsAreSkipped() {
        AtomicInteger order = new AtomicInteger();
        int[] seen = new int[2];
        try (NDManager m = NDManager.newBaseManager();
                GradientCollector gc = Engine.getInstance().newGradientCollector();
                Tape tape = new Tape()) {
            NDArray w = m.create(new float[] {1f, 2f});
            w.setRequiresGradient(true);
            NDArray a =
                    tape.record(
                                    new NDList(w.mul(1f)),
                                    new NDList(w.stopGradient()),
                                    g -> {
                                        seen[0] = order.incrementAndGet();
                                        return g;
                                    })
                            .head();
            NDArray b =
                    tape.record(
                                    new NDList(a),
                                    new NDList(a.stopGradient()),
                                    g -> {
                                        seen[1] = order.incrementAndGet();
                                        return g;
                                    })
                            .head();
            tape.record(
                    new NDList(b),
                    new NDList(b.stopGradient()),
                    g -> {
                        throw new AssertionError("an unused output must not run its vjp");
                    });
            tape.backward(b.sum());
            assertEquals(2, seen[0], "the earlier entry runs last");
            assertEquals(1, seen[1]);
            assertArrayEquals(new float[] {1f, 1f}, w.getGradient().toFloatArray());
            assertThrows(IllegalStateException.class, () -> tape.backward(b.sum()));
        }
    }

    @Test
    void lossOutsideTheGraphIsRefused() {
        try (NDManager m = NDManager.newBaseManager();
                Tape tape = new Tape()) {
            NDArray loss = m.create(1f);
            IllegalStateException e =
                    assertThrows(IllegalStateException.class, () -> tape.backward(loss));
            assertEquals(true, e.getMessage().contains("not in the autograd graph"));
        }
    }

    @Test
    void aBackwardLeavesNothingOnTheInputsManagerAndFreesWhatItPushed() {
        try (NDManager params = NDManager.newBaseManager()) {
            NDArray w = params.create(new float[] {1f, 2f, 3f});
            w.setRequiresGradient(true);
            NDArray v = params.create(new float[] {-1f, 4f});
            v.setRequiresGradient(true);
            int before = params.getManagedArrays().size();
            List<NDArray> pushed = new ArrayList<>();
            try (NDManager step = params.newSubManager();
                    GradientCollector gc = Engine.getInstance().newGradientCollector();
                    Tape tape = new Tape()) {
                NDArray out = step.create(new float[] {5f});
                NDArray y =
                        tape.record(
                                        new NDList(w, v), // two inputs: one push through a proxy
                                        new NDList(out),
                                        g -> {
                                            NDList r =
                                                    new NDList(
                                                            step.ones(w.getShape()).mul(2f),
                                                            step.ones(v.getShape()).mul(3f));
                                            pushed.addAll(r);
                                            return r;
                                        })
                                .head();
                tape.backward(y.sum());
                for (NDArray a : pushed) {
                    assertTrue(a.isReleased(), "the VJP's results are closed once pushed");
                }
                assertArrayEquals(new float[] {2f, 2f, 2f}, w.getGradient().toFloatArray());
                assertArrayEquals(new float[] {3f, 3f}, v.getGradient().toFloatArray());
            }
            // (the two getGradient() handles above are made on the parameters' manager)
            assertEquals(
                    before + 2,
                    params.getManagedArrays().size(),
                    "the push's w * g terms must not stay on the parameters' manager");
        }
    }
}
