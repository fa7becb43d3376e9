/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.AbstractBlock;
import ai.djl.training.ParameterStore;
import ai.djl.util.PairList;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.ep.DispatchResult;
import dev.djlmoe.ep.EpAutograd;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.EpHandle;
import dev.djlmoe.ep.LowLatencyBuffer;
import dev.djlmoe.ep.LowLatencyDispatch;
import dev.djlmoe.ep.LowLatencyHandle;
import dev.djlmoe.ep.LowLatencyHook;
import dev.djlmoe.ep.WireDispatch;
import dev.djlmoe.profile.StepPhases;

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
                                .optContext(b.context)
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
        Tape tape = StepTape.of(context, training, "MoeLayer");
        if (tape != null) {
            u = tape.cut(u); // bounds the backward walk of the dispatch's inputs to this layer
        }
        StepPhases.Scope phase = StepPhases.enter("router");
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
        phase.close();
        NDArray out;
        if (context == null) {
            try (StepPhases.Scope p = StepPhases.enter("experts")) {
                out = experts.forward(ps, new NDList(u, topkIdx, topkWeights), training).head();
            }
        } else if (WireFeed.applies(context.dispatchWire(), experts, u.getDevice(), tape)) {
            // The dispatched FP8 / MXFP8 rows feed the expert GEMMs as they arrived.
            phase = StepPhases.enter("dispatch");
            EpAutograd.WireLeaves d =
                    EpAutograd.dispatchWire(
                            tape,
                            context.buffer(),
                            u,
                            topkIdx,
                            topkWeights,
                            routerConfig.getNumExperts(),
                            context.expertAlignment(),
                            context.dispatchWire(),
                            context.backwardWire());
            WireDispatch w = d.result();
            WireFeed.count();
            phase.close();
            phase = StepPhases.enter("experts");
            NDArray y =
                    experts.forwardWire(
                            ps,
                            w.recv(),
                            d.recvX(),
                            w.recvTopkIdx(),
                            w.recvTopkWeights(),
                            training);
            w.recv().rows().close(); // the experts keep their own sorted copy
            phase.close();
            out = combine(tape, y, w.handle());
        } else {
            phase = StepPhases.enter("dispatch");
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
            phase.close();
            NDArray y;
            try (StepPhases.Scope p = StepPhases.enter("experts")) {
                y =
                        experts.forward(
                                        ps,
                                        new NDList(d.recvX(), d.recvTopkIdx(), d.recvTopkWeights()),
                                        training)
                                .head(); // [R, H], the experts record on the same tape
            }
            out = combine(tape, y, d.handle());
        }
        if (sharedExperts != null) {
            try (StepPhases.Scope p = StepPhases.enter("shared experts")) {
                out = out.add(sharedExperts.forward(ps, new NDList(u), training).head());
            }
        }
        return new NDList(out.reshape(inShape));
    }

    /**
     * Combines the experts' output {@code y [R, H]} back to the tokens; without a tape the
     * dispatch's handle is closed after, with one the tape owns it.
     */
    private NDArray combine(Tape tape, NDArray y, EpHandle handle) {
        NDArray out;
        try (StepPhases.Scope p = StepPhases.enter("combine")) {
            out =
                    EpAutograd.combine(
                            tape,
                            context.buffer(),
                            y,
                            handle,
                            context.combineWire(),
                            context.backwardWire());
        }
        if (tape == null) {
            handle.close();
        }
        return out;
    }

    /**
     * The decode-step forward with low-latency dispatch and combine (inference only): the router
     * picks experts, {@link LowLatencyBuffer#dispatchSend} sends one message per (token, expert)
     * pair, the shared experts run while the messages travel, the receive hook completes, each
     * local expert runs on its received rows, and the low-latency combine sums {@code w_k * y_k} at
     * the source. Collective: every rank of the buffer calls it for the same layers in the same
     * order (a rank may pass zero tokens).
     *
     * @param ps the parameter store
     * @param input {@code [B, S, H]} or {@code [T, H]} float32 with {@code T = B·S <=
     *     max_tokens_per_rank} of the buffer
     * @param ll the buffer, wire formats and timers
     * @return the layer's output, the shape of {@code input}
     */
    public NDArray forwardLowLatency(ParameterStore ps, NDArray input, LowLatencyMoe ll) {
        Shape inShape = input.getShape();
        if (inShape.get(inShape.dimension() - 1) != hiddenSize) {
            throw new IllegalArgumentException(
                    "MoeLayer input has shape " + inShape + ", expected last axis " + hiddenSize);
        }
        if (ll == null) {
            throw new IllegalArgumentException("argument 'll' (the low-latency settings) is null");
        }
        LowLatencyBuffer buf = ll.buffer();
        if (buf.numExperts() != routerConfig.getNumExperts()
                || buf.hidden() != hiddenSize
                || buf.worldSize() != worldSize
                || buf.rank() != rank) {
            throw new IllegalArgumentException(
                    "the LowLatencyBuffer (E = "
                            + buf.numExperts()
                            + ", H = "
                            + buf.hidden()
                            + ", rank "
                            + buf.rank()
                            + " of "
                            + buf.worldSize()
                            + ") does not match this MoeLayer (E = "
                            + routerConfig.getNumExperts()
                            + ", H = "
                            + hiddenSize
                            + ", rank "
                            + rank
                            + " of "
                            + worldSize
                            + ")");
        }
        long tokens = inShape.size() / hiddenSize;
        NDArray u = input.reshape(tokens, hiddenSize); // [T, H]
        NDList routed = gate.forward(ps, new NDList(u), false);
        NDArray topkIdx = routed.get(0); // [T, K] global expert ids, int64
        NDArray topkWeights = routed.get(1); // [T, K]
        long t0 = System.nanoTime();
        long dispatch;
        long combine;
        NDArray out;
        NDArray shared = null;
        try (LowLatencyHook<LowLatencyDispatch> hook =
                buf.dispatchSend(u, topkIdx, ll.dispatchWire(), ll.roundScale())) {
            long t1 = System.nanoTime();
            if (sharedExperts != null) { // overlapped with the messages in flight
                shared = sharedExperts.forward(ps, new NDList(u), false).head();
            }
            long t2 = System.nanoTime();
            LowLatencyDispatch d = hook.await();
            long t3 = System.nanoTime();
            dispatch = (t1 - t0) + (t3 - t2);
            try (LowLatencyHandle handle = d.handle()) {
                NDArray y = localExperts(ps, d.recvX(), d.recvCount().toIntArray());
                long t4 = System.nanoTime();
                out = buf.combine(y, topkIdx, topkWeights, handle, ll.combineWire());
                combine = System.nanoTime() - t4;
            }
        }
        ll.record(dispatch, combine);
        if (shared != null) {
            out = out.add(shared);
        }
        return out.reshape(inShape);
    }

    /**
     * Runs each local expert on its received rows.
     *
     * @param recvX {@code [El, N, H]}: rows {@code [0, count[e])} of expert e are valid
     * @param count {@code [El]}
     * @return {@code [El, N, H]}: expert e's outputs in rows {@code [0, count[e])}, zeros after
     */
    private NDArray localExperts(ParameterStore ps, NDArray recvX, int[] count) {
        int el = count.length;
        long n = recvX.getShape().get(1);
        NDManager m = recvX.getManager();
        int total = 0;
        for (int c : count) {
            total += c;
        }
        long[] rows = new long[total];
        long[] expert = new long[total];
        int at = 0;
        for (int e = 0; e < el; e++) {
            for (int i = 0; i < count[e]; i++) {
                rows[at] = e * n + i;
                expert[at++] = e;
            }
        }
        NDList pieces = new NDList();
        if (total > 0) {
            NDArray x = recvX.reshape(el * n, hiddenSize).get(m.create(rows)); // [R, H]
            NDArray y =
                    experts.forward(
                                    ps,
                                    new NDList(
                                            x,
                                            m.create(expert, new Shape(total, 1)),
                                            m.ones(new Shape(total, 1))),
                                    false)
                            .head(); // [R, H]
            long[] cuts = new long[el - 1];
            long c = 0;
            for (int e = 0; e + 1 < el; e++) {
                c += count[e];
                cuts[e] = c;
            }
            NDList perExpert = el > 1 ? y.split(cuts, 0) : new NDList(y);
            for (int e = 0; e < el; e++) {
                pieces.add(perExpert.get(e));
                if (count[e] < n) {
                    pieces.add(m.zeros(new Shape(n - count[e], hiddenSize)));
                }
            }
            return NDArrays.concat(pieces, 0).reshape(el, n, hiddenSize);
        }
        return m.zeros(new Shape(el, n, hiddenSize));
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
        experts.initialize(manager, dataType, flat, new Shape(-1L, k), new Shape(-1L, k));
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
         * Sets the numerics of the routed experts' GEMMs (default fp32; MXFP8 and FP8 emulate their
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
         * 1e-4). The trainer adds it to the step's loss ({@link #takeAuxLoss()}); it needs {@code
         * [B, S, H]} input.
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
                        "MoeLayer: expert intermediate size "
                                + expertIntermediateSize
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
                            "MoeLayer: num experts "
                                    + e
                                    + " is not divisible by the EP world size "
                                    + w);
                }
            }
            return new MoeLayer(this);
        }
    }
}
