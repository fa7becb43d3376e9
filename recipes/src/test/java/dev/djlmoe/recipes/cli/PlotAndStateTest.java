/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.PretrainOptions;
import dev.djlmoe.recipes.metrics.StepRecord;
import dev.djlmoe.zoo.io.Json;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Smaller things a new user met: {@code plot} on a metrics file without steps is an error, its
 * plots go next to the metrics file; float settings in {@code trainer_state.json} read as typed.
 */
class PlotAndStateTest {

    private static int cli(StringWriter err, String... args) {
        return Main.execute(
                new PrintWriter(new StringWriter(), true), new PrintWriter(err, true), args);
    }

    @Test
    void plotRefusesAnEmptyMetricsFileAndWritesNextToTheFile(@TempDir Path tmp) throws Exception {
        Path empty = tmp.resolve("empty").resolve("metrics.jsonl");
        Files.createDirectories(empty.getParent());
        Files.writeString(empty, "\n");
        StringWriter err = new StringWriter();
        assertEquals(1, cli(err, "plot", empty.toString()));
        assertTrue(
                err.toString().contains("metrics file " + empty + " holds no steps"),
                err.toString());
        assertFalse(Files.exists(empty.resolveSibling("loss.png")));

        Path run = tmp.resolve("run").resolve("metrics.jsonl");
        Files.createDirectories(run.getParent());
        StringBuilder sb = new StringBuilder();
        for (int s = 1; s <= 3; s++) {
            sb.append(
                            new StepRecord(
                                            s,
                                            5.0 - s,
                                            1e-3,
                                            1.0,
                                            1000,
                                            10,
                                            1.0,
                                            1.2,
                                            new long[] {3, 5, 4, 4})
                                    .toJson())
                    .append('\n');
        }
        Files.writeString(run, sb.toString());
        err = new StringWriter();
        assertEquals(0, cli(err, "plot", run.toString()), err.toString());
        assertTrue(Files.size(run.resolveSibling("loss.png")) > 0);
        assertTrue(Files.size(run.resolveSibling("expert-load.png")) > 0);
    }

    @Test
    void floatSettingsAreWrittenAsTyped() {
        PretrainOptions o = PretrainOptions.defaults();
        String json = Json.write(o.trajectorySettings());
        assertTrue(json.contains("\"lr\": " + Float.toString(o.learningRate())), json);
        assertTrue(json.contains("\"weight-decay\": " + Float.toString(o.weightDecay())), json);
        assertFalse(json.matches("(?s).*\\d\\.\\d*0000000\\d*.*"), "float widened: " + json);
    }
}
