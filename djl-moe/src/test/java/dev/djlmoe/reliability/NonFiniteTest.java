/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.NonFiniteGradientException;
import dev.djlmoe.train.StepResult;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * NaN and Inf where detection is cheap: the training step's global gradient norm (computed for
 * clipping anyway and agreed over ranks). A step whose inputs hold a NaN or an Inf must be refused
 * with {@link NonFiniteGradientException} before the optimizer runs: parameters bit-identical,
 * gradients reset, and the next clean step trains normally. Where detection is not cheap (every
 * element of dispatch/combine inputs, checkpoint weights) nothing is checked; see README.md,
 * section Reliability.
 */
class NonFiniteTest {

    private static List<float[]> snapshot(Model model) {
        List<float[]> out = new ArrayList<>();
        for (var p : model.getBlock().getParameters()) {
            Parameter param = p.getValue();
            out.add(param.getArray().toFloatArray());
        }
        return out;
    }

    @Test
    void aNonFiniteStepIsRefusedAndLeavesTheModelIntact() {
        int h = 16;
        try (LocalProcessGroup group = new LocalProcessGroup();
                EpContext ctx = EpContext.builder().setProcessGroup(group).build();
                Model model = Model.newInstance("nan", Device.cpu(), "PyTorch");
                NDManager m = NDManager.newBaseManager()) {
            model.setBlock(
                    MoeLayer.builder()
                            .setHiddenSize(h)
                            .setExpertIntermediateSize(8)
                            .setRouter(
                                    MoeRouter.builder()
                                            .setNumExperts(4)
                                            .setTopK(2)
                                            .optCorrectionBias(true))
                            .optContext(ctx)
                            .build());
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(Loss.l2Loss())
                            .optOptimizer(
                                    Optimizer.adamW()
                                            .optLearningRateTracker(Tracker.fixed(1e-2f))
                                            .build())
                            .optDevices(new Device[] {Device.cpu()});
            try (Trainer trainer = model.newTrainer(tc)) {
                trainer.initialize(new Shape(6, h));
                EpTrainer ep =
                        EpTrainer.builder()
                                .setTrainer(trainer)
                                .optContext(ctx)
                                .optMaxGradNorm(1f)
                                .optBiasUpdateRate(1e-3f)
                                .build();
                NDArray x = m.randomNormal(new Shape(6, h));
                NDArray y = m.randomNormal(new Shape(6, h));
                StepResult first = ep.step(new NDList(x), new NDList(y));
                assertTrue(Float.isFinite(first.loss()) && Float.isFinite(first.gradNorm()));
                for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY}) {
                    List<float[]> before = snapshot(model);
                    float[] poisoned = x.toFloatArray();
                    poisoned[17] = bad;
                    NDArray px = m.create(poisoned, x.getShape());
                    NonFiniteGradientException e =
                            assertThrows(
                                    NonFiniteGradientException.class,
                                    () -> ep.step(new NDList(px), new NDList(y)),
                                    "input with " + bad);
                    assertFalse(Double.isFinite(e.gradNorm()), e.getMessage());
                    assertTrue(
                            e.getMessage().contains("global gradient norm = NaN")
                                    || e.getMessage().contains("Infinity"),
                            e.getMessage());
                    assertTrue(e.getMessage().contains("parameters unchanged"), e.getMessage());
                    List<float[]> after = snapshot(model);
                    for (int i = 0; i < before.size(); i++) {
                        assertArrayEquals(
                                before.get(i),
                                after.get(i),
                                "parameter " + i + " changed by a refused step");
                    }
                }
                // The gradients were reset: the next clean step is finite and trains.
                List<float[]> before = snapshot(model);
                StepResult next = ep.step(new NDList(x), new NDList(y));
                assertTrue(
                        Float.isFinite(next.loss()) && Float.isFinite(next.gradNorm()),
                        "loss " + next.loss() + ", norm " + next.gradNorm());
                List<float[]> after = snapshot(model);
                boolean changed = false;
                for (int i = 0; i < before.size(); i++) {
                    for (int j = 0; j < before.get(i).length; j++) {
                        assertTrue(Float.isFinite(after.get(i)[j]), "parameter " + i);
                        changed |= before.get(i)[j] != after.get(i)[j];
                    }
                }
                assertTrue(changed, "the clean step did not update the parameters");
            }
        }
    }
}
