/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.testing.TestDevice;
import java.time.Duration;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Faults between rank processes (JVMs started by {@link MultiRank}) that {@code
 * dev.djlmoe.dist.FaultTest} does not cover: a rank stopped with SIGSTOP past the timeout, a rank
 * killed with SIGKILL during an all-reduce, and ranks that disagree on a collective call's hidden
 * size, wire format or top-k. Each live rank must fail within the configured timeout with an
 * exception naming the rank and the operation, the library must stay usable where the failure
 * allows it, and no shared-memory segment may be left. The killed-mid-dispatch case runs on {@link
 * TestDevice}'s device: the CPU engine in CI, the CUDA backend (ranks sharing the GPU) with {@code
 * -Ddjlmoe.test.device=gpu}.
 */
class FaultInjectionTest {

    private static final Pattern ELAPSED = Pattern.compile("FAILURE after (\\d+) ms in (\\S+)");

    private static long elapsed(String out) {
        Matcher m = ELAPSED.matcher(out);
        assertTrue(m.find(), out);
        return Long.parseLong(m.group(1));
    }

    private static String failureLine(String out, String marker) {
        int at = out.indexOf(marker);
        assertTrue(at >= 0, out);
        int end = out.indexOf('\n', at);
        String line = out.substring(at, end < 0 ? out.length() : end);
        assertTrue(line.chars().allMatch(c -> c >= 0x20 && c < 0x7f), "not plain text: " + line);
        return line;
    }

    /**
     * Runs a scenario of {@link FaultRanks} and checks that every rank ended by itself.
     *
     * @param w the number of ranks
     * @param scenario the scenario
     * @param target the rank the fault hits
     * @param timeout every rank's wait timeout, in milliseconds
     * @return the run
     */
    private static MultiRank.Result run(int w, String scenario, int target, long timeout) {
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, w)
                        .args(scenario, Integer.toString(target))
                        .rankTimeoutMillis(timeout)
                        .timeout(Duration.ofMinutes(2))
                        .run();
        assertFalse(r.timedOut(), r.describe());
        return r;
    }

    @Test
    void aStoppedRankMakesEveryPeerTimeOutNamingItAndTheOperation() {
        int w = 3;
        int stopped = 1;
        long timeout = 8_000;
        MultiRank.Result r = run(w, "stall", stopped, timeout);
        for (int rank = 0; rank < w; rank++) {
            String out = r.output(rank);
            if (rank == stopped) {
                // Woken by a peer, it fails at once instead of hanging or corrupting anything.
                assertEquals(4, r.exitCode(rank), r.describeRank(rank));
                String line = failureLine(out, "RESUMED FAILURE");
                assertTrue(
                        line.contains("EpPeerException") || line.contains("EpTimeoutException"),
                        line);
                continue;
            }
            assertEquals(0, r.exitCode(rank), r.describeRank(rank));
            String line = failureLine(out, "PEER FAILURE");
            // "rank R timed out after 8000 ms in dispatch: waiting for rank 1 (...)", directly
            // or through the peer that timed out first.
            assertTrue(
                    line.contains("EpTimeoutException") || line.contains("EpPeerException"), line);
            assertTrue(line.contains("timed out after " + timeout + " ms in "), line);
            assertTrue(line.contains("waiting for rank " + stopped + " "), line);
            assertTrue(line.matches(".* in (dispatch|combine)[ :].*"), line);
            long ms = elapsed(out);
            assertTrue(ms >= timeout - 200 && ms < timeout + 10_000, ms + " ms: " + line);
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }

    @Test
    void aRankKilledDuringAllReduceFailsEveryPeerNamingIt() {
        int w = 3;
        int killed = 2;
        long timeout = 30_000;
        MultiRank.Result r = run(w, "kill-allreduce", killed, timeout);
        assertEquals(137, r.exitCode(killed), r.describeRank(killed)); // 128 + SIGKILL
        for (int rank = 0; rank < w; rank++) {
            if (rank == killed) {
                continue;
            }
            String out = r.output(rank);
            assertEquals(0, r.exitCode(rank), r.describeRank(rank));
            String line = failureLine(out, "PEER FAILURE");
            assertTrue(line.contains("EpPeerException"), line);
            assertTrue(line.contains("rank " + killed + " (pid "), line);
            assertTrue(line.contains("exited during all_reduce"), line);
            // Detected by the pidfd watch, long before the 30 s timeout.
            assertTrue(elapsed(out) < 10_000, line);
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }

    @Test
    void aRankKilledMidDispatchFailsItsPeerNamingItAndThePeerStaysUsable() {
        int w = 2;
        int killed = 1;
        long timeout = 10_000;
        MultiRank.Result r = run(w, "kill-dispatch", killed, timeout);
        assertEquals(137, r.exitCode(killed), r.describeRank(killed)); // 128 + SIGKILL
        String out = r.output(0);
        assertEquals(0, r.exitCode(0), r.describeRank(0));
        assertTrue(out.contains("arrays on " + TestDevice.rankDevice(0)), r.describeRank(0));
        String line = failureLine(out, "PEER FAILURE");
        // CPU: "peer rank 1 (pid ...) exited during dispatch" (its pid watch); CUDA backend:
        // "dispatch on rank 0 timed out after 10000 ms waiting for peer 1: ..." (device waits).
        assertTrue(line.contains("EpPeerException") || line.contains("EpTimeoutException"), line);
        assertTrue(line.matches(".*(rank|peer) " + killed + "[ :,)].*"), line);
        assertTrue(line.matches(".*: .*(dispatch|combine|notify).*"), line);
        long ms = elapsed(out);
        assertTrue(ms < timeout + 10_000, ms + " ms: " + line);
        assertTrue(out.contains("CLOSE: "), r.describeRank(0));
        assertTrue(out.contains("STILL USABLE: true"), r.describeRank(0));
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
        System.out.println("killed mid-dispatch on " + TestDevice.rankDevice(0) + ": " + line);
    }

    @Test
    void ranksThatDisagreeOnACallFailNamingTheValueAndGoOn() {
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, 2)
                        .args("mismatch")
                        .rankTimeoutMillis(20_000)
                        .timeout(Duration.ofMinutes(1))
                        .run();
        r.assertAllSucceeded();
        for (int rank = 0; rank < 2; rank++) {
            String out = r.output(rank);
            assertTrue(
                    out.contains("passed hidden = 32 but rank")
                            || out.contains("passed hidden = 64 but rank"),
                    r.describeRank(rank));
            assertTrue(out.contains("STILL WORKS: true"), r.describeRank(rank));
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }
}
