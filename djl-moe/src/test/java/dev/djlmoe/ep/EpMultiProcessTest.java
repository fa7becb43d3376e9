/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import java.util.ArrayList;
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
        List<String> required = new ArrayList<>(List.of("oracle: OK"));
        for (String scenario :
                List.of(
                        "random",
                        "zero-tokens",
                        "one-expert",
                        "all-empty",
                        "big-rows",
                        "many-tokens")) {
            required.add("ok " + scenario + " ");
        }
        required.add("pressure BF16: 20 repeats");
        required.add("pressure FP8: 20 repeats");
        required.add("all-gather: OK");
        OracleRun.assertEveryRankPrints(EpOracleRank.class, worldSize, required);
    }
}
