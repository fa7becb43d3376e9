/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.DeviceFlag;
import dev.djlmoe.recipes.decode.DecodeRun;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code djl-moe decode}: greedy generation with expert parallelism and low-latency MoE steps. */
@Command(
        name = "decode",
        mixinStandardHelpOptions = true,
        description = {
            "Generate greedy tokens for a batch of prompts.",
            "A KV cache, the routed experts sharded over the EP ranks: prefill in normal mode,"
                    + " then one token per sequence per step with low-latency dispatch/combine."
                    + " A sequence ends at the tokenizer's end token. Prints the sequences,"
                    + " tokens/s and the share of decode time in low-latency dispatch + combine."
                    + " Without --model a checkpoint, the 'tiny' preset with seeded random weights"
                    + " is used."
        },
        footer = {"", "Example:", "  djl-moe decode --ep 2 --model runs/pretrain"})
public final class DecodeCommand implements Callable<Integer>, RankCountCheck {

    /** The prompts used when none is given. */
    static final List<String> DEFAULT_PROMPTS =
            List.of("The ", "Once upon a time", "It was the best of times", "Call me");

    @Spec CommandSpec spec;

    @Option(
            names = "--model",
            description =
                    "a Hugging Face checkpoint directory (config.json + safetensors, e.g. a"
                            + " finetune output), a training run's checkpoint directory (its newest"
                            + " checkpoint), or a preset with random weights (default"
                            + " ${DEFAULT-VALUE})")
    String model = "tiny";

    @Option(
            names = "--prompt",
            description =
                    "a prompt (repeat for a batch; at least one per EP rank; default: 4 built-in"
                            + " prompts)")
    List<String> prompts;

    @Option(
            names = "--new-tokens",
            description = "tokens to generate per prompt (default ${DEFAULT-VALUE})")
    int newTokens = 16;

    @Option(
            names = "--exchange",
            description =
                    "MoE exchange of the decode steps: ll (low-latency buffer) or normal (default"
                            + " ${DEFAULT-VALUE})")
    String exchange = "ll";

    @Option(
            names = "--prefill",
            description =
                    "MoE exchange of the prefill: normal (the normal-mode EP buffer) or ll (the"
                            + " low-latency buffer, sized for the prompts; needs --exchange ll)"
                            + " (default ${DEFAULT-VALUE})")
    String prefill = "normal";

    @Option(
            names = "--dispatch-wire",
            description =
                    "low-latency dispatch wire: fp8, bf16, fp32, mxfp8 (default ${DEFAULT-VALUE})")
    String dispatchWire = "fp8";

    @Option(
            names = "--combine-wire",
            description = "low-latency combine wire: bf16, fp32 (default ${DEFAULT-VALUE})")
    String combineWire = "bf16";

    @Option(
            names = "--seed",
            description = "seed of the random weights of a preset (default ${DEFAULT-VALUE})")
    long seed = 42;

    @Option(
            names = "--output",
            paramLabel = "FILE",
            description = "also write the sequences as JSON Lines (rank 0)")
    Path output;

    @Option(
            names = "--device",
            description =
                    "cpu, gpu or auto: auto is the GPU when the engine sees one (rank r uses GPU"
                        + " LOCAL_RANK mod GPUs). On a GPU, FP8 wires need a hidden size that is a"
                        + " multiple of 128 (default ${DEFAULT-VALUE})")
    String device = DeviceFlag.AUTO;

    @Option(
            names = "--ep",
            description =
                    "EP ranks to start on this host (like launch --nproc-per-node; default: the"
                            + " launcher's WORLD_SIZE, else 1)")
    Integer ep;

    @Override
    public void checkRanks(int worldSize) throws IOException {
        DecodeRun.checkRanks(
                model,
                prompts == null || prompts.isEmpty() ? DEFAULT_PROMPTS.size() : prompts.size(),
                worldSize);
    }

    @Override
    public Integer call() throws IOException, InterruptedException {
        Integer launched = LaunchCommand.relaunchForEp(ep, spec);
        if (launched != null) {
            return launched;
        }
        DecodeRun.Exchange ex;
        switch (exchange.toLowerCase(java.util.Locale.ROOT)) {
            case "ll" -> ex = DecodeRun.Exchange.LL;
            case "normal" -> ex = DecodeRun.Exchange.NORMAL;
            default ->
                    throw new IllegalArgumentException(
                            "--exchange " + exchange + ": expected ll or normal");
        }
        boolean llPrefill;
        switch (prefill.toLowerCase(java.util.Locale.ROOT)) {
            case "ll" -> llPrefill = true;
            case "normal" -> llPrefill = false;
            default ->
                    throw new IllegalArgumentException(
                            "--prefill " + prefill + ": expected normal or ll");
        }
        if (llPrefill && ex != DecodeRun.Exchange.LL) {
            throw new IllegalArgumentException("--prefill ll needs --exchange ll");
        }
        DecodeRun.Options o =
                new DecodeRun.Options(
                        model,
                        prompts == null || prompts.isEmpty() ? DEFAULT_PROMPTS : prompts,
                        newTokens,
                        ex,
                        llPrefill,
                        WireFormat.fromName(dispatchWire),
                        WireFormat.fromName(combineWire),
                        seed,
                        output,
                        device);
        DecodeRun.run(o, RankEnvironment.fromSystem(), System.out);
        return 0;
    }
}
