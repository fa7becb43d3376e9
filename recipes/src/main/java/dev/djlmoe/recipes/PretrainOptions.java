/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;


/**
 * Settings of a pre-training run.
 *
 * @param steps optimizer steps
 * @param batch sequences per step (global batch)
 * @param seqLen tokens per sequence
 * @param learningRate peak AdamW learning rate
 * @param warmupSteps linear warm-up steps before the cosine decay
 * @param maxGradNorm global-norm clipping threshold (0 = off)
 * @param biasUpdateRate gamma of aux-loss-free balancing (0 = off)
 * @param precision what travels on the wire and how expert GEMMs round
 * @param seed fixes initialisation and data
 * @param useEp run MoE layers through the EP buffer (false: plain local autograd)
 * @param logEvery steps between plain progress lines when not on a terminal
 * @param runDir where rank 0 writes {@code metrics.jsonl} and the PNG plots (null: nowhere)
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
        java.nio.file.Path runDir) {

    /**
     * The embedded default: the tiny model for 300 steps.
     *
     * @return the options
     */
    public static PretrainOptions defaults() {
        return new PretrainOptions(300, 16, 64, 3e-3f, 20, 1.0f, 1e-3f, TrainingPrecision.FP32, 42, true,
                25, java.nio.file.Path.of("runs", "pretrain"));
    }

    /**
     * Checks the settings.
     *
     * @throws IllegalArgumentException naming the bad setting, its value and the limit
     */
    public void validate() {
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
        if (!(learningRate > 0f)) {
            throw new IllegalArgumentException("--lr " + learningRate + " must be > 0");
        }
        if (warmupSteps < 0) {
            throw new IllegalArgumentException("--warmup " + warmupSteps + " must be >= 0");
        }
    }

    /**
     * Returns a copy with another run directory.
     *
     * @param dir the directory, or null for no files
     * @return the new options
     */
    public PretrainOptions withRunDir(java.nio.file.Path dir) {
        return new PretrainOptions(steps, batch, seqLen, learningRate, warmupSteps, maxGradNorm,
                biasUpdateRate, precision, seed, useEp, logEvery, dir);
    }

    /**
     * Returns a copy with another precision.
     *
     * @param p the precision
     * @return the new options
     */
    public PretrainOptions withPrecision(TrainingPrecision p) {
        return new PretrainOptions(steps, batch, seqLen, learningRate, warmupSteps, maxGradNorm,
                biasUpdateRate, p, seed, useEp, logEvery, runDir);
    }

    /**
     * Returns a copy with another step count.
     *
     * @param n the steps
     * @return the new options
     */
    public PretrainOptions withSteps(int n) {
        return new PretrainOptions(n, batch, seqLen, learningRate, warmupSteps, maxGradNorm,
                biasUpdateRate, precision, seed, useEp, logEvery, runDir);
    }
}
