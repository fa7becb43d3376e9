/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.CliProcess;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The command line starts quietly: no DJL start-up lines and no libtorch deprecation warning before
 * the first useful line, in one process and in the ranks a launcher starts; {@code --verbose}
 * brings them back. Runs the real {@code Main} in child JVMs (logging is configured once per
 * process).
 */
class QuietStartTest {

    /** Lines that a default start must not print. */
    private static final List<String> NOISE =
            List.of("ai.djl.util.cuda.CudaUtils", "INFO ai.djl", "AutoNonVariableTypeMode");

    private static String run(Path tmp, String... args) throws IOException, InterruptedException {
        ProcessBuilder pb =
                new ProcessBuilder(CliProcess.cli("1g", List.of(args)))
                        .redirectErrorStream(true)
                        .directory(tmp.toFile());
        pb.environment().remove(CliLogging.ENV);
        pb.environment().put("DJL_OFFLINE", "true");
        pb.environment().put("OPT_OUT_TRACKING", "true");
        Process p = pb.start();
        p.getOutputStream().close();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(3, TimeUnit.MINUTES), "timed out");
        String text = new String(out, StandardCharsets.UTF_8);
        // Two steps need not lower the loss (exit status 1 then, with the reason): the run ran.
        assertTrue(text.contains("done: loss"), text);
        return text;
    }

    private static String[] shortRun(Path dir, String... more) {
        List<String> a =
                new ArrayList<>(
                        List.of(
                                "pretrain",
                                "--steps",
                                "2",
                                "--batch",
                                "2",
                                "--seq-len",
                                "16",
                                "--no-checkpoints",
                                "--run-dir",
                                dir.toString()));
        a.addAll(List.of(more));
        return a.toArray(String[]::new);
    }

    @Test
    void quietByDefaultLoudWithVerbose(@TempDir Path tmp) throws Exception {
        String quiet = run(tmp, shortRun(tmp.resolve("quiet")));
        for (String n : NOISE) {
            assertFalse(quiet.contains(n), "'" + n + "' in a default start:\n" + quiet);
        }
        assertTrue(quiet.startsWith("model: "), "the first line is the run's own:\n" + quiet);
        String loud = run(tmp, shortRun(tmp.resolve("loud"), "--verbose"));
        assertTrue(loud.contains("INFO ai.djl"), loud);
        // The libtorch warning comes back too: the threshold, not the engine, hid it.
        assertTrue(loud.contains("AutoNonVariableTypeMode"), loud);
    }

    @Test
    void launchedRanksAreQuietToo(@TempDir Path tmp) throws Exception {
        List<String> args = new ArrayList<>(List.of("launch", "--nproc-per-node", "2"));
        args.addAll(List.of(shortRun(tmp.resolve("two"))));
        String out = run(tmp, args.toArray(String[]::new));
        for (String n : NOISE) {
            assertFalse(out.contains(n), "'" + n + "' in a launched job:\n" + out);
        }
        assertTrue(out.contains("[rank 0] model: "), out);
    }

    @Test
    void libtorchThresholdIsSetAndReported() {
        CliLogging.startEngine();
        int before = CliLogging.setTorchLogLevel(1);
        assertEquals(1, CliLogging.setTorchLogLevel(before), "the previous threshold comes back");
        IllegalArgumentException e =
                assertThrows(IllegalArgumentException.class, () -> CliLogging.setTorchLogLevel(7));
        assertTrue(e.getMessage().contains("threshold 7 is outside [0, 3]"), e.getMessage());
    }

    @Test
    void levelsResolveFlagThenEnvironment() {
        assertEquals(null, CliLogging.resolve(null, false, null));
        assertEquals(CliLogging.Level.INFO, CliLogging.resolve(null, true, null));
        assertEquals(CliLogging.Level.WARN, CliLogging.resolve(null, false, "warn"));
        assertEquals(CliLogging.Level.ERROR, CliLogging.resolve("error", false, "debug"));
        assertEquals(CliLogging.Level.INFO, CliLogging.resolve("error", true, null));
        IllegalArgumentException e =
                assertThrows(
                        IllegalArgumentException.class,
                        () -> CliLogging.resolve(null, false, "chatty"));
        assertTrue(e.getMessage().contains(CliLogging.ENV + " 'chatty'"), e.getMessage());
    }
}
