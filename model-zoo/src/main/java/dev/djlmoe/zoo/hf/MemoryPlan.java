/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import java.util.Locale;

/**
 * The parameter counts of a model ({@link #parameters}, {@link #denseParameters}, {@link
 * #routedExpertParameters}, {@link #attentionParameters}) and the memory one expert-parallel rank
 * needs to train it: parameters, gradients, AdamW state and activations, all float32 (as DJL's
 * PyTorch engine trains here).
 *
 * <ul>
 *   <li>Parameters per rank: every replicated tensor (embeddings, attention, norms, dense MLPs,
 *       shared experts, routers, head) plus {@code 1 / W} of the routed experts.
 *   <li>Gradients: one per trainable parameter (the correction biases have none).
 *   <li>Optimizer state: AdamW's two moments per trainable parameter.
 *   <li>Activations: an estimate of what autograd keeps for the backward pass of {@code T = B * S}
 *       tokens per rank, per token and layer: the inputs and outputs of the two RMSNorms ({@code
 *       4H}); for MLA the query ({@code N (dn + dr)}, with q-LoRA also {@code 2 r_q}), the rotated
 *       query ({@code N dr}), the {@code kv_a} output ({@code r_kv + dr}), the normed latent
 *       ({@code r_kv}), the {@code kv_b} output ({@code N (dn + dv)}), the rotated key ({@code
 *       dr}), the context ({@code N dv}) and the attention probabilities ({@code N S}); for
 *       grouped-query attention {@code q, k, v}, their rotations, probabilities and context; a
 *       dense MLP keeps {@code 3 I} (gate, up, their product); an MoE layer keeps the router scores
 *       ({@code E}), the {@code K} dispatched copies of the token ({@code K H}) with their expert
 *       activations ({@code 3 K I_moe}) — balanced routing sends each rank {@code K T} copies
 *       whatever W is — and the shared experts' {@code 3 n_shared I_moe}; outside the layers the
 *       embedding output and final norm ({@code 2H}) and the logits with their log-softmax ({@code
 *       2V}).
 * </ul>
 *
 * @param config the model
 * @param epSize W, the number of expert-parallel ranks
 * @param batch B, sequences per rank per step
 * @param seqLen S, tokens per sequence
 */
public record MemoryPlan(HfMoeConfig config, int epSize, long batch, long seqLen) {

    /** Bytes of one float32. */
    public static final long BYTES = 4;

    /**
     * Checks the arguments.
     *
     * @param config the model
     * @param epSize W, dividing the number of experts
     * @param batch B
     * @param seqLen S
     */
    public MemoryPlan {
        if (epSize <= 0 || config.numExperts() % epSize != 0) {
            throw new IllegalArgumentException(
                    "EP size " + epSize + " must divide n_routed_experts = " + config.numExperts());
        }
        if (batch <= 0 || seqLen <= 0) {
            throw new IllegalArgumentException(
                    "batch " + batch + " and seqLen " + seqLen + " must be positive");
        }
    }

    /**
     * Counts the parameters of a model (all experts, no MTP modules).
     *
     * @param config the model
     * @return the number of parameters
     */
    public static long parameters(HfMoeConfig config) {
        return denseParameters(config) + routedExpertParameters(config);
    }

    /**
     * Counts the parameters of all routed experts of a model.
     *
     * @param config the model
     * @return {@code moe_layers * E * 3 * H * I}
     */
    public static long routedExpertParameters(HfMoeConfig config) {
        return (long) config.numMoeLayers()
                * config.numExperts()
                * 3L
                * config.hiddenSize()
                * config.moeIntermediateSize();
    }

    /**
     * Counts every parameter of a model that is not a routed expert (embeddings, attention, norms,
     * dense MLPs, shared experts, routers and correction biases, head).
     *
     * @param config the model
     * @return the count
     */
    public static long denseParameters(HfMoeConfig config) {
        long h = config.hiddenSize();
        long vocab = config.vocabSize();
        long n = vocab * h; // embed_tokens
        if (!config.tieWordEmbeddings()) {
            n += vocab * h;
        }
        n += h; // final norm
        long attn = attentionParameters(config);
        for (int i = 0; i < config.numLayers(); i++) {
            n += 2 * h + attn;
            if (config.isMoeLayer(i)) {
                n += (long) config.numExperts() * h; // router
                if (config.family() == HfMoeConfig.Family.DEEPSEEK_V3) {
                    n += config.numExperts(); // correction bias
                }
                n += 3L * h * config.moeIntermediateSize() * config.numSharedExperts();
            } else {
                n += 3L * h * config.intermediateSize();
            }
        }
        return n;
    }

    /**
     * Counts the parameters of one attention block of a model.
     *
     * @param config the model
     * @return the count
     */
    public static long attentionParameters(HfMoeConfig config) {
        long h = config.hiddenSize();
        long nh = config.numHeads();
        boolean bias = config.attentionBias();
        if (config.family().isMla()) {
            long qLora = config.qLoraRank();
            long kvLora = config.kvLoraRank();
            long dr = config.qkRopeHeadDim();
            long dv = config.vHeadDim();
            long qk = config.qkNopeHeadDim() + dr;
            long n = 0;
            if (qLora > 0) {
                n += h * qLora + qLora + qLora * nh * qk;
                if (bias) {
                    n += qLora;
                }
            } else {
                n += h * nh * qk;
            }
            n += h * (kvLora + dr) + kvLora;
            n += kvLora * nh * (config.qkNopeHeadDim() + dv);
            n += nh * dv * h;
            if (bias) {
                n += kvLora + dr + h;
            }
            return n;
        }
        long d = config.headDim();
        long kv = config.numKvHeads();
        long n = h * nh * d + 2 * h * kv * d + nh * d * h + 2 * d;
        if (bias) {
            n += nh * d + 2 * kv * d + h;
        }
        return n;
    }

    /**
     * Parameters held by one rank.
     *
     * @return the count
     */
    public long parametersPerRank() {
        return denseParameters(config) + routedExpertParameters(config) / epSize;
    }

    /**
     * Gradients held by one rank (trainable parameters).
     *
     * @return the count
     */
    public long gradientsPerRank() {
        long noGrad =
                config.family() == HfMoeConfig.Family.DEEPSEEK_V3
                        ? (long) config.numMoeLayers() * config.numExperts()
                        : 0;
        return parametersPerRank() - noGrad;
    }

    /**
     * AdamW state held by one rank (two moments per trainable parameter).
     *
     * @return the count
     */
    public long optimizerStatePerRank() {
        return 2 * gradientsPerRank();
    }

    /**
     * Activation elements kept per token for one decoder layer's attention and norms.
     *
     * @return the count
     */
    public long attentionActivationsPerToken() {
        long h = config.hiddenSize();
        long n = config.numHeads();
        long a = 4 * h + n * seqLen;
        if (config.family().isMla()) {
            long dn = config.qkNopeHeadDim();
            long dr = config.qkRopeHeadDim();
            long dv = config.vHeadDim();
            long rkv = config.kvLoraRank();
            if (config.qLoraRank() > 0) {
                a += 2 * config.qLoraRank();
            }
            a += n * (dn + dr) + n * dr + (rkv + dr) + rkv + n * (dn + dv) + dr + n * dv;
        } else {
            long d = config.headDim();
            long g = config.numKvHeads();
            a += n * d + 2 * g * d + n * d + g * d + n * d;
        }
        return a;
    }

    /**
     * Activation elements kept per token for one MoE MLP.
     *
     * @return the count
     */
    public long moeActivationsPerToken() {
        long k = config.topK();
        long inter = config.moeIntermediateSize();
        return config.numExperts()
                + k * config.hiddenSize()
                + 3 * k * inter
                + 3L * config.numSharedExperts() * inter;
    }

    /**
     * Activation elements kept per token for one dense MLP.
     *
     * @return the count
     */
    public long denseActivationsPerToken() {
        return 3 * config.intermediateSize();
    }

    /**
     * Activation elements kept for the whole step of one rank.
     *
     * @return the count
     */
    public long activationsPerRank() {
        long perToken = 2 * config.hiddenSize() + 2 * config.vocabSize();
        for (int i = 0; i < config.numLayers(); i++) {
            perToken += attentionActivationsPerToken();
            perToken +=
                    config.isMoeLayer(i) ? moeActivationsPerToken() : denseActivationsPerToken();
        }
        return perToken * batch * seqLen;
    }

    /**
     * Total bytes per rank.
     *
     * @return bytes
     */
    public long totalBytesPerRank() {
        return BYTES
                * (parametersPerRank()
                        + gradientsPerRank()
                        + optimizerStatePerRank()
                        + activationsPerRank());
    }

    /**
     * A printable table.
     *
     * @return the report
     */
    public String report() {
        StringBuilder sb = new StringBuilder();
        sb.append(
                String.format(
                        Locale.ROOT,
                        "memory plan: %s, EP size %d, %d x %d tokens per rank (float32)%n",
                        config,
                        epSize,
                        batch,
                        seqLen));
        row(sb, "parameters", parametersPerRank());
        row(sb, "gradients", gradientsPerRank());
        row(sb, "optimizer (AdamW)", optimizerStatePerRank());
        row(sb, "activations", activationsPerRank());
        sb.append(
                String.format(
                        Locale.ROOT,
                        "  %-18s %18s %10.2f GiB%n",
                        "total",
                        "",
                        totalBytesPerRank() / (double) (1L << 30)));
        return sb.toString();
    }

    private static void row(StringBuilder sb, String what, long elements) {
        sb.append(
                String.format(
                        Locale.ROOT,
                        "  %-18s %,18d %10.2f GiB%n",
                        what,
                        elements,
                        elements * BYTES / (double) (1L << 30)));
    }
}
