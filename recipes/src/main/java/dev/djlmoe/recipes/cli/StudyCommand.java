/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.StopSignal;
import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.data.TokenSource;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.RunMetrics;
import dev.djlmoe.zoo.hf.HfMoeConfig;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code djl-moe study}: the MXFP8 convergence study — the tiny model trained for the same steps at
 * fp32 and at mxfp8, both loss curves in one PNG and the final gap in a table.
 */
@Command(
        name = "study",
        mixinStandardHelpOptions = true,
        description = {
            "Convergence study: the same pre-training run at fp32 and at mxfp8.",
            "mxfp8 is the MXFP8 dispatch wire and emulated MXFP8 expert GEMMs; both loss curves go"
                    + " into one PNG, the final gap into a table."
        })
public final class StudyCommand implements Callable<Integer> {

    @Option(names = "--steps", description = "steps per run (default ${DEFAULT-VALUE})")
    int steps = 300;

    @Option(names = "--seed", description = "seed shared by both runs (default ${DEFAULT-VALUE})")
    long seed = 42;

    @Option(names = "--model", description = "preset or config.json (default ${DEFAULT-VALUE})")
    String model = "tiny";

    @Option(names = "--data", description = "as in pretrain (default ${DEFAULT-VALUE})")
    String data = "embedded";

    @Option(names = "--out", description = "output directory (default ${DEFAULT-VALUE})")
    Path out = Path.of("runs", "study-mxfp8");

    @Override
    public Integer call() throws Exception {
        if (steps < 1) {
            throw new IllegalArgumentException("--steps " + steps + " must be >= 1");
        }
        HfMoeConfig config = PretrainCommand.model(model);
        Map<String, RunMetrics> runs = new LinkedHashMap<>();
        Map<String, Pretrain.Result> results = new LinkedHashMap<>();
        for (TrainingPrecision p :
                new TrainingPrecision[] {TrainingPrecision.FP32, TrainingPrecision.MXFP8}) {
            Path dir = out.resolve(p.flag());
            PretrainOptions opts =
                    PretrainOptions.defaults()
                            .withSteps(steps)
                            .withPrecision(p)
                            .withRunDir(dir)
                            .withCheckpoints(PretrainOptions.NO_CHECKPOINTS, null, 0);
            opts =
                    new PretrainOptions(
                            opts.steps(),
                            opts.batch(),
                            opts.seqLen(),
                            opts.learningRate(),
                            opts.warmupSteps(),
                            opts.maxGradNorm(),
                            opts.biasUpdateRate(),
                            p,
                            seed,
                            true,
                            opts.logEvery(),
                            dir,
                            opts.weightDecay(),
                            opts.seqAuxAlpha(),
                            opts.checkpointEvery(),
                            null,
                            0,
                            null,
                            opts.device());
            TokenSource source = PretrainCommand.source(data, seed);
            System.out.println("== " + p.flag());
            Pretrain.Result r =
                    Pretrain.run(
                            Pretrain.Job.pretrain(config, source, opts),
                            System.out,
                            StopSignal.none(),
                            null);
            runs.put(p.flag(), MetricsFile.readRun(dir.resolve("metrics.jsonl")));
            results.put(p.flag(), r);
        }
        Path png = out.resolve("loss-fp32-vs-mxfp8.png");
        Plots.loss(runs, model + ": fp32 vs mxfp8 (emulated) numerics", png);
        Pretrain.Result a = results.get("fp32");
        Pretrain.Result b = results.get("mxfp8");
        System.out.println();
        System.out.println(
                "| precision | final loss (mean of last 10% of steps) | held-out loss |");
        System.out.println("| --- | --- | --- |");
        System.out.printf(Locale.ROOT, "| fp32 | %.4f | %.4f |%n", a.finalLoss(), a.heldOutLoss());
        System.out.printf(Locale.ROOT, "| mxfp8 | %.4f | %.4f |%n", b.finalLoss(), b.heldOutLoss());
        float gap = b.finalLoss() - a.finalLoss();
        System.out.printf(
                Locale.ROOT,
                "| gap | %+.4f (%.2f%%) | %+.4f |%n",
                gap,
                100.0 * gap / a.finalLoss(),
                b.heldOutLoss() - a.heldOutLoss());
        System.out.println("plot: " + png);
        return 0;
    }
}
