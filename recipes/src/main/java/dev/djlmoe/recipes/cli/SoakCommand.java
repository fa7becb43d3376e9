/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.core.EpException;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.recipes.reliability.Soak;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code djl-moe soak}: a bounded soak of the EP layer on every rank of the job (run it through
 * {@code launch}): random dispatch/combine steps checked against an oracle and repeated for
 * identical hashes, then a short training run, while memory, native allocations, descriptors and
 * shared-memory segments are sampled. Exit 0 when everything is correct and flat after warm-up; 1
 * when not; 3 when a peer failed (e.g. with {@code --kill-rank}).
 */
@Command(
        name = "soak",
        mixinStandardHelpOptions = true,
        description = {
            "Soak the EP layer: random steps, then training, sampling memory.",
            "Random dispatch/combine steps checked against an oracle, then a short"
                    + " training run, while memory, native allocations and segments are sampled."
        },
        footer = {"", "Example:", "  djl-moe launch --nproc-per-node 4 soak --steps 2000"})
public final class SoakCommand implements Callable<Integer> {

    @Option(
            names = "--steps",
            description = "dispatch/combine steps per repeat (default ${DEFAULT-VALUE})")
    int steps = 2000;

    @Option(
            names = "--repeats",
            description = "runs of the same sequence (default ${DEFAULT-VALUE})")
    int repeats = 2;

    @Option(
            names = "--train-steps",
            description = "steps of each training run, 0 = none (default ${DEFAULT-VALUE})")
    int trainSteps = 40;

    @Option(
            names = "--sample-every",
            description = "steps between memory samples (default ${DEFAULT-VALUE})")
    int sampleEvery = 100;

    @Option(
            names = "--max-tokens",
            description = "most tokens per rank and step (default ${DEFAULT-VALUE})")
    int maxTokens = 256;

    @Option(names = "--seed", description = "seed (default ${DEFAULT-VALUE})")
    long seed = 7;

    @Option(
            names = "--rss-tolerance-mb",
            description =
                    "RSS growth after warm-up still counted as flat (default ${DEFAULT-VALUE})")
    double rssToleranceMb = 48;

    @Option(
            names = "--kill-rank",
            description =
                    "fault injection: this rank kills itself (SIGKILL) during an all-reduce at"
                            + " --kill-at-step")
    int killRank = -1;

    @Option(
            names = "--kill-at-step",
            description = "the step of that all-reduce (default ${DEFAULT-VALUE}: never)")
    int killAtStep = -1;

    @Override
    public Integer call() {
        Soak.Options o =
                new Soak.Options(
                        steps,
                        repeats,
                        trainSteps,
                        sampleEvery,
                        maxTokens,
                        seed,
                        rssToleranceMb,
                        killRank,
                        killAtStep);
        o.validate();
        RankEnvironment env = RankEnvironment.fromSystem();
        try (ProcessGroup group = ProcessGroups.create(env)) {
            System.out.printf(
                    "soak: rank %d of %d (pid %d), %d steps x %d repeats, %d training"
                            + " steps, max heap %d MiB%n",
                    group.rank(),
                    group.worldSize(),
                    ProcessHandle.current().pid(),
                    steps,
                    repeats,
                    trainSteps,
                    Runtime.getRuntime().maxMemory() >> 20);
            System.out.flush();
            return new Soak(group, o, System.out).run() ? 0 : 1;
        } catch (EpException e) {
            System.out.println(
                    "soak: rank "
                            + env.rank()
                            + " stopped: "
                            + e.getClass().getSimpleName()
                            + ": "
                            + e.getMessage());
            return 3;
        }
    }
}
