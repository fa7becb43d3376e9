/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.Pretrain;
import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.TrainingPrecision;
import dev.djlmoe.recipes.data.SyntheticBigramSource;
import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.zoo.model.MoeModelConfig;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code djl-moe study}: the MXFP8 convergence study — the tiny model trained for the same steps
 * at fp32 and at mxfp8, both loss curves in one PNG and the final gap in a table.
 */
@Command(
        name = "study",
        mixinStandardHelpOptions = true,
        description = "Convergence study: fp32 vs mxfp8 loss curves of the tiny model.")
public final class StudyCommand implements Callable<Integer> {

    @Option(names = "--steps", description = "steps per run (default ${DEFAULT-VALUE})")
    int steps = 300;

    @Option(names = "--seed", description = "seed shared by both runs (default ${DEFAULT-VALUE})")
    long seed = 42;

    @Option(names = "--out", description = "output directory (default ${DEFAULT-VALUE})")
    Path out = Path.of("runs", "study-mxfp8");

    @Override
    public Integer call() throws Exception {
        Map<String, List<StepRecord>> runs = new LinkedHashMap<>();
        Map<String, Float> finals = new LinkedHashMap<>();
        for (TrainingPrecision p : new TrainingPrecision[] {TrainingPrecision.FP32, TrainingPrecision.MXFP8}) {
            Path dir = out.resolve(p.flag());
            PretrainOptions d = PretrainOptions.defaults();
            PretrainOptions opts =
                    new PretrainOptions(steps, d.batch(), d.seqLen(), d.learningRate(),
                            d.warmupSteps(), d.maxGradNorm(), d.biasUpdateRate(), p, seed, true,
                            d.logEvery(), dir);
            System.out.println("== " + p.flag());
            Pretrain.Result r =
                    Pretrain.run(MoeModelConfig.tiny(), new SyntheticBigramSource(256, 4, seed),
                            opts, System.out);
            runs.put(p.flag(), MetricsFile.read(dir.resolve("metrics.jsonl")));
            finals.put(p.flag(), r.finalLoss());
        }
        Path png = out.resolve("loss-fp32-vs-mxfp8.png");
        Plots.lossCurves(runs, "tiny model: fp32 vs mxfp8 (emulated) numerics", png);
        float a = finals.get("fp32");
        float b = finals.get("mxfp8");
        System.out.println();
        System.out.println("| precision | final loss (mean of last 10% of steps) |");
        System.out.println("| --- | --- |");
        System.out.printf(Locale.ROOT, "| fp32 | %.4f |%n", a);
        System.out.printf(Locale.ROOT, "| mxfp8 | %.4f |%n", b);
        System.out.printf(Locale.ROOT, "| gap | %+.4f (%.2f%%) |%n", b - a, 100.0 * (b - a) / a);
        System.out.println("plot: " + png);
        return 0;
    }
}
