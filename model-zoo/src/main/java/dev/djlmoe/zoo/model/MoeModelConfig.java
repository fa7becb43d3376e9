/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.model;

import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.ScoreFunction;

/**
 * Settings of a decoder-only MoE language model (a DeepSeek-V3-style layout: the first {@code
 * firstKDense} layers use a dense SwiGLU MLP, the rest an MoE layer with shared experts).
 *
 * @param vocabSize V
 * @param hiddenSize H
 * @param numLayers decoder layers
 * @param numHeads attention heads
 * @param denseIntermediateSize width of the dense MLP layers
 * @param firstKDense how many leading layers are dense
 * @param numExperts routed experts E
 * @param topK experts per token K
 * @param moeIntermediateSize width of each routed expert
 * @param numSharedExperts shared experts per MoE layer
 * @param scoreFunction sigmoid (DeepSeek-V3) or softmax routing
 * @param numGroups expert groups for group-limited routing (1 = none)
 * @param topkGroup groups kept per token
 * @param normTopkProb normalise the top-k weights to sum 1
 * @param routedScalingFactor multiplies the routing weights
 * @param correctionBias use the aux-loss-free correction bias
 * @param seqAuxAlpha weight of the sequence-wise balance loss (0 = off)
 * @param rmsNormEps epsilon of RMSNorm
 * @param ropeTheta RoPE base
 * @param tieWordEmbeddings share the embedding table with the LM head
 * @param initStd standard deviation of the embedding initialisation
 * @deprecated the settings of the deprecated {@link MoeCausalLm}; use {@link
 *     dev.djlmoe.zoo.hf.HfMoeConfig} (presets {@code tiny}, {@code tiny-deepseek-v2}, {@code
 *     tiny-qwen3-moe}, or a Hugging Face {@code config.json}).
 */
@Deprecated
public record MoeModelConfig(
        long vocabSize,
        long hiddenSize,
        int numLayers,
        int numHeads,
        long denseIntermediateSize,
        int firstKDense,
        int numExperts,
        int topK,
        long moeIntermediateSize,
        int numSharedExperts,
        ScoreFunction scoreFunction,
        int numGroups,
        int topkGroup,
        boolean normTopkProb,
        float routedScalingFactor,
        boolean correctionBias,
        float seqAuxAlpha,
        float rmsNormEps,
        float ropeTheta,
        boolean tieWordEmbeddings,
        float initStd) {

    /**
     * The tiny DeepSeek-V3-style preset used by tests and the embedded default: 4 layers (1
     * dense), H=64, 8 experts of width 32, top-2 of 4 groups (2 kept), 1 shared expert, sigmoid
     * routing with correction bias, byte vocabulary (256).
     *
     * @return the configuration
     */
    public static MoeModelConfig tiny() {
        return new MoeModelConfig(
                256, 64, 4, 4, 128, 1, 8, 2, 32, 1, ScoreFunction.SIGMOID, 4, 2, true, 1.0f, true,
                1e-4f, 1e-6f, 10000f, false, 0.02f);
    }

    /**
     * Returns a copy with another vocabulary size.
     *
     * @param v the vocabulary size
     * @return the new configuration
     */
    public MoeModelConfig withVocabSize(long v) {
        return new MoeModelConfig(
                v, hiddenSize, numLayers, numHeads, denseIntermediateSize, firstKDense, numExperts,
                topK, moeIntermediateSize, numSharedExperts, scoreFunction, numGroups, topkGroup,
                normTopkProb, routedScalingFactor, correctionBias, seqAuxAlpha, rmsNormEps,
                ropeTheta, tieWordEmbeddings, initStd);
    }

    /**
     * Returns a copy with another number of layers.
     *
     * @param layers the layer count
     * @return the new configuration
     */
    public MoeModelConfig withNumLayers(int layers) {
        return new MoeModelConfig(
                vocabSize, hiddenSize, layers, numHeads, denseIntermediateSize, firstKDense,
                numExperts, topK, moeIntermediateSize, numSharedExperts, scoreFunction, numGroups,
                topkGroup, normTopkProb, routedScalingFactor, correctionBias, seqAuxAlpha,
                rmsNormEps, ropeTheta, tieWordEmbeddings, initStd);
    }

    /**
     * Returns a router builder for these settings.
     *
     * @return the builder
     */
    public MoeRouter.Builder routerBuilder() {
        MoeRouter.Builder b =
                MoeRouter.builder()
                        .setNumExperts(numExperts)
                        .setTopK(topK)
                        .optScoreFunction(scoreFunction)
                        .optNormTopkProb(normTopkProb)
                        .optRoutedScalingFactor(routedScalingFactor)
                        .optCorrectionBias(correctionBias);
        if (numGroups > 1) {
            b.optNumGroups(numGroups).optTopkGroup(topkGroup);
        }
        return b;
    }

    /**
     * Checks the settings.
     *
     * @throws IllegalArgumentException naming the first bad field, its value and the limit
     */
    public void validate() {
        positive("vocab_size", vocabSize);
        positive("hidden_size", hiddenSize);
        positive("num_hidden_layers", numLayers);
        positive("num_attention_heads", numHeads);
        positive("n_routed_experts", numExperts);
        positive("num_experts_per_tok", topK);
        positive("moe_intermediate_size", moeIntermediateSize);
        if (hiddenSize % numHeads != 0) {
            throw new IllegalArgumentException(
                    "hidden_size " + hiddenSize + " is not divisible by num_attention_heads "
                            + numHeads);
        }
        if (topK > numExperts) {
            throw new IllegalArgumentException(
                    "num_experts_per_tok " + topK + " exceeds n_routed_experts " + numExperts);
        }
        if (firstKDense < 0 || firstKDense > numLayers) {
            throw new IllegalArgumentException(
                    "first_k_dense_replace " + firstKDense + " is outside [0, " + numLayers + "]");
        }
    }

    private static void positive(String name, long v) {
        if (v <= 0) {
            throw new IllegalArgumentException(name + " = " + v + " must be positive");
        }
    }
}
