/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.GradientCollector;
import ai.djl.training.tracker.Tracker;
import dev.djlmoe.testing.TestDevice;
import org.junit.jupiter.api.Test;

/**
 * {@link CheckpointableAdamW#updateFromGradient} (what {@link EpTrainer} calls per parameter)
 * against the way DJL's trainer drives the optimizer (gradient scaled in place, copied, {@link
 * CheckpointableAdamW#update}): bit-identical with the engine's update (the CPU, or a GPU with
 * {@code optFusedOnGpu(false)}), and on a GPU the one-pass kernel within float rounding of it. Runs
 * on {@link TestDevice}'s device.
 */
class CheckpointableAdamWTest {

    private static final long[] SIZES = {1, 5, 4096, 100_003};

    private static CheckpointableAdamW adam(boolean fused) {
        return CheckpointableAdamW.builder()
                .optLearningRateTracker(Tracker.fixed(3e-3f))
                .optWeightDecays(0.01f)
                .optFusedOnGpu(fused)
                .build();
    }

    /** Weights after `steps` updates, starting from the same numbers on every call. */
    private static float[][] train(
            Device device, boolean direct, boolean fused, float scale, int steps) {
        CheckpointableAdamW opt = adam(fused);
        float[][] out = new float[SIZES.length][];
        try (NDManager m = NDManager.newBaseManager(device)) {
            for (int i = 0; i < SIZES.length; i++) {
                Engine.getInstance().setRandomSeed(11 + i);
                NDArray w = m.randomNormal(new Shape(SIZES[i]));
                w.setRequiresGradient(true);
                for (int s = 0; s < steps; s++) {
                    Engine.getInstance().setRandomSeed(100 * i + s);
                    try (NDArray g = m.randomNormal(new Shape(SIZES[i]));
                            GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                        gc.backward(w.mul(g).sum()); // the weight's own gradient becomes g
                    }
                    if (direct) {
                        opt.updateFromGradient("p" + i, w, scale);
                    } else {
                        try (NDArray own = w.getGradient()) {
                            if (scale != 1f) {
                                own.muli(scale); // as GradientClipping.clip
                            }
                            try (NDArray copy = own.duplicate()) { // as DJL's parameter server
                                opt.update("p" + i, w, copy);
                            }
                        }
                    }
                    try (NDArray own = w.getGradient()) {
                        assertEquals(0f, own.abs().max().getFloat(), "gradient zeroed, step " + s);
                    }
                }
                out[i] = w.toFloatArray();
            }
        }
        return out;
    }

    @Test
    void directUpdateIsTheTrainersUpdate() {
        Device d = TestDevice.device();
        for (float scale : new float[] {1f, 0.37f}) {
            float[][] viaTrainer = train(d, false, false, scale, 3);
            float[][] direct = train(d, true, false, scale, 3);
            for (int i = 0; i < SIZES.length; i++) {
                assertArrayEquals(
                        viaTrainer[i],
                        direct[i],
                        "engine update, n=" + SIZES[i] + ", scale " + scale + " on " + d);
            }
        }
    }

    @Test
    void fusedGpuUpdateIsWithinRoundingOfTheEngines() {
        Device d = TestDevice.device();
        if (!d.isGpu()) {
            // On the CPU "fused" changes nothing: the same engine update, bit for bit.
            float[][] a = train(d, true, true, 0.5f, 2);
            float[][] b = train(d, true, false, 0.5f, 2);
            for (int i = 0; i < SIZES.length; i++) {
                assertArrayEquals(b[i], a[i], "CPU, n=" + SIZES[i]);
            }
            return;
        }
        assertTrue(
                CheckpointableAdamW.fusedOnGpu(),
                "the plug-in must see the GPU (and "
                        + CheckpointableAdamW.FUSED_ENV
                        + " be unset)");
        for (float scale : new float[] {1f, 0.37f}) {
            for (boolean direct : new boolean[] {true, false}) {
                float[][] engine = train(d, direct, false, scale, 4);
                float[][] fused = train(d, direct, true, scale, 4);
                for (int i = 0; i < SIZES.length; i++) {
                    double worst = 0;
                    for (int j = 0; j < engine[i].length; j++) {
                        double diff =
                                Math.abs(fused[i][j] - engine[i][j])
                                        / (1e-3 + Math.abs(engine[i][j]));
                        worst = Math.max(worst, diff);
                    }
                    assertTrue(
                            worst <= 1e-6,
                            "fused vs engine on "
                                    + d
                                    + ", n="
                                    + SIZES[i]
                                    + ", scale "
                                    + scale
                                    + (direct ? ", direct" : ", via the trainer")
                                    + ": relative difference "
                                    + worst);
                }
            }
        }
    }
}
