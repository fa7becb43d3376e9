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
     * Returns a copy with another run directory.
     *
     * @param dir the directory, or null for no files
     * @return the new options
     */
    public PretrainOptions withRunDir(Path dir) {
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
                dir,
                weightDecay,
                seqAuxAlpha,
                checkpointEvery,
                checkpointDir,
                keepCheckpoints,
                resume,
                device);
    }

    /**
     * Returns a copy with another precision.
     *
     * @param p the precision
     * @return the new options
     */
    public PretrainOptions withPrecision(TrainingPrecision p) {
        return new PretrainOptions(
                steps,
                batch,
                seqLen,
                learningRate,
                warmupSteps,
                maxGradNorm,
                biasUpdateRate,
                p,
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

    /**
     * Returns a copy with another step count.
     *
     * @param n the steps
     * @return the new options
     */
    public PretrainOptions withSteps(int n) {
        return new PretrainOptions(
                n,
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

    /**
     * Returns a copy with another batch shape.
     *
     * @param b global batch
     * @param s sequence length
     * @return the new options
     */
    public PretrainOptions withBatch(int b, int s) {
        return new PretrainOptions(
                steps,
                b,
                s,
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

    /**
     * Returns a copy with another learning rate and warm-up.
     *
     * @param lr peak learning rate
     * @param warmup warm-up steps
     * @return the new options
     */
    public PretrainOptions withLearningRate(float lr, int warmup) {
        return new PretrainOptions(
                steps,
                batch,
                seqLen,
                lr,
                warmup,
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

    /**
     * Returns a copy with another checkpoint policy.
     *
     * @param every steps between checkpoints (0 = at exit only)
     * @param dir checkpoint directory (null: under the run directory)
     * @param keep newest checkpoints kept (0 = all)
     * @return the new options
     */
    public PretrainOptions withCheckpoints(int every, Path dir, int keep) {
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
                every,
                dir,
                keep,
                resume,
                device);
    }

    /**
     * Returns a copy that resumes from a checkpoint.
     *
     * @param checkpoint the checkpoint (or checkpoint directory), or null to start fresh
     * @return the new options
     */
    public PretrainOptions withResume(Path checkpoint) {
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
                checkpoint,
                device);
    }

    /**
     * Returns a copy that trains on another device.
     *
     * @param d {@code cpu}, {@code gpu} or {@code auto}
     * @return the new options
     */
    public PretrainOptions withDevice(String d) {
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
                d);
    }

    /**
     * Returns a copy with another log interval.
     *
     * @param every steps between plain progress lines
     * @return the new options
     */
    public PretrainOptions withLogEvery(int every) {
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
                every,
                runDir,
                weightDecay,
                seqAuxAlpha,
                checkpointEvery,
                checkpointDir,
                keepCheckpoints,
                resume,
                device);
    }

    /**
     * Returns a copy with other regularisation settings.
     *
     * @param decay AdamW weight decay
     * @param alpha sequence-wise balance loss weight
     * @return the new options
     */
    public PretrainOptions withRegularisation(float decay, float alpha) {
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
                decay,
                alpha,
                checkpointEvery,
                checkpointDir,
                keepCheckpoints,
                resume,
                device);
    }
}
