/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.bench.GpuPeak;
import dev.djlmoe.recipes.bench.StepProfile;
import dev.djlmoe.recipes.bench.TrainStepBench;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import dev.djlmoe.zoo.io.Json;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code djl-moe bench step}: the pretrain recipe's training step on one rank, timed. */
@Command(
        name = "step",
        mixinStandardHelpOptions = true,
        description = {
            "Benchmark the training step on one rank: ms per step, tokens/s, MFU, GPU memory.",
            "The pretrain recipe's own step (EP at W=1, AdamW, clipping, balancing, its defaults)"
                + " on random tokens: warm-up steps, then timed steps, each ended by waiting for"
                + " the device. Model FLOPs are plan's (3 forwards of the matrix products); MFU is"
                + " against the GPU's dense bf16 peak, and the TF32 one is printed beside it; GPU"
                + " memory is cudaMemGetInfo's total - free after the timed steps (the caching"
                + " allocator's peak reservation, the CUDA context, the EP buffer). Float32"
                + " products run in TF32 when TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 is set. One rank"
                + " only (not under launch)."
        },
        footer = {
            "",
            "Examples:",
            "  djl-moe bench step",
            "  djl-moe bench step --model tiny --batch 4 --seq-len 64 --device cpu --steps 2",
            "  TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 djl-moe bench step --json step.json",
            "  djl-moe bench step --model tiny --device cpu --steps 2 --profile /tmp/step-profile"
        })
public final class BenchStepCommand implements Callable<Integer> {

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
                            + " dense layers first; 0 = the model's own (default ${DEFAULT-VALUE}:"
                            + " deepseek-v3-16b becomes 1 dense + 3 MoE layers, 2.25 B parameters)")
    int layers = 4;

    @Option(names = "--batch", description = "sequences per step (default ${DEFAULT-VALUE})")
    int batch = 1;

    @Option(
            names = {"--seq-len", "--seq"},
            description = "tokens per sequence (default ${DEFAULT-VALUE})")
    int seqLen = 4096;

    @Option(
            names = "--device",
            description =
                    "cpu, gpu or auto: the GPU when the engine sees one, as pretrain --device"
                            + " (default ${DEFAULT-VALUE})")
    String device = "auto";

    @Option(
            names = "--precision",
            description =
                    "fp32, bf16-wire, fp8-wire, mxfp8 or fp8, as pretrain --precision (default"
                            + " ${DEFAULT-VALUE})")
    String precision = "fp32";

    @Option(
            names = "--warmup",
            description = "untimed steps first, at least 1 (default ${DEFAULT-VALUE})")
    int warmup = 3;

    @Option(names = "--steps", description = "timed steps (default ${DEFAULT-VALUE})")
    int steps = 5;

    @Option(
            names = "--peak-tflops",
            paramLabel = "BF16[,TF32]",
            description =
                    "the GPU's dense peak TFLOP/s for MFU (default: from the GPU's name: H100,"
                            + " H200, A100)")
    String peakTflops;

    @Option(names = "--seed", description = "initial weights and tokens (default ${DEFAULT-VALUE})")
    long seed = 42;

    @Option(
            names = "--json",
            paramLabel = "FILE",
            description = "also write the figures (or the error) to FILE as JSON")
    Path json;

    @Option(
            names = "--recipe-log",
            description = "also print the pretrain recipe's own log (model line, progress)")
    boolean recipeLog;

    @Option(
            names = "--memory-report",
            description =
                    "also print where the step's memory is: parameters, gradients, AdamW moments,"
                            + " other live arrays and the process's resident memory at the points"
                            + " of a step (steps after the first; meant for the CPU, run with"
                            + " MALLOC_MMAP_THRESHOLD_=65536)")
    boolean memoryReport;

    @Option(
            names = "--profile",
            paramLabel = "DIR",
            description =
                    "also profile two extra steps after the timed ones and write DIR/phases.txt"
                        + " (wall time of the step's phases: forward per layer, attention, MoE"
                        + " router, dispatch, experts, combine, the staged backward, gradients,"
                        + " optimizer, with the device waited for at each boundary), DIR/trace.json"
                        + " (libtorch's profiler, a Chrome trace) and DIR/ops.txt (time per torch"
                        + " operator, top "
                            + StepProfile.TOP_OPS
                            + "); prints the phases and the top operators, and adds them to --json")
    Path profile;

    @Override
    public Integer call() throws IOException {
        if (layers < 0) {
            throw new IllegalArgumentException(
                    "--layers " + layers + " must be >= 1, or 0 for the model's own count");
        }
        HfMoeConfig config = PretrainCommand.model(model, layers == 0 ? null : layers);
        TrainStepBench.Options o =
                new TrainStepBench.Options(
                        layers == 0 ? model : model + " --layers " + layers,
                        config,
                        batch,
                        seqLen,
                        device,
                        TrainingPrecision.parse(precision),
                        warmup,
                        steps,
                        peakTflops == null ? null : GpuPeak.parse(peakTflops),
                        seed);
        o.validate();
        TrainStepBench.Result r;
        try {
            r =
                    TrainStepBench.run(
                            o, System.out, recipeLog ? System.out : null, memoryReport, profile);
        } catch (RuntimeException | Error e) {
            if (json != null) {
                Map<String, Object> m = TrainStepBench.describe(o);
                m.put("error", firstLines(e));
                write(m);
            }
            throw e;
        }
        if (json != null) {
            write(r.toMap());
            System.out.println("  json          " + json);
        }
        return 0;
    }

    private void write(Map<String, Object> m) throws IOException {
        SafetensorsWriter.writeTextAtomically(json, Json.write(m) + "\n");
    }

    /** The error's class and the first lines of its message (libtorch's are long). */
    private static String firstLines(Throwable e) {
        String s = e.getClass().getSimpleName() + ": " + e.getMessage();
        String[] lines = s.split("\n");
        StringBuilder sb = new StringBuilder(lines[0]);
        for (int i = 1; i < Math.min(3, lines.length); i++) {
            sb.append(" | ").append(lines[i].trim());
        }
        return sb.length() > 600 ? sb.substring(0, 600) + " ..." : sb.toString();
    }
}
