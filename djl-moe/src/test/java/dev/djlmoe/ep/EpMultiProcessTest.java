/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.dist.MultiRank;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Layout, dispatch, cached dispatch and combine between W processes over the cpu-shm transport,
 * against an independent oracle computed in every rank ({@link EpOracleRank}), for every wire
 * format and for uneven tokens per rank, a rank with no tokens, all tokens to one expert, unused
 * slots, rows larger than a ring slot and many small rows; then 20 repeats of dispatch + combine
 * must hash identically. No shared-memory segment may be left behind.
 */
class EpMultiProcessTest {

    @ParameterizedTest(name = "W = {0}")
    @ValueSource(ints = {2, 4})
    void dispatchAndCombineMatchTheOracle(int worldSize) {
        MultiRank.Result r =
                MultiRank.builder(EpOracleRank.class, worldSize)
                        .timeout(Duration.ofMinutes(3))
                        .rankTimeoutMillis(60_000)
                        .run();
        r.assertAllSucceeded();
        for (int rank = 0; rank < worldSize; rank++) {
            String out = r.output(rank);
            assertTrue(out.contains("oracle: OK"), r.describeRank(rank));
            for (String scenario :
                    List.of(
                            "random",
                            "zero-tokens",
                            "one-expert",
                            "all-empty",
                            "big-rows",
                            "many-tokens")) {
                assertTrue(
                        out.contains("ok " + scenario + " "),
                        scenario + "\n" + r.describeRank(rank));
            }
            assertTrue(out.contains("pressure BF16: 20 repeats"), r.describeRank(rank));
            assertTrue(out.contains("pressure FP8: 20 repeats"), r.describeRank(rank));
            assertTrue(out.contains("all-gather: OK"), r.describeRank(rank));
        }
        assertEquals(List.of(), r.shmLeftBehind(), "shared-memory segments left in /dev/shm");
    }
}
