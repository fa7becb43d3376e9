/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import dev.djlmoe.recipes.checkpoint.TrainingCheckpoint;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Settings of a training run (pre-training or fine-tuning).
 *
 * @param steps optimizer steps of the whole run (a resumed run continues to this step)
 * @param batch sequences per step (global batch, split over the ranks)
 * @param seqLen tokens per sequence
 * @param learningRate peak AdamW learning rate (the cosine decay ends at a tenth of it)
 * @param warmupSteps linear warm-up steps before the cosine decay
 * @param maxGradNorm global-norm clipping threshold (0 = off)
 * @param biasUpdateRate gamma of aux-loss-free balancing (0 = off)
 * @param precision what travels on the wire and how expert GEMMs round
 * @param seed fixes initialisation, data order and the engine's random stream
 * @param useEp run MoE layers through the EP buffer (false: plain local autograd)
 * @param logEvery steps between plain progress lines when not on a terminal
 * @param runDir where rank 0 writes {@code metrics.jsonl} and the PNG plots (null: nowhere)
 * @param weightDecay AdamW's decoupled weight decay
 * @param seqAuxAlpha weight of the sequence-wise balance loss (0 = off)
 * @param checkpointEvery steps between checkpoints (0 = only at exit, {@link #NO_CHECKPOINTS} =
 *     none); a checkpoint is also written when the run ends or is stopped
 * @param checkpointDir where checkpoints go (null: {@code runDir/checkpoints}, or none without a
 *     run directory)
 * @param keepCheckpoints how many of the newest checkpoints to keep (0 = all)
 * @param resume a checkpoint (or a checkpoint directory, meaning its newest) to continue from, or
 *     null
 */
public record PretrainOptions(
        int steps,
        int batch,
        int seqLen,
        float learningRate,
        int warmupSteps,
        float maxGradNorm,
        float biasUpdateRate,
        TrainingPrecision precision,
        long seed,
        boolean useEp,
        int logEvery,
        Path runDir,
        float weightDecay,
        float seqAuxAlpha,
        int checkpointEvery,
        Path checkpointDir,
        int keepCheckpoints,
        Path resume,
        String device) {

    /** Default AdamW weight decay. */
    public static final float WEIGHT_DECAY = 0.01f;

    /** Default weight of the sequence-wise balance loss (DeepSeek-V3's alpha). */
    public static final float SEQ_AUX_ALPHA = 1e-4f;

    /** {@link #checkpointEvery} of a run that writes no checkpoints ({@code --no-checkpoints}). */
    public static final int NO_CHECKPOINTS = -1;

    /** Default number of checkpoints kept. */
    public static final int KEEP_CHECKPOINTS = 3;

    /**
     * The settings of earlier versions (no checkpoints, default decay and balance loss).
     *
     * @param steps optimizer steps
     * @param batch global batch
     * @param seqLen tokens per sequence
     * @param learningRate peak learning rate
     * @param warmupSteps warm-up steps
     * @param maxGradNorm clipping threshold
     * @param biasUpdateRate balancing gamma
     * @param precision precision
     * @param seed seed
     * @param useEp whether MoE layers use the EP buffer
     * @param logEvery plain progress interval
     * @param runDir run directory or null
     */
    public PretrainOptions(
            int steps,
            int batch,
            int seqLen,
            float learningRate,
            int warmupSteps,
            float maxGradNorm,
            float biasUpdateRate,
            TrainingPrecision precision,
            long seed,
            boolean useEp,
            int logEvery,
            Path runDir) {
        this(
                steps,
                batch,
                seqLen,
                learningRate,
                warmupSteps,
                maxGradNorm,
                biasUpdateRate,
                precision,
                seed,
                useEp,
                logEvery,
                runDir,
                WEIGHT_DECAY,
                SEQ_AUX_ALPHA,
                0,
                null,
                KEEP_CHECKPOINTS,
                null,
                DeviceFlag.AUTO);
    }

    /**
     * The embedded default: the tiny model for 300 steps, checkpoints under {@code
     * runs/pretrain/checkpoints} at exit.
     *
     * @return the options
     */
    public static PretrainOptions defaults() {
        return new PretrainOptions(
                300,
                16,
                64,
                3e-3f,
                20,
                1.0f,
                1e-3f,
                TrainingPrecision.FP32,
                42,
                true,
                25,
                Path.of("runs", "pretrain"));
    }

    /**
     * Checks the settings.
     *
     * @throws IllegalArgumentException naming the bad setting, its value and the limit
     */
    public void validate() {
        DeviceFlag.check(device);
        if (precision == null) {
            throw new IllegalArgumentException("--precision must be given");
        }
        if (logEvery < 1) {
            throw new IllegalArgumentException("log interval " + logEvery + " must be >= 1");
        }
        if (steps < 1) {
            throw new IllegalArgumentException("--steps " + steps + " must be >= 1");
        }
        if (batch < 1) {
            throw new IllegalArgumentException("--batch " + batch + " must be >= 1");
        }
        if (seqLen < 2) {
            throw new IllegalArgumentException("--seq-len " + seqLen + " must be >= 2");
        }
        if (!(learningRate > 0f) || !Float.isFinite(learningRate)) {
            throw new IllegalArgumentException("--lr " + learningRate + " must be > 0");
        }
        if (warmupSteps < 0) {
            throw new IllegalArgumentException("--warmup " + warmupSteps + " must be >= 0");
        }
        if (!(maxGradNorm >= 0f)) {
            throw new IllegalArgumentException("--clip " + maxGradNorm + " must be >= 0");
        }
        if (!(biasUpdateRate >= 0f)) {
            throw new IllegalArgumentException("--bias-rate " + biasUpdateRate + " must be >= 0");
        }
        if (!(weightDecay >= 0f)) {
            throw new IllegalArgumentException("--weight-decay " + weightDecay + " must be >= 0");
        }
        if (!(seqAuxAlpha >= 0f)) {
            throw new IllegalArgumentException("--seq-aux-alpha " + seqAuxAlpha + " must be >= 0");
        }
        if (checkpointEvery < NO_CHECKPOINTS) {
            throw new IllegalArgumentException(
                    "--checkpoint-every " + checkpointEvery + " must be >= 0 (0 = only at exit)");
        }
        if (keepCheckpoints < 0) {
            throw new IllegalArgumentException(
                    "--keep-checkpoints " + keepCheckpoints + " must be >= 0 (0 = keep all)");
        }
    }

    /**
     * Returns where checkpoints go.
     *
     * @return the checkpoint directory, or null when the run writes none
     */
    public Path effectiveCheckpointDir() {
        if (checkpointEvery == NO_CHECKPOINTS) {
            return null;
        }
        if (checkpointDir != null) {
            return checkpointDir;
        }
        return runDir == null ? null : runDir.resolve(TrainingCheckpoint.RUN_CHECKPOINTS);
    }

    /**
     * The settings that decide the numbers a run produces, by flag name (stored in checkpoints and
     * compared on resume).
     *
     * @return flag name to value
     */
    public Map<String, Object> trajectorySettings() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("steps", (long) steps);
        m.put("batch", (long) batch);
        m.put("seq-len", (long) seqLen);
        m.put("lr", decimal(learningRate));
        m.put("warmup", (long) warmupSteps);
        m.put("clip", decimal(maxGradNorm));
        m.put("bias-rate", decimal(biasUpdateRate));
        m.put("precision", precision.flag());
        m.put("seed", seed);
        m.put("ep", useEp);
        m.put("weight-decay", decimal(weightDecay));
        m.put("seq-aux-alpha", decimal(seqAuxAlpha));
        return m;
    }

    /**
     * A float setting as the double with the same shortest decimal, so JSON shows {@code 0.003}
     * where {@code (double) 0.003f} would print 0.003000000026077032.
     */
    private static double decimal(float v) {
        return Double.parseDouble(Float.toString(v));
    }

    /**
     * Returns a builder that starts from these settings.
     *
     * @return the builder
     */
    public Builder toBuilder() {
        return new Builder(this);
    }

    /**
     * Returns a builder that starts from the embedded default ({@link #defaults()}).
     *
     * @return the builder
     */
    public static Builder builder() {
        return defaults().toBuilder();
    }

    /**
     * Returns a copy with another run directory.
     *
     * @param dir the directory, or null for no files
     * @return the new options
     */
    public PretrainOptions withRunDir(Path dir) {
        return toBuilder().optRunDir(dir).build();
    }

    /**
     * Returns a copy with another precision.
     *
     * @param p the precision
     * @return the new options
     */
    public PretrainOptions withPrecision(TrainingPrecision p) {
        return toBuilder().optPrecision(p).build();
    }

    /**
     * Returns a copy with another step count.
     *
     * @param n the steps
     * @return the new options
     */
    public PretrainOptions withSteps(int n) {
        return toBuilder().optSteps(n).build();
    }

    /**
     * Returns a copy with another batch shape.
     *
     * @param b global batch
     * @param s sequence length
     * @return the new options
     */
    public PretrainOptions withBatch(int b, int s) {
        return toBuilder().optBatch(b).optSeqLen(s).build();
    }

    /**
     * Returns a copy with another learning rate and warm-up.
     *
     * @param lr peak learning rate
     * @param warmup warm-up steps
     * @return the new options
     */
    public PretrainOptions withLearningRate(float lr, int warmup) {
        return toBuilder().optLearningRate(lr).optWarmupSteps(warmup).build();
    }

    /**
     * Returns a copy with another checkpoint policy.
     *
     * @param every steps between checkpoints (0 = at exit only)
     * @param dir checkpoint directory (null: under the run directory)
     * @param keep newest checkpoints kept (0 = all)
     * @return the new options
     */
    public PretrainOptions withCheckpoints(int every, Path dir, int keep) {
        return toBuilder()
                .optCheckpointEvery(every)
                .optCheckpointDir(dir)
                .optKeepCheckpoints(keep)
                .build();
    }

    /**
     * Returns a copy that resumes from a checkpoint.
     *
     * @param checkpoint the checkpoint (or checkpoint directory), or null to start fresh
     * @return the new options
     */
    public PretrainOptions withResume(Path checkpoint) {
        return toBuilder().optResume(checkpoint).build();
    }

    /**
     * Returns a copy that trains on another device.
     *
     * @param d {@code cpu}, {@code gpu} or {@code auto}
     * @return the new options
     */
    public PretrainOptions withDevice(String d) {
        return toBuilder().optDevice(d).build();
    }

    /**
     * Returns a copy with another log interval.
     *
     * @param every steps between plain progress lines
     * @return the new options
     */
    public PretrainOptions withLogEvery(int every) {
        return toBuilder().optLogEvery(every).build();
    }

    /**
     * Returns a copy with other regularisation settings.
     *
     * @param decay AdamW weight decay
     * @param alpha sequence-wise balance loss weight
     * @return the new options
     */
    public PretrainOptions withRegularisation(float decay, float alpha) {
        return toBuilder().optWeightDecay(decay).optSeqAuxAlpha(alpha).build();
    }

    /**
     * Builds {@link PretrainOptions} setting by setting, starting from a given set of settings
     * ({@link PretrainOptions#builder()}, {@link PretrainOptions#toBuilder()}); each setting keeps
     * the meaning of the record component of the same name.
     */
    public static final class Builder {
        private int steps;
        private int batch;
        private int seqLen;
        private float learningRate;
        private int warmupSteps;
        private float maxGradNorm;
        private float biasUpdateRate;
        private TrainingPrecision precision;
        private long seed;
        private boolean useEp;
        private int logEvery;
        private Path runDir;
        private float weightDecay;
        private float seqAuxAlpha;
        private int checkpointEvery;
        private Path checkpointDir;
        private int keepCheckpoints;
        private Path resume;
        private String device;

        private Builder(PretrainOptions o) {
            steps = o.steps;
            batch = o.batch;
            seqLen = o.seqLen;
            learningRate = o.learningRate;
            warmupSteps = o.warmupSteps;
            maxGradNorm = o.maxGradNorm;
            biasUpdateRate = o.biasUpdateRate;
            precision = o.precision;
            seed = o.seed;
            useEp = o.useEp;
            logEvery = o.logEvery;
            runDir = o.runDir;
            weightDecay = o.weightDecay;
            seqAuxAlpha = o.seqAuxAlpha;
            checkpointEvery = o.checkpointEvery;
            checkpointDir = o.checkpointDir;
            keepCheckpoints = o.keepCheckpoints;
            resume = o.resume;
            device = o.device;
        }

        /**
         * Sets optimizer steps of the whole run.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optSteps(int value) {
            steps = value;
            return this;
        }

        /**
         * Sets the global batch in sequences.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optBatch(int value) {
            batch = value;
            return this;
        }

        /**
         * Sets tokens per sequence.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optSeqLen(int value) {
            seqLen = value;
            return this;
        }

        /**
         * Sets the peak learning rate.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optLearningRate(float value) {
            learningRate = value;
            return this;
        }

        /**
         * Sets linear warm-up steps.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optWarmupSteps(int value) {
            warmupSteps = value;
            return this;
        }

        /**
         * Sets the gradient-norm clipping threshold (0 = off).
         *
         * @param value the value
         * @return this builder
         */
        public Builder optMaxGradNorm(float value) {
            maxGradNorm = value;
            return this;
        }

        /**
         * Sets gamma of aux-loss-free balancing (0 = off).
         *
         * @param value the value
         * @return this builder
         */
        public Builder optBiasUpdateRate(float value) {
            biasUpdateRate = value;
            return this;
        }

        /**
         * Sets the wire and expert GEMM precision.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optPrecision(TrainingPrecision value) {
            precision = value;
            return this;
        }

        /**
         * Sets the seed.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optSeed(long value) {
            seed = value;
            return this;
        }

        /**
         * Sets whether MoE layers use the EP buffer.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optUseEp(boolean value) {
            useEp = value;
            return this;
        }

        /**
         * Sets steps between plain progress lines.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optLogEvery(int value) {
            logEvery = value;
            return this;
        }

        /**
         * Sets the run directory, or null for no files.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optRunDir(Path value) {
            runDir = value;
            return this;
        }

        /**
         * Sets AdamW weight decay.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optWeightDecay(float value) {
            weightDecay = value;
            return this;
        }

        /**
         * Sets the sequence-wise balance loss weight (0 = off).
         *
         * @param value the value
         * @return this builder
         */
        public Builder optSeqAuxAlpha(float value) {
            seqAuxAlpha = value;
            return this;
        }

        /**
         * Sets steps between checkpoints (0 = at exit only, {@link PretrainOptions#NO_CHECKPOINTS}
         * = none).
         *
         * @param value the value
         * @return this builder
         */
        public Builder optCheckpointEvery(int value) {
            checkpointEvery = value;
            return this;
        }

        /**
         * Sets the checkpoint directory, or null for the run directory's.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optCheckpointDir(Path value) {
            checkpointDir = value;
            return this;
        }

        /**
         * Sets newest checkpoints kept (0 = all).
         *
         * @param value the value
         * @return this builder
         */
        public Builder optKeepCheckpoints(int value) {
            keepCheckpoints = value;
            return this;
        }

        /**
         * Sets the checkpoint to continue from, or null to start fresh.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optResume(Path value) {
            resume = value;
            return this;
        }

        /**
         * Sets {@code cpu}, {@code gpu} or {@code auto}.
         *
         * @param value the value
         * @return this builder
         */
        public Builder optDevice(String value) {
            device = value;
            return this;
        }

        /**
         * Builds the settings (not yet validated: {@link PretrainOptions#validate()} checks them).
         *
         * @return the options
         */
        public PretrainOptions build() {
            return new PretrainOptions(
                    steps,
                    batch,
                    seqLen,
                    learningRate,
                    warmupSteps,
                    maxGradNorm,
                    biasUpdateRate,
                    precision,
                    seed,
                    useEp,
                    logEvery,
                    runDir,
                    weightDecay,
                    seqAuxAlpha,
                    checkpointEvery,
                    checkpointDir,
                    keepCheckpoints,
                    resume,
                    device);
        }
    }
}
