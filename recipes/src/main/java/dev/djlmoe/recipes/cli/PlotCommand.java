/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import dev.djlmoe.recipes.metrics.MetricsFile;
import dev.djlmoe.recipes.metrics.Plots;
import dev.djlmoe.recipes.metrics.RunMetrics;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code djl-moe plot}: draws loss and expert-load PNGs from one or more metrics files. */
@Command(
        name = "plot",
        mixinStandardHelpOptions = true,
        description = {
            "Plot loss curves and expert load from metrics.jsonl files.",
            "loss.png has one training-loss curve per file, with its unigram baseline (dashed)"
                    + " and held-out losses (markers) where the file records them."
                    + " expert-load.png shows the first file's run: a heat map per MoE layer of"
                    + " each expert's share of the layer's tokens over the steps, the ranks'"
                    + " blocks of experts separated and named. They go next to the first file"
                    + " unless --out says otherwise."
        },
        footer = {
            "",
            "Example:",
            "  djl-moe plot runs/pretrain/metrics.jsonl runs/other/metrics.jsonl"
        })
public final class PlotCommand implements Callable<Integer> {

    @Parameters(arity = "1..*", paramLabel = "METRICS", description = "metrics.jsonl files")
    List<Path> files;

    @Option(
            names = "--out",
            paramLabel = "DIR",
            description = "output directory (default: the first metrics file's directory)")
    Path out;

    @Override
    public Integer call() throws Exception {
        Map<String, RunMetrics> runs = new LinkedHashMap<>();
        for (Path f : files) {
            if (!Files.isRegularFile(f)) {
                throw new IllegalArgumentException("metrics file " + f + " does not exist");
            }
            Path parent = f.toAbsolutePath().getParent();
            String name = parent == null ? f.toString() : parent.getFileName().toString();
            RunMetrics records = MetricsFile.readRun(f);
            if (records.steps().isEmpty()) {
                throw new IllegalArgumentException(
                        "metrics file " + f + " holds no steps: nothing to plot");
            }
            runs.put(runs.containsKey(name) ? f.toString() : name, records);
        }
        Path out = this.out != null ? this.out : outputDir(files.get(0));
        Plots.loss(runs, "loss", out.resolve("loss.png"));
        Plots.expertLoad(
                runs.values().iterator().next().steps(),
                "expert load per MoE layer",
                out.resolve("expert-load.png"));
        System.out.println(
                "wrote " + out.resolve("loss.png") + " and " + out.resolve("expert-load.png"));
        return 0;
    }

    /** The directory of a metrics file (the current directory for a bare file name). */
    static Path outputDir(Path metrics) {
        Path parent = metrics.toAbsolutePath().normalize().getParent();
        return parent == null ? Path.of(".") : parent;
    }
}
