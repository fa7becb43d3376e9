/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpAutograd;
import dev.djlmoe.ep.EpContext;

/**
 * A DeepSeek-V3-style Mixture-of-Experts layer: {@code y = sum_k w_k * Expert_{idx_k}(u) +
 * SharedExperts(u)} with expert parallelism.
 *
 * <p>With an {@link EpContext}, the experts are sharded in contiguous blocks of {@code E / W} over
 * the context's ranks: the router picks experts, the EP buffer dispatches each token once to every
 * rank holding one of them, the local {@link RoutedExperts} run on what arrived, and combine sums
 * the results back at the source. In training mode, dispatch and combine are recorded on the
 * context's tape (the staged backward). Without a context every expert is local and the layer is a
 * plain DJL autograd graph (the reference the EP path must equal).
 *
 * <p>Input {@code u [B, S, H]} or {@code [T, H]}; output the same shape. Children (Hugging Face
 * names): {@code gate} ({@link MoeRouter}), {@code experts} ({@link RoutedExperts}, local experts
 * only) and, with shared experts, {@code shared_experts} ({@link SwiGluMlp} of width {@code
 * n_shared * moe_intermediate_size}).
 */
public final class MoeLayer extends AbstractBlock {

    private static final byte VERSION = 1;

    private final long hiddenSize;
    private final RouterConfig routerConfig;
    private final EpContext context;
    private final float seqAuxAlpha;
    private final int rank;
    private final int worldSize;
    private final MoeRouter gate;
    private final RoutedExperts experts;
    private final SwiGluMlp sharedExperts;
    private long[] loadAccumulator;
    private NDArray auxLoss;

    private MoeLayer(Builder b) {
        super(VERSION);
        hiddenSize = b.hiddenSize;
        routerConfig = b.router.buildConfig();
        context = b.context;
        seqAuxAlpha = b.seqAuxAlpha;
        rank = context == null ? 0 : context.group().rank();
        worldSize = context == null ? 1 : context.group().worldSize();
        int e = routerConfig.getNumExperts();
        gate = addChildBlock("gate", b.router.build());
        experts =
                addChildBlock(
                        "experts",
                        RoutedExperts.builder()
                                .setNumExperts(e / worldSize)
                                .setHiddenSize(hiddenSize)
                                .setIntermediateSize(b.expertIntermediateSize)
                                .optPrecision(b.precision)
                                .build());
        if (b.numSharedExperts > 0) {
            sharedExperts =
                    addChildBlock(
                            "shared_experts",
                            SwiGluMlp.builder()
                                    .setHiddenSize(hiddenSize)
                                    .setIntermediateSize(
                                            b.numSharedExperts * b.expertIntermediateSize)
                                    .build());
        } else {
            sharedExperts = null;
        }
        loadAccumulator = new long[e];
    }

    /**
     * Creates a builder.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * Returns the router.
     *
     * @return the gate
     */
    public MoeRouter getGate() {
        return gate;
    }

    /**
     * Returns this rank's experts.
     *
     * @return the routed experts
     */
    public RoutedExperts getExperts() {
        return experts;
    }

    /**
     * Returns the shared experts, or null.
     *
     * @return the shared experts
     */
    public SwiGluMlp getSharedExperts() {
        return sharedExperts;
    }

    /**
     * Returns the router settings.
     *
     * @return the router configuration
     */
    public RouterConfig getRouterConfig() {
        return routerConfig;
    }

    /**
     * Returns the global id of this rank's first expert ({@code rank * E / W}).
     *
     * @return the first local expert's global id
     */
    public int firstLocalExpert() {
        return rank * (routerConfig.getNumExperts() / worldSize);
    }

    /**
     * Returns and resets the selections per expert made by this rank's tokens since the last call
     * (training forwards only): the local part of the load that aux-loss-free balancing uses.
     *
     * @return {@code [E]} counts
     */
    public long[] takeLoad() {
        long[] out = loadAccumulator;
        loadAccumulator = new long[routerConfig.getNumExperts()];
        return out;
    }

    /**
     * Returns and clears the sequence-wise balance loss of the last training forward (a scalar in
     * the graph), or null when the loss is off or nothing ran since the last call.
     *
     * @return the auxiliary loss
     */
    public NDArray takeAuxLoss() {
        NDArray out = auxLoss;
        auxLoss = null;
        return out;
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray input = inputs.singletonOrThrow();
        Shape inShape = input.getShape();
        if (inShape.get(inShape.dimension() - 1) != hiddenSize) {
            throw new IllegalArgumentException(
                    "MoeLayer input has shape " + inShape + ", expected last axis " + hiddenSize);
        }
        long tokens = inShape.size() / hiddenSize;
        NDArray u = input.reshape(tokens, hiddenSize); // [T, H]
        Tape tape = training && context != null ? context.tape() : null;
        if (training && context != null && tape == null && Autograd.isRecording()) {
            throw new IllegalStateException(
                    "MoeLayer runs in training mode with expert parallelism but no tape is active:"
                            + " run the step through EpTrainer or EpContext.beginTape()");
        }
        if (tape != null) {
            u = tape.cut(u); // bounds the backward walk of the dispatch's inputs to this layer
        }
        NDList routed = gate.forward(ps, new NDList(u), training);
        NDArray topkIdx = routed.get(0); // [T, K] global expert ids
        NDArray topkWeights = routed.get(1); // [T, K]
        NDArray scores = routed.get(2); // [T, E]
        if (training) {
            accumulateLoad(topkIdx);
            if (seqAuxAlpha > 0f && inShape.dimension() == 3) {
                auxLoss =
                        SequenceBalanceLoss.compute(
                                scores,
                                topkIdx,
                                (int) inShape.get(0),
                                (int) inShape.get(1),
                                routerConfig.getTopK(),
                                seqAuxAlpha);
            }
        }
        NDArray out;
        if (context == null) {
            out = experts.forward(ps, new NDList(u, topkIdx, topkWeights), training).head();
        } else {
            DispatchResult d =
                    EpAutograd.dispatch(
                            tape,
                            context.buffer(),
                            u,
                            topkIdx,
                            topkWeights,
                            routerConfig.getNumExperts(),
                            context.expertAlignment(),
                            context.dispatchWire(),
                            context.backwardWire());
            NDArray y =
                    experts.forward(
                                    ps,
                                    new NDList(d.recvX(), d.recvTopkIdx(), d.recvTopkWeights()),
                                    training,
                                    expertParams(tape))
                            .head(); // [R, H]
            out =
                    EpAutograd.combine(
                            tape,
                            context.buffer(),
                            y,
                            d.handle(),
                            context.combineWire(),
                            context.backwardWire());
            if (tape == null) {
                d.handle().close();
            }
        }
        if (sharedExperts != null) {
            out = out.add(sharedExperts.forward(ps, new NDList(u), training).head());
        }
        return new NDList(out.reshape(inShape));
    }

    private static PairList<String, Object> expertParams(Tape tape) {
        PairList<String, Object> p = new PairList<>();
        if (tape != null) {
            p.add(RoutedExperts.TAPE_PARAM, tape);
        }
        return p;
    }

    private void accumulateLoad(NDArray topkIdx) {
        long[] idx = topkIdx.toLongArray();
        for (long e : idx) {
            if (e >= 0) {
                loadAccumulator[(int) e]++;
            }
        }
    }

    @Override
    public void initializeChildBlocks(NDManager manager, DataType dataType, Shape... inputShapes) {
        Shape flat = new Shape(-1L, hiddenSize);
        gate.initialize(manager, dataType, flat);
        long k = routerConfig.getTopK();
        experts.initialize(
                manager, dataType, flat, new Shape(-1L, k), new Shape(-1L, k));
        if (sharedExperts != null) {
            sharedExperts.initialize(manager, dataType, flat);
        }
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0]};
    }

    /** Builds a {@link MoeLayer}. */
    public static final class Builder {
        private long hiddenSize;
        private long expertIntermediateSize;
        private int numSharedExperts;
        private MoeRouter.Builder router;
        private EpContext context;
        private float seqAuxAlpha;
        private ExpertPrecision precision = ExpertPrecision.FP32;

        Builder() {}

        /**
         * Sets the numerics of the routed experts' GEMMs (default fp32; MXFP8 emulates MXFP8
         * rounding on CPU).
         *
         * @param precision the numerics
         * @return this builder
         */
        public Builder optExpertPrecision(ExpertPrecision precision) {
            this.precision = precision;
            return this;
        }

        /**
         * Sets the model width H (required).
         *
         * @param hiddenSize H
         * @return this builder
         */
        public Builder setHiddenSize(long hiddenSize) {
            this.hiddenSize = hiddenSize;
            return this;
        }

        /**
         * Sets the width of each routed expert, {@code moe_intermediate_size} (required).
         *
         * @param size the expert width
         * @return this builder
         */
        public Builder setExpertIntermediateSize(long size) {
            this.expertIntermediateSize = size;
            return this;
        }

        /**
         * Sets the router (required): number of experts, top-k, score function, groups, scaling.
         *
         * @param router the router's builder
         * @return this builder
         */
        public Builder setRouter(MoeRouter.Builder router) {
            this.router = router;
            return this;
        }

        /**
         * Sets the number of shared experts (default 0).
         *
         * @param n shared experts, fused into one MLP of width {@code n * moe_intermediate_size}
         * @return this builder
         */
        public Builder optNumSharedExperts(int n) {
            this.numSharedExperts = n;
            return this;
        }

        /**
         * Runs the layer with expert parallelism over the context's ranks (default: none, every
         * expert local, plain autograd).
         *
         * @param context the EP context shared by the model's MoE layers
         * @return this builder
         */
        public Builder optContext(EpContext context) {
            this.context = context;
            return this;
        }

        /**
         * Sets the weight of the sequence-wise balance loss (default 0 = off; DeepSeek-V3 uses
         * 1e-4). The trainer adds it to the step's loss ({@link #takeAuxLoss()}); it needs
         * {@code [B, S, H]} input.
         *
         * @param alpha the loss weight
         * @return this builder
         */
        public Builder optSeqAuxAlpha(float alpha) {
            this.seqAuxAlpha = alpha;
            return this;
        }

        /**
         * Builds the layer.
         *
         * @return the layer
         */
        public MoeLayer build() {
            if (hiddenSize <= 0) {
                throw new IllegalArgumentException(
                        "MoeLayer: hidden size " + hiddenSize + " must be positive");
            }
            if (expertIntermediateSize <= 0) {
                throw new IllegalArgumentException(
                        "MoeLayer: expert intermediate size " + expertIntermediateSize
                                + " must be positive");
            }
            if (router == null) {
                throw new IllegalArgumentException("MoeLayer: setRouter is required");
            }
            if (precision == null) {
                throw new IllegalArgumentException("MoeLayer: expert precision must not be null");
            }
            if (numSharedExperts < 0) {
                throw new IllegalArgumentException(
                        "MoeLayer: num shared experts " + numSharedExperts + " must be >= 0");
            }
            if (!(seqAuxAlpha >= 0f) || Float.isInfinite(seqAuxAlpha)) {
                throw new IllegalArgumentException(
                        "MoeLayer: seq aux alpha " + seqAuxAlpha + " must be finite and >= 0");
            }
            int e = router.buildConfig().getNumExperts();
            if (context != null) {
                int w = context.group().worldSize();
                if (e % w != 0) {
                    throw new IllegalArgumentException(
                            "MoeLayer: num experts " + e + " is not divisible by the EP world size "
                                    + w);
                }
            }
            return new MoeLayer(this);
        }
    }
}
