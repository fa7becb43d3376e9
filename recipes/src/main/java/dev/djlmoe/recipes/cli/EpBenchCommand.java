/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.bench.EpBench;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code djl-moe bench ep}: dispatch/combine bandwidth against the memcpy bound, per wire format,
 * and the EP training step; run it on every rank, e.g. {@code djl-moe launch --nproc-per-node 4
 * bench ep}.
 */
@Command(
        name = "ep",
        mixinStandardHelpOptions = true,
        description = {
            "Benchmark EP dispatch/combine and the EP training step.",
            "Dispatch/combine in GB/s and as a ratio to the memcpy bound, per wire format; the"
                    + " training step in tokens/s and the EP share of step time. Start it on every"
                    + " rank."
        },
        footer = {"", "Example:", "  djl-moe launch --nproc-per-node 4 bench ep"})
public final class EpBenchCommand implements Callable<Integer> {

    private static final EpBench.Options D = EpBench.Options.defaults();

    @Mixin
    BenchShapeFlags shape =
            new BenchShapeFlags(D.tokens(), D.hidden(), D.topk(), D.experts(), D.iters());

    @Option(
            names = "--wires",
            split = ",",
            description = "wire formats (default fp32,bf16,fp8,mxfp8)")
    List<String> wires = List.of("fp32", "bf16", "fp8", "mxfp8");

    @Option(
            names = "--train-steps",
            description = "training steps, 0 = skip (default ${DEFAULT-VALUE})")
    int trainSteps = D.trainSteps();

    @Option(
            names = "--train-batch",
            description = "global batch in sequences (default ${DEFAULT-VALUE})")
    int trainBatch = D.trainBatch();

    @Option(
            names = "--train-seq-len",
            description = "tokens per sequence (default ${DEFAULT-VALUE})")
    int trainSeqLen = D.trainSeqLen();

    @Option(
            names = "--device",
            description =
                    "cpu, the only device this benchmark runs on (default ${DEFAULT-VALUE}): it"
                        + " measures the cpu-shm transport against a host memcpy bound; gpu is"
                        + " refused (the CUDA kernels: native-ep/bench/run_gpu.sh bench:2; the GPU"
                        + " training step: bench step --device gpu)")
    String device = "cpu";

    @Override
    public Integer call() {
        if (!"cpu".equals(device)) {
            throw new IllegalArgumentException(
                    "--device "
                            + device
                            + ": bench ep runs on the CPU only (the cpu-shm transport"
                            + " against a host memcpy bound); for GPUs use"
                            + " native-ep/bench/run_gpu.sh bench:2 (the CUDA kernels) or"
                            + " 'bench step --device gpu' (the training step)");
        }
        List<WireFormat> w = new ArrayList<>();
        for (String s : wires) {
            w.add(WireFormat.fromName(s.trim()));
        }
        shape.check();
        EpBench.run(
                new EpBench.Options(
                        shape.tokens,
                        shape.hidden,
                        shape.topk,
                        shape.experts,
                        shape.iters,
                        w,
                        trainSteps,
                        trainBatch,
                        trainSeqLen),
                System.out);
        return 0;
    }
}
