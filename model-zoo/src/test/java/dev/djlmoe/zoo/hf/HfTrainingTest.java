/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import static org.junit.jupiter.api.Assertions.assertEquals;
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
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The Hugging Face architectures train through the EP step: the staged backward (dispatch and
 * combine on the tape) gives the gradients of plain autograd, through MLA or grouped-query
 * attention and the MoE layers.
 */
class HfTrainingTest {

    private static final int B = 2;
    private static final int S = 8;

    private static List<float[]> gradients(HfMoeConfig cfg, boolean useEp, long[] ids, long[] lab) {
        try (LocalProcessGroup g = new LocalProcessGroup();
                EpContext ctx = useEp ? EpContext.builder().setProcessGroup(g).build() : null;
                Model model = Model.newInstance("t", Device.cpu(), "PyTorch")) {
            model.setBlock(new HfMoeForCausalLm(cfg, ctx));
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.sgd()
                                            .setLearningRateTracker(Tracker.fixed(0f))
                                            .build());
            try (Trainer trainer = model.newTrainer(tc)) {
                trainer.initialize(new Shape(B, S));
                Random r = new Random(11);
                for (Pair<String, Parameter> p : model.getBlock().getParameters()) {
                    NDArray a = p.getValue().getArray();
                    float[] v = new float[(int) a.size()];
                    for (int i = 0; i < v.length; i++) {
                        v[i] = (float) (r.nextGaussian() * 0.2);
                    }
                    a.set(v);
                }
                NDManager m = trainer.getManager();
                EpTrainer ep = EpTrainer.builder().setTrainer(trainer).optContext(ctx).build();
                List<float[]> grads = new ArrayList<>();
                StepResult res =
                        ep.stepWithGradientHook(
                                new NDList(m.create(ids, new Shape(B, S))),
                                new NDList(m.create(lab, new Shape(B, S))),
                                gs -> {
                                    for (NDArray a : gs) {
                                        grads.add(a.toFloatArray());
                                    }
                                });
                assertTrue(Float.isFinite(res.loss()));
                return grads;
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny", "tiny-qwen3-moe"})
    void stagedBackwardEqualsPlainAutograd(String preset) {
        HfMoeConfig cfg = HfMoeConfig.preset(preset);
        Random r = new Random(5);
        long[] ids = new long[B * S];
        long[] lab = new long[B * S];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = r.nextInt((int) cfg.vocabSize());
            lab[i] = r.nextInt((int) cfg.vocabSize());
        }
        List<float[]> plain = gradients(cfg, false, ids, lab);
        List<float[]> ep = gradients(cfg, true, ids, lab);
        assertEquals(plain.size(), ep.size());
        int nonZero = 0;
        for (int i = 0; i < plain.size(); i++) {
            float[] a = plain.get(i);
            float[] b = ep.get(i);
            float scale = 1e-6f;
            for (float v : a) {
                scale = Math.max(scale, Math.abs(v));
            }
            for (int j = 0; j < a.length; j++) {
                assertTrue(Math.abs(a[j] - b[j]) <= 1e-4f * scale + 1e-7f,
                        preset + " parameter " + i + " [" + j + "]: " + a[j] + " vs " + b[j]);
            }
            nonZero += scale > 1e-6f ? 1 : 0;
        }
        assertTrue(nonZero >= plain.size() / 2, nonZero + " of " + plain.size() + " got gradients");
    }
}
