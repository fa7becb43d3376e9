/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import java.time.Duration;
import java.util.List;

/** Runs an oracle rank program in W processes and checks what every rank printed. */
final class OracleRun {

    private OracleRun() {}

    /**
     * Runs {@code main} as W ranks (3 minutes in all, 60 s per wait), then asserts that every rank
     * succeeded, that each printed every line in {@code required}, and that no shared-memory
     * segment is left behind.
     *
     * @param main the rank program
     * @param worldSize W
     * @param required the text each rank's output must contain
     */
    static void assertEveryRankPrints(Class<?> main, int worldSize, List<String> required) {
        MultiRank.Result r =
                MultiRank.builder(main, worldSize)
                        .timeout(Duration.ofMinutes(3))
                        .rankTimeoutMillis(60_000)
                        .run();
        r.assertAllSucceeded();
        for (int rank = 0; rank < worldSize; rank++) {
            String out = r.output(rank);
            for (String line : required) {
                assertTrue(out.contains(line), line + "\n" + r.describeRank(rank));
            }
        }
        assertEquals(List.of(), r.shmLeftBehind(), "shared-memory segments left in /dev/shm");
    }
}
