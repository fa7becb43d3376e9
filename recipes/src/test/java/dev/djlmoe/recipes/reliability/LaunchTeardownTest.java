/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.CliProcess;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * {@code djl-moe launch} with real EP ranks running {@code soak}: a clean short soak passes on two
 * ranks; and when one of three ranks is killed with SIGKILL during an all-reduce, the launcher
 * stops the job and exits non-zero, no rank outlives it, and neither a shared-memory segment nor a
 * temporary file is left behind.
 */
class LaunchTeardownTest {

    private static final Pattern PID =
            Pattern.compile("\\[rank (\\d+)\\] soak: rank \\d+ of \\d+" + " \\(pid (\\d+)\\)");

    private record Run(int code, String out, List<Long> pids, Path tmp) {}

    private static Run launch(int ranks, List<String> soakArgs, long timeoutMs) throws Exception {
        Path dir = Files.createDirectories(Paths.get("target", "launch-teardown"));
        Path log = Files.createTempFile(dir, "launch-", ".log");
        Path tmp = Files.createTempDirectory(dir, "tmpdir-");
        List<String> args =
                new ArrayList<>(
                        List.of(
                                "launch",
                                "--nproc-per-node",
                                Integer.toString(ranks),
                                "--rank-heap",
                                "512m",
                                "soak"));
        args.addAll(soakArgs);
        Map<String, String> env = new HashMap<>(CliProcess.tmpdirEnv(tmp));
        env.put("DJL_MOE_TIMEOUT_MS", "30000");
        CliProcess.Run r = CliProcess.run(log, "256m", args, env, timeoutMs);
        return new Run(r.code(), r.out(), CliProcess.pids(PID, r.out()), tmp);
    }

    private static List<String> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            return s.filter(Files::isRegularFile).map(Path::toString).toList();
        }
    }

    @Test
    void aShortSoakPassesOnTwoRanks() throws Exception {
        Set<String> before = MultiRank.shmNames();
        Run r =
                launch(
                        2,
                        List.of(
                                "--steps",
                                "60",
                                "--repeats",
                                "2",
                                "--train-steps",
                                "3",
                                "--sample-every",
                                "10",
                                "--max-tokens",
                                "64"),
                        180_000);
        assertEquals(0, r.code(), r.out());
        for (int rank = 0; rank < 2; rank++) {
            assertTrue(
                    r.out().contains("[rank " + rank + "] soak: rank " + rank + " PASSED"),
                    r.out());
        }
        assertEquals(List.of(), MultiRank.newShmNames(before), "segments left in /dev/shm");
        assertEquals(List.of(), files(r.tmp()), "temporary files left");
    }

    @Test
    void aRankKilledDuringAllReduceTearsTheJobDown() throws Exception {
        Set<String> before = MultiRank.shmNames();
        long begin = System.nanoTime();
        Run r =
                launch(
                        3,
                        List.of(
                                "--steps",
                                "100000",
                                "--repeats",
                                "1",
                                "--train-steps",
                                "0",
                                "--max-tokens",
                                "32",
                                "--kill-rank",
                                "1",
                                "--kill-at-step",
                                "5"),
                        180_000);
        long ms = (System.nanoTime() - begin) / 1_000_000;
        String out = r.out();
        assertNotEquals(0, r.code(), out);
        assertEquals(137, r.code(), "the killed rank's status (128 + SIGKILL)\n" + out);
        assertTrue(
                out.contains("[launch] rank 1 exited with code 137; stopping the other ranks"),
                out);
        assertTrue(
                out.contains(
                        "[rank 1] soak: rank 1 kills itself (SIGKILL) during an" + " all-reduce"),
                out);
        assertEquals(3, r.pids().size(), out);
        assertTrue(
                CliProcess.allDead(r.pids(), 15_000), "ranks outlived the launcher: " + r.pids());
        // 100000 steps would take many minutes: the job was stopped, not run to the end.
        assertTrue(ms < 150_000, ms + " ms");
        assertFalse(out.contains("PASSED"), out);
        assertEquals(List.of(), MultiRank.newShmNames(before), "segments left in /dev/shm");
        assertEquals(List.of(), files(r.tmp()), "temporary files left");
    }
}
