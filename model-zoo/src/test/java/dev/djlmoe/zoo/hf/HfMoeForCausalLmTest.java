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
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.train.EpTrainer;
import dev.djlmoe.train.StepResult;
import dev.djlmoe.zoo.nn.CausalLmLoss;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The Hugging Face architectures train through the EP step: for each tiny preset at a batch of 4 x
 * 16 tokens, the staged backward of the EP step (dispatch and combine on the tape, one rank) gives,
 * parameter by parameter (matched by name), the gradients of plain autograd without EP, through MLA
 * or grouped-query attention and the MoE layers, with a hot expert where the router has a
 * correction bias; and every trainable parameter gets a gradient.
 */
class HfMoeForCausalLmTest {

    private static final int B = 4;
    private static final int S = 16;

    /** The expert the correction bias makes hot. */
    private static final int HOT = 3;

    private static long[] randomIds(long seed, int n, long vocab) {
        Random r = new Random(seed);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt((int) vocab);
        }
        return ids;
    }

    /**
     * Every trainable parameter's gradient by name, and which of them are routed experts.
     *
     * @param grads name to gradient
     * @param experts the routed experts' parameter names
     */
    private record Run(Map<String, float[]> grads, Set<String> experts) {}

    /** One step with learning rate 0; returns every trainable parameter's gradient by name. */
    private static Run gradients(
            HfMoeConfig cfg, boolean useEp, long[] ids, long[] labels, int[] hotBiases) {
        try (LocalProcessGroup g = new LocalProcessGroup();
                EpContext ctx = useEp ? EpContext.builder().setProcessGroup(g).build() : null;
                Model model = Model.newInstance("t", Device.cpu(), "PyTorch")) {
            model.setBlock(HfMoeForCausalLm.builder().setConfig(cfg).optContext(ctx).build());
            DefaultTrainingConfig tc =
                    new DefaultTrainingConfig(new CausalLmLoss())
                            .optOptimizer(
                                    Optimizer.sgd()
                                            .setLearningRateTracker(Tracker.fixed(0f))
                                            .build());
            try (Trainer trainer = model.newTrainer(tc)) {
                trainer.initialize(new Shape(B, S));
                // The same starting point for both runs, whatever the initialisers drew.
                Random r = new Random(11);
                for (Pair<String, Parameter> p : model.getBlock().getParameters()) {
                    NDArray a = p.getValue().getArray();
                    float[] v = new float[(int) a.size()];
                    for (int i = 0; i < v.length; i++) {
                        v[i] = (float) (r.nextGaussian() * 0.1);
                    }
                    if (p.getKey().endsWith(MoeRouter.CORRECTION_BIAS)) {
                        v = new float[v.length];
                        v[HOT] = 0.3f; // sigmoid scores lie in (0, 1): expert HOT wins often
                        hotBiases[0]++;
                    }
                    a.set(v);
                }
                NDManager m = trainer.getManager();
                EpTrainer ep = EpTrainer.builder().setTrainer(trainer).optContext(ctx).build();
                List<String> names = ep.parameterNames();
                Map<String, float[]> grads = new LinkedHashMap<>();
                StepResult res =
                        ep.stepWithGradientHook(
                                new NDList(m.create(ids, new Shape(B, S))),
                                new NDList(m.create(labels, new Shape(B, S))),
                                gs -> {
                                    assertEquals(names.size(), gs.size(), "names vs gradients");
                                    for (int i = 0; i < gs.size(); i++) {
                                        grads.put(names.get(i), gs.get(i).toFloatArray());
                                    }
                                });
                assertTrue(Float.isFinite(res.loss()), "loss " + res.loss());
                // One row of loads per MoE layer, each counting every token's top-k selections.
                int moeLayers = 0;
                for (int i = 0; i < cfg.numLayers(); i++) {
                    moeLayers += cfg.isMoeLayer(i) ? 1 : 0;
                }
                assertEquals(moeLayers, res.layerLoads().length, "rows of layer loads");
                for (long[] row : res.layerLoads()) {
                    assertEquals(cfg.numExperts(), row.length, "experts in a layer's loads");
                    assertEquals(
                            (long) B * S * cfg.topK(),
                            Arrays.stream(row).sum(),
                            "selections in a layer: " + Arrays.toString(row));
                }
                assertTrue(Arrays.equals(res.layerLoads()[0], res.expertLoad()));
                if (hotBiases[0] > 0) {
                    // The hot expert really is hot in the first MoE layer.
                    long[] load = res.expertLoad();
                    long total = 0;
                    for (long l : load) {
                        total += l;
                    }
                    assertTrue(
                            load[HOT] * load.length > 2 * total,
                            "expert " + HOT + " is not hot: loads " + Arrays.toString(load));
                }
                return new Run(grads, Set.copyOf(ep.expertParameterNames()));
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny", "tiny-deepseek-v2", "tiny-qwen3-moe"})
    void stagedBackwardEqualsPlainAutogradParameterByParameter(String preset) {
        HfMoeConfig cfg = HfMoeConfig.preset(preset);
        long[] ids = randomIds(1, B * S, cfg.vocabSize());
        long[] labels = randomIds(2, B * S, cfg.vocabSize());
        int[] hotPlain = new int[1];
        int[] hotEp = new int[1];
        Run plainRun = gradients(cfg, false, ids, labels, hotPlain);
        Run epRun = gradients(cfg, true, ids, labels, hotEp);
        Map<String, float[]> plain = plainRun.grads();
        Map<String, float[]> ep = epRun.grads();
        assertEquals(plain.keySet(), ep.keySet(), "parameter names");
        if (preset.equals("tiny")) {
            assertEquals(3, hotEp[0], "correction biases set (one per MoE layer)");
        }
        int experts = 0;
        for (Map.Entry<String, float[]> e : plain.entrySet()) {
            String name = e.getKey();
            float[] a = e.getValue();
            float[] b = ep.get(name);
            assertEquals(a.length, b.length, name);
            float scale = 0f;
            for (float v : a) {
                scale = Math.max(scale, Math.abs(v));
            }
            assertTrue(
                    scale > 1e-6f, preset + ": " + name + " got no gradient (max " + scale + ")");
            for (int j = 0; j < a.length; j++) {
                float d = Math.abs(a[j] - b[j]);
                assertTrue(
                        d <= 1e-4f * scale + 1e-7f,
                        preset + ": " + name + " [" + j + "]: " + a[j] + " vs " + b[j]);
            }
            experts += epRun.experts().contains(name) ? 1 : 0;
        }
        assertTrue(experts >= 3, preset + ": only " + experts + " expert parameters compared");
    }
}
