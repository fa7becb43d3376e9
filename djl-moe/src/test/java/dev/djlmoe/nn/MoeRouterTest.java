package dev.djlmoe.nn;

import static dev.djlmoe.nn.NnTestSupport.assertClose;
import static dev.djlmoe.nn.NnTestSupport.gaussian;
import static dev.djlmoe.nn.NnTestSupport.sigmoid;
import static dev.djlmoe.nn.NnTestSupport.widen;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Model;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.training.DefaultTrainingConfig;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import ai.djl.training.Trainer;
import ai.djl.training.loss.Loss;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.Tracker;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Random;
import java.util.function.Supplier;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

class MoeRouterTest extends ManagerPerTest {

    private static final int T = 48;
    private static final int H = 24;
    private static final int E = 16;

    /** The float64 loop reference of the router: model.py's Gate, written out. */
    static final class Reference {
        long[] idx;
        double[] weights;
        double[] scores;

        static Reference run(
                double[] u,
                double[] w,
                double[] b,
                int t,
                int h,
                int e,
                RouterConfig c,
                int groupTopN) {
            int k = c.getTopK();
            Reference r = new Reference();
            r.idx = new long[t * k];
            r.weights = new double[t * k];
            r.scores = new double[t * e];
            for (int tok = 0; tok < t; tok++) {
                double[] logits = new double[e];
                for (int x = 0; x < e; x++) {
                    for (int j = 0; j < h; j++) {
                        logits[x] += u[tok * h + j] * w[x * h + j];
                    }
                }
                double[] s = new double[e];
                if (c.getScoreFunction() == ScoreFunction.SIGMOID) {
                    for (int x = 0; x < e; x++) {
                        s[x] = sigmoid(logits[x]);
                    }
                } else {
                    double max = Arrays.stream(logits).max().getAsDouble();
                    double sum = 0;
                    for (int x = 0; x < e; x++) {
                        s[x] = Math.exp(logits[x] - max);
                        sum += s[x];
                    }
                    for (int x = 0; x < e; x++) {
                        s[x] /= sum;
                    }
                }
                double[] sel = new double[e];
                for (int x = 0; x < e; x++) {
                    sel[x] = s[x] + (b == null ? 0 : b[x]);
                }
                int g = c.getNumGroups();
                if (g > 1) {
                    int per = e / g;
                    double[] groupScore = new double[g];
                    for (int gi = 0; gi < g; gi++) {
                        double[] members = Arrays.copyOfRange(sel, gi * per, gi * per + per);
                        Arrays.sort(members);
                        for (int n = 0; n < groupTopN; n++) {
                            groupScore[gi] += members[per - 1 - n];
                        }
                    }
                    Integer[] order = IntStream.range(0, g).boxed().toArray(Integer[]::new);
                    Arrays.sort(order, Comparator.comparingDouble(gi -> -groupScore[gi]));
                    boolean[] kept = new boolean[g];
                    for (int n = 0; n < c.getTopkGroup(); n++) {
                        kept[order[n]] = true;
                    }
                    for (int x = 0; x < e; x++) {
                        if (!kept[x / per]) {
                            sel[x] = Double.NEGATIVE_INFINITY;
                        }
                    }
                }
                Integer[] order = IntStream.range(0, e).boxed().toArray(Integer[]::new);
                Arrays.sort(order, Comparator.comparingDouble(x -> -sel[x]));
                double sum = 0;
                for (int n = 0; n < k; n++) {
                    r.idx[tok * k + n] = order[n];
                    r.weights[tok * k + n] = s[order[n]];
                    sum += s[order[n]];
                }
                for (int n = 0; n < k; n++) {
                    if (c.isNormTopkProb()) {
                        r.weights[tok * k + n] /= sum + 1e-20;
                    }
                    r.weights[tok * k + n] *= c.getRoutedScalingFactor();
                }
                System.arraycopy(s, 0, r.scores, tok * e, e);
            }
            return r;
        }
    }

    /** groupTopN: the group score sums this many best scores (2 = DeepSeek-V3, 1 = V2 max). */
    private void checkAgainstReference(
            RouterConfig config, boolean withBias, int groupTopN, long seed) {
        checkAgainstReference(config, withBias, 0.0, 0.1, groupTopN, seed);
    }

    private void checkAgainstReference(
            RouterConfig config,
            boolean withBias,
            double biasMean,
            double biasStd,
            int groupTopN,
            long seed) {
        Random random = new Random(seed);
        NDArray u = gaussian(manager, random, new Shape(T, H), 1.0);
        NDArray w = gaussian(manager, random, new Shape(E, H), 0.3);
        NDArray b =
                withBias ? gaussian(manager, random, new Shape(E), biasStd).add(biasMean) : null;
        NDList out = MoeRouter.route(u, w, b, config);
        Reference ref =
                Reference.run(
                        widen(u), widen(w), withBias ? widen(b) : null, T, H, E, config, groupTopN);
        assertEquals(new Shape(T, config.getTopK()), out.get(0).getShape());
        assertEquals(DataType.INT64, out.get(0).getDataType());
        assertArrayEquals(ref.idx, out.get(0).toLongArray(), "topk_idx");
        assertClose("topk_weights", ref.weights, out.get(1).toFloatArray(), 1e-6, 1e-5);
        assertClose("scores", ref.scores, out.get(2).toFloatArray(), 1e-7, 1e-5);
    }

    /**
     * DeepSeek-V3's routing at test size: sigmoid scores, top-4 of E experts from the best 2 of 4
     * groups, a correction bias.
     */
    private static MoeRouter.Builder groupLimitedWithBias() {
        return MoeRouter.builder()
                .setNumExperts(E)
                .setTopK(4)
                .optNumGroups(4)
                .optTopkGroup(2)
                .optCorrectionBias(true);
    }

    @Test
    void groupLimitedSigmoidWithBiasMatchesLoopReference() {
        RouterConfig config = groupLimitedWithBias().optRoutedScalingFactor(2.5f).buildConfig();
        for (long seed = 1; seed <= 3; seed++) {
            checkAgainstReference(config, true, 2, seed);
        }
        // strongly negative biased scores: masking with 0 (as Hugging Face does) would differ
        checkAgainstReference(config, true, -1.5, 0.2, 2, 4);
    }

    @Test
    void groupLimitedVariantsMatchLoopReference() {
        // no bias, no normalisation; and the DeepSeek-V2 group maximum (groupScoreTopN = 1)
        checkAgainstReference(
                MoeRouter.builder()
                        .setNumExperts(E)
                        .setTopK(4)
                        .optNumGroups(4)
                        .optTopkGroup(2)
                        .optNormTopkProb(false)
                        .buildConfig(),
                false,
                2,
                11);
        checkAgainstReference(
                MoeRouter.builder()
                        .setNumExperts(E)
                        .setTopK(3)
                        .optScoreFunction(ScoreFunction.SOFTMAX)
                        .optNumGroups(8)
                        .optTopkGroup(3)
                        .optGroupScoreTopN(1)
                        .optNormTopkProb(false)
                        .buildConfig(),
                false,
                1,
                12);
    }

    @Test
    void softmaxTopKWithAndWithoutNormMatchesLoopReference() {
        for (boolean norm : new boolean[] {true, false}) {
            RouterConfig config =
                    MoeRouter.builder()
                            .setNumExperts(E)
                            .setTopK(4)
                            .optScoreFunction(ScoreFunction.SOFTMAX)
                            .optNormTopkProb(norm)
                            .buildConfig();
            checkAgainstReference(config, false, 2, norm ? 21 : 22);
        }
    }

    @Test
    void blockForwardEqualsFunctionalFormAndNamesParametersLikeHuggingFace() {
        MoeRouter router = groupLimitedWithBias().build();
        router.initialize(manager, DataType.FLOAT32, new Shape(T, H));
        assertEquals(
                Arrays.asList(MoeRouter.WEIGHT, MoeRouter.CORRECTION_BIAS),
                router.getParameters().keys());
        assertEquals(new Shape(E, H), router.getWeight().getArray().getShape());
        NDArray bias = router.getCorrectionBias().getArray();
        assertEquals(new Shape(E), bias.getShape());
        assertEquals(0f, bias.abs().sum().getFloat(), "bias starts at zero");
        assertFalse(router.getCorrectionBias().requiresGradient());
        assertFalse(bias.hasGradient(), "bias must carry no gradient");
        bias.set(gaussian(new Random(5), E, 0.1));

        NDArray u = gaussian(manager, new Random(6), new Shape(T, H), 1.0);
        NDList viaBlock = router.forward(new ParameterStore(manager, false), new NDList(u), false);
        NDList viaRoute =
                MoeRouter.route(u, router.getWeight().getArray(), bias, router.getConfig());
        assertArrayEquals(viaRoute.get(0).toLongArray(), viaBlock.get(0).toLongArray());
        assertArrayEquals(viaRoute.get(1).toFloatArray(), viaBlock.get(1).toFloatArray());
        assertArrayEquals(
                new Shape[] {new Shape(T, 4), new Shape(T, 4), new Shape(T, E)},
                router.getOutputShapes(new Shape[] {new Shape(T, H)}));
    }

    @Test
    void biasChangesSelectionButWeightsComeFromUnbiasedScores() {
        RouterConfig config =
                MoeRouter.builder()
                        .setNumExperts(E)
                        .setTopK(2)
                        .optCorrectionBias(true)
                        .optNormTopkProb(false)
                        .buildConfig();
        Random random = new Random(31);
        NDArray u = gaussian(manager, random, new Shape(T, H), 1.0);
        NDArray w = gaussian(manager, random, new Shape(E, H), 0.3);
        NDArray zero = manager.zeros(new Shape(E));
        long[] plain = MoeRouter.route(u, w, zero, config).get(0).toLongArray();
        // expert 7 gets a huge bias: every token now picks it first
        float[] b = new float[E];
        b[7] = 10f;
        NDList biased = MoeRouter.route(u, w, manager.create(b), config);
        long[] idx = biased.get(0).toLongArray();
        float[] weights = biased.get(1).toFloatArray();
        float[] scores = biased.get(2).toFloatArray();
        int changed = 0;
        for (int t = 0; t < T; t++) {
            assertEquals(7, idx[t * 2], "token " + t + " must pick the biased expert first");
            changed += plain[t * 2] != 7 ? 1 : 0;
            for (int k = 0; k < 2; k++) {
                float s = scores[t * E + (int) idx[t * 2 + k]];
                assertEquals(s, weights[t * 2 + k], 0f, "weight is the unbiased score");
                assertTrue(s < 1f, "a biased weight would be above 1");
            }
        }
        assertTrue(changed > T / 2, "the bias must change the selection, changed " + changed);
        // the scores output is the unbiased one
        assertClose(
                "scores", MoeRouter.route(u, w, zero, config).get(2).toFloatArray(), scores, 0, 0);
    }

    @Test
    void correctionBiasUpdateFollowsSignRule() {
        MoeRouter router =
                MoeRouter.builder().setNumExperts(4).setTopK(1).optCorrectionBias(true).build();
        router.initialize(manager, DataType.FLOAT32, new Shape(2, 3));
        // mean load is 3: overloaded expert 0 goes down, underloaded 1 up, 2 and 3 stay
        router.updateCorrectionBias(manager.create(new long[] {5, 1, 3, 3}), 0.001f);
        assertArrayEquals(
                new float[] {-0.001f, 0.001f, 0f, 0f},
                router.getCorrectionBias().getArray().toFloatArray());
        router.updateCorrectionBias(manager.create(new float[] {2f, 0f, 7f, 3f}), 0.5f);
        assertArrayEquals(
                new float[] {0.499f, 0.501f, -0.5f, 0f},
                router.getCorrectionBias().getArray().toFloatArray(),
                1e-7f);
        assertArrayEquals(
                new float[] {-0.25f, 0.25f, 0f, 0.25f},
                MoeRouter.correctionBiasDelta(manager.create(new int[] {9, 1, 4, 2}), 4, 0.25f));
        router.updateCorrectionBias(new long[] {0, 0, 0, 4}, 0.001f);
        assertArrayEquals(
                new float[] {0.5f, 0.502f, -0.499f, -0.001f},
                router.getCorrectionBias().getArray().toFloatArray(),
                1e-7f);
        assertThrows(
                IllegalArgumentException.class,
                () -> router.updateCorrectionBias(new long[] {1, 2, 3}, 1f));
        assertThrows(
                IllegalArgumentException.class,
                () -> router.updateCorrectionBias(new long[] {1, 2, 3, 4}, Float.NaN));
        IllegalArgumentException wrongShape =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> router.updateCorrectionBias(manager.create(new long[] {1, 2}), 1f));
        assertTrue(wrongShape.getMessage().contains("[4]"), wrongShape.getMessage());
        MoeRouter noBias = MoeRouter.builder().setNumExperts(4).setTopK(1).build();
        assertThrows(
                IllegalStateException.class,
                () -> noBias.updateCorrectionBias(manager.create(new long[] {1, 2, 3, 4}), 1f));
    }

    @Test
    void correctionBiasIsSavedAndLoadedWithTheParameters() throws Exception {
        MoeRouter router =
                MoeRouter.builder().setNumExperts(4).setTopK(1).optCorrectionBias(true).build();
        router.initialize(manager, DataType.FLOAT32, new Shape(2, 3));
        router.updateCorrectionBias(new long[] {9, 1, 1, 1}, 0.25f);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        router.saveParameters(new DataOutputStream(bytes));
        MoeRouter loaded =
                MoeRouter.builder().setNumExperts(4).setTopK(1).optCorrectionBias(true).build();
        loaded.loadParameters(
                manager, new DataInputStream(new ByteArrayInputStream(bytes.toByteArray())));
        assertArrayEquals(
                new float[] {-0.25f, 0.25f, 0.25f, 0.25f},
                loaded.getCorrectionBias().getArray().toFloatArray());
        assertArrayEquals(
                router.getWeight().getArray().toFloatArray(),
                loaded.getWeight().getArray().toFloatArray());
        assertFalse(loaded.getCorrectionBias().getArray().hasGradient());
    }

    @Test
    void countTokensPerExpertSkipsMinusOne() {
        NDArray idx = manager.create(new long[][] {{0, 3}, {3, -1}, {2, 3}});
        assertArrayEquals(
                new long[] {1, 0, 1, 3}, MoeRouter.countTokensPerExpert(idx, 4).toLongArray());
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> MoeRouter.countTokensPerExpert(manager.create(new long[] {4}), 4));
        assertTrue(e.getMessage().contains("got 4"), e.getMessage());
    }

    @Test
    void gradientReachesWeightThroughNormalisedSigmoidWeights() {
        RouterConfig config = groupLimitedWithBias().optRoutedScalingFactor(2.5f).buildConfig();
        int t = 8;
        int k = 4;
        Random random = new Random(41);
        NDArray u = gaussian(manager, random, new Shape(t, H), 1.0);
        NDArray w = gaussian(manager, random, new Shape(E, H), 0.3);
        NDArray b = gaussian(manager, random, new Shape(E), 0.1);
        float[] c = gaussian(random, t * k, 1.0);
        w.setRequiresGradient(true);
        long[] idx;
        try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
            NDList out = MoeRouter.route(u, w, b, config);
            idx = out.get(0).toLongArray();
            NDArray loss = out.get(1).mul(manager.create(c, new Shape(t, k))).sum();
            gc.backward(loss);
        }
        // analytic gradient in float64: L = sum_k c_k * scale * s_k / S, S = sum_k s_k
        double[] uu = widen(u);
        double[] ww = widen(w);
        double[] expected = new double[E * H];
        for (int tok = 0; tok < t; tok++) {
            double[] s = new double[k];
            double sum = 0;
            double cs = 0;
            for (int n = 0; n < k; n++) {
                int x = (int) idx[tok * k + n];
                double logit = 0;
                for (int j = 0; j < H; j++) {
                    logit += uu[tok * H + j] * ww[x * H + j];
                }
                s[n] = sigmoid(logit);
                sum += s[n];
                cs += c[tok * k + n] * s[n];
            }
            for (int n = 0; n < k; n++) {
                int x = (int) idx[tok * k + n];
                double dLds = 2.5 * (c[tok * k + n] / sum - cs / (sum * sum));
                double dLdlogit = dLds * s[n] * (1 - s[n]);
                for (int j = 0; j < H; j++) {
                    expected[x * H + j] += dLdlogit * uu[tok * H + j];
                }
            }
        }
        assertClose("d loss / d weight", expected, w.getGradient().toFloatArray(), 1e-6, 1e-4);
    }

    @Test
    void optimizerLeavesCorrectionBiasAlone() {
        MoeRouter router = groupLimitedWithBias().build();
        try (Model model = Model.newInstance("router-test")) {
            model.setBlock(router);
            DefaultTrainingConfig trainingConfig =
                    new DefaultTrainingConfig(Loss.l2Loss())
                            .optOptimizer(
                                    Optimizer.sgd()
                                            .setLearningRateTracker(Tracker.fixed(0.5f))
                                            .build());
            try (Trainer trainer = model.newTrainer(trainingConfig)) {
                trainer.initialize(new Shape(T, H));
                float[] bias = gaussian(new Random(51), E, 0.1);
                router.getCorrectionBias().getArray().set(bias);
                float[] weightBefore = router.getWeight().getArray().toFloatArray();
                NDManager m = trainer.getManager();
                NDArray u = gaussian(m, new Random(52), new Shape(T, H), 1.0);
                try (GradientCollector gc = trainer.newGradientCollector()) {
                    NDList out = trainer.forward(new NDList(u));
                    NDArray loss =
                            out.get(1)
                                    .mul(gaussian(m, new Random(53), new Shape(T, 4), 1.0))
                                    .sum()
                                    .add(out.get(2).square().sum());
                    gc.backward(loss);
                }
                trainer.step();
                assertArrayEquals(bias, router.getCorrectionBias().getArray().toFloatArray());
                assertFalse(
                        Arrays.equals(weightBefore, router.getWeight().getArray().toFloatArray()),
                        "the gate weight must have been trained");
            }
        }
    }

    @Test
    void invalidBuilderArgumentsNameArgumentAndValue() {
        expectInvalid(() -> MoeRouter.builder().setNumExperts(0).setTopK(1), "numExperts", "0");
        expectInvalid(() -> MoeRouter.builder().setNumExperts(16).setTopK(17), "topK", "17");
        expectInvalid(() -> MoeRouter.builder().setNumExperts(16), "topK", "0");
        expectInvalid(
                () -> MoeRouter.builder().setNumExperts(16).setTopK(2).optNumGroups(3),
                "numGroups",
                "3");
        expectInvalid(
                () -> MoeRouter.builder().setNumExperts(16).setTopK(2).optNumGroups(0),
                "numGroups",
                "0");
        expectInvalid(
                () ->
                        MoeRouter.builder()
                                .setNumExperts(16)
                                .setTopK(2)
                                .optNumGroups(4)
                                .optTopkGroup(5),
                "topkGroup",
                "5");
        expectInvalid(
                () ->
                        MoeRouter.builder()
                                .setNumExperts(16)
                                .setTopK(5)
                                .optNumGroups(4)
                                .optTopkGroup(1),
                "topK",
                "5");
        expectInvalid(
                () ->
                        MoeRouter.builder()
                                .setNumExperts(16)
                                .setTopK(2)
                                .optNumGroups(4)
                                .optTopkGroup(2)
                                .optGroupScoreTopN(5),
                "groupScoreTopN",
                "5");
        expectInvalid(
                () -> MoeRouter.builder().setNumExperts(16).setTopK(2).optRoutedScalingFactor(0f),
                "routedScalingFactor",
                "0.0");
        expectInvalid(
                () ->
                        MoeRouter.builder()
                                .setNumExperts(16)
                                .setTopK(2)
                                .optRoutedScalingFactor(Float.NaN),
                "routedScalingFactor",
                "NaN");
        expectInvalid(
                () ->
                        MoeRouter.builder()
                                .setNumExperts(16)
                                .setTopK(2)
                                .optScoreFunction(ScoreFunction.SOFTMAX)
                                .optCorrectionBias(true),
                "correctionBias",
                "SOFTMAX");
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class, () -> ScoreFunction.fromString("relu"));
        assertTrue(e.getMessage().contains("relu"), e.getMessage());
        assertEquals(ScoreFunction.SIGMOID, ScoreFunction.fromString("Sigmoid"));
    }

    @Test
    void routeRejectsWrongInputs() {
        RouterConfig config =
                MoeRouter.builder()
                        .setNumExperts(4)
                        .setTopK(2)
                        .optCorrectionBias(true)
                        .buildConfig();
        NDArray u = manager.ones(new Shape(3, 5));
        NDArray w = manager.ones(new Shape(4, 5));
        NDArray b = manager.zeros(new Shape(4));
        assertMessage(() -> MoeRouter.route(u, manager.ones(new Shape(4, 6)), b, config), "(4, 6)");
        assertMessage(() -> MoeRouter.route(u, w, null, config), "correctionBias");
        assertMessage(() -> MoeRouter.route(u.reshape(15), w, b, config), "(15)");
        assertMessage(
                () -> MoeRouter.route(u.toType(DataType.FLOAT64, false), w, b, config), "float64");
        assertNotEquals(null, MoeRouter.route(u, w, b, config));
    }

    private static void expectInvalid(
            Supplier<MoeRouter.Builder> builder, String argument, String value) {
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> builder.get().build());
        assertTrue(
                e.getMessage().contains(argument) && e.getMessage().contains(value),
                "message must name " + argument + " and " + value + ": " + e.getMessage());
    }

    private static void assertMessage(Runnable call, String fragment) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }
}
