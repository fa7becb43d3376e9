/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.GradientCollector;
import ai.djl.training.Trainer;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.EpStats;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.profile.StepPhases;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;

/**
 * One expert-parallel training step built on DJL's {@link Trainer} (its model, loss, optimizer and
 * {@code ParameterStore}), replacing {@code EasyTrain.trainBatch}:
 *
 * <ol>
 *   <li>forward with the EP context's tape active; loss = task loss + MoE balance losses;
 *   <li>staged backward ({@link Tape#backward});
 *   <li>gradient averaging over ranks: dense (replicated) gradients are summed over ranks ({@link
 *       dev.djlmoe.ep.EpBuffer#allReduceSum}: NCCL on the GPUs, or host memory) and divided by W;
 *       expert gradients, which already hold every rank's contribution, are divided by W (the
 *       global loss is the mean of the ranks' losses);
 *   <li>global-norm clipping over all ranks' parameters; a NaN or infinite global norm raises
 *       {@link NonFiniteGradientException} instead, before the optimizer runs;
 *   <li>{@code trainer.step()} (the optimizer; it zeroes the gradients);
 *   <li>aux-loss-free balancing: each router's correction bias moves by {@code gamma *
 *       sign(mean_load - load_i)} with loads summed over all ranks.
 * </ol>
 *
 * <p>Every rank must call {@link #step} with its own share of the global batch. While {@link
 * StepPhases} records on the step's thread, the step's parts are its top-level phases: {@code
 * forward}, {@code loss}, {@code backward}, {@code release graph}, {@code gradients} (averaging,
 * norm), {@code optimizer}, {@code balancing}.
 */
public final class EpTrainer {

    private final Trainer trainer;
    private final EpContext context;
    private final ProcessGroup group;
    private final float maxGradNorm;
    private final float biasUpdateRate;
    private final CheckpointableAdamW optimizer;
    private final List<MoeLayer> moeLayers;
    private final List<Parameter> denseParams = new ArrayList<>();
    private final List<Parameter> expertParams = new ArrayList<>();
    private final List<Parameter> trainableParams = new ArrayList<>();
    private final List<String> trainableNames = new ArrayList<>();
    private final Set<String> expertNames = new java.util.LinkedHashSet<>();
    private volatile StepProbe probe;

    private EpTrainer(Builder b) {
        trainer = b.trainer;
        context = b.context;
        group = context == null ? null : context.group();
        maxGradNorm = b.maxGradNorm;
        biasUpdateRate = b.biasUpdateRate;
        optimizer = b.optimizer;
        Block root = trainer.getModel().getBlock();
        moeLayers = findMoeLayers(root);
        Set<Parameter> experts = Collections.newSetFromMap(new IdentityHashMap<>());
        for (MoeLayer l : moeLayers) {
            for (var p : l.getExperts().getParameters()) {
                experts.add(p.getValue());
            }
        }
        for (var p : root.getParameters()) {
            Parameter param = p.getValue();
            if (!param.requiresGradient()) {
                continue;
            }
            boolean expert = experts.contains(param);
            (expert ? expertParams : denseParams).add(param);
            trainableParams.add(param);
            trainableNames.add(p.getKey());
            if (expert) {
                expertNames.add(p.getKey());
            }
        }
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
     * Returns the MoE layers of the model, in forward order of the block tree.
     *
     * @return the layers
     */
    public List<MoeLayer> moeLayers() {
        return moeLayers;
    }

    /**
     * Returns the names (paths in the block tree) of the trainable parameters, in the order in
     * which {@link #stepWithGradientHook} shows their gradients.
     *
     * @return the names
     */
    public List<String> parameterNames() {
        return Collections.unmodifiableList(trainableNames);
    }

    /**
     * Returns the names of the routed experts' parameters: sharded over the ranks, their first axis
     * runs over this rank's {@code E / W} experts.
     *
     * @return the names
     */
    public Set<String> expertParameterNames() {
        return Collections.unmodifiableSet(expertNames);
    }

    /**
     * Observes points of a training step, for diagnostics (the memory report of {@code bench
     * step}): called on the step's thread with the name of the point just reached.
     */
    @FunctionalInterface
    public interface StepProbe {
        /**
         * The step reached a point: {@code start}, {@code forward} (loss computed, before the
         * backward), {@code backward} (the tape's backward done, the tape still open), {@code tape
         * closed}, {@code norm} (gradients averaged, norm computed, handles closed), {@code
         * optimizer} (parameters updated), {@code end} (balancing done).
         *
         * @param point the point's name
         */
        void at(String point);
    }

    /**
     * Sets the probe that sees the points of every later step (null: none).
     *
     * @param probe the probe
     */
    public void setStepProbe(StepProbe probe) {
        this.probe = probe;
    }

    private void probe(String point) {
        StepProbe p = probe;
        if (p != null) {
            p.at(point);
        }
    }

    /**
     * Returns the optimizer the step updates the parameters with itself ({@link
     * Builder#optOptimizer}).
     *
     * @return the optimizer, or null when the step calls {@code trainer.step()}
     */
    public CheckpointableAdamW optimizer() {
        return optimizer;
    }

    /**
     * Returns the underlying DJL trainer.
     *
     * @return the trainer
     */
    public Trainer trainer() {
        return trainer;
    }

    /**
     * Runs one training step on this rank's share of the batch.
     *
     * @param data model inputs
     * @param labels labels for the trainer's loss
     * @return the step's figures
     */
    public StepResult step(NDList data, NDList labels) {
        return stepWithGradientHook(data, labels, null);
    }

    /**
     * Runs one training step and shows the averaged gradients (before clipping and the optimizer)
     * to a hook, in the order of the model's trainable parameters.
     *
     * @param data model inputs
     * @param labels labels for the trainer's loss
     * @param gradientHook receives the gradients, or null
     * @return the step's figures
     */
    public StepResult stepWithGradientHook(
            NDList data, NDList labels, Consumer<List<NDArray>> gradientHook) {
        return run(data, labels, gradientHook, null);
    }

    /**
     * Runs one training step and hands this rank's predictions (the model's forward output) to
     * {@code predictions}, for the fit loop's listeners.
     */
    StepResult stepWithPredictions(NDList data, NDList labels, Consumer<NDList> predictions) {
        return run(data, labels, null, predictions);
    }

    /**
     * Returns the process group of the EP context.
     *
     * @return the group, or null without a context (one rank)
     */
    ProcessGroup group() {
        return group;
    }

    private StepResult run(
            NDList data,
            NDList labels,
            Consumer<List<NDArray>> gradientHook,
            Consumer<NDList> predictions) {
        long begin = System.nanoTime();
        probe("start");
        EpStats stats = context == null ? null : context.buffer().stats();
        long ep0 = stats == null ? 0 : stats.totalNanos();
        long bytes0 = stats == null ? 0 : stats.totalBytes();
        float lossValue;
        float auxValue = 0f;
        try (GradientCollector collector = trainer.newGradientCollector();
                Tape tape = context == null ? new Tape() : context.beginTape()) {
            StepPhases.next("forward");
            NDList preds = trainer.forward(data, labels);
            StepPhases.next("loss");
            NDArray loss = trainer.getLoss().evaluate(labels, preds);
            NDArray total = loss;
            for (MoeLayer l : moeLayers) {
                NDArray aux = l.takeAuxLoss();
                if (aux != null) {
                    auxValue += aux.getFloat();
                    total = total.add(aux);
                }
            }
            lossValue = loss.getFloat();
            if (predictions == null) {
                // The logits [tokens, vocab]: the loss's log-softmax kept what its backward needs,
                // so nothing reads them again (1.6 GiB at 4096 tokens x 102400 in float32).
                preds.close();
            }
            probe("forward");
            StepPhases.next("backward");
            tape.backward(total);
            probe("backward");
            if (predictions != null) {
                predictions.accept(preds);
            }
            StepPhases.next("release graph"); // the tape's and the collector's close
        }
        probe("tape closed");
        StepPhases.next("gradients");
        // Gradient handles are new DJL arrays over the parameters' gradients: close them after use.
        List<NDArray> dense = gradients(denseParams);
        List<NDArray> sharded = gradients(expertParams);
        double norm;
        try {
            averageGradients(dense, sharded);
            if (gradientHook != null) {
                List<NDArray> all = gradients(trainableParams);
                try {
                    gradientHook.accept(all);
                } finally {
                    all.forEach(NDArray::close);
                }
            }
            norm = GradientClipping.globalNorm(dense, sharded, group);
            if (!Double.isFinite(norm)) {
                // Cheap (the norm is computed anyway) and agreed over ranks: refuse the update
                // rather than let one NaN poison every parameter through clipping and AdamW.
                for (Parameter p : trainableParams) {
                    if (p.isInitialized()) {
                        JniUtils.zeroGrad((PtNDArray) p.getArray());
                    }
                }
                throw new NonFiniteGradientException(norm, lossValue);
            }
            if (maxGradNorm > 0f && optimizer == null) {
                List<NDArray> all = new ArrayList<>(dense);
                all.addAll(sharded);
                GradientClipping.clip(all, norm, maxGradNorm);
            }
        } finally {
            dense.forEach(NDArray::close);
            sharded.forEach(NDArray::close);
        }
        probe("norm");
        StepPhases.next("optimizer");
        if (optimizer == null) {
            trainer.step();
        } else {
            // Each parameter from its own gradient, the clipping factor applied in the update:
            // the same numbers as clipping and trainer.step(), without DJL's copy of every
            // gradient (and on a GPU in one pass over memory per parameter).
            float scale =
                    maxGradNorm > 0f ? (float) GradientClipping.factor(norm, maxGradNorm) : 1f;
            for (Parameter p : trainableParams) {
                if (p.isInitialized()) {
                    optimizer.updateFromGradient(p.getId(), p.getArray(), scale);
                }
            }
        }
        probe("optimizer");
        StepPhases.next("balancing");
        long[][] layerLoads = new long[moeLayers.size()][];
        float imbalance = updateBalancingBias(layerLoads);
        StepPhases.next(null);
        probe("end");
        lossValue = globalMean(lossValue);
        long tokens = data.head().getShape().size();
        long epNanos = stats == null ? 0 : stats.totalNanos() - ep0;
        long epBytes = stats == null ? 0 : stats.totalBytes() - bytes0;
        return new StepResult(
                lossValue,
                auxValue,
                (float) norm,
                tokens,
                System.nanoTime() - begin,
                epNanos,
                epBytes,
                imbalance,
                layerLoads);
    }

    private void averageGradients(List<NDArray> dense, List<NDArray> sharded) {
        if (group == null || group.worldSize() == 1) {
            return;
        }
        float invW = 1f / group.worldSize();
        for (NDArray g : dense) {
            // GPU gradients: NCCL on the GPUs where each rank has its own (EpBuffer.allReduceSum)
            context.buffer().allReduceSum(g);
            Autograd.scaleInPlace(g, invW);
        }
        for (NDArray g : sharded) {
            Autograd.scaleInPlace(g, invW);
        }
    }

    /**
     * Applies aux-loss-free balancing and returns the largest max/mean load ratio; MoE layer i's
     * global load goes into {@code layerLoads[i]}.
     */
    private float updateBalancingBias(long[][] layerLoads) {
        float worst = 0f;
        boolean oneRank = group == null || group.worldSize() == 1;
        for (int i = 0; i < moeLayers.size(); i++) {
            MoeLayer l = moeLayers.get(i);
            long[] load = l.takeLoad();
            if (oneRank) {
                // The counts are already global: no trip through the device (two waits on a GPU).
                float[] global = toFloat(load);
                worst = Math.max(worst, imbalance(global));
                layerLoads[i] = rounded(global);
                if (biasUpdateRate > 0f && l.getRouterConfig().hasCorrectionBias()) {
                    l.getGate().updateCorrectionBias(rounded(global), biasUpdateRate);
                }
                continue;
            }
            NDManager m = trainer.getManager();
            try (NDArray loads = m.create(toFloat(load))) {
                if (group != null && group.worldSize() > 1) {
                    group.allReduceSum(loads);
                }
                float[] global = loads.toFloatArray();
                worst = Math.max(worst, imbalance(global));
                layerLoads[i] = rounded(global);
                if (biasUpdateRate > 0f && l.getRouterConfig().hasCorrectionBias()) {
                    l.getGate().updateCorrectionBias(loads, biasUpdateRate);
                }
            }
        }
        return worst;
    }

    private float globalMean(float value) {
        if (group == null || group.worldSize() == 1) {
            return value;
        }
        try (NDArray v = trainer.getManager().create(new float[] {value})) {
            group.allReduceSum(v);
            return v.getFloat() / group.worldSize();
        }
    }

    private static float imbalance(float[] load) {
        double sum = 0;
        float max = 0;
        for (float x : load) {
            sum += x;
            max = Math.max(max, x);
        }
        return sum == 0 ? 0f : (float) (max / (sum / load.length));
    }

    /**
     * The counts, held as floats (integer-valued: whole counts, sums of them), as integers: the
     * bias step reads the same numbers from either form.
     */
    private static long[] rounded(float[] a) {
        long[] g = new long[a.length];
        for (int i = 0; i < g.length; i++) {
            g[i] = (long) a[i];
        }
        return g;
    }

    private static float[] toFloat(long[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) {
            f[i] = a[i];
        }
        return f;
    }

    private static List<NDArray> gradients(List<Parameter> params) {
        List<NDArray> out = new ArrayList<>(params.size());
        for (Parameter p : params) {
            if (p.isInitialized()) {
                out.add(p.getArray().getGradient());
            }
        }
        return out;
    }

    private static List<MoeLayer> findMoeLayers(Block block) {
        List<MoeLayer> out = new ArrayList<>();
        collect(block, out);
        return out;
    }

    private static void collect(Block block, List<MoeLayer> out) {
        if (block instanceof MoeLayer) {
            out.add((MoeLayer) block);
            return;
        }
        for (var child : block.getChildren()) {
            collect(child.getValue(), out);
        }
    }

    /** Builds an {@link EpTrainer}. */
    public static final class Builder {
        private Trainer trainer;
        private EpContext context;
        private float maxGradNorm;
        private float biasUpdateRate;
        private CheckpointableAdamW optimizer;

        Builder() {}

        /**
         * Sets the DJL trainer holding the model, loss and optimizer (required).
         *
         * @param trainer the trainer
         * @return this builder
         */
        public Builder setTrainer(Trainer trainer) {
            this.trainer = trainer;
            return this;
        }

        /**
         * Sets the EP context the model's MoE layers were built with (default none: one rank, plain
         * autograd).
         *
         * @param context the context
         * @return this builder
         */
        public Builder optContext(EpContext context) {
            this.context = context;
            return this;
        }

        /**
         * Clips the global gradient norm to this value (default 0 = off).
         *
         * @param maxGradNorm the threshold
         * @return this builder
         */
        public Builder optMaxGradNorm(float maxGradNorm) {
            this.maxGradNorm = maxGradNorm;
            return this;
        }

        /**
         * Sets gamma of aux-loss-free balancing (default 0 = off; DeepSeek-V3 uses 0.001).
         *
         * @param gamma the bias update rate
         * @return this builder
         */
        public Builder optBiasUpdateRate(float gamma) {
            this.biasUpdateRate = gamma;
            return this;
        }

        /**
         * Lets the step update the parameters itself with the trainer's optimizer, which must be
         * the {@link CheckpointableAdamW} of the trainer's {@code TrainingConfig} (default: none,
         * the step calls {@code trainer.step()}). The numbers are the same; DJL's copy of every
         * gradient before its update is saved, the clipping factor is applied inside the update,
         * and on a GPU each parameter takes one pass over memory ({@link
         * CheckpointableAdamW#updateFromGradient}).
         *
         * @param optimizer the trainer's optimizer
         * @return this builder
         */
        public Builder optOptimizer(CheckpointableAdamW optimizer) {
            this.optimizer = optimizer;
            return this;
        }

        /**
         * Builds the step.
         *
         * @return the EP trainer
         */
        public EpTrainer build() {
            if (trainer == null) {
                throw new IllegalArgumentException("EpTrainer: setTrainer is required");
            }
            if (!(maxGradNorm >= 0f)) {
                throw new IllegalArgumentException(
                        "EpTrainer: max grad norm " + maxGradNorm + " must be >= 0");
            }
            if (!(biasUpdateRate >= 0f)) {
                throw new IllegalArgumentException(
                        "EpTrainer: bias update rate " + biasUpdateRate + " must be >= 0");
            }
            return new EpTrainer(this);
        }
    }
}
