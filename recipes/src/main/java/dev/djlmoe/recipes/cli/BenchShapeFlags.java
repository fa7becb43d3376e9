/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import picocli.CommandLine.Option;

/**
 * The MoE shape flags of {@code bench ep} and {@code bench layer} (a picocli mixin): tokens, width,
 * top-k, experts and timed iterations, with each command's defaults.
 */
final class BenchShapeFlags {

    @Option(names = "--tokens", description = "T, tokens per rank (default ${DEFAULT-VALUE})")
    int tokens;

    @Option(names = "--hidden", description = "H (default ${DEFAULT-VALUE})")
    int hidden;

    @Option(names = "--topk", description = "K (default ${DEFAULT-VALUE})")
    int topk;

    @Option(names = "--experts", description = "E (default ${DEFAULT-VALUE})")
    int experts;

    @Option(
            names = "--iters",
            description = "timed iterations per operation (default ${DEFAULT-VALUE})")
    int iters;

    /**
     * Creates the flags with a command's defaults.
     *
     * @param tokens T
     * @param hidden H
     * @param topk K
     * @param experts E
     * @param iters timed iterations
     */
    BenchShapeFlags(int tokens, int hidden, int topk, int experts, int iters) {
        this.tokens = tokens;
        this.hidden = hidden;
        this.topk = topk;
        this.experts = experts;
        this.iters = iters;
    }

    /**
     * Refuses a shape no benchmark can run.
     *
     * @throws IllegalArgumentException naming every flag and its value when a size is below 1 or
     *     {@code --experts} is below {@code --topk}
     */
    void check() {
        if (tokens < 1 || hidden < 1 || topk < 1 || experts < topk || iters < 1) {
            throw new IllegalArgumentException(
                    "need --tokens, --hidden, --topk, --iters >= 1 and --experts >= --topk; got"
                            + " --tokens "
                            + tokens
                            + ", --hidden "
                            + hidden
                            + ", --topk "
                            + topk
                            + ", --iters "
                            + iters
                            + ", --experts "
                            + experts);
        }
    }
}
