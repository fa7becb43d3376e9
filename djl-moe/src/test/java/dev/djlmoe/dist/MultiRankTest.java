/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import org.junit.jupiter.api.Test;

/** The multi-process test harness itself: environment, exit codes, outputs, hard timeout. */
class MultiRankTest {

    @Test
    void ranksGetTheTorchrunEnvironmentAndFailuresShowTheirOutput() {
        MultiRank.Result r =
                MultiRank.builder(MultiRankProbe.class, 3).localWorldSize(2).args("exit").run();
        assertFalse(r.timedOut(), r.describe());
        for (int rank = 0; rank < 3; rank++) {
            assertEquals(10 * rank, r.exitCode(rank), r.describe());
            String out = r.output(rank);
            assertTrue(
                    out.contains(
                            "RANK="
                                    + rank
                                    + " WORLD_SIZE=3 LOCAL_RANK="
                                    + (rank % 2)
                                    + " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 DJL_OFFLINE=true"
                                    + " OPT_OUT_TRACKING=true DJL_MOE_TIMEOUT_MS=30000 port=true"
                                    + " token=true threads=1"),
                    out);
        }
        AssertionError e = assertThrows(AssertionError.class, r::assertAllSucceeded);
        assertTrue(e.getMessage().contains("rank 1 (exit 10)"), e.getMessage());
        assertTrue(e.getMessage().contains("RANK=1 "), e.getMessage());
        assertFalse(e.getMessage().contains("rank 0 (exit"), e.getMessage());
    }

    @Test
    void theHardTimeoutKillsEveryRank() {
        MultiRank.Result r =
                MultiRank.builder(MultiRankProbe.class, 2)
                        .args("hang")
                        .timeout(Duration.ofSeconds(4))
                        .run();
        assertTrue(r.timedOut(), r.describe());
        assertTrue(r.wallMillis() < 20_000, r.describe());
        for (long pid : r.pids()) {
            assertFalse(MultiRank.isAlive(pid), "pid " + pid + " outlived the harness");
        }
        AssertionError e = assertThrows(AssertionError.class, r::assertAllSucceeded);
        assertTrue(e.getMessage().contains("hard timeout"), e.getMessage());
    }
}
