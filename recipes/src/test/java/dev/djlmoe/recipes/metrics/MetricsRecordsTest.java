/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Metrics lines with per-layer loads, the EP layout, the unigram baseline and held-out points read
 * back as written; lines of older files (none of these) still read; bad fields are named.
 */
class MetricsRecordsTest {

    static StepRecord step(long s, double loss, ExpertLoads loads) {
        return new StepRecord(
                s,
                loss,
                1e-3,
                0.5,
                1000,
                64,
                2.0,
                1.25,
                loads == null ? new long[] {1, 2, 3, 2} : loads.loads()[0],
                3.125,
                loads);
    }

    @Test
    void recordsRoundTripAndHeldOutLinesAreKeptApart(@TempDir Path tmp) throws Exception {
        ExpertLoads loads =
                new ExpertLoads(2, new int[] {1, 3}, new long[][] {{5, 0, 7, 12}, {1, 2, 3, 18}});
        Path f = tmp.resolve("metrics.jsonl");
        try (MetricsFile m = new MetricsFile(f)) {
            m.write(step(1, 4.0, loads));
            m.write(step(2, 3.5, loads));
            m.write(new HeldOutRecord(2, 3.75, 3.0));
        }
        RunMetrics run = MetricsFile.readRun(f);
        assertEquals(2, run.steps().size());
        StepRecord r = run.steps().get(1);
        assertEquals(3.5, r.loss());
        assertEquals(3.125, r.unigramBaseline());
        assertEquals(2, r.layerLoads().epSize());
        assertEquals(2, r.layerLoads().expertsPerRank());
        assertArrayEquals(new int[] {1, 3}, r.layerLoads().layers());
        assertArrayEquals(new long[] {1, 2, 3, 18}, r.layerLoads().loads()[1]);
        assertEquals(List.of(new HeldOutRecord(2, 3.75, 3.0)), run.heldOut());
        assertEquals(3.125, run.unigramBaseline());
        // The plain reader sees the steps only.
        assertEquals(2, MetricsFile.read(f).size());
    }

    @Test
    void olderLinesReadWithoutTheNewFields(@TempDir Path tmp) throws Exception {
        // A line as metrics files were written before per-layer loads and baselines.
        String old =
                "{\"step\":7,\"loss\":2.5,\"lr\":0.001,\"grad_norm\":null,"
                    + "\"tokens_per_s\":900.0,\"ep_bytes\":10,\"ep_ms\":1.5,\"load_imbalance\":1.1,"
                    + "\"expert_load\":[3,5,4,4]}";
        Path f = tmp.resolve("metrics.jsonl");
        Files.writeString(f, old + "\n");
        RunMetrics run = MetricsFile.readRun(f);
        StepRecord r = run.steps().get(0);
        assertEquals(7, r.step());
        assertTrue(Double.isNaN(r.gradNorm()));
        assertArrayEquals(new long[] {3, 5, 4, 4}, r.expertLoad());
        assertTrue(Double.isNaN(r.unigramBaseline()));
        assertNull(r.layerLoads());
        assertTrue(run.heldOut().isEmpty());
        assertTrue(Double.isNaN(run.unigramBaseline()));
        // The old constructor writes the old line.
        assertEquals(
                old.replace("\"grad_norm\":null", "\"grad_norm\":1.0"),
                new StepRecord(7, 2.5, 0.001, 1.0, 900.0, 10, 1.5, 1.1, new long[] {3, 5, 4, 4})
                        .toJson());
    }

    @Test
    void badFieldsAreNamed(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("metrics.jsonl");
        String good = step(1, 4.0, null).toJson();
        Files.writeString(
                f,
                good
                        + "\n"
                        + good.replace(
                                "\"expert_load\":[1,2,3,2]",
                                "\"expert_load\":[1,2,3,2],\"layer_loads\":[[1,\"x\"]]")
                        + "\n");
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> MetricsFile.readRun(f));
        assertTrue(
                e.getMessage().contains("line 2")
                        && e.getMessage().contains("layer_loads[0]")
                        && e.getMessage().contains("'x'"),
                e.getMessage());

        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> new ExpertLoads(3, new int[] {0}, new long[][] {{1, 2, 3, 4}}));
        assertTrue(
                e.getMessage().contains("epSize 3") && e.getMessage().contains("4 experts"),
                e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> new ExpertLoads(1, new int[] {0, 1}, new long[][] {{1, 2}}));
        assertTrue(
                e.getMessage().contains("layers has 2") && e.getMessage().contains("1 rows"),
                e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> MetricsFile.readRun(write(tmp, "{\"step\":1,\"loss\":\"high\"}")));
        assertTrue(e.getMessage().contains("'loss' = 'high' is not a number"), e.getMessage());
        e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> MetricsFile.readRun(write(tmp, "{\"step\":1,")));
        assertTrue(e.getMessage().contains("line 1"), e.getMessage());
    }

    private static Path write(Path dir, String line) throws Exception {
        Path f = Files.createTempFile(dir, "m", ".jsonl");
        Files.writeString(f, line + "\n");
        return f;
    }

    @Test
    void longRunsAreBinnedAndEachColumnSharesSumToOne() {
        List<StepRecord> recs = new ArrayList<>();
        for (int s = 1; s <= 1000; s++) {
            long[][] l = {{s, 2L * s, 1, 0}, {4, 4, 4, 4}};
            recs.add(step(s, 1.0, new ExpertLoads(2, new int[] {1, 2}, l)));
        }
        LoadGrid g = LoadGrid.of(recs, 300);
        long bin = (1000 + 299) / 300;
        assertEquals(bin, g.binSteps());
        assertEquals((int) ((1000 + bin - 1) / bin), g.columns());
        assertTrue(g.columns() <= 300);
        for (double[][] layer : g.share()) {
            for (double[] col : layer) {
                assertEquals(1.0, col[0] + col[1] + col[2] + col[3], 1e-12);
            }
        }
        // Layer 2 is balanced; in layer 1 expert 1 gets about twice expert 0's share.
        assertEquals(0.25, g.share()[1][5][2], 1e-12);
        assertTrue(g.share()[0][200][1] > 1.9 * g.share()[0][200][0]);
        assertArrayEquals(new String[] {"layer 1", "layer 2"}, g.layerNames());
        assertTrue(
                g.notes().stream().anyMatch(n -> n.contains(bin + " steps")), g.notes().toString());
        assertThrows(IllegalArgumentException.class, () -> LoadGrid.of(recs, 0));
    }
}
