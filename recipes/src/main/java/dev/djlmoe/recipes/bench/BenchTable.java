/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.bench;

import ai.djl.Device;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The one table of {@code djl-moe bench}: rows from the MoE-layer benchmark ({@link MoeLayerBench})
 * and the EP dispatch/combine and training-step benchmark ({@link EpBench}), whose printed figures
 * are read back from its report.
 */
public final class BenchTable {

    /**
     * One row.
     *
     * @param benchmark what was measured
     * @param setting its shape
     * @param time the time, formatted
     * @param rate the throughput, formatted
     * @param comparison against a reference, formatted
     */
    public record Row(
            String benchmark, String setting, String time, String rate, String comparison) {}

    private static final Pattern EP_ROW =
            Pattern.compile(
                    "^(fp32|bf16|fp8|mxfp8)\\s+(dispatch|\\+notify|combine)\\s+([\\d.]+)"
                            + "\\s+(\\d+)MB\\s+([\\d.]+)\\s+([\\d.]+)\\s+([\\d.]+)\\s*$");
    private static final Pattern EP_HEAD = Pattern.compile("^EP benchmark: W=(\\d+)");
    private static final Pattern EP_SHAPE =
            Pattern.compile("^shape: (\\d+) tokens/rank, H=(\\d+), top-(\\d+) of (\\d+) experts");
    private static final Pattern EP_TRAIN =
            Pattern.compile(
                    "^training step \\(([^)]*)\\): ([\\d.]+) tokens/s, EP dispatch\\+combine"
                            + " ([\\d.]+)% of step time");

    private final List<Row> rows = new ArrayList<>();

    /**
     * Adds the MoE-layer figures.
     *
     * @param s the size run
     * @param r the figures
     */
    public void addLayer(MoeLayerBench.Size s, MoeLayerBench.Result r) {
        addLayer(s, r, Device.cpu());
    }

    /**
     * Adds the MoE layer benchmark's rows, naming the device it ran on.
     *
     * @param s the size
     * @param r the figures
     * @param device where it ran (on a GPU the EP buffer's CUDA backend replaces the loopback)
     */
    public void addLayer(MoeLayerBench.Size s, MoeLayerBench.Result r, Device device) {
        String setting =
                String.format(
                        Locale.ROOT,
                        "T=%d H=%d E=%d K=%d I=%d",
                        s.tokens(),
                        s.hidden(),
                        s.experts(),
                        s.topk(),
                        s.width());
        rows.add(
                new Row(
                        device.isGpu()
                                ? "MoE layer fwd+bwd (EP, " + device + ")"
                                : "MoE layer fwd+bwd (EP, loopback)",
                        setting,
                        ms(r.layerSeconds()),
                        String.format(
                                Locale.ROOT,
                                "%.0f tok/s, %.1f GFLOP/s experts",
                                r.tokensPerSecond(),
                                r.expertFlopsPerSecond() / 1e9),
                        String.format(
                                Locale.ROOT,
                                "%.2f of dense matMul (%.1f GFLOP/s)",
                                r.efficiency(),
                                r.denseFlopsPerSecond() / 1e9)));
        if (!Double.isNaN(r.naiveSeconds())) {
            rows.add(
                    new Row(
                            "MoE layer, naive masked",
                            setting,
                            ms(r.naiveSeconds()),
                            "",
                            String.format(
                                    Locale.ROOT, "EP layer %.1fx faster", r.speedupOverNaive())));
        }
    }

    /**
     * Adds the rows found in {@link EpBench}'s report.
     *
     * @param report what EpBench printed on rank 0
     * @return the number of rows found
     */
    public int addEpReport(String report) {
        String world = "?";
        String shape = "";
        int found = 0;
        for (String line : report.split("\n")) {
            Matcher m;
            if ((m = EP_HEAD.matcher(line)).find()) {
                world = m.group(1);
            } else if ((m = EP_SHAPE.matcher(line)).find()) {
                shape =
                        String.format(
                                Locale.ROOT,
                                "T=%s/rank H=%s top-%s of %s",
                                m.group(1),
                                m.group(2),
                                m.group(3),
                                m.group(4));
            } else if ((m = EP_ROW.matcher(line.strip())).find()) {
                rows.add(
                        new Row(
                                "EP " + m.group(2) + " " + m.group(1) + ", W=" + world,
                                shape,
                                m.group(3) + " ms",
                                m.group(5) + " GB/s (" + m.group(4) + " MB)",
                                m.group(7) + " of memcpy bound (" + m.group(6) + " ms)"));
                found++;
            } else if ((m = EP_TRAIN.matcher(line)).find()) {
                rows.add(
                        new Row(
                                "EP training step",
                                m.group(1),
                                "",
                                m.group(2) + " tok/s",
                                m.group(3) + "% of step in EP"));
                found++;
            }
        }
        return found;
    }

    /**
     * Returns the rows.
     *
     * @return the rows so far
     */
    public List<Row> rows() {
        return List.copyOf(rows);
    }

    /**
     * Prints the table in Markdown.
     *
     * @param out where it goes
     */
    public void print(PrintStream out) {
        out.println("| benchmark | setting | time | throughput | compared with |");
        out.println("| --- | --- | --- | --- | --- |");
        for (Row r : rows) {
            out.println(
                    "| "
                            + r.benchmark()
                            + " | "
                            + r.setting()
                            + " | "
                            + r.time()
                            + " | "
                            + r.rate()
                            + " | "
                            + r.comparison()
                            + " |");
        }
    }

    private static String ms(double s) {
        return String.format(Locale.ROOT, "%.1f ms", s * 1e3);
    }
}
