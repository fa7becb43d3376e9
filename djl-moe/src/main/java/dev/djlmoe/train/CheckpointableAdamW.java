/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.ParameterTracker;
import ai.djl.training.tracker.Tracker;
import java.util.HashMap;
import java.util.Map;

/**
 * AdamW (decoupled weight decay) whose state can be saved and restored, for exact resume: DJL's
 * own optimizers keep their moments private. The update itself is the engine's fused Adam kernel,
 * the same arithmetic as DJL's {@code AdamW}.
 *
 * <p>State per parameter id: first moment, second moment and update count. {@link #exportState}
 * and {@link #importState} move it by parameter id; checkpoints translate ids to parameter names.
 */
public final class CheckpointableAdamW extends Optimizer {

    private final ParameterTracker learningRateTracker;
    private final float beta1;
    private final float beta2;
    private final float epsilon;
    private final Map<String, NDArray> means = new HashMap<>();
    private final Map<String, NDArray> variances = new HashMap<>();
    private final Map<String, Integer> counts = new HashMap<>();

    private CheckpointableAdamW(Builder b) {
        super(b);
        learningRateTracker = b.learningRateTracker;
        beta1 = b.beta1;
        beta2 = b.beta2;
        epsilon = b.epsilon;
    }

    /**
     * Creates a builder (defaults: lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01).
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    @Override
    public synchronized void update(String parameterId, NDArray weight, NDArray grad) {
        int t = counts.merge(parameterId, 1, Integer::sum);
        double coef1 = 1.0 - Math.pow(beta1, t);
        double coef2 = 1.0 - Math.pow(beta2, t);
        float lr = learningRateTracker.getNewValue(parameterId, t);
        float lrCorrected = (float) (lr * Math.sqrt(coef2) / coef1);
        float wd = getWeightDecay();
        if (!Float.isFinite(lrCorrected) || !Float.isFinite(wd)) {
            throw new IllegalArgumentException(
                    "AdamW: learning rate " + lr + " or weight decay " + wd + " is not finite");
        }
        NDArray m = means.computeIfAbsent(parameterId, k -> weight.zerosLike());
        NDArray v = variances.computeIfAbsent(parameterId, k -> weight.zerosLike());
        weight.getNDArrayInternal()
                .adamUpdate(
                        new NDList(weight, grad, m, v),
                        new NDList(weight),
                        lr,
                        lrCorrected,
                        wd,
                        rescaleGrad,
                        clipGrad,
                        beta1,
                        beta2,
                        epsilon,
                        true,
                        true);
    }

    /**
     * Returns the state of one parameter, or null before its first update.
     *
     * @param parameterId the parameter's id
     * @return {@code {first moment, second moment}} (the live arrays) and the count
     */
    public synchronized State exportState(String parameterId) {
        Integer c = counts.get(parameterId);
        if (c == null) {
            return null;
        }
        return new State(means.get(parameterId), variances.get(parameterId), c);
    }

    /**
     * Restores the state of one parameter (copies the arrays' values into new arrays owned by the
     * weight's manager).
     *
     * @param parameterId the parameter's id
     * @param weight the parameter's array (for shape and manager)
     * @param state the saved state
     */
    public synchronized void importState(String parameterId, NDArray weight, State state) {
        if (!state.mean().getShape().equals(weight.getShape())
                || !state.variance().getShape().equals(weight.getShape())) {
            throw new IllegalArgumentException(
                    "optimizer state for " + parameterId + " has shape " + state.mean().getShape()
                            + ", the parameter has " + weight.getShape());
        }
        NDArray m = weight.zerosLike();
        m.set(state.mean().toByteBuffer());
        NDArray v = weight.zerosLike();
        v.set(state.variance().toByteBuffer());
        means.put(parameterId, m);
        variances.put(parameterId, v);
        counts.put(parameterId, state.count());
    }

    /**
     * The optimizer state of one parameter.
     *
     * @param mean the first moment
     * @param variance the second moment
     * @param count the number of updates applied
     */
    public record State(NDArray mean, NDArray variance, int count) {}

    /** Builds a {@link CheckpointableAdamW}. */
    public static final class Builder extends OptimizerBuilder<Builder> {
        private ParameterTracker learningRateTracker = Tracker.fixed(1e-3f);
        private float beta1 = 0.9f;
        private float beta2 = 0.999f;
        private float epsilon = 1e-8f;

        Builder() {
            optWeightDecays(0.01f);
        }

        @Override
        protected Builder self() {
            return this;
        }

        /**
         * Sets the learning-rate schedule.
         *
         * @param tracker the schedule
         * @return this builder
         */
        public Builder optLearningRateTracker(ParameterTracker tracker) {
            this.learningRateTracker = tracker;
            return this;
        }

        /**
         * Sets beta1 (default 0.9).
         *
         * @param beta1 the first-moment decay
         * @return this builder
         */
        public Builder optBeta1(float beta1) {
            this.beta1 = beta1;
            return this;
        }

        /**
         * Sets beta2 (default 0.999).
         *
         * @param beta2 the second-moment decay
         * @return this builder
         */
        public Builder optBeta2(float beta2) {
            this.beta2 = beta2;
            return this;
        }

        /**
         * Sets epsilon (default 1e-8).
         *
         * @param epsilon added to the denominator
         * @return this builder
         */
        public Builder optEpsilon(float epsilon) {
            this.epsilon = epsilon;
            return this;
        }

        /**
         * Builds the optimizer.
         *
         * @return the optimizer
         */
        public CheckpointableAdamW build() {
            if (!(beta1 >= 0f && beta1 < 1f) || !(beta2 >= 0f && beta2 < 1f)) {
                throw new IllegalArgumentException(
                        "AdamW: betas " + beta1 + ", " + beta2 + " must be in [0, 1)");
            }
            if (!(epsilon > 0f)) {
                throw new IllegalArgumentException("AdamW: epsilon " + epsilon + " must be > 0");
            }
            return new CheckpointableAdamW(this);
        }
    }
}
