package dev.djlmoe.nn;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.nn.core.Linear;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;

/**
 * The gate of a Mixture-of-Experts layer: it picks {@code K} of {@code E} routed experts for every
 * token and gives each pick a weight.
 *
 * <p>It implements DeepSeek-V3's gate (the official {@code inference/model.py} {@code Gate}, and
 * Hugging Face {@code DeepseekV3TopkRouter}) and the classic softmax top-k gate (DeepSeek-V2-Lite,
 * Qwen-MoE, Mixtral). For token {@code t} with hidden state {@code u_t}:
 *
 * <ol>
 *   <li>{@code s_t = score(u_t W^T)} in float32, where score is sigmoid or softmax ({@link
 *       ScoreFunction}); these unbiased scores are the third output (the sequence balance loss
 *       needs them).
 *   <li>Selection scores {@code s'_t = s_t + b}, where {@code b} is {@code e_score_correction_bias}
 *       (only with {@link Builder#optCorrectionBias(boolean)}); {@code b} only changes which
 *       experts are picked, never a weight.
 *   <li>Group limit (when {@code n_group > 1}): the experts form {@code n_group} contiguous groups
 *       of {@code E / n_group}; a group's score is the sum of its best {@code groupScoreTopN} (2 by
 *       default, DeepSeek-V3) selection scores; the best {@code topk_group} groups are kept and all
 *       experts of the other groups are masked with {@code -inf} (as {@code model.py}; Hugging Face
 *       masks with 0).
 *   <li>{@code idx_t = topk(s'_t, K)}, in descending order of {@code s'}.
 *   <li>{@code w_t = s_t[idx_t]} (unbiased scores); with {@code norm_topk_prob} {@code w_t /=
 *       (sum(w_t) + 1e-20)}; then {@code w_t *= routed_scaling_factor}.
 * </ol>
 *
 * <p>The gradient reaches {@code weight} (and {@code u}) through the gathered weights and through
 * the scores; the selection itself is not differentiable.
 *
 * <p>Parameters (names as in Hugging Face checkpoints, {@code mlp.gate.*}):
 *
 * <ul>
 *   <li>{@code weight}: [E, H], the input size H is inferred at initialisation as in {@link
 *       Linear}; initialised like {@code Linear}'s weight unless {@link #setInitializer} says
 *       otherwise.
 *   <li>{@code e_score_correction_bias}: [E] float32, zeros, only with a correction bias. It is not
 *       trained by gradient (it has no gradient, so DJL's {@code ParameterStore} and optimizers
 *       leave it alone); {@link #updateCorrectionBias(NDArray, float)} moves it.
 * </ul>
 *
 * <p>Shapes:
 *
 * <ul>
 *   <li>input {@code u}: [T, H] float32
 *   <li>output {@code topk_idx}: [T, K] int64, in [0, E)
 *   <li>output {@code topk_weights}: [T, K] float32
 *   <li>output {@code scores}: [T, E] float32, unbiased sigmoid/softmax scores
 * </ul>
 *
 * <p>The router should be constructed using {@link MoeRouter.Builder}.
 */
public class MoeRouter extends AbstractBlock {

    /** The name of the gate weight parameter, as in Hugging Face checkpoints. */
    public static final String WEIGHT = "weight";

    /** The name of the correction bias parameter, as in Hugging Face checkpoints. */
    public static final String CORRECTION_BIAS = "e_score_correction_bias";

    /** The epsilon Hugging Face adds to the sum of the top-k weights before dividing by it. */
    public static final float NORM_EPSILON = 1e-20f;

    private static final byte VERSION = 1;

    private final RouterConfig config;
    private final Parameter weight;
    private final Parameter correctionBias;

    /**
     * Creates a router; use {@link #builder()}.
     *
     * @param config the validated settings
     */
    @SuppressWarnings("this-escape")
    protected MoeRouter(RouterConfig config) {
        super(VERSION);
        this.config = config;
        weight =
                addParameter(
                        Parameter.builder().setName(WEIGHT).setType(Parameter.Type.WEIGHT).build());
        if (config.hasCorrectionBias()) {
            correctionBias =
                    addParameter(
                            Parameter.builder()
                                    .setName(CORRECTION_BIAS)
                                    .setType(Parameter.Type.BIAS)
                                    .optRequiresGrad(false)
                                    .build());
        } else {
            correctionBias = null;
        }
    }

    /**
     * Returns the settings of this router.
     *
     * @return the settings of this router
     */
    public RouterConfig getConfig() {
        return config;
    }

    /**
     * Returns the gate weight parameter {@code weight}: [E, H].
     *
     * @return the gate weight parameter
     */
    public Parameter getWeight() {
        return weight;
    }

    /**
     * Returns the correction bias parameter {@code e_score_correction_bias}: [E], or {@code null}
     * when this router has none.
     *
     * @return the correction bias parameter or {@code null}
     */
    public Parameter getCorrectionBias() {
        return correctionBias;
    }

    /** {@inheritDoc} */
    @Override
    protected NDList forwardInternal(
            ParameterStore parameterStore,
            NDList inputs,
            boolean training,
            PairList<String, Object> params) {
        NDArray u = inputs.get(0);
        NDArray weightArr = parameterStore.getValue(weight, u.getDevice(), training);
        NDArray biasArr = parameterStore.getValue(correctionBias, u.getDevice(), training);
        return route(u, weightArr, biasArr, config);
    }

    /** {@inheritDoc} */
    @Override
    public Shape[] getOutputShapes(Shape[] inputs) {
        long t = inputs[0].get(0);
        return new Shape[] {
            new Shape(t, config.getTopK()),
            new Shape(t, config.getTopK()),
            new Shape(t, config.getNumExperts())
        };
    }

    /** {@inheritDoc} */
    @Override
    public void prepare(Shape[] inputShapes) {
        Shape input = inputShapes[0];
        if (input.dimension() != 2) {
            throw new IllegalArgumentException(
                    "MoeRouter input u must have shape [T, H], got " + input);
        }
        weight.setShape(new Shape(config.getNumExperts(), input.get(1)));
        if (correctionBias != null) {
            correctionBias.setShape(new Shape(config.getNumExperts()));
        }
    }

    /**
     * Applies aux-loss-free load balancing (DeepSeek-V3 section 2.1.2) to this router's correction
     * bias: {@code b_i += gamma * sign(mean(load) - load_i)}. Call it after the optimizer step with
     * the token counts of the global batch (summed over all data-parallel ranks); it records no
     * gradient and changes the parameter array in place.
     *
     * <p>When a {@code ParameterStore} keeps copies of the parameter on other devices, those copies
     * do not see the change; on a single device the store uses the parameter's own array.
     *
     * @param globalTokensPerExpert load_i, the number of (token, expert) picks per expert: [E], any
     *     numeric type
     * @param gamma the bias update speed (0.001 in DeepSeek-V3)
     * @throws IllegalStateException if this router has no correction bias or is not initialised
     * @throws IllegalArgumentException if the shape is not [E] or gamma is not finite
     */
    public void updateCorrectionBias(NDArray globalTokensPerExpert, float gamma) {
        applyBiasDelta(correctionBiasDelta(globalTokensPerExpert, config.getNumExperts(), gamma));
    }

    /**
     * Applies aux-loss-free load balancing with host-side counts; the same as {@link
     * #updateCorrectionBias(NDArray, float)}.
     *
     * @param globalTokensPerExpert load_i, the number of (token, expert) picks per expert: E counts
     *     of the global batch
     * @param gamma the bias update speed (0.001 in DeepSeek-V3)
     * @throws IllegalStateException if this router has no correction bias or is not initialised
     * @throws IllegalArgumentException if the length is not E or gamma is not finite
     */
    public void updateCorrectionBias(long[] globalTokensPerExpert, float gamma) {
        applyBiasDelta(correctionBiasDelta(globalTokensPerExpert, config.getNumExperts(), gamma));
    }

    private void applyBiasDelta(float[] delta) {
        if (correctionBias == null) {
            throw new IllegalStateException(
                    "updateCorrectionBias needs a router built with optCorrectionBias(true)");
        }
        if (!correctionBias.isInitialized()) {
            throw new IllegalStateException(
                    "updateCorrectionBias called before the router was initialised");
        }
        NDArray bias = correctionBias.getArray();
        try (NDArray d = bias.getManager().create(delta).toDevice(bias.getDevice(), false)) {
            bias.addi(d);
        }
    }

    /**
     * Computes the aux-loss-free bias step {@code gamma * sign(mean(load) - load_i)} on the host.
     *
     * @param tokensPerExpert load_i: [E], any numeric type
     * @param numExperts the expected E
     * @param gamma the bias update speed
     * @return the step to add to the bias: E floats, each in {-gamma, 0, +gamma}
     * @throws IllegalArgumentException if the shape is not [E] or gamma is not finite
     */
    public static float[] correctionBiasDelta(
            NDArray tokensPerExpert, int numExperts, float gamma) {
        if (!tokensPerExpert.getShape().equals(new Shape(numExperts))) {
            throw new IllegalArgumentException(
                    "globalTokensPerExpert must have shape ["
                            + numExperts
                            + "], got "
                            + tokensPerExpert.getShape());
        }
        try (NDArray asDouble = tokensPerExpert.toType(DataType.FLOAT64, true)) {
            return signStep(asDouble.toDoubleArray(), gamma);
        }
    }

    /**
     * Computes the aux-loss-free bias step {@code gamma * sign(mean(load) - load_i)} from host
     * counts.
     *
     * @param tokensPerExpert load_i: E counts
     * @param numExperts the expected E
     * @param gamma the bias update speed
     * @return the step to add to the bias: E floats, each in {-gamma, 0, +gamma}
     * @throws IllegalArgumentException if the length is not E or gamma is not finite
     */
    public static float[] correctionBiasDelta(long[] tokensPerExpert, int numExperts, float gamma) {
        if (tokensPerExpert.length != numExperts) {
            throw new IllegalArgumentException(
                    "globalTokensPerExpert must have length "
                            + numExperts
                            + ", got "
                            + tokensPerExpert.length);
        }
        double[] load = new double[numExperts];
        for (int i = 0; i < numExperts; i++) {
            load[i] = tokensPerExpert[i];
        }
        return signStep(load, gamma);
    }

    private static float[] signStep(double[] load, float gamma) {
        if (!Float.isFinite(gamma)) {
            throw new IllegalArgumentException("gamma must be finite, got " + gamma);
        }
        double mean = 0;
        for (double l : load) {
            mean += l;
        }
        mean /= load.length;
        float[] delta = new float[load.length];
        for (int i = 0; i < load.length; i++) {
            delta[i] = (float) (gamma * Math.signum(mean - load[i]));
        }
        return delta;
    }

    /**
     * Counts how many tokens picked each expert: {@code count[e] = #{(t, k) : idx[t, k] == e}};
     * entries equal to -1 are skipped.
     *
     * @param topkIdx topk_idx: [T, K] int64 (or int32), in [-1, E)
     * @param numExperts E
     * @return tokens per expert: [E] int64, on the manager of {@code topkIdx}
     * @throws IllegalArgumentException if an index is outside [-1, E)
     */
    public static NDArray countTokensPerExpert(NDArray topkIdx, int numExperts) {
        long[] idx = toLongs(topkIdx, "topkIdx");
        long[] counts = new long[numExperts];
        for (int i = 0; i < idx.length; i++) {
            long e = idx[i];
            if (e < -1 || e >= numExperts) {
                throw new IllegalArgumentException(
                        "topkIdx must be in [-1, " + numExperts + "), got " + e + " at flat " + i);
            }
            if (e >= 0) {
                counts[(int) e]++;
            }
        }
        return topkIdx.getManager().create(counts);
    }

    /**
     * Routes tokens: the functional form of {@link MoeRouter} (see the class description for the
     * math).
     *
     * @param u hidden states: [T, H] float32
     * @param weight gate weight: [E, H] float32
     * @param correctionBias e_score_correction_bias: [E] float32, or {@code null} for none; must be
     *     non-null exactly when {@code config.hasCorrectionBias()}
     * @param config the router settings
     * @return NDList of topk_idx [T, K] int64, topk_weights [T, K] float32, scores [T, E] float32
     * @throws IllegalArgumentException on a wrong shape or type
     */
    public static NDList route(
            NDArray u, NDArray weight, NDArray correctionBias, RouterConfig config) {
        int e = config.getNumExperts();
        int k = config.getTopK();
        Shape us = u.getShape();
        if (us.dimension() != 2) {
            throw new IllegalArgumentException("u must have shape [T, H], got " + us);
        }
        if (u.getDataType() != DataType.FLOAT32) {
            throw new IllegalArgumentException("u must be float32, got " + u.getDataType());
        }
        if (!weight.getShape().equals(new Shape(e, us.get(1)))) {
            throw new IllegalArgumentException(
                    "weight must have shape ["
                            + e
                            + ", "
                            + us.get(1)
                            + "], got "
                            + weight.getShape());
        }
        if (config.hasCorrectionBias() != (correctionBias != null)) {
            throw new IllegalArgumentException(
                    "correctionBias must be "
                            + (config.hasCorrectionBias() ? "given" : "null")
                            + " for "
                            + config);
        }
        if (correctionBias != null && !correctionBias.getShape().equals(new Shape(e))) {
            throw new IllegalArgumentException(
                    "correctionBias must have shape [" + e + "], got " + correctionBias.getShape());
        }
        long t = us.get(0);

        NDArray logits = Linear.linear(u, weight).singletonOrThrow(); // [T, E]
        NDArray scores = config.getScoreFunction().apply(logits); // [T, E]
        logits.close();

        NDArray topkIdx = select(scores, correctionBias, config); // [T, K] int64

        NDArray weights = scores.gather(topkIdx, 1); // [T, K], differentiable w.r.t. scores
        if (config.isNormTopkProb()) {
            NDArray denominator =
                    weights.sum(new int[] {1}, true)
                            .add(Autograd.scalar(weights, NORM_EPSILON)); // [T, 1]
            NDArray normalised = weights.div(denominator);
            denominator.close();
            weights.close();
            weights = normalised;
        }
        if (config.getRoutedScalingFactor() != 1f) {
            // Autograd.scalar, not mul(Number): DJL's Number overloads free the scalar autograd
            // keeps.
            NDArray scaled = weights.mul(Autograd.scalar(weights, config.getRoutedScalingFactor()));
            weights.close();
            weights = scaled;
        }
        assert topkIdx.getShape().equals(new Shape(t, k));
        return new NDList(topkIdx, weights, scores);
    }

    /**
     * Picks the top-k experts of every token from detached scores (no autograd graph).
     *
     * @param scores unbiased scores: [T, E]
     * @param bias correction bias: [E] or null
     * @param config the router settings
     * @return topk_idx: [T, K] int64
     */
    private static NDArray select(NDArray scores, NDArray bias, RouterConfig config) {
        NDManager manager = scores.getManager();
        Device device = scores.getDevice();
        int e = config.getNumExperts();
        int g = config.getNumGroups();
        long t = scores.getShape().get(0);
        NDList temps = new NDList();
        try {
            NDArray sel = scores.stopGradient(); // [T, E], shares storage, no graph
            temps.add(sel);
            if (bias != null) {
                sel = sel.add(bias); // [T, E] = s + b (b has no gradient)
                temps.add(sel);
            }
            if (g > 1) {
                int perGroup = e / g;
                NDArray grouped = sel.reshape(t, g, perGroup); // [T, G, E/G]
                temps.add(grouped);
                NDArray groupScores; // [T, G]
                if (config.getGroupScoreTopN() == 1) {
                    groupScores = grouped.max(new int[] {2});
                } else {
                    NDList best = grouped.topK(config.getGroupScoreTopN(), 2, true, false);
                    temps.addAll(best);
                    groupScores = best.get(0).sum(new int[] {2});
                }
                temps.add(groupScores);
                NDList keptGroups = groupScores.topK(config.getTopkGroup(), 1, true, false);
                temps.addAll(keptGroups);
                NDArray keptIdx = keptGroups.get(1); // [T, topk_group] int64
                NDArray zeros = manager.zeros(new Shape(t, g), DataType.FLOAT32, device);
                NDArray ones = manager.ones(keptIdx.getShape(), DataType.FLOAT32, device);
                NDArray keep = zeros.scatter(keptIdx, ones, 1); // [T, G], 1 = kept group
                NDArray keep3 = keep.reshape(t, g, 1); // [T, G, 1]
                NDArray keepWide = keep3.broadcast(t, g, perGroup); // [T, G, E/G]
                NDArray keepFlat = keepWide.reshape(t, e); // [T, E]
                NDArray keepExperts = keepFlat.gt(Autograd.scalar(keepFlat, 0.5)); // [T, E] boolean
                temps.addAll(new NDList(keep3, keepWide, keepFlat));
                NDArray minusInf =
                        manager.full(
                                new Shape(), Float.NEGATIVE_INFINITY, DataType.FLOAT32, device);
                NDArray masked = NDArrays.where(keepExperts, sel, minusInf); // [T, E]
                temps.addAll(new NDList(zeros, ones, keep, keepExperts, minusInf, masked));
                sel = masked;
            }
            NDList top = sel.topK(config.getTopK(), 1, true, true);
            top.get(0).close();
            NDArray idx = top.get(1); // [T, K] int64
            if (idx.getDataType() != DataType.INT64) {
                NDArray converted = idx.toType(DataType.INT64, false);
                idx.close();
                idx = converted;
            }
            return idx;
        } finally {
            for (NDArray a : temps) {
                a.close();
            }
        }
    }

    static long[] toLongs(NDArray idx, String name) {
        DataType type = idx.getDataType();
        if (type == DataType.INT64) {
            return idx.toLongArray();
        }
        if (type == DataType.INT32) {
            int[] ints = idx.toIntArray();
            long[] longs = new long[ints.length];
            for (int i = 0; i < ints.length; i++) {
                longs[i] = ints[i];
            }
            return longs;
        }
        throw new IllegalArgumentException(name + " must be int64 or int32, got " + type);
    }

    /**
     * Creates a builder to build a {@code MoeRouter}.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /** The Builder to construct a {@link MoeRouter}. */
    public static final class Builder {

        private int numExperts;
        private int topK;
        private ScoreFunction scoreFunction = ScoreFunction.SIGMOID;
        private int numGroups = 1;
        private int topkGroup = 1;
        private int groupScoreTopN = -1;
        private boolean normTopkProb = true;
        private float routedScalingFactor = 1f;
        private boolean correctionBias;

        Builder() {}

        /**
         * Sets the number of routed experts E ({@code n_routed_experts}). Required.
         *
         * @param numExperts the number of routed experts, at least 1
         * @return this Builder
         */
        public Builder setNumExperts(int numExperts) {
            this.numExperts = numExperts;
            return this;
        }

        /**
         * Sets the number of experts picked per token K ({@code num_experts_per_tok}). Required.
         *
         * @param topK the number of experts per token, in [1, E]
         * @return this Builder
         */
        public Builder setTopK(int topK) {
            this.topK = topK;
            return this;
        }

        /**
         * Sets the score function ({@code scoring_func}); default {@link ScoreFunction#SIGMOID}.
         *
         * @param scoreFunction the score function
         * @return this Builder
         */
        public Builder optScoreFunction(ScoreFunction scoreFunction) {
            this.scoreFunction = scoreFunction;
            return this;
        }

        /**
         * Sets the number of expert groups ({@code n_group}); default 1 (no group limit). E must be
         * a multiple of it.
         *
         * @param numGroups the number of expert groups
         * @return this Builder
         */
        public Builder optNumGroups(int numGroups) {
            this.numGroups = numGroups;
            return this;
        }

        /**
         * Sets the number of groups kept per token ({@code topk_group}); default 1.
         *
         * @param topkGroup the number of groups kept, in [1, n_group]
         * @return this Builder
         */
        public Builder optTopkGroup(int topkGroup) {
            this.topkGroup = topkGroup;
            return this;
        }

        /**
         * Sets how many of the best selection scores of a group are summed into the group score;
         * default {@code min(2, E / n_group)} (DeepSeek-V3). Use 1 (the group maximum) for
         * DeepSeek-V2's {@code group_limited_greedy}.
         *
         * @param groupScoreTopN the number of scores summed, in [1, E / n_group]
         * @return this Builder
         */
        public Builder optGroupScoreTopN(int groupScoreTopN) {
            this.groupScoreTopN = groupScoreTopN;
            return this;
        }

        /**
         * Sets whether the K weights of a token are divided by their sum (plus 1e-20) ({@code
         * norm_topk_prob}); default true.
         *
         * @param normTopkProb whether to normalise the top-k weights
         * @return this Builder
         */
        public Builder optNormTopkProb(boolean normTopkProb) {
            this.normTopkProb = normTopkProb;
            return this;
        }

        /**
         * Sets the factor applied to the weights last ({@code routed_scaling_factor}, 2.5 for
         * DeepSeek-V3); default 1.
         *
         * @param routedScalingFactor a finite positive factor
         * @return this Builder
         */
        public Builder optRoutedScalingFactor(float routedScalingFactor) {
            this.routedScalingFactor = routedScalingFactor;
            return this;
        }

        /**
         * Sets whether the router has DeepSeek-V3's {@code e_score_correction_bias} (added to the
         * scores for selection only, moved by {@link MoeRouter#updateCorrectionBias}); default
         * false. Only with {@link ScoreFunction#SIGMOID}.
         *
         * @param correctionBias whether to use a correction bias
         * @return this Builder
         */
        public Builder optCorrectionBias(boolean correctionBias) {
            this.correctionBias = correctionBias;
            return this;
        }

        /**
         * Returns the validated settings without building a block (for {@link MoeRouter#route}).
         *
         * @return the validated settings
         * @throws IllegalArgumentException naming the argument and its value if a setting is
         *     invalid
         */
        public RouterConfig buildConfig() {
            check(numExperts >= 1, "numExperts must be >= 1, got " + numExperts);
            check(
                    topK >= 1 && topK <= numExperts,
                    "topK must be in [1, numExperts=" + numExperts + "], got " + topK);
            check(scoreFunction != null, "scoreFunction must not be null, got null");
            check(numGroups >= 1, "numGroups must be >= 1, got " + numGroups);
            check(
                    numExperts % numGroups == 0,
                    "numGroups must divide numExperts="
                            + numExperts
                            + ", got numGroups="
                            + numGroups);
            check(
                    topkGroup >= 1 && topkGroup <= numGroups,
                    "topkGroup must be in [1, numGroups=" + numGroups + "], got " + topkGroup);
            int perGroup = numExperts / numGroups;
            check(
                    topK <= topkGroup * perGroup,
                    "topK must be <= topkGroup * numExperts / numGroups = "
                            + topkGroup * perGroup
                            + " (experts in the kept groups), got topK="
                            + topK);
            int topN = groupScoreTopN == -1 ? Math.min(2, perGroup) : groupScoreTopN;
            check(
                    topN >= 1 && topN <= perGroup,
                    "groupScoreTopN must be in [1, numExperts / numGroups = "
                            + perGroup
                            + "], got "
                            + groupScoreTopN);
            check(
                    Float.isFinite(routedScalingFactor) && routedScalingFactor > 0,
                    "routedScalingFactor must be finite and > 0, got " + routedScalingFactor);
            check(
                    !correctionBias || scoreFunction == ScoreFunction.SIGMOID,
                    "correctionBias needs scoreFunction SIGMOID, got correctionBias=true with "
                            + scoreFunction);
            return new RouterConfig(
                    numExperts,
                    topK,
                    scoreFunction,
                    numGroups,
                    topkGroup,
                    topN,
                    normTopkProb,
                    routedScalingFactor,
                    correctionBias);
        }

        /**
         * Returns the constructed {@code MoeRouter}.
         *
         * @return the constructed {@code MoeRouter}
         * @throws IllegalArgumentException naming the argument and its value if a setting is
         *     invalid
         */
        public MoeRouter build() {
            return new MoeRouter(buildConfig());
        }

        private static void check(boolean condition, String message) {
            if (!condition) {
                throw new IllegalArgumentException(message);
            }
        }
    }
}
