/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import ai.djl.training.optimizer.Optimizer;
import ai.djl.training.tracker.ParameterTracker;
import ai.djl.training.tracker.Tracker;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.core.NativeMemory;
import dev.djlmoe.nativeep.cuda.CudaAdamW;
import dev.djlmoe.nativeep.cuda.CudaEpBuffer;
import java.util.HashMap;
import java.util.Map;

/**
 * AdamW (decoupled weight decay) whose state can be saved and restored, for exact resume: DJL's own
 * optimizers keep their moments private. The update is the arithmetic of DJL's {@code AdamW}: on
 * the CPU the engine's {@code adamUpdate} itself; on a GPU one kernel that reads and writes each
 * array once ({@link CudaAdamW}; the engine's update makes a dozen passes with three temporaries).
 *
 * <p>State per parameter id: first moment, second moment and update count. {@link #exportState} and
 * {@link #importState} move it by parameter id; checkpoints translate ids to parameter names.
 */
public final class CheckpointableAdamW extends Optimizer {

    /** The system property that turns the one-pass GPU update off when {@code false}. */
    public static final String FUSED_PROPERTY = "djlmoe.fusedAdamW";

    /** The environment variable that turns the one-pass GPU update off when {@code 0}. */
    public static final String FUSED_ENV = "DJL_MOE_FUSED_ADAMW";

    private final ParameterTracker learningRateTracker;
    private final float beta1;
    private final float beta2;
    private final float epsilon;
    private final boolean fusedOnGpu;
    private final Map<String, NDArray> means = new HashMap<>();
    private final Map<String, NDArray> variances = new HashMap<>();
    private final Map<String, Integer> counts = new HashMap<>();

    private CheckpointableAdamW(Builder b) {
        super(b);
        learningRateTracker = b.learningRateTracker;
        beta1 = b.beta1;
        beta2 = b.beta2;
        epsilon = b.epsilon;
        fusedOnGpu = b.fusedOnGpu;
    }

    /**
     * Creates a builder (defaults: lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01).
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * Updates one parameter (DJL's optimizer entry point: {@code grad} is the trainer's copy of the
     * weight's gradient; the weight's own gradient is zeroed afterwards).
     *
     * @param parameterId the parameter's id
     * @param weight the parameter's array
     * @param grad its gradient
     */
    @Override
    public synchronized void update(String parameterId, NDArray weight, NDArray grad) {
        step(parameterId, weight, grad, 1f, false);
    }

    /**
     * Updates one parameter from its own gradient, scaled first by {@code gradScale} (gradient
     * clipping's factor), and zeroes that gradient: the same numbers as scaling the gradient in
     * place and then {@link #update} through DJL's trainer, which copies every gradient first. On a
     * GPU (unless turned off, {@link #FUSED_PROPERTY}) the update is one pass over the weight,
     * gradient and moments ({@link CudaAdamW}) instead of the engine's dozen.
     *
     * @param parameterId the parameter's id
     * @param weight the parameter's array, with its gradient
     * @param gradScale the factor for the gradient (1 = none)
     */
    public synchronized void updateFromGradient(
            String parameterId, NDArray weight, float gradScale) {
        try (NDArray grad = weight.getGradient()) {
            if (gradScale != 1f && !fused(weight)) {
                Autograd.scaleInPlace(grad, gradScale); // as GradientClipping.clip scales it
            }
            step(parameterId, weight, grad, gradScale, true);
        }
    }

    /**
     * Whether this process lets updates of arrays on a GPU take the one-pass kernel: yes unless the
     * system property {@value #FUSED_PROPERTY} is {@code false} or the environment variable {@value
     * #FUSED_ENV} is {@code 0} (to compare with the engine's own update), and only where the CUDA
     * plug-in sees the GPUs. An optimizer built with {@code optFusedOnGpu(false)} never does.
     *
     * @return true when GPU updates may be fused
     */
    public static boolean fusedOnGpu() {
        return FusedSwitch.ON;
    }

    private boolean fused(NDArray weight) {
        return fusedOnGpu
                && rescaleGrad == 1f
                && clipGrad < 0
                && weight.getDevice().isGpu()
                && weight.getDataType() == DataType.FLOAT32
                && fusedOnGpu();
    }

    private void step(
            String parameterId, NDArray weight, NDArray grad, float gradScale, boolean ownGrad) {
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
        if (fused(weight)) {
            Device d = weight.getDevice();
            CudaAdamW.update(
                    d.getDeviceId(),
                    NativeMemory.gpuAddress(weight, "weight", DataType.FLOAT32, d),
                    NativeMemory.gpuAddress(grad, "grad", DataType.FLOAT32, d),
                    NativeMemory.gpuAddress(m, "mean", DataType.FLOAT32, d),
                    NativeMemory.gpuAddress(v, "variance", DataType.FLOAT32, d),
                    weight.size(),
                    new CudaAdamW.Step(lr, lrCorrected, wd, beta1, beta2, epsilon, gradScale),
                    ownGrad,
                    0L); // the legacy default stream, libtorch's
            if (!ownGrad) {
                JniUtils.zeroGrad((PtNDArray) weight);
            }
            return;
        }
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
                    "optimizer state for "
                            + parameterId
                            + " has shape "
                            + state.mean().getShape()
                            + ", the parameter has "
                            + weight.getShape());
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

    /** Whether GPU updates are fused, decided once per process. */
    private static final class FusedSwitch {
        static final boolean ON = decide();

        private static boolean decide() {
            if ("false".equalsIgnoreCase(System.getProperty(FUSED_PROPERTY, "true"))
                    || "0".equals(System.getenv(FUSED_ENV))) {
                return false;
            }
            try {
                return CudaEpBuffer.deviceCount() > 0;
            } catch (LinkageError e) {
                return false; // no loadable plug-in: the engine's own update
            }
        }
    }

    /** Builds a {@link CheckpointableAdamW}. */
    public static final class Builder extends OptimizerBuilder<Builder> {
        private ParameterTracker learningRateTracker = Tracker.fixed(1e-3f);
        private float beta1 = 0.9f;
        private float beta2 = 0.999f;
        private float epsilon = 1e-8f;
        private boolean fusedOnGpu = true;

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
         * Chooses the update of arrays on a GPU (default true: one pass over memory per parameter,
         * {@link CudaAdamW}; false: the engine's own {@code adamUpdate}, as on the CPU). The
         * process-wide switch {@link #fusedOnGpu()} can turn it off too.
         *
         * @param fused whether to fuse
         * @return this builder
         */
        public Builder optFusedOnGpu(boolean fused) {
            this.fusedOnGpu = fused;
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
