/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.bench.MoeLayerBench;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code djl-moe bench}: prints benchmark figures (no pass/fail). */
@Command(
        name = "bench",
        mixinStandardHelpOptions = true,
        description = {
            "Benchmark the MoE layer (forward+backward) against dense matMul and a naive layer.",
            "Sub-command ep: expert-parallel dispatch/combine and training step, per rank:",
            "  djl-moe launch --nproc-per-node 4 bench ep"
        },
        subcommands = {EpBenchCommand.class})
public final class BenchCommand implements Callable<Integer> {

    private static final MoeLayerBench.Size D = MoeLayerBench.Size.standard();

    @Option(names = "--tokens", description = "T (default ${DEFAULT-VALUE})")
    int tokens = D.tokens();

    @Option(names = "--hidden", description = "H (default ${DEFAULT-VALUE})")
    int hidden = D.hidden();

    @Option(names = "--experts", description = "E (default ${DEFAULT-VALUE})")
    int experts = D.experts();

    @Option(names = "--topk", description = "K (default ${DEFAULT-VALUE})")
    int topk = D.topk();

    @Option(names = "--width", description = "expert intermediate size (default ${DEFAULT-VALUE})")
    int width = D.width();

    @Option(names = "--iters", description = "timed iterations (default ${DEFAULT-VALUE})")
    int iters = D.iters();

    @Option(names = "--no-naive", description = "skip the naive masked layer")
    boolean noNaive;

    @Override
    public Integer call() {
        MoeLayerBench.run(
                new MoeLayerBench.Size(tokens, hidden, experts, topk, width, iters, !noNaive),
                System.out);
        return 0;
    }
}
