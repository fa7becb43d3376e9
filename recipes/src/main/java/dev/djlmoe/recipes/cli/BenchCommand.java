/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import ai.djl.Device;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.recipes.DeviceFlag;
import dev.djlmoe.recipes.bench.BenchTable;
import dev.djlmoe.recipes.bench.EpBench;
import dev.djlmoe.recipes.bench.MoeLayerBench;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code djl-moe bench}: the EP dispatch/combine and training-step benchmark and the MoE-layer
 * benchmark in one table; {@code bench layer} and {@code bench ep} run one of them with all its
 * options and its full report.
 */
@Command(
        name = "bench",
        mixinStandardHelpOptions = true,
        subcommands = {BenchCommand.Layer.class, EpBenchCommand.class, BenchStepCommand.class},
        description = {
            "Run the benchmarks and print one table.",
            "EP dispatch/combine per wire format against the memcpy bound, the EP training step,"
                    + " and the MoE layer forward+backward against dense matMul and a naive layer."
                    + " 'bench layer' and 'bench ep' run one, in full."
        },
        footer = {"", "Example:", "  djl-moe bench --ep 2 --quick"})
public final class BenchCommand implements Callable<Integer>, RankCountCheck {

    @Spec CommandSpec spec;

    @Option(names = "--quick", description = "small shapes (seconds instead of minutes)")
    boolean quick;

    @Option(
            names = "--ep",
            description =
                    "ranks for the EP benchmark (like launch --nproc-per-node; default: the"
                            + " launcher's WORLD_SIZE, else 1)")
    Integer ep;

    @Option(names = "--no-naive", description = "skip the naive masked MoE layer")
    boolean noNaive;

    @Option(
            names = "--device",
            description =
                    "where the MoE layer benchmark runs: cpu, gpu or auto, the GPU when the engine"
                        + " sees one (default ${DEFAULT-VALUE}); the EP benchmark runs on the CPU"
                        + " whatever this says (cpu-shm against a host memcpy bound); 'bench step'"
                        + " times the training step on a GPU")
    String device = "auto";

    @Override
    public void checkRanks(int worldSize) {
        int experts = quick ? QUICK_EXPERTS : EpBench.Options.defaults().experts();
        dev.djlmoe.recipes.Pretrain.checkDivides(
                "the EP benchmark's " + experts + " experts" + (quick ? " (--quick)" : ""),
                experts,
                worldSize,
                "each rank holds E / W");
        int tiny = dev.djlmoe.zoo.hf.HfMoeConfig.preset("tiny").numExperts();
        dev.djlmoe.recipes.Pretrain.checkDivides(
                "the training step's 'tiny' model's " + tiny + " routed experts",
                tiny,
                worldSize,
                "each rank holds E / W");
    }

    /** Routed experts of the {@code --quick} EP benchmark. */
    private static final int QUICK_EXPERTS = 16;

    @Override
    public Integer call() throws Exception {
        Integer launched = LaunchCommand.relaunchForEp(ep, spec);
        if (launched != null) {
            return launched;
        }
        RankEnvironment env = RankEnvironment.fromSystem();
        Device layerDevice = DeviceFlag.resolve(device, 0);
        EpBench.Options d = EpBench.Options.defaults();
        EpBench.Options epOpts =
                quick
                        ? new EpBench.Options(
                                512,
                                1024,
                                4,
                                QUICK_EXPERTS,
                                3,
                                List.of(WireFormat.FP32, WireFormat.BF16, WireFormat.MXFP8),
                                8,
                                8,
                                32)
                        : d;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream capture = new PrintStream(buf, true, StandardCharsets.UTF_8);
        System.out.println(
                "running the EP benchmark on " + env.worldSize() + " rank(s) on the CPU ...");
        EpBench.run(epOpts, capture);
        if (env.rank() != 0) {
            return 0; // the layer benchmark runs on one rank
        }
        MoeLayerBench.Size s =
                quick
                        ? new MoeLayerBench.Size(1024, 256, 16, 4, 128, 3, !noNaive)
                        : new MoeLayerBench.Size(4096, 1024, 64, 6, 512, 5, !noNaive);
        System.out.println("running the MoE layer benchmark on " + layerDevice + " ...");
        MoeLayerBench.Result lr =
                MoeLayerBench.run(s, layerDevice, new PrintStream(OutputStream.nullOutputStream()));
        BenchTable table = new BenchTable();
        String report = buf.toString(StandardCharsets.UTF_8);
        int found = table.addEpReport(report);
        table.addLayer(s, lr, layerDevice);
        System.out.println();
        table.print(System.out);
        if (found == 0) {
            System.out.println();
            System.out.println("(the EP benchmark's report had no rows this table reads; it was:)");
            System.out.print(report);
        }
        System.out.printf(
                "%n%d CPU cores; 'bench ep' and 'bench layer' print the full reports%n",
                Runtime.getRuntime().availableProcessors());
        return 0;
    }

    /** {@code djl-moe bench layer}: the MoE layer benchmark with its full report. */
    @Command(
            name = "layer",
            mixinStandardHelpOptions = true,
            description =
                    "Benchmark the MoE layer (forward+backward) against dense matMul and a naive"
                            + " layer.")
    public static final class Layer implements Callable<Integer> {

        private static final MoeLayerBench.Size D = MoeLayerBench.Size.standard();

        @Mixin
        BenchShapeFlags shape =
                new BenchShapeFlags(D.tokens(), D.hidden(), D.topk(), D.experts(), D.iters());

        @Option(
                names = "--width",
                description = "expert intermediate size (default ${DEFAULT-VALUE})")
        int width = D.width();

        @Option(names = "--no-naive", description = "skip the naive masked layer")
        boolean noNaive;

        @Option(
                names = "--device",
                description =
                        "cpu, gpu or auto: the GPU when the engine sees one (default"
                            + " ${DEFAULT-VALUE}); on a GPU the EP buffer takes its CUDA backend")
        String device = "auto";

        @Override
        public Integer call() {
            shape.check();
            if (width < 1) {
                throw new IllegalArgumentException("--width " + width + " must be >= 1");
            }
            MoeLayerBench.run(
                    new MoeLayerBench.Size(
                            shape.tokens,
                            shape.hidden,
                            shape.experts,
                            shape.topk,
                            width,
                            shape.iters,
                            !noNaive),
                    DeviceFlag.resolve(device, 0),
                    System.out);
            return 0;
        }
    }
}
