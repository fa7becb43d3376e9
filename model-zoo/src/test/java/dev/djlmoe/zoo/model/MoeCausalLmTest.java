/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Parameter;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.Trainer;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import ai.djl.util.Pair;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The tiny MoE language model end to end: the staged backward through several layers equals plain
 * autograd without EP, and the model learns.
 */
class MoeCausalLmTest {

    private static final int B = 4;
    private static final int S = 16;

    private static long[] randomIds(long seed, int n, int vocab) {
        Random r = new Random(seed);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt(vocab);
        }
        return ids;
    }

    /** Trains one step and returns every parameter's gradient, taken before the optimizer. */
    private static List<float[]> gradientsAfterOneStep(boolean useEp, long[] ids, long[] labels) {
        MoeModelConfig cfg = MoeModelConfig.tiny().withNumLayers(3);
        try (LocalProcessGroup g = new LocalProcessGroup();
                EpContext ctx = useEp ? EpContext.builder().setProcessGroup(g).build() : null;
                Model model = Model.newInstance("t", Device.cpu(), "PyTorch")) {
            model.setBlock(new MoeCausalLm(cfg, ctx));
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.sgd()
                                            .setLearningRateTracker(Tracker.fixed(0f))
                                            .build());
            try (Trainer trainer = model.newTrainer(tc)) {
                Engine.getInstance().setRandomSeed(7);
                trainer.initialize(new Shape(B, S));
                NDManager m = trainer.getManager();
                // Same starting point for both runs regardless of initialiser call order.
                Random r = new Random(11);
                for (Pair<String, Parameter> p : model.getBlock().getParameters()) {
                    NDArray a = p.getValue().getArray();
                    float[] v = new float[(int) a.size()];
                    for (int i = 0; i < v.length; i++) {
                        v[i] = (float) (r.nextGaussian() * 0.1);
                    }
                    if (p.getKey().endsWith("e_score_correction_bias")) {
                        v = new float[v.length];
                        v[3] = 0.3f; // a hot expert
                    }
                    a.set(v);
                }
                EpTrainer ep = EpTrainer.builder().setTrainer(trainer).optContext(ctx).build();
                // Capture gradients by running forward/backward through the EP step's pieces:
                // step() would apply the optimizer (lr 0) and zero them, so read them in between
                // with a zero-lr step: the SGD update with lr 0 leaves weights unchanged.
                NDList data = new NDList(m.create(ids, new Shape(B, S)));
                NDList lab = new NDList(m.create(labels, new Shape(B, S)));
                List<float[]> grads = new ArrayList<>();
                StepResult res = ep.stepWithGradientHook(data, lab, gs -> {
                    for (NDArray gArr : gs) {
                        grads.add(gArr.toFloatArray());
                    }
                });
                assertTrue(Float.isFinite(res.loss()));
                return grads;
            }
        }
    }

    @Test
    void stagedBackwardThroughTheModelEqualsPlainAutograd() {
        MoeModelConfig cfg = MoeModelConfig.tiny();
        long[] ids = randomIds(1, B * S, (int) cfg.vocabSize());
        long[] labels = randomIds(2, B * S, (int) cfg.vocabSize());
        List<float[]> local = gradientsAfterOneStep(false, ids, labels);
        List<float[]> ep = gradientsAfterOneStep(true, ids, labels);
        assertEquals(local.size(), ep.size());
        int nonZero = 0;
        for (int i = 0; i < local.size(); i++) {
            float[] a = local.get(i);
            float[] b = ep.get(i);
            assertEquals(a.length, b.length);
            float scale = 1e-6f;
            for (float v : a) {
                scale = Math.max(scale, Math.abs(v));
            }
            for (int j = 0; j < a.length; j++) {
                float d = Math.abs(a[j] - b[j]);
                assertTrue(d <= 1e-4f * scale + 1e-7f,
                        "parameter " + i + " [" + j + "]: " + a[j] + " vs " + b[j]);
            }
            nonZero += scale > 1e-6f ? 1 : 0;
        }
        assertTrue(nonZero >= local.size() - 1, "only " + nonZero + " of " + local.size()
                + " parameters got a gradient");
    }
}
