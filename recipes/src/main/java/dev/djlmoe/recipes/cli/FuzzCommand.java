/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.reliability.FuzzTargets;
import dev.djlmoe.recipes.reliability.MutationFuzzer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.stream.Stream;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code djl-moe fuzz}: mutation-fuzzes the parsers of untrusted files (safetensors, JSON, {@code
 * config.json}, shard index) for a bounded time and reports the inputs tried. Exit 0 when every
 * input ended in a result or a clean refusal, 1 on any finding (saved under {@code --findings}).
 * The native argument checks and codecs have their own fuzzer: {@code native-ep/fuzz/run.sh
 * SECONDS}.
 */
@Command(
        name = "fuzz",
        mixinStandardHelpOptions = true,
        description = {
            "Fuzz the file parsers for a bounded time.",
            "Mutation-fuzzes the safetensors, JSON, config.json and shard-index parsers."
        },
        footer = {"", "Example:", "  djl-moe fuzz --seconds 60"})
public final class FuzzCommand implements Callable<Integer> {

    @Option(names = "--seconds", description = "time budget (default ${DEFAULT-VALUE})")
    double seconds = 30;

    @Option(names = "--seed", description = "random seed (default ${DEFAULT-VALUE})")
    long seed = 1;

    @Option(
            names = "--timeout-ms",
            description = "longest time one input may take (default ${DEFAULT-VALUE})")
    long timeoutMs = 5_000;

    @Option(names = "--max-input-bytes", description = "largest input (default ${DEFAULT-VALUE})")
    int maxInputBytes = 64 << 10;

    @Option(names = "--target", description = "only this target: safetensors, json, config, index")
    String only;

    @Option(
            names = "--findings",
            description = "where inputs of findings go (default ${DEFAULT-VALUE})")
    Path findings = Path.of("runs", "fuzz-findings");

    @Override
    public Integer call() throws IOException {
        if (!(seconds > 0)) {
            throw new IllegalArgumentException("--seconds " + seconds + " must be > 0");
        }
        Path scratch = Files.createTempDirectory("djl-moe-fuzz-");
        try {
            List<MutationFuzzer.Target> targets = new ArrayList<>(FuzzTargets.all(scratch));
            if (only != null) {
                targets.removeIf(t -> !t.name().equals(only));
                if (targets.isEmpty()) {
                    throw new IllegalArgumentException(
                            "--target '"
                                    + only
                                    + "' is not one of safetensors, json, config, index");
                }
            }
            System.out.printf(
                    Locale.ROOT,
                    "fuzz: %s for %.0f s, seed %d, %d ms per input at most,"
                            + " inputs up to %d bytes, max heap %d MiB%n",
                    targets.stream().map(MutationFuzzer.Target::name).toList(),
                    seconds,
                    seed,
                    timeoutMs,
                    maxInputBytes,
                    Runtime.getRuntime().maxMemory() >> 20);
            MutationFuzzer.Report r =
                    new MutationFuzzer(
                                    targets, seed, timeoutMs, maxInputBytes, findings, System.out)
                            .run(seconds);
            for (Map.Entry<String, MutationFuzzer.Counts> e : r.counts().entrySet()) {
                MutationFuzzer.Counts c = e.getValue();
                System.out.printf(
                        Locale.ROOT,
                        "fuzz: %-12s %9d inputs: %8d parsed, %9d refused"
                                + " cleanly, %d findings; %.0f us per input, slowest %.1f ms%n",
                        e.getKey(),
                        c.inputs(),
                        c.accepted(),
                        c.refused(),
                        c.findings(),
                        c.nanos() / 1e3 / Math.max(1, c.inputs()),
                        c.slowestNanos() / 1e6);
            }
            System.out.printf(
                    Locale.ROOT,
                    "fuzz: %d inputs tried in %.1f s (%.0f/s), %d findings%s%n",
                    r.inputs(),
                    r.millis() / 1e3,
                    r.inputs() / Math.max(1e-3, r.millis() / 1e3),
                    r.findings(),
                    r.hang() ? " (stopped by an input over the time limit)" : "");
            return r.findings() == 0 ? 0 : 1;
        } finally {
            try (Stream<Path> s = Files.walk(scratch)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
