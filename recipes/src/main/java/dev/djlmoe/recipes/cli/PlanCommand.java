/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.plan.TrainingPlan;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code djl-moe plan}: memory, FLOPs and EP traffic per rank of a training step. */
@Command(
        name = "plan",
        mixinStandardHelpOptions = true,
        description = {
            "Memory, FLOPs and EP traffic of training a model at an EP size.",
            "Memory per rank (parameters, gradients, AdamW state, activations), step FLOPs and EP"
                    + " traffic, before renting hardware. Starts no engine."
        },
        footer = {
            "",
            "Example:",
            "  djl-moe plan --model deepseek-v3-16b --ep 8 --precision mxfp8"
        })
public final class PlanCommand implements Callable<Integer> {

    @Option(
            names = "--model",
            description =
                    "a preset, a config.json or a checkpoint directory (default ${DEFAULT-VALUE})")
    String model = "deepseek-v3-16b";

    @Option(
            names = "--layers",
            paramLabel = "N",
            description =
                    "decoder layers: the model cut (or extended) to N, its first_k_dense_replace"
                            + " dense layers first (default: the model's own)")
    Integer layers;

    @Option(
            names = "--save-config",
            paramLabel = "FILE",
            description =
                    "also write the model's config.json (after --layers) to FILE, e.g. for"
                            + " transformers")
    Path saveConfig;

    @Option(
            names = "--ep",
            description = "EP size W: ranks, each holding E / W experts (default ${DEFAULT-VALUE})")
    int ep = 8;

    @Option(
            names = "--batch",
            description = "sequences per rank per step (default ${DEFAULT-VALUE})")
    long batch = 1;

    @Option(names = "--seq-len", description = "tokens per sequence (default ${DEFAULT-VALUE})")
    long seqLen = 4096;

    @Option(
            names = "--precision",
            description = "fp32, bf16-wire, fp8-wire, mxfp8 or fp8 (default ${DEFAULT-VALUE})")
    String precision = "mxfp8";

    @Option(
            names = "--device-memory",
            paramLabel = "GiB",
            description =
                    "memory of one device for the fits line, 0 = none (default ${DEFAULT-VALUE}, an"
                            + " H200)")
    double deviceMemory = 141;

    @Override
    public Integer call() throws Exception {
        if (ep < 1) {
            throw new IllegalArgumentException("--ep " + ep + " must be >= 1");
        }
        HfMoeConfig config = PretrainCommand.model(model, layers);
        TrainingPlan plan =
                new TrainingPlan(config, ep, batch, seqLen, TrainingPrecision.parse(precision));
        System.out.print(
                plan.report(layers == null ? model : model + " --layers " + layers, deviceMemory));
        if (saveConfig != null) {
            SafetensorsWriter.writeTextAtomically(saveConfig, config.toJson());
            System.out.println("config.json: " + saveConfig);
        }
        return 0;
    }
}
