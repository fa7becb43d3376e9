/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.zoo.model.MoeModelConfig;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code djl-moe pretrain}: trains the tiny DeepSeek-V3-style model on CPU. */
@Command(
        name = "pretrain",
        mixinStandardHelpOptions = true,
        description = "Pre-train an MoE language model (default: the tiny preset on synthetic text).")
public final class PretrainCommand implements Callable<Integer> {

    private static final PretrainOptions D = PretrainOptions.defaults();

    @Option(names = "--steps", description = "optimizer steps (default ${DEFAULT-VALUE})")
    int steps = D.steps();

    @Option(names = "--batch", description = "sequences per step (default ${DEFAULT-VALUE})")
    int batch = D.batch();

    @Option(names = "--seq-len", description = "tokens per sequence (default ${DEFAULT-VALUE})")
    int seqLen = D.seqLen();

    @Option(names = "--lr", description = "peak learning rate (default ${DEFAULT-VALUE})")
    float lr = D.learningRate();

    @Option(names = "--warmup", description = "warm-up steps (default ${DEFAULT-VALUE})")
    int warmup = D.warmupSteps();

    @Option(names = "--clip", description = "global gradient-norm clip, 0 = off (default ${DEFAULT-VALUE})")
    float clip = D.maxGradNorm();

    @Option(names = "--bias-rate", description = "aux-loss-free balancing gamma (default ${DEFAULT-VALUE})")
    float biasRate = D.biasUpdateRate();

    @Option(
            names = "--precision",
            description = "fp32, bf16-wire, fp8-wire or mxfp8 (MXFP8 wire + emulated MXFP8 expert GEMMs; default fp32)")
    String precision = "fp32";

    @Option(names = "--seed", description = "random seed (default ${DEFAULT-VALUE})")
    long seed = D.seed();

    @Option(names = "--no-ep", description = "run MoE layers locally without the EP buffer")
    boolean noEp;

    @Option(names = "--run-dir", description = "where metrics.jsonl and the plots go (default ${DEFAULT-VALUE})")
    java.nio.file.Path runDir = D.runDir();

    @Override
    public Integer call() {
        PretrainOptions opts =
                new PretrainOptions(steps, batch, seqLen, lr, warmup, clip, biasRate,
                        TrainingPrecision.parse(precision), seed, !noEp, D.logEvery(), runDir);
        Pretrain.Result r =
                Pretrain.run(
                        MoeModelConfig.tiny(),
                        new SyntheticBigramSource(256, 4, seed),
                        opts,
                        System.out,
                        StopSignal.install());
        return r.finalLoss() < r.firstLoss() ? 0 : 1;
    }
}
