package dev.djlmoe.nn;

/**
 * The validated, immutable settings of a Mixture-of-Experts router (see {@link MoeRouter}).
 *
 * <p>Instances come from {@link MoeRouter.Builder#buildConfig()} (or {@link MoeRouter#getConfig()})
 * and feed the functional form {@link MoeRouter#route}. The field names follow the Hugging Face
 * DeepSeek-V3 configuration: {@code n_routed_experts}, {@code num_experts_per_tok}, {@code
 * scoring_func}, {@code n_group}, {@code topk_group}, {@code norm_topk_prob}, {@code
 * routed_scaling_factor}.
 */
public final class RouterConfig {

    private final int numExperts;
    private final int topK;
    private final ScoreFunction scoreFunction;
    private final int numGroups;
    private final int topkGroup;
    private final int groupScoreTopN;
    private final boolean normTopkProb;
    private final float routedScalingFactor;
    private final boolean correctionBias;

    RouterConfig(
            int numExperts,
            int topK,
            ScoreFunction scoreFunction,
            int numGroups,
            int topkGroup,
            int groupScoreTopN,
            boolean normTopkProb,
            float routedScalingFactor,
            boolean correctionBias) {
        this.numExperts = numExperts;
        this.topK = topK;
        this.scoreFunction = scoreFunction;
        this.numGroups = numGroups;
        this.topkGroup = topkGroup;
        this.groupScoreTopN = groupScoreTopN;
        this.normTopkProb = normTopkProb;
        this.routedScalingFactor = routedScalingFactor;
        this.correctionBias = correctionBias;
    }

    /**
     * Returns the number of routed experts {@code E} ({@code n_routed_experts}).
     *
     * @return the number of routed experts
     */
    public int getNumExperts() {
        return numExperts;
    }

    /**
     * Returns the number of experts chosen per token {@code K} ({@code num_experts_per_tok}).
     *
     * @return the number of experts per token
     */
    public int getTopK() {
        return topK;
    }

    /**
     * Returns the score function ({@code scoring_func}).
     *
     * @return the score function
     */
    public ScoreFunction getScoreFunction() {
        return scoreFunction;
    }

    /**
     * Returns the number of expert groups ({@code n_group}); 1 means no group limit.
     *
     * @return the number of expert groups
     */
    public int getNumGroups() {
        return numGroups;
    }

    /**
     * Returns the number of groups kept per token ({@code topk_group}).
     *
     * @return the number of groups kept per token
     */
    public int getTopkGroup() {
        return topkGroup;
    }

    /**
     * Returns how many of the best (biased) scores of a group are summed to score the group: 2 for
     * DeepSeek-V3, 1 (the maximum) for DeepSeek-V2's {@code group_limited_greedy}.
     *
     * @return the number of scores summed per group
     */
    public int getGroupScoreTopN() {
        return groupScoreTopN;
    }

    /**
     * Returns whether the top-k weights are normalised to sum to one ({@code norm_topk_prob}).
     *
     * @return whether the top-k weights are normalised
     */
    public boolean isNormTopkProb() {
        return normTopkProb;
    }

    /**
     * Returns the factor applied to the weights last ({@code routed_scaling_factor}).
     *
     * @return the routed scaling factor
     */
    public float getRoutedScalingFactor() {
        return routedScalingFactor;
    }

    /**
     * Returns whether selection adds the {@code e_score_correction_bias} (aux-loss-free balancing).
     *
     * @return whether the correction bias is used
     */
    public boolean hasCorrectionBias() {
        return correctionBias;
    }

    /**
     * Returns the number of experts in one group, {@code E / n_group}.
     *
     * @return the number of experts per group
     */
    public int getExpertsPerGroup() {
        return numExperts / numGroups;
    }

    /** {@inheritDoc} */
    @Override
    public String toString() {
        return "RouterConfig{numExperts="
                + numExperts
                + ", topK="
                + topK
                + ", scoreFunction="
                + scoreFunction
                + ", numGroups="
                + numGroups
                + ", topkGroup="
                + topkGroup
                + ", groupScoreTopN="
                + groupScoreTopN
                + ", normTopkProb="
                + normTopkProb
                + ", routedScalingFactor="
                + routedScalingFactor
                + ", correctionBias="
                + correctionBias
                + '}';
    }
}
