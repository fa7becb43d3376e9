/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.launch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.CliProcess;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The launcher with real child processes ({@link LauncherProbe} ranks, no DJL): rank-prefixed
 * output, the first failure's exit code propagated and the other ranks killed, and no orphan ranks
 * after the launcher itself is killed (SIGTERM: its shutdown hook; SIGKILL: the ranks' parent
 * watch), checked by pid.
 */
class LauncherTest {

    private static final Pattern PID = Pattern.compile("\\[rank (\\d+)\\] rank \\d+ pid (\\d+)");

    private static List<Long> rankPids(String out) {
        return CliProcess.pids(PID, out);
    }

    @Test
    void everyLineIsPrefixedWithItsRank() throws Exception {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(buf, true, StandardCharsets.UTF_8);
        int code = new Launcher(LauncherHost.spec(3, "echo", 5_000), out, Map.of()).run();
        String text = buf.toString(StandardCharsets.UTF_8);
        assertEquals(0, code, text);
        for (String line : text.split("\n")) {
            assertTrue(line.matches("\\[rank [0-2]\\] .*"), "unprefixed line: " + line);
            Matcher m = Pattern.compile("\\[rank (\\d)\\] rank (\\d)").matcher(line);
            if (m.find()) {
                assertEquals(m.group(1), m.group(2), "a rank's line under another's prefix");
            }
        }
        for (int r = 0; r < 3; r++) {
            assertTrue(text.contains("[rank " + r + "] rank " + r + " to stderr"), text);
            assertTrue(text.contains("[rank " + r + "] step 1/2\n"), text);
            assertTrue(text.contains("[rank " + r + "] step 2/2\n"), text);
            assertTrue(
                    text.contains(
                            "[rank "
                                    + r
                                    + "] env WORLD_SIZE=3 LOCAL_RANK="
                                    + r
                                    + " DJL_OFFLINE=true OPT_OUT_TRACKING=true"),
                    text);
        }
        assertEquals(3, rankPids(text).size(), text);
    }

    @Test
    void theFirstFailureIsPropagatedAndTheOtherRanksAreKilled() throws Exception {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(buf, true, StandardCharsets.UTF_8);
        long t0 = System.currentTimeMillis() + 4_000;
        long begin = System.nanoTime();
        int code =
                new Launcher(
                                LauncherHost.spec(3, "cascade", 2_000),
                                out,
                                Map.of("PROBE_T0", Long.toString(t0)))
                        .run();
        long ms = (System.nanoTime() - begin) / 1_000_000;
        String text = buf.toString(StandardCharsets.UTF_8);
        // Rank 1 failed first (7); rank 0 failed 500 ms later (9), as a peer of a dead rank would.
        assertEquals(7, code, text);
        assertTrue(text.contains("[launch] rank 1 exited with code 7"), text);
        List<Long> pids = rankPids(text);
        assertEquals(3, pids.size(), text);
        for (long pid : pids) {
            assertFalse(
                    MultiRank.isAlive(pid), "rank pid " + pid + " outlived the launcher\n" + text);
        }
        // Rank 2 would sleep a minute: it was stopped, not waited for.
        assertTrue(ms < 30_000, ms + " ms\n" + text);
    }

    @ParameterizedTest(name = "launcher killed with {0}")
    @ValueSource(strings = {"SIGTERM", "SIGKILL"})
    void killingTheLauncherLeavesNoOrphans(String signal) throws Exception {
        Path dir = Files.createDirectories(Paths.get("target", "launcher-test"));
        Path log = Files.createTempFile(dir, "host-" + signal + "-", ".log");
        List<String> cmd = CliProcess.java("64m", LauncherHost.class);
        cmd.add("2");
        cmd.add("sleep");
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.redirectErrorStream(true);
        pb.redirectOutput(log.toFile());
        Process host = pb.start();
        List<Long> pids = List.of();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (System.nanoTime() < deadline) {
                pids = rankPids(read(log));
                if (pids.size() == 2) {
                    break;
                }
                Thread.sleep(100);
            }
            assertEquals(2, pids.size(), read(log));
            for (long pid : pids) {
                assertTrue(MultiRank.isAlive(pid), "rank " + pid + " is not running\n" + read(log));
            }
            if (signal.equals("SIGKILL")) {
                host.destroyForcibly();
            } else {
                host.destroy();
            }
            assertTrue(host.waitFor(30, TimeUnit.SECONDS), "the launcher did not die");
            assertTrue(
                    CliProcess.allDead(pids, 15_000),
                    "orphan ranks " + pids + " after " + signal + " of the launcher\n" + read(log));
        } finally {
            host.destroyForcibly();
            for (long pid : pids) {
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            }
        }
    }

    @Test
    void launchCommandTrainsOnTwoRanks() throws Exception {
        Path dir = Files.createDirectories(Paths.get("target", "launcher-test"));
        Path log = Files.createTempFile(dir, "launch-pretrain-", ".log");
        Path runDir = Files.createTempDirectory(dir, "run-");
        // --verbose reaches the ranks: rank 1, which logs nothing of its own, prints DJL's
        // start-up lines, so its forwarded output shows.
        CliProcess.Run r =
                CliProcess.run(
                        log,
                        "512m",
                        List.of(
                                "launch",
                                "--verbose",
                                "--nproc-per-node",
                                "2",
                                "--rank-heap",
                                "1g",
                                "pretrain",
                                "--steps",
                                "12",
                                "--warmup",
                                "0",
                                "--batch",
                                "8",
                                "--seq-len",
                                "32",
                                "--run-dir",
                                runDir.toString()),
                        Map.of(),
                        180_000);
        String text = r.out();
        assertEquals(0, r.code(), text);
        assertTrue(text.contains("[rank 0] model:"), text);
        assertTrue(text.contains("EP size 2"), text);
        assertTrue(text.contains("[rank 0] done: loss"), text);
        assertTrue(text.contains("[rank 1] "), "rank 1's output is not forwarded\n" + text);
        assertTrue(
                text.contains("[rank 1] [main] INFO ai.djl"),
                "the launcher's --verbose did not reach rank 1\n" + text);
    }

    private static String read(Path p) throws IOException {
        return Files.readString(p, StandardCharsets.UTF_8);
    }
}
