/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.TrainingPrecision;
import java.nio.file.Path;
import java.util.Map;
import picocli.CommandLine.IDefaultValueProvider;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Option;

/**
 * The training flags shared by {@code pretrain} and {@code finetune} (a picocli mixin); each
 * command supplies its own defaults through {@link Defaults}.
 */
public final class TrainingFlags {

    @Option(
            names = "--steps",
            description = "optimizer steps of the whole run (default ${DEFAULT-VALUE})")
    int steps;

    @Option(
            names = "--batch",
            description =
                    "global batch in sequences, split over the ranks (default ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--seq-len", description = "tokens per sequence (default ${DEFAULT-VALUE})")
    int seqLen;

    @Option(
            names = "--lr",
            description =
                    "peak AdamW learning rate; cosine decay to a tenth of it (default"
                            + " ${DEFAULT-VALUE})")
    float lr;

    @Option(names = "--warmup", description = "linear warm-up steps (default ${DEFAULT-VALUE})")
    int warmup;

    @Option(
            names = "--weight-decay",
            description = "AdamW decoupled weight decay (default ${DEFAULT-VALUE})")
    float weightDecay;

    @Option(
            names = "--clip",
            description = "global gradient-norm clip, 0 = off (default ${DEFAULT-VALUE})")
    float clip;

    @Option(
            names = "--bias-rate",
            description =
                    "aux-loss-free balancing gamma, 0 = frozen router biases (default"
                            + " ${DEFAULT-VALUE})")
    float biasRate;

    @Option(
            names = "--seq-aux-alpha",
            description =
                    "weight of the sequence-wise balance loss, 0 = off (default ${DEFAULT-VALUE})")
    float seqAuxAlpha;

    @Option(
            names = "--precision",
            description =
                    "fp32, bf16-wire, fp8-wire, mxfp8 (MXFP8 dispatch wire + MXFP8 expert"
                            + " GEMMs) or fp8 (FP8 dispatch wire + DeepSeek-V3 block-scaled FP8"
                            + " expert GEMMs); the FP8 GEMMs run on the GPU's tensor cores and are"
                            + " emulated in float32 on CPU (default ${DEFAULT-VALUE})")
    String precision;

    @Option(
            names = "--seed",
            description =
                    "random seed: initialisation, data order, random ops (default"
                            + " ${DEFAULT-VALUE})")
    long seed;

    @Option(
            names = "--ep",
            description =
                    "EP size: start this many local ranks (like launch --nproc-per-node); under a"
                        + " launcher it must equal WORLD_SIZE (default: the launcher's WORLD_SIZE,"
                        + " else 1)")
    Integer ep;

    @Option(
            names = "--device",
            description =
                    "cpu, gpu or auto: the GPU when the engine sees one (rank r on GPU LOCAL_RANK"
                            + " mod the GPU count), else the CPU (default ${DEFAULT-VALUE})")
    String device;

    @Option(
            names = "--no-ep",
            description = "run MoE layers locally without the EP buffer (one rank only)")
    boolean noEp;

    @Option(
            names = "--run-dir",
            description =
                    "where metrics.jsonl, the plots and checkpoints go (default ${DEFAULT-VALUE})")
    Path runDir;

    @Option(
            names = "--checkpoint-every",
            description =
                    "steps between checkpoints; 0 = only at exit (a checkpoint is always written at"
                            + " the end and on Ctrl-C) (default ${DEFAULT-VALUE})")
    int checkpointEvery;

    @Option(names = "--no-checkpoints", description = "write no checkpoints at all")
    boolean noCheckpoints;

    @Option(
            names = "--checkpoint-dir",
            description = "where checkpoints go (default: RUN-DIR/checkpoints)")
    Path checkpointDir;

    @Option(
            names = "--keep-checkpoints",
            description = "newest checkpoints kept, 0 = all (default ${DEFAULT-VALUE})")
    int keepCheckpoints;

    @Option(
            names = "--resume",
            paramLabel = "DIR",
            description =
                    "continue from a checkpoint (or the newest in a checkpoint directory),"
                            + " bit-identically to an uninterrupted run")
    Path resume;

    @Option(
            names = "--log-every",
            description =
                    "steps between progress lines when not on a terminal (default"
                            + " ${DEFAULT-VALUE})")
    int logEvery;

    /**
     * Builds the run settings.
     *
     * @return the options (not yet validated)
     */
    PretrainOptions toOptions() {
        return PretrainOptions.builder()
                .optSteps(steps)
                .optBatch(batch)
                .optSeqLen(seqLen)
                .optLearningRate(lr)
                .optWarmupSteps(warmup)
                .optMaxGradNorm(clip)
                .optBiasUpdateRate(biasRate)
                .optPrecision(TrainingPrecision.parse(precision))
                .optSeed(seed)
                .optUseEp(!noEp)
                .optLogEvery(logEvery)
                .optRunDir(runDir)
                .optWeightDecay(weightDecay)
                .optSeqAuxAlpha(seqAuxAlpha)
                .optCheckpointEvery(
                        noCheckpoints ? PretrainOptions.NO_CHECKPOINTS : checkpointEvery)
                .optCheckpointDir(checkpointDir)
                .optKeepCheckpoints(keepCheckpoints)
                .optResume(resume)
                .optDevice(device)
                .build();
    }

    /** Defaults of a command, by long option name. */
    static class Defaults implements IDefaultValueProvider {
        private final Map<String, String> values;

        Defaults(Map<String, String> values) {
            this.values = values;
        }

        @Override
        public String defaultValue(ArgSpec arg) {
            if (arg instanceof OptionSpec o) {
                return values.get(o.longestName());
            }
            return null;
        }
    }

    /**
     * The flag defaults of a command built from its default options.
     *
     * @param d the default options
     * @return flag name to default text
     */
    static Map<String, String> defaultsOf(PretrainOptions d) {
        Map<String, String> m = new java.util.HashMap<>();
        m.put("--steps", Integer.toString(d.steps()));
        m.put("--device", d.device());
        m.put("--batch", Integer.toString(d.batch()));
        m.put("--seq-len", Integer.toString(d.seqLen()));
        m.put("--lr", Float.toString(d.learningRate()));
        m.put("--warmup", Integer.toString(d.warmupSteps()));
        m.put("--weight-decay", Float.toString(d.weightDecay()));
        m.put("--clip", Float.toString(d.maxGradNorm()));
        m.put("--bias-rate", Float.toString(d.biasUpdateRate()));
        m.put("--seq-aux-alpha", Float.toString(d.seqAuxAlpha()));
        m.put("--precision", d.precision().flag());
        m.put("--seed", Long.toString(d.seed()));
        m.put("--run-dir", d.runDir().toString());
        m.put("--checkpoint-every", Integer.toString(d.checkpointEvery()));
        m.put("--keep-checkpoints", Integer.toString(d.keepCheckpoints()));
        m.put("--log-every", Integer.toString(d.logEvery()));
        return m;
    }
}
