/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.reliability.FaultRanks;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Failure paths between processes (spawned JVMs): a rank that dies mid-dispatch, a rank that never
 * arrives, a missing rank 0 (no store), and simulated two hosts without a cross-host transport.
 * Every case must end with a clear exception on every live rank within the timeout (never a hang)
 * and leave no shared-memory segment behind.
 */
class FaultTest {

    private static final Pattern ELAPSED = Pattern.compile("after (\\d+) ms");

    /** The failure line must be plain text: no bytes from beyond the native message's end. */
    private static void assertCleanFailureLine(String out, String marker) {
        int at = out.indexOf(marker);
        assertTrue(at >= 0, out);
        int end = out.indexOf('\n', at);
        String line = out.substring(at, end < 0 ? out.length() : end);
        assertTrue(line.chars().allMatch(c -> c >= 0x20 && c < 0x7f), "not plain text: " + line);
    }

    private static long elapsedMillis(String out) {
        Matcher m = ELAPSED.matcher(out.substring(Math.max(0, out.indexOf("FAIL"))));
        assertTrue(m.find(), out);
        return Long.parseLong(m.group(1));
    }

    @Test
    void rankExitingMidDispatchMakesEveryPeerThrowNamingIt() {
        int w = 4;
        int faulty = 2;
        long timeout = 20_000;
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, w)
                        .args("exit-mid-dispatch", Integer.toString(faulty))
                        .rankTimeoutMillis(timeout)
                        .timeout(Duration.ofMinutes(2))
                        .run();
        assertFalse(r.timedOut(), r.describe());
        assertEquals(3, r.exitCode(faulty), r.describe());
        for (int rank = 0; rank < w; rank++) {
            if (rank == faulty) {
                continue;
            }
            String out = r.output(rank);
            assertEquals(0, r.exitCode(rank), r.describeRank(rank));
            assertTrue(out.contains("PEER FAILURE"), r.describeRank(rank));
            assertCleanFailureLine(out, "PEER FAILURE");
            assertTrue(out.contains("EpPeerException"), r.describeRank(rank));
            assertTrue(out.contains("peer rank " + faulty + " "), r.describeRank(rank));
            assertTrue(elapsedMillis(out) < timeout, r.describeRank(rank));
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }

    @Test
    void rankThatNeverArrivesMakesRendezvousTimeOut() {
        int w = 4;
        int missing = 3;
        long timeout = 4_000;
        long late = 1_500; // rank 1 arrives late but within the timeout: that alone is fine
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, w)
                        .args("join")
                        .omitRank(missing)
                        .rankEnv(
                                k ->
                                        k == 1
                                                ? Map.of("FAULT_JOIN_DELAY_MS", Long.toString(late))
                                                : Map.of())
                        .rankTimeoutMillis(timeout)
                        .timeout(Duration.ofMinutes(1))
                        .run();
        assertFalse(r.timedOut(), r.describe());
        for (int rank = 0; rank < w; rank++) {
            if (rank == missing) {
                continue;
            }
            String out = r.output(rank);
            assertEquals(3, r.exitCode(rank), r.describeRank(rank));
            assertTrue(out.contains("JOIN FAILED"), r.describeRank(rank));
            assertCleanFailureLine(out, "JOIN FAILED");
            // A rank whose own wait is still running when rank 0 gives up (and its store goes)
            // sees the store close instead of its timeout; either way the message names rank 3.
            assertTrue(
                    out.contains("EpTimeoutException")
                            || (rank != 0 && out.contains("EpPeerException")),
                    r.describeRank(rank));
            assertTrue(out.contains("rank " + missing + " never"), r.describeRank(rank));
            // Each wait of the join has the timeout, so a rank waits for the missing one for
            // the timeout after the late ones arrived (plus JVM start skew on a busy machine).
            long ms = elapsedMillis(out);
            assertTrue(
                    ms >= timeout - 500 && ms < timeout + late + 15_000,
                    ms + " ms\n" + r.describeRank(rank));
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }

    @Test
    void missingRankZeroMeansNoStoreAndAClearTimeout() {
        long timeout = 3_000;
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, 2)
                        .args("join")
                        .omitRank(0)
                        .rankTimeoutMillis(timeout)
                        .timeout(Duration.ofMinutes(1))
                        .run();
        assertFalse(r.timedOut(), r.describe());
        String out = r.output(1);
        assertEquals(3, r.exitCode(1), r.describeRank(1));
        assertTrue(out.contains("JOIN FAILED"), r.describeRank(1));
        assertCleanFailureLine(out, "JOIN FAILED");
        assertTrue(out.contains("127.0.0.1"), r.describeRank(1));
        long ms = elapsedMillis(out);
        assertTrue(ms >= timeout - 500 && ms < timeout + 15_000, ms + " ms\n" + r.describeRank(1));
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }

    @Test
    void simulatedTwoHostsFailAtStartNamingTheMissingTransport() {
        MultiRank.Result r =
                MultiRank.builder(FaultRanks.class, 4)
                        .localWorldSize(2)
                        .args("join")
                        .rankTimeoutMillis(60_000)
                        .timeout(Duration.ofMinutes(1))
                        .run();
        assertFalse(r.timedOut(), r.describe());
        for (int rank = 0; rank < 4; rank++) {
            String out = r.output(rank);
            assertEquals(3, r.exitCode(rank), r.describeRank(rank));
            assertTrue(out.contains("JOIN FAILED"), r.describeRank(rank));
            assertCleanFailureLine(out, "JOIN FAILED");
            assertTrue(out.contains("cross-host transport"), r.describeRank(rank));
            assertTrue(out.contains("cpu-shm"), r.describeRank(rank));
            assertTrue(out.contains("nccl"), r.describeRank(rank));
            // Fails at start, long before the 60 s wait timeout.
            assertTrue(elapsedMillis(out) < 20_000, r.describeRank(rank));
        }
        assertEquals(List.of(), r.shmLeftBehind(), "segments left in /dev/shm");
    }
}
